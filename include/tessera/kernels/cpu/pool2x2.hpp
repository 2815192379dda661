// 2x2 stride-2 windows of two input rows, 16 at a time with AVX-512 (masked at the end of a row, so rows of 14 or
// 7 outputs are one step) or 8 at a time with AVX2 (full steps with plain loads and stores; the end of the row read
// with _mm256_maskload_ps and written 4, 2 and 1 floats at a time, as _mm256_maskstore_ps is slow on AMD): the four
// cells of each window deinterleaved into four vectors, and the inverse (interleaving per-cell values back into the
// two rows). Shared by max_pool2d's forward and its gradient (kernels/cpu/pool.hpp: max_pool2x2_row;
// kernels/cpu/nn.hpp: max_pool2x2_backward_row). Only the valid cells of a row are read or written; lanes past the
// end of the row hold 0. Without AVX2 this header declares nothing (the callers keep their scalar loops).
#pragma once
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>

#include <algorithm>

#include "tessera/core/shape.hpp"

namespace tessera::detail {

#if defined(__AVX512F__)

/// Windows ow .. ow+15 (fewer at the end of the row) of rows r0 and r1.
struct pool2x2_step {
  __mmask16 out, lo, hi;  ///< the valid outputs, and the valid lanes of the first and second 16 inputs of a row
  __m512 a, b, c, d;      ///< per window: row 0 left and right, row 1 left and right (0 in masked lanes)

  pool2x2_step(const float* r0, const float* r1, index_t ow, index_t OW) {
    const int cnt = int(std::min<index_t>(16, OW - ow)), in = 2 * cnt;
    out = __mmask16((1u << cnt) - 1u);
    lo = __mmask16(in >= 16 ? 0xFFFFu : (1u << in) - 1u);
    hi = __mmask16(in > 16 ? (1u << (in - 16)) - 1u : 0u);
    const __m512 v0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * ow), v1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * ow + 16);
    const __m512 w0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * ow), w1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * ow + 16);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    a = _mm512_permutex2var_ps(v0, even, v1);
    b = _mm512_permutex2var_ps(v0, odd, v1);
    c = _mm512_permutex2var_ps(w0, even, w1);
    d = _mm512_permutex2var_ps(w0, odd, w1);
  }

  /// Writes per-window values for the four cells back to the two rows (the inverse of the deinterleave).
  void store(float* d0, float* d1, index_t ow, __m512 va, __m512 vb, __m512 vc, __m512 vd) const {
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_mask_storeu_ps(d0 + 2 * ow, lo, _mm512_permutex2var_ps(va, il, vb));
    _mm512_mask_storeu_ps(d0 + 2 * ow + 16, hi, _mm512_permutex2var_ps(va, ih, vb));
    _mm512_mask_storeu_ps(d1 + 2 * ow, lo, _mm512_permutex2var_ps(vc, il, vd));
    _mm512_mask_storeu_ps(d1 + 2 * ow + 16, hi, _mm512_permutex2var_ps(vc, ih, vd));
  }
};

#else  // AVX2: 8 windows a step

/// Windows ow .. ow+7 (fewer at the end of the row) of rows r0 and r1. The per-window vectors a, b, c, d hold the
/// windows in the order 0 1 4 5 2 3 6 7 (what _mm256_shuffle_ps gives within its 128-bit halves, and what
/// _mm256_unpacklo/hi_ps interleave back without crossing them); load_out / store_out convert to and from the
/// output row's order (one 64-bit permute, its own inverse).
struct pool2x2_step {
  bool full;             ///< 8 valid outputs: plain loads and stores
  int cnt;               ///< the valid outputs (8 when full)
  __m256i out, lo, hi;   ///< the valid outputs, and the valid lanes of the first and second 8 inputs of a row
  __m256 a, b, c, d;     ///< per window: row 0 left and right, row 1 left and right (0 in masked lanes)

  /// The first n lanes set (none for n <= 0, all for n >= 8).
  static __m256i first(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  /// Windows 0 1 4 5 2 3 6 7 <-> 0 1 2 3 4 5 6 7 (either way).
  static __m256 reorder(__m256 v) { return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8)); }
  /// p[0, n) = the first n lanes of v (n <= 0: nothing; n >= 8: all), with plain stores of 8, 4, 2 and 1 floats.
  static void store_first(float* p, __m256 v, int n) {
    if (n >= 8) return _mm256_storeu_ps(p, v);
    __m128 q = _mm256_castps256_ps128(v);
    if (n >= 4) _mm_storeu_ps(p, q), q = _mm256_extractf128_ps(v, 1), p += 4, n -= 4;
    if (n >= 2) _mm_storel_pi(reinterpret_cast<__m64*>(p), q), q = _mm_movehl_ps(q, q), p += 2, n -= 2;
    if (n >= 1) _mm_store_ss(p, q);
  }

  pool2x2_step(const float* r0, const float* r1, index_t ow, index_t OW)
      : full(OW - ow >= 8), cnt(int(std::min<index_t>(8, OW - ow))) {
    const float* p0 = r0 + 2 * ow;
    const float* p1 = r1 + 2 * ow;
    __m256 v0, v1, w0, w1;
    if (full) {
      out = lo = hi = _mm256_set1_epi32(-1);
      v0 = _mm256_loadu_ps(p0), v1 = _mm256_loadu_ps(p0 + 8), w0 = _mm256_loadu_ps(p1), w1 = _mm256_loadu_ps(p1 + 8);
    } else {
      out = first(cnt), lo = first(2 * cnt), hi = first(2 * cnt - 8);
      if (cnt >= 4) v0 = _mm256_loadu_ps(p0), w0 = _mm256_loadu_ps(p1);  // the first 8 inputs all valid
      else v0 = _mm256_maskload_ps(p0, lo), w0 = _mm256_maskload_ps(p1, lo);
      v1 = _mm256_maskload_ps(p0 + 8, hi), w1 = _mm256_maskload_ps(p1 + 8, hi);
    }
    a = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
    b = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
    c = _mm256_shuffle_ps(w0, w1, _MM_SHUFFLE(2, 0, 2, 0));
    d = _mm256_shuffle_ps(w0, w1, _MM_SHUFFLE(3, 1, 3, 1));
  }

  /// Per-window values of row[ow .. ow+8) (an output-sized row: the output gradient), in the order of a, b, c, d.
  __m256 load_out(const float* row, index_t ow) const {
    return reorder(full ? _mm256_loadu_ps(row + ow) : _mm256_maskload_ps(row + ow, out));
  }
  /// Writes per-window values v (in the order of a, b, c, d) to row[ow .. ow+8), the valid outputs only.
  void store_out(float* row, index_t ow, __m256 v) const {
    if (full) _mm256_storeu_ps(row + ow, reorder(v));
    else store_first(row + ow, reorder(v), cnt);
  }

  /// Writes per-window values for the four cells back to the two rows (the inverse of the deinterleave).
  void store(float* d0, float* d1, index_t ow, __m256 va, __m256 vb, __m256 vc, __m256 vd) const {
    float* q0 = d0 + 2 * ow;
    float* q1 = d1 + 2 * ow;
    if (full) {
      _mm256_storeu_ps(q0, _mm256_unpacklo_ps(va, vb)), _mm256_storeu_ps(q0 + 8, _mm256_unpackhi_ps(va, vb));
      _mm256_storeu_ps(q1, _mm256_unpacklo_ps(vc, vd)), _mm256_storeu_ps(q1 + 8, _mm256_unpackhi_ps(vc, vd));
    } else {
      store_first(q0, _mm256_unpacklo_ps(va, vb), 2 * cnt), store_first(q0 + 8, _mm256_unpackhi_ps(va, vb), 2 * cnt - 8);
      store_first(q1, _mm256_unpacklo_ps(vc, vd), 2 * cnt), store_first(q1 + 8, _mm256_unpackhi_ps(vc, vd), 2 * cnt - 8);
    }
  }
};

#endif

}  // namespace tessera::detail
#endif
