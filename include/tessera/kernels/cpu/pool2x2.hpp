// 2x2 stride-2 windows of two input rows, 16 at a time with AVX-512 (masked at the end of a row, so rows of 14 or
// 7 outputs are one step): the four cells of each window deinterleaved into four vectors, and the inverse
// (interleaving per-cell values back into the two rows). Shared by max_pool2d's forward and its gradient.
#pragma once
#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>

#include "tessera/core/shape.hpp"

namespace tessera::detail {

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

}  // namespace tessera::detail
#endif
