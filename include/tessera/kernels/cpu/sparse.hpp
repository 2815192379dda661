// Sparse x dense products for pruned layers: y[B, Out] = act(x[B, In] W^T + bias) with the weight W [Out, In] held
// in CSR (compressed sparse rows: each output row's nonzero weights and their input columns), bias and activation
// applied in registers before y is written (the epilogue of the dense GEMM, kernels/cpu/gemm.hpp, in one pass).
//
//   auto w = detail::csr_from_dense<float>({weight, In, 1}, Out, In);   // exact zeros dropped (-0.0 too)
//   detail::cpu_sparse_linear<float>(w, B, {x, ldx, 1}, bias, activation::relu, y, ldy, nthreads);
//
// Scheme (measured on the 2-core AMD EPYC Zen 3 guest, AVX2 + FMA): x is transposed once per call into blocks of
// `width` batch rows (64 floats with AVX2 or AVX-512: a row k of a block, x[b0 .. b0+64, k], is 8 AVX2 vectors in a
// row of memory; 8 x 8 register transposes); then every output row o runs over its nonzeros (k, w) doing
// acc[0 .. width) += w * xT[k][..]: the accumulators stay in registers for the whole row (one broadcast, 8 loads and
// 8 FMAs per nonzero with AVX2; the rows of xT 8 nonzeros ahead prefetched), so the work is proportional to the
// nonzeros, not to In. Bias and activation are applied to the accumulators, the row is stored into a 16-row tile and
// the tile is written to y transposed (16 consecutive outputs of each batch row). A batch that is not a multiple of
// the width ends in narrower blocks (halving the vectors: 64 + 32 + 8 for B = 104), so at most one vector's lanes are
// wasted. The block of x (In x 64 floats: 256 KiB at In = 1024) is read from L2: at batch 64, 1024 -> 1024, a
// nonzero costs about 3 ns on one thread (L2-bound; the transpositions add about 50 us).
// Batches of 1 to 4 rows (AVX2 floats, x's rows contiguous) skip the transposition: each output is a sparse dot
// product, 8 nonzeros at a time through a gather of x. They gain less than large batches: the dense GEMM's skinny path
// is fast there (batch 1, 90 % zeros: 68 against 79 us on one thread, 37 against 54 on two).
//
// Threads (OpenMP, nthreads as cpu_gemm takes them, e.g. cpu_threads::num_threads()): from 128 batch rows per thread
// the threads split the batch in whole 64-row blocks; below, they split the output rows in runs of 16-row strips
// holding about the same number of nonzeros (plus a per-row cost: unevenly pruned rows still split evenly), each
// thread transposing x for itself. No barrier, nothing one thread writes is read by another. A product of under
// 0.2 MFLOP (2 B nnz) runs on one thread. Every output is summed by one thread in the same order whatever the thread
// count (rows fall into blocks of the same widths), so results do not depend on it.
//
// Guarantees: x is read through any row and column strides (a slice, a transposed view); y has unit column stride
// and row stride ldy; y must not overlap x. An empty row gives act(bias). Dropping zeros changes one thing against the
// dense product: 0 * inf (or 0 * NaN) in the dense GEMM is NaN, here the zero weight is not there to multiply.
// Other builds (clang, TESSERA_NO_SIMD) run the same loops on scalars.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/core/ops.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/gemm.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if TESSERA_SIMD && defined(__AVX__)
#include <immintrin.h>
#endif

namespace tessera::detail {

/// A [rows, cols] matrix in compressed sparse rows: row o's nonzeros are val[row_ptr[o] .. row_ptr[o+1]) at columns
/// col[...] (ascending within a row).
template <class T>
struct csr_matrix {
  index_t rows = 0, cols = 0;
  std::vector<index_t> row_ptr{0};  ///< rows + 1 offsets
  std::vector<std::int32_t> col;    ///< column of each nonzero
  std::vector<T> val;               ///< value of each nonzero
  index_t nnz() const { return index_t(val.size()); }
  /// The fraction of entries that are stored (nonzero): nnz / (rows cols); 0 for an empty matrix.
  double density() const { return rows * cols == 0 ? 0.0 : double(nnz()) / (double(rows) * double(cols)); }
};

/// The CSR form of the dense [rows, cols] matrix w (element (i, j) at w.p[i * w.rs + j * w.cs]), exact zeros dropped
/// (+0.0 and -0.0; NaN is kept). Throws std::invalid_argument for negative extents or more than 2^31 - 1 columns.
template <class T>
csr_matrix<T> csr_from_dense(mat_ref<T> w, index_t rows, index_t cols) {
  if (rows < 0 || cols < 0 || cols > index_t(std::numeric_limits<std::int32_t>::max()))
    throw std::invalid_argument("tessera: csr_from_dense: extents [" + std::to_string(rows) + ", " + std::to_string(cols) +
                                "] (non-negative, at most 2^31 - 1 columns)");
  csr_matrix<T> m;
  m.rows = rows;
  m.cols = cols;
  m.row_ptr.assign(std::size_t(rows) + 1, 0);
  index_t n = 0;
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) n += w(i, j) != T(0);
  m.col.reserve(std::size_t(n));
  m.val.reserve(std::size_t(n));
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      const T v = w(i, j);
      if (v != T(0)) {
        m.col.push_back(std::int32_t(j));
        m.val.push_back(v);
      }
    }
    m.row_ptr[std::size_t(i) + 1] = index_t(m.val.size());
  }
  return m;
}

#ifndef TESSERA_SPARSE_PREFETCH
#define TESSERA_SPARSE_PREFETCH 8  // nonzeros ahead whose rows of xT are prefetched; 0: none (Zen 3, 1 thread, batch
                                   // 64: 70 % zero 1440 -> 1179 us, 90 % 443 -> 411; distances 4 and 12 measured the same)
#endif
#ifndef TESSERA_SPARSE_NV
#define TESSERA_SPARSE_NV 8  // vectors per full block at most (register accumulators per output row)
#endif
template <class T>
struct sparse_blocking {
#if TESSERA_SIMD
  static constexpr int lanes = TESSERA_VECTOR_BYTES / int(sizeof(T));
  static constexpr int nv = std::min(TESSERA_SPARSE_NV, 64 / lanes);  ///< vectors per full block: 8 x 8 floats with AVX2, 4 x 16 AVX-512
#else
  static constexpr int lanes = 1, nv = 16;
#endif
  static constexpr int width = lanes * nv;  ///< batch rows in a full block
  static constexpr int strip = 16;          ///< output rows per tile (16 floats of each batch row: a cache line)
};

/// The transposed x and the blocks it is cut into, kept by the calling thread between calls.
template <class T>
struct sparse_buffers {
  T* xt = nullptr;
  std::size_t size = 0;
  T* grow(std::size_t n) {
    if (n > size) {
      std::free(xt);
      xt = static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
      if (!xt) {
        size = 0;
        throw std::bad_alloc();
      }
      size = n;
    }
    return xt;
  }
  ~sparse_buffers() { std::free(xt); }
  static sparse_buffers& of_this_thread() {
    thread_local sparse_buffers b;
    return b;
  }
};

/// A block of batch rows [b0, b0 + valid) computed nv vectors wide (nv * lanes >= valid); its transposed x is at
/// xt + b0 * In, In rows of nv * lanes elements (the lanes past valid are zero).
struct sparse_batch_block {
  index_t b0, valid;
  int nv;
};

/// Rows [o0, o0 + rows) of the CSR weight against one block of transposed x (NV vectors wide): the activated results
/// into tile (row i at tile + i * NV * lanes).
template <class T, int NV>
void sparse_strip(const index_t* __restrict rp, const std::int32_t* __restrict ci, const T* __restrict cv, index_t o0,
                  index_t rows, const T* __restrict xt, const T* bias, activation act, T* __restrict tile) {
  constexpr int L = sparse_blocking<T>::lanes, W = NV * L;
  constexpr int S = NV >= 8 ? 1 : NV >= 4 ? 2 : 4;  // independent sets of accumulators: 8 FMA chains at least
#if TESSERA_SIMD
  using V = simd::vec<T, L>;
  auto load = [](const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  };
  auto splat = [](const T* p) { return splat_load<T, L>(p); };
  auto store = [](T* p, V v) { std::memcpy(p, &v, sizeof(V)); };
#else
  using V = T;
  auto load = [](const T* p) { return *p; };
  auto splat = [](const T* p) { return *p; };
  auto store = [](T* p, V v) { *p = v; };
#endif
  for (index_t i = 0; i < rows; ++i) {
    const index_t o = o0 + i;
    V acc[S][NV];
    TS_UNROLL
    for (int s = 0; s < S; ++s)
      TS_UNROLL
      for (int v = 0; v < NV; ++v) acc[s][v] = V{};
    index_t p = rp[o];
    const index_t e = rp[o + 1];
    for (; p + S <= e; p += S) {
#if TESSERA_SPARSE_PREFETCH
      TS_UNROLL
      for (int s = 0; s < S; ++s)
        if (p + s + TESSERA_SPARSE_PREFETCH < e) {
          const T* xf = xt + index_t(ci[p + s + TESSERA_SPARSE_PREFETCH]) * W;
          TS_UNROLL
          for (int c = 0; c < (W * int(sizeof(T)) + 63) / 64; ++c) __builtin_prefetch(xf + c * (64 / int(sizeof(T))), 0, 3);
        }
#endif
      TS_UNROLL
      for (int s = 0; s < S; ++s) {
        const T* xk = xt + index_t(ci[p + s]) * W;
        const V w = splat(cv + p + s);
        TS_UNROLL
        for (int v = 0; v < NV; ++v) acc[s][v] += w * load(xk + v * L);
      }
    }
    for (; p < e; ++p) {
      const T* xk = xt + index_t(ci[p]) * W;
      const V w = splat(cv + p);
      TS_UNROLL
      for (int v = 0; v < NV; ++v) acc[0][v] += w * load(xk + v * L);
    }
    TS_UNROLL
    for (int s = 1; s < S; ++s)
      TS_UNROLL
      for (int v = 0; v < NV; ++v) acc[0][v] += acc[s][v];
    if (bias) {
      const V b = splat(bias + o);
      TS_UNROLL
      for (int v = 0; v < NV; ++v) acc[0][v] += b;
    }
    T* out = tile + i * W;
    switch (act) {
      case activation::none:
        for (int v = 0; v < NV; ++v) store(out + v * L, acc[0][v]);
        break;
      case activation::relu:
        for (int v = 0; v < NV; ++v) store(out + v * L, op::relu::apply(acc[0][v]));
        break;
      case activation::tanh:
        for (int v = 0; v < NV; ++v) store(out + v * L, op::tanh::apply(acc[0][v]));
        break;
      case activation::sigmoid:
        for (int v = 0; v < NV; ++v) store(out + v * L, op::sigmoid::apply(acc[0][v]));
        break;
    }
  }
}

/// sparse_strip for a block nv vectors wide (NV or a power of two below it).
template <class T, int NV>
void sparse_strip_nv(int nv, const index_t* rp, const std::int32_t* ci, const T* cv, index_t o0, index_t rows, const T* xt,
                     const T* bias, activation act, T* tile) {
  if (nv == NV) sparse_strip<T, NV>(rp, ci, cv, o0, rows, xt, bias, act, tile);
  else if constexpr (NV > 1) sparse_strip_nv<T, NV / 2>(nv, rp, ci, cv, o0, rows, xt, bias, act, tile);
}

/// dst[c * ldd + r] = src[r * lds + c] for r < R, c < C: 8 x 8 tiles in AVX registers for floats, the rest by scalars.
template <class T>
void sparse_transpose_into(const T* __restrict src, index_t lds, index_t R, index_t C, T* __restrict dst, index_t ldd) {
  index_t r0 = 0;
#if TESSERA_SIMD && defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    for (; r0 + 8 <= R; r0 += 8) {
      index_t c0 = 0;
      for (; c0 + 8 <= C; c0 += 8) {
        const float* s0 = src + r0 * lds + c0;
        __m256 r[8], t[8];
        TS_UNROLL
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s0 + i * lds);
        TS_UNROLL
        for (int i = 0; i < 4; ++i) {
          t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
          t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        TS_UNROLL
        for (int h = 0; h < 2; ++h) {  // rows 4h .. 4h+3: their 4 x 4 transposes in each 128-bit half
          r[4 * h + 0] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], _MM_SHUFFLE(1, 0, 1, 0));
          r[4 * h + 1] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], _MM_SHUFFLE(3, 2, 3, 2));
          r[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(1, 0, 1, 0));
          r[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        float* d0 = dst + c0 * ldd + r0;
        TS_UNROLL
        for (int i = 0; i < 4; ++i) {
          _mm256_storeu_ps(d0 + i * ldd, _mm256_permute2f128_ps(r[i], r[4 + i], 0x20));
          _mm256_storeu_ps(d0 + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[4 + i], 0x31));
        }
      }
      for (; c0 < C; ++c0)
        for (index_t i = r0; i < r0 + 8; ++i) dst[c0 * ldd + i] = src[i * lds + c0];
    }
  }
#endif
  for (; r0 < R; ++r0)
    for (index_t c = 0; c < C; ++c) dst[c * ldd + r0] = src[r0 * lds + c];
}

/// The block's transposed x, rows [k0, k1): xt[k * W + j] = x[b0 + j, k] (0 for j >= valid), W = nv * lanes.
template <class T>
void sparse_transpose(mat_ref<T> x, const sparse_batch_block& blk, index_t k0, index_t k1, T* xt) {
  const index_t W = index_t(blk.nv) * sparse_blocking<T>::lanes;
  if (x.cs == 1) {
    sparse_transpose_into<T>(x.p + blk.b0 * x.rs + k0, x.rs, blk.valid, k1 - k0, xt + k0 * W, W);
  } else {
    constexpr index_t KB = 16;  // 16 columns of x at a time: 16 rows of xt written, each a run of W
    for (index_t kb = k0; kb < k1; kb += KB) {
      const index_t ke = std::min(k1, kb + KB);
      for (index_t j = 0; j < blk.valid; ++j) {
        const T* src = x.p + (blk.b0 + j) * x.rs;
        for (index_t k = kb; k < ke; ++k) xt[k * W + j] = src[k * x.cs];
      }
    }
  }
  if (blk.valid < W)
    for (index_t k = k0; k < k1; ++k) std::fill(xt + k * W + blk.valid, xt + (k + 1) * W, T(0));
}

#ifndef TESSERA_SPARSE_GATHER_ROWS
#define TESSERA_SPARSE_GATHER_ROWS 4  // batches up to this many rows take the gather path (AVX2 floats, x's rows contiguous)
#endif

/// Whether batch rows [bb, be) of x take sparse_gather_rows.
template <class T>
bool sparse_gathers(index_t rows, mat_ref<T> x, index_t In) {
#if TESSERA_SIMD && defined(__AVX2__)
  return std::is_same_v<T, float> && rows <= TESSERA_SPARSE_GATHER_ROWS && (x.cs == 1 || In <= 1);
#else
  (void)rows, (void)x, (void)In;
  return false;
#endif
}

/// Small batches (a Linear at batch 1 to 4): each output a sparse dot product of the weight row with x's row, 8
/// nonzeros at a time through a gather of x (vgatherdps), no transposition. A vector of the transposed scheme would
/// hold 1 to 4 useful lanes of 8 here: at batch 1, 1024 -> 1024, 90 % zeros it took 101 us against the dense skinny
/// GEMM's 78 us on Zen 3; with the gathers 68 us (a scalar loop of 8 sums: 148).
template <class T>
void sparse_gather_rows(const csr_matrix<T>& w, index_t bb, index_t be, index_t o0, index_t o1, mat_ref<T> x, const T* bias,
                        activation act, T* y, index_t ldy) {
#if TESSERA_SIMD && defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    const index_t* rp = w.row_ptr.data();
    const std::int32_t* ci = w.col.data();
    const float* cv = w.val.data();
    for (index_t b = bb; b < be; ++b) {
      const float* xb = x.p + b * x.rs;
      float* yb = y + b * ldy;
      for (index_t o = o0; o < o1; ++o) {
        index_t p = rp[o];
        const index_t e = rp[o + 1];
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (; p + 16 <= e; p += 16) {
          const __m256i k0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + p));
          const __m256i k1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + p + 8));
          acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(cv + p), _mm256_i32gather_ps(xb, k0, 4), acc0);
          acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(cv + p + 8), _mm256_i32gather_ps(xb, k1, 4), acc1);
        }
        if (p + 8 <= e) {
          const __m256i k0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ci + p));
          acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(cv + p), _mm256_i32gather_ps(xb, k0, 4), acc0);
          p += 8;
        }
        float v = simd::reduce_add<float, 8>((simd::vec<float, 8>)_mm256_add_ps(acc0, acc1));
        for (; p < e; ++p) v += cv[p] * xb[ci[p]];
        if (bias) v += bias[o];
        switch (act) {
          case activation::none: break;
          case activation::relu: v = op::relu::apply(v); break;
          case activation::tanh: v = op::tanh::apply(v); break;
          case activation::sigmoid: v = op::sigmoid::apply(v); break;
        }
        yb[o] = v;
      }
    }
    return;
  }
#endif
  (void)w, (void)bb, (void)be, (void)o0, (void)o1, (void)x, (void)bias, (void)act, (void)y, (void)ldy;
}

#ifndef TESSERA_SPARSE_SPLIT
#define TESSERA_SPARSE_SPLIT 0  // threads split: 0 chosen per call, 1 the batch, 2 the output rows (for measurements)
#endif

/// One thread's part of cpu_sparse_linear: batch rows [bb, be) against output rows [o0, o1) (o0 a multiple of the strip).
/// Its rows of x are transposed into this thread's own buffer (nothing shared, no barrier), then every batch block
/// runs over every strip (blocks outer: a block's transposed x, In x 64 floats, stays in L2 while the weights stream).
template <class T>
void sparse_linear_part(const csr_matrix<T>& w, index_t bb, index_t be, index_t o0, index_t o1, mat_ref<T> x, const T* bias,
                        activation act, T* y, index_t ldy) {
  using BL = sparse_blocking<T>;
  constexpr int L = BL::lanes, NVF = BL::nv, STRIP = BL::strip;
  const index_t In = w.cols;
  if (bb >= be || o0 >= o1) return;
  if (sparse_gathers<T>(be - bb, x, In)) return sparse_gather_rows<T>(w, bb, be, o0, o1, x, bias, act, y, ldy);
  // the batch blocks: full ones, then the rest in halving widths (q vectors left: q's binary digits)
  sparse_batch_block blocks[64];
  int nblocks = 0;
  auto add = [&](index_t b0, index_t valid, int nv) {
    if (nblocks == 64) return false;
    blocks[nblocks++] = {b0, valid, nv};
    return true;
  };
  T* xt = nullptr;
  alignas(64) T tile[STRIP * BL::width];
  for (index_t c0 = bb; c0 < be;) {  // chunks of up to 64 blocks (xt: In x 64 x 64 at most)
    nblocks = 0;
    index_t b0 = c0;
    for (; be - b0 >= BL::width && add(b0, BL::width, NVF); b0 += BL::width) {
    }
    if (nblocks < 64 && b0 < be) {
      const index_t q = (be - b0 + L - 1) / L;
      for (int nv = NVF; nv >= 1; nv /= 2)  // q <= NVF: one full-width block when q is NVF
        if ((q & nv) && add(b0, std::min<index_t>(index_t(nv) * L, be - b0), nv)) b0 += index_t(nv) * L;
    }
    const sparse_batch_block& last = blocks[nblocks - 1];
    const index_t padded = last.b0 + index_t(last.nv) * L - c0;
    xt = sparse_buffers<T>::of_this_thread().grow(std::size_t(std::max<index_t>(padded * In, 1)));
    for (int i = 0; i < nblocks; ++i) sparse_transpose<T>(x, blocks[i], 0, In, xt + (blocks[i].b0 - c0) * In);
    for (int i = 0; i < nblocks; ++i) {
      const auto& blk = blocks[i];
      const T* xb = xt + (blk.b0 - c0) * In;
      const index_t W = index_t(blk.nv) * L;
      for (index_t s = o0; s < o1; s += STRIP) {
        const index_t rows = std::min<index_t>(STRIP, o1 - s);
        sparse_strip_nv<T, NVF>(blk.nv, w.row_ptr.data(), w.col.data(), w.val.data(), s, rows, xb, bias, act, tile);
        sparse_transpose_into<T>(tile, W, rows, blk.valid, y + blk.b0 * ldy + s, ldy);  // the tile's columns: rows of y
      }
    }
    c0 = std::min(be, last.b0 + last.valid);
  }
}

/// y[B, Out] = act(x[B, In] w^T + bias) for the CSR weight w [Out, In]; bias has Out elements or is null; y row stride
/// ldy, unit column stride, not overlapping x. Threads: up to nthreads, one below min_parallel_flops (2 B nnz; at
/// 0.1 MFLOP 2 threads measured level with 1; the tests pass 0 to split even tiny products). With two full blocks
/// (128 rows) or more per thread the threads split the batch in whole blocks (each transposes and computes its own
/// rows); otherwise they split the output rows in 16-row strips of about equal cost (nonzeros plus 4 per row), each
/// transposing all of x for itself. Either way no barrier and nothing written by one thread is read by another (a
/// transposition shared through a barrier made each thread read half of it from the other core's cache: at 99 %
/// zeros, batch 64, 2 threads took 123 us against 1 thread's 83).
template <class T>
void cpu_sparse_linear(const csr_matrix<T>& w, index_t B, mat_ref<T> x, const T* bias, activation act, T* y, index_t ldy,
                       int nthreads, double min_parallel_flops = 2e5) {
  using BL = sparse_blocking<T>;
  constexpr int STRIP = BL::strip;
  const index_t Out = w.rows;
  if (B == 0 || Out == 0) return;
  stats::count_pass();
  const index_t strips = (Out + STRIP - 1) / STRIP;
  const double flops = 2.0 * double(w.nnz()) * double(B);
  int nt = flops < min_parallel_flops ? 1 : std::max(1, nthreads);
  const bool batch_split = TESSERA_SPARSE_SPLIT == 1 || (TESSERA_SPARSE_SPLIT == 0 && B >= index_t(nt) * 2 * BL::width);
  nt = int(std::min<index_t>(nt, batch_split ? std::max<index_t>(1, B / BL::width) : strips));
  const index_t* rp = w.row_ptr.data();
  // strip s's cost from the start: its nonzeros plus 4 per row (the epilogue and the write), monotone in s
  auto cost_before = [&](index_t s) {
    const index_t o = std::min(Out, s * STRIP);
    return double(rp[o]) + 4.0 * double(o);
  };
  auto first_row = [&](int t, int n) {  // the first output row of thread t of n: equal shares of the cost, whole strips
    const double target = cost_before(strips) * double(t) / double(n);
    index_t lo = 0, hi = strips;
    while (lo < hi) {
      const index_t mid = (lo + hi) / 2;
      if (cost_before(mid) < target) lo = mid + 1;
      else hi = mid;
    }
    return std::min(Out, lo * STRIP);
  };
  // the first batch row of thread t of n: whole full-width blocks, the rest to the last thread, so that every row falls
  // in a block of the same width as on one thread (the same sums, bit for bit)
  auto first_batch_row = [&](int t, int n) { return t == n ? B : B / BL::width * t / n * BL::width; };
  auto part = [&](int t, int n) {
    if (batch_split) sparse_linear_part<T>(w, first_batch_row(t, n), first_batch_row(t + 1, n), 0, Out, x, bias, act, y, ldy);
    else sparse_linear_part<T>(w, 0, B, first_row(t, n), first_row(t + 1, n), x, bias, act, y, ldy);
  };
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    part(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  part(0, 1);
}

}  // namespace tessera::detail
