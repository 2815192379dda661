// The multi-layer LSTM of autodiff/rnn_ops.hpp on the cuda policy (nvcc only: rnn_ops.hpp includes this file at its
// end under __CUDACC__, and ad::lstm dispatches here through device_rnn_ops<cuda>). The same algorithm as the host's,
// with cuBLASLt products (cuda_gemm, plans cached) and one fused pointwise kernel per step, all on tessera's stream:
//
//   forward, per layer   gates = x W_ih^T + (b_ih + b_hh) for all steps: one GEMM with the bias as its epilogue;
//                        per step: gates_t += h_{t-1} W_hh^T (one GEMM accumulating into the step's gates) and one
//                        kernel for the nonlinearities and the c / h update (activations kept for the backward).
//   backward, per layer  per step (last to first): one kernel takes dh (+ the output's gradient at t) and dc to the
//                        gates' pre-activation gradients and dc_{t-1}; one GEMM dh_{t-1} = dgates_t W_hh. Then the
//                        weight gradients as three large GEMMs over all steps (accumulating into the gradients:
//                        cuBLASLt's beta = 1), the biases' as one column reduction of dgates, dx as one GEMM.
//   dropout              between layers in training, the mask drawn on the host from the same Rng in the same order as
//                        on the host policies (a seed gives the same masks on the CPU and the GPU), then copied over.
//
// Layout changes (batch-first to time-major and back) and the packed result's pieces are strided-view assignments,
// which run as the cuda policy's elementwise kernels.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "tessera/autodiff/cuda_ops.hpp"
#include "tessera/autodiff/rnn_ops.hpp"

namespace tessera::ad {

namespace cuda_rnn {

using cuda_ad::dev;
using cuda_ad::dtensor;
using cuda_ad::stream;

namespace kernels {

template <class T>
__device__ __forceinline__ T sigmoid(T v) {
  return T(1) / (T(1) + cuda_ad::kernels::dexp(-v));
}
template <class T>
__device__ __forceinline__ T tanh_(T v) {
  if constexpr (std::is_same_v<T, float>) return ::tanhf(v);
  else return ::tanh(v);
}

/// One step's pointwise forward for B rows: gates [B, 4H] (pre-activations in, activations i, f, g, o out),
/// c = f * cprev + i * g (cprev null: the zero state), h = o * tanh(c).
template <class T>
__global__ void step_forward(T* gates, const T* cprev, T* c, T* h, index_t B, index_t H) {
  const index_t n = B * H;
  for (index_t k = index_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += index_t(gridDim.x) * blockDim.x) {
    const index_t b = k / H, j = k - b * H;
    T* g = gates + b * 4 * H;
    const T i = sigmoid(g[j]), f = sigmoid(g[H + j]), gg = tanh_(g[2 * H + j]), o = sigmoid(g[3 * H + j]);
    g[j] = i, g[H + j] = f, g[2 * H + j] = gg, g[3 * H + j] = o;
    const T cn = cprev ? f * cprev[k] + i * gg : i * gg;
    c[k] = cn;
    h[k] = o * tanh_(cn);
  }
}

/// One step's pointwise backward: dh_t = dh + dy (dy: the output's gradient at this step, may be null), dc (the
/// gradient at c_t, replaced by the one at c_{t-1}); writes the gates' pre-activation gradients dgates [B, 4H].
template <class T>
__global__ void step_backward(const T* gates, const T* c, const T* cprev, const T* dh, const T* dy, T* dc, T* dgates, index_t B,
                              index_t H) {
  const index_t n = B * H;
  for (index_t k = index_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += index_t(gridDim.x) * blockDim.x) {
    const index_t b = k / H, j = k - b * H;
    const T* g = gates + b * 4 * H;
    T* dg = dgates + b * 4 * H;
    const T i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
    const T tc = tanh_(c[k]), d = dh[k] + (dy ? dy[k] : T(0));
    const T dct = dc[k] + d * o * (T(1) - tc * tc);
    const T cp = cprev ? cprev[k] : T(0);
    dg[j] = dct * gg * i * (T(1) - i);
    dg[H + j] = dct * cp * f * (T(1) - f);
    dg[2 * H + j] = dct * i * (T(1) - gg * gg);
    dg[3 * H + j] = d * tc * o * (T(1) - o);
    dc[k] = dct * f;
  }
}

/// out[j] = a[j] + b[j] (either may be null: zeros).
template <class T>
__global__ void add2(const T* a, const T* b, T* out, index_t n) {
  for (index_t k = index_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += index_t(gridDim.x) * blockDim.x)
    out[k] = (a ? a[k] : T(0)) + (b ? b[k] : T(0));
}

}  // namespace kernels

inline unsigned grid(index_t n) { return tessera::cuda_kernels::grid_for(n, 256); }

/// A contiguous view of n-dimensional extents d at p on the device.
template <class T, int R>
View<T, dyn_shape_t<R>, dev> view(T* p, const dims_t<R>& d) {
  return View<T, dyn_shape_t<R>, dev>(p, d, tessera::contiguous_strides(d));
}

/// [D0, D1, K] at src (contiguous) written to, or added to, dst as [D1, D0, K]: one strided assignment.
template <class T>
void swap01(const T* src, T* dst, index_t D0, index_t D1, index_t K, bool add) {
  const View<const T, dyn_shape_t<3>, dev> s(src, {D1, D0, K}, {K, D1 * K, 1});
  auto d = view<T, 3>(dst, {D1, D0, K});
  if (add) d = d + s;
  else d = s;
}

/// What the backward needs of one layer, on the device (time-major: row t*B + b).
template <class T>
struct layer_saved {
  dtensor<T, 2> x;     ///< the layer's input [T*B, I] (after dropout)
  dtensor<T, 2> gate;  ///< gate activations [T*B, 4H]
  dtensor<T, 2> c;     ///< cell states [T*B, H]
  dtensor<T, 2> y;     ///< hidden states [T*B, H]
  dtensor<T, 2> mask;  ///< the dropout mask applied to the previous layer's output (empty: none)
};

template <class T>
lstm_result<T, dev> lstm(const Var<T, 3, dev>& x, const std::vector<lstm_layer_params<T, dev>>& layers, const lstm_options& opts,
                         const Var<T, 3, dev>& h0, const Var<T, 3, dev>& c0, Rng* rng, bool drop, const detail::lstm_geometry& geo) {
  using V1 = Var<T, 1, dev>;
  const index_t L = geo.L, B = geo.B, Tn = geo.T, I0 = geo.I, H = geo.H, G4 = 4 * H, TB = Tn * B;
  const cudaStream_t st = stream();
  auto saved = std::make_shared<std::vector<layer_saved<T>>>(std::size_t(L));
  const T* h0p = h0.defined() ? h0.value().data() : nullptr;
  const T* c0p = c0.defined() ? c0.value().data() : nullptr;

  (*saved)[0].x = dtensor<T, 2>(TB, I0);  // layer 0's input, time-major
  if (TB > 0) {
    if (opts.batch_first) swap01(x.value().data(), (*saved)[0].x.data(), B, Tn, I0, false);
    else (*saved)[0].x = view<const T, 2>(x.value().data(), {TB, I0});
  }
  dtensor<T, 1> bias(G4);
  for (index_t l = 0; l < L; ++l) {
    auto& s = (*saved)[std::size_t(l)];
    const auto& p = layers[std::size_t(l)];
    const index_t in = l == 0 ? I0 : H;
    s.gate = dtensor<T, 2>(TB, G4);
    s.c = dtensor<T, 2>(TB, H);
    s.y = dtensor<T, 2>(TB, H);
    if (TB > 0) {
      kernels::add2<T><<<grid(G4), 256, 0, st>>>(p.bias_ih.value().data(), p.bias_hh.value().data(), bias.data(), G4);
      tessera::cuda_kernels::check_launch("tessera: lstm: bias kernel launch");
      // gates of every step = x W_ih^T + (b_ih + b_hh): W_ih [4H, in] read as its transpose (row stride 1)
      tessera::cuda_gemm<T>(st, TB, G4, in, s.x.data(), in, 1, p.weight_ih.value().data(), 1, in, s.gate.data(), G4,
                            gemm_epilogue::bias, bias.data());
    }
    const T* Whh = p.weight_hh.value().data();
    for (index_t t = 0; t < Tn; ++t) {
      const T* hprev = t > 0 ? s.y.data() + (t - 1) * B * H : (h0p ? h0p + l * B * H : nullptr);
      const T* cprev = t > 0 ? s.c.data() + (t - 1) * B * H : (c0p ? c0p + l * B * H : nullptr);
      T* Gt = s.gate.data() + t * B * G4;
      if (hprev)
        tessera::cuda_gemm<T>(st, B, G4, H, hprev, H, 1, Whh, 1, H, Gt, G4, gemm_epilogue::none, nullptr, 1, 0, 0, 0, true);
      kernels::step_forward<T><<<grid(B * H), 256, 0, st>>>(Gt, cprev, s.c.data() + t * B * H, s.y.data() + t * B * H, B, H);
      tessera::cuda_kernels::check_launch("tessera: lstm: step kernel launch");
    }
    if (l + 1 < L) {
      auto& nx = (*saved)[std::size_t(l + 1)];
      if (drop) {  // the mask from the host's generator, in the host's order
        Tensor<T, dyn_shape_t<2>> host(TB, H);
        detail::draw_dropout_mask(host.data(), host.size(), opts.dropout, *rng);
        nx.mask = tessera::to<dev>(host);
        nx.x = dtensor<T, 2>(s.y * nx.mask);
      } else {
        nx.x = s.y;
      }
    }
  }

  // packed value: output (caller's layout), h_n, c_n
  const index_t n_out = TB * H, n_state = L * B * H;
  typename V1::tensor packed_v(n_out + 2 * n_state);
  T* pk = packed_v.data();
  const auto& ytop = (*saved)[std::size_t(L - 1)].y;
  if (n_out > 0) {
    if (opts.batch_first) swap01(ytop.data(), pk, Tn, B, H, false);
    else view<T, 2>(pk, {TB, H}) = ytop.cview();
  }
  if (Tn > 0)
    for (index_t l = 0; l < L; ++l) {
      const auto& s = (*saved)[std::size_t(l)];
      const index_t last = (Tn - 1) * B * H;
      view<T, 1>(pk + n_out + l * B * H, {B * H}) = view<const T, 1>(s.y.data() + last, {B * H});
      view<T, 1>(pk + n_out + n_state + l * B * H, {B * H}) = view<const T, 1>(s.c.data() + last, {B * H});
    }

  V1 packed(std::move(packed_v), false);
  detail::recorded_inputs inputs;
  inputs.add(x).add(h0).add(c0);
  for (const auto& p : layers) inputs.add(p.weight_ih).add(p.weight_hh).add(p.bias_ih).add(p.bias_hh);
  detail::record(packed, std::move(inputs), [saved, x, h0, c0, layers, B, Tn, H, L, bf = opts.batch_first](const T* g, const T*) {
    const index_t G4 = 4 * H, TB = Tn * B, n_out = TB * H, n_state = L * B * H;
    const cudaStream_t st = stream();
    // the gradient at the top layer's output, time-major
    dtensor<T, 2> dy(TB, H);
    if (n_out > 0) {
      if (bf) swap01(g, dy.data(), B, Tn, H, false);
      else dy = view<const T, 2>(g, {TB, H});
    }
    const T* h0p = h0.defined() ? h0.value().data() : nullptr;
    dtensor<T, 2> dG(TB, G4), dh(B, H), dc(B, H), dX;
    for (index_t l = L - 1; l >= 0; --l) {
      auto& s = (*saved)[std::size_t(l)];
      const auto& p = layers[std::size_t(l)];
      const index_t in = s.x.dims()[1];
      dh = view<const T, 2>(g + n_out + l * B * H, {B, H});
      dc = view<const T, 2>(g + n_out + n_state + l * B * H, {B, H});
      const T* Whh = p.weight_hh.value().data();
      const T* c0l = c0.defined() ? c0.value().data() + l * B * H : nullptr;
      for (index_t t = Tn - 1; t >= 0; --t) {
        const T* cprev = t > 0 ? s.c.data() + (t - 1) * B * H : c0l;
        T* dGt = dG.data() + t * B * G4;
        kernels::step_backward<T><<<grid(B * H), 256, 0, st>>>(s.gate.data() + t * B * G4, s.c.data() + t * B * H, cprev, dh.data(),
                                                               dy.data() + t * B * H, dc.data(), dGt, B, H);
        tessera::cuda_kernels::check_launch("tessera: lstm: step backward kernel launch");
        // dh_{t-1} = dgates_t W_hh (B x 4H times 4H x H)
        tessera::cuda_gemm<T>(st, B, H, G4, dGt, G4, 1, Whh, H, 1, dh.data(), H);
      }
      if (Tn > 0) {
        if (h0.defined() && h0.requires_grad()) {
          auto gh = view<T, 2>(detail::zeroed_grad(h0) + l * B * H, {B, H});
          gh = gh + dh;
        }
        if (c0.defined() && c0.requires_grad()) {
          auto gc = view<T, 2>(detail::zeroed_grad(c0) + l * B * H, {B, H});
          gc = gc + dc;
        }
      }
      if (TB > 0) {
        bool acc;
        if (T* gw = cuda_ad::grad_of(p.weight_hh, acc)) {
          // dW_hh (4H x H) = dgates[1..]^T h[0..T-2] over steps 1..T-1 at once, then step 0 against h0
          if (Tn > 1)
            tessera::cuda_gemm<T>(st, G4, H, (Tn - 1) * B, dG.data() + B * G4, 1, G4, s.y.data(), H, 1, gw, H, gemm_epilogue::none,
                                  nullptr, 1, 0, 0, 0, acc);
          else if (!acc) view<T, 2>(gw, {G4, H}) = T(0);
          if (h0p)
            tessera::cuda_gemm<T>(st, G4, H, B, dG.data(), 1, G4, h0p + l * B * H, H, 1, gw, H, gemm_epilogue::none, nullptr, 1, 0, 0,
                                  0, true);
        }
        if (T* gw = cuda_ad::grad_of(p.weight_ih, acc))  // dW_ih (4H x in) = dgates^T x
          tessera::cuda_gemm<T>(st, G4, in, TB, dG.data(), 1, G4, s.x.data(), in, 1, gw, in, gemm_epilogue::none, nullptr, 1, 0, 0, 0,
                                acc);
        for (const auto* b : {&p.bias_ih, &p.bias_hh})
          if (b->defined() && b->requires_grad())  // the column sums of dgates, in a fixed order
            cuda_ad::add_reduced(detail::zeroed_grad_tensor(*b), dG);
      }
      const bool want_dx = l > 0 || x.requires_grad();
      if (want_dx && TB > 0) {
        dX = dtensor<T, 2>(TB, in);  // dX = dgates W_ih (T*B x 4H times 4H x in)
        tessera::cuda_gemm<T>(st, TB, in, G4, dG.data(), G4, 1, p.weight_ih.value().data(), in, 1, dX.data(), in);
        if (l > 0) {
          if (s.mask.size() > 0) dy = dX * s.mask;
          else dy = dX;
        } else {
          T* gx = detail::zeroed_grad(x);
          if (bf) swap01(dX.data(), gx, Tn, B, in, true);
          else {
            auto gv = view<T, 2>(gx, {TB, in});
            gv = gv + dX;
          }
        }
      }
    }
    for (auto& s : *saved) s = layer_saved<T>{};  // free what the backward needed
  });

  lstm_result<T, dev> r;
  r.output = detail::packed_piece<3>(packed, 0, opts.batch_first ? dims_t<3>{B, Tn, H} : dims_t<3>{Tn, B, H});
  r.h_n = detail::packed_piece<3>(packed, n_out, dims_t<3>{L, B, H});
  r.c_n = detail::packed_piece<3>(packed, n_out + n_state, dims_t<3>{L, B, H});
  return r;
}

}  // namespace cuda_rnn

template <>
struct device_rnn_ops<tessera::cuda> {
  static constexpr bool enabled = true;
  template <class... A>
  static auto lstm(const A&... a) {
    return cuda_rnn::lstm(a...);
  }
};

}  // namespace tessera::ad
#endif  // __CUDACC__
