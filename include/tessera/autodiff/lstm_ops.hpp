// The sequence LSTM, written once for every policy above backend<P> (its kernels: kernels/cpu/rnn.hpp on the host
// policies, kernels/cuda/rnn.hpp on the cuda policy, compiled by nvcc), and the pieces the recurrent operations share
// (autodiff/rnn_ops.hpp adds the cells):
//   lstm(x, layers, opts, h0, c0, rng, training)   a multi-layer LSTM over a sequence with PyTorch's semantics and
//       parameter layout (per layer weight_ih [4H, I], weight_hh [4H, H], bias_ih [4H], bias_hh [4H]; gates i, f, g, o;
//       c' = f*c + i*g, h' = o*tanh(c')). Input [B, T, I] (batch_first) or [T, B, I]; returns the output sequence in the
//       same layout and the final (h, c) [L, B, H]. Dropout (inverted) between layers in training, not after the last;
//       the mask drawn from the host generator (a seed gives the same masks on every policy).
//       Per layer: the input projection of all time steps is one GEMM onto the biases; each step is one recurrent
//       GEMM accumulating into that step's gates and one fused pass for the nonlinearities and the c/h update.
//       Backward through time: per step one fused pointwise pass and one GEMM (dh_{t-1} = dgates W_hh); the weight
//       gradients afterwards as large GEMMs over all steps at once, the biases' as column sums. The whole stack is
//       one recorded node.
//   select_last_step(y)   [N, T, H] -> [N, H], the last time step.
#pragma once
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif
#include "tessera/autodiff/var.hpp"
#include "tessera/core/random.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/backend.hpp"

namespace tessera {

/// Hyper-parameters of a (stacked) LSTM, as PyTorch's nn.LSTM: nn::LSTM<28, 128, {.num_layers = 2, .dropout = 0.2}>.
struct lstm_options {
  int num_layers = 1;
  double dropout = 0.0;  ///< between layers (not after the last), in training only
  bool batch_first = true;
  bool bidirectional = false;  ///< nn::LSTM runs it through ad::recurrence (autodiff/recurrence_ops.hpp); ad::lstm throws
};

namespace ad {

/// One layer's parameters in PyTorch's layout.
template <class T, class P>
struct lstm_layer_params {
  Var<T, 2, P> weight_ih;  ///< [4H, I]
  Var<T, 2, P> weight_hh;  ///< [4H, H]
  Var<T, 1, P> bias_ih;    ///< [4H]
  Var<T, 1, P> bias_hh;    ///< [4H]
};

template <class T, class P>
struct lstm_result {
  Var<T, 3, P> output;  ///< [B, T, H] (batch_first) or [T, B, H]
  Var<T, 3, P> h_n;     ///< [L, B, H]
  Var<T, 3, P> c_n;     ///< [L, B, H]
};

namespace detail {

/// The extents of an LSTM call: layers, batch, steps, input and hidden sizes.
struct lstm_geometry {
  index_t L = 0, B = 0, T = 0, I = 0, H = 0;
};

/// n elements of policy P's memory, uninitialised (every element is written before it is read: zero-filling the
/// gate buffers cost 5 % of a forward pass). Host buffers come from the host block cache, as tensors do.
template <class T, class P>
class rnn_buffer {
 public:
  rnn_buffer() = default;
  explicit rnn_buffer(index_t n) { resize(n); }
  rnn_buffer(rnn_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  rnn_buffer& operator=(rnn_buffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~rnn_buffer() { release(); }
  void resize(index_t n) {
    if (n == n_) return;
    release();
    if (n > 0) p_ = backend<P>::template allocate<T>(n);
    n_ = n;
  }
  T* data() const { return p_; }
  index_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

 private:
  void release() {
    if (p_) backend<P>::deallocate(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  index_t n_ = 0;
};

/// What backward needs of one layer (all time-major: row t*B + b).
template <class T, class P>
struct lstm_layer_saved {
  rnn_buffer<T, P> x;     ///< the layer's input [T*B, I] (after dropout)
  rnn_buffer<T, P> gate;  ///< gate activations [T*B, 4H]: i, f, g, o
  rnn_buffer<T, P> c;     ///< cell states [T*B, H]
  rnn_buffer<T, P> y;     ///< hidden states [T*B, H]
  rnn_buffer<T, P> mask;  ///< dropout mask applied to the previous layer's output (empty: none)
  index_t in = 0;
};

/// The gradient tensor of a Var, zero-filled when fresh (then always accumulated into); on every policy.
template <class V>
auto& zeroed_grad_tensor(const V& v) {
  return v.node().grad_buffer();
}
/// Its data.
template <class V>
auto* zeroed_grad(const V& v) {
  return zeroed_grad_tensor(v).data();
}
/// The zeroed gradient of a Var that is defined and requires one, else null.
template <class V>
auto* wanted_grad(const V& v) {
  return v.defined() && v.requires_grad() ? zeroed_grad(v) : nullptr;
}
/// The data of a Var, or null when it is empty.
template <class V>
auto* data_or_null(const V& v) {
  return v.defined() ? v.value().data() : nullptr;
}

/// The inputs of a recorded operation (every defined Var) and whether any of them requires a gradient.
struct recorded_inputs {
  std::vector<std::shared_ptr<node_base>> nodes;
  bool any = false;
  template <class V>
  recorded_inputs& add(const V& v) {
    if (v.defined()) {
      nodes.push_back(v.ptr());
      any = any || v.requires_grad();
    }
    return *this;
  }
};

/// Makes `out` (a fresh result) a node of the graph when gradients are on and any input requires one; backward calls
/// back(gradient of out, value of out) (raw, contiguous, in the policy's memory).
template <class T, int R, class P, class F>
void record(Var<T, R, P>& out, recorded_inputs in, F&& back) {
  if (detect_anomaly_enabled()) {
    if (const char* kind = out.node().value_anomaly(); *kind)
      throw anomaly_error("tessera: anomaly: the forward of " + op_name_of<std::remove_cvref_t<F>>() +
                          anomaly_where(anomaly_layer()) + " produced " + kind + " in its result " + out.node().shape());
  }
  if (!grad_mode() || !in.any) return;
  auto& nd = out.node();
  nd.requires_grad = true;
  nd.is_leaf = false;
  nd.inputs = std::move(in.nodes);
  nd.op_name = &op_name_of<std::remove_cvref_t<F>>;
  if (detect_anomaly_enabled()) nd.layer = anomaly_layer();
  nd.backward_fn = [self = &nd, b = std::forward<F>(back)]() { b(self->grad_buffer().data(), self->value.data()); };
}

/// Elements [offset, offset + prod(d)) of a packed result as a Var of their own, whose gradient flows into the
/// packed node's (an operation with several results records one node).
template <int R, class T, class P>
Var<T, R, P> packed_piece(const Var<T, 1, P>& packed, index_t offset, const dims_t<R>& d) {
  using VR = Var<T, R, P>;
  const auto st = contiguous_strides(d);
  // strided-view assignments: host loops or device kernels, as the policy says
  typename VR::tensor v(View<const T, dyn_shape_t<R>, P>(packed.value().data() + offset, d, st));
  return VR::make(std::move(v), [packed, offset, d, st](const auto& gr) {
    View<T, dyn_shape_t<R>, P> dst(packed.node().grad_buffer().data() + offset, d, st);
    dst = dst + gr;
  }, packed);
}

/// The backward of lstm (below): g is the gradient of the packed result [output | h_n | c_n].
template <class T, class P>
void lstm_backward(std::vector<lstm_layer_saved<T, P>>& saved, const T* g, const Var<T, 3, P>& x, const Var<T, 3, P>& h0,
                   const Var<T, 3, P>& c0, const std::vector<lstm_layer_params<T, P>>& layers, const lstm_geometry& geo,
                   bool bf) {
  using be = backend<P>;
  using tessera::detail::gemm_desc;
  const index_t L = geo.L, B = geo.B, Tn = geo.T, H = geo.H, G4 = 4 * H, TB = Tn * B, BH = B * H;
  const index_t n_out = TB * H, n_state = L * BH;
  rnn_buffer<T, P> dy(n_out), dG(TB * G4), dh(BH), dc(BH), dX;  // dy: the gradient at the top layer's output, time-major
  if (bf) be::rnn_swap01(g, dy.data(), B, Tn, H, false);
  else be::copy(dy.data(), g, n_out);
  const T* h0p = data_or_null(h0);
  const T* c0p = data_or_null(c0);
  for (index_t l = L - 1; l >= 0; --l) {
    auto& s = saved[std::size_t(l)];
    const auto& p = layers[std::size_t(l)];
    const index_t in = s.in;
    be::copy(dh.data(), g + n_out + l * BH, BH);
    be::copy(dc.data(), g + n_out + n_state + l * BH, BH);
    const auto whh = be::lstm_prepare_weight_hh(p.weight_hh.value().data(), H, true);
    for (index_t t = Tn - 1; t >= 0; --t) {
      const T* cprev = t > 0 ? s.c.data() + (t - 1) * BH : (c0p ? c0p + l * BH : nullptr);
      T* dGt = dG.data() + t * B * G4;
      be::lstm_step_backward(s.gate.data() + t * B * G4, s.c.data() + t * BH, cprev, dh.data(), dy.data() + t * BH, dc.data(), dGt, B,
                             H);
      be::lstm_recurrent_backward(dh.data(), dGt, whh, B);  // dh_{t-1} = dgates W_hh
    }
    if (T* gh = wanted_grad(h0)) be::rnn_add(gh + l * BH, dh.data(), BH);
    if (T* gc = wanted_grad(c0)) be::rnn_add(gc + l * BH, dc.data(), BH);
    if (p.weight_hh.requires_grad() && (Tn > 1 || h0p)) {  // untouched when no product reaches it
      T* gw = zeroed_grad(p.weight_hh);
      // steps 1..T-1 at once: dgates[1..]^T h[0..T-2]; step 0 against h0
      if (Tn > 1) be::gemm(gemm_desc<T>{G4, H, (Tn - 1) * B, {dG.data() + B * G4, 1, G4}, {s.y.data(), H, 1}, gw, H, true});
      if (h0p && TB > 0) be::gemm(gemm_desc<T>{G4, H, B, {dG.data(), 1, G4}, {h0p + l * BH, H, 1}, gw, H, true});
    }
    if (T* gw = wanted_grad(p.weight_ih); gw && TB > 0)  // dW_ih = dgates^T x
      be::gemm(gemm_desc<T>{G4, in, TB, {dG.data(), 1, G4}, {s.x.data(), in, 1}, gw, in, true});
    be::rnn_bias_grads(wanted_grad(p.bias_ih), wanted_grad(p.bias_hh), dG.data(), TB, G4);
    if (l == 0 && !x.requires_grad()) continue;
    dX.resize(TB * in);  // dX = dgates W_ih
    if (TB > 0) be::gemm(gemm_desc<T>{TB, in, G4, {dG.data(), G4, 1}, {p.weight_ih.value().data(), in, 1}, dX.data(), in, false});
    if (l > 0) {
      if (!s.mask.empty()) be::rnn_mul(dy.data(), dX.data(), s.mask.data(), TB * H);
      else be::copy(dy.data(), dX.data(), TB * H);
    } else {
      T* gx = zeroed_grad(x);
      if (bf) be::rnn_swap01(dX.data(), gx, Tn, B, in, true);
      else be::rnn_add(gx, dX.data(), TB * in);
    }
  }
}

/// ad::lstm after its checks (named so: anomaly messages name the operation after this function).
template <class T, class P>
lstm_result<T, P> lstm(const Var<T, 3, P>& x, const std::vector<lstm_layer_params<T, P>>& layers, const lstm_options& opts,
                       const Var<T, 3, P>& h0, const Var<T, 3, P>& c0, Rng* rng, bool drop, const lstm_geometry& geo) {
  using be = backend<P>;
  using V1 = Var<T, 1, P>;
  using tessera::detail::gemm_desc;
  const index_t L = geo.L, B = geo.B, Tn = geo.T, I0 = geo.I, H = geo.H, G4 = 4 * H, TB = Tn * B, BH = B * H;
  auto saved = std::make_shared<std::vector<lstm_layer_saved<T, P>>>(std::size_t(L));
  const T* h0p = data_or_null(h0);
  const T* c0p = data_or_null(c0);

  auto& first = (*saved)[0];  // layer 0's input, time-major
  first.in = I0;
  first.x.resize(TB * I0);
  if (opts.batch_first) be::rnn_swap01(x.value().data(), first.x.data(), B, Tn, I0, false);
  else be::copy(first.x.data(), x.value().data(), TB * I0);

  for (index_t l = 0; l < L; ++l) {
    auto& s = (*saved)[std::size_t(l)];
    const auto& p = layers[std::size_t(l)];
    const index_t in = s.in;
    s.gate.resize(TB * G4);
    s.c.resize(TB * H);
    s.y.resize(TB * H);
    T* G = s.gate.data();
    // gates = x W_ih^T + b_ih + b_hh for all steps: one GEMM onto the biases
    be::rnn_bias_rows(G, p.bias_ih.value().data(), p.bias_hh.value().data(), TB, G4);
    if (TB > 0) be::gemm(gemm_desc<T>{TB, G4, in, {s.x.data(), in, 1}, {p.weight_ih.value().data(), 1, in}, G, G4, true});
    const auto whh = be::lstm_prepare_weight_hh(p.weight_hh.value().data(), H, false);
    for (index_t t = 0; t < Tn; ++t) {
      const T* hprev = t > 0 ? s.y.data() + (t - 1) * BH : (h0p ? h0p + l * BH : nullptr);
      const T* cprev = t > 0 ? s.c.data() + (t - 1) * BH : (c0p ? c0p + l * BH : nullptr);
      T* Gt = G + t * B * G4;
      if (hprev) be::lstm_recurrent_forward(Gt, hprev, whh, B);
      be::lstm_step_forward(Gt, cprev, s.c.data() + t * BH, s.y.data() + t * BH, B, H);
    }
    if (l + 1 < L) {
      auto& nx = (*saved)[std::size_t(l + 1)];
      nx.in = H;
      nx.x.resize(TB * H);
      if (drop) {  // the mask drawn as ad::dropout draws it (the same masks for a seed on every policy)
        nx.mask.resize(TB * H);
        be::dropout_mask(nx.mask.data(), TB * H, opts.dropout, *rng);
        be::rnn_mul(nx.x.data(), s.y.data(), nx.mask.data(), TB * H);
      } else {
        be::copy(nx.x.data(), s.y.data(), TB * H);
      }
    }
  }

  // packed value: output (caller's layout), h_n, c_n
  const index_t n_out = TB * H, n_state = L * BH;
  typename V1::tensor packed_v(n_out + 2 * n_state);
  T* pk = packed_v.data();
  const T* ytop = (*saved)[std::size_t(L - 1)].y.data();
  if (opts.batch_first) be::rnn_swap01(ytop, pk, Tn, B, H, false);
  else be::copy(pk, ytop, n_out);
  if (Tn > 0)
    for (index_t l = 0; l < L; ++l) {
      const auto& s = (*saved)[std::size_t(l)];
      be::copy(pk + n_out + l * BH, s.y.data() + (Tn - 1) * BH, BH);
      be::copy(pk + n_out + n_state + l * BH, s.c.data() + (Tn - 1) * BH, BH);
    }

  V1 packed(std::move(packed_v), false);
  recorded_inputs inputs;
  inputs.add(x).add(h0).add(c0);
  for (const auto& p : layers) inputs.add(p.weight_ih).add(p.weight_hh).add(p.bias_ih).add(p.bias_hh);
  record(packed, std::move(inputs), [saved, x, h0, c0, layers, geo, bf = opts.batch_first](const T* g, const T*) {
    lstm_backward(*saved, g, x, h0, c0, layers, geo, bf);
    for (auto& s : *saved) s = lstm_layer_saved<T, P>{};  // free what backward needed
  });

  // the three results as pieces of the packed node
  const dims_t<3> state_dims{L, B, H};
  lstm_result<T, P> r;
  r.output = packed_piece<3>(packed, 0, opts.batch_first ? dims_t<3>{B, Tn, H} : dims_t<3>{Tn, B, H});
  r.h_n = packed_piece<3>(packed, n_out, state_dims);
  r.c_n = packed_piece<3>(packed, n_out + n_state, state_dims);
  return r;
}

}  // namespace detail

/// A multi-layer LSTM (see the top of this file). h0, c0 [L, B, H] may be empty Vars (zeros). Dropout between layers
/// needs `rng` when opts.dropout > 0 and training.
template <class T, class P>
lstm_result<T, P> lstm(const Var<T, 3, P>& x, const std::vector<lstm_layer_params<T, P>>& layers, const lstm_options& opts,
                       const Var<T, 3, P>& h0 = {}, const Var<T, 3, P>& c0 = {}, Rng* rng = nullptr, bool training = false) {
  static_assert(requires { backend<P>::on_device; },
                "tessera: ad::lstm on the cuda policy runs kernels: compile this file with nvcc (a .cu file)");
  const index_t L = index_t(layers.size());
  if (opts.bidirectional)
    throw std::invalid_argument("tessera: lstm: bidirectional LSTMs run through ad::recurrence (autodiff/recurrence_ops.hpp)");
  if (L < 1 || opts.num_layers != int(L))
    throw std::invalid_argument("tessera: lstm: " + std::to_string(L) + " layers of parameters given, options say " +
                                std::to_string(opts.num_layers));
  const auto xd = x.dims();
  const index_t B = opts.batch_first ? xd[0] : xd[1];
  const index_t Tn = opts.batch_first ? xd[1] : xd[0];
  const index_t I0 = xd[2];
  const index_t H = layers[0].weight_hh.dims()[1];
  const index_t G4 = 4 * H;
  for (index_t l = 0; l < L; ++l) {
    const auto& p = layers[std::size_t(l)];
    const index_t in = l == 0 ? I0 : H;
    if (p.weight_ih.dims() != dims_t<2>{G4, in} || p.weight_hh.dims() != dims_t<2>{G4, H} || p.bias_ih.dims()[0] != G4 ||
        p.bias_hh.dims()[0] != G4)
      throw shape_error("tessera: lstm: the parameters of layer " + std::to_string(l) + " do not fit input size " +
                        std::to_string(in) + " and hidden size " + std::to_string(H));
  }
  const dims_t<3> state_dims{L, B, H};
  if (h0.defined() && h0.dims() != state_dims)
    throw shape_error("tessera: lstm: h0 " + tessera::detail::format_dims(h0.dims()) + " should be " + tessera::detail::format_dims(state_dims));
  if (c0.defined() && c0.dims() != state_dims)
    throw shape_error("tessera: lstm: c0 " + tessera::detail::format_dims(c0.dims()) + " should be " + tessera::detail::format_dims(state_dims));
  const bool drop = training && opts.dropout > 0.0 && L > 1;
  if (drop && (opts.dropout >= 1.0)) throw std::invalid_argument("tessera: lstm: dropout must be in [0, 1)");
  if (drop && !rng) throw std::logic_error("tessera: lstm: dropout in training needs a random number generator");
  return detail::lstm(x, layers, opts, h0, c0, rng, drop, detail::lstm_geometry{L, B, Tn, I0, H});
}

/// [N, T, H] -> [N, H]: the last time step (of a batch-first sequence). Strided-view assignments: host loops or
/// device kernels, as the policy says.
template <class T, class P>
Var<T, 2, P> select_last_step(const Var<T, 3, P>& y) {
  using V2 = Var<T, 2, P>;
  const auto d = y.dims();
  const index_t N = d[0], Tn = d[1], H = d[2];
  if (Tn < 1) throw shape_error("tessera: select_last_step: the sequence is empty");
  const dims_t<2> od{N, H}, os{Tn * H, 1};  // step Tn - 1 of each sequence
  typename V2::tensor v(View<const T, dyn_shape_t<2>, P>(y.value().data() + (Tn - 1) * H, od, os));
  return V2::make(std::move(v), [y, od, os, Tn, H](const auto& g) {
    View<T, dyn_shape_t<2>, P> last(detail::zeroed_grad(y) + (Tn - 1) * H, od, os);
    last = last + g;
  }, y);
}

}  // namespace ad
}  // namespace tessera
