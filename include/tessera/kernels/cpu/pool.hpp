// The host's pooling kernel: max or average over KH x KW windows (stride, padding and max dilation per axis, all
// known at compile time: pool2d_options) of an NCHW input read through strides; a plane per task over the threads;
// 2 x 2 stride-2 max pools of contiguous float rows 16 outputs at a time with AVX-512, 8 with AVX2 (the same
// results as the scalar loop, bit for bit; the scalar loop does everything else). NaN wins a max window (PyTorch); an
// average divides by the window's cells in the padded input (count_include_pad) or in the input alone.
#pragma once
#include <algorithm>
#include <type_traits>

#include "tessera/core/ops.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/gemm.hpp"
#include "tessera/kernels/cpu/pool2x2.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tessera::detail {

#if defined(__AVX512F__)
/// One output row of a 2x2 stride-2 max-pool: out[j] = max(r0[2j], r0[2j+1], r1[2j], r1[2j+1]); masked at the end.
/// A NaN cell makes its window NaN, as the scalar loop (op::max_reduce::combine) and PyTorch.
inline void max_pool2x2_row(const float* r0, const float* r1, float* out, index_t OW) {
  // m = max(m, v) taking v when m < v or v is NaN (a NaN m is never replaced by a number)
  auto take = [](__m512 m, __m512 v) {
    return _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(m, v, _CMP_LT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
  };
  for (index_t ow = 0; ow < OW; ow += 16) {
    const pool2x2_step w(r0, r1, ow, OW);
    _mm512_mask_storeu_ps(out + ow, w.out, take(take(take(w.a, w.b), w.c), w.d));
  }
}
#elif defined(__AVX2__)
/// One output row of a 2x2 stride-2 max-pool, 8 outputs a step (the end of the row masked): as the AVX-512 version.
inline void max_pool2x2_row(const float* r0, const float* r1, float* out, index_t OW) {
  // m = max(m, v) taking v when m < v or v is NaN: _mm256_max_ps(v, m) is v > m ? v : m (m when either is NaN, so a
  // NaN m stays), then a NaN v replaces it
  auto take = [](__m256 m, __m256 v) { return _mm256_blendv_ps(_mm256_max_ps(v, m), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); };
  for (index_t ow = 0; ow < OW; ow += 8) {
    const pool2x2_step w(r0, r1, ow, OW);
    w.store_out(out, ow, take(take(take(w.a, w.b), w.c), w.d));
  }
}
#endif

/// y = pool(x) for x [N, C, H, W] (strides xs) into y [N, C, OH, OW] (strides ys) with the windows of O (known at
/// compile time: kernel, stride, padding, dilation per axis; count_include_pad); `epi(n, c, 1, 0, OH*OW)` runs on
/// each finished plane (an active epilogue needs contiguous planes). OH and OW come from the caller (ceil_mode).
template <bool Max, pool2d_options O, class T, class Epi = no_epilogue>
void cpu_pool2d(const T* x, const dims_t<4>& d, const dims_t<4>& ss, T* y, index_t OH, index_t OW, const dims_t<4>& os,
                int nthreads, const Epi& epi = {}) {
  constexpr bool is_avg = !Max;
  constexpr int KH = O.kernel.h, KW = O.kernel.w, SH = O.step().h, SW = O.step().w, PH = O.padding.h, PW = O.padding.w;
  constexpr int DH = O.dilation.h, DW = O.dilation.w;
  using A = std::conditional_t<is_avg, double, T>;
  const index_t planes = d[0] * d[1], H = d[2], W = d[3];
  if (planes * OH * OW == 0) return;
  stats::count_pass();
  const T* base = x;
  T* out = y;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nthreads) schedule(static) if (planes * OH * OW * KH * KW >= 65536)
#endif
  for (index_t pl = 0; pl < planes; ++pl) {
    const index_t n = pl / d[1], c = pl % d[1];
    const T* in = base + n * ss[0] + c * ss[1];
    T* o = out + n * os[0] + c * os[1];
#if defined(__AVX512F__) || defined(__AVX2__)
    if constexpr (std::is_same_v<T, float> && !is_avg && O.is_2x2()) {
      if (ss[3] == 1 && os[3] == 1) {  // 2x2 max of a contiguous row pair, 16 (AVX-512) or 8 (AVX2) outputs a step
        for (index_t oh = 0; oh < OH; ++oh) max_pool2x2_row(in + 2 * oh * ss[2], in + (2 * oh + 1) * ss[2], o + oh * os[2], OW);
        if constexpr (Epi::active) epi(n, c, 1, 0, OH * OW);
        continue;
      }
    }
#endif
    for (index_t oh = 0; oh < OH; ++oh) {
      const index_t h0 = oh * SH - PH;
      const bool rows_inside = h0 >= 0 && h0 + DH * (KH - 1) < H;
      for (index_t ow = 0; ow < OW; ++ow) {
        const index_t w0 = ow * SW - PW;
        A acc = is_avg ? A(0) : op::max_reduce::identity<A>();
        auto take = [&acc](T v) {
          if constexpr (is_avg) acc += A(v);
          else acc = op::max_reduce::combine(acc, v);
        };
        index_t cells = KH * KW;  // an average's divisor
        if (rows_inside && w0 >= 0 && w0 + DW * (KW - 1) < W) {  // interior window: no bounds checks, sizes known at compile time
          const T* q = in + h0 * ss[2] + w0 * ss[3];
          for (int kh = 0; kh < KH; ++kh)
            for (int kw = 0; kw < KW; ++kw) take(q[kh * DH * ss[2] + kw * DW * ss[3]]);
        } else {
          index_t real = 0;
          for (index_t kh = 0; kh < KH; ++kh) {
            const index_t h = h0 + kh * DH;
            if (h < 0 || h >= H) continue;
            for (index_t kw = 0; kw < KW; ++kw) {
              const index_t w = w0 + kw * DW;
              if (w >= 0 && w < W) take(in[h * ss[2] + w * ss[3]]), ++real;
            }
          }
          // PyTorch: the padded input bounds the window (a ceil_mode window past it counts only what it covers)
          if constexpr (is_avg)
            cells = O.count_include_pad ? (std::min<index_t>(h0 + KH, H + PH) - h0) * (std::min<index_t>(w0 + KW, W + PW) - w0) : real;
        }
        if constexpr (is_avg) o[oh * os[2] + ow * os[3]] = cells > 0 ? T(acc / A(cells)) : T(0);
        else o[oh * os[2] + ow * os[3]] = acc;
      }
    }
    if constexpr (Epi::active) epi(n, c, 1, 0, OH * OW);
  }
}

/// cpu_pool2d with square K x K windows, stride S and padding P (floor mode, padding counted in an average).
template <bool Max, int K, int S, int P, class T, class Epi = no_epilogue>
void cpu_pool2d(const T* x, const dims_t<4>& d, const dims_t<4>& ss, T* y, index_t OH, index_t OW, const dims_t<4>& os,
                int nthreads, const Epi& epi = {}) {
  cpu_pool2d<Max, pool2d_options{.kernel = K, .stride = S, .padding = P}>(x, d, ss, y, OH, OW, os, nthreads, epi);
}

}  // namespace tessera::detail
