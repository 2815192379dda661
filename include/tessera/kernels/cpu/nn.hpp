// host_nn_ops<P>: the nn part of backend<cpu> / backend<cpu_threads> (see kernels/cpu/backend.hpp): the kernels of
// the layer operations of autodiff/nn_ops.hpp on the host, on raw pointers, extents and descriptors (no Vars):
//   activation_backward     dz = g * act'(y) and the bias gradient in one pass (vectorised, P::num_threads() threads)
//   conv2d_backward_weight / _data   the convolution's gradient products (kernels/cpu/conv.hpp)
//   max_pool2d_backward / avg_pool2d_backward, max_pool2x2_relu_backward (conv2d_relu_maxpool2's fused backward),
//   adaptive_avg_pool2d / _backward (kernels/cpu/adaptive_pool.hpp)
//   softmax_rows / softmax_rows_backward, cross_entropy / cross_entropy_backward, dropout_mask,
//   batch_norm_stats / batch_norm_apply / batch_norm_backward, add_reduced (a broadcast gradient summed back)
// The same names and argument lists as cuda_nn_ops (kernels/cuda/nn.hpp). Each gradient output is written, or added
// to when its accumulate flag says so. The free functions below are the loops themselves; autodiff/rnn_ops.hpp
// uses activation_backward directly.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "tessera/config.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/adaptive_pool.hpp"
#include "tessera/kernels/cpu/batch_norm.hpp"
#include "tessera/kernels/cpu/conv.hpp"
#include "tessera/kernels/cpu/pool2x2.hpp"

namespace tessera::detail {

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
#elif defined(__AVX2__)
/// The AVX2 version: 8 outputs a step (plain loads and stores, the end of the row masked), the same comparisons and
/// the same winner per window as the AVX-512 version and the scalar loop.
inline float max_pool2x2_backward_row(const float* r0, const float* r1, const float* go, float* d0, float* d1, index_t OW,
                                      bool relu_mask) {
  __m256 sum = _mm256_setzero_ps();
  for (index_t ow = 0; ow < OW; ow += 8) {
    const tessera::detail::pool2x2_step w(r0, r1, ow, OW);
    __m256 g = w.load_out(go, ow);  // 0 in masked lanes
    // a cell wins when greater than the running maximum or NaN (PyTorch's scan: the last NaN, else the first maximum)
    auto wins = [](__m256 v, __m256 m) { return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); };
    const __m256 bw = wins(w.b, w.a);
    const __m256 m1 = _mm256_blendv_ps(w.a, w.b, bw);
    const __m256 cw = wins(w.c, m1);
    const __m256 m2 = _mm256_blendv_ps(m1, w.c, cw);
    const __m256 dw = wins(w.d, m2);
    if (relu_mask) {  // the window's maximum is <= 0: the ReLU passed nothing back (a NaN passes, as threshold_backward)
      const __m256 mx = _mm256_blendv_ps(m2, w.d, dw);
      g = _mm256_and_ps(_mm256_cmp_ps(mx, _mm256_setzero_ps(), _CMP_NLE_UQ), g);
    }
    sum = _mm256_add_ps(sum, g);
    const __m256 cd = _mm256_or_ps(cw, dw);
    w.store(d0, d1, ow, _mm256_andnot_ps(_mm256_or_ps(bw, cd), g), _mm256_and_ps(_mm256_andnot_ps(cd, bw), g),
            _mm256_and_ps(_mm256_andnot_ps(dw, cw), g), _mm256_and_ps(dw, g));
  }
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
#endif

/// The gradient of a pooling (pg: windows, stride, padding, dilation per axis) of x [N, C, H, W] for output gradient
/// g: max routes each output's gradient to the first maximum of its window, avg spreads it evenly over the window's
/// real cells with the forward's divisor (padding counted or not).
template <bool Max, class T>
void pool_backward(const T* x, const T* g, T* dx, const pool2d_geometry& pg, bool accumulate, int nthreads, bool relu_mask = false,
                   T* db = nullptr) {
  const index_t N = pg.N, C = pg.C, H = pg.H, W = pg.W, OH = pg.OH, OW = pg.OW;
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
      if (pg.K == hw{2} && pg.S == hw{2} && pg.pad == hw{0} && pg.dil == hw{1} && 2 * OH <= H && 2 * OW <= W && !accumulate) {  // the common case: each input cell in at most one window
        for (index_t oh = 0; oh < OH; ++oh) {
          const T* r0 = xp + 2 * oh * W;
          const T* r1 = r0 + W;
          T* d0 = dp + 2 * oh * W;
          T* d1 = d0 + W;
          index_t ow = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
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
        const index_t h0 = oh * pg.S.h - pg.pad.h, w0 = ow * pg.S.w - pg.pad.w;
        if constexpr (Max) {
          index_t best = -1;
          T bv = -std::numeric_limits<T>::infinity();
          for (index_t kh = 0; kh < pg.K.h; ++kh) {
            const index_t i = h0 + kh * pg.dil.h;
            if (i < 0 || i >= H) continue;
            for (index_t kw = 0; kw < pg.K.w; ++kw) {
              const index_t j = w0 + kw * pg.dil.w;
              if (j < 0 || j >= W) continue;
              if (best < 0 || xp[i * W + j] > bv || xp[i * W + j] != xp[i * W + j]) {  // NaN wins, as in PyTorch
                bv = xp[i * W + j];
                best = i * W + j;
              }
            }
          }
          if (best >= 0) dp[best] += go;
        } else {
          const index_t i0 = std::max<index_t>(h0, 0), i1 = std::min<index_t>(h0 + pg.K.h, H);
          const index_t j0 = std::max<index_t>(w0, 0), j1 = std::min<index_t>(w0 + pg.K.w, W);
          const index_t cells = pg.count_include_pad
                                    ? (std::min<index_t>(h0 + pg.K.h, H + pg.pad.h) - h0) * (std::min<index_t>(w0 + pg.K.w, W + pg.pad.w) - w0)
                                    : (i1 - i0) * (j1 - j0);
          if (cells <= 0) continue;
          const T share = go / T(cells);
          for (index_t i = i0; i < i1; ++i)
            for (index_t j = j0; j < j1; ++j) dp[i * W + j] += share;
        }
      }
  }
  if (db)
    for (index_t pl = 0; pl < planes; ++pl) db[pl % C] += dbp[std::size_t(pl)];
}

/// Per row of z [B, C]: the maximum mx[i] and ls[i] = log(sum(exp(z - m))), kept apart: log-softmax is (z - m) - ls,
/// which rounds at the size of the result, where z - (m + ls) would round at the size of the largest logit (as
/// PyTorch).
template <class T>
void row_logsumexp(const T* z, index_t B, index_t C, T* mx, T* ls) {
  for (index_t i = 0; i < B; ++i) {
    const T* r = z + i * C;
    T m = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < C; ++j) m = std::max(m, r[j]);
    T s = 0;
    for (index_t j = 0; j < C; ++j) s += std::exp(r[j] - m);
    mx[i] = m;
    ls[i] = std::log(s);
  }
}

/// The nn part of backend<P> for the host policies.
template <class P>
struct host_nn_ops {
  /// dz = g * act'(y) over [outer, C, inner] and, when db is not null, db[c] (+)= the sum of the channel's dz, in one
  /// pass. Returns whether dz was written: with no activation dz is g itself and may be left alone (dz may then be
  /// null).
  template <class T>
  static bool activation_backward(const T* g, const T* y, T* dz, T* db, bool acc_b, index_t outer, index_t C, index_t inner,
                                  activation act) {
    if (db && !acc_b) std::fill(db, db + C, T(0));
    if (act == activation::none && db && !dz) {  // only the bias: the pass writes dz, so into a scratch buffer
      std::unique_ptr<T[]> scratch(new T[std::size_t(outer * C * inner)]);
      detail::activation_backward<T>(g, y, scratch.get(), db, outer, C, inner, act, P::num_threads());
      return false;
    }
    return detail::activation_backward<T>(g, y, dz, db, outer, C, inner, act, P::num_threads());
  }

  /// dw (+)= the convolution's weight gradient from dz (its output's gradient) and x, and db (+)= the bias
  /// gradient (the channel sums of dz); either may be null.
  template <class T>
  static void conv2d_backward_weight(const conv_geometry& geo, const T* x, const T* dz, T* dw, bool acc_w, T* db, bool acc_b) {
    if (db && !acc_b) std::fill(db, db + geo.K, T(0));
    if (dw) detail::cpu_conv2d_backward_weight<T>(geo, x, dz, dw, db, acc_w, P::num_threads());
    else if (db) detail::cpu_conv2d_backward_bias(geo, dz, db, P::num_threads());
  }
  /// dx (+)= the convolution's input gradient from dz and the weights w.
  template <class T>
  static void conv2d_backward_data(const conv_geometry& geo, const T* dz, const T* w, T* dx, bool acc_x) {
    if (!acc_x) {
      detail::cpu_conv2d_backward_data<T>(geo, dz, w, dx, P::num_threads());
      return;
    }
    const index_t n = geo.N * geo.C * geo.H * geo.W;
    T* t = memory<P>::template allocate<T>(std::size_t(n));
    std::unique_ptr<T, void (*)(T*)> hold(t, [](T* p) { memory<P>::deallocate(p); });
    const int nt = P::num_threads();
    detail::cpu_conv2d_backward_data<T>(geo, dz, w, t, nt);
#if defined(_OPENMP)
#pragma omp parallel for simd num_threads(nt) schedule(static) if (nt > 1 && n >= 65536)
#endif
    for (index_t i = 0; i < n; ++i) dx[i] += t[i];
  }

  /// dx (+)= the gradient of max pooling over x (each output's gradient to its window's first maximum).
  template <class T>
  static void max_pool2d_backward(const pool2d_geometry& pg, const T* x, const T* g, T* dx, bool acc) {
    detail::pool_backward<true, T>(x, g, dx, pg, acc, P::num_threads());
  }
  /// dx (+)= the gradient of average pooling (each output's gradient spread over its window's cells).
  template <class T>
  static void avg_pool2d_backward(const pool2d_geometry& pg, const T* x, const T* g, T* dx, bool acc) {
    detail::pool_backward<false, T>(x, g, dx, pg, acc, P::num_threads());
  }
  /// y [N, C, OH, OW] (contiguous) = the adaptive average pooling of x [N, C, H, W] (strides xs; pg's K, S, pad unused).
  template <class T>
  static void adaptive_avg_pool2d(const pool2d_geometry& pg, const T* x, const index_t* xs, T* y) {
    detail::cpu_adaptive_avg_pool2d<T>(pg, x, xs, y, P::num_threads());
  }
  /// dx (+)= the gradient of adaptive average pooling (each output's gradient spread over its window).
  template <class T>
  static void adaptive_avg_pool2d_backward(const pool2d_geometry& pg, const T* g, T* dx, bool acc) {
    detail::cpu_adaptive_avg_pool2d_backward<T>(pg, g, dx, acc, P::num_threads());
  }
  /// The backward of max_pool2d<2>(y) with y = relu(z): dz (written) gets each pooled gradient at its window's first
  /// maximum unless that maximum is <= 0 (ReLU passed nothing), and db (+)= the channel sums of dz (db may be null).
  template <class T>
  static void max_pool2x2_relu_backward(const pool2d_geometry& pg, const T* y, const T* g, T* dz, T* db, bool acc_b) {
    if (db && !acc_b) std::fill(db, db + pg.C, T(0));
    const pool2d_geometry p2{pg.N, pg.C, pg.H, pg.W, pg.OH, pg.OW, 2, 2, 0};
    detail::pool_backward<true, T>(y, g, dz, p2, false, P::num_threads(), /*relu_mask=*/true, db);
  }

  /// y = log_softmax (Log) or softmax of each row of z [B, C]: softmax as exp(z - m) / sum(exp(z - m)), log-softmax
  /// as (z - m) - log(sum(exp(z - m))), each rounding at the size of its result (as PyTorch).
  template <bool Log, class T>
  static void softmax_rows(const T* z, T* y, index_t B, index_t C) {
    std::vector<T> mx(static_cast<std::size_t>(B)), ls(static_cast<std::size_t>(B));
    detail::row_logsumexp(z, B, C, mx.data(), ls.data());
    for (index_t i = 0; i < B; ++i) {
      const T m = mx[std::size_t(i)];
      T s = 0;
      if constexpr (!Log)
        for (index_t j = 0; j < C; ++j) s += std::exp(z[i * C + j] - m);
      for (index_t j = 0; j < C; ++j) {
        const T d = z[i * C + j] - m;
        y[i * C + j] = Log ? d - ls[std::size_t(i)] : std::exp(d) / s;
      }
    }
  }
  /// gz (+)= the gradient through log_softmax (g - exp(y) sum(g)) or softmax (y (g - sum(g y))), y the forward's output.
  template <bool Log, class T>
  static void softmax_rows_backward(const T* g, const T* y, T* gz, index_t B, index_t C, bool acc) {
    for (index_t i = 0; i < B; ++i) {
      T s = 0;
      if constexpr (Log)
        for (index_t j = 0; j < C; ++j) s += g[i * C + j];
      else
        for (index_t j = 0; j < C; ++j) s += g[i * C + j] * y[i * C + j];
      for (index_t j = 0; j < C; ++j) {
        const T d = Log ? g[i * C + j] - std::exp(y[i * C + j]) * s : y[i * C + j] * (g[i * C + j] - s);
        gz[i * C + j] = acc ? gz[i * C + j] + d : d;
      }
    }
  }

  /// loss[0] = the mean over the rows of z [B, C] of -log(softmax(z)[label]) (labels checked, in [0, C)); lse keeps
  /// each row's maximum (lse[0, B)) and log-sum (lse[B, 2B)) for the backward.
  template <class T>
  static void cross_entropy(const T* z, const index_t* labels, T* lse, T* loss, index_t B, index_t C) {
    T* mx = lse;
    T* ls = lse + B;
    detail::row_logsumexp(z, B, C, mx, ls);
    T sum = 0;
    for (index_t i = 0; i < B; ++i) sum += ls[i] - (z[i * C + labels[i]] - mx[i]);
    loss[0] = sum / T(B);
  }
  /// gz (+)= g[0] / B * (softmax(z) - one_hot(label)).
  template <class T>
  static void cross_entropy_backward(const T* z, const T* lse, const index_t* labels, const T* g, T* gz, index_t B, index_t C,
                                     bool acc) {
    const T scale = g[0] / T(B);
    const T* mx = lse;
    const T* ls = lse + B;
    for (index_t i = 0; i < B; ++i)
      for (index_t j = 0; j < C; ++j) {
        const T p = std::exp((z[i * C + j] - mx[i]) - ls[i]);
        const T d = scale * (p - (j == labels[i] ? T(1) : T(0)));
        gz[i * C + j] = acc ? gz[i * C + j] + d : d;
      }
  }

  /// An inverted-dropout mask for n elements (draw_dropout_mask, kernels/backend.hpp: every policy's masks).
  template <class T>
  static void dropout_mask(T* m, index_t n, double p, Rng& rng) {
    detail::draw_dropout_mask(m, n, p, rng);
  }

  /// Batch normalisation per channel of x [N, C, HW] (kernels/cpu/batch_norm.hpp): the statistics to normalise with
  /// (the batch's in training, the running ones otherwise; in training the running ones are updated, variance
  /// unbiased; an empty batch leaves them), y = gamma * (x - mean) * invstd + beta, and the backward (null outputs
  /// skipped; each added to when its flag says so).
  template <class T>
  static void batch_norm_stats(const T* x, index_t N, index_t C, index_t HW, bool training, double momentum, double eps,
                               T* running_mean, T* running_var, T* mean, T* invstd) {
    detail::cpu_batch_norm_stats<T>(x, N, C, HW, training, momentum, eps, running_mean, running_var, mean, invstd, P::num_threads());
  }
  template <class T>
  static void batch_norm_apply(const T* x, const T* gamma, const T* beta, const T* mean, const T* invstd, T* y, index_t N,
                               index_t C, index_t HW) {
    detail::cpu_batch_norm_apply<T>(x, gamma, beta, mean, invstd, y, N, C, HW, P::num_threads());
  }
  template <class T>
  static void batch_norm_backward(const T* x, const T* g, const T* gamma, const T* mean, const T* invstd, T* dg, T* dbeta, T* dx,
                                  index_t N, index_t C, index_t HW, bool training, bool acc_g, bool acc_b, bool acc_x) {
    detail::cpu_batch_norm_backward<T>(x, g, gamma, mean, invstd, dg, dbeta, dx, N, C, HW, training, acc_g, acc_b, acc_x,
                                       P::num_threads());
  }

  /// grad (dims gd) += t (dims td, contiguous) summed down to grad's shape (t's dims broadcast from grad's, aligned
  /// right).
  template <class T, std::size_t R, std::size_t RT>
  static void add_reduced(T* g, const std::array<index_t, R>& gd, const T* src, const std::array<index_t, RT>& td) {
    constexpr int r = int(R), rt = int(RT);
    static_assert(r <= rt);
    dims_t<RT> gs{};  // grad's stride for each of t's dims (0 where grad is broadcast)
    const auto cs = tessera::contiguous_strides(gd);
    for (int i = 0; i < r; ++i) gs[rt - r + i] = gd[i] == td[rt - r + i] ? cs[i] : 0;
    index_t idx[rt > 0 ? rt : 1] = {};
    index_t n = 1;
    for (int i = 0; i < rt; ++i) n *= td[i];
    for (index_t k = 0; k < n; ++k) {
      index_t off = 0;
      for (int i = 0; i < rt; ++i) off += idx[i] * gs[i];
      g[off] += src[k];
      for (int d = rt - 1; d >= 0; --d) {
        if (++idx[d] < td[d]) break;
        idx[d] = 0;
      }
    }
  }
};

}  // namespace tessera::detail
