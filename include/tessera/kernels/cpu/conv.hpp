// CPU conv2d (NCHW) as an implicit GEMM: per image and group, Y^T[P x Kg] = col^T[P x Cg*R*S] * W^T (P = OH*OW).
// The weights are packed once per call into the GEMM's NR-wide panels; the im2col matrix is never formed as a
// whole: each thread gathers a block of its image's pixels straight into the micro-kernel's MR-tall panels
// (a block that stays in L2), then runs the same register-blocked micro-kernel as the GEMM. The output of an
// image (all channels of a block of pixels) is finished while in cache, which is when the epilogue runs.
// One input channel with 3 x 3 taps at stride 1 (an image model's first layer) runs as a direct stencil instead on
// AVX2 / AVX-512 hosts (cpu_conv2d_direct_c1_3x3): the same results to rounding, the same epilogue contract.
#pragma once
#include <algorithm>
#include <vector>

#include "tessera/kernels/cpu/gemm.hpp"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>  // the masked moves and the direct 3 x 3 kernel below (core/simd.hpp includes it only where it uses it: GCC)
#endif

namespace tessera::detail {

/// d[0 .. N) = s[0 .. N): masked vector moves where AVX-512 has them (they never touch memory past N).
template <class T, int N>
TS_INLINE void copy_run(T* __restrict d, const T* __restrict s) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && N <= 16) {
    const __mmask16 m = __mmask16((1u << N) - 1u);
    _mm512_mask_storeu_ps(d, m, _mm512_maskz_loadu_ps(m, s));
    return;
  } else if constexpr (std::is_same_v<T, double> && N > 8 && N <= 16) {
    const __mmask8 m = __mmask8((1u << (N - 8)) - 1u);
    _mm512_storeu_pd(d, _mm512_loadu_pd(s));
    _mm512_mask_storeu_pd(d + 8, m, _mm512_maskz_loadu_pd(m, s + 8));
    return;
  }
#endif
  TS_UNROLL
  for (int i = 0; i < N; ++i) d[i] = s[i];
}

/// One MR-tall panel of im2col^T whose pixels are consecutive in the padded input: for each tap k, MR values
/// from src0 + ko[k] (hoisted into a function of restrict pointers so that the loop keeps them in registers).
template <class T, int MR>
void gather_panel_run(T* __restrict d, const T* __restrict src0, const index_t* __restrict ko, index_t kc) {
  for (index_t k = 0; k < kc; ++k) copy_run<T, MR>(d + k * MR, src0 + ko[k]);
}
/// The same for pixels at any offsets (stride > 1, or a panel that wraps to the next output row).
template <class T, int MR>
void gather_panel(T* __restrict d, const T* __restrict base, const index_t* __restrict off, const index_t* __restrict ko,
                  index_t kc) {
  for (index_t k = 0; k < kc; ++k) {
    const T* src = base + ko[k];
    TS_UNROLL
    for (int i = 0; i < MR; ++i) d[k * MR + i] = src[off[i]];
  }
}

/// The same for a panel of two runs of consecutive pixels (a panel that wraps to the next output row at stride 1:
/// the 7 x 7 maps): pixels [0, n0) from base + o0 and [n0, MR) from base + o1, for each tap k. AVX-512 floats: two
/// masked moves a tap instead of MR scalar ones.
template <class T, int MR>
void gather_panel_two_runs(T* __restrict d, const T* __restrict base, index_t o0, index_t o1, int n0, const index_t* __restrict ko,
                           index_t kc) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && MR <= 16) {
    const __mmask16 m0 = __mmask16((1u << n0) - 1u), m1 = __mmask16((1u << (MR - n0)) - 1u);
    for (index_t k = 0; k < kc; ++k) {
      const T* src = base + ko[k];
      _mm512_mask_storeu_ps(d + k * MR, m0, _mm512_maskz_loadu_ps(m0, src + o0));
      _mm512_mask_storeu_ps(d + k * MR + n0, m1, _mm512_maskz_loadu_ps(m1, src + o1));
    }
    return;
  }
#endif
  for (index_t k = 0; k < kc; ++k) {
    const T* src = base + ko[k];
    for (int i = 0; i < n0; ++i) d[k * MR + i] = src[o0 + i];
    for (int i = n0; i < MR; ++i) d[k * MR + i] = src[o1 + i - n0];
  }
}

#if defined(__AVX512F__)
/// r[i][j] -> r[j][i] for a 16 x 16 block of floats in registers (64 shuffles).
TS_INLINE void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  TS_UNROLL
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  TS_UNROLL
  for (int i = 0; i < 16; i += 4) {  // r[i + b]: rows i..i+3 of columns 4L + b (L the 128-bit lane)
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  TS_UNROLL
  for (int b = 0; b < 4; ++b) {
    const __m512 v0 = _mm512_shuffle_f32x4(r[b], r[4 + b], 0x88), v1 = _mm512_shuffle_f32x4(r[b], r[4 + b], 0xDD);
    const __m512 v2 = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], 0x88), v3 = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], 0xDD);
    t[b] = _mm512_shuffle_f32x4(v0, v2, 0x88);       // column b
    t[4 + b] = _mm512_shuffle_f32x4(v1, v3, 0x88);   // column 4 + b
    t[8 + b] = _mm512_shuffle_f32x4(v0, v2, 0xDD);   // column 8 + b
    t[12 + b] = _mm512_shuffle_f32x4(v1, v3, 0xDD);  // column 12 + b
  }
  TS_UNROLL
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}
#endif

/// y[j*ld + i] (+)= tile[i*NR + j] for i < rows, j < cols: a micro-tile of (pixel, channel) written to channel
/// planes. With AVX-512 floats, 16 x 16 blocks are transposed in registers and stored with masks.
template <class T, int MR, int NR>
TS_INLINE void store_transposed(const T* __restrict tile, T* __restrict y, index_t ld, index_t rows, index_t cols, bool acc) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && MR <= 16 && NR % 16 == 0) {
    const __mmask16 m = __mmask16((1u << rows) - 1u);
    for (int h = 0; h * 16 < cols; ++h) {
      __m512 r[16];
      TS_UNROLL
      for (int i = 0; i < 16; ++i) r[i] = i < MR ? _mm512_load_ps(tile + i * NR + 16 * h) : _mm512_setzero_ps();
      transpose16x16(r);
      const int jn = std::min<int>(16, int(cols) - 16 * h);
      T* yh = y + 16 * h * ld;
      TS_UNROLL
      for (int j = 0; j < 16; ++j) {
        if (j >= jn) break;
        __m512 v = r[j];
        if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, yh + j * ld));
        _mm512_mask_storeu_ps(yh + j * ld, m, v);
      }
    }
    return;
  }
#endif
  for (index_t j = 0; j < cols; ++j)
    for (index_t i = 0; i < rows; ++i) y[j * ld + i] = acc ? y[j * ld + i] + tile[i * NR + j] : tile[i * NR + j];
}

/// out[p*W + i] = rows[i][p] for i < nrows (zero up to W), p < n: a block of W rows (each contiguous over p) stored
/// pixel-major, as the micro-kernel's panels want. AVX-512 floats: 16 pixels a step through a register transpose.
template <class T, int W>
TS_INLINE void pack_transposed(const T* const* rows, int nrows, index_t n, T* __restrict out) {
  index_t p = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && W <= 16) {
    constexpr __mmask16 wm = __mmask16((1u << W) - 1u);
    for (; p < n; p += 16) {
      const int cnt = int(std::min<index_t>(16, n - p));
      const __mmask16 m = __mmask16((1u << cnt) - 1u);
      __m512 r[16];
      TS_UNROLL
      for (int i = 0; i < 16; ++i) r[i] = i < nrows ? _mm512_maskz_loadu_ps(m, rows[i] + p) : _mm512_setzero_ps();
      transpose16x16(r);
      TS_UNROLL
      for (int t = 0; t < 16; ++t)
        if (t < cnt) _mm512_mask_storeu_ps(out + (p + t) * W, wm, r[t]);
    }
    return;
  } else if constexpr (std::is_same_v<T, float> && W % 16 == 0) {
    for (; p < n; p += 16) {
      const int cnt = int(std::min<index_t>(16, n - p));
      const __mmask16 m = __mmask16((1u << cnt) - 1u);
      for (int h = 0; h < W / 16; ++h) {
        __m512 r[16];
        TS_UNROLL
        for (int i = 0; i < 16; ++i) r[i] = 16 * h + i < nrows ? _mm512_maskz_loadu_ps(m, rows[16 * h + i] + p) : _mm512_setzero_ps();
        transpose16x16(r);
        TS_UNROLL
        for (int t = 0; t < 16; ++t)
          if (t < cnt) _mm512_storeu_ps(out + (p + t) * W + 16 * h, r[t]);
      }
    }
    return;
  }
#endif
  for (; p < n; ++p)
    for (int i = 0; i < W; ++i) out[p * W + i] = i < nrows ? rows[i][p] : T(0);
}

/// The GEMM micro-kernel with its A panel read in place: for tap k, the MR pixels' values are a0[ko[k] + i]
/// (a run of pixels on one output row, contiguous in the padded input), so that panel needs no packing.
/// Writes the MR x NR tile to c (row stride NR).
template <class T>
TS_INLINE void micro_kernel_taps(index_t kc, const T* __restrict a0, const index_t* __restrict ko, const T* __restrict b, T* c) {
  micro_tile<T>(kc, taps_a<T>{a0, ko}, b, gemm_blocking<T>::nr, c, gemm_blocking<T>::nr, false);
}

/// Per-thread scratch memory kept between calls (Slot tells the buffers of one call apart); not zeroed.
template <class T, int Slot = 0>
struct conv_scratch {
  T* p = nullptr;
  std::size_t size = 0;
  ~conv_scratch() { std::free(p); }
  static conv_scratch& of_this_thread() {
    thread_local conv_scratch s;
    return s;
  }
  static T* get(std::size_t n) {
    auto& s = of_this_thread();
    return pack_buffers<T>::grow(s.p, s.size, n);
  }
};

/// The input with its zero border as a contiguous [N][C][H+2*pad.h][W+2*pad.w] array (in the calling thread's pack
/// buffer `.a`), or x itself when there is no padding and it is contiguous.
template <class T>
const T* padded_input(const conv_geometry& g, const T* x, const index_t* xs, pack_buffers<T>& mine, int nt) {
  const index_t ph = g.pad.h, pw = g.pad.w, Hp = g.H + 2 * ph, Wp = g.W + 2 * pw, plane = Hp * Wp;
  const bool contiguous = xs[3] == 1 && xs[2] == g.W && xs[1] == g.H * g.W && xs[0] == g.C * g.H * g.W;
  if (ph == 0 && pw == 0 && contiguous) return x;
  T* buf = pack_buffers<T>::grow(mine.a, mine.a_size, std::size_t(g.N * g.C * plane));
  const index_t planes = g.N * g.C;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes * plane >= 65536)
#endif
  for (index_t q = 0; q < planes; ++q) {
    const index_t n = q / g.C, c = q % g.C;
    const T* src = x + n * xs[0] + c * xs[1];
    T* dst = buf + q * plane;
    std::fill(dst, dst + ph * Wp, T(0));
    for (index_t h = 0; h < g.H; ++h) {
      T* row = dst + (h + ph) * Wp;
      std::fill(row, row + pw, T(0));
      if (xs[3] == 1) std::copy(src + h * xs[2], src + h * xs[2] + g.W, row + pw);
      else
        for (index_t q2 = 0; q2 < g.W; ++q2) row[pw + q2] = src[h * xs[2] + q2 * xs[3]];
      std::fill(row + pw + g.W, row + Wp, T(0));
    }
    std::fill(dst + (g.H + ph) * Wp, dst + plane, T(0));
  }
  return buf;
}

#if defined(__AVX2__) || defined(__AVX512F__)
/// Does the direct kernel below take this convolution? One input channel, 3 x 3 taps, stride 1, no dilation: the
/// first layer of image models (SimpleCNN's conv 1 -> 32 on 28 x 28), where im2col + GEMM has 9 taps of depth and
/// spends its time packing and storing tiles rather than multiplying.
inline bool conv_direct_c1_3x3_fits(const conv_geometry& g) {
  return g.groups == 1 && g.C == 1 && g.R == 3 && g.S == 3 && g.stride == hw{1} && g.dilation == hw{1};
}

/// conv2d for conv_direct_c1_3x3_fits as a stencil vectorised over output columns (8 a step): each thread copies
/// the input rows its block of output rows reads, with their zero border, into a row buffer whose rows are whole
/// 8-wide steps long; for each step the 9 shifted input vectors stay in registers while every output channel is
/// summed from them (9 FMAs a channel, the weights broadcast; the other order, a channel's weights in registers and
/// its plane written in order, measured 1.2x slower). Work items: images, or bands of output rows when
/// there are fewer images than threads. The epilogue runs on each finished band (all channels), as cpu_conv2d's.
template <class Epi>
void cpu_conv2d_direct_c1_3x3(const conv_geometry& g, const float* x, const index_t* xs, const float* w, const index_t* ws,
                              float* y, index_t ys0, index_t ys1, int nthreads, const Epi& epi) {
  const index_t N = g.N, K = g.K, OH = g.OH, OW = g.OW, H = g.H, W = g.W, ph = g.pad.h, pw = g.pad.w;
  const index_t Wq = (OW + 7) / 8 * 8 + 2;  // a buffer row: every 8-wide step reads columns [ow, ow + 10)
  std::vector<float> wt(static_cast<std::size_t>(9 * K));  // [k][tap]
  for (index_t k = 0; k < K; ++k)
    for (index_t t = 0; t < 9; ++t) wt[std::size_t(k * 9 + t)] = w[k * ws[0] + (t / 3) * ws[2] + (t % 3) * ws[3]];
  const double flops = 2.0 * double(N) * double(K) * double(OH * OW) * 9.0;
  const int nt = flops < 2e6 ? 1 : std::max(1, nthreads);
  const index_t bands = nt > N ? std::min<index_t>(OH, (nt + N - 1) / N) : 1, items = N * bands;
  const float* const wk0 = wt.data();

  auto run_item = [&](index_t item) {
    const index_t n = item / bands, b = item % bands, oh0 = OH * b / bands, oh1 = OH * (b + 1) / bands;
    if (oh0 == oh1) return;
    const index_t rows = oh1 - oh0 + 2;
    float* const buf = conv_scratch<float, 7>::get(std::size_t(rows * Wq));
    for (index_t r = 0; r < rows; ++r) {  // buffer row r is padded input row oh0 + r (input row oh0 + r - ph)
      float* row = buf + r * Wq;
      std::fill(row, row + Wq, 0.0f);
      const index_t ih = oh0 + r - ph;
      if (ih < 0 || ih >= H) continue;
      const float* src = x + n * xs[0] + ih * xs[2];
      const index_t iw0 = std::max<index_t>(0, -pw), iw1 = std::min<index_t>(W, Wq - pw);
      for (index_t iw = iw0; iw < iw1; ++iw) row[iw + pw] = src[iw * xs[3]];
    }
    float* const yn = y + n * ys0;
    for (index_t oh = oh0; oh < oh1; ++oh) {
      const float* r0 = buf + (oh - oh0) * Wq;
      const float* r1 = r0 + Wq;
      const float* r2 = r1 + Wq;
      for (index_t ow = 0; ow < OW; ow += 8) {
        const __m256 v0 = _mm256_loadu_ps(r0 + ow), v1 = _mm256_loadu_ps(r0 + ow + 1), v2 = _mm256_loadu_ps(r0 + ow + 2);
        const __m256 v3 = _mm256_loadu_ps(r1 + ow), v4 = _mm256_loadu_ps(r1 + ow + 1), v5 = _mm256_loadu_ps(r1 + ow + 2);
        const __m256 v6 = _mm256_loadu_ps(r2 + ow), v7 = _mm256_loadu_ps(r2 + ow + 1), v8 = _mm256_loadu_ps(r2 + ow + 2);
        const index_t cnt = std::min<index_t>(8, OW - ow);
        float* dst = yn + oh * OW + ow;
        for (index_t k = 0; k < K; ++k, dst += ys1) {
          const float* wk = wk0 + k * 9;
          __m256 a = _mm256_mul_ps(_mm256_broadcast_ss(wk), v0);
          __m256 c = _mm256_mul_ps(_mm256_broadcast_ss(wk + 1), v1);
          a = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 2), v2, a);
          c = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 3), v3, c);
          a = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 4), v4, a);
          c = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 5), v5, c);
          a = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 6), v6, a);
          c = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 7), v7, c);
          a = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 8), v8, a);
          a = _mm256_add_ps(a, c);
          if (cnt == 8) {
            _mm256_storeu_ps(dst, a);
          } else {  // 4, 2 and 1 floats at a time (a round trip through memory measured 1.75x slower in all)
            __m128 part = _mm256_castps256_ps128(a);
            index_t i = 0;
            if (cnt >= 4) {
              _mm_storeu_ps(dst, part);
              part = _mm256_extractf128_ps(a, 1);
              i = 4;
            }
            if (cnt - i >= 2) {
              _mm_storel_pi(reinterpret_cast<__m64*>(dst + i), part);
              part = _mm_movehl_ps(part, part);
              i += 2;
            }
            if (cnt - i >= 1) _mm_store_ss(dst + i, part);
          }
        }
      }
    }
    if constexpr (Epi::active) epi(n, 0, K, oh0 * OW, (oh1 - oh0) * OW);  // this band is final and still in cache
  };
  if (nt > 1 && items > 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(std::min<index_t>(nt, items)) schedule(static)
#endif
    for (index_t it = 0; it < items; ++it) run_item(it);
  } else {
    for (index_t it = 0; it < items; ++it) run_item(it);
  }
}
#endif

/// y = conv2d(x, w) with y's (h, w) plane contiguous: element (n, k, p) at y[n*ys0 + k*ys1 + p], p = oh*OW + ow.
/// An active epilogue is called as epi(n, k0, krows, p0, pcols) on each finished block of the output.
///
/// The product is arranged with output pixels as the micro-kernel's MR rows and output channels as its NR
/// columns (Y^T = col^T * W^T per image and group): channel counts are usually multiples of the vector width and
/// plane sizes of MR (14 x 14, 28 x 28), so no lane is wasted. The input is first copied once with its zero
/// border (skipped when there is no padding and it is contiguous); then every im2col value is
/// xp[pixel offset + k offset], and a panel of pixels on one output row is a contiguous copy for each k.
template <class T, class Epi = no_epilogue>
void cpu_conv2d(const conv_geometry& g, const T* x, const index_t* xs, const T* w, const index_t* ws, T* y, index_t ys0,
                index_t ys1, int nthreads, const Epi& epi = {}) {
  using BL = gemm_blocking<T>;
  constexpr int MR = BL::mr, NR = BL::nr;
  const index_t P = g.OH * g.OW;
  if (g.N == 0 || g.K == 0 || P == 0) return;
  stats::count_pass();
#if defined(__AVX2__) || defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    if (conv_direct_c1_3x3_fits(g)) return cpu_conv2d_direct_c1_3x3(g, x, xs, w, ws, y, ys0, ys1, nthreads, epi);
#endif
  const index_t Cg = g.C / g.groups, Kg = g.K / g.groups, RS = g.R * g.S, Kd = Cg * RS;
  // K blocks of equal size, at most 512 taps (576 taps: 288 + 288, not 512 + 64). The GEMM's KC went from 512 to 1024
  // on measurements of GEMMs; convolutions with more than 512 taps were not measured again, so they keep 512.
  const index_t KC = gemm_kc<T>(Kd, 512);
  if (Kd == 0) {  // no input channels: the sum is empty
    for (index_t n = 0; n < g.N; ++n)
      for (index_t k = 0; k < g.K; ++k) std::fill(y + n * ys0 + k * ys1, y + n * ys0 + k * ys1 + P, T(0));
    if constexpr (Epi::active)
      for (index_t n = 0; n < g.N; ++n) epi(n, 0, g.K, 0, P);
    return;
  }
  const double flops = 2.0 * double(g.N) * double(g.K) * double(P) * double(Kd);
  const int nt = flops < 2e6 ? 1 : std::max(1, nthreads);

  // weights -> NR-wide panels of W^T; block (grp, pc) at wpk + grp*Kp*Kd + Kp*pc, its panel jr at + jr*kc
  const index_t Kp = (Kg + NR - 1) / NR * NR;
  auto& mine = pack_buffers<T>::of_this_thread();
  T* const wpk = pack_buffers<T>::grow(mine.b, mine.b_size, std::size_t(g.groups * Kp * Kd));
  for (index_t grp = 0; grp < g.groups; ++grp)
    for (index_t pc = 0; pc < Kd; pc += KC) {
      const index_t kc = std::min<index_t>(KC, Kd - pc);
      T* out = wpk + grp * Kp * Kd + Kp * pc;
      for (index_t jr = 0; jr < Kp; jr += NR)
        for (index_t k = pc; k < pc + kc; ++k) {
          const index_t ci = k / RS, r = k % RS, kh = r / g.S, kw = r % g.S;
          for (index_t j = 0; j < NR; ++j) {
            const index_t co = jr + j;
            *out++ = co < Kg ? w[(grp * Kg + co) * ws[0] + ci * ws[1] + kh * ws[2] + kw * ws[3]] : T(0);
          }
        }
    }

  // the input with its zero border, contiguous: [N][C][Hp][Wp]
  const index_t Hp = g.H + 2 * index_t(g.pad.h), Wp = g.W + 2 * index_t(g.pad.w), plane = Hp * Wp;
  const T* xp = padded_input(g, x, xs, mine, nt);
  // k -> offset of its (channel, kh, kw) tap in the padded input
  std::vector<index_t> koff(static_cast<std::size_t>(Kd));
  for (index_t k = 0; k < Kd; ++k) {
    const index_t ci = k / RS, r = k % RS, kh = r / g.S, kw = r % g.S;
    koff[std::size_t(k)] = ci * plane + kh * g.dilation.h * Wp + kw * g.dilation.w;
  }

  // pixels per work item: an A block of at most ~256 KiB, fewer when the images alone cannot feed the threads
  const index_t kcmax = std::min<index_t>(KC, Kd);
  index_t ncols = std::max<index_t>(MR, index_t(256 * 1024 / (kcmax * index_t(sizeof(T)))) / MR * MR);
  ncols = std::min(ncols, (P + MR - 1) / MR * MR);
  if (g.N < nt) {
    const index_t per = (g.N * P + nt - 1) / nt;
    ncols = std::min(ncols, std::max<index_t>(MR, (per + MR - 1) / MR * MR));
  }
  const index_t chunks = (P + ncols - 1) / ncols, items = g.N * chunks;
  const index_t* const ko = koff.data();

  auto run_item = [&](index_t item) {
    // each thread's own im2col block (the calling thread's pack buffers hold the weights and the padded input)
    auto& scratch = conv_scratch<T>::of_this_thread();
    T* const apk = pack_buffers<T>::grow(scratch.p, scratch.size, std::size_t(kcmax * ncols));
    alignas(64) T tile[MR * NR];
    index_t off[MR];
    thread_local std::vector<const T*> direct;  // per panel: where the micro-kernel reads it in place, or null
    direct.assign(std::size_t(ncols / MR + 1), nullptr);
    const index_t n = item / chunks, j0 = (item % chunks) * ncols, np = std::min(ncols, P - j0);
    for (index_t grp = 0; grp < g.groups; ++grp) {
      const T* base = xp + (n * g.C + grp * Cg) * plane;
      for (index_t pc = 0; pc < Kd; pc += KC) {
        const index_t kc = std::min<index_t>(KC, Kd - pc);
        // im2col^T of pixels [j0, j0+np) x taps [pc, pc+kc) into MR-tall panels, k-major inside a panel
        for (index_t ir = 0; ir < np; ir += MR) {
          const index_t rows = std::min<index_t>(MR, np - ir);
          for (index_t i = 0; i < MR; ++i) {  // rows past the end repeat the last pixel (their results are dropped)
            const index_t p = j0 + ir + std::min<index_t>(i, rows - 1), oh = p / g.OW, ow = p - oh * g.OW;
            off[i] = oh * g.stride.h * Wp + ow * g.stride.w;
          }
          // the panel's runs of consecutive pixels: one is read in place by the micro-kernel; two are copied run by
          // run into apk; other panels (stride > 1) are gathered pixel by pixel
          int runs = 1, split = MR;
          for (int i = 1; i < MR; ++i)
            if (off[i] != off[i - 1] + 1) {
              if (runs == 1) split = i;
              ++runs;
            }
          direct[ir / MR] = runs == 1 ? base + off[0] : nullptr;
          if (runs == 2)
            gather_panel_two_runs<T, MR>(apk + ir * kc, base, off[0], off[split], split, ko + pc, kc);
          else if (runs > 1) gather_panel<T, MR>(apk + ir * kc, base, off, ko + pc, kc);
        }
        const T* wblk = wpk + grp * Kp * Kd + Kp * pc;
        for (index_t jr = 0; jr < Kg; jr += NR) {
          const index_t cols = std::min<index_t>(NR, Kg - jr);
          for (index_t ir = 0; ir < np; ir += MR) {
            const index_t rows = std::min<index_t>(MR, np - ir);
            if (const T* a0 = direct[ir / MR]) micro_kernel_taps<T>(kc, a0, ko + pc, wblk + jr * kc, tile);
            else micro_kernel<T>(kc, apk + ir * kc, wblk + jr * kc, tile, NR, false);
            T* yc = y + n * ys0 + (grp * Kg + jr) * ys1 + j0 + ir;  // the tile is (pixel, channel): store it transposed
            store_transposed<T, MR, NR>(tile, yc, ys1, rows, cols, pc > 0);
          }
        }
      }
    }
    if constexpr (Epi::active) epi(n, 0, g.K, j0, np);  // this block of the output is final and still in cache
  };

  if (nt > 1 && items > 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(std::min<index_t>(nt, items)) schedule(dynamic, 1)
#endif
    for (index_t it = 0; it < items; ++it) run_item(it);
  } else {
    for (index_t it = 0; it < items; ++it) run_item(it);
  }
}

/// dx = the gradient of conv2d's input for output gradient dy (all NCHW and contiguous; dx is overwritten).
/// Stride 1 is again a convolution: of dy with the weights flipped in space and transposed in channels, padded
/// by dilation*(R-1) - pad on each axis, so it runs on the fast kernel above. Other strides form each image's column matrix
/// W^T * dy with the GEMM and add it back into the input positions it came from (col2im).
template <class T>
void cpu_conv2d_backward_data(const conv_geometry& g, const T* dy, const T* w, T* dx, int nthreads) {
  const index_t Cg = g.C / g.groups, Kg = g.K / g.groups, RS = g.R * g.S, P = g.OH * g.OW;
  const index_t pad2h = g.dilation.h * (g.R - 1) - g.pad.h, pad2w = g.dilation.w * (g.S - 1) - g.pad.w;
  if (g.stride == hw{1} && pad2h >= 0 && pad2w >= 0) {
    std::vector<T> wt(static_cast<std::size_t>(g.K * Cg * RS));  // [C][Kg][R][S], flipped
    for (index_t grp = 0; grp < g.groups; ++grp)
      for (index_t k = 0; k < Kg; ++k)
        for (index_t c = 0; c < Cg; ++c)
          for (index_t r = 0; r < g.R; ++r)
            for (index_t q = 0; q < g.S; ++q)
              wt[std::size_t((((grp * Cg + c) * Kg + k) * g.R + (g.R - 1 - r)) * g.S + (g.S - 1 - q))] =
                  w[(((grp * Kg + k) * Cg + c) * g.R + r) * g.S + q];
    const conv_geometry t{g.N, g.K, g.OH, g.OW, g.C, g.R, g.S, g.H, g.W, hw{1}, hw{int(pad2h), int(pad2w)}, g.dilation, g.groups};
    const index_t ys[4] = {g.K * P, P, g.OW, 1};
    const index_t ws[4] = {Kg * RS, RS, g.S, 1};
    cpu_conv2d<T>(t, dy, ys, wt.data(), ws, dx, g.C * g.H * g.W, g.H * g.W, nthreads);
    return;
  }
  const index_t Kd = Cg * RS;
  const int nt = std::max(1, nthreads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && g.N > 1)
#endif
  for (index_t n = 0; n < g.N; ++n) {
    std::vector<T> col(static_cast<std::size_t>(Kd * P));
    T* dxn = dx + n * g.C * g.H * g.W;
    std::fill(dxn, dxn + g.C * g.H * g.W, T(0));
    for (index_t grp = 0; grp < g.groups; ++grp) {
      // col[Kd x P] = W_g^T [Kd x Kg] * dy_n,g [Kg x P]
      cpu_gemm<T>(Kd, P, Kg, {w + grp * Kg * Kd, 1, Kd}, {dy + (n * g.K + grp * Kg) * P, P, 1}, col.data(), P, false,
                  g.N > 1 ? 1 : nt);
      for (index_t kd = 0; kd < Kd; ++kd) {
        const index_t c = grp * Cg + kd / RS, r = (kd % RS) / g.S, q = kd % g.S;
        T* plane = dxn + c * g.H * g.W;
        const T* cr = col.data() + kd * P;
        for (index_t oh = 0; oh < g.OH; ++oh) {
          const index_t ih = oh * g.stride.h - g.pad.h + r * g.dilation.h;
          if (ih < 0 || ih >= g.H) continue;
          for (index_t ow = 0; ow < g.OW; ++ow) {
            const index_t iw = ow * g.stride.w - g.pad.w + q * g.dilation.w;
            if (iw >= 0 && iw < g.W) plane[ih * g.W + iw] += cr[oh * g.OW + ow];
          }
        }
      }
    }
  }
}

/// db[k] += the sum of dy over images and pixels (contiguous dy), for each output channel k: channels shared among
/// the threads, each plane summed in float vectors and the planes' sums in double.
template <class T>
void cpu_conv2d_backward_bias(const conv_geometry& g, const T* dy, T* db, int nthreads = 1) {
  const index_t P = g.OH * g.OW;
  [[maybe_unused]] const int nt = g.N * g.K * P >= 32768 ? int(std::max<index_t>(1, std::min<index_t>(std::max(1, nthreads), g.K))) : 1;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t k = 0; k < g.K; ++k) {
    double s = 0;
    for (index_t n = 0; n < g.N; ++n) {
      const T* __restrict r = dy + (n * g.K + k) * P;
      T t = 0;
#if defined(_OPENMP)
#pragma omp simd reduction(+ : t)
#endif
      for (index_t p = 0; p < P; ++p) t += r[p];
      s += double(t);
    }
    db[k] += T(s);
  }
}

/// dw (+)= the gradient of conv2d's weights, db += the bias gradient (sum of dy over images and pixels). x, dy
/// contiguous. dw^T [C*R*S x K] = sum over images of col_n [C*R*S x P] * dy_n^T [P x K], without forming col:
/// each thread takes whole images and packs, per block of pixels, the taps (from the padded input) and dy into
/// the micro-kernel's panels (16 x 16 register transposes), accumulating into its own partial dw; the partials
/// are added at the end (no barrier inside).
template <class T>
void cpu_conv2d_backward_weight(const conv_geometry& g, const T* x, const T* dy, T* dw, T* db, bool accumulate, int nthreads) {
  using BL = gemm_blocking<T>;
  constexpr int MR = BL::mr, NR = BL::nr;
  const index_t Cg = g.C / g.groups, Kg = g.K / g.groups, RS = g.R * g.S, Kd = Cg * RS, P = g.OH * g.OW;
  if (db) cpu_conv2d_backward_bias(g, dy, db, nthreads);
  if (!accumulate) std::fill(dw, dw + g.K * Kd, T(0));
  if (g.N == 0 || P == 0 || Kd == 0 || Kg == 0) return;
  stats::count_pass();
  const int nt = int(std::max<index_t>(1, std::min<index_t>(std::max(1, nthreads), g.N)));
  auto& mine = pack_buffers<T>::of_this_thread();
  const index_t xs[4] = {g.C * g.H * g.W, g.H * g.W, g.W, 1};
  const T* xp = padded_input(g, x, xs, mine, nt);
  const index_t Wp = g.W + 2 * index_t(g.pad.w), plane = (g.H + 2 * index_t(g.pad.h)) * Wp;
  std::vector<index_t> koff(static_cast<std::size_t>(Kd + MR));
  for (index_t k = 0; k < Kd; ++k) {
    const index_t ci = k / RS, r = k % RS, kh = r / g.S, kw = r % g.S;
    koff[std::size_t(k)] = ci * plane + kh * g.dilation.h * Wp + kw * g.dilation.w;
  }
  const index_t Mp = (Kd + MR - 1) / MR * MR, Kp = (Kg + NR - 1) / NR * NR;
  const index_t kcp = std::min<index_t>(P, 384);  // pixels per block
  const index_t csize = g.groups * Mp * Kp;
  // one partial dw per thread, all in the calling thread's scratch: a nested team's threads (and their thread-local
  // memory) may be gone when the partials are added
  T* const parts = conv_scratch<T, 4>::get(std::size_t(nt) * std::size_t(csize));
  int team = 1;  // the team OpenMP gave: fewer than nt with dynamic teams, a thread limit or inside another team

  // thread me of a team of nteam: its share of the images into partial me
  auto work = [&](int me, int nteam) {
    T* const cpart = parts + std::size_t(me) * std::size_t(csize);
    T* const apk = conv_scratch<T, 5>::get(std::size_t(Mp * kcp));
    T* const bpk = conv_scratch<T, 6>::get(std::size_t(Kp * kcp));
    std::fill(cpart, cpart + csize, T(0));
    std::vector<index_t> off(static_cast<std::size_t>(kcp));
    const T* rows[NR > MR ? NR : MR];
    const index_t n0 = g.N * me / nteam, n1 = g.N * (me + 1) / nteam;
    for (index_t n = n0; n < n1; ++n)
      for (index_t grp = 0; grp < g.groups; ++grp) {
        const T* base = xp + (n * g.C + grp * Cg) * plane;
        T* cg = cpart + grp * Mp * Kp;
        for (index_t p0 = 0; p0 < P; p0 += kcp) {
          const index_t kc = std::min(kcp, P - p0);
          for (index_t t = 0; t < kc; ++t) {
            const index_t p = p0 + t, oh = p / g.OW, ow = p - oh * g.OW;
            off[std::size_t(t)] = oh * g.stride.h * Wp + ow * g.stride.w;
          }
          // taps: panel ir holds taps ir .. ir+MR of every pixel, pixel-major
          for (index_t ir = 0; ir < Mp; ir += MR) {
            const int ntaps = int(std::min<index_t>(MR, Kd - ir));
            T* a = apk + ir * kc;
            if (g.stride.w == 1) {
              for (index_t t0 = 0; t0 < kc;) {  // a run of pixels on one output row is contiguous in the input
                const index_t ow = (p0 + t0) % g.OW, t1 = std::min(kc, t0 + (g.OW - ow));
                for (int i = 0; i < ntaps; ++i) rows[i] = base + off[std::size_t(t0)] + koff[std::size_t(ir + i)];
                pack_transposed<T, MR>(rows, ntaps, t1 - t0, a + t0 * MR);
                t0 = t1;
              }
            } else {
              for (index_t t = 0; t < kc; ++t)
                TS_UNROLL
                for (int i = 0; i < MR; ++i) a[t * MR + i] = i < ntaps ? base[off[std::size_t(t)] + koff[std::size_t(ir + i)]] : T(0);
            }
          }
          // dy: panel jr holds channels jr .. jr+NR of every pixel, pixel-major
          for (index_t jr = 0; jr < Kp; jr += NR) {
            const int nch = int(std::min<index_t>(NR, Kg - jr));
            for (int j = 0; j < nch; ++j) rows[j] = dy + (n * g.K + grp * Kg + jr + j) * P + p0;
            pack_transposed<T, NR>(rows, nch, kc, bpk + jr * kc);
          }
          for (index_t jr = 0; jr < Kp; jr += NR)
            for (index_t ir = 0; ir < Mp; ir += MR) micro_kernel<T>(kc, apk + ir * kc, bpk + jr * kc, cg + ir * Kp + jr, Kp, true);
        }
      }
  };
  if (nt > 1) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
    {
      const int me = omp_get_thread_num(), nteam = omp_get_num_threads();
      if (me == 0) team = nteam;
      work(me, nteam);
    }
#else
    work(0, 1);
#endif
  } else {
    work(0, 1);
  }
  for (index_t grp = 0; grp < g.groups; ++grp)
    for (index_t k = 0; k < Kg; ++k)
      for (index_t kd = 0; kd < Kd; ++kd) {
        T s = 0;
        for (int t = 0; t < team; ++t) s += parts[std::size_t(t) * std::size_t(csize) + std::size_t(grp * Mp * Kp + kd * Kp + k)];
        dw[(grp * Kg + k) * Kd + kd] += s;
      }
}

}  // namespace tessera::detail
