// CPU GEMM: C (+)= A * B for float and double, any strides on A and B (transposed views need no copy).
// BLIS-style blocking: B is packed in KC x NC blocks of NR-wide panels (shared by the threads), A in MC x KC
// blocks of MR-tall panels; an MR x NR register-blocked micro-kernel (14 x 32 floats with AVX-512: 28
// accumulators, 2 loads and 14 broadcast FMAs per k; 6 x 16 with AVX2: 12 accumulators, 2 loads, 6 broadcasts and
// 12 FMAs per k) does the arithmetic. Threads split the NR panels.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "tessera/core/simd.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/backend.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if TESSERA_SIMD && defined(__AVX__)
#include <immintrin.h>
#endif

namespace tessera::detail {

template <class T>
struct gemm_blocking {
#if TESSERA_SIMD
  static constexpr int lanes = TESSERA_VECTOR_BYTES / int(sizeof(T));
  static constexpr int nv = 2;                                 // vectors across a micro-tile row
  static constexpr int nr = lanes * nv;                        // 32 floats / 16 doubles with AVX-512
  static constexpr int mr = TESSERA_VECTOR_BYTES == 64 ? 14 : 6;  // 32 vector registers, or 16
#else
  static constexpr int lanes = 1, nv = 4, nr = 4, mr = 4;
#endif
#ifndef TESSERA_GEMM_KC
#define TESSERA_GEMM_KC 1024  // floats; 2 threads, against 512: 2048^3 +5% (fewer passes over C), 1024^3 +2%, 768^3 +3%
#endif
#ifndef TESSERA_GEMM_MC
#define TESSERA_GEMM_MC 224
#endif
#ifndef TESSERA_GEMM_PREFETCH
#define TESSERA_GEMM_PREFETCH 1  // C tile and B rows 8 ahead: 2048^3 310 -> 323 GFLOP/s on the test machine
#endif
#ifndef TESSERA_GEMM_NC
#define TESSERA_GEMM_NC 4096
#endif
  // measured on the 2-core test machine (KC 256..1024, MC 112..336 tried); doubles keep 4 KiB of A's row (512: 1024
  // measured no better for DGEMM)
  static constexpr int kc = TESSERA_GEMM_KC * 4 / int(sizeof(T));
  static constexpr int mc = TESSERA_GEMM_MC;  // an A block (mc x 512 elements at most, see gemm_mc) stays in L2
  static constexpr int nc = TESSERA_GEMM_NC;  // a B block (kc x nc) stays in L3
};

/// Packing buffers kept by the calling thread between products (large ones come from mmap: allocating
/// them per call costs page faults that dominate small products).
template <class T>
struct pack_buffers {
  T* a = nullptr;
  T* b = nullptr;
  std::size_t a_size = 0, b_size = 0;
  static T* grow(T*& p, std::size_t& have, std::size_t n) {
    if (n > have) {
      std::free(p);
      p = static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
      if (!p) throw std::bad_alloc();
      have = n;
    }
    return p;
  }
  ~pack_buffers() {
    std::free(a);
    std::free(b);
  }
  static pack_buffers& of_this_thread() {
    thread_local pack_buffers buffers;
    return buffers;
  }
};

/// A[i0 .. i0+mc) x [p0 .. p0+kc) into MR-tall panels, k-major inside a panel; rows past mc are zero.
template <class T, int MR>
void pack_a(mat_ref<T> a, index_t i0, index_t p0, index_t mc, index_t kc, T* out) {
  for (index_t ir = 0; ir < mc; ir += MR) {
    const index_t rows = std::min<index_t>(MR, mc - ir);
    for (index_t k = 0; k < kc; ++k) {
      const T* src = a.p + (i0 + ir) * a.rs + (p0 + k) * a.cs;
      index_t i = 0;
      for (; i < rows; ++i) out[i] = src[i * a.rs];
      for (; i < MR; ++i) out[i] = T(0);
      out += MR;
    }
  }
}

/// B[p0 .. p0+kc) x [j0 .. j0+nc) into NR-wide panels, k-major inside a panel; columns past nc are zero.
template <class T, int NR>
void pack_b_panel(mat_ref<T> b, index_t p0, index_t j0, index_t kc, index_t cols, T* out) {
  for (index_t k = 0; k < kc; ++k) {
    const T* src = b.p + (p0 + k) * b.rs + j0 * b.cs;
    index_t j = 0;
    if (b.cs == 1 && cols == NR) {  // a whole panel row: a copy of constant size, inlined (no library call)
      std::memcpy(out, src, NR * sizeof(T));
      j = NR;
    } else if (b.cs == 1) {
      std::memcpy(out, src, std::size_t(cols) * sizeof(T));
      j = cols;
    } else {
      for (; j < cols; ++j) out[j] = src[j * b.cs];
    }
    for (; j < NR; ++j) out[j] = T(0);
    out += NR;
  }
}

#if TESSERA_SIMD
template <class T, int N>
TS_INLINE simd::vec<T, N> splat_load(const T* p) {
#if defined(__AVX512F__)
  if constexpr (N * sizeof(T) == 64 && std::is_same_v<T, float>) return (simd::vec<T, N>)_mm512_set1_ps(*p);
  else if constexpr (N * sizeof(T) == 64 && std::is_same_v<T, double>) return (simd::vec<T, N>)_mm512_set1_pd(*p);
  else
#endif
#if defined(__AVX__)
  // (the generic loop below became vbroadcastss + vinsertf128, or a chain of vinsertps, for 8 floats: the 6 x 16
  // micro-kernel ran at half of the FMA peak on Zen 3)
  if constexpr (N * sizeof(T) == 32 && std::is_same_v<T, float>) return (simd::vec<T, N>)_mm256_broadcast_ss(p);
  else if constexpr (N * sizeof(T) == 32 && std::is_same_v<T, double>) return (simd::vec<T, N>)_mm256_broadcast_sd(p);
  else
#endif
  {
    simd::vec<T, N> v;
    for (int i = 0; i < N; ++i) v[i] = *p;  // recognised as a broadcast load
    return v;
  }
}
#endif

/// How the micro-kernel finds A's element (i, k), i < MR: at(k)[offset(i)].
template <class T, int MR>
struct packed_a {  ///< an MR-tall packed panel, k-major
  const T* __restrict a;
  TS_INLINE const T* at(index_t k) const { return a + k * MR; }
  static constexpr index_t offset(int i) { return i; }
};
template <class T>
struct rowmajor_a {  ///< rows of a row-major matrix read in place
  const T* __restrict a;
  index_t lda;
  TS_INLINE const T* at(index_t k) const { return a + k; }
  TS_INLINE index_t offset(int i) const { return i * lda; }
};
template <class T>
struct taps_a {  ///< convolution: for tap k, the MR pixels' values at a0[ko[k] + i]
  const T* __restrict a0;
  const index_t* __restrict ko;
  TS_INLINE const T* at(index_t k) const { return a0 + ko[k]; }
  static constexpr index_t offset(int i) { return i; }
};

/// C[MR x NR] (+)= A[MR x kc] * B[kc x NR], B's row k at b + k*ldb; C row stride ldc, unit column stride. The
/// register tile: MR x NR = 14 x 32 floats with AVX-512 (28 accumulators, 2 vector loads and 14 broadcast FMAs
/// per k).
template <class T, class A>
TS_INLINE void micro_tile(index_t kc, const A& a, const T* __restrict b, index_t ldb, T* c, index_t ldc, bool accumulate) {
  using B = gemm_blocking<T>;
  constexpr int MR = B::mr, NR = B::nr;
#if TESSERA_SIMD
  constexpr int L = B::lanes, NV = B::nv;
  using V = simd::vec<T, L>;
  V acc[MR][NV];
  TS_UNROLL
  for (int i = 0; i < MR; ++i)
    TS_UNROLL
    for (int j = 0; j < NV; ++j) acc[i][j] = V{};
#if TESSERA_GEMM_PREFETCH
  TS_UNROLL
  for (int i = 0; i < MR; ++i) {  // the C tile is read (or overwritten) at the end: start fetching it now
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NR - 1, 1, 3);
  }
#endif
  for (index_t k = 0; k < kc; ++k) {
    const T* ak = a.at(k);
#if TESSERA_GEMM_PREFETCH
    __builtin_prefetch(b + (k + 8) * ldb, 0, 3);
    __builtin_prefetch(b + (k + 8) * ldb + L, 0, 3);
#endif
    V bv[NV];
    TS_UNROLL
    for (int j = 0; j < NV; ++j) std::memcpy(&bv[j], b + k * ldb + j * L, sizeof(V));
    TS_UNROLL
    for (int i = 0; i < MR; ++i) {
      const V av = splat_load<T, L>(ak + a.offset(i));
      TS_UNROLL
      for (int j = 0; j < NV; ++j) acc[i][j] += av * bv[j];
    }
  }
  TS_UNROLL
  for (int i = 0; i < MR; ++i)
    TS_UNROLL
    for (int j = 0; j < NV; ++j) {
      V cur = acc[i][j];
      if (accumulate) {
        V old;
        std::memcpy(&old, c + i * ldc + j * L, sizeof(V));
        cur += old;
      }
      std::memcpy(c + i * ldc + j * L, &cur, sizeof(V));
    }
#else
  T acc[MR][NR] = {};
  for (index_t k = 0; k < kc; ++k)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a.at(k)[a.offset(i)] * b[k * ldb + j];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
#endif
}

/// C[MR x NR] (+)= Apanel * Bpanel over kc (both packed).
template <class T>
TS_INLINE void micro_kernel(index_t kc, const T* __restrict a, const T* __restrict b, T* c, index_t ldc, bool accumulate) {
  micro_tile<T>(kc, packed_a<T, gemm_blocking<T>::mr>{a}, b, gemm_blocking<T>::nr, c, ldc, accumulate);
}

/// The micro-kernel reading A and B where they are (row-major, unit column stride): for products small enough
/// that packing them would cost more than it saves.
template <class T>
TS_INLINE void micro_kernel_unpacked(index_t kc, const T* __restrict a, index_t lda, const T* __restrict b, index_t ldb, T* c,
                                     index_t ldc, bool accumulate) {
  micro_tile<T>(kc, rowmajor_a<T>{a, lda}, b, ldb, c, ldc, accumulate);
}


/// Threaded products up to about 200^3 with row-major A and B: no packing, no K blocking and no barriers; the threads
/// share out the MR x NR tiles (full tiles read A and B in place; edge tiles go through small zero-padded
/// copies). Returns false when the product is not of that kind.
template <class T, class Epi>
bool small_gemm(index_t M, index_t N, index_t K, mat_ref<T> a, mat_ref<T> b, T* c, index_t ldc, bool accumulate, int nthreads,
                const Epi& epi) {
  using BL = gemm_blocking<T>;
  constexpr int MR = BL::mr, NR = BL::nr;
  // measured on the 2-core AVX-512 test machine: in place wins for the threaded sizes up to about 200^3 (at 128^3
  // 164 against 126 GFLOP/s packed); single-threaded small products and larger ones (B rows 1 KiB apart alias in
  // the caches) do better packed
  const double volume = double(M) * double(N) * double(K);
  if (a.cs != 1 || b.cs != 1 || K > 320 || volume > 200.0 * 200.0 * 200.0 || 2.0 * volume < 2e6) return false;
  const index_t mt = (M + MR - 1) / MR, ntl = (N + NR - 1) / NR, tiles = mt * ntl;
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int nt = flops < 2e6 ? 1 : std::max(1, nthreads);
  auto tile_job = [&](index_t t) {
    const index_t jr = (t / mt) * NR, ir = (t % mt) * MR;  // column-panel major: a thread keeps its B panel
    const index_t rows = std::min<index_t>(MR, M - ir), cols = std::min<index_t>(NR, N - jr);
    T* cp = c + ir * ldc + jr;
    if (rows == MR && cols == NR) {
      micro_kernel_unpacked<T>(K, a.p + ir * a.rs, a.rs, b.p + jr, b.rs, cp, ldc, accumulate);
    } else {
      auto& buf = pack_buffers<T>::of_this_thread();
      T* ap = pack_buffers<T>::grow(buf.a, buf.a_size, std::size_t(MR * K + NR * K + MR * NR));
      T* bp = ap + MR * K;
      T* tile = bp + NR * K;
      for (index_t i = 0; i < MR; ++i)
        for (index_t k = 0; k < K; ++k) ap[i * K + k] = i < rows ? a.p[(ir + i) * a.rs + k] : T(0);
      for (index_t k = 0; k < K; ++k)
        for (index_t j = 0; j < NR; ++j) bp[k * NR + j] = j < cols ? b.p[k * b.rs + jr + j] : T(0);
      micro_kernel_unpacked<T>(K, ap, K, bp, NR, tile, NR, false);
      for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) cp[i * ldc + j] = accumulate ? cp[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
    }
    if constexpr (Epi::active) epi(ir, jr, rows, cols);
  };
  if (nt > 1 && tiles > 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (index_t t = 0; t < tiles; ++t) tile_job(t);
  } else {
    for (index_t t = 0; t < tiles; ++t) tile_job(t);
  }
  return true;
}

/// The skinny products' threads (skinny_gemm here, bf16_gemm_skinny in gemm_bf16.hpp): N columns in strips of 64
/// (whole cache lines of C), split evenly between nt threads; strip(j0, j1) runs each thread's columns [j0, j1).
template <class Strip>
void for_column_strips(index_t N, int nt, const Strip& strip) {
  constexpr index_t W = 64;
  const index_t strips = (N + W - 1) / W;
  auto run = [&](int tid, int n) {
    const index_t s0 = strips * tid / n, s1 = strips * (tid + 1) / n;
    if (s0 < s1) strip(s0 * W, std::min(N, s1 * W));
  };
#if defined(_OPENMP)
  if (nt > 1 && strips > 1) {
#pragma omp parallel num_threads(nt)
    run(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  (void)nt;
  run(0, 1);
}

/// Products with at most 8 rows of A (16 when B's columns are contiguous: a Linear at batch 1 to 16, a matrix-vector
/// product) and A's rows contiguous:
/// nothing is packed (packing B, a Linear's whole weight, cost more than the product). When B's columns are contiguous
/// (a Linear's W^T, a transposed view) each element of C is a dot product along K, 4 columns x 4 rows at a time;
/// when B's rows are, C's rows are sums of B's rows scaled by A's elements. Threads split the columns in strips of 64;
/// the epilogue runs on each thread's strip. Returns false when the product is not of that kind.
template <class T, class Epi>
bool skinny_gemm(index_t M, index_t N, index_t K, mat_ref<T> a, mat_ref<T> b, T* c, index_t ldc, bool accumulate, int nthreads,
                 const Epi& epi) {
  constexpr index_t MS = 4;  // rows per register block
  const bool dots = b.rs == 1 && b.cs != 1;
  // dot products up to 16 rows: packing a transposed B gathers 16 rows K apart per k (one L1 set when K is a multiple
  // of 1024); on Zen 3 at 9 x 1024 x 512, W^T, the packed path took 663 us on 1 thread and 1002 us on 2
  if (M > (dots ? 4 : 2) * MS || K < 1 || a.cs != 1 || (b.rs != 1 && b.cs != 1)) return false;
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int nt = flops < 4e5 ? 1 : std::max(1, nthreads);
  // columns [j0, j1) of every row of C
  auto strip = [&](index_t j0, index_t j1) {
    if (dots) {
      index_t j = j0;
#if TESSERA_SIMD
      constexpr int L = simd::lanes_for<sizeof(T)>;
      using V = simd::vec<T, L>;
      for (; j + 4 <= j1; j += 4)  // 4 columns x 4 rows of dot products, vector accumulators along K
        for (index_t i0 = 0; i0 < M; i0 += MS) {
          const index_t mr = std::min(MS, M - i0);
          const T* ab = a.p + i0 * a.rs;
          T* cb = c + i0 * ldc;
          V acc[MS][4] = {};
          index_t k = 0;
          for (; k + L <= K; k += L) {
            V bv[4];
            TS_UNROLL
            for (int q = 0; q < 4; ++q) std::memcpy(&bv[q], b.p + (j + q) * b.cs + k, sizeof(V));
            TS_UNROLL
            for (int i = 0; i < int(MS); ++i) {
              if (i >= mr) break;
              V av;
              std::memcpy(&av, ab + i * a.rs + k, sizeof(V));
              TS_UNROLL
              for (int q = 0; q < 4; ++q) acc[i][q] += av * bv[q];
            }
          }
          TS_UNROLL
          for (int i = 0; i < int(MS); ++i) {
            if (i >= mr) break;
            TS_UNROLL
            for (int q = 0; q < 4; ++q) {
              T v = simd::reduce_add<T, L>(acc[i][q]);
              for (index_t kk = k; kk < K; ++kk) v += ab[i * a.rs + kk] * b.p[(j + q) * b.cs + kk];
              T& out = cb[i * ldc + j + q];
              out = accumulate ? out + v : v;
            }
          }
        }
#endif
      for (; j < j1; ++j)
        for (index_t i = 0; i < M; ++i) {
          T v = T(0);
          for (index_t k = 0; k < K; ++k) v += a.p[i * a.rs + k] * b.p[j * b.cs + k * b.rs];
          T& out = c[i * ldc + j];
          out = accumulate ? out + v : v;
        }
    } else {  // rows of B contiguous: C[i, strip] (+)= sum_k A[i, k] B[k, strip]
      index_t j = j0;
#if TESSERA_SIMD
      // 4 rows x 2 vectors of C held in registers over all of K (2 loads of B, 4 broadcasts of A, 8 FMAs per k): C is
      // written once. (C's rows updated in memory for every k were store-bound, and where a thread's strip began
      // inside the other thread's cache line the two threads wrote that line K times each: 2 threads ran 2.5x slower
      // than 1 at 8 x 512 x 128 on Zen 3.)
      constexpr int L = simd::lanes_for<sizeof(T)>;
      using V = simd::vec<T, L>;
      for (; j + 2 * L <= j1; j += 2 * L)
        for (index_t i0 = 0; i0 < M; i0 += MS) {
          const index_t mr = std::min(MS, M - i0);
          const T* ab = a.p + i0 * a.rs;
          V acc[MS][2] = {};
          for (index_t k = 0; k < K; ++k) {
            V bv[2];
            std::memcpy(&bv[0], b.p + k * b.rs + j, sizeof(V));
            std::memcpy(&bv[1], b.p + k * b.rs + j + L, sizeof(V));
            TS_UNROLL
            for (int i = 0; i < int(MS); ++i) {
              if (i >= mr) break;
              const V av = splat_load<T, L>(ab + i * a.rs + k);
              acc[i][0] += av * bv[0];
              acc[i][1] += av * bv[1];
            }
          }
          TS_UNROLL
          for (int i = 0; i < int(MS); ++i) {
            if (i >= mr) break;
            TS_UNROLL
            for (int h = 0; h < 2; ++h) {
              T* out = c + (i0 + i) * ldc + j + h * L;
              V cur = acc[i][h];
              if (accumulate) {
                V old;
                std::memcpy(&old, out, sizeof(V));
                cur += old;
              }
              std::memcpy(out, &cur, sizeof(V));
            }
          }
        }
#endif
      for (index_t i = 0; i < M && j < j1; ++i) {  // the last columns (fewer than 2 vectors)
        T* ci = c + i * ldc;
        if (!accumulate) std::fill(ci + j, ci + j1, T(0));
        const T* ai = a.p + i * a.rs;
        for (index_t k = 0; k < K; ++k) {
          const T s = ai[k];
          const T* bk = b.p + k * b.rs;
          for (index_t jj = j; jj < j1; ++jj) ci[jj] += s * bk[jj];
        }
      }
    }
    if constexpr (Epi::active) epi(0, j0, M, j1 - j0);
  };
  for_column_strips(N, nt, strip);
  return true;
}

/// K block size for a product with K rows of B: blocks of equal size (K = 1100 at cap 1024: 2 x 550, not 1024 + 76:
/// a short last block costs a full pass over C), at most cap; 1 when K is 0.
template <class T>
index_t gemm_kc(index_t K, index_t cap = gemm_blocking<T>::kc) {
  const index_t kblocks = (K + cap - 1) / cap;
  return kblocks > 0 ? (K + kblocks - 1) / kblocks : 1;
}

/// B packed once for many products with the same B (an RNN's recurrent weights): every K block's NR-wide panels,
/// in the layout cpu_gemm packs into. Block pc, panel of column j at data() + pc * npad + j * kc.
template <class T>
struct packed_b {
  std::vector<T> panels;
  index_t K = 0, N = 0, npad = 0;
  packed_b() = default;
  packed_b(mat_ref<T> b, index_t K_, index_t N_) : K(K_), N(N_) {
    constexpr int NR = gemm_blocking<T>::nr;
    npad = (N + NR - 1) / NR * NR;
    panels.resize(std::size_t(K * npad));
    const index_t KC = gemm_kc<T>(K);
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min<index_t>(KC, K - pc);
      for (index_t jr = 0; jr < N; jr += NR)
        pack_b_panel<T, NR>(b, pc, jr, kc, std::min<index_t>(NR, N - jr), panels.data() + pc * npad + jr * kc);
    }
  }
};

/// M rows of A split in MC blocks of equal size, an A block (MC x kc) holding at most mc x 512 elements (KC 1024:
/// 112 rows); M = 2048 at kc 512: 10 x 210 rows, not 9 x 224 + 32 (a short last block is a whole pass of short
/// loops). Up to 5/4 of that cap goes in one block (256 rows at kc 512: one block, not 224 + 32; measured 239 against
/// 210 GFLOP/s).
template <class T>
index_t gemm_mc(index_t M, index_t kc) {
  using BL = gemm_blocking<T>;
  constexpr index_t MR = BL::mr;
  const index_t cap = std::max<index_t>(MR, BL::mc * 512 / std::max<index_t>(kc, 1) / MR * MR);
  if (4 * M <= 5 * cap) return (M + MR - 1) / MR * MR;
  const index_t mblocks = (M + cap - 1) / cap;
  return std::min<index_t>(cap, ((M + mblocks - 1) / mblocks + MR - 1) / MR * MR);
}

/// C[ic .. ic+mc) x [jc+jr for jr in [jr0, jr1) step NR) (+)= A block * packed B panels over one K block. The A
/// block is packed at apk, or (apk null) read in place from row-major A starting at column pc, all but a last
/// partial panel, which is packed into edge (MR x kc). B's panel jr starts at bb + jr * ldbp. Edge tiles are computed
/// aside and their valid part added.
/// On the K block that completes C (last), the epilogue runs on each tile while it is still in L1 (a pass over the
/// block after its last tile found the first ones back in L2 and cost as much as a separate elementwise pass).
template <class T, class Epi>
TS_INLINE void gemm_macro_block(index_t ic, index_t mc, index_t jc, index_t nc, index_t jr0, index_t jr1, index_t kc, const T* apk,
                                mat_ref<T> a, index_t pc, T* edge, const T* bb, index_t ldbp, T* c, index_t ldc, bool acc,
                                bool last, const Epi& epi) {
  constexpr int MR = gemm_blocking<T>::mr, NR = gemm_blocking<T>::nr;
  T tile[MR * NR];
  for (index_t jr = jr0; jr < jr1; jr += NR) {
    const index_t cols = std::min<index_t>(NR, nc - jr);
    const T* const bp = bb + jr * ldbp;
    for (index_t ir = 0; ir < mc; ir += MR) {
      const index_t rows = std::min<index_t>(MR, mc - ir);
      T* cp = c + (ic + ir) * ldc + jc + jr;
      const T* ap = apk ? apk + ir * kc : edge;
      if (!apk && rows < MR) pack_a<T, MR>(a, ic + ir, pc, rows, kc, edge);
      if (rows == MR && cols == NR) {
        if (apk) micro_kernel<T>(kc, ap, bp, cp, ldc, acc);
        else micro_tile<T>(kc, rowmajor_a<T>{a.p + (ic + ir) * a.rs + pc, a.rs}, bp, NR, cp, ldc, acc);
      } else {
        if (rows == MR && !apk) micro_tile<T>(kc, rowmajor_a<T>{a.p + (ic + ir) * a.rs + pc, a.rs}, bp, NR, tile, NR, false);
        else micro_kernel<T>(kc, ap, bp, tile, NR, false);
        for (index_t i = 0; i < rows; ++i)
          for (index_t j = 0; j < cols; ++j) cp[i * ldc + j] = acc ? cp[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
      }
      if constexpr (Epi::active)
        if (last) epi(ic + ir, jc + jr, rows, cols);
    }
  }
}

/// C = A * B (or C += A * B with accumulate), C with unit column stride and row stride ldc. An active epilogue
/// is called as epi(i0, j0, rows, cols) on every tile of C once its last K block is in.
/// (Active epilogues of any type reach the body as one epilogue_ref: one instantiation of the kernel for them all.)
template <class T, class Epi = no_epilogue>
void cpu_gemm(index_t M, index_t N, index_t K, mat_ref<T> a, mat_ref<T> b, T* c, index_t ldc, bool accumulate,
              int nthreads, const Epi& epi = {}, const packed_b<T>* prepacked = nullptr);

template <class T, class Epi>
  requires(Epi::active && !is_epilogue_ref<Epi>)
void cpu_gemm(index_t M, index_t N, index_t K, mat_ref<T> a, mat_ref<T> b, T* c, index_t ldc, bool accumulate,
              int nthreads, const Epi& epi, const packed_b<T>* prepacked = nullptr) {
  cpu_gemm<T>(M, N, K, a, b, c, ldc, accumulate, nthreads, erase_epilogue<index_t, index_t, index_t, index_t>(epi), prepacked);
}

template <class T, class Epi>
void cpu_gemm(index_t M, index_t N, index_t K, mat_ref<T> a, mat_ref<T> b, T* c, index_t ldc, bool accumulate,
              int nthreads, const Epi& epi, const packed_b<T>* prepacked) {
  using BL = gemm_blocking<T>;
  constexpr int MR = BL::mr, NR = BL::nr, NC = BL::nc;
  if (M == 0 || N == 0) return;
  stats::count_pass();
  if (K == 0) {
    if (!accumulate)
      for (index_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + N, T(0));
    if constexpr (Epi::active) epi(0, 0, M, N);
    return;
  }
  if (!prepacked && skinny_gemm<T>(M, N, K, a, b, c, ldc, accumulate, nthreads, epi)) return;
  if (!prepacked && small_gemm<T>(M, N, K, a, b, c, ldc, accumulate, nthreads, epi)) return;
  const index_t KC = gemm_kc<T>(K);
  const index_t ncap = std::min<index_t>(NC, (N + NR - 1) / NR * NR);
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int nt = flops < 2e6 ? 1 : nthreads;
  auto& buffers = pack_buffers<T>::of_this_thread();
  T* const bpk = prepacked ? nullptr : pack_buffers<T>::grow(buffers.b, buffers.b_size, std::size_t(KC) * std::size_t(ncap));
  const index_t MC = gemm_mc<T>(M, KC);
  // Up to 800 rows of row-major A are read in place: no A packing, so no barrier at all (each thread packs the B
  // panels it computes with). Measured on the 2-core test machine, 2 threads, square products, against packing A:
  // 256: 230 -> 280 GFLOP/s, 384 +5%, 512 +3%, 768 +1%, 1024 and 2048 -2%. Not when A's rows are a multiple of
  // 4 KiB apart: the 14 rows the micro-kernel reads would share one L1 set (256 x 1024 x 1024: -5%).
  const bool a_in_place = M <= 800 && a.cs == 1 && (a.rs * index_t(sizeof(T))) % 4096 != 0;
  T* const apk = a_in_place ? nullptr : pack_buffers<T>::grow(buffers.a, buffers.a_size, std::size_t(KC) * std::size_t(MC + MR));
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    auto& mine = pack_buffers<T>::of_this_thread();
    T* const edge = a_in_place ? pack_buffers<T>::grow(mine.a, mine.a_size, std::size_t(KC) * MR) : nullptr;
    for (index_t jc = 0; jc < N; jc += NC) {
      const index_t nc = std::min<index_t>(NC, N - jc);
      for (index_t pc = 0; pc < K; pc += KC) {
        const index_t kc = std::min<index_t>(KC, K - pc);
        const T* bb = prepacked ? prepacked->panels.data() + pc * prepacked->npad + jc * kc : bpk;
        // panels KC apart in bpk whatever this block's kc, so that a thread packing the next K block (which may be
        // shorter) never writes into a panel another thread is still computing with
        const index_t ldbp = prepacked ? kc : KC;
        if (!prepacked) {
          // no barrier: the compute loop below hands out the same panels to the same threads (the same static
          // schedule over the same iterations), so each thread only reads B panels it packed itself
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
          for (index_t jr = 0; jr < nc; jr += NR)
            pack_b_panel<T, NR>(b, pc, jc + jr, kc, std::min<index_t>(NR, nc - jr), bpk + jr * KC);
        }
        for (index_t ic = 0; ic < M; ic += MC) {
          const index_t mc = std::min<index_t>(MC, M - ic);
          if (!a_in_place) {
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
            for (index_t ir = 0; ir < mc; ir += MR)
              pack_a<T, MR>(a, ic + ir, pc, std::min<index_t>(MR, mc - ir), kc, apk + ir * kc);
          }
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
          for (index_t jr = 0; jr < nc; jr += NR)
            gemm_macro_block<T>(ic, mc, jc, nc, jr, jr + NR, kc, apk, a, pc, edge, bb, ldbp, c, ldc, accumulate || pc > 0, pc + kc == K,
                                epi);
          if (!a_in_place) {
#if defined(_OPENMP)
#pragma omp barrier
#endif
          }
        }
      }
      // the next N block shares its panels out differently (fewer of them): every thread must be done with this one
      if (jc + NC < N) {
#if defined(_OPENMP)
#pragma omp barrier
#endif
      }
    }
  }
}

}  // namespace tessera::detail
