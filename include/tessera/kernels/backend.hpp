// The backend vocabulary: what every policy's backend does, in one set of names and descriptor structs shared by
// the host and the device.
//
//   backend<P>        one struct per policy, specialised in one file each:
//                       kernels/cpu/backend.hpp    backend<cpu>, backend<cpu_threads>  (P::num_threads() threads)
//                       kernels/cuda/backend.hpp   backend<cuda>                       (nvcc only)
//                     Everything above kernels/ (the planner, autodiff, nn, optim, quant) reaches a kernel through
//                     backend<P>::name(...) and is written once for every policy; nothing above kernels/ tests
//                     P::on_device to choose a kernel.
//
// The vocabulary (static member functions; raw pointers, extents and the descriptors below; no nodes, no tensors):
//   memory            allocate<T>(n), deallocate(p), copy(dst, src, n) (same memory), to_host(dst, src, n),
//                     from_host(dst, src, n) (both wait for the copy), zero(p, n)
//   elementwise       elementwise<T, Packable, MaxLane>(dst, dims, strides, ev): dst = ev (an evaluator of core/eval.hpp)
//   reduce            reduce<Op, A, Packable, MaxLane, RS>(...): see each backend
//   gemm              gemm(gemm_desc<T>) (C (+)= A B), gemm_batched(desc, gemm_batch); the host's gemm(desc, epi)
//                     also runs a block epilogue; the device's gemm(desc, gemm_epilogue, bias) a library one
//   conv2d, pool2d    the forward of a convolution (conv_geometry) and of a pooling (pool2d_options), into a destination whose
//                     layout conv2d_writes / pool2d_writes accept (else the planner goes through a temporary)
//   nn                activation backward, conv2d forward / backward data / backward weight (conv_geometry), pooling
//                     forward and backward, softmax rows, cross entropy, dropout, batch norm (kernels/*/nn.hpp)
//   rnn               the LSTM step forward and backward (kernels/*/rnn.hpp)
//   optim             the SGD and Adam updates (kernels/*/optim.hpp)
// A backend that lacks a function fails to compile at the call, naming backend<P> and the function.
//   rnn, in full      rnn_bias_rows, lstm_prepare_weight_hh, lstm_recurrent_forward / _backward, lstm_step_forward /
//                     _backward, rnn_bias_grads, rnn_swap01, rnn_add, rnn_mul (kernels/cpu/rnn.hpp says what each does)
//   optim, in full    sgd_update(p, g, buf, n, sgd_args<T>), adam_update(p, g, m, v, n, adam_args<T>)
//   nn, in full       activation_backward, conv2d_backward_weight / _data, max_pool2d_backward, avg_pool2d_backward,
//                     max_pool2x2_relu_backward, adaptive_avg_pool2d / _backward (pool2d_geometry), softmax_rows / _backward, cross_entropy / _backward,
//                     dropout_mask, batch_norm_stats / _apply / _backward, add_reduced (kernels/cpu/nn.hpp says what
//                     each does)
#pragma once
#include "tessera/core/policy.hpp"
#include "tessera/core/random.hpp"
#include "tessera/core/shape.hpp"

namespace tessera {

/// The activation a layer applies after its product (Linear, Conv2d), chosen at run time.
enum class activation { none, relu, tanh, sigmoid };

/// A pair of extents, one per spatial axis: height (h) and width (w). Built from one int (both axes) or from two,
/// {h, w}, so conv2d_options{.padding = 1} and conv2d_options{.padding = {1, 2}} both read as PyTorch's arguments.
/// A structural type: usable inside template arguments.
struct hw {
  int h = 0, w = 0;
  constexpr hw() = default;
  constexpr hw(int both) : h(both), w(both) {}
  constexpr hw(int h_, int w_) : h(h_), w(w_) {}
  friend constexpr bool operator==(const hw&, const hw&) = default;
};

/// The options of max_pool2d / avg_pool2d (PyTorch's MaxPool2d / AvgPool2d arguments), per axis where PyTorch has
/// them: kernel (no default: required), stride (0: the kernel, PyTorch's stride=None), padding (at most half the
/// kernel), dilation (max pooling only), ceil_mode (round the output extent up; the last window still starts inside
/// the input or its left padding) and count_include_pad (average: the padding counts as zeros in the divisor).
struct pool2d_options {
  hw kernel = 0;
  hw stride = 0;
  hw padding = 0;
  hw dilation = 1;
  bool ceil_mode = false;
  bool count_include_pad = true;
  friend constexpr bool operator==(const pool2d_options&, const pool2d_options&) = default;
  /// The stride in effect (the kernel when stride is 0).
  constexpr hw step() const { return {stride.h == 0 ? kernel.h : stride.h, stride.w == 0 ? kernel.w : stride.w}; }
  /// 2 x 2 windows at stride 2, no padding, dilation or ceil_mode: the pool the fast paths and fusions know.
  constexpr bool is_2x2() const { return kernel == hw{2} && step() == hw{2} && padding == hw{0} && dilation == hw{1} && !ceil_mode; }
  /// kernel >= 1, stride >= 0 (0: the kernel), 0 <= padding <= kernel / 2, dilation >= 1, on both axes.
  constexpr bool valid() const {
    return kernel.h >= 1 && kernel.w >= 1 && stride.h >= 0 && stride.w >= 0 && padding.h >= 0 && padding.w >= 0 &&
           2 * padding.h <= kernel.h && 2 * padding.w <= kernel.w && dilation.h >= 1 && dilation.w >= 1;
  }
};

namespace detail {

/// The block epilogue that does nothing (a host kernel's `Epi` when none is wanted).
struct no_epilogue {
  static constexpr bool active = false;
  void operator()(index_t, index_t, index_t, index_t) const {}
};

/// A block epilogue behind a pointer: the host kernels (GEMM, convolution, int8 GEMM) are instantiated once for every
/// epilogue through this type, not once for each elementwise tree around them (compile cost: a model's Linear and
/// Conv2d layers each bring their activation's trees, and every tree used to copy the whole kernel). The epilogue
/// runs on finished blocks of the output, so the one indirect call per block costs nothing measurable.
template <class... Args>
struct epilogue_ref {
  static constexpr bool active = true;
  const void* ctx;
  void (*fn)(const void*, Args...);
  void operator()(Args... a) const { fn(ctx, a...); }
};
/// epi behind an epilogue_ref<Args...>; epi must outlive every call.
template <class... Args, class Epi>
epilogue_ref<Args...> erase_epilogue(const Epi& epi) {
  return {&epi, [](const void* c, Args... a) { (*static_cast<const Epi*>(c))(a...); }};
}
template <class Epi>
inline constexpr bool is_epilogue_ref = false;
template <class... Args>
inline constexpr bool is_epilogue_ref<epilogue_ref<Args...>> = true;

/// Strided matrix operand: element (i, j) at p[i * rs + j * cs].
template <class T>
struct mat_ref {
  const T* p;
  index_t rs, cs;
  const T& operator()(index_t i, index_t j) const { return p[i * rs + j * cs]; }
};

/// C (+)= A B with A (M x K) and B (K x N) read through strides (transposed views need no copy) and C row-major
/// with row stride ldc (unit column stride). accumulate: C += A B (the gradient products).
template <class T>
struct gemm_desc {
  index_t M, N, K;
  mat_ref<T> a, b;
  T* c;
  index_t ldc;
  bool accumulate = false;
};

/// The products of a batched matmul: over nb batch dims of extents `dims`, product q reads A and B and writes C at
/// the offsets its batch index gives with strides a, b and c (a stride 0: that operand is shared, broadcast).
struct gemm_batch {
  static constexpr int cap = 8;
  int nb = 0;
  index_t dims[cap]{}, a[cap]{}, b[cap]{}, c[cap]{};
  index_t count() const {
    index_t n = 1;
    for (int i = 0; i < nb; ++i) n *= dims[i];
    return n;
  }
  void offsets(index_t q, index_t& oa, index_t& ob, index_t& oc) const {
    oa = ob = oc = 0;
    for (int i = nb - 1; i >= 0; --i) {
      const index_t k = q % dims[i];
      q /= dims[i];
      oa += k * a[i];
      ob += k * b[i];
      oc += k * c[i];
    }
  }
};

/// Sizes of one convolution. Input N x C x H x W, weights K x C/groups x R x S, output N x K x OH x OW; stride,
/// padding and dilation per axis (.h along H, .w along W).
struct conv_geometry {
  index_t N, C, H, W;
  index_t K, R, S;
  index_t OH, OW;
  hw stride, pad, dilation;
  index_t groups;
};

inline index_t conv_out_extent(index_t in, index_t k, index_t stride, index_t pad, index_t dilation) {
  return (in + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
}

/// Output extent of a pooling along one axis (PyTorch's pooling_output_shape): floor, or with ceil_mode ceil, of
/// (in + 2 pad - dilation (k - 1) - 1) / stride + 1, less one when ceil_mode would start the last window past the
/// input and its left padding.
constexpr index_t pool_out_extent(index_t in, index_t k, index_t stride, index_t pad, index_t dilation, bool ceil_mode) {
  const index_t span = in + 2 * pad - dilation * (k - 1) - 1;
  if (span < 0) return 0;
  index_t out = (span + (ceil_mode ? stride - 1 : 0)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

/// The constants of one SGD update (optim/optim.hpp: torch.optim.SGD's rule): d = g (+ wd * p with decay); with a
/// momentum buffer, buf = d at the parameter's first update (first), else momentum * buf + one_minus_dampening * d,
/// and d = nesterov ? d + momentum * buf : buf; then p += neg_lr * d.
template <class T>
struct sgd_args {
  T neg_lr, wd, momentum, one_minus_dampening;
  bool decay, first, nesterov;
};

/// Weight decay in Adam's step: none, L2 (g += wd * p: torch.optim.Adam) or decoupled (p *= keep = 1 - lr * wd
/// first: torch.optim.AdamW).
enum class adam_decay { none, l2, decoupled };

/// The constants of one Adam / AdamW update: m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g g;
/// p += neg_step_size * m / (sqrt(v) / bias_correction2_sqrt + eps).
template <class T>
struct adam_args {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps, wd, keep;
  adam_decay decay;
};

/// Sizes of one pooling (the nn part's pooling gradients): input N x C x H x W and output N x C x OH x OW (both
/// contiguous), K.h x K.w windows at stride S with padding pad and (max) dilation dil; an average divides by the
/// window's cells inside the padded input (count_include_pad) or inside the input alone.
struct pool2d_geometry {
  index_t N, C, H, W;
  index_t OH, OW;
  hw K, S, pad, dil = 1;
  bool count_include_pad = true;
  bool ceil_mode = false;  ///< OH, OW were rounded up (the device kernels recompute them from the options)
};

/// An inverted-dropout mask for n elements, drawn from rng in element order: 0 with probability p, else 1/(1-p).
/// Every backend's dropout_mask draws here, on the host, so one seed gives the same masks under every policy.
template <class T>
void draw_dropout_mask(T* m, index_t n, double p, Rng& rng) {
  const T keep = T(1.0 / (1.0 - p));
  for (index_t i = 0; i < n; ++i) m[i] = rng.uniform_double() < p ? T(0) : keep;
}

}  // namespace detail

/// The kernels of policy P (see the top of this file). Specialised by kernels/cpu/backend.hpp and
/// kernels/cuda/backend.hpp; using one that is not there is a compile error naming backend<P>.
template <class P>
struct backend;

}  // namespace tessera

namespace tessera::detail {

/// One scaled dot-product attention (kernels/cpu/attention.hpp, kernels/cuda/attention.hpp): for every batch b and
/// head h, O = softmax(Q K^T * scale + mask) V with Q [Tq, D], K [S, D], V [S, Dv], O [Tq, Dv]. Element (b, h, t, c) of
/// q lives at q[b * qs[0] + h * qs[1] + t * qs[2] + c] (unit column stride); k, v, o and the gradients likewise (dq,
/// dk, dv with q's, k's and v's strides, dout with o's). lse [B, H, Tq] (contiguous) holds each row's log-sum-exp of
/// its scaled, masked scores (NaN for a row whose keys are all masked). Masks (true = masked out): causal (key s > query t),
/// mask [Tq, S] bools at mask + b * mask_bs + h * mask_hs (a stride 0: shared), key_padding [B, S]; or
/// mask_add, a float mask laid out as mask, added to the scores.
template <class T>
struct attention_desc {
  index_t B = 0, H = 0, Tq = 0, S = 0, D = 0, Dv = 0;  // batch, heads, query rows, key rows, widths
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* o = nullptr;
  index_t qs[3]{}, ks[3]{}, vs[3]{}, os[3]{};
  T* lse = nullptr;
  T scale = T(1);
  bool causal = false;
  const bool* mask = nullptr;
  index_t mask_bs = 0, mask_hs = 0;
  const bool* key_padding = nullptr;
  const T* mask_add = nullptr;  // a float mask added to the scaled scores (-inf: masked out), strides as mask's
  // attention-weight dropout (kernels/attention_dropout.hpp): weight (b, h, t, s) kept when
  // attention_dropout_keep(attention_dropout_row(dropout_seed, b, h, t), s, dropout_threshold), then times dropout_scale
  bool dropout = false;
  std::uint64_t dropout_seed = 0, dropout_threshold = 0;
  T dropout_scale = T(1);
  // the backward's: dout read with o's strides; dq, dk, dv written (or added to: acc_*) with q's, k's, v's; null: skipped
  const T* dout = nullptr;
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
  bool acc_q = false, acc_k = false, acc_v = false;
};

}  // namespace tessera::detail
