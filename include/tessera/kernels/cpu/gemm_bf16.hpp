// bf16 GEMM: C[M x N] (fp32) (+)= A[M x K] (bfloat16) * B[K x N] (bfloat16), accumulated in fp32. A and B are read
// through strides (a Linear's weight W [N, K] is B = W^T with no copy); C is row-major (row stride ldc).
//
//   detail::cpu_gemm_bf16(M, N, K, a, b, c, ldc, accumulate, nthreads, epi)
//       accumulate: C += A B (else C = A B); epi(i0, j0, rows, cols) runs on every tile of C once it is final, as in
//       gemm.hpp (the planner's fused bias and activation); the same threads and blocking rules as cpu_gemm.
//   backend<cpu>::gemm_bf16 / backend<cpu_threads>::gemm_bf16 (kernels/cpu/backend.hpp) call it.
//
// Paths, chosen at run time (kernels/cpu/gemm_bf16_pack.hpp: bf16_isa_active(), capped by TESSERA_BF16_ISA):
//   amx_bf16     AMX tiles: a 32 x 32 block of C in four 16 x 16 fp32 tiles, A in two 16-row tiles of 16 pairs (64
//                bytes a row), B in two tiles of 16 pairs x 16 columns; tdpbf16ps, K padded to 32 per block (zero
//                pairs). Taken for products with at least 8 rows and 32 k (else avx512_bf16). DAZ/FTZ as below.
//   avx512_bf16  A and B packed as pairs of bf16 along K (a 32-bit word per row or column and pair); vdpbf16ps adds
//                a_even b_even + a_odd b_odd into 16 fp32 lanes; a 14 x 32 register tile (28 zmm accumulators, 2 B
//                loads and 14 broadcasts of A's pairs per pair of k). The instruction treats bf16 denormals as zero
//                and flushes fp32 denormal results (DAZ, FTZ: Intel's definition of VDPBF16PS).
//   avx2         A and B widened to fp32 while packing (bits << 16, exact), then gemm.hpp's fp32 micro-kernel: the
//                speed of our fp32 GEMM less the packing of A (the fp32 GEMM reads row-major A in place); what runs
//                on CPUs without AVX512-BF16 (Zen 3, this project's test machine).
//   portable     plain loops in fp32 (rows split between threads).
// Guarantees: every product of two bf16 is exact in fp32; the only rounding is fp32 accumulation (in an order that
// depends on the path and the blocking), so against a double reference the error is within about K * 2^-24 times
// sum_k |a_ik b_kj| (in practice sqrt(K) times that). NaN and infinity propagate as in fp32 arithmetic (except that
// the avx512_bf16 path flushes denormals, above).
// Products with at most 8 rows (16 with B = W^T) and contiguous rows of A and rows or columns of B (a Linear at batch 1
// to 16) take a
// skinny path on every SIMD path instead: bf16 widened in registers, no packing (bf16_gemm_skinny).
// Not here: a prepacked B (weights packed once).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/core/types.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/gemm.hpp"
#include "tessera/kernels/cpu/gemm_bf16_pack.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

#ifndef TESSERA_BF16_KC
#define TESSERA_BF16_KC 512  // k per block (avx512_bf16): a B panel of 32 columns (32 KiB) stays in L1
#endif
#ifndef TESSERA_BF16_MC
#define TESSERA_BF16_MC 256  // rows of A per block at KC 512 (256 KiB of bf16: in L2)
#endif
#ifndef TESSERA_BF16_AMX_KC
#define TESSERA_BF16_AMX_KC 1024  // k per block (amx_bf16): a multiple of 32
#endif
#ifndef TESSERA_BF16_NC
#define TESSERA_BF16_NC 4096  // columns per B block (KC x NC: 4 MiB, in L3)
#endif

namespace tessera::detail {

#if TESSERA_BF16_X86
/// C[MR x 32] (+)= A panel (np pairs x MR rows) * B panel (np pairs x 32 columns) with vdpbf16ps.
template <int MR>
__attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx512dq"))) inline void bf16_tile_avx512(
    index_t np, const std::uint32_t* __restrict a, const std::uint32_t* __restrict b, float* c, index_t ldc, bool accumulate) {
  __m512 acc0[MR], acc1[MR];
  TS_UNROLL
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
  for (index_t p = 0; p < np; ++p) {
    __builtin_prefetch(b + (p + 8) * 32, 0, 3);
    __builtin_prefetch(b + (p + 8) * 32 + 16, 0, 3);
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * 32), b1 = (__m512bh)_mm512_loadu_si512(b + p * 32 + 16);
    // (compile-time indices only, so that the accumulators stay in registers)
    TS_UNROLL
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[p * MR + i]));
      acc0[i] = _mm512_dpbf16_ps(acc0[i], av, b0);
      acc1[i] = _mm512_dpbf16_ps(acc1[i], av, b1);
    }
  }
  TS_UNROLL
  for (int i = 0; i < MR; ++i) {
    float* o = c + i * ldc;
    const __m512 old0 = accumulate ? _mm512_loadu_ps(o) : _mm512_setzero_ps();
    const __m512 old1 = accumulate ? _mm512_loadu_ps(o + 16) : _mm512_setzero_ps();
    _mm512_storeu_ps(o, _mm512_add_ps(old0, acc0[i]));
    _mm512_storeu_ps(o + 16, _mm512_add_ps(old1, acc1[i]));
  }
}

/// Every tile 16 rows x 64 bytes (palette 1).
struct alignas(64) bf16_amx_config {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
  bf16_amx_config() {
    for (int i = 0; i < 8; ++i) colsb[i] = 64, rows[i] = 16;
  }
};
__attribute__((target("amx-tile"))) inline void bf16_amx_begin() {
  static const bf16_amx_config cfg;
  _tile_loadconfig(&cfg);
}
__attribute__((target("amx-tile"))) inline void bf16_amx_end() { _tile_release(); }

/// C[32 x 32] (+)= A (chunks of 16 pairs, bf16_pack_a_amx's layout, 32 rows) * B (pairs x 32 columns) with tdpbf16ps:
/// tiles 0..3 hold C (rows 0-15 / 16-31 x columns 0-15 / 16-31), 4..5 A's two row halves, 6..7 B's two column halves.
__attribute__((target("amx-tile,amx-bf16"))) inline void bf16_block_amx(index_t chunks, const std::uint32_t* a, const std::uint32_t* b,
                                                                       float* c, index_t ldc, bool accumulate) {
  const index_t sc = ldc * index_t(sizeof(float));
  float* c10 = c + 16 * ldc;
  if (accumulate) {
    _tile_loadd(0, c, sc);
    _tile_loadd(1, c + 16, sc);
    _tile_loadd(2, c10, sc);
    _tile_loadd(3, c10 + 16, sc);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (index_t q = 0; q < chunks; ++q) {
    const std::uint32_t* aq = a + q * 32 * 16;  // 32 rows x 16 pairs
    const std::uint32_t* bq = b + q * 16 * 32;  // 16 pairs x 32 columns (rows 128 bytes apart)
    _tile_loadd(4, aq, 64);
    _tile_loadd(6, bq, 128);
    _tile_loadd(7, bq + 16, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, aq + 16 * 16, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, sc);
  _tile_stored(1, c + 16, sc);
  _tile_stored(2, c10, sc);
  _tile_stored(3, c10 + 16, sc);
}
#endif

/// K block for a product with K rows of B: blocks of equal size, at most about cap, rounded up to a multiple of align
/// (2 when the path packs pairs, 32 for AMX's 16 pairs a tile row: every block but the last is whole pairs / chunks).
inline index_t bf16_kc(index_t K, index_t cap, index_t align) {
  const index_t kblocks = std::max<index_t>(1, (K + cap - 1) / cap);
  const index_t kc = std::max<index_t>(1, (K + kblocks - 1) / kblocks);
  return (kc + align - 1) / align * align;
}

/// Rows of A per block: at most cap_elems / kc (a multiple of MR), in blocks of equal size (as gemm_mc).
inline index_t bf16_mc(index_t M, index_t kc, index_t MR, index_t cap_elems) {
  const index_t cap = std::max<index_t>(MR, cap_elems / std::max<index_t>(kc, 1) / MR * MR);
  if (4 * M <= 5 * cap) return (M + MR - 1) / MR * MR;
  const index_t mblocks = (M + cap - 1) / cap;
  return std::min<index_t>(cap, ((M + mblocks - 1) / mblocks + MR - 1) / MR * MR);
}

/// The widening path: fp32 panels in gemm.hpp's layouts and its micro-kernel.
struct bf16_path_widen {
  using elem = float;
  static constexpr int mr = gemm_blocking<float>::mr, nr = gemm_blocking<float>::nr;
  static constexpr index_t kc_align = 1;
  static index_t kc_cap() { return gemm_blocking<float>::kc; }
  static index_t steps(index_t kc) { return kc; }  ///< packed k steps in a block of kc
  static index_t mc(index_t M, index_t kc) { return gemm_mc<float>(M, kc); }
  static void pack_a(mat_ref<bfloat16> a, index_t i0, index_t p0, index_t rows, index_t kc, float* out) {
    bf16_pack_a_widen<mr>(a, i0, p0, rows, kc, out);
  }
  static void pack_b(mat_ref<bfloat16> b, index_t p0, index_t j0, index_t kc, index_t cols, float* out) {
    bf16_pack_b_widen<nr>(b, p0, j0, kc, cols, out);
  }
  static void tile(index_t kc, const float* a, const float* b, float* c, index_t ldc, bool acc) {
    micro_kernel<float>(kc, a, b, c, ldc, acc);
  }
};

/// The layout of the avx512_bf16 path: pairs of bf16 along K, 14 x 32 tiles (Avx512: the CPU has AVX-512 BW for the
/// interleaving of row-major B; the tests run this layout with a scalar tile where it has not).
template <bool Avx512>
struct bf16_pairs_layout {
  using elem = std::uint32_t;
  static constexpr int mr = 14, nr = 32;
  static constexpr index_t kc_align = 2;
  static index_t kc_cap() { return TESSERA_BF16_KC; }
  static index_t steps(index_t kc) { return (kc + 1) / 2; }
  static index_t mc(index_t M, index_t kc) { return bf16_mc(M, kc, mr, index_t(TESSERA_BF16_MC) * TESSERA_BF16_KC); }
  static void pack_a(mat_ref<bfloat16> a, index_t i0, index_t p0, index_t rows, index_t kc, std::uint32_t* out) {
    bf16_pack_a_pairs<mr>(a, i0, p0, rows, kc, out);
  }
  static void pack_b(mat_ref<bfloat16> b, index_t p0, index_t j0, index_t kc, index_t cols, std::uint32_t* out) {
    bf16_pack_b_pairs<nr>(b, p0, j0, kc, cols, out, Avx512);
  }
};

/// The layout of the amx_bf16 path: A in tile rows of 16 pairs, B pairs padded to whole chunks of 16, 32 x 32 blocks.
template <bool Avx512>
struct bf16_amx_layout {
  using elem = std::uint32_t;
  static constexpr int mr = 32, nr = 32;
  static constexpr index_t kc_align = 32;
  static index_t kc_cap() { return TESSERA_BF16_AMX_KC; }
  static index_t steps(index_t kc) { return ((kc + 1) / 2 + 15) / 16 * 16; }  ///< pairs, rounded up to 16
  static index_t mc(index_t M, index_t kc) { return bf16_mc(M, kc, mr, index_t(TESSERA_BF16_MC) * TESSERA_BF16_KC); }
  static void pack_a(mat_ref<bfloat16> a, index_t i0, index_t p0, index_t rows, index_t kc, std::uint32_t* out) {
    bf16_pack_a_amx<mr>(a, i0, p0, rows, kc, steps(kc), out);
  }
  static void pack_b(mat_ref<bfloat16> b, index_t p0, index_t j0, index_t kc, index_t cols, std::uint32_t* out) {
    bf16_pack_b_pairs<nr>(b, p0, j0, kc, cols, out, Avx512);
    const index_t np = (kc + 1) / 2;
    std::memset(out + np * nr, 0, std::size_t(steps(kc) - np) * nr * sizeof(std::uint32_t));  // whole chunks
  }
};

#if TESSERA_BF16_X86
/// The AVX512-BF16 path: vdpbf16ps on the pairs layout.
struct bf16_path_avx512 : bf16_pairs_layout<true> {
  static void tile(index_t kc, const std::uint32_t* a, const std::uint32_t* b, float* c, index_t ldc, bool acc) {
    bf16_tile_avx512<mr>(steps(kc), a, b, c, ldc, acc);
  }
};

/// The AMX-BF16 path: tdpbf16ps on the AMX layout; each thread loads the tile configuration before its first block.
struct bf16_path_amx : bf16_amx_layout<true> {
  static void tile(index_t kc, const std::uint32_t* a, const std::uint32_t* b, float* c, index_t ldc, bool acc) {
    bf16_block_amx(steps(kc) / 16, a, b, c, ldc, acc);
  }
  static void begin() { bf16_amx_begin(); }
  static void end() { bf16_amx_end(); }
};
#endif

/// Packing space kept by each thread between products (its own, not the fp32 GEMM's).
struct bf16_workspace {
  pack_buffers<float> widen;
  pack_buffers<std::uint32_t> pairs;
  template <class E>
  pack_buffers<E>& get() {
    if constexpr (std::is_same_v<E, float>) return widen;
    else return pairs;
  }
  static bf16_workspace& of_this_thread() {
    thread_local bf16_workspace w;
    return w;
  }
};

/// The packed driver (both SIMD paths), the loop structure of cpu_gemm with A always packed: for each N block and K
/// block, each thread packs the B panels it will compute with (no barrier: the same static schedule hands it the same
/// panels), then for each M block the threads pack A's panels together (a barrier) and compute their panels' tiles.
/// Edge tiles are computed into a local tile whose valid part is stored (or added). The epilogue runs on each tile
/// of the K block that completes it.
template <class Path, class Epi>
void bf16_gemm_packed(index_t M, index_t N, index_t K, mat_ref<bfloat16> a, mat_ref<bfloat16> b, float* c, index_t ldc,
                      bool accumulate, int nt, const Epi& epi) {
  using E = typename Path::elem;
  constexpr int MR = Path::mr, NR = Path::nr;
  constexpr index_t NC = std::max<index_t>(NR, index_t(TESSERA_BF16_NC) / NR * NR);
  const index_t KC = bf16_kc(K, Path::kc_cap(), Path::kc_align), KS = Path::steps(KC);
  const index_t ncap = std::min<index_t>(NC, (N + NR - 1) / NR * NR);
  const index_t MC = Path::mc(M, KC);
  (void)nt;  // (without OpenMP)
  auto& ws = bf16_workspace::of_this_thread().template get<E>();
  E* const bpk = pack_buffers<E>::grow(ws.b, ws.b_size, std::size_t(KS) * std::size_t(ncap));
  E* const apk = pack_buffers<E>::grow(ws.a, ws.a_size, std::size_t(KS) * std::size_t(MC + MR));
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    alignas(64) float tile[MR * NR];
    if constexpr (requires { Path::begin(); }) Path::begin();
    for (index_t jc = 0; jc < N; jc += NC) {
      const index_t nc = std::min<index_t>(NC, N - jc);
      for (index_t pc = 0; pc < K; pc += KC) {
        const index_t kc = std::min<index_t>(KC, K - pc), ks = Path::steps(kc);
        const bool acc = accumulate || pc > 0, last = pc + kc == K;
        // B panels KS * NR apart whatever this block's kc: a thread packing the next (shorter) K block never writes
        // into a panel another thread still reads (it only ever reads its own)
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
        for (index_t jr = 0; jr < nc; jr += NR)
          Path::pack_b(b, pc, jc + jr, kc, std::min<index_t>(NR, nc - jr), bpk + (jr / NR) * KS * NR);
        for (index_t ic = 0; ic < M; ic += MC) {
          const index_t mc = std::min<index_t>(MC, M - ic);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
          for (index_t ir = 0; ir < mc; ir += MR)
            Path::pack_a(a, ic + ir, pc, std::min<index_t>(MR, mc - ir), kc, apk + (ir / MR) * ks * MR);
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
          for (index_t jr = 0; jr < nc; jr += NR) {
            const index_t cols = std::min<index_t>(NR, nc - jr);
            const E* bp = bpk + (jr / NR) * KS * NR;
            for (index_t ir = 0; ir < mc; ir += MR) {
              const index_t rows = std::min<index_t>(MR, mc - ir);
              const E* ap = apk + (ir / MR) * ks * MR;
              float* cp = c + (ic + ir) * ldc + jc + jr;
              if (rows == MR && cols == NR) {
                Path::tile(kc, ap, bp, cp, ldc, acc);
              } else {
                Path::tile(kc, ap, bp, tile, NR, false);
                for (index_t i = 0; i < rows; ++i)
                  for (index_t j = 0; j < cols; ++j) cp[i * ldc + j] = acc ? cp[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
              }
              if constexpr (Epi::active)
                if (last) epi(ic + ir, jc + jr, rows, cols);
            }
          }
#if defined(_OPENMP)
#pragma omp barrier
#endif
        }
      }
    }
    if constexpr (requires { Path::end(); }) Path::end();
  }
}

/// Plain loops: C's rows split between the threads, each row summed in fp32 (k outer, j inner) and then stored or
/// added; the epilogue runs on each thread's rows.
template <class Epi>
void bf16_gemm_portable(index_t M, index_t N, index_t K, mat_ref<bfloat16> a, mat_ref<bfloat16> b, float* c, index_t ldc,
                        bool accumulate, int nt, const Epi& epi) {
  auto rows = [&](index_t i0, index_t i1) {
    if (i0 >= i1) return;
    std::vector<float> sum(static_cast<std::size_t>(N));
    for (index_t i = i0; i < i1; ++i) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (index_t k = 0; k < K; ++k) {
        const float av = bf16_widen(a(i, k));
        for (index_t j = 0; j < N; ++j) sum[std::size_t(j)] += av * bf16_widen(b(k, j));
      }
      float* ci = c + i * ldc;
      for (index_t j = 0; j < N; ++j) ci[j] = accumulate ? ci[j] + sum[std::size_t(j)] : sum[std::size_t(j)];
    }
    if constexpr (Epi::active) epi(i0, 0, i1 - i0, N);
  };
#if defined(_OPENMP)
  if (nt > 1 && M > 1) {
#pragma omp parallel num_threads(nt)
    {
      const index_t t = omp_get_thread_num(), n = omp_get_num_threads();
      rows(M * t / n, M * (t + 1) / n);
    }
    return;
  }
#endif
  (void)nt;
  rows(0, M);
}

#if TESSERA_SIMD
/// L bfloat16 at p as L floats (zero-extended to 32 bits, shifted into the upper half: exact).
template <int L>
TS_INLINE simd::vec<float, L> bf16_widen_vec(const bfloat16* p) {
  // (GCC 12 made __builtin_convertvector of 8 lanes two 128-bit vpmovzxwd and a vinserti128: the AVX2 and AVX-512
  // forms are spelled out)
#if defined(__AVX512F__)
  if constexpr (L == 16)
    return (simd::vec<float, L>)_mm512_maskz_slli_epi32(  // (the unmasked forms warn, GCC 12: their undefined passthrough)
        __mmask16(0xffff), _mm512_maskz_cvtepu16_epi32(__mmask16(0xffff), _mm256_loadu_si256((const __m256i*)p)), 16);
#endif
#if defined(__AVX2__)
  if constexpr (L == 8) return (simd::vec<float, L>)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16);
#endif
  simd::vec<std::uint16_t, L> h;
  std::memcpy(&h, p, sizeof(h));
  const simd::vec<std::uint32_t, L> w = __builtin_convertvector(h, simd::vec<std::uint32_t, L>) << 16;
  simd::vec<float, L> f;
  std::memcpy(&f, &w, sizeof(f));
  return f;
}
#endif

/// Products with at most 8 rows of A (row-major; 16 when B's columns are contiguous) and B's rows or columns contiguous
/// (a Linear at batch 1 to 16): no
/// packing (packing all of B for a few rows cost 10x the fp32 GEMM's time at 1 x 1024 x 1024), bf16 widened in
/// registers. B's columns contiguous (W^T): each element of C is a dot product along K, 4 columns x 4 rows at a
/// time; B's rows contiguous: C's rows are sums of B's rows scaled by A's elements, 4 rows x 2 vectors of C held in
/// registers. Threads split the columns in strips of 64; the epilogue runs on each strip. Returns false when the
/// product is not of that kind (the fp32 GEMM's skinny_gemm, in bf16).
template <class Epi>
bool bf16_gemm_skinny(index_t M, index_t N, index_t K, mat_ref<bfloat16> a, mat_ref<bfloat16> b, float* c, index_t ldc,
                      bool accumulate, int nthreads, const Epi& epi) {
  constexpr index_t MS = 4;
  const bool dots = b.rs == 1 && b.cs != 1;
  if (M > (dots ? 4 : 2) * MS || K < 1 || a.cs != 1 || (b.rs != 1 && b.cs != 1)) return false;
  const int nt = 2.0 * double(M) * double(N) * double(K) < 4e5 ? 1 : std::max(1, nthreads);
  auto store = [&](index_t i, index_t j, float v) {
    float& out = c[i * ldc + j];
    out = accumulate ? out + v : v;
  };
  auto strip = [&](index_t j0, index_t j1) {
    index_t j = j0;
    if (dots) {
#if TESSERA_SIMD
      constexpr int L = simd::lanes_for<sizeof(float)>;
      using V = simd::vec<float, L>;
      for (; j + 4 <= j1; j += 4)
        for (index_t i0 = 0; i0 < M; i0 += MS) {
          const index_t mr = std::min(MS, M - i0);
          V acc[MS][4] = {};
          index_t k = 0;
          for (; k + L <= K; k += L) {
            V bv[4];
            TS_UNROLL
            for (int q = 0; q < 4; ++q) bv[q] = bf16_widen_vec<L>(b.p + (j + q) * b.cs + k);
            TS_UNROLL
            for (int i = 0; i < int(MS); ++i) {
              if (i >= mr) break;
              const V av = bf16_widen_vec<L>(a.p + (i0 + i) * a.rs + k);
              TS_UNROLL
              for (int q = 0; q < 4; ++q) acc[i][q] += av * bv[q];
            }
          }
          TS_UNROLL
          for (int i = 0; i < int(MS); ++i) {
            if (i >= mr) break;
            TS_UNROLL
            for (int q = 0; q < 4; ++q) {
              float v = simd::reduce_add<float, L>(acc[i][q]);
              for (index_t kk = k; kk < K; ++kk) v += bf16_widen(a.p[(i0 + i) * a.rs + kk]) * bf16_widen(b.p[(j + q) * b.cs + kk]);
              store(i0 + i, j + q, v);
            }
          }
        }
#endif
      for (; j < j1; ++j)
        for (index_t i = 0; i < M; ++i) {
          float v = 0.0f;
          for (index_t k = 0; k < K; ++k) v += bf16_widen(a.p[i * a.rs + k]) * bf16_widen(b.p[j * b.cs + k]);
          store(i, j, v);
        }
    } else {
#if TESSERA_SIMD
      constexpr int L = simd::lanes_for<sizeof(float)>;
      using V = simd::vec<float, L>;
      for (; j + 2 * L <= j1; j += 2 * L)
        for (index_t i0 = 0; i0 < M; i0 += MS) {
          const index_t mr = std::min(MS, M - i0);
          V acc[MS][2] = {};
          for (index_t k = 0; k < K; ++k) {
            const V b0 = bf16_widen_vec<L>(b.p + k * b.rs + j), b1 = bf16_widen_vec<L>(b.p + k * b.rs + j + L);
            TS_UNROLL
            for (int i = 0; i < int(MS); ++i) {
              if (i >= mr) break;
              const V av = V{} + bf16_widen(a.p[(i0 + i) * a.rs + k]);  // broadcast
              acc[i][0] += av * b0;
              acc[i][1] += av * b1;
            }
          }
          TS_UNROLL
          for (int i = 0; i < int(MS); ++i) {
            if (i >= mr) break;
            for (int l = 0; l < L; ++l) {
              store(i0 + i, j + l, acc[i][0][l]);
              store(i0 + i, j + L + l, acc[i][1][l]);
            }
          }
        }
#endif
      for (; j < j1; j += 64) {  // the last columns (all of them without SIMD): C's rows summed in fp32, 64 at a time
        const index_t n = std::min<index_t>(64, j1 - j);
        for (index_t i = 0; i < M; ++i) {
          float sum[64] = {};
          for (index_t k = 0; k < K; ++k) {
            const float s = bf16_widen(a.p[i * a.rs + k]);
            for (index_t jj = 0; jj < n; ++jj) sum[jj] += s * bf16_widen(b.p[k * b.rs + j + jj]);
          }
          for (index_t jj = 0; jj < n; ++jj) store(i, j + jj, sum[jj]);
        }
      }
    }
    if constexpr (Epi::active) epi(0, j0, M, j1 - j0);
  };
  for_column_strips(N, nt, strip);  // strips of 64 columns, split evenly between the threads (gemm.hpp)
  return true;
}

/// The path a product takes: the active one, except that AMX needs rows and k to fill its tiles (16 x 32).
inline bf16_isa bf16_isa_for(index_t M, index_t /*N*/, index_t K) {
  const bf16_isa isa = bf16_isa_active();
  if (isa == bf16_isa::amx_bf16 && (M < 8 || K < 32)) return bf16_isa::avx512_bf16;
  return isa;
}

/// C = A * B (or C += A * B with accumulate): A M x K and B K x N bfloat16 through strides, C fp32 with row stride
/// ldc (unit column stride), fp32 accumulation. An active epilogue is called as epi(i0, j0, rows, cols) on every
/// tile of C once it is final (a single call with the whole of C when K is 0). Threads: up to nthreads, one for
/// products under 2e6 flops.
/// (Active epilogues of any type reach the body as one epilogue_ref: one instantiation of the kernel for them all.)
template <class Epi = no_epilogue>
void cpu_gemm_bf16(index_t M, index_t N, index_t K, mat_ref<bfloat16> a, mat_ref<bfloat16> b, float* c, index_t ldc,
                   bool accumulate, int nthreads, const Epi& epi = {}) {
  if constexpr (Epi::active && !is_epilogue_ref<Epi>) {
    cpu_gemm_bf16(M, N, K, a, b, c, ldc, accumulate, nthreads, erase_epilogue<index_t, index_t, index_t, index_t>(epi));
  } else {
    if (M < 0 || N < 0 || K < 0 || ldc < N)
      throw shape_error("bf16 GEMM: C [" + std::to_string(M) + ", " + std::to_string(N) + "] = A [" + std::to_string(M) + ", " +
                        std::to_string(K) + "] * B [" + std::to_string(K) + ", " + std::to_string(N) + "] with ldc " +
                        std::to_string(ldc) + ": extents must be >= 0 and ldc >= N");
    if (M == 0 || N == 0) return;
    stats::count_pass();
    if (K == 0) {
      if (!accumulate)
        for (index_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + N, 0.0f);
      if constexpr (Epi::active) epi(0, 0, M, N);
      return;
    }
    const double flops = 2.0 * double(M) * double(N) * double(K);
    const int nt = flops < 2e6 ? 1 : std::max(1, nthreads);
    const bf16_isa isa = bf16_isa_for(M, N, K);
    if (isa != bf16_isa::portable && bf16_gemm_skinny(M, N, K, a, b, c, ldc, accumulate, nthreads, epi)) return;
    switch (isa) {
#if TESSERA_BF16_X86
      case bf16_isa::amx_bf16: return bf16_gemm_packed<bf16_path_amx>(M, N, K, a, b, c, ldc, accumulate, nt, epi);
      case bf16_isa::avx512_bf16: return bf16_gemm_packed<bf16_path_avx512>(M, N, K, a, b, c, ldc, accumulate, nt, epi);
#endif
      case bf16_isa::portable: return bf16_gemm_portable(M, N, K, a, b, c, ldc, accumulate, nt, epi);
      default: return bf16_gemm_packed<bf16_path_widen>(M, N, K, a, b, c, ldc, accumulate, nt, epi);
    }
  }
}

}  // namespace tessera::detail
