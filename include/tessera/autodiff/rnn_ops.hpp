// Recurrent operations: the sequence LSTM and select_last_step (autodiff/lstm_ops.hpp, every policy) and single
// steps (cells), libtorch's rnn_cell / lstm_cell / gru_cell, on host policies (a device policy is a compile error
// naming the cell): x [B, I], state [B, H] (an empty Var: zeros), weight_ih [G*H, I], weight_hh [G*H, H], bias_ih,
// bias_hh [G*H] (empty Vars: no bias).
//   rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)   h' = tanh (or relu) (x W_ih^T + b_ih + h W_hh^T + b_hh)
//   lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)             {h', c'}, gates i, f, g, o as lstm
//   gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)                 gates r, z, n: r = s(W_ir x + b_ir + W_hr h + b_hr),
//       z = s(W_iz x + b_iz + W_hz h + b_hz), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h
// Each cell: one GEMM per input for all its gates (the biases as the GEMM's initial value), the gate math in one
// vectorised pass of backend<P> (the LSTM's is the sequence LSTM's step pass); backward one fused pointwise pass,
// then a GEMM per input gradient and per weight gradient.
#pragma once
#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "tessera/autodiff/lstm_ops.hpp"
#include "tessera/autodiff/nn_ops.hpp"

namespace tessera::ad {

namespace detail {

using tessera::detail::lstm_row_forward;  // one row of the LSTM step: also the int8 LSTM's (quant/qlstm.hpp)

/// G[r, :] = b1 + b2 for the rows r < rows of G [rows, GW]; an empty bias counts as zeros.
template <class T, class P>
void fill_bias_rows(T* G, index_t rows, index_t GW, const Var<T, 1, P>& b1, const Var<T, 1, P>& b2) {
  backend<P>::rnn_bias_rows(G, data_or_null(b1), data_or_null(b2), rows, GW);
}

/// G [rows, GW] += src [rows, in] W^T for W [GW, in]: a projection of every gate at once.
template <class T, class P>
void add_projection(T* G, const T* src, const Var<T, 2, P>& W, index_t rows, index_t GW, index_t in) {
  backend<P>::gemm(tessera::detail::gemm_desc<T>{rows, GW, in, {src, in, 1}, {W.value().data(), 1, in}, G, GW, true});
}

/// out [rows, in] (+)= dG [rows, GW] W [GW, in]: the gradient through a projection.
template <class T, class P>
void project_back(T* out, const T* dG, const Var<T, 2, P>& W, index_t rows, index_t GW, index_t in, bool accumulate) {
  backend<P>::gemm(tessera::detail::gemm_desc<T>{rows, in, GW, {dG, GW, 1}, {W.value().data(), in, 1}, out, in, accumulate});
}

/// dW [GW, in] += dG^T src over `rows` rows (dG [rows, GW], src [rows, in]) when W requires a gradient: one GEMM.
template <class T, class P>
void add_weight_grad(const Var<T, 2, P>& W, const T* dG, const T* src, index_t rows, index_t GW, index_t in) {
  if (W.requires_grad())
    backend<P>::gemm(tessera::detail::gemm_desc<T>{GW, in, rows, {dG, 1, GW}, {src, in, 1}, zeroed_grad(W), in, true});
}

/// The column sums of dG [rows, GW] added to the gradient of each of b1, b2 that is defined and requires one.
template <class T, class P>
void add_bias_grads(const T* dG, index_t rows, index_t GW, const Var<T, 1, P>& b1, const Var<T, 1, P>& b2 = {}) {
  backend<P>::rnn_bias_grads(wanted_grad(b1), wanted_grad(b2), dG, rows, GW);
}

/// v's gradient (+)= dG [rows, GW] W [GW, in], when v is defined and requires one.
template <class T, class P>
void grad_through(const Var<T, 2, P>& v, const T* dG, const Var<T, 2, P>& W, index_t rows, index_t GW, index_t in) {
  if (!v.defined() || !v.requires_grad()) return;
  bool acc;
  auto& g = fresh_or_grad(v, acc);  // ops.hpp
  project_back(g.data(), dG, W, rows, GW, in, acc);
}

/// W_hh's gradient from one step: dG^T h, or zeros when the step started from the zero state (as libtorch, whose
/// zero state still goes through the product).
template <class T, class P>
void add_recurrent_weight_grad(const Var<T, 2, P>& w_hh, const T* dG, const Var<T, 2, P>& h, index_t rows, index_t GW, index_t H) {
  if (h.defined()) add_weight_grad(w_hh, dG, h.value().data(), rows, GW, H);
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

}  // namespace detail

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
  typename V2::tensor y(B, H);
  detail::fill_bias_rows(y.data(), B, H, b_ih, b_hh);
  detail::add_projection(y.data(), x.value().data(), w_ih, B, H, I);
  if (h.defined()) detail::add_projection(y.data(), h.value().data(), w_hh, B, H, H);
  const activation act = nonlinearity == rnn_nonlinearity::relu ? activation::relu : activation::tanh;
  detail::assign_activated(y, y, act);  // in place, one vectorised pass
  V2 out(std::move(y), false);
  detail::recorded_inputs in;
  in.add(x).add(h).add(w_ih).add(w_hh).add(b_ih).add(b_hh);
  detail::record(out, std::move(in), [x, h, w_ih, w_hh, b_ih, b_hh, B, I, H, act](const T* g, const T* yv) {
    const bool want_b = (b_ih.defined() && b_ih.requires_grad()) || (b_hh.defined() && b_hh.requires_grad());
    detail::rnn_buffer<T, P> dz(B * H);
    std::vector<T> db(std::size_t(want_b ? H : 0), T(0));
    detail::activation_backward(g, yv, dz.data(), want_b ? db.data() : nullptr, B, H, 1, act, P::num_threads());
    for (const auto* b : {&b_ih, &b_hh})
      if (b->defined() && b->requires_grad()) backend<P>::rnn_add(detail::zeroed_grad(*b), db.data(), H);
    detail::grad_through(x, dz.data(), w_ih, B, H, I);
    detail::grad_through(h, dz.data(), w_hh, B, H, H);
    detail::add_weight_grad(w_ih, dz.data(), x.value().data(), B, H, I);
    detail::add_recurrent_weight_grad(w_hh, dz.data(), h, B, H, H);
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
  auto gates = std::make_shared<detail::rnn_buffer<T, P>>(B * G4);
  T* G = gates->data();
  detail::fill_bias_rows(G, B, G4, b_ih, b_hh);
  detail::add_projection(G, x.value().data(), w_ih, B, G4, I);
  if (h.defined()) detail::add_projection(G, h.value().data(), w_hh, B, G4, H);
  typename V1::tensor pv(2 * B * H);  // [h' | c']
  backend<P>::lstm_step_forward(G, detail::data_or_null(c), pv.data() + B * H, pv.data(), B, H);
  V1 packed(std::move(pv), false);
  detail::recorded_inputs in;
  in.add(x).add(h).add(c).add(w_ih).add(w_hh).add(b_ih).add(b_hh);
  detail::record(packed, std::move(in), [gates, x, h, c, w_ih, w_hh, b_ih, b_hh, B, I, H](const T* g, const T* v) {
    const index_t G4 = 4 * H;
    std::vector<T> dc(g + B * H, g + 2 * B * H);  // dc', then dc
    detail::rnn_buffer<T, P> dG(B * G4);
    backend<P>::lstm_step_backward(gates->data(), v + B * H, detail::data_or_null(c), g, static_cast<const T*>(nullptr), dc.data(),
                                   dG.data(), B, H);
    if (T* gc = detail::wanted_grad(c)) backend<P>::rnn_add(gc, dc.data(), B * H);
    detail::grad_through(x, dG.data(), w_ih, B, G4, I);
    detail::grad_through(h, dG.data(), w_hh, B, G4, H);
    detail::add_weight_grad(w_ih, dG.data(), x.value().data(), B, G4, I);
    detail::add_recurrent_weight_grad(w_hh, dG.data(), h, B, G4, H);
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
  auto buf = std::make_shared<detail::rnn_buffer<T, P>>(2 * B * G3);  // gi [B, 3H] | gh [B, 3H]
  T* gi = buf->data();
  T* gh = gi + B * G3;
  const V1 none;
  detail::fill_bias_rows(gi, B, G3, b_ih, none);
  detail::fill_bias_rows(gh, B, G3, none, b_hh);
  detail::add_projection(gi, x.value().data(), w_ih, B, G3, I);
  if (h.defined()) detail::add_projection(gh, h.value().data(), w_hh, B, G3, H);
  typename V2::tensor y(B, H);
  backend<P>::gru_step_forward(gi, static_cast<const T*>(gh), detail::data_or_null(h), y.data(), B, H);
  V2 out(std::move(y), false);
  detail::recorded_inputs in;
  in.add(x).add(h).add(w_ih).add(w_hh).add(b_ih).add(b_hh);
  detail::record(out, std::move(in), [buf, x, h, w_ih, w_hh, b_ih, b_hh, B, I, H](const T* g, const T*) {
    const index_t G3 = 3 * H;
    detail::rnn_buffer<T, P> d(2 * B * G3);
    T* dgi = d.data();
    T* dgh = dgi + B * G3;
    const T* act = buf->data();
    T* dhp = h.defined() && h.requires_grad() ? detail::zeroed_grad(h) : nullptr;
    backend<P>::gru_step_backward(act, act + B * G3, detail::data_or_null(h), g, dgi, dgh, dhp, B, H);
    if (dhp) detail::project_back(dhp, dgh, w_hh, B, G3, H, true);
    detail::grad_through(x, dgi, w_ih, B, G3, I);
    detail::add_weight_grad(w_ih, dgi, x.value().data(), B, G3, I);
    detail::add_recurrent_weight_grad(w_hh, dgh, h, B, G3, H);
    detail::add_bias_grads(dgi, B, G3, b_ih);
    detail::add_bias_grads(dgh, B, G3, b_hh);
  });
  return out;
}

}  // namespace tessera::ad
