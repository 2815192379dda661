// Recurrent operations. lstm and select_last_step run on every policy (lstm on the cuda policy through
// autodiff/cuda_rnn.hpp, compiled by nvcc); the cells on host policies (a device policy is a compile error naming the
// cell):
//   lstm(x, layers, opts, h0, c0, rng, training)   a multi-layer LSTM over a sequence with PyTorch's semantics and
//       parameter layout (per layer weight_ih [4H, I], weight_hh [4H, H], bias_ih [4H], bias_hh [4H]; gates i, f, g, o;
//       c' = f*c + i*g, h' = o*tanh(c')). Input [B, T, I] (batch_first) or [T, B, I]; returns the output sequence in the
//       same layout and the final (h, c) [L, B, H]. Dropout (inverted) between layers in training, not after the last.
//       Per layer: the input projection of all time steps is one GEMM (biases as its initial value); each step is one
//       recurrent GEMM accumulating into that step's gates and one fused pass for the nonlinearities and the c/h update.
//       Backward through time: per step one fused pointwise pass and one GEMM (dh_{t-1} = dgates W_hh); the weight
//       gradients afterwards as large GEMMs over all steps at once. The whole stack is one recorded node.
//   select_last_step(y)   [N, T, H] -> [N, H], the last time step.
// Single steps (cells), libtorch's rnn_cell / lstm_cell / gru_cell: x [B, I], state [B, H] (an empty Var: zeros),
// weight_ih [G*H, I], weight_hh [G*H, H], bias_ih, bias_hh [G*H] (empty Vars: no bias).
//   rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)   h' = tanh (or relu) (x W_ih^T + b_ih + h W_hh^T + b_hh)
//   lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)             {h', c'}, gates i, f, g, o as lstm
//   gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)                 gates r, z, n: r = s(W_ir x + b_ir + W_hr h + b_hr),
//       z = s(W_iz x + b_iz + W_hz h + b_hz), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h
// Each cell: one GEMM per input for all its gates (the biases as the GEMM's initial value), the gate math in one
// vectorised pass (the LSTM's is the sequence LSTM's step pass); backward one fused pointwise pass, then a GEMM per
// input gradient and per weight gradient.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/autodiff/nn_ops.hpp"
#include "tessera/core/math.hpp"
#include "tessera/core/random.hpp"
#include "tessera/kernels/cpu/gemm.hpp"

namespace tessera {

/// Hyper-parameters of a (stacked) LSTM, as PyTorch's nn.LSTM: nn::LSTM<28, 128, {.num_layers = 2, .dropout = 0.2}>.
struct lstm_options {
  int num_layers = 1;
  double dropout = 0.0;  ///< between layers (not after the last), in training only
  bool batch_first = true;
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

/// The recurrent operations on a device policy: device_rnn_ops<cuda> is in autodiff/cuda_rnn.hpp (nvcc only).
template <class P>
struct device_rnn_ops;

namespace detail {

/// The extents of an LSTM call: layers, batch, steps, input and hidden sizes.
struct lstm_geometry {
  index_t L = 0, B = 0, T = 0, I = 0, H = 0;
};

template <class T>
inline T lstm_sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

/// A buffer whose elements start uninitialised (every element is written before it is read: zero-filling the
/// gate buffers cost 5 % of a forward pass). Large ones come from the host block cache, as tensors do: the gate and
/// state buffers of a sequence are megabytes each, and fresh ones from the system are faulted in page by page on
/// every forward pass.
template <class T>
class uninit_vector {
  struct cache_free {
    void operator()(T* p) const { tessera::detail::host_block_cache::instance().deallocate(p); }
  };

 public:
  uninit_vector() = default;
  uninit_vector(const uninit_vector& o) { *this = o; }
  uninit_vector& operator=(const uninit_vector& o) {
    if (this != &o) {
      resize(o.n_);
      if (n_) std::memcpy(p_.get(), o.p_.get(), n_ * sizeof(T));
    }
    return *this;
  }
  uninit_vector(uninit_vector&&) noexcept = default;
  uninit_vector& operator=(uninit_vector&&) noexcept = default;
  void resize(std::size_t n) {
    if (n != n_) {
      p_.reset(n ? static_cast<T*>(tessera::detail::host_block_cache::instance().allocate(n * sizeof(T))) : nullptr);
      n_ = n;
    }
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T& operator[](std::size_t i) { return p_.get()[i]; }
  const T& operator[](std::size_t i) const { return p_.get()[i]; }
  T* begin() { return p_.get(); }
  T* end() { return p_.get() + n_; }
  const T* begin() const { return p_.get(); }
  const T* end() const { return p_.get() + n_; }

 private:
  std::unique_ptr<T, cache_free> p_;
  std::size_t n_ = 0;
};

/// What backward needs of one layer (all time-major: row t*B + b).
template <class T>
struct lstm_layer_saved {
  uninit_vector<T> x;     ///< the layer's input [T*B, I] (after dropout)
  uninit_vector<T> gate;  ///< gate activations [T*B, 4H]: i, f, g, o
  uninit_vector<T> c;     ///< cell states [T*B, H]
  uninit_vector<T> y;     ///< hidden states [T*B, H]
  uninit_vector<T> mask;  ///< dropout mask applied to the previous layer's output (empty: none)
  index_t in = 0;
};

/// [D0, D1, K] -> [D1, D0, K] (swap of the first two axes).
template <class T>
inline void swap01(const T* src, T* dst, index_t D0, index_t D1, index_t K) {
  for (index_t i = 0; i < D0; ++i)
    for (index_t j = 0; j < D1; ++j) std::memcpy(dst + (j * D0 + i) * K, src + (i * D1 + j) * K, std::size_t(K) * sizeof(T));
}

/// The gradient tensor of a Var, zero-filled when fresh (then always accumulated into); on every policy.
template <class V>
auto& zeroed_grad_tensor(const V& v) {
  bool acc;
  auto& g = fresh_or_grad(v, acc);
  if (!acc) g = typename V::value_type(0);
  return g;
}
/// Its data.
template <class V>
auto* zeroed_grad(const V& v) {
  return zeroed_grad_tensor(v).data();
}

/// Vector (or scalar, V = T) loads and stores for the step passes.
template <class V, class T>
TS_INLINE V lstm_ld(const T* p) {
  if constexpr (std::is_same_v<V, T>) return *p;
#if TESSERA_SIMD
  else return simd::load<T, int(sizeof(V) / sizeof(T))>(p);
#endif
}
template <class V, class T>
TS_INLINE void lstm_st(T* p, V v) {
  if constexpr (std::is_same_v<V, T>) *p = v;
#if TESSERA_SIMD
  else simd::store<T, int(sizeof(V) / sizeof(T))>(p, v);
#endif
}

/// Runs body.template operator()<V>(j) over j = 0 .. H: SIMD packets (float: the vectorised exp/tanh of
/// core/math.hpp), then scalars.
template <class T, class F>
TS_INLINE void lstm_columns(index_t H, F&& body) {
  index_t j = 0;
#if TESSERA_SIMD
  constexpr int N = simd::lanes_for<sizeof(T)>;
  for (; j + N <= H; j += N) body.template operator()<simd::vec<T, N>>(j);
#endif
  for (; j < H; ++j) body.template operator()<T>(j);
}

/// Forward of one row's pointwise part: g (the row's 4H pre-activations in, activations out), c and h of the row
/// (cp: c_{t-1}'s row, null for the zero state).
template <class T>
TS_INLINE void lstm_row_forward(T* g, const T* cp, T* cb, T* hb, index_t H) {
  lstm_columns<T>(H, [&]<class V>(index_t j) {
    const V i = math::sigmoid(lstm_ld<V>(g + j));
    const V f = math::sigmoid(lstm_ld<V>(g + H + j));
    const V gg = math::tanh(lstm_ld<V>(g + 2 * H + j));
    const V o = math::sigmoid(lstm_ld<V>(g + 3 * H + j));
    lstm_st(g + j, i);
    lstm_st(g + H + j, f);
    lstm_st(g + 2 * H + j, gg);
    lstm_st(g + 3 * H + j, o);
    const V cn = cp ? f * lstm_ld<V>(cp + j) + i * gg : i * gg;
    lstm_st(cb + j, cn);
    lstm_st(hb + j, o * math::tanh(cn));
  });
}

/// Forward of one step's pointwise part: gates (pre-activations in, activations out), c and h for B rows.
template <class T>
inline void lstm_step_forward(T* gates, const T* cprev, T* c, T* h, index_t B, index_t H, int nt = 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * H >= 8192)
#endif
  for (index_t b = 0; b < B; ++b)
    lstm_row_forward<T>(gates + b * 4 * H, cprev ? cprev + b * H : nullptr, c + b * H, h + b * H, H);
}

/// Backward of one step's pointwise part: from dh and dc (updated in place to dc_{t-1}) to the gates'
/// pre-activation gradients.
template <class T>
inline void lstm_step_backward(const T* gates, const T* c, const T* cprev, const T* dh, T* dc, T* dgates, index_t B, index_t H,
                               int nt = 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * H >= 8192)
#endif
  for (index_t b = 0; b < B; ++b) {
    const T* g = gates + b * 4 * H;
    T* dg = dgates + b * 4 * H;
    const T* cb = c + b * H;
    const T* cp = cprev ? cprev + b * H : nullptr;
    const T* dhb = dh + b * H;
    T* dcb = dc + b * H;
    lstm_columns<T>(H, [&]<class V>(index_t j) {
      const V i = lstm_ld<V>(g + j), f = lstm_ld<V>(g + H + j), gg = lstm_ld<V>(g + 2 * H + j), o = lstm_ld<V>(g + 3 * H + j);
      const V tc = math::tanh(lstm_ld<V>(cb + j)), dhj = lstm_ld<V>(dhb + j);
      const V one = V{} + T(1);
      const V dct = lstm_ld<V>(dcb + j) + dhj * o * (one - tc * tc);
      const V cpj = cp ? lstm_ld<V>(cp + j) : V{};
      lstm_st(dg + j, dct * gg * i * (one - i));
      lstm_st(dg + H + j, dct * cpj * f * (one - f));
      lstm_st(dg + 2 * H + j, dct * i * (one - gg * gg));
      lstm_st(dg + 3 * H + j, dhj * tc * o * (one - o));
      lstm_st(dcb + j, dct * f);
    });
  }
}

// ---- pieces shared by the sequence LSTM and the cells ----

/// G[r, :] = b1 + b2 for the rows r < rows of G [rows, GW]; an empty bias counts as zeros.
template <class T, class P>
void fill_bias_rows(T* G, index_t rows, index_t GW, const Var<T, 1, P>& b1, const Var<T, 1, P>& b2) {
  if (rows <= 0) return;
  const T* p1 = b1.defined() ? b1.value().data() : nullptr;
  const T* p2 = b2.defined() ? b2.value().data() : nullptr;
  for (index_t j = 0; j < GW; ++j) G[j] = (p1 ? p1[j] : T(0)) + (p2 ? p2[j] : T(0));
  for (index_t r = 1; r < rows; ++r) std::memcpy(G + r * GW, G, std::size_t(GW) * sizeof(T));
}

/// G [rows, GW] += src [rows, in] W^T for W [GW, in]: a projection of every gate at once (`wt`: W^T packed once).
template <class T>
void add_projection(T* G, const T* src, const T* W, index_t rows, index_t GW, index_t in, int nt,
                    const tessera::detail::packed_b<T>* wt = nullptr) {
  tessera::detail::cpu_gemm<T>(rows, GW, in, {src, in, 1}, {W, 1, in}, G, GW, true, nt, {}, wt);
}

/// out [rows, in] (+)= dG [rows, GW] W [GW, in]: the gradient through a projection (`w`: W packed once).
template <class T>
void project_back(T* out, const T* dG, const T* W, index_t rows, index_t GW, index_t in, bool accumulate, int nt,
                  const tessera::detail::packed_b<T>* w = nullptr) {
  tessera::detail::cpu_gemm<T>(rows, in, GW, {dG, GW, 1}, {W, in, 1}, out, in, accumulate, nt, {}, w);
}

/// dW [GW, in] += dG^T src over `rows` rows (dG [rows, GW], src [rows, in]) when W requires a gradient: one GEMM.
template <class T, class P>
void add_weight_grad(const Var<T, 2, P>& W, const T* dG, const T* src, index_t rows, index_t GW, index_t in, int nt) {
  if (W.requires_grad()) tessera::detail::cpu_gemm<T>(GW, in, rows, {dG, 1, GW}, {src, in, 1}, zeroed_grad(W), in, true, nt);
}

/// The column sums of dG [rows, GW] added to the gradient of each of b1, b2 that is defined and requires one.
template <class T, class P>
void add_bias_grads(const T* dG, index_t rows, index_t GW, const Var<T, 1, P>& b1, const Var<T, 1, P>& b2 = {}) {
  const bool w1 = b1.defined() && b1.requires_grad(), w2 = b2.defined() && b2.requires_grad();
  if (!w1 && !w2) return;
  std::vector<T> db(std::size_t(GW), T(0));
  for (index_t r = 0; r < rows; ++r) {
    const T* row = dG + r * GW;
    for (index_t j = 0; j < GW; ++j) db[std::size_t(j)] += row[j];
  }
  for (const auto* b : {w1 ? &b1 : nullptr, w2 ? &b2 : nullptr})
    if (b) {
      T* gb = zeroed_grad(*b);
      for (index_t j = 0; j < GW; ++j) gb[j] += db[std::size_t(j)];
    }
}

/// `a` += `b` elementwise over n values (a gradient into a gradient).
template <class T>
inline void add_into(T* a, const T* b, index_t n) {
  for (index_t k = 0; k < n; ++k) a[k] += b[k];
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
/// back(gradient of out, value of out) (raw, contiguous).
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

/// v's gradient (+)= dG [rows, GW] W [GW, in], when v is defined and requires one.
template <class T, class P>
void grad_through(const Var<T, 2, P>& v, const T* dG, const Var<T, 2, P>& W, index_t rows, index_t GW, index_t in, int nt) {
  if (!v.defined() || !v.requires_grad()) return;
  bool acc;
  auto& g = fresh_or_grad(v, acc);
  project_back(g.data(), dG, W.value().data(), rows, GW, in, acc, nt);
}

/// W_hh's gradient from one step: dG^T h, or zeros when the step started from the zero state (as libtorch, whose
/// zero state still goes through the product).
template <class T, class P>
void add_recurrent_weight_grad(const Var<T, 2, P>& w_hh, const T* dG, const Var<T, 2, P>& h, index_t rows, index_t GW, index_t H,
                               int nt) {
  if (h.defined()) add_weight_grad(w_hh, dG, h.value().data(), rows, GW, H, nt);
  else if (w_hh.requires_grad()) zeroed_grad(w_hh);
}

/// Checks a cell's operands for `gates` gates of hidden size H (weight_hh's second extent); returns {B, I, H}.
/// Each error names the shapes that disagree and the shape expected.
template <class T, class P>
std::array<index_t, 3> check_cell(const char* op, index_t gates, const Var<T, 2, P>& x, const Var<T, 2, P>& h,
                                  const Var<T, 2, P>* c, const Var<T, 2, P>& w_ih, const Var<T, 2, P>& w_hh,
                                  const Var<T, 1, P>& b_ih, const Var<T, 1, P>& b_hh) {
  using tessera::detail::format_dims;
  const std::string pre = std::string("tessera: ") + op + ": ";
  const auto xd = x.dims(), wi = w_ih.dims(), wh = w_hh.dims();
  const index_t H = wh[1], GH = gates * H;
  if (H < 1 || wh[0] != GH)
    throw shape_error(pre + "weight_hh " + format_dims(wh) + " is not [" + std::to_string(gates) + " * H, H] (expected " +
                      format_dims(dims_t<2>{gates * std::max<index_t>(H, 1), H}) + ")");
  if (wi != dims_t<2>{GH, xd[1]})
    throw shape_error(pre + "weight_ih " + format_dims(wi) + " does not fit the input " + format_dims(xd) + " and weight_hh " +
                      format_dims(wh) + " (expected " + format_dims(dims_t<2>{GH, xd[1]}) + ")");
  for (const auto* b : {&b_ih, &b_hh})
    if (b->defined() && b->dims()[0] != GH)
      throw shape_error(pre + (b == &b_ih ? "bias_ih " : "bias_hh ") + format_dims(b->dims()) + " does not fit weight_hh " +
                        format_dims(wh) + " (expected " + format_dims(dims_t<1>{GH}) + ")");
  for (const auto* st : {&h, c})
    if (st && st->defined() && st->dims() != dims_t<2>{xd[0], H})
      throw shape_error(pre + (st == &h ? "the hidden state " : "the cell state ") + format_dims(st->dims()) +
                        " does not fit the input " + format_dims(xd) + " and weight_hh " + format_dims(wh) + " (expected " +
                        format_dims(dims_t<2>{xd[0], H}) + ")");
  return {xd[0], xd[1], H};
}

/// Forward of a GRU step's pointwise part for B rows: gi [B, 3H] (x W_ih^T + b_ih, replaced by the activations r, z, n),
/// gh [B, 3H] (h W_hh^T + b_hh, read), h' = (1 - z) n + z h.
template <class T>
inline void gru_step_forward(T* gi, const T* gh, const T* hprev, T* hout, index_t B, index_t H, int nt = 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * H >= 8192)
#endif
  for (index_t b = 0; b < B; ++b) {
    T* a = gi + b * 3 * H;
    const T* q = gh + b * 3 * H;
    const T* hp = hprev ? hprev + b * H : nullptr;
    T* hb = hout + b * H;
    lstm_columns<T>(H, [&]<class V>(index_t j) {
      const V r = math::sigmoid(lstm_ld<V>(a + j) + lstm_ld<V>(q + j));
      const V z = math::sigmoid(lstm_ld<V>(a + H + j) + lstm_ld<V>(q + H + j));
      const V n = math::tanh(lstm_ld<V>(a + 2 * H + j) + r * lstm_ld<V>(q + 2 * H + j));
      lstm_st(a + j, r);
      lstm_st(a + H + j, z);
      lstm_st(a + 2 * H + j, n);
      const V h = hp ? lstm_ld<V>(hp + j) : V{};
      lstm_st(hb + j, n + z * (h - n));
    });
  }
}

/// Backward of a GRU step's pointwise part: from dh' to the pre-activation gradients of the input side (dgi) and
/// the recurrent side (dgh, which differs in the n gate: r * dn); dhprev (may be null) += dh' * z.
template <class T>
inline void gru_step_backward(const T* act, const T* gh, const T* hprev, const T* dh, T* dgi, T* dgh, T* dhprev, index_t B,
                              index_t H, int nt = 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * H >= 8192)
#endif
  for (index_t b = 0; b < B; ++b) {
    const T* a = act + b * 3 * H;
    const T* q = gh + b * 3 * H;
    const T* hp = hprev ? hprev + b * H : nullptr;
    const T* dhb = dh + b * H;
    T* di = dgi + b * 3 * H;
    T* dq = dgh + b * 3 * H;
    T* dp = dhprev ? dhprev + b * H : nullptr;
    lstm_columns<T>(H, [&]<class V>(index_t j) {
      const V one = V{} + T(1);
      const V r = lstm_ld<V>(a + j), z = lstm_ld<V>(a + H + j), n = lstm_ld<V>(a + 2 * H + j);
      const V d = lstm_ld<V>(dhb + j);
      const V h = hp ? lstm_ld<V>(hp + j) : V{};
      const V dn = d * (one - z) * (one - n * n);
      const V dz = d * (h - n) * z * (one - z);
      const V dr = dn * lstm_ld<V>(q + 2 * H + j) * r * (one - r);
      lstm_st(di + j, dr);
      lstm_st(di + H + j, dz);
      lstm_st(di + 2 * H + j, dn);
      lstm_st(dq + j, dr);
      lstm_st(dq + H + j, dz);
      lstm_st(dq + 2 * H + j, dn * r);
      if (dp) lstm_st(dp + j, lstm_ld<V>(dp + j) + d * z);
    });
  }
}
}  // namespace detail

namespace detail {
template <class T, class P>
lstm_result<T, P> lstm_host(const Var<T, 3, P>& x, const std::vector<lstm_layer_params<T, P>>& layers, const lstm_options& opts,
                            const Var<T, 3, P>& h0, const Var<T, 3, P>& c0, Rng* rng, bool drop, const lstm_geometry& geo);
}  // namespace detail

/// A multi-layer LSTM (see the top of this file). h0, c0 [L, B, H] may be empty Vars (zeros). Dropout between layers
/// needs `rng` when opts.dropout > 0 and training.
template <class T, class P>
lstm_result<T, P> lstm(const Var<T, 3, P>& x, const std::vector<lstm_layer_params<T, P>>& layers, const lstm_options& opts,
                       const Var<T, 3, P>& h0 = {}, const Var<T, 3, P>& c0 = {}, Rng* rng = nullptr, bool training = false) {
  static_assert(!P::on_device || requires { device_rnn_ops<P>::enabled; },
                "tessera: ad::lstm on the cuda policy runs kernels: compile this file with nvcc (a .cu file)");
  const index_t L = index_t(layers.size());
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
  const detail::lstm_geometry geo{L, B, Tn, I0, H};
  if constexpr (P::on_device) return device_rnn_ops<P>::lstm(x, layers, opts, h0, c0, rng, drop, geo);
  else return detail::lstm_host(x, layers, opts, h0, c0, rng, drop, geo);
}

namespace detail {
/// ad::lstm on a host policy, after its checks.
template <class T, class P>
lstm_result<T, P> lstm_host(const Var<T, 3, P>& x, const std::vector<lstm_layer_params<T, P>>& layers, const lstm_options& opts,
                            const Var<T, 3, P>& h0, const Var<T, 3, P>& c0, Rng* rng, bool drop, const lstm_geometry& geo) {
  using V1 = Var<T, 1, P>;
  const index_t L = geo.L, B = geo.B, Tn = geo.T, I0 = geo.I, H = geo.H, G4 = 4 * H;
  const dims_t<3> state_dims{L, B, H};
  const int nt = P::num_threads();
  const index_t TB = Tn * B;
  auto saved = std::make_shared<std::vector<detail::lstm_layer_saved<T>>>(std::size_t(L));
  const T* h0p = h0.defined() ? h0.value().data() : nullptr;
  const T* c0p = c0.defined() ? c0.value().data() : nullptr;

  // layer 0's input, time-major
  (*saved)[0].in = I0;
  (*saved)[0].x.resize(std::size_t(TB * I0));
  if (opts.batch_first) detail::swap01(x.value().data(), (*saved)[0].x.data(), B, Tn, I0);
  else std::copy(x.value().data(), x.value().data() + TB * I0, (*saved)[0].x.data());

  for (index_t l = 0; l < L; ++l) {
    auto& s = (*saved)[std::size_t(l)];
    const auto& p = layers[std::size_t(l)];
    const index_t in = s.in;
    s.gate.resize(std::size_t(TB * G4));
    s.c.resize(std::size_t(TB * H));
    s.y.resize(std::size_t(TB * H));
    T* G = s.gate.data();
    // gates = x W_ih^T + b_ih + b_hh for all steps: one GEMM onto the biases
    detail::fill_bias_rows(G, TB, G4, p.bias_ih, p.bias_hh);
    const T* Whh = p.weight_hh.value().data();
    detail::add_projection(G, s.x.data(), p.weight_ih.value().data(), TB, G4, in, nt);
    const tessera::detail::packed_b<T> whh_t({Whh, 1, H}, H, G4);  // W_hh^T packed once for every step
    for (index_t t = 0; t < Tn; ++t) {
      const T* hprev = t > 0 ? s.y.data() + (t - 1) * B * H : (h0p ? h0p + l * B * H : nullptr);
      const T* cprev = t > 0 ? s.c.data() + (t - 1) * B * H : (c0p ? c0p + l * B * H : nullptr);
      T* Gt = G + t * B * G4;
      if (hprev) detail::add_projection(Gt, hprev, Whh, B, G4, H, nt, &whh_t);
      detail::lstm_step_forward<T>(Gt, cprev, s.c.data() + t * B * H, s.y.data() + t * B * H, B, H, nt);
    }
    if (l + 1 < L) {
      auto& nx = (*saved)[std::size_t(l + 1)];
      nx.in = H;
      nx.x = s.y;
      if (drop) {
        nx.mask.resize(std::size_t(TB * H));
        detail::draw_dropout_mask(nx.mask.data(), TB * H, opts.dropout, *rng);
        for (std::size_t i = 0; i < nx.x.size(); ++i) nx.x[i] *= nx.mask[i];
      }
    }
  }

  // packed value: output (caller's layout), h_n, c_n
  const index_t n_out = TB * H, n_state = L * B * H;
  typename V1::tensor packed_v(n_out + 2 * n_state);
  T* pk = packed_v.data();
  const auto& ytop = (*saved)[std::size_t(L - 1)].y;
  if (opts.batch_first) detail::swap01(ytop.data(), pk, Tn, B, H);
  else std::copy(ytop.begin(), ytop.end(), pk);
  for (index_t l = 0; l < L; ++l) {
    const auto& s = (*saved)[std::size_t(l)];
    const index_t last = Tn > 0 ? (Tn - 1) * B * H : 0;
    if (Tn > 0) {
      std::copy(s.y.data() + last, s.y.data() + last + B * H, pk + n_out + l * B * H);
      std::copy(s.c.data() + last, s.c.data() + last + B * H, pk + n_out + n_state + l * B * H);
    }
  }

  V1 packed(std::move(packed_v), false);
  detail::recorded_inputs inputs;
  inputs.add(x).add(h0).add(c0);
  for (const auto& p : layers) inputs.add(p.weight_ih).add(p.weight_hh).add(p.bias_ih).add(p.bias_hh);
  detail::record(packed, std::move(inputs),
                 [saved, x, h0, c0, layers, B, Tn, H, L, bf = opts.batch_first, nt](const T* g, const T*) {
      const index_t G4 = 4 * H, TB = Tn * B, n_out = TB * H, n_state = L * B * H;
      // gradient at the top layer's output, time-major
      std::vector<T> dy(std::size_t(TB * H));
      if (bf) detail::swap01(g, dy.data(), B, Tn, H);
      else std::copy(g, g + n_out, dy.data());
      const T* h0p = h0.defined() ? h0.value().data() : nullptr;
      const T* c0p = c0.defined() ? c0.value().data() : nullptr;
      std::vector<T> dG, dX, dh(std::size_t(B * H)), dc(std::size_t(B * H));
      for (index_t l = L - 1; l >= 0; --l) {
        auto& s = (*saved)[std::size_t(l)];
        const auto& p = layers[std::size_t(l)];
        const index_t in = s.in;
        dG.assign(std::size_t(TB * G4), T(0));
        std::copy(g + n_out + l * B * H, g + n_out + (l + 1) * B * H, dh.data());
        std::copy(g + n_out + n_state + l * B * H, g + n_out + n_state + (l + 1) * B * H, dc.data());
        const T* Whh = p.weight_hh.value().data();
        const tessera::detail::packed_b<T> whh({Whh, H, 1}, G4, H);  // W_hh packed once for every step
        for (index_t t = Tn - 1; t >= 0; --t) {
          for (index_t k = 0; k < B * H; ++k) dh[std::size_t(k)] += dy[std::size_t(t * B * H + k)];
          const T* cprev = t > 0 ? s.c.data() + (t - 1) * B * H : (c0p ? c0p + l * B * H : nullptr);
          T* dGt = dG.data() + t * B * G4;
          detail::lstm_step_backward<T>(s.gate.data() + t * B * G4, s.c.data() + t * B * H, cprev, dh.data(), dc.data(), dGt, B, H, nt);
          detail::project_back(dh.data(), dGt, Whh, B, G4, H, false, nt, &whh);  // dh_{t-1} = dgates W_hh
        }
        if (h0.defined() && h0.requires_grad()) detail::add_into(detail::zeroed_grad(h0) + l * B * H, dh.data(), B * H);
        if (c0.defined() && c0.requires_grad()) detail::add_into(detail::zeroed_grad(c0) + l * B * H, dc.data(), B * H);
        // steps 1..T-1 at once: dgates[1..]^T h[0..T-2]; step 0 against h0
        if (Tn > 1) detail::add_weight_grad(p.weight_hh, dG.data() + B * G4, s.y.data(), (Tn - 1) * B, G4, H, nt);
        if (h0p) detail::add_weight_grad(p.weight_hh, dG.data(), h0p + l * B * H, B, G4, H, nt);
        detail::add_weight_grad(p.weight_ih, dG.data(), s.x.data(), TB, G4, in, nt);
        detail::add_bias_grads(dG.data(), TB, G4, p.bias_ih, p.bias_hh);
        const bool want_dx = l > 0 || x.requires_grad();
        if (want_dx) {
          dX.resize(std::size_t(TB * in));
          detail::project_back(dX.data(), dG.data(), p.weight_ih.value().data(), TB, G4, in, false, nt);
          if (l > 0) {
            dy = dX;
            if (!s.mask.empty())
              for (std::size_t i = 0; i < dy.size(); ++i) dy[i] *= s.mask[i];
          } else {
            T* gx = detail::zeroed_grad(x);
            if (bf) {
              for (index_t b = 0; b < B; ++b)
                for (index_t t = 0; t < Tn; ++t) {
                  const T* src = dX.data() + (t * B + b) * in;
                  T* dst = gx + (b * Tn + t) * in;
                  for (index_t k = 0; k < in; ++k) dst[k] += src[k];
                }
            } else {
              for (index_t k = 0; k < TB * in; ++k) gx[k] += dX[std::size_t(k)];
            }
          }
        }
      }
      for (auto& s : *saved) s = detail::lstm_layer_saved<T>{};  // free what backward needed
  });

  // the three results as pieces of the packed node
  lstm_result<T, P> r;
  r.output = detail::packed_piece<3>(packed, 0, opts.batch_first ? dims_t<3>{B, Tn, H} : dims_t<3>{Tn, B, H});
  r.h_n = detail::packed_piece<3>(packed, n_out, state_dims);
  r.c_n = detail::packed_piece<3>(packed, n_out + n_state, state_dims);
  return r;
}

}  // namespace detail

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


// ---- cells: one time step ----

/// The nonlinearity of rnn_cell (libtorch's nonlinearity option).
enum class rnn_nonlinearity { tanh, relu };

/// The new state of an LSTM cell.
template <class T, class P>
struct lstm_cell_state {
  Var<T, 2, P> h;  ///< [B, H]
  Var<T, 2, P> c;  ///< [B, H]
};

/// h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (relu with rnn_nonlinearity::relu). x [B, I]; h [B, H] or an empty
/// Var (zeros); w_ih [H, I], w_hh [H, H]; biases [H] or empty (none). Backward: one pass for the activation's
/// derivative and the biases' gradient, then GEMMs for dx, dh, dW_ih, dW_hh.
template <class T, class P>
Var<T, 2, P> rnn_cell(const Var<T, 2, P>& x, const Var<T, 2, P>& h, const Var<T, 2, P>& w_ih, const Var<T, 2, P>& w_hh,
                      const Var<T, 1, P>& b_ih = {}, const Var<T, 1, P>& b_hh = {},
                      rnn_nonlinearity nonlinearity = rnn_nonlinearity::tanh) {
  static_assert(!P::on_device, "tessera: ad::rnn_cell runs on host policies only (cpu, cpu_threads); there is no CUDA path yet");
  using V2 = Var<T, 2, P>;
  const auto s = detail::check_cell("rnn_cell", 1, x, h, static_cast<const V2*>(nullptr), w_ih, w_hh, b_ih, b_hh);
  const index_t B = s[0], I = s[1], H = s[2];
  const int nt = P::num_threads();
  typename V2::tensor y(B, H);
  detail::fill_bias_rows(y.data(), B, H, b_ih, b_hh);
  detail::add_projection(y.data(), x.value().data(), w_ih.value().data(), B, H, I, nt);
  if (h.defined()) detail::add_projection(y.data(), h.value().data(), w_hh.value().data(), B, H, H, nt);
  const activation act = nonlinearity == rnn_nonlinearity::relu ? activation::relu : activation::tanh;
  detail::assign_activated(y, y, act);  // in place, one vectorised pass
  V2 out(std::move(y), false);
  detail::recorded_inputs in;
  in.add(x).add(h).add(w_ih).add(w_hh).add(b_ih).add(b_hh);
  detail::record(out, std::move(in), [x, h, w_ih, w_hh, b_ih, b_hh, B, I, H, act, nt](const T* g, const T* yv) {
    const bool want_b = (b_ih.defined() && b_ih.requires_grad()) || (b_hh.defined() && b_hh.requires_grad());
    detail::uninit_vector<T> dz;
    dz.resize(std::size_t(B * H));
    std::vector<T> db(std::size_t(want_b ? H : 0), T(0));
    detail::activation_backward(g, yv, dz.data(), want_b ? db.data() : nullptr, B, H, 1, act, nt);
    for (const auto* b : {&b_ih, &b_hh})
      if (b->defined() && b->requires_grad()) detail::add_into(detail::zeroed_grad(*b), db.data(), H);
    detail::grad_through(x, dz.data(), w_ih, B, H, I, nt);
    detail::grad_through(h, dz.data(), w_hh, B, H, H, nt);
    detail::add_weight_grad(w_ih, dz.data(), x.value().data(), B, H, I, nt);
    detail::add_recurrent_weight_grad(w_hh, dz.data(), h, B, H, H, nt);
  });
  return out;
}

/// One LSTM step, libtorch's lstm_cell: gates = x W_ih^T + b_ih + h W_hh^T + b_hh (i, f, g, o), c' = f*c + i*g,
/// h' = o*tanh(c'). x [B, I]; h, c [B, H] or empty Vars (zeros); w_ih [4H, I], w_hh [4H, H]; biases [4H] or empty.
/// Forward: the biases, one GEMM for x and one for h into the gates, then the sequence LSTM's fused step pass.
/// Backward: its fused step pass, then GEMMs. Returns {h', c'}.
template <class T, class P>
lstm_cell_state<T, P> lstm_cell(const Var<T, 2, P>& x, const Var<T, 2, P>& h, const Var<T, 2, P>& c, const Var<T, 2, P>& w_ih,
                                const Var<T, 2, P>& w_hh, const Var<T, 1, P>& b_ih = {}, const Var<T, 1, P>& b_hh = {}) {
  static_assert(!P::on_device, "tessera: ad::lstm_cell runs on host policies only (cpu, cpu_threads); there is no CUDA path yet");
  using V1 = Var<T, 1, P>;
  const auto s = detail::check_cell("lstm_cell", 4, x, h, &c, w_ih, w_hh, b_ih, b_hh);
  const index_t B = s[0], I = s[1], H = s[2], G4 = 4 * H;
  const int nt = P::num_threads();
  auto gates = std::make_shared<detail::uninit_vector<T>>();
  gates->resize(std::size_t(B * G4));
  T* G = gates->data();
  detail::fill_bias_rows(G, B, G4, b_ih, b_hh);
  detail::add_projection(G, x.value().data(), w_ih.value().data(), B, G4, I, nt);
  if (h.defined()) detail::add_projection(G, h.value().data(), w_hh.value().data(), B, G4, H, nt);
  typename V1::tensor pv(2 * B * H);  // [h' | c']
  detail::lstm_step_forward<T>(G, c.defined() ? c.value().data() : nullptr, pv.data() + B * H, pv.data(), B, H, nt);
  V1 packed(std::move(pv), false);
  detail::recorded_inputs in;
  in.add(x).add(h).add(c).add(w_ih).add(w_hh).add(b_ih).add(b_hh);
  detail::record(packed, std::move(in), [gates, x, h, c, w_ih, w_hh, b_ih, b_hh, B, I, H, nt](const T* g, const T* v) {
    const index_t G4 = 4 * H;
    std::vector<T> dc(g + B * H, g + 2 * B * H);  // dc', then dc
    detail::uninit_vector<T> dG;
    dG.resize(std::size_t(B * G4));
    detail::lstm_step_backward<T>(gates->data(), v + B * H, c.defined() ? c.value().data() : nullptr, g, dc.data(), dG.data(), B, H, nt);
    if (c.defined() && c.requires_grad()) detail::add_into(detail::zeroed_grad(c), dc.data(), B * H);
    detail::grad_through(x, dG.data(), w_ih, B, G4, I, nt);
    detail::grad_through(h, dG.data(), w_hh, B, G4, H, nt);
    detail::add_weight_grad(w_ih, dG.data(), x.value().data(), B, G4, I, nt);
    detail::add_recurrent_weight_grad(w_hh, dG.data(), h, B, G4, H, nt);
    detail::add_bias_grads(dG.data(), B, G4, b_ih, b_hh);
  });
  return {detail::packed_piece<2>(packed, 0, dims_t<2>{B, H}), detail::packed_piece<2>(packed, B * H, dims_t<2>{B, H})};
}

/// One GRU step, libtorch's gru_cell (gates r, z, n; see the top of this file). x [B, I]; h [B, H] or an empty Var
/// (zeros); w_ih [3H, I], w_hh [3H, H]; biases [3H] or empty. Forward: one GEMM for x (onto b_ih) and one for h
/// (onto b_hh), then one pass for the gates and h'. Backward: one pass, then GEMMs.
template <class T, class P>
Var<T, 2, P> gru_cell(const Var<T, 2, P>& x, const Var<T, 2, P>& h, const Var<T, 2, P>& w_ih, const Var<T, 2, P>& w_hh,
                      const Var<T, 1, P>& b_ih = {}, const Var<T, 1, P>& b_hh = {}) {
  static_assert(!P::on_device, "tessera: ad::gru_cell runs on host policies only (cpu, cpu_threads); there is no CUDA path yet");
  using V1 = Var<T, 1, P>;
  using V2 = Var<T, 2, P>;
  const auto s = detail::check_cell("gru_cell", 3, x, h, static_cast<const V2*>(nullptr), w_ih, w_hh, b_ih, b_hh);
  const index_t B = s[0], I = s[1], H = s[2], G3 = 3 * H;
  const int nt = P::num_threads();
  auto buf = std::make_shared<detail::uninit_vector<T>>();  // gi [B, 3H] | gh [B, 3H]
  buf->resize(std::size_t(2 * B * G3));
  T* gi = buf->data();
  T* gh = gi + B * G3;
  const V1 none;
  detail::fill_bias_rows(gi, B, G3, b_ih, none);
  detail::fill_bias_rows(gh, B, G3, none, b_hh);
  detail::add_projection(gi, x.value().data(), w_ih.value().data(), B, G3, I, nt);
  if (h.defined()) detail::add_projection(gh, h.value().data(), w_hh.value().data(), B, G3, H, nt);
  typename V2::tensor y(B, H);
  detail::gru_step_forward<T>(gi, gh, h.defined() ? h.value().data() : nullptr, y.data(), B, H, nt);
  V2 out(std::move(y), false);
  detail::recorded_inputs in;
  in.add(x).add(h).add(w_ih).add(w_hh).add(b_ih).add(b_hh);
  detail::record(out, std::move(in), [buf, x, h, w_ih, w_hh, b_ih, b_hh, B, I, H, nt](const T* g, const T*) {
    const index_t G3 = 3 * H;
    detail::uninit_vector<T> d;
    d.resize(std::size_t(2 * B * G3));
    T* dgi = d.data();
    T* dgh = dgi + B * G3;
    const T* act = buf->data();
    T* dhp = h.defined() && h.requires_grad() ? detail::zeroed_grad(h) : nullptr;
    detail::gru_step_backward<T>(act, act + B * G3, h.defined() ? h.value().data() : nullptr, g, dgi, dgh, dhp, B, H, nt);
    if (dhp) detail::project_back(dhp, dgh, w_hh.value().data(), B, G3, H, true, nt);
    detail::grad_through(x, dgi, w_ih, B, G3, I, nt);
    detail::add_weight_grad(w_ih, dgi, x.value().data(), B, G3, I, nt);
    detail::add_recurrent_weight_grad(w_hh, dgh, h, B, G3, H, nt);
    detail::add_bias_grads(dgi, B, G3, b_ih);
    detail::add_bias_grads(dgh, B, G3, b_hh);
  });
  return out;
}

}  // namespace ad
}  // namespace tessera

#if defined(__CUDACC__)
#include "tessera/autodiff/cuda_rnn.hpp"  // device_rnn_ops<cuda>: the LSTM on the GPU
#endif
