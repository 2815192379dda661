// Sparse x dense products for pruned layers: y[B, Out] = act(x[B, In] W^T + bias) with the weight W [Out, In] held
// in CSR (compressed sparse rows: each output row's nonzero weights and their input columns), bias and activation
// applied in registers before y is written (the epilogue of the dense GEMM, kernels/cpu/gemm.hpp, in one pass).
//
//   auto w = detail::csr_from_dense<float>({weight, In, 1}, Out, In);   // exact zeros dropped (-0.0 too)
//   detail::cpu_sparse_linear<float>(w, B, {x, ldx, 1}, bias, activation::relu, y, ldy, nthreads);
//
// Scheme (measured on the 2-core AMD EPYC Zen 3 guest, AVX2 + FMA): x is transposed once per call into blocks of
// `width` batch rows (64 floats with AVX2 or AVX-512: a row k of a block, x[b0 .. b0+64, k], is 8 AVX2 vectors in a
// row of memory); then every output row o runs over its nonzeros (k, w) doing acc[0 .. width) += w * xT[k][..]:
// the accumulators stay in registers for the whole row (one broadcast, 8 loads and 8 FMAs per nonzero with AVX2), so
// the work is proportional to the nonzeros, not to In. Bias and activation are applied to the accumulators, the row
// is stored into a 16-row tile and the tile is written to y transposed (16 consecutive outputs of each batch row).
// A batch that is not a multiple of the width ends in narrower blocks (halving the vectors: 64 + 32 + 8 for B = 104),
// so at most one vector's lanes are wasted. The block of x (In x 64 floats: 256 KiB at In = 1024) is read from L2.
//
// Threads (OpenMP, nthreads as cpu_gemm takes them, e.g. cpu_threads::num_threads()): the transposition is shared,
// then each thread takes a run of 16-row strips holding about the same number of nonzeros (plus a per-row cost), so a
// layer whose rows are unevenly pruned still splits evenly; a product of under 2 MFLOP (2 B nnz) runs on one thread.
// Results do not depend on the thread count (each output is summed by one thread in one fixed order).
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
#include <vector>

#include "tessera/core/ops.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/gemm.hpp"

#if defined(_OPENMP)
#include <omp.h>
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
#define TESSERA_SPARSE_PREFETCH 8  // nonzeros ahead: their rows of x prefetched (Zen 3, 90 %: 1 thread 490 -> 410 us)
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

/// The block's transposed x, rows [k0, k1): xt[k * W + j] = x[b0 + j, k] (0 for j >= valid), W = nv * lanes.
template <class T>
void sparse_transpose(mat_ref<T> x, const sparse_batch_block& blk, index_t k0, index_t k1, T* xt) {
  const index_t W = index_t(blk.nv) * sparse_blocking<T>::lanes;
  constexpr index_t KB = 16;  // 16 columns of x at a time: 16 rows of xt written, each a run of W
  for (index_t kb = k0; kb < k1; kb += KB) {
    const index_t ke = std::min(k1, kb + KB);
    for (index_t j = 0; j < blk.valid; ++j) {
      const T* src = x.p + (blk.b0 + j) * x.rs;
      if (x.cs == 1)
        for (index_t k = kb; k < ke; ++k) xt[k * W + j] = src[k];
      else
        for (index_t k = kb; k < ke; ++k) xt[k * W + j] = src[k * x.cs];
    }
    for (index_t k = kb; k < ke; ++k) std::fill(xt + k * W + blk.valid, xt + (k + 1) * W, T(0));
  }
}

/// y[B, Out] = act(x[B, In] w^T + bias) for the CSR weight w [Out, In]; bias has Out elements or is null; y row stride
/// ldy, unit column stride, not overlapping x. Threads: up to nthreads, one below min_parallel_flops (2 B nnz; the
/// tests pass 0 to split even tiny products).
template <class T>
void cpu_sparse_linear(const csr_matrix<T>& w, index_t B, mat_ref<T> x, const T* bias, activation act, T* y, index_t ldy,
                       int nthreads, double min_parallel_flops = 2e6) {
  using BL = sparse_blocking<T>;
  constexpr int L = BL::lanes, NVF = BL::nv, STRIP = BL::strip;
  const index_t Out = w.rows, In = w.cols;
  if (B == 0 || Out == 0) return;
  stats::count_pass();
  // the batch blocks: full ones, then the rest in halving widths (q vectors left: q's binary digits)
  std::vector<sparse_batch_block> blocks;
  index_t b0 = 0;
  for (; B - b0 >= BL::width; b0 += BL::width) blocks.push_back({b0, BL::width, NVF});
  if (b0 < B) {
    const index_t q = (B - b0 + L - 1) / L;
    for (int nv = NVF; nv >= 1; nv /= 2)  // q <= NVF: one full-width block when q is NVF
      if (q & nv) {
        blocks.push_back({b0, std::min<index_t>(index_t(nv) * L, B - b0), nv});
        b0 += index_t(nv) * L;
      }
  }
  const index_t nblocks = index_t(blocks.size());
  const index_t padded = blocks.back().b0 + index_t(blocks.back().nv) * L;
  T* const xt = sparse_buffers<T>::of_this_thread().grow(std::size_t(std::max<index_t>(padded * In, 1)));
  const index_t strips = (Out + STRIP - 1) / STRIP;
  const double flops = 2.0 * double(w.nnz()) * double(B);
  const int nt = int(std::min<index_t>(flops < min_parallel_flops ? 1 : std::max(1, nthreads), strips));
  const index_t* rp = w.row_ptr.data();
  // strip s's cost from the start: its nonzeros plus 4 per row (the epilogue and the write), monotone in s
  auto cost_before = [&](index_t s) {
    const index_t o = std::min(Out, s * STRIP);
    return double(rp[o]) + 4.0 * double(o);
  };
  auto first_strip = [&](int t, int n) {  // the first strip of thread t of n: equal shares of the cost
    const double target = cost_before(strips) * double(t) / double(n);
    index_t lo = 0, hi = strips;
    while (lo < hi) {
      const index_t mid = (lo + hi) / 2;
      if (cost_before(mid) < target) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  constexpr index_t KCH = 64;  // transposition work items: 64 rows of one block's xt
  const index_t kchunks = (In + KCH - 1) / KCH;
  auto transpose_item = [&](index_t item) {
    const auto& blk = blocks[std::size_t(item / kchunks)];
    const index_t k0 = (item % kchunks) * KCH;
    sparse_transpose<T>(x, blk, k0, std::min(In, k0 + KCH), xt + blk.b0 * In);
  };
  auto compute = [&](int t, int n) {
    alignas(64) T tile[STRIP * BL::width];
    const index_t s1 = first_strip(t + 1, n);
    for (index_t s = first_strip(t, n); s < s1; ++s) {
      const index_t o0 = s * STRIP, rows = std::min<index_t>(STRIP, Out - o0);
      for (const auto& blk : blocks) {
        const T* xb = xt + blk.b0 * In;
        sparse_strip_nv<T, NVF>(blk.nv, rp, w.col.data(), w.val.data(), o0, rows, xb, bias, act, tile);
        const index_t W = index_t(blk.nv) * L;
        for (index_t j = 0; j < blk.valid; ++j) {  // the tile's columns are batch rows of y
          T* yr = y + (blk.b0 + j) * ldy + o0;
          for (index_t i = 0; i < rows; ++i) yr[i] = tile[i * W + j];
        }
      }
    }
  };
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
      for (index_t item = 0; item < nblocks * kchunks; ++item) transpose_item(item);
      compute(omp_get_thread_num(), omp_get_num_threads());
    }
    return;
  }
#endif
  for (index_t item = 0; item < nblocks * kchunks; ++item) transpose_item(item);
  compute(0, 1);
}

}  // namespace tessera::detail
