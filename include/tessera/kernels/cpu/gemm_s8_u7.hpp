// int8 GEMM, the avx2_u7 path's kernels (kernels/cpu/gemm_s8.hpp's driver calls them; the layouts are described there):
// for uint8 A whose values are all <= 127 (7-bit activations: PyTorch's reduce_range) on AVX2 CPUs.
//   detail::s8_multiply_u7   a block of packed A groups times a range of packed B panels, over a range of K
//   detail::s8_kernel_u7     its MR x 16 register tile: vpmaddubsw + vpmaddwd with ones + vpaddd
//   detail::s8_below_128     the check of a packed block of A (one OR pass)
//   detail::s8::u7_blocks / u7_checks   counters of blocks multiplied and checked (tests see which path ran)
// Guarantees: exact (|a0 b0 + a1 b1| <= 127 * 128 * 2 = 32512 fits int16, the rest is int32 arithmetic) for A <= 127;
// a value above 127 in A would saturate, which is why the driver takes this path only when the caller states A <= 127
// (int8_a_below_128) or the check finds no such value.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "tessera/kernels/cpu/gemm_s8_pack.hpp"

namespace tessera {
namespace detail {

namespace s8 {
/// How many blocks the avx2_u7 kernels have multiplied, and how many blocks of A were checked for it (tests read
/// them to see which path ran and whether A was stated or checked).
inline std::atomic<long>& u7_blocks() {
  static std::atomic<long> n{0};
  return n;
}
inline std::atomic<long>& u7_checks() {
  static std::atomic<long> n{0};
  return n;
}
}  // namespace s8

#if TESSERA_INT8_X86
/// The avx2_u7 path, for uint8 A whose values are all <= 127: vpmaddubsw multiplies a row's broadcast quad of A by a
/// B quad row (16 columns x 4 k: two registers loaded straight from the packed panel) into int16 pair sums, which
/// cannot saturate (|a0 b0 + a1 b1| <= 127 * 128 * 2 = 32512 < 32767); vpmaddwd with ones adds each column's two pairs
/// into int32 and vpaddd accumulates: 3 operations per 8 columns x 4 k (the avx2 path: 4), on the packed operands as
/// they are (no widening pass). An MR x 16 register tile.
/// C[rows x cols] (rows <= MR, cols <= 16) (+)= an MR x 16 int32 register tile (two registers a row), the end of the
/// avx2 and avx2_u7 kernels. Through a local tile: with stores of the accumulators straight to C under run-time
/// conditions, GCC kept them in memory across the kernels' loops.
template <int MR>
__attribute__((target("avx2"), always_inline)) inline void s8_store_tile_avx2(const __m256i (&acc)[MR][2], int rows, int cols,
                                                                              std::int32_t* t, index_t ldt, bool load_c) {
  alignas(32) std::int32_t tile[MR][16];
  TS_UNROLL
  for (int i = 0; i < MR; ++i) {
    _mm256_store_si256((__m256i*)tile[i], acc[i][0]);
    _mm256_store_si256((__m256i*)(tile[i] + 8), acc[i][1]);
  }
  if (cols == 16) {
    for (int i = 0; i < rows; ++i)
      for (int h = 0; h < 2; ++h) {
        __m256i* o = (__m256i*)(t + i * ldt + 8 * h);
        const __m256i v = _mm256_load_si256((const __m256i*)(tile[i] + 8 * h));
        _mm256_storeu_si256(o, load_c ? _mm256_add_epi32(_mm256_loadu_si256(o), v) : v);
      }
  } else {
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) t[i * ldt + j] = load_c ? t[i * ldt + j] + tile[i][j] : tile[i][j];
  }
}

#ifndef TESSERA_S8_U7_KQ
#define TESSERA_S8_U7_KQ 256
#endif
inline constexpr index_t s8_u7_kq = TESSERA_S8_U7_KQ;  ///< quads (1024 k) per K block: 16 KiB of a B panel stay in L1

/// C[rows x cols] (rows <= MR, cols <= 16) (+)= MR consecutive rows of one packed A group (a: the first one's first
/// quad; rows past `rows` are read, not stored: the group's rows past M are zeros) * the B panel pb over quads [q0, q1).
template <int MR>
__attribute__((target("avx2"))) inline void s8_kernel_u7(const std::uint8_t* a, index_t q0, index_t q1, const std::int8_t* pb, int rows,
                                                        int cols, std::int32_t* t, index_t ldt, bool load_c) {
  __m256i acc[MR][2];
  TS_UNROLL
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (index_t c = q0 / 16; c * 16 < q1; ++c) {  // 64-k chunks of A's packed layout: a row's 16 quads side by side
    const index_t qa = std::max(q0, c * 16), qb = std::min(q1, c * 16 + 16);
    const std::uint8_t* ac = a + c * (s8_mg * s8_kq) - c * 64;  // + 4 q + 64 i: quad q of row i
    for (index_t q = qa; q < qb; ++q) {
      __m256i b0 = _mm256_loadu_si256((const __m256i*)(pb + q * 64)), b1 = _mm256_loadu_si256((const __m256i*)(pb + q * 64 + 32));
      __asm__("" : "+x"(b0), "+x"(b1));  // (in registers: else GCC reloads them as a memory operand for every row)
      TS_UNROLL
      for (int i = 0; i < MR; ++i) {
        std::int32_t quad;
        std::memcpy(&quad, ac + q * 4 + i * s8_kq, 4);
        const __m256i av = _mm256_set1_epi32(quad);
        acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));
        acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));
      }
    }
  }
  s8_store_tile_avx2<MR>(acc, rows, cols, t, ldt, load_c);
}

#ifndef TESSERA_S8_U7_MR
#define TESSERA_S8_U7_MR 4  // rows of the avx2_u7 register tile (4 x 16: 8 accumulators, 2 B registers)
#endif
static_assert(s8_mg % TESSERA_S8_U7_MR == 0, "the avx2_u7 tile's rows must divide the 16 rows of a packed A group");

/// The avx2_u7 product of groups [gb, gb1) (packed at pa; rows [gb * 16, M)) by panels [jp0, jp1) of b over K chunks
/// [kc0, kc1), into cb (row gb * 16 and column 16 jp0 at cb, row stride ldb), added to it when acc. Any number of rows.
inline void s8_multiply_u7(const std::uint8_t* pa, index_t gb, index_t gb1, index_t M, const packed_b_s8& b, index_t jp0, index_t jp1,
                           index_t kc0, index_t kc1, std::int32_t* cb, index_t ldb, bool acc) {
  constexpr int MR = TESSERA_S8_U7_MR;
  s8::u7_blocks().fetch_add(1, std::memory_order_relaxed);
  const index_t rows = std::min(M, gb1 * s8_mg) - gb * s8_mg;
  const index_t qend = std::min(kc1, (b.K + 3) / 4 * 4) / 4;  // past K only zeros
  auto row = [&](index_t r) { return pa + (r / s8_mg) * b.Kp * s8_mg + (r % s8_mg) * s8_kq; };
  for (index_t q0 = kc0 / 4; q0 < qend; q0 += s8_u7_kq) {
    const index_t q1 = std::min(qend, q0 + s8_u7_kq);
    const bool load_c = acc || q0 > kc0 / 4;
    for (index_t p = jp0; p < jp1; ++p) {
      const int cols = int(std::min<index_t>(s8_np, b.N - p * s8_np));
      std::int32_t* cp = cb + (p - jp0) * s8_np;
      for (index_t i = 0; i < rows; i += MR) {  // (tiles start at multiples of MR, a divisor of 16: inside one group)
        const int n = int(std::min<index_t>(MR, rows - i));
        if (n > MR / 2 || MR == 1) s8_kernel_u7<MR>(row(i), q0, q1, b.panel(p), n, cols, cp + i * ldb, ldb, load_c);
        else s8_kernel_u7<(MR + 1) / 2>(row(i), q0, q1, b.panel(p), n, cols, cp + i * ldb, ldb, load_c);
      }
    }
  }
}

/// Are all n bytes at p (n a multiple of 32) <= 127? (The check of a packed block of A for avx2_u7.)
__attribute__((target("avx2"))) inline bool s8_below_128(const std::uint8_t* p, std::size_t n) {
  __m256i o = _mm256_setzero_si256();
  for (std::size_t i = 0; i < n; i += 32) o = _mm256_or_si256(o, _mm256_loadu_si256((const __m256i*)(p + i)));
  return _mm256_movemask_epi8(o) == 0;
}
#endif

}  // namespace detail
}  // namespace tessera
