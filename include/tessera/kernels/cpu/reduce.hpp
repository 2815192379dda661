// CPU reductions: one pass over the source expression (fused), SIMD along the innermost dimension,
// accumulating either across the row (inner axis reduced) or into the output row (inner axis kept).
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/core/types.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/loop.hpp"

namespace tessera::detail {

/// Reduce `ev` (planned over the source) into `out`, whose strides in `p.dst_s` are 0 along reduced dims.
/// `out` must hold the identity already. Rows [r0, r1) and columns [j0, j1).
template <class Op, class A, bool Packable, std::size_t MaxLane, int R, class Ev>
void reduce_block(A* out, const index_t* out_s, const loop_plan<R>& p, Ev e, index_t r0, index_t r1, index_t j0,
                  index_t j1) {
  const int nd = p.nd;
  const index_t os = out_s[nd - 1];
  index_t idx[loop_plan<R>::cap] = {};
  unflatten(r0, idx, p.dims, nd - 1);
  for (index_t r = r0; r < r1; ++r) {
    e.set_row(idx, nd - 1);
    A* o = out;
    for (int d = 0; d + 1 < nd; ++d) o += idx[d] * out_s[d];
    index_t j = j0;
#if TESSERA_SIMD
    if constexpr (Packable) {
      constexpr int N = simd::lanes_for<MaxLane>;
      using SrcT = std::remove_cvref_t<decltype(e.scalar(0))>;
      if (os == 0) {
        auto acc0 = simd::splat<A, N>(Op::template identity<A>());
        auto acc1 = acc0;
        for (; j + 2 * N <= j1; j += 2 * N) {
          acc0 = Op::combine(acc0, simd::convert<A, SrcT, N>(e.template packet<N, false>(j)));
          acc1 = Op::combine(acc1, simd::convert<A, SrcT, N>(e.template packet<N, false>(j + N)));
        }
        acc0 = Op::combine(acc0, acc1);
        A a = *o;
        for (int l = 0; l < N; ++l) a = Op::combine(a, acc0[l]);
        *o = a;
      } else if (os == 1) {
        for (; j + N <= j1; j += N) {
          auto cur = simd::load<A, N>(o + j);
          simd::store<A, N>(o + j, Op::combine(cur, simd::convert<A, SrcT, N>(e.template packet<N, false>(j))));
        }
      }
    }
#endif
    for (; j < j1; ++j) o[j * os] = Op::combine(o[j * os], static_cast<A>(e.scalar(j)));
    next_index(idx, p.dims, nd - 1);
  }
}

template <class A>
void fill_strided(A* out, const index_t* dims, const index_t* s, int nd, A v) {
  index_t idx[max_rank] = {}, total = 1;
  for (int d = 0; d < nd; ++d) total *= dims[d];
  for (index_t k = 0; k < total; ++k) {
    A* o = out;
    for (int d = 0; d < nd; ++d) o += idx[d] * s[d];
    *o = v;
    next_index(idx, dims, nd);
  }
}

/// Reduce the expression `ev` over source dims `sdims` into `out` (out_strides aligned to the source, 0 where reduced).
template <class Op, class A, bool Packable, std::size_t MaxLane, int R, class Ev>
void cpu_reduce(A* out, const dims_t<R>& sdims, const dims_t<R>& out_strides, Ev ev, const index_t* odims,
                const index_t* ostrides, int ond, int nthreads) {
  fill_strided(out, odims, ostrides, ond, Op::template identity<A>());
  auto p = make_plan<R>(sdims, out_strides, ev);
  const index_t rows = p.rows(), n = p.inner(), total = rows * n;
  if (total == 0) return;
  stats::count_pass();
  const int nd = p.nd;
  const bool inner_reduced = p.dst_s[nd - 1] == 0;
  bool outer_reduced = false;
  for (int d = 0; d + 1 < nd; ++d) outer_reduced = outer_reduced || p.dst_s[d] == 0;
  const int nt = total >= 32768 ? nthreads : 1;

  if (nt <= 1) {
    reduce_block<Op, A, Packable, MaxLane>(out, p.dst_s, p, ev, 0, rows, 0, n);
  } else if (!inner_reduced) {  // threads own disjoint column ranges
    const index_t cols_per = std::max<index_t>(64, (n + nt - 1) / nt);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (index_t c = 0; c < (n + cols_per - 1) / cols_per; ++c)
      reduce_block<Op, A, Packable, MaxLane>(out, p.dst_s, p, ev, 0, rows, c * cols_per, std::min(n, (c + 1) * cols_per));
  } else if (!outer_reduced) {  // every row has its own output
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (index_t r = 0; r < rows; ++r) reduce_block<Op, A, Packable, MaxLane>(out, p.dst_s, p, ev, r, r + 1, 0, n);
  } else {  // rows share outputs: each thread reduces into a private copy, combined in a fixed order
    index_t osize = 1;
    for (int d = 0; d < ond; ++d) osize *= odims[d];
    // strides of a contiguous output, aligned to the plan's dims (0 where reduced)
    std::vector<index_t> cs(nd);
    {
      // the plan's output strides are proportional to the destination's; rebuild contiguous ones from the plan's kept dims
      index_t acc = 1;
      for (int d = nd - 1; d >= 0; --d) {
        cs[d] = p.dst_s[d] == 0 ? 0 : acc;
        if (p.dst_s[d] != 0) acc *= p.dims[d];
      }
    }
    std::vector<std::vector<A>> part(nt, std::vector<A>(std::size_t(osize), Op::template identity<A>()));
    const index_t per = (rows + nt - 1) / nt;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (int t = 0; t < nt; ++t)
      reduce_block<Op, A, Packable, MaxLane>(part[t].data(), cs.data(), p, ev, std::min(rows, t * per),
                                             std::min(rows, (t + 1) * per), 0, n);
    // scatter the partials into `out`: walk the plan's kept dims in order
    index_t kd[loop_plan<R>::cap], ks[loop_plan<R>::cap];
    int nk = 0;
    for (int d = 0; d < nd; ++d)
      if (p.dst_s[d] != 0) { kd[nk] = p.dims[d]; ks[nk] = p.dst_s[d]; ++nk; }
    index_t idx[loop_plan<R>::cap] = {};
    for (index_t k = 0; k < osize; ++k) {
      A* o = out;
      for (int d = 0; d < nk; ++d) o += idx[d] * ks[d];
      A v = *o;
      for (int t = 0; t < nt; ++t) v = Op::combine(v, part[t][k]);
      *o = v;
      next_index(idx, kd, nk);
    }
  }
}

/// First index of the largest value in base[0], base[s], ... base[(n-1) s], or of the first NaN (PyTorch's argmax).
template <class T>
index_t first_argmax(const T* base, index_t n, index_t s) {
  using F = compute_t<T>;
  F bv = F(base[0]);
  index_t best = 0;
  if (bv != bv) return 0;
  for (index_t k = 1; k < n; ++k) {
    const F v = F(base[k * s]);
    if (v != v) return k;
    if (v > bv) {
      bv = v;
      best = k;
    }
  }
  return best;
}

/// argmax along axis `ax` of a contiguous source of rank R (dims sd); out[...] at the output strides aligned to
/// the source (`os`, 0 along ax). With `all`, the index into the flattened source, written to out[0].
template <class T, int R>
void cpu_argmax(const T* src, const dims_t<R>& sd, int ax, bool all, std::int64_t* out, const dims_t<R>& os, int nthreads) {
  if (all) {
    const index_t n = product(sd);
    if (n == 0) throw shape_error("tessera: argmax of an empty tensor");
    *out = first_argmax(src, n, 1);
    return;
  }
  index_t outer = 1, inner = 1;
  for (int i = 0; i < ax; ++i) outer *= sd[i];
  for (int i = ax + 1; i < R; ++i) inner *= sd[i];
  const index_t n = sd[ax];
  stats::count_pass();
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nthreads) if (outer * inner * n >= 32768)
#endif
  for (index_t o = 0; o < outer; ++o)
    for (index_t i = 0; i < inner; ++i) {
      const T* base = src + o * n * inner + i;
      const index_t best = first_argmax(base, n, inner);
      // destination offset from the (outer, inner) position
      index_t rem_o = o, rem_i = i, off = 0;
      for (int d = R - 1; d > ax; --d) { off += (rem_i % sd[d]) * os[d]; rem_i /= sd[d]; }
      for (int d = ax - 1; d >= 0; --d) { off += (rem_o % sd[d]) * os[d]; rem_o /= sd[d]; }
      out[off] = best;
    }
}

}  // namespace tessera::detail
