// Sequence recurrences with PyTorch's semantics, written once for every policy above backend<P> (kernels:
// kernels/cpu/rnn.hpp on the host policies, kernels/cuda/rnn.hpp on the cuda policy, compiled by nvcc):
//   recurrence(x, layers, kind, opts, h0, c0, rng, training)   a multi-layer, optionally bidirectional GRU, RNN (tanh
//       or relu) or LSTM from the initial states h0 (and c0 for the LSTM) [L*D, B, H] (empty Vars: zeros; PyTorch's
//       forward(input, h0)), gradients flowing into them; recurrence(x, layers, kind, opts, rng, training) from zeros. x [B, T, I] (batch_first) or [T, B, I]; returns the output sequence in the same
//       layout with D*H features (D = 2 when bidirectional: the forward direction's H, then the reverse one's, as
//       PyTorch) and the final states h_n (and c_n for the LSTM) [L*D, B, H]. layers[l*D + d] holds layer l's
//       parameters of direction d in PyTorch's layout: weight_ih [G*H, in], weight_hh [G*H, H], bias_ih, bias_hh [G*H]
//       (empty Vars: no bias); G = 3 (r, z, n), 1, 4 (i, f, g, o); in = I for layer 0, D*H above. The reverse
//       direction runs t = T-1 .. 0 and writes its output at step t. Dropout (inverted) between layers in training.
//   Per layer and direction: the input projection of all steps is one GEMM onto the biases; each step is one
//   recurrent GEMM and one fused gate pass. Backward through time: per step one fused pass and one GEMM; the weight
//   gradients afterwards as one GEMM over all steps each, the biases' as column sums. The whole stack is one node.
// The unidirectional LSTM with initial states is ad::lstm (autodiff/lstm_ops.hpp).
#pragma once
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/autodiff/lstm_ops.hpp"
#include "tessera/autodiff/rnn_ops.hpp"

namespace tessera {

/// Hyper-parameters of nn::GRU, as PyTorch's nn.GRU (in its order).
struct gru_options {
  int num_layers = 1;
  bool bias = true;
  bool batch_first = false;
  double dropout = 0.0;  ///< between layers (not after the last), in training only
  bool bidirectional = false;
};

/// Hyper-parameters of nn::RNN, as PyTorch's nn.RNN (in its order).
struct rnn_options {
  int num_layers = 1;
  ad::rnn_nonlinearity nonlinearity = ad::rnn_nonlinearity::tanh;
  bool bias = true;
  bool batch_first = false;
  double dropout = 0.0;  ///< between layers (not after the last), in training only
  bool bidirectional = false;
};

namespace ad {

/// Which recurrence ad::recurrence runs.
enum class recurrence_kind { gru, rnn_tanh, rnn_relu, lstm };

/// The options ad::recurrence reads (each layer's options convert to it).
struct recurrence_options {
  int num_layers = 1;
  bool batch_first = false;
  double dropout = 0.0;
  bool bidirectional = false;
};

/// One layer-direction's parameters (the LSTM's struct; G*H rows).
template <class T, class P>
using recurrence_params = lstm_layer_params<T, P>;

template <class T, class P>
struct recurrence_result {
  Var<T, 3, P> output;  ///< [B, T, D*H] (batch_first) or [T, B, D*H]
  Var<T, 3, P> h_n;     ///< [L*D, B, H]
  Var<T, 3, P> c_n;     ///< [L*D, B, H], the LSTM only (else empty)
};

/// Gates per hidden unit of a recurrence.
constexpr index_t recurrence_gates(recurrence_kind k) {
  return k == recurrence_kind::gru ? 3 : k == recurrence_kind::lstm ? 4 : 1;
}

namespace detail {

/// What backward needs of one direction of one layer (time-major: row t*B + b).
template <class T, class P>
struct recurrence_dir_saved {
  rnn_buffer<T, P> gate;  ///< GRU: the activations r, z, n; LSTM: i, f, g, o; RNN: unused
  rnn_buffer<T, P> gh;    ///< GRU: h W_hh^T + b_hh per step
  rnn_buffer<T, P> c;     ///< LSTM: cell states
  rnn_buffer<T, P> y;     ///< hidden states [T*B, H]
};

template <class T, class P>
struct recurrence_layer_saved {
  rnn_buffer<T, P> x;     ///< the layer's input [T*B, in] (after dropout)
  rnn_buffer<T, P> mask;  ///< dropout mask applied to the previous layer's output (empty: none)
  recurrence_dir_saved<T, P> dir[2];
  index_t in = 0;
};

/// The extents and settings of a recurrence call.
struct recurrence_geometry {
  index_t L = 0, D = 1, B = 0, T = 0, I = 0, H = 0;
  recurrence_kind kind = recurrence_kind::gru;
  bool batch_first = false;
};

/// Step s of direction d runs time step t; its previous state is at t_prev (-1: the zero state).
inline index_t recurrence_step(index_t d, index_t s, index_t Tn) { return d == 0 ? s : Tn - 1 - s; }
inline index_t recurrence_prev(index_t d, index_t s, index_t Tn) { return s == 0 ? -1 : (d == 0 ? s - 1 : Tn - s); }

/// One direction of one layer, forward: fills sv from the layer input x [T*B, in].
/// h0, c0 [B, H]: this layer-direction's initial states (null: zeros).
template <class T, class P>
void recurrence_direction_forward(recurrence_dir_saved<T, P>& sv, const T* x, index_t in, const recurrence_params<T, P>& p,
                                  index_t d, const recurrence_geometry& geo, const T* h0, const T* c0) {
  using be = backend<P>;
  using tessera::detail::gemm_desc;
  const index_t B = geo.B, Tn = geo.T, H = geo.H, TB = Tn * B, BH = B * H, GW = recurrence_gates(geo.kind) * H;
  const T* bih = data_or_null(p.bias_ih);
  const T* bhh = data_or_null(p.bias_hh);
  const T* whh = p.weight_hh.value().data();
  sv.gate.resize(TB * GW);
  sv.y.resize(TB * H);
  T* G = sv.gate.data();
  T* Y = sv.y.data();
  const bool gru = geo.kind == recurrence_kind::gru;
  // G = x W_ih^T + biases for all steps (the GRU keeps b_hh apart: r multiplies W_hn h + b_hn)
  be::rnn_bias_rows(G, bih, gru ? static_cast<const T*>(nullptr) : bhh, TB, GW);
  be::gemm(gemm_desc<T>{TB, GW, in, {x, in, 1}, {p.weight_ih.value().data(), 1, in}, G, GW, true});
  if (geo.kind == recurrence_kind::lstm) {
    sv.c.resize(TB * H);
    const auto w = be::lstm_prepare_weight_hh(whh, H, false);
    for (index_t s = 0; s < Tn; ++s) {
      const index_t t = recurrence_step(d, s, Tn), tp = recurrence_prev(d, s, Tn);
      T* Gt = G + t * B * GW;
      const T* hp = tp >= 0 ? Y + tp * BH : h0;
      if (hp) be::lstm_recurrent_forward(Gt, hp, w, B);
      be::lstm_step_forward(Gt, tp >= 0 ? sv.c.data() + tp * BH : c0, sv.c.data() + t * BH, Y + t * BH, B, H);
    }
  } else if (gru) {
    sv.gh.resize(TB * GW);
    T* Q = sv.gh.data();
    const auto w = be::rnn_prepare_weight_hh(whh, GW, H, false);
    be::rnn_bias_rows(Q, static_cast<const T*>(nullptr), bhh, TB, GW);
    for (index_t s = 0; s < Tn; ++s) {
      const index_t t = recurrence_step(d, s, Tn), tp = recurrence_prev(d, s, Tn);
      T* Qt = Q + t * B * GW;
      const T* hp = tp >= 0 ? Y + tp * BH : h0;
      if (hp) be::rnn_recurrent_forward(Qt, hp, w, B);
      be::gru_step_forward(G + t * B * GW, static_cast<const T*>(Qt), hp, Y + t * BH, B, H);
    }
  } else {
    const bool relu = geo.kind == recurrence_kind::rnn_relu;
    const auto w = be::rnn_prepare_weight_hh(whh, GW, H, false);
    for (index_t s = 0; s < Tn; ++s) {
      const index_t t = recurrence_step(d, s, Tn), tp = recurrence_prev(d, s, Tn);
      T* Gt = G + t * BH;
      const T* hp = tp >= 0 ? Y + tp * BH : h0;
      if (hp) be::rnn_recurrent_forward(Gt, hp, w, B);
      be::rnn_step_forward(static_cast<const T*>(Gt), Y + t * BH, BH, relu);
    }
  }
}

/// One direction of one layer, backward through time. dy [T*B, H]: the gradient at its outputs (time-major, read);
/// dh, dc [B, H]: the gradients at its final states (consumed; with an initial state h0 [B, H] (null: zeros), they
/// end as the gradients at h0 and c0). Adds the parameters' gradients; dX [T*B, in] (+)= the gradient at the layer
/// input (accumulate: add to it).
template <class T, class P>
void recurrence_direction_backward(recurrence_dir_saved<T, P>& sv, const T* x, index_t in, const recurrence_params<T, P>& p,
                                   index_t d, const recurrence_geometry& geo, const T* h0, const T* c0, const T* dy, T* dh,
                                   T* dc, T* dX, bool accumulate) {
  using be = backend<P>;
  using tessera::detail::gemm_desc;
  const index_t B = geo.B, Tn = geo.T, H = geo.H, TB = Tn * B, BH = B * H, GW = recurrence_gates(geo.kind) * H;
  const T* whh = p.weight_hh.value().data();
  const T* Y = sv.y.data();
  const bool gru = geo.kind == recurrence_kind::gru;
  rnn_buffer<T, P> dG(TB * GW), dQ(gru ? TB * GW : 0);  // dQ: the GRU's recurrent-side gate gradients
  if (geo.kind == recurrence_kind::lstm) {
    const auto w = be::lstm_prepare_weight_hh(whh, H, true);
    for (index_t s = Tn - 1; s >= 0; --s) {
      const index_t t = recurrence_step(d, s, Tn), tp = recurrence_prev(d, s, Tn);
      T* dGt = dG.data() + t * B * GW;
      be::lstm_step_backward(sv.gate.data() + t * B * GW, sv.c.data() + t * BH, tp >= 0 ? sv.c.data() + tp * BH : c0, dh,
                             dy + t * BH, dc, dGt, B, H);
      if (tp >= 0 || h0) be::lstm_recurrent_backward(dh, dGt, w, B);  // dh_{prev} = dgates W_hh
    }
  } else if (gru) {
    const auto w = be::rnn_prepare_weight_hh(whh, GW, H, true);
    for (index_t s = Tn - 1; s >= 0; --s) {
      const index_t t = recurrence_step(d, s, Tn), tp = recurrence_prev(d, s, Tn);
      T* dQt = dQ.data() + t * B * GW;
      be::gru_seq_step_backward(sv.gate.data() + t * B * GW, sv.gh.data() + t * B * GW, tp >= 0 ? Y + tp * BH : h0, dh,
                                dy + t * BH, dG.data() + t * B * GW, dQt, B, H);
      if (tp >= 0 || h0) be::rnn_recurrent_backward(dh, dQt, w, B, true);  // dh += dgh W_hh
    }
  } else {
    const bool relu = geo.kind == recurrence_kind::rnn_relu;
    const auto w = be::rnn_prepare_weight_hh(whh, GW, H, true);
    for (index_t s = Tn - 1; s >= 0; --s) {
      const index_t t = recurrence_step(d, s, Tn), tp = recurrence_prev(d, s, Tn);
      T* dGt = dG.data() + t * BH;
      be::rnn_step_backward(Y + t * BH, dy + t * BH, static_cast<const T*>(dh), dGt, BH, relu);
      if (tp >= 0 || h0) be::rnn_recurrent_backward(dh, dGt, w, B, false);  // dh_{prev} = dz W_hh
    }
  }
  const T* dR = gru ? dQ.data() : dG.data();  // the recurrent side's gate gradients
  if (T* gw = wanted_grad(p.weight_hh); gw && (Tn > 1 || h0)) {  // untouched when no product reaches it
    // every step but the first of its direction against its previous state, in one GEMM: forward, steps 1.. against
    // y[0..T-2]; reverse, steps 0..T-2 against y[1..]
    const T* dsrc = d == 0 ? dR + B * GW : dR;
    const T* ysrc = d == 0 ? Y : Y + BH;
    if (Tn > 1) be::gemm(gemm_desc<T>{GW, H, (Tn - 1) * B, {dsrc, 1, GW}, {ysrc, H, 1}, gw, H, true});
    // the first step (forward: t = 0; reverse: t = T-1) against h0
    if (h0) be::gemm(gemm_desc<T>{GW, H, B, {dR + recurrence_step(d, 0, Tn) * B * GW, 1, GW}, {h0, H, 1}, gw, H, true});
  }
  if (T* gw = wanted_grad(p.weight_ih))  // dW_ih = dgates^T x
    be::gemm(gemm_desc<T>{GW, in, TB, {dG.data(), 1, GW}, {x, in, 1}, gw, in, true});
  if (gru) {
    be::rnn_bias_grads(wanted_grad(p.bias_ih), static_cast<T*>(nullptr), dG.data(), TB, GW);
    be::rnn_bias_grads(wanted_grad(p.bias_hh), static_cast<T*>(nullptr), dQ.data(), TB, GW);
  } else {
    be::rnn_bias_grads(wanted_grad(p.bias_ih), wanted_grad(p.bias_hh), dG.data(), TB, GW);
  }
  if (dX) be::gemm(gemm_desc<T>{TB, in, GW, {dG.data(), GW, 1}, {p.weight_ih.value().data(), in, 1}, dX, in, accumulate});
}

/// The backward of recurrence: g is the gradient of the packed result [output | h_n | c_n].
template <class T, class P>
void recurrence_backward(std::vector<recurrence_layer_saved<T, P>>& saved, const T* g, const Var<T, 3, P>& x,
                         const Var<T, 3, P>& h0, const Var<T, 3, P>& c0, const std::vector<recurrence_params<T, P>>& layers,
                         const recurrence_geometry& geo) {
  using be = backend<P>;
  const index_t L = geo.L, D = geo.D, B = geo.B, Tn = geo.T, H = geo.H, TB = Tn * B, BH = B * H, DH = D * H;
  const index_t n_out = TB * DH, n_state = L * D * BH;
  const bool lstm = geo.kind == recurrence_kind::lstm;
  rnn_buffer<T, P> dy(n_out), dyd(TB * H), dh(BH), dc(lstm ? BH : 0), dX;  // dy: the gradient at a layer's output
  if (geo.batch_first) be::rnn_swap01(g, dy.data(), B, Tn, DH, false);
  else be::copy(dy.data(), g, n_out);
  const T* h0p = data_or_null(h0);
  const T* c0p = data_or_null(c0);
  for (index_t l = L - 1; l >= 0; --l) {
    auto& s = saved[std::size_t(l)];
    const bool want_dx = l > 0 || x.requires_grad();
    dX.resize(want_dx ? TB * s.in : 0);
    for (index_t d = 0; d < D; ++d) {
      const index_t k = l * D + d;
      const T* dyp = dy.data();
      if (D > 1) {  // this direction's half of the output gradient, contiguous
        be::rnn_copy_cols(dyd.data(), H, dy.data() + d * H, DH, TB, H);
        dyp = dyd.data();
      }
      be::copy(dh.data(), g + n_out + k * BH, BH);
      if (lstm) be::copy(dc.data(), g + n_out + n_state + k * BH, BH);
      recurrence_direction_backward(s.dir[d], s.x.data(), s.in, layers[std::size_t(k)], d, geo, h0p ? h0p + k * BH : nullptr,
                                    c0p ? c0p + k * BH : nullptr, dyp, dh.data(), dc.data(), want_dx ? dX.data() : nullptr, d > 0);
      if (T* gh = h0p ? wanted_grad(h0) : nullptr) be::rnn_add(gh + k * BH, dh.data(), BH);
      if (T* gc = lstm && c0p ? wanted_grad(c0) : nullptr) be::rnn_add(gc + k * BH, dc.data(), BH);
    }
    if (!want_dx) continue;
    if (l > 0) {
      if (!s.mask.empty()) be::rnn_mul(dy.data(), dX.data(), s.mask.data(), TB * DH);
      else be::copy(dy.data(), dX.data(), TB * DH);
    } else {
      T* gx = zeroed_grad(x);
      if (geo.batch_first) be::rnn_swap01(dX.data(), gx, Tn, B, s.in, true);
      else be::rnn_add(gx, dX.data(), TB * s.in);
    }
  }
}

/// ad::recurrence after its checks (named so: anomaly messages name the operation after this function).
template <class T, class P>
recurrence_result<T, P> recurrence(const Var<T, 3, P>& x, const std::vector<recurrence_params<T, P>>& layers,
                                   const Var<T, 3, P>& h0, const Var<T, 3, P>& c0, double dropout, Rng* rng, bool drop,
                                   const recurrence_geometry& geo) {
  using be = backend<P>;
  using V1 = Var<T, 1, P>;
  const index_t L = geo.L, D = geo.D, B = geo.B, Tn = geo.T, I0 = geo.I, H = geo.H, TB = Tn * B, BH = B * H, DH = D * H;
  auto saved = std::make_shared<std::vector<recurrence_layer_saved<T, P>>>(std::size_t(L));
  auto& first = (*saved)[0];  // layer 0's input, time-major
  first.in = I0;
  first.x.resize(TB * I0);
  if (geo.batch_first) be::rnn_swap01(x.value().data(), first.x.data(), B, Tn, I0, false);
  else be::copy(first.x.data(), x.value().data(), TB * I0);
  const T* h0p = data_or_null(h0);
  const T* c0p = data_or_null(c0);

  rnn_buffer<T, P> out(TB * DH);  // a layer's output, both directions side by side
  for (index_t l = 0; l < L; ++l) {
    auto& s = (*saved)[std::size_t(l)];
    for (index_t d = 0; d < D; ++d) {
      const index_t k = l * D + d;
      recurrence_direction_forward(s.dir[d], s.x.data(), s.in, layers[std::size_t(k)], d, geo, h0p ? h0p + k * BH : nullptr,
                                   c0p ? c0p + k * BH : nullptr);
      be::rnn_copy_cols(out.data() + d * H, DH, s.dir[d].y.data(), H, TB, H);
    }
    if (l + 1 < L) {
      auto& nx = (*saved)[std::size_t(l + 1)];
      nx.in = DH;
      nx.x.resize(TB * DH);
      if (drop) {  // the mask drawn as ad::dropout draws it (the same masks for a seed on every policy)
        nx.mask.resize(TB * DH);
        be::dropout_mask(nx.mask.data(), TB * DH, dropout, *rng);
        be::rnn_mul(nx.x.data(), out.data(), nx.mask.data(), TB * DH);
      } else {
        be::copy(nx.x.data(), out.data(), TB * DH);
      }
    }
  }

  // packed value: output (caller's layout), h_n, c_n (LSTM)
  const bool lstm = geo.kind == recurrence_kind::lstm;
  const index_t n_out = TB * DH, n_state = L * D * BH;
  typename V1::tensor packed_v(n_out + (lstm ? 2 : 1) * n_state);
  T* pk = packed_v.data();
  if (geo.batch_first) be::rnn_swap01(out.data(), pk, Tn, B, DH, false);
  else be::copy(pk, out.data(), n_out);
  for (index_t l = 0; l < L; ++l)
    for (index_t d = 0; d < D; ++d) {
      const auto& sv = (*saved)[std::size_t(l)].dir[d];
      const index_t last = d == 0 ? Tn - 1 : 0, k = l * D + d;  // the reverse direction ends at step 0
      be::copy(pk + n_out + k * BH, sv.y.data() + last * BH, BH);
      if (lstm) be::copy(pk + n_out + n_state + k * BH, sv.c.data() + last * BH, BH);
    }

  V1 packed(std::move(packed_v), false);
  recorded_inputs inputs;
  inputs.add(x).add(h0).add(c0);
  for (const auto& p : layers) inputs.add(p.weight_ih).add(p.weight_hh).add(p.bias_ih).add(p.bias_hh);
  record(packed, std::move(inputs), [saved, x, h0, c0, layers, geo](const T* g, const T*) {
    recurrence_backward(*saved, g, x, h0, c0, layers, geo);
    for (auto& s : *saved) s = recurrence_layer_saved<T, P>{};  // free what backward needed
  });

  const dims_t<3> state_dims{L * D, B, H};
  recurrence_result<T, P> r;
  r.output = packed_piece<3>(packed, 0, geo.batch_first ? dims_t<3>{B, Tn, DH} : dims_t<3>{Tn, B, DH});
  r.h_n = packed_piece<3>(packed, n_out, state_dims);
  if (lstm) r.c_n = packed_piece<3>(packed, n_out + n_state, state_dims);
  return r;
}

}  // namespace detail

/// A multi-layer, optionally bidirectional recurrence from the initial states h0 and (LSTM) c0 [L*D, B, H], empty Vars
/// meaning zeros (see the top of this file). Dropout between layers needs `rng` when opts.dropout > 0 and training.
template <class T, class P>
recurrence_result<T, P> recurrence(const Var<T, 3, P>& x, const std::vector<recurrence_params<T, P>>& layers,
                                   recurrence_kind kind, const recurrence_options& opts, const Var<T, 3, P>& h0,
                                   const Var<T, 3, P>& c0 = {}, Rng* rng = nullptr, bool training = false) {
  static_assert(requires { backend<P>::on_device; },
                "tessera: ad::recurrence on the cuda policy runs kernels: compile this file with nvcc (a .cu file)");
  using tessera::detail::format_dims;
  const index_t L = opts.num_layers, D = opts.bidirectional ? 2 : 1;
  if (L < 1 || index_t(layers.size()) != L * D)
    throw std::invalid_argument("tessera: recurrence: " + std::to_string(layers.size()) +
                                " layer-directions of parameters given, options say " + std::to_string(L) + " layers x " +
                                std::to_string(D) + " directions");
  const auto xd = x.dims();
  const index_t B = opts.batch_first ? xd[0] : xd[1];
  const index_t Tn = opts.batch_first ? xd[1] : xd[0];
  const index_t I0 = xd[2];
  const index_t H = layers[0].weight_hh.dims()[1];
  const index_t GW = recurrence_gates(kind) * H;
  if (Tn < 1 || B < 1 || I0 < 1)
    throw shape_error("tessera: recurrence: the input " + format_dims(xd) + " has an empty sequence, batch or feature axis");
  for (index_t k = 0; k < L * D; ++k) {
    const auto& p = layers[std::size_t(k)];
    const index_t in = k < D ? I0 : D * H;
    const bool bias_ok = (!p.bias_ih.defined() || p.bias_ih.dims()[0] == GW) && (!p.bias_hh.defined() || p.bias_hh.dims()[0] == GW);
    if (p.weight_ih.dims() != dims_t<2>{GW, in} || p.weight_hh.dims() != dims_t<2>{GW, H} || !bias_ok)
      throw shape_error("tessera: recurrence: the parameters of layer " + std::to_string(k / D) + (k % D ? " (reverse)" : "") +
                        " (weight_ih " + format_dims(p.weight_ih.dims()) + ", weight_hh " + format_dims(p.weight_hh.dims()) +
                        ") do not fit input " + format_dims(xd) + " (expected weight_ih " + format_dims(dims_t<2>{GW, in}) +
                        ", weight_hh " + format_dims(dims_t<2>{GW, H}) + ")");
  }
  const dims_t<3> state_dims{L * D, B, H};
  if (h0.defined() && h0.dims() != state_dims)
    throw shape_error("tessera: recurrence: the initial state h0 " + format_dims(h0.dims()) + " does not fit input " +
                      format_dims(xd) + " (expected [num_layers * directions, batch, hidden] = " + format_dims(state_dims) + ")");
  if (c0.defined() && kind != recurrence_kind::lstm)
    throw std::invalid_argument("tessera: recurrence: an initial cell state c0 is given, but only the LSTM has one");
  if (c0.defined() && c0.dims() != state_dims)
    throw shape_error("tessera: recurrence: the initial cell state c0 " + format_dims(c0.dims()) + " does not fit input " +
                      format_dims(xd) + " (expected [num_layers * directions, batch, hidden] = " + format_dims(state_dims) + ")");
  const bool drop = training && opts.dropout > 0.0 && L > 1;
  if (opts.dropout < 0.0 || opts.dropout >= 1.0) throw std::invalid_argument("tessera: recurrence: dropout must be in [0, 1)");
  if (drop && !rng) throw std::logic_error("tessera: recurrence: dropout in training needs a random number generator");
  return detail::recurrence(x, layers, h0, c0, opts.dropout, rng, drop,
                            detail::recurrence_geometry{L, D, B, Tn, I0, H, kind, opts.batch_first});
}

/// The same from the zero state.
template <class T, class P>
recurrence_result<T, P> recurrence(const Var<T, 3, P>& x, const std::vector<recurrence_params<T, P>>& layers,
                                   recurrence_kind kind, const recurrence_options& opts, Rng* rng = nullptr,
                                   bool training = false) {
  return recurrence(x, layers, kind, opts, Var<T, 3, P>{}, Var<T, 3, P>{}, rng, training);
}

}  // namespace ad
}  // namespace tessera
