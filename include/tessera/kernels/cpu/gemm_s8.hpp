// int8 GEMM: C[M x N] (int32) = A[M x K] (uint8, or int8) * B[K x N] (int8), exactly, with int32 accumulation.
//
// Five paths, chosen at run time from what the CPU (and the OS) offer, best first:
//   amx          Intel AMX tiles (tdpbusd): a 32 x 32 block of C in four tile registers, 16 x 64 byte tiles of A and B
//   avx512_vnni  vpdpbusd (u8 x s8 quads into int32 lanes): an 8 x 32 register tile
//   avx2_u7      uint8 A with values <= 127 only (7-bit activations: PyTorch's reduce_range) on an AVX2 CPU: vpmaddubsw
//                (u8 x s8 pairs into int16, which 127 * 128 * 2 cannot saturate) + vpmaddwd with ones + vpaddd on a
//                4 x 16 register tile over the packed operands (kernels/cpu/gemm_s8_u7.hpp). Taken when the caller
//                states it (int8_a_below_128, in gemm_s8_pack.hpp: no check) or when the packed block of A is checked
//                and holds no value above 127 (one OR pass; TESSERA_S8_U7_CHECK=0 turns the check off); other A runs
//                avx2. (On CPUs with AVX512-VNNI, vpdpbusd has no such limit and is faster.)
//   avx2         u8 and s8 widened to int16 and multiplied with vpmaddwd: no 16-bit saturation (vpmaddubsw would
//                saturate 255*127 + 255*127). Blocks of 8 rows or more widen A and B once per 512 k into int16 pairs
//                and run a 6 x 16 register tile of vpmaddwd + vpaddd (s8_multiply_avx2); fewer rows widen in the loop.
//   portable     plain loops
// All paths read the same packed operands:
//   B (weights): panels of 16 columns, each [Kp/4][16][4] bytes (four consecutive k of one column side by side, the
//                layout of a VNNI vector and of an AMX B tile row); Kp = K rounded up to 64, zero padded.
//   A:           groups of 16 rows, each [Kp/64][16][64] bytes (an AMX A tile per 64 k); int8 A is stored as
//                uint8 (a + 128) and corrected with 128 * (column sums of B) at the end.
// The set_int8_isa_limit() switch lets tests run every path the machine has; TESSERA_INT8_ISA (portable, avx2,
// avx2_u7, avx512_vnni, amx) sets the same limit from the environment (avx2 excludes avx2_u7). Every path gives the
// same, exact results.
// The choice of path and the packing live in kernels/cpu/gemm_s8_pack.hpp; this file holds the register-tile
// kernels of each path and the driver (cpu_gemm_s8, cpu_gemm_s8_rows).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <vector>

#include "tessera/kernels/cpu/gemm_s8_pack.hpp"
#include "tessera/kernels/cpu/gemm_s8_u7.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tessera {
namespace detail {

/// The register-tile kernels. Each computes C[rows x cols] over quads [q0, q1) of K from a packed A group (pa,
/// rows r0 .. r0+rows of it) and packed B panels (pb, panel stride pstride), into an int32 tile (row stride ldt)
/// that is overwritten (load_c false) or added to (load_c true).
inline void s8_tile_portable(const std::uint8_t* pa, int r0, int rows, const std::int8_t* pb, index_t pstride, int npan,
                             index_t q0, index_t q1, std::int32_t* t, index_t ldt, bool load_c) {
  for (int i = 0; i < rows; ++i)
    for (int p = 0; p < npan; ++p)
      for (int j = 0; j < s8_np; ++j) {
        std::int32_t acc = load_c ? t[i * ldt + p * s8_np + j] : 0;
        for (index_t q = q0; q < q1; ++q) {
          const std::uint8_t* aq = pa + (q / 16) * (s8_mg * s8_kq) + (r0 + i) * s8_kq + (q % 16) * 4;
          const std::int8_t* bq = pb + p * pstride + q * 64 + j * 4;
          for (int r = 0; r < 4; ++r) acc += std::int32_t(aq[r]) * std::int32_t(bq[r]);
        }
        t[i * ldt + p * s8_np + j] = acc;
      }
}

#if TESSERA_INT8_X86
/// 2 rows x (npan <= 2) panels with AVX2: B quads widened to int16 (4 columns x 4 k per register), A's quad
/// widened and repeated; vpmaddwd sums pairs into int32 without saturation, the pairs are added at the end.
__attribute__((target("avx2"))) inline void s8_tile_avx2(const std::uint8_t* pa, int r0, int rows, const std::int8_t* pb,
                                                        index_t pstride, int npan, index_t q0, index_t q1, std::int32_t* t,
                                                        index_t ldt, bool load_c) {
  for (int i0 = 0; i0 < rows; i0 += 2) {
    __m256i acc[2][8];  // [row][4-column group of the 32]: lanes hold (column, pair) partial sums
    for (auto& r : acc)
      for (auto& v : r) v = _mm256_setzero_si256();
    for (index_t q = q0; q < q1; ++q) {
      __m256i bw[8];
      // (compile-time indices into acc and bw only, so that they stay in registers; a missing second panel or row is
      // computed from a repeat of the first and not stored)
      const std::int8_t* pb1 = pb + (npan > 1 ? pstride : 0);
      TS_UNROLL
      for (int g = 0; g < 4; ++g) {
        bw[g] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(pb + q * 64 + g * 16)));
        bw[4 + g] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(pb1 + q * 64 + g * 16)));
      }
      TS_UNROLL
      for (int i = 0; i < 2; ++i) {
        const int r = i0 + i < rows ? i0 + i : i0;
        const std::uint8_t* aq = pa + (q / 16) * (s8_mg * s8_kq) + (r0 + r) * s8_kq + (q % 16) * 4;
        std::int32_t quad;
        std::memcpy(&quad, aq, 4);
        const __m256i aw = _mm256_cvtepu8_epi16(_mm_set1_epi32(quad));  // a0 a1 a2 a3 repeated
        TS_UNROLL
        for (int g = 0; g < 8; ++g) acc[i][g] = _mm256_add_epi32(acc[i][g], _mm256_madd_epi16(aw, bw[g]));
      }
    }
    TS_UNROLL
    for (int i = 0; i < 2; ++i) {
      if (i0 + i >= rows) break;
      TS_UNROLL
      for (int g = 0; g < 8; g += 2) {
        if (g >= 4 * npan) break;
        // lanes (c0p0 c0p1 c1p0 c1p1 | c2p0 c2p1 c3p0 c3p1) and the same for columns 4..7 -> c0 .. c7
        const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][g], acc[i][g + 1]), 0xd8);
        std::int32_t* out = t + (i0 + i) * ldt + g * 4;
        const __m256i old = load_c ? _mm256_loadu_si256((const __m256i*)out) : _mm256_setzero_si256();
        _mm256_storeu_si256((__m256i*)out, _mm256_add_epi32(old, s));
      }
    }
  }
}

/// The AVX2 path for blocks of at least 8 rows: A and B widened to int16 once per K block of 512 (A: a block of rows,
/// row-major pairs; B: one panel, [pair][16 columns][2]) so that the inner loop is only vpmaddwd + vpaddd on a 6 x 16
/// register tile (12 accumulators): per pair of k, 2 B loads, 6 broadcast loads of A's pair, 12 vpmaddwd, 12 vpaddd,
/// no widening and no horizontal sums (the in-loop widening of s8_tile_avx2 cost 7 more operations per 12 vpmaddwd).
inline constexpr index_t s8_avx2_kc = 512;  ///< k per widened block: a B panel (16 KiB) in L1, 128 rows of A (128 KiB) in L2

/// Rows [0, rows) of the packed groups at pa (group stride Kp * 16 bytes), k [k0, k0 + np * 2), into int16 pairs:
/// row r's pair t at out + (r * np + t) * 2.
__attribute__((target("avx2"))) inline void s8_widen_a_avx2(const std::uint8_t* pa, index_t Kp, index_t rows, index_t k0, index_t np,
                                                           std::int16_t* out) {
  for (index_t r = 0; r < rows; ++r) {
    const std::uint8_t* g = pa + (r / s8_mg) * Kp * s8_mg + (r % s8_mg) * s8_kq;
    std::int16_t* o = out + r * np * 2;
    for (index_t k = 0; k < 2 * np; k += 16) {  // np * 2 is a multiple of 16 (K blocks are whole 64-k chunks, pairs rounded to 8)
      const index_t kk = k0 + k;
      const __m128i v = _mm_loadu_si128((const __m128i*)(g + (kk / s8_kq) * (s8_mg * s8_kq) + kk % s8_kq));
      _mm256_storeu_si256((__m256i*)(o + k), _mm256_cvtepu8_epi16(v));
    }
  }
}

/// Quads [q0, q0 + np / 2) of a packed B panel into int16 pairs: pair t's 16 columns at out + t * 32 (column j's two k
/// at 2 j, 2 j + 1).
__attribute__((target("avx2"))) inline void s8_widen_b_avx2(const std::int8_t* panel, index_t q0, index_t np, std::int16_t* out) {
  // within each 128-bit lane of 4 columns x 4 k: the (k0, k1) halves of the columns first, then the (k2, k3) halves
  const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7,
                                         10, 11, 14, 15);
  for (index_t t = 0; t < np; t += 2) {
    const std::int8_t* q = panel + (q0 + t / 2) * 64;
    TS_UNROLL
    for (int h = 0; h < 2; ++h) {  // columns 0..7, then 8..15
      const __m256i s = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(q + 32 * h)), split);
      const __m256i m = _mm256_permute4x64_epi64(s, 0xd8);  // (k0 k1 of columns 8h .. 8h+7 | k2 k3 of them)
      _mm256_storeu_si256((__m256i*)(out + t * 32 + 16 * h), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(m)));
      _mm256_storeu_si256((__m256i*)(out + (t + 1) * 32 + 16 * h), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(m, 1)));
    }
  }
}

/// C[rows x cols] (rows <= MR, cols <= 16) (+)= A rows (widened, row stride np pairs) * B panel (widened) over np pairs.
template <int MR>
__attribute__((target("avx2"))) inline void s8_kernel_avx2(const std::int16_t* a, index_t np, const std::int16_t* b, int rows, int cols,
                                                          std::int32_t* t, index_t ldt, bool load_c) {
  __m256i acc[MR][2];
  TS_UNROLL
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  const std::int32_t* ap = reinterpret_cast<const std::int32_t*>(a);
  for (index_t p = 0; p < np; ++p) {
    const __m256i b0 = _mm256_loadu_si256((const __m256i*)(b + p * 32)), b1 = _mm256_loadu_si256((const __m256i*)(b + p * 32 + 16));
    TS_UNROLL
    for (int i = 0; i < MR; ++i) {
      const __m256i av = _mm256_set1_epi32(ap[i * np + p]);
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(av, b0));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(av, b1));
    }
  }
  s8_store_tile_avx2<MR>(acc, rows, cols, t, ldt, load_c);
}

/// The widened AVX2 product of groups [gb, gb1) (packed at pa; rows [gb * 16, M)) by panels [jp0, jp1) of b over K
/// chunks [kc0, kc1), into cb (row gb * 16 and column 16 jp0 at cb, row stride ldb), added to it when acc.
inline void s8_multiply_avx2(const std::uint8_t* pa, index_t gb, index_t gb1, index_t M, const packed_b_s8& b, index_t jp0, index_t jp1,
                             index_t kc0, index_t kc1, std::int32_t* cb, index_t ldb, bool acc) {
  thread_local std::vector<std::int16_t> wa, wb;
  const index_t rows = std::min(M, gb1 * s8_mg) - gb * s8_mg;
  const index_t kend = std::min(kc1, (b.K + 15) / 16 * 16);  // past K only zeros: stop at K rounded up to 16
  for (index_t k0 = kc0; k0 < kend; k0 += s8_avx2_kc) {
    const index_t np = (std::min(kend, k0 + s8_avx2_kc) - k0) / 2;
    wa.resize(std::size_t((rows + 5) / 6 * 6 * np * 2));  // the 6-row kernel reads whole tiles (rows past M unused)
    wb.resize(std::size_t(np * 32));
    s8_widen_a_avx2(pa, b.Kp, rows, k0, np, wa.data());
    const bool load_c = acc || k0 > kc0;
    for (index_t p = jp0; p < jp1; ++p) {
      s8_widen_b_avx2(b.panel(p), k0 / 4, np, wb.data());
      const int cols = int(std::min<index_t>(s8_np, b.N - p * s8_np));
      std::int32_t* cp = cb + (p - jp0) * s8_np;
      index_t i = 0;
      for (; i + 6 <= rows; i += 6) s8_kernel_avx2<6>(wa.data() + i * np * 2, np, wb.data(), 6, cols, cp + i * ldb, ldb, load_c);
      if (rows - i > 3) s8_kernel_avx2<6>(wa.data() + i * np * 2, np, wb.data(), int(rows - i), cols, cp + i * ldb, ldb, load_c);
      else if (rows > i) s8_kernel_avx2<3>(wa.data() + i * np * 2, np, wb.data(), int(rows - i), cols, cp + i * ldb, ldb, load_c);
    }
  }
}

/// 8 rows x (npan <= 2) panels with AVX-512 VNNI: 16 accumulators, per quad 2 B loads, 8 broadcasts, 16 vpdpbusd.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline void s8_tile_vnni(const std::uint8_t* pa, int r0, int rows,
                                                                               const std::int8_t* pb, index_t pstride, int npan,
                                                                               index_t q0, index_t q1, std::int32_t* t,
                                                                               index_t ldt, bool load_c) {
  for (int i0 = 0; i0 < rows; i0 += 8) {
    __m512i acc[8][2];
    TS_UNROLL
    for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
    const std::int8_t* b1 = pb + (npan > 1 ? pstride : 0);  // a second panel (a repeat of the first when npan == 1)
    for (index_t q = q0; q < q1; ++q) {
      const __m512i bv0 = _mm512_loadu_si512(pb + q * 64), bv1 = _mm512_loadu_si512(b1 + q * 64);
      const std::uint8_t* aq = pa + (q / 16) * (s8_mg * s8_kq) + (r0 + i0) * s8_kq + (q % 16) * 4;
      TS_UNROLL
      for (int i = 0; i < 8; ++i) {
        std::int32_t quad;
        std::memcpy(&quad, aq + i * s8_kq, 4);
        const __m512i av = _mm512_set1_epi32(quad);
        acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, bv0);
        acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, bv1);
      }
    }
    // (indices known at compile time only: a runtime index into acc would keep the accumulators in memory)
    TS_UNROLL
    for (int i = 0; i < 8; ++i) {
      if (i0 + i >= rows) break;
      TS_UNROLL
      for (int p = 0; p < 2; ++p) {
        if (p >= npan) break;
        std::int32_t* out = t + (i0 + i) * ldt + p * s8_np;
        const __m512i old = load_c ? _mm512_loadu_si512(out) : _mm512_setzero_si512();
        _mm512_storeu_si512(out, _mm512_add_epi32(old, acc[i][p]));
      }
    }
  }
}

struct alignas(64) amx_tile_config {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
  amx_tile_config() {
    for (int i = 0; i < 8; ++i) colsb[i] = 64, rows[i] = 16;  // every tile 16 rows x 64 bytes
  }
};

__attribute__((target("amx-tile"))) inline void amx_configure() {
  static const amx_tile_config cfg;
  _tile_loadconfig(&cfg);
}
__attribute__((target("amx-tile"))) inline void amx_release() { _tile_release(); }

/// A 32 x 32 block of C (two A groups x two B panels; M2/N2 false: one of them) over K chunks [c0, c1) of 64:
/// tiles 0..3 hold C, 4..5 A, 6..7 B. C is loaded from / stored to t (row stride ldt int32s) when load_c,
/// else starts at zero.
template <bool M2, bool N2>
__attribute__((target("amx-tile,amx-int8"))) inline void s8_block_amx(const std::uint8_t* pa0, const std::uint8_t* pa1,
                                                                     const std::int8_t* pb0, const std::int8_t* pb1, index_t c0,
                                                                     index_t c1, std::int32_t* t, index_t ldt, bool load_c) {
  const index_t sc = ldt * 4;
  std::int32_t* t10 = t + 16 * ldt;
  if (load_c) {
    _tile_loadd(0, t, sc);
    if constexpr (N2) _tile_loadd(1, t + 16, sc);
    if constexpr (M2) _tile_loadd(2, t10, sc);
    if constexpr (M2 && N2) _tile_loadd(3, t10 + 16, sc);
  } else {
    _tile_zero(0);
    if constexpr (N2) _tile_zero(1);
    if constexpr (M2) _tile_zero(2);
    if constexpr (M2 && N2) _tile_zero(3);
  }
  for (index_t c = c0; c < c1; ++c) {
    _tile_loadd(4, pa0 + c * (s8_mg * s8_kq), 64);
    _tile_loadd(6, pb0 + c * 1024, 64);
    if constexpr (N2) _tile_loadd(7, pb1 + c * 1024, 64);
    _tile_dpbusd(0, 4, 6);
    if constexpr (N2) _tile_dpbusd(1, 4, 7);
    if constexpr (M2) {
      _tile_loadd(5, pa1 + c * (s8_mg * s8_kq), 64);
      _tile_dpbusd(2, 5, 6);
      if constexpr (N2) _tile_dpbusd(3, 5, 7);
    }
  }
  _tile_stored(0, t, sc);
  if constexpr (N2) _tile_stored(1, t + 16, sc);
  if constexpr (M2) _tile_stored(2, t10, sc);
  if constexpr (M2 && N2) _tile_stored(3, t10 + 16, sc);
}
#endif

#ifndef TESSERA_S8_KC
#define TESSERA_S8_KC 4096  // K block (bytes of a row of A): C is stored once up to K = 4096
#endif
#ifndef TESSERA_S8_MC
#define TESSERA_S8_MC 128  // rows of A in a block: 128 x 4096 bytes stay in L2
#endif
#ifndef TESSERA_S8_U7_CHECK
#define TESSERA_S8_U7_CHECK 1  // avx2_u7 without int8_a_below_128: check each packed block of A (one OR pass, ~1 %)
#endif

/// Thread-local packing space for A (and B when the caller gives it unpacked).
struct s8_workspace {
  s8_buffer a;
  packed_b_s8 b;
  static s8_workspace& of_this_thread() {
    thread_local s8_workspace w;
    return w;
  }
};

/// Computes the 32 x 32 block (at most) of C at rows [i0, i0 + rows) x columns [j0, j0 + cols) over K chunks
/// [kc0, kc1) from A groups pag (one or two) and B panels pb (one or two), into t (row stride ldt) when the block is
/// full, else through a local tile whose valid part is stored (or added, acc) at t.
inline void s8_block(int8_isa isa, const std::uint8_t* pag, index_t Kp, int ngrp, const std::int8_t* pb, int npan, index_t K,
                     index_t kc0, index_t kc1, index_t rows, index_t cols, std::int32_t* t, index_t ldt, bool acc) {
  alignas(64) std::int32_t tile[32 * 32];
  const bool full = rows == 2 * s8_mg && cols == 2 * s8_np;
  std::int32_t* out = full ? t : tile;
  const index_t ld = full ? ldt : 32;
  const bool load_c = full && acc;
  const index_t q0 = kc0 / 4, q1 = std::min(kc1, (K + 3) / 4 * 4) / 4;  // the VNNI / AVX2 / portable paths skip K's padding
  switch (isa) {
#if TESSERA_INT8_X86
    case int8_isa::amx: {
      const std::uint8_t* pa1 = pag + Kp * s8_mg;
      const std::int8_t* pb1 = pb + Kp * s8_np;
      const index_t c0 = kc0 / s8_kq, c1 = kc1 / s8_kq;
      if (ngrp == 2 && npan == 2) s8_block_amx<true, true>(pag, pa1, pb, pb1, c0, c1, out, ld, load_c);
      else if (ngrp == 2) s8_block_amx<true, false>(pag, pa1, pb, pb1, c0, c1, out, ld, load_c);
      else if (npan == 2) s8_block_amx<false, true>(pag, pa1, pb, pb1, c0, c1, out, ld, load_c);
      else s8_block_amx<false, false>(pag, pa1, pb, pb1, c0, c1, out, ld, load_c);
      break;
    }
    case int8_isa::avx512_vnni:
      for (int gg = 0; gg < ngrp; ++gg)
        s8_tile_vnni(pag + gg * Kp * s8_mg, 0, int(std::min<index_t>(s8_mg, rows - gg * s8_mg)), pb, Kp * s8_np, npan, q0, q1,
                     out + gg * s8_mg * ld, ld, load_c);
      break;
    case int8_isa::avx2:
      for (int gg = 0; gg < ngrp; ++gg)
        s8_tile_avx2(pag + gg * Kp * s8_mg, 0, int(std::min<index_t>(s8_mg, rows - gg * s8_mg)), pb, Kp * s8_np, npan, q0, q1,
                     out + gg * s8_mg * ld, ld, load_c);
      break;
#endif
    default:
      for (int gg = 0; gg < ngrp; ++gg)
        s8_tile_portable(pag + gg * Kp * s8_mg, 0, int(std::min<index_t>(s8_mg, rows - gg * s8_mg)), pb, Kp * s8_np, npan, q0,
                         q1, out + gg * s8_mg * ld, ld, load_c);
  }
  if (!full)  // edge block: store its valid part
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j) t[i * ldt + j] = acc ? t[i * ldt + j] + tile[i * 32 + j] : tile[i * 32 + j];
}

/// An epilogue that takes each finished block of C from a buffer of the thread's own instead of from C (which is
/// then never written): epi.local(cblock, ld, i0, j0, rows, cols), cblock holding element (i0, j0), ld always
/// local_ld(N) (kernels/loop.hpp). Threads then split C by rows.
template <class Epi>
concept s8_local_epilogue = requires { requires Epi::local_c; };

/// A local_c epilogue behind a pointer (see epilogue_ref in kernels/backend.hpp).
struct s8_local_epilogue_ref {
  static constexpr bool active = true;
  static constexpr bool local_c = true;
  const void* ctx;
  void (*fn)(const void*, const std::int32_t*, index_t, index_t, index_t, index_t, index_t);
  void local(const std::int32_t* cb, index_t ld, index_t i0, index_t j0, index_t rows, index_t cols) const {
    fn(ctx, cb, ld, i0, j0, rows, cols);
  }
  void operator()(index_t, index_t, index_t, index_t) const {}  // (blocks come through local)
};

/// The int8 GEMM's driver: C (+)= A * B with A's 16-row groups from pack_group(g, out) (see cpu_gemm_s8_rows) and B
/// packed. Threads take ranges of columns when there are enough (A is then packed once, whole, and shared) or of
/// rows (each thread packs its own rows, a block of MC rows at a time, right before multiplying them: a tall A is
/// never written to memory whole). The epilogue runs on each finished block of C while it is in cache.
template <class PackGroup, class Epi>
void s8_gemm_run(index_t M, index_t N, const PackGroup& pack_group, const packed_b_s8& b, bool a_signed, std::int32_t* c,
                 index_t ldc, bool accumulate, int nt, int8_isa isa, const Epi& epi) {
  const index_t Kp = b.Kp, groups = (M + s8_mg - 1) / s8_mg;
  // avx2_u7: uint8 A stated <= 127 (int8_a_below_128, read on the calling thread) takes vpmaddubsw; otherwise each
  // packed block of A is checked (TESSERA_S8_U7_CHECK) and a block with a value above 127 runs avx2
  const bool u7_path = isa == int8_isa::avx2_u7 && !a_signed;
  [[maybe_unused]] const bool u7_stated = u7_path && int8_a_below_128::active();
  if (isa == int8_isa::avx2_u7) isa = int8_isa::avx2;
  [[maybe_unused]] auto u7_block = [&](const std::uint8_t* pa, index_t ngroups) {
#if TESSERA_INT8_X86
    if (u7_stated || !u7_path || !TESSERA_S8_U7_CHECK) return u7_stated;
    s8::u7_checks().fetch_add(1, std::memory_order_relaxed);
    return s8_below_128(pa, std::size_t(ngroups * Kp * s8_mg));
#else
    (void)pa, (void)ngroups;
    return false;
#endif
  };
  const index_t KC = std::min<index_t>(Kp, TESSERA_S8_KC), MC = TESSERA_S8_MC, GB = MC / s8_mg;
  constexpr bool local_c = s8_local_epilogue<Epi>;
  const index_t nblk = (b.panels + 1) / 2, mblk = (groups + 1) / 2;
  const bool by_cols = !local_c && (nblk >= mblk || nblk >= 2 * index_t(nt));
  std::uint8_t* shared_pa = nullptr;
  bool shared_u7 = false;
  if (by_cols) {
    shared_pa = s8_workspace::of_this_thread().a.grow(std::size_t(groups * Kp * s8_mg));
    // (no parallel construct at all on one thread: inside another team, even an if(false) region builds a team)
#if defined(_OPENMP)
    if (nt > 1 && groups > 1) {
#pragma omp parallel for num_threads(nt) schedule(static)
      for (index_t g = 0; g < groups; ++g) pack_group(g, shared_pa + g * Kp * s8_mg);
    } else
#endif
      for (index_t g = 0; g < groups; ++g) pack_group(g, shared_pa + g * Kp * s8_mg);
    shared_u7 = u7_block(shared_pa, groups);
  }
  auto finish = [&](index_t i0, index_t j0, index_t rows, index_t cols, std::int32_t* cb, index_t ldb) {
    if (a_signed)  // A was stored as a + 128: take 128 * sum_k b(k, j) back out
      for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) cb[i * ldb + j] -= 128 * b.col_sums[std::size_t(j0 + j)];
    if constexpr (local_c) epi.local(cb, ldb, i0, j0, rows, cols);
    else if constexpr (Epi::active) epi(i0, j0, rows, cols);
  };
  auto work = [&](int tid, int nthreads) {
    index_t jp0 = 0, jp1 = b.panels, g0 = 0, g1 = groups;  // this thread's panels and groups
    if (by_cols) jp0 = std::min(b.panels, 2 * (nblk * tid / nthreads)), jp1 = std::min(b.panels, 2 * (nblk * (tid + 1) / nthreads));
    else g0 = std::min(groups, 2 * (mblk * tid / nthreads)), g1 = std::min(groups, 2 * (mblk * (tid + 1) / nthreads));
    if (jp0 >= jp1 || g0 >= g1) return;
    const index_t j0t = jp0 * s8_np, colst = std::min(b.N, jp1 * s8_np) - j0t;
#if TESSERA_INT8_X86
    if (isa == int8_isa::amx) amx_configure();
#endif
    auto multiply = [&](const std::uint8_t* pa, index_t gb, index_t gb1, index_t kc0, index_t kc1, std::int32_t* cb, index_t ldb,
                        bool acc, bool u7) {  // groups [gb, gb1) (pa: group gb) into cb (row gb * 16, column j0t)
#if TESSERA_INT8_X86
      if (u7) {
        s8_multiply_u7(pa, gb, gb1, M, b, jp0, jp1, kc0, kc1, cb, ldb, acc);
        return;
      }
#else
      (void)u7;
#endif
#if TESSERA_INT8_X86
      if (isa == int8_isa::avx2 && std::min(M, gb1 * s8_mg) - gb * s8_mg >= 8) {
        s8_multiply_avx2(pa, gb, gb1, M, b, jp0, jp1, kc0, kc1, cb, ldb, acc);
        return;
      }
#endif
      for (index_t p = jp0; p < jp1; p += 2) {
        const int npan = int(std::min<index_t>(2, jp1 - p));
        const index_t j0 = p * s8_np, cols = std::min<index_t>(npan * s8_np, b.N - j0);
        for (index_t g = gb; g < gb1; g += 2) {
          const int ngrp = int(std::min<index_t>(2, gb1 - g));
          const index_t i0 = g * s8_mg, rows = std::min<index_t>(ngrp * s8_mg, M - i0);
          s8_block(isa, pa + (g - gb) * Kp * s8_mg, Kp, ngrp, b.panel(p), npan, b.K, kc0, kc1, rows, cols,
                   cb + (i0 - gb * s8_mg) * ldb + (j0 - j0t), ldb, acc);
        }
      }
    };
    if (by_cols) {  // K blocks outermost: a block of B's panels is used for every row
      for (index_t kc0 = 0; kc0 < Kp; kc0 += KC) {
        const index_t kc1 = std::min(Kp, kc0 + KC);
        for (index_t gb = g0; gb < g1; gb += GB) {
          const index_t gb1 = std::min(g1, gb + GB);
          multiply(shared_pa + gb * Kp * s8_mg, gb, gb1, kc0, kc1, c + gb * s8_mg * ldc + j0t, ldc, accumulate || kc0 > 0, shared_u7);
          if (kc1 == Kp) finish(gb * s8_mg, j0t, std::min(M, gb1 * s8_mg) - gb * s8_mg, colst, c + gb * s8_mg * ldc + j0t, ldc);
        }
      }
    } else {  // row blocks outermost: each packed by its thread, then every K block and column over it
      thread_local s8_buffer own_a;
      thread_local std::vector<std::int32_t> own_c;
      std::uint8_t* pa = own_a.grow(std::size_t(GB * Kp * s8_mg));
      const index_t ldb = local_c ? local_ld(b.N) : ldc;  // (a row split: the thread's columns are all N)
      if constexpr (local_c) own_c.resize(std::size_t(MC * ldb));
      for (index_t gb = g0; gb < g1; gb += GB) {
        const index_t gb1 = std::min(g1, gb + GB);
        for (index_t g = gb; g < gb1; ++g) pack_group(g, pa + (g - gb) * Kp * s8_mg);
        const bool u7 = u7_block(pa, gb1 - gb);
        std::int32_t* cb = local_c ? own_c.data() : c + gb * s8_mg * ldc + j0t;
        for (index_t kc0 = 0; kc0 < Kp; kc0 += KC)
          multiply(pa, gb, gb1, kc0, std::min(Kp, kc0 + KC), cb, ldb, (accumulate && !local_c) || kc0 > 0, u7);
        finish(gb * s8_mg, j0t, std::min(M, gb1 * s8_mg) - gb * s8_mg, colst, cb, ldb);
      }
    }
#if TESSERA_INT8_X86
    if (isa == int8_isa::amx) amx_release();
#endif
  };
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    work(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  work(0, 1);
}

/// The path for a product of this shape: AMX needs rows to fill its 16-row tiles.
inline int8_isa s8_isa_for(index_t M, index_t K) {
  const int8_isa isa = int8_isa_active();
  if (isa == int8_isa::amx && (M < 8 || K < 32)) return int8_isa::avx512_vnni;
  return isa;
}

/// C (+)= A * B with A's rows supplied by pack_group(g, out), which writes rows [16 g, 16 g + 16) of A (zero past
/// M and past K) in the packed group layout: row i's k at out[(k / 64) * 1024 + i * 64 + k % 64] (as
/// s8_pack_a_group does for a row-major A; a convolution gathers its taps there directly). a_signed: the rows hold
/// int8 values stored as a + 128.
template <class PackGroup, class Epi = no_epilogue>
void cpu_gemm_s8_rows(index_t M, index_t N, index_t K, const PackGroup& pack_group, bool a_signed, const packed_b_s8& b,
                      std::int32_t* c, index_t ldc, bool accumulate, int nthreads, const Epi& epi = {}) {
  if (b.K != K || b.N != N)
    throw shape_error("int8 GEMM: packed B is " + std::to_string(b.K) + " x " + std::to_string(b.N) + ", the product needs " +
                      std::to_string(K) + " x " + std::to_string(N));
  if (M == 0 || N == 0) return;
  stats::count_pass();
  // a second thread pays off once the product takes some 50 microseconds on one: AMX does about 2e12 operations a
  // second per core here (at 256^3 one thread ran 1900 GOP/s, two 1150), the other paths far fewer
  const double ops = 2.0 * double(M) * double(N) * double(K);
  const int8_isa isa = s8_isa_for(M, K);
#ifndef TESSERA_S8_AMX_THREAD_OPS
#define TESSERA_S8_AMX_THREAD_OPS 1e8
#endif
  const double worth_threads = isa == int8_isa::amx ? TESSERA_S8_AMX_THREAD_OPS : isa == int8_isa::avx512_vnni ? 2e7 : 4e6;
  const int nt = ops < worth_threads ? 1 : std::max(1, nthreads);
  // the driver is instantiated for three epilogue types only (none, a block one, a local_c one) and one pack_group
  // type: each reaches it behind a pointer (kernels/backend.hpp, epilogue_ref), called once per block or group
  const auto pg = erase_epilogue<index_t, std::uint8_t*>(pack_group);
  if constexpr (s8_local_epilogue<Epi>) {
    const s8_local_epilogue_ref e{&epi, [](const void* p, const std::int32_t* cb, index_t ld, index_t i0, index_t j0, index_t rows,
                                           index_t cols) { static_cast<const Epi*>(p)->local(cb, ld, i0, j0, rows, cols); }};
    s8_gemm_run(M, N, pg, b, a_signed, c, ldc, accumulate, nt, isa, e);
  } else if constexpr (Epi::active) {
    s8_gemm_run(M, N, pg, b, a_signed, c, ldc, accumulate, nt, isa, erase_epilogue<index_t, index_t, index_t, index_t>(epi));
  } else {
    s8_gemm_run(M, N, pg, b, a_signed, c, ldc, accumulate, nt, isa, no_epilogue{});
  }
}

/// C (+)= A * B: A is M x K uint8 or int8 (row stride lda, unit column stride), B packed; C int32 with row stride ldc.
template <class TA, class Epi = no_epilogue>
void cpu_gemm_s8(index_t M, index_t N, index_t K, const TA* a, index_t lda, const packed_b_s8& b, std::int32_t* c,
                 index_t ldc, bool accumulate, int nthreads, const Epi& epi = {}) {
  static_assert(std::is_same_v<TA, std::uint8_t> || std::is_same_v<TA, std::int8_t>, "int8 GEMM: A must be uint8 or int8");
  const index_t Kp = b.Kp;
  cpu_gemm_s8_rows(
      M, N, K, [&](index_t g, std::uint8_t* out) { s8_pack_a_group(a, lda, M, K, Kp, g, out); }, std::is_signed_v<TA>, b, c,
      ldc, accumulate, nthreads, epi);
}

/// The same with B given as a K x N int8 matrix (packed into thread-local space on each call).
template <class TA, class Epi = no_epilogue>
void cpu_gemm_s8(index_t M, index_t N, index_t K, const TA* a, index_t lda, mat_ref<std::int8_t> b, std::int32_t* c,
                 index_t ldc, bool accumulate, int nthreads, const Epi& epi = {}) {
  auto& ws = s8_workspace::of_this_thread();
  ws.b.pack(b, K, N, nthreads);
  cpu_gemm_s8(M, N, K, a, lda, ws.b, c, ldc, accumulate, nthreads, epi);
}

}  // namespace detail
}  // namespace tessera
