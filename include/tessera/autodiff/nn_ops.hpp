// Differentiable layer operations with fused forward and backward passes:
//   linear(x, W, b, act)      y = act(x W^T + b): one GEMM with bias and activation as its epilogue; backward makes
//                             dz = g * act'(y) and the bias gradient in one pass, then two GEMMs that accumulate
//                             straight into dx and dW.
//   conv2d(x, w, b, opt, act) the same for convolution (backward data is a convolution again at stride 1).
//   max_pool2d / avg_pool2d, log_softmax, softmax, cross_entropy (log-softmax and NLL fused), mse_loss,
//   dropout, batch_norm2d.
// On the cuda policy each operation dispatches to device_ops<cuda> (autodiff/cuda_ops.hpp, included at the end of this
// file when nvcc compiles it): cuBLASLt, cuDNN and tessera's own kernels, the same results to rounding.
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include "tessera/autodiff/ops.hpp"
#include "tessera/core/random.hpp"
#include "tessera/expr/conv.hpp"
#include "tessera/expr/pool.hpp"

namespace tessera::ad {

enum class activation { none, relu, tanh, sigmoid };

namespace detail {

/// y = act(e) for the activation chosen at run time (each branch is one fused assignment).
template <class Dst, class E>
void assign_activated(Dst& y, const E& e, activation act) {
  switch (act) {
    case activation::none: y = e; break;
    case activation::relu: y = tessera::relu(e); break;
    case activation::tanh: y = tessera::tanh(e); break;
    case activation::sigmoid: y = tessera::sigmoid(e); break;
  }
}

template <activation A, class T>
TS_INLINE T activation_derivative(T g, T y) {
  if constexpr (A == activation::relu) return y <= T(0) ? T(0) : g;  // threshold_backward: NaN y passes g
  else if constexpr (A == activation::tanh) return g * (T(1) - y * y);
  else if constexpr (A == activation::sigmoid) return g * y * (T(1) - y);
  else return g;
}

/// dz[i] = g[i] * act'(y[i]) over one contiguous run; returns the run's sum (vectorised with several lanes).
template <activation A, class T>
T activation_backward_run(const T* __restrict g, const T* __restrict y, T* __restrict dz, index_t n) {
  index_t i = 0;
  T s = 0;
#if TESSERA_SIMD
  constexpr int N = simd::lanes_for<sizeof(T)>;
  using V = simd::vec<T, N>;
  V acc{};
  for (; i + N <= n; i += N) {
    const V gv = simd::load<T, N>(g + i);
    V d;
    if constexpr (A == activation::relu) {
      const V yv = simd::load<T, N>(y + i);
      d = yv <= V{} ? V{} : gv;
    } else if constexpr (A == activation::tanh) {
      const V yv = simd::load<T, N>(y + i);
      d = gv * (T(1) - yv * yv);
    } else if constexpr (A == activation::sigmoid) {
      const V yv = simd::load<T, N>(y + i);
      d = gv * yv * (T(1) - yv);
    } else {
      d = gv;
    }
    simd::store<T, N>(dz + i, d);
    acc += d;
  }
  for (int l = 0; l < N; ++l) s += acc[l];
#endif
  for (; i < n; ++i) {
    const T d = activation_derivative<A>(g[i], y[i]);
    dz[i] = d;
    s += d;
  }
  return s;
}

template <activation A, class T>
void activation_backward_impl(const T* g, const T* y, T* dz, T* db, index_t outer, index_t C, index_t inner, int nthreads) {
  const int nt = outer * C * inner >= 65536 ? std::max(1, nthreads) : 1;
  std::vector<T> part(static_cast<std::size_t>(db ? nt * C : 0), T(0));
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
#if defined(_OPENMP)
    const int me = omp_get_thread_num();
#else
    const int me = 0;
#endif
    T* mine = db ? part.data() + me * C : nullptr;
    if (inner == 1) {  // [outer, C]: bias per column
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (index_t o = 0; o < outer; ++o) {
        activation_backward_run<A>(g + o * C, y + o * C, dz + o * C, C);
        if (mine)
          for (index_t c = 0; c < C; ++c) mine[c] += dz[o * C + c];
      }
    } else {
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (index_t oc = 0; oc < outer * C; ++oc) {
        const T s = activation_backward_run<A>(g + oc * inner, y + oc * inner, dz + oc * inner, inner);
        if (mine) mine[oc % C] += s;
      }
    }
  }
  if (db)
    for (int t = 0; t < nt; ++t)
      for (index_t c = 0; c < C; ++c) db[c] += part[std::size_t(t * C + c)];
}

/// dz = g * act'(y) over [outer, C, inner] and db[c] += sum of dz over outer and inner, in one pass.
/// With no activation and no bias, dz is g itself (returns false: nothing written).
template <class T>
bool activation_backward(const T* g, const T* y, T* dz, T* db, index_t outer, index_t C, index_t inner, activation act,
                         int nthreads) {
  switch (act) {
    case activation::none:
      if (!db) return false;
      activation_backward_impl<activation::none>(g, y, dz, db, outer, C, inner, nthreads);
      break;
    case activation::relu: activation_backward_impl<activation::relu>(g, y, dz, db, outer, C, inner, nthreads); break;
    case activation::tanh: activation_backward_impl<activation::tanh>(g, y, dz, db, outer, C, inner, nthreads); break;
    case activation::sigmoid: activation_backward_impl<activation::sigmoid>(g, y, dz, db, outer, C, inner, nthreads); break;
  }
  return true;
}

/// C (+)= A * B for contiguous row-major C and strided A, B (views), through the CPU GEMM.
template <class T, class VA, class VB>
void gemm_into(T* c, index_t ldc, const VA& a, const VB& b, bool accumulate, int nthreads) {
  const index_t M = a.dims()[0], K = a.dims()[1], N = b.dims()[1];
  tessera::detail::cpu_gemm<T>(M, N, K, {a.data(), a.strides()[0], a.strides()[1]}, {b.data(), b.strides()[0], b.strides()[1]}, c,
                               ldc, accumulate, nthreads);
}

template <class V>
typename V::tensor& fresh_or_grad(const V& v, bool& accumulate) {
  auto& nd = v.node();
  accumulate = nd.has_grad;
  if (!nd.has_grad) {
    nd.grad = typename V::tensor(v.dims());
    nd.has_grad = true;
  }
  return nd.grad;
}
}  // namespace detail

/// y = act(x W^T + b) for x [B, in], W [out, in] (PyTorch's layout), b [out] (may be an empty Var: no bias).
template <class T, class P>
Var<T, 2, P> linear(const Var<T, 2, P>& x, const Var<T, 2, P>& W, const Var<T, 1, P>& b, activation act = activation::none) {
  if constexpr (P::on_device) {
    return device_ops<P>::linear(x, W, b, act);
  } else {
    const auto& xd = x.dims();
    const auto& wd = W.dims();
    if (xd[1] != wd[1])
      throw shape_error("tessera: linear: input " + tessera::detail::format_dims(xd) + " does not fit weights " +
                        tessera::detail::format_dims(wd) + " (in_features must equal the input's last extent)");
    const bool has_b = b.defined();
    if (has_b && b.dims()[0] != wd[0])
      throw shape_error("tessera: linear: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                        tessera::detail::format_dims(wd));
    using V = Var<T, 2, P>;
    typename V::tensor y(xd[0], wd[0]);
    auto prod = tessera::matmul(x.value(), tessera::transpose(W.value()));
    if (has_b) detail::assign_activated(y, prod + b.value(), act);
    else detail::assign_activated(y, prod, act);
    auto back = [x, W, b, act, has_b](const auto& g, const auto& out) {
      const index_t B = out.dims()[0], O = out.dims()[1];
      const int nt = P::num_threads();
      typename V::tensor dz_buf;
      const T* dz = g.data();
      T* db = nullptr;
      bool acc_b = false;
      if (has_b && b.requires_grad()) db = detail::fresh_or_grad(b, acc_b).data();
      if (db && !acc_b) std::fill(db, db + O, T(0));
      if (act != activation::none || db) {
        dz_buf = typename V::tensor(B, O);
        if (detail::activation_backward<T>(g.data(), out.data(), dz_buf.data(), db, B, O, 1, act, nt)) dz = dz_buf.data();
      }
      const View<const T, dyn_shape_t<2>, P> dzv(dz, dims_t<2>{B, O}, dims_t<2>{O, 1});
      if (x.requires_grad()) {
        bool acc;
        auto& gx = detail::fresh_or_grad(x, acc);
        detail::gemm_into<T>(gx.data(), gx.dims()[1], dzv, W.value().cview(), acc, nt);  // dx = dz W
      }
      if (W.requires_grad()) {
        bool acc;
        auto& gw = detail::fresh_or_grad(W, acc);
        detail::gemm_into<T>(gw.data(), gw.dims()[1], tessera::transpose(dzv), x.value().cview(), acc, nt);  // dW = dz^T x
      }
    };
    if (has_b) return V::make(std::move(y), back, x, W, b);
    return V::make(std::move(y), back, x, W);
  }
}

namespace detail {
/// The products of conv2d's backward from dz (the gradient at the convolution's output, activation already
/// applied): dw (and db when not null) and dx, accumulated into the Vars' gradients.
template <class T, class P>
void conv2d_backward_from_dz(const tessera::detail::conv_geometry& geo, const Var<T, 4, P>& x, const Var<T, 4, P>& w, T* db,
                             const T* dz) {
  const int nt = P::num_threads();
  if (w.requires_grad() || db) {
    bool acc = true;
    T* dw = w.requires_grad() ? fresh_or_grad(w, acc).data() : nullptr;
    if (dw) {
      tessera::detail::cpu_conv2d_backward_weight<T>(geo, x.value().data(), dz, dw, db, acc, nt);
    } else {  // only the bias
      tessera::detail::cpu_conv2d_backward_bias(geo, dz, db);
    }
  }
  if (x.requires_grad()) {
    bool acc;
    auto& gx = fresh_or_grad(x, acc);
    if (!acc) {
      tessera::detail::cpu_conv2d_backward_data<T>(geo, dz, w.value().data(), gx.data(), nt);
    } else {
      typename Var<T, 4, P>::tensor t(x.value().dims());
      tessera::detail::cpu_conv2d_backward_data<T>(geo, dz, w.value().data(), t.data(), nt);
      gx = gx + t;
    }
  }
}

/// The bias gradient buffer (zeroed when fresh), or null when there is no bias or it needs no gradient.
template <class T, class P>
T* bias_grad(const Var<T, 1, P>& b, index_t n) {
  if (!b.defined() || !b.requires_grad()) return nullptr;
  bool acc;
  T* db = fresh_or_grad(b, acc).data();
  if (!acc) std::fill(db, db + n, T(0));
  return db;
}

/// act(conv2d(x, w) + b) evaluated into a new tensor (one pass: bias and activation are the epilogue).
template <class T, class P>
auto conv2d_forward(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, conv2d_options opt, activation act,
                    tessera::detail::conv_geometry& geo) {
  auto node = tessera::conv2d(x.value(), w.value(), opt);  // checks the shapes
  geo = node.geometry();
  if (b.defined() && b.dims()[0] != geo.K)
    throw shape_error("tessera: conv2d: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                      tessera::detail::format_dims(w.dims()));
  typename Var<T, 4, P>::tensor y(geo.N, geo.K, geo.OH, geo.OW);
  if (b.defined()) assign_activated(y, node + tessera::reshape<dyn_shape_t<3>>(b.value(), dims_t<3>{geo.K, 1, 1}), act);
  else assign_activated(y, node, act);
  return y;
}
}  // namespace detail

/// y = act(conv2d(x, w, opt) + b) for x [N, C, H, W], w [K, C/groups, R, S], b [K] (may be empty: no bias).
template <class T, class P>
Var<T, 4, P> conv2d(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, conv2d_options opt = {},
                    activation act = activation::none) {
  if constexpr (P::on_device) {
    return device_ops<P>::conv2d(x, w, b, opt, act);
  } else {
    using V = Var<T, 4, P>;
    tessera::detail::conv_geometry geo;
    typename V::tensor y = detail::conv2d_forward(x, w, b, opt, act, geo);
    auto back = [x, w, b, act, geo](const auto& g, const auto& out) {
      T* db = detail::bias_grad(b, geo.K);
      const T* dz = g.data();
      typename V::tensor dz_buf;
      if (act != activation::none) {
        dz_buf = typename V::tensor(out.dims());
        detail::activation_backward<T>(g.data(), out.data(), dz_buf.data(), db, geo.N, geo.K, geo.OH * geo.OW, act, P::num_threads());
        dz = dz_buf.data();
        db = nullptr;  // done in the same pass
      }
      detail::conv2d_backward_from_dz(geo, x, w, db, dz);
    };
    if (b.defined()) return V::make(std::move(y), back, x, w, b);
    return V::make(std::move(y), back, x, w);
  }
}

namespace detail {
#if defined(__AVX512F__)
/// One output row of the 2x2 stride-2 max-pool backward, 16 outputs a step (masked at the end of the row, so rows
/// of 14 or 7 are one step): the window's cells deinterleaved from the two input rows, the first maximum found
/// with three comparisons, the gradient interleaved back.
inline float max_pool2x2_backward_row(const float* r0, const float* r1, const float* go, float* d0, float* d1, index_t OW,
                                      bool relu_mask) {
  __m512 sum = _mm512_setzero_ps();
  for (index_t ow = 0; ow < OW; ow += 16) {
    const tessera::detail::pool2x2_step w(r0, r1, ow, OW);
    __m512 g = _mm512_maskz_loadu_ps(w.out, go + ow);
    // a cell wins when greater than the running maximum or NaN (PyTorch's scan: the last NaN, else the first maximum)
    auto wins = [](__m512 v, __m512 m) { return __mmask16(_mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)); };
    const __mmask16 bw = wins(w.b, w.a);
    const __m512 m1 = _mm512_mask_mov_ps(w.a, bw, w.b);
    const __mmask16 cw = wins(w.c, m1);
    const __m512 m2 = _mm512_mask_mov_ps(m1, cw, w.c);
    const __mmask16 dw = wins(w.d, m2);
    if (relu_mask) {  // the window's maximum is <= 0: the ReLU passed nothing back (a NaN passes, as threshold_backward)
      const __m512 mx = _mm512_mask_mov_ps(m2, dw, w.d);
      g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mx, _mm512_setzero_ps(), _CMP_NLE_UQ), g);
    }
    sum = _mm512_add_ps(sum, g);
    w.store(d0, d1, ow, _mm512_maskz_mov_ps(__mmask16(~bw & ~cw & ~dw), g), _mm512_maskz_mov_ps(__mmask16(bw & ~cw & ~dw), g),
            _mm512_maskz_mov_ps(__mmask16(cw & ~dw), g), _mm512_maskz_mov_ps(dw, g));
  }
  return _mm512_reduce_add_ps(sum);
}
#endif

/// The gradient of a K x K pooling (stride S, padding Pd) of x [N, C, H, W] for output gradient g: max routes each
/// output's gradient to the first maximum of its window, avg spreads it evenly (padding counted, as forward).
template <bool Max, class T>
void pool_backward(const T* x, const T* g, T* dx, index_t N, index_t C, index_t H, index_t W, index_t OH, index_t OW, int K, int S,
                   int Pd, bool accumulate, int nthreads, bool relu_mask = false, T* db = nullptr) {
  // relu_mask: x is a ReLU's output and dx the gradient before that ReLU (a window whose maximum is 0 passes
  // nothing); db: the sum of what each channel receives is added to db[c] (max, 2x2 stride 2 only)
  const index_t planes = N * C;
  const int nt = planes * H * W >= 65536 ? std::max(1, nthreads) : 1;
  std::vector<T> dbp(static_cast<std::size_t>(db ? planes : 0), T(0));
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * H * W;
    const T* gp = g + pl * OH * OW;
    T* dp = dx + pl * H * W;
    if constexpr (Max) {
      if (K == 2 && S == 2 && Pd == 0 && !accumulate) {  // the common case: each input cell in at most one window
        for (index_t oh = 0; oh < OH; ++oh) {
          const T* r0 = xp + 2 * oh * W;
          const T* r1 = r0 + W;
          T* d0 = dp + 2 * oh * W;
          T* d1 = d0 + W;
          index_t ow = 0;
#if defined(__AVX512F__)
          if constexpr (std::is_same_v<T, float>) {
            const float s = max_pool2x2_backward_row(r0, r1, gp + oh * OW, d0, d1, OW, relu_mask);
            if (db) dbp[std::size_t(pl)] += s;
            ow = OW;
          }
#endif
          for (; ow < OW; ++ow) {  // window order a, b, c, d: the last NaN, else the first maximum (PyTorch's scan)
            const index_t j = 2 * ow;
            const T a = r0[j], b = r0[j + 1], c = r1[j], d = r1[j + 1];
            const bool bw = (b > a) | (b != b);
            const T m1 = bw ? b : a;
            const bool cw = (c > m1) | (c != c);
            const T m2 = cw ? c : m1;
            const bool dw = (d > m2) | (d != d);
            const T go = (!relu_mask || !((dw ? d : m2) <= T(0))) ? gp[oh * OW + ow] : T(0);
            if (db) dbp[std::size_t(pl)] += go;
            d0[j] = (!bw & !cw & !dw) ? go : T(0);
            d0[j + 1] = (bw & !cw & !dw) ? go : T(0);
            d1[j] = (cw & !dw) ? go : T(0);
            d1[j + 1] = dw ? go : T(0);
          }
          for (index_t j = 2 * OW; j < W; ++j) d0[j] = d1[j] = T(0);  // columns no window covers
        }
        for (index_t i = 2 * OH * W; i < H * W; ++i) dp[i] = T(0);  // rows no window covers
        continue;
      }
    }
    if (!accumulate) std::fill(dp, dp + H * W, T(0));
    for (index_t oh = 0; oh < OH; ++oh)
      for (index_t ow = 0; ow < OW; ++ow) {
        const T go = gp[oh * OW + ow];
        const index_t h0 = oh * S - Pd, w0 = ow * S - Pd;
        if constexpr (Max) {
          index_t best = -1;
          T bv = -std::numeric_limits<T>::infinity();
          for (index_t i = std::max<index_t>(h0, 0); i < std::min<index_t>(h0 + K, H); ++i)
            for (index_t j = std::max<index_t>(w0, 0); j < std::min<index_t>(w0 + K, W); ++j)
              if (best < 0 || xp[i * W + j] > bv || xp[i * W + j] != xp[i * W + j]) {  // NaN wins, as in PyTorch
                bv = xp[i * W + j];
                best = i * W + j;
              }
          if (best >= 0) dp[best] += go;
        } else {
          const T share = go / T(K * K);
          for (index_t i = std::max<index_t>(h0, 0); i < std::min<index_t>(h0 + K, H); ++i)
            for (index_t j = std::max<index_t>(w0, 0); j < std::min<index_t>(w0 + K, W); ++j) dp[i * W + j] += share;
        }
      }
  }
  if (db)
    for (index_t pl = 0; pl < planes; ++pl) db[pl % C] += dbp[std::size_t(pl)];
}

template <bool Max, int K, int S, int Pd, class T, class P>
Var<T, 4, P> pool(const Var<T, 4, P>& x) {
  if constexpr (P::on_device) {
    return device_ops<P>::template pool<Max, K, S, Pd>(x);
  } else {
    using V = Var<T, 4, P>;
    typename V::tensor y;
    if constexpr (Max) y = typename V::tensor(tessera::max_pool2d<K, S, Pd>(x.value()));
    else y = typename V::tensor(tessera::avg_pool2d<K, S, Pd>(x.value()));
    return V::make(std::move(y), [x](const auto& g, const auto& out) {
      bool acc;
      auto& gx = fresh_or_grad(x, acc);
      const auto& d = x.dims();
      pool_backward<Max, T>(x.value().data(), g.data(), gx.data(), d[0], d[1], d[2], d[3], out.dims()[2], out.dims()[3], K, S, Pd, acc,
                            P::num_threads());
    }, x);
  }
}
}  // namespace detail

/// max_pool2d<2>(relu(conv2d(x, w, opt) + b)) as one operation (Conv2d, ReLU, MaxPool2d<2> in a model): the
/// forward is the convolution with bias and ReLU as its epilogue, then the pooling; the backward routes each
/// pooled gradient to its window's first maximum, applies ReLU's mask and sums the bias gradient in one pass,
/// then runs the convolution's products.
template <class T, class P>
Var<T, 4, P> conv2d_relu_maxpool2(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, conv2d_options opt = {}) {
  if constexpr (P::on_device) {
    return device_ops<P>::conv2d_relu_maxpool2(x, w, b, opt);
  } else {
    using V = Var<T, 4, P>;
    tessera::detail::conv_geometry geo;
    auto y = std::make_shared<typename V::tensor>(detail::conv2d_forward(x, w, b, opt, activation::relu, geo));
    typename V::tensor pooled(tessera::max_pool2d<2>(*y));
    auto back = [x, w, b, geo, y](const auto& g, const auto& out) {
      T* db = detail::bias_grad(b, geo.K);
      typename V::tensor dz(y->dims());
      detail::pool_backward<true, T>(y->data(), g.data(), dz.data(), geo.N, geo.K, geo.OH, geo.OW, out.dims()[2], out.dims()[3], 2, 2,
                                     0, false, P::num_threads(), /*relu_mask=*/true, db);
      detail::conv2d_backward_from_dz(geo, x, w, static_cast<T*>(nullptr), dz.data());
    };
    if (b.defined()) return V::make(std::move(pooled), back, x, w, b);
    return V::make(std::move(pooled), back, x, w);
  }
}

/// Max over K x K windows (stride S, padding Pd); the gradient goes to each window's first maximum.
template <int K, int S = K, int Pd = 0, class T, class P>
Var<T, 4, P> max_pool2d(const Var<T, 4, P>& x) {
  return detail::pool<true, K, S, Pd>(x);
}
/// Mean over K x K windows (stride S, padding Pd counted as zeros).
template <int K, int S = K, int Pd = 0, class T, class P>
Var<T, 4, P> avg_pool2d(const Var<T, 4, P>& x) {
  return detail::pool<false, K, S, Pd>(x);
}

namespace detail {
/// Per row of z [B, C]: the maximum m and ls = log(sum(exp(z - m))), kept apart: log-softmax is (z - m) - ls, which
/// rounds at the size of the result, where z - (m + ls) would round at the size of the largest logit (as PyTorch).
template <class T>
void row_logsumexp(const T* z, index_t B, index_t C, std::vector<T>& mx, std::vector<T>& ls) {
  mx.resize(std::size_t(B));
  ls.resize(std::size_t(B));
  for (index_t i = 0; i < B; ++i) {
    const T* r = z + i * C;
    T m = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < C; ++j) m = std::max(m, r[j]);
    T s = 0;
    for (index_t j = 0; j < C; ++j) s += std::exp(r[j] - m);
    mx[std::size_t(i)] = m;
    ls[std::size_t(i)] = std::log(s);
  }
}

/// softmax (or log-softmax) of each row of z [B, C]: softmax as exp(z - m) / sum(exp(z - m)), log-softmax as
/// (z - m) - log(sum(exp(z - m))), each rounding at the size of its result (as PyTorch).
template <bool Log, class Z>
Z softmax_rows(const Z& z, index_t B, index_t C) {
  using T = typename Z::value_type;
  std::vector<T> mx, ls;
  row_logsumexp(z.data(), B, C, mx, ls);
  Z y(B, C);
  for (index_t i = 0; i < B; ++i) {
    const T m = mx[std::size_t(i)];
    T s = 0;
    if constexpr (!Log)
      for (index_t j = 0; j < C; ++j) s += std::exp(z.data()[i * C + j] - m);
    for (index_t j = 0; j < C; ++j) {
      const T d = z.data()[i * C + j] - m;
      y.data()[i * C + j] = Log ? d - ls[std::size_t(i)] : std::exp(d) / s;
    }
  }
  return y;
}
}  // namespace detail

/// log(softmax(z)) along the last axis of z [B, C].
template <class T, class P>
Var<T, 2, P> log_softmax(const Var<T, 2, P>& z) {
  if constexpr (P::on_device) {
    return device_ops<P>::log_softmax(z);
  } else {
    using V = Var<T, 2, P>;
    const index_t B = z.dims()[0], C = z.dims()[1];
    typename V::tensor y = detail::softmax_rows<true>(z.value(), B, C);
    return V::make(std::move(y), [z, B, C](const auto& g, const auto& out) {  // dz = g - softmax * sum(g)
      bool acc;
      auto& gz = detail::fresh_or_grad(z, acc);
      for (index_t i = 0; i < B; ++i) {
        T s = 0;
        for (index_t j = 0; j < C; ++j) s += g.data()[i * C + j];
        for (index_t j = 0; j < C; ++j) {
          const T d = g.data()[i * C + j] - std::exp(out.data()[i * C + j]) * s;
          gz.data()[i * C + j] = acc ? gz.data()[i * C + j] + d : d;
        }
      }
    }, z);
  }
}

/// softmax along the last axis of z [B, C].
template <class T, class P>
Var<T, 2, P> softmax(const Var<T, 2, P>& z) {
  if constexpr (P::on_device) {
    return device_ops<P>::softmax(z);
  } else {
    using V = Var<T, 2, P>;
    const index_t B = z.dims()[0], C = z.dims()[1];
    typename V::tensor y = detail::softmax_rows<false>(z.value(), B, C);
    return V::make(std::move(y), [z, B, C](const auto& g, const auto& out) {  // dz = y * (g - sum(g * y))
      bool acc;
      auto& gz = detail::fresh_or_grad(z, acc);
      for (index_t i = 0; i < B; ++i) {
        T s = 0;
        for (index_t j = 0; j < C; ++j) s += g.data()[i * C + j] * out.data()[i * C + j];
        for (index_t j = 0; j < C; ++j) {
          const T d = out.data()[i * C + j] * (g.data()[i * C + j] - s);
          gz.data()[i * C + j] = acc ? gz.data()[i * C + j] + d : d;
        }
      }
    }, z);
  }
}

/// Mean over the batch of -log(softmax(logits)[label]): log-softmax and the negative log-likelihood in one pass;
/// the backward is (softmax - one_hot(label)) / B. Labels are class indices in [0, C).
template <class T, class P, class L, class SL, class PL>
Var<T, 0, P> cross_entropy(const Var<T, 2, P>& logits, const Tensor<L, SL, PL>& labels) {
  static_assert(!PL::on_device, "tessera: cross_entropy reads the labels on the host");
  static_assert(std::is_integral_v<L>, "tessera: cross_entropy takes integer class labels");
  static_assert(SL::rank == 1, "tessera: cross_entropy takes one label per row of the logits (a rank-1 tensor)");
  if constexpr (P::on_device) {
    return device_ops<P>::cross_entropy(logits, labels);
  } else {
    const index_t B = logits.dims()[0], C = logits.dims()[1];
    if (labels.dims()[0] != B)
      throw shape_error("tessera: cross_entropy: logits " + tessera::detail::format_dims(logits.dims()) + " and labels " +
                        tessera::detail::format_dims(labels.dims()) + " have different batch sizes");
    std::vector<T> mx, ls;
    const T* z = logits.value().data();
    detail::row_logsumexp(z, B, C, mx, ls);
    std::vector<index_t> lab(static_cast<std::size_t>(B));
    T loss = 0;
    for (index_t i = 0; i < B; ++i) {
      const index_t l = index_t(labels.data()[i]);
      if (l < 0 || l >= C)
        throw std::out_of_range("tessera: cross_entropy: label " + std::to_string(l) + " at row " + std::to_string(i) +
                                " is outside [0, " + std::to_string(C) + ")");
      lab[std::size_t(i)] = l;
      loss += ls[std::size_t(i)] - (z[i * C + l] - mx[std::size_t(i)]);
    }
    using V = Var<T, 0, P>;
    typename V::tensor y;
    y = loss / T(B);
    return V::make(std::move(y), [logits, mx = std::move(mx), ls = std::move(ls), lab = std::move(lab), B, C](const auto& g, const auto&) {
      bool acc;
      auto& gz = detail::fresh_or_grad(logits, acc);
      const T scale = g() / T(B);
      const T* zz = logits.value().data();
      for (index_t i = 0; i < B; ++i)
        for (index_t j = 0; j < C; ++j) {
          const T p = std::exp((zz[i * C + j] - mx[std::size_t(i)]) - ls[std::size_t(i)]);
          const T d = scale * (p - (j == lab[std::size_t(i)] ? T(1) : T(0)));
          gz.data()[i * C + j] = acc ? gz.data()[i * C + j] + d : d;
        }
    }, logits);
  }
}

/// Mean of the squared differences.
template <class T, int R, class P>
Var<T, 0, P> mse_loss(const Var<T, R, P>& a, const Var<T, R, P>& b) {
  return mean(square(a - b));
}

namespace detail {
/// An inverted-dropout mask for n elements, drawn from rng in element order: 0 with probability p, else 1/(1-p).
/// Every policy and every operation with dropout (ad::dropout, the LSTM between layers) draws its masks here, on the
/// host, so one seed gives the same masks under every policy.
template <class T>
void draw_dropout_mask(T* m, index_t n, double p, Rng& rng) {
  const T keep = T(1.0 / (1.0 - p));
  for (index_t i = 0; i < n; ++i) m[i] = rng.uniform_double() < p ? T(0) : keep;
}
}  // namespace detail

/// Inverted dropout: in training, each element is zeroed with probability p and the rest scaled by 1/(1-p).
template <class T, int R, class P>
Var<T, R, P> dropout(const Var<T, R, P>& x, double p, Rng& rng, bool training) {
  if constexpr (P::on_device) {
    return device_ops<P>::dropout(x, p, rng, training);
  } else {
    if (!training || p == 0.0) return x;
    if (p < 0.0 || p >= 1.0) throw std::invalid_argument("tessera: dropout: p must be in [0, 1)");
    using V = Var<T, R, P>;
    auto mask = std::make_shared<typename V::tensor>(x.dims());
    detail::draw_dropout_mask(mask->data(), mask->size(), p, rng);
    return V::make(typename V::tensor(x.value() * *mask), [x, mask](const auto& g) { detail::accumulate(x, g * *mask); }, x);
  }
}

/// Batch normalisation over (N, H, W) per channel of x [N, C, H, W]. In training the batch statistics are used and
/// the running ones updated (running = (1 - momentum) * running + momentum * batch, variance unbiased); in
/// evaluation the running statistics are used. As PyTorch: training on one value per channel is refused, and on
/// none (N * H * W = 0) gives an empty output with the running statistics left as they were.
template <class T, class P, class S1>
Var<T, 4, P> batch_norm2d(const Var<T, 4, P>& x, const Var<T, 1, P>& gamma, const Var<T, 1, P>& beta, Tensor<T, S1, P>& running_mean,
                          Tensor<T, S1, P>& running_var, bool training, double momentum = 0.1, double eps = 1e-5) {
  if (training && x.dims()[0] * x.dims()[2] * x.dims()[3] == 1)
    throw shape_error("tessera: batch_norm2d: expected more than 1 value per channel when training, got input shape " +
                      tessera::detail::format_dims(x.dims()));
  if constexpr (P::on_device) {
    return device_ops<P>::batch_norm2d(x, gamma, beta, running_mean, running_var, training, momentum, eps);
  } else {
    const auto d = x.dims();
    const index_t N = d[0], C = d[1], HW = d[2] * d[3], M = N * HW;
    if (gamma.dims()[0] != C || beta.dims()[0] != C || running_mean.dims()[0] != C || running_var.dims()[0] != C)
      throw shape_error("tessera: batch_norm2d: input " + tessera::detail::format_dims(d) + " has " + std::to_string(C) +
                        " channels but the parameters have " + tessera::detail::format_dims(gamma.dims()));
    using V = Var<T, 4, P>;
    auto mean_ = std::make_shared<std::vector<T>>(std::size_t(C));
    auto invstd = std::make_shared<std::vector<T>>(std::size_t(C));
    const T* xv = x.value().data();
    for (index_t c = 0; c < C; ++c) {
      T m, v;
      if (training && M > 0) {  // (an empty batch has no statistics: the running ones stay, and normalise nothing)
        double s = 0, s2 = 0;
        for (index_t n = 0; n < N; ++n)
          for (index_t i = 0; i < HW; ++i) {
            const double t = xv[(n * C + c) * HW + i];
            s += t;
            s2 += t * t;
          }
        const double mu = s / double(M), var = std::max(0.0, s2 / double(M) - mu * mu);
        m = T(mu);
        v = T(var);
        running_mean.data()[c] = T((1 - momentum) * running_mean.data()[c] + momentum * mu);
        running_var.data()[c] = T((1 - momentum) * running_var.data()[c] + momentum * (M > 1 ? var * double(M) / double(M - 1) : var));
      } else {
        m = running_mean.data()[c];
        v = running_var.data()[c];
      }
      (*mean_)[std::size_t(c)] = m;
      (*invstd)[std::size_t(c)] = T(1.0 / std::sqrt(double(v) + eps));
    }
    typename V::tensor y(d);
    for (index_t n = 0; n < N; ++n)
      for (index_t c = 0; c < C; ++c) {
        const T a = gamma.value().data()[c] * (*invstd)[std::size_t(c)];
        const T b = beta.value().data()[c] - a * (*mean_)[std::size_t(c)];
        for (index_t i = 0; i < HW; ++i) y.data()[(n * C + c) * HW + i] = a * xv[(n * C + c) * HW + i] + b;
      }
    return V::make(std::move(y), [x, gamma, beta, mean_, invstd, training, N, C, HW, M](const auto& g, const auto&) {
      const T* xv = x.value().data();
      const T* gv = g.data();
      bool acc_g = false, acc_b = false, acc_x = false;
      T* dg = gamma.requires_grad() ? detail::fresh_or_grad(gamma, acc_g).data() : nullptr;
      T* dbeta = beta.requires_grad() ? detail::fresh_or_grad(beta, acc_b).data() : nullptr;
      T* dx = x.requires_grad() ? detail::fresh_or_grad(x, acc_x).data() : nullptr;
      for (index_t c = 0; c < C; ++c) {
        const T mu = (*mean_)[std::size_t(c)], is = (*invstd)[std::size_t(c)], gam = gamma.value().data()[c];
        double sg = 0, sgx = 0;  // sum(g), sum(g * xhat)
        for (index_t n = 0; n < N; ++n)
          for (index_t i = 0; i < HW; ++i) {
            const index_t k = (n * C + c) * HW + i;
            sg += gv[k];
            sgx += double(gv[k]) * double((xv[k] - mu) * is);
          }
        if (dg) dg[c] = (acc_g ? dg[c] : T(0)) + T(sgx);
        if (dbeta) dbeta[c] = (acc_b ? dbeta[c] : T(0)) + T(sg);
        if (dx)
          for (index_t n = 0; n < N; ++n)
            for (index_t i = 0; i < HW; ++i) {
              const index_t k = (n * C + c) * HW + i;
              T v;
              if (training) v = gam * is * (gv[k] - T(sg / double(M)) - (xv[k] - mu) * is * T(sgx / double(M)));
              else v = gam * is * gv[k];
              dx[k] = acc_x ? dx[k] + v : v;
            }
      }
    }, x, gamma, beta);
  }
}

}  // namespace tessera::ad

#if defined(__CUDACC__)
#include "tessera/autodiff/cuda_ops.hpp"  // device_ops<cuda>: these operations on the GPU
#endif
