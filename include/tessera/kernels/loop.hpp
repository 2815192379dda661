// Loop plans shared by the CPU and CUDA kernels: drop unit dimensions and merge dimensions that every
// operand walks contiguously, so that most expressions become one flat loop.
#pragma once
#include <vector>

#include "tessera/config.hpp"
#include "tessera/core/shape.hpp"

namespace tessera::detail {

template <int R>
struct loop_plan {
  static constexpr int cap = R > 0 ? R : 1;
  int nd = 1;            ///< dimensions after coalescing (at least 1)
  index_t dims[cap]{};   ///< their extents
  index_t dst_s[cap]{};  ///< destination strides
  TS_HD index_t rows() const {
    index_t r = 1;
    for (int d = 0; d + 1 < nd; ++d) r *= dims[d];
    return r;
  }
  TS_HD index_t inner() const { return dims[nd - 1]; }
  TS_HD index_t total() const { return rows() * inner(); }
};

/// The coalescing of make_plan over the leaves' stride arrays (ops[0, nops), rewritten in place): instantiated once
/// per rank, not once per expression.
template <int R>
loop_plan<R> coalesce_plan(const dims_t<R>& dims, const dims_t<R>& dst_strides, index_t* const* ops_begin, std::size_t nops) {
  struct span {
    index_t* const* b;
    index_t* const* e;
    index_t* const* begin() const { return b; }
    index_t* const* end() const { return e; }
  } const ops{ops_begin, ops_begin + nops};
  loop_plan<R> p;
  // groups of original dimensions, innermost first: (extent, index of the group's innermost dim)
  int keep[loop_plan<R>::cap];
  int nk = 0;
  for (int d = 0; d < R; ++d)
    if (dims[d] != 1) keep[nk++] = d;
  if (nk == 0) {  // a single element
    p.nd = 1;
    p.dims[0] = 1;
    p.dst_s[0] = 0;
    for (index_t* s : ops) s[0] = 0;
  } else {
    index_t gext[loop_plan<R>::cap];
    int ginner[loop_plan<R>::cap];
    int ng = 0;
    gext[0] = dims[keep[nk - 1]];
    ginner[0] = keep[nk - 1];
    for (int k = nk - 2; k >= 0; --k) {
      const int d = keep[k], in = ginner[ng];
      bool merge = dst_strides[d] == dst_strides[in] * gext[ng];
      for (index_t* s : ops) merge = merge && s[d] == s[in] * gext[ng];
      if (merge) gext[ng] *= dims[d];
      else {
        ++ng;
        gext[ng] = dims[d];
        ginner[ng] = d;
      }
    }
    ++ng;
    p.nd = ng;
    for (int g = 0; g < ng; ++g) {  // outermost first
      p.dims[g] = gext[ng - 1 - g];
      p.dst_s[g] = dst_strides[ginner[ng - 1 - g]];
    }
    for (index_t* s : ops) {
      index_t t[loop_plan<R>::cap];
      for (int g = 0; g < ng; ++g) t[g] = s[ginner[ng - 1 - g]];
      for (int g = 0; g < ng; ++g) s[g] = t[g];
    }
  }
  return p;
}

/// Coalesce the destination's and every leaf's strides over `dims`; leaves get their compacted strides,
/// inner stride and access mode. Returns the plan the loops follow.
/// (The leaves' stride arrays are collected on the stack up to 16 leaves, on the heap beyond: no allocation in the
/// fixed cost of a small assignment.)
template <int R, class Ev>
loop_plan<R> make_plan(const dims_t<R>& dims, const dims_t<R>& dst_strides, Ev& ev) {
  std::size_t nleaves = 0;
  ev.visit([&](auto&) { ++nleaves; });
  constexpr std::size_t on_stack = 16;
  index_t* local[on_stack];
  std::vector<index_t*> heap;
  index_t** ops = local;  // every leaf's stride array
  if (nleaves > on_stack) {
    heap.resize(nleaves);
    ops = heap.data();
  }
  std::size_t k = 0;
  ev.visit([&](auto& leaf) { ops[k++] = leaf.s; });
  const loop_plan<R> p = coalesce_plan<R>(dims, dst_strides, ops, nleaves);
  ev.visit([&](auto& leaf) {
    leaf.sin = leaf.s[p.nd - 1];
    leaf.mode = leaf.sin == 0 ? 0 : leaf.sin == 1 ? 1 : 2;
  });
  return p;
}

/// True when every leaf walks the inner dimension contiguously (no broadcast, no gather). (A copy: visiting needs
/// a mutable evaluator.)
template <class Ev>
bool all_leaves_contiguous(Ev ev) {
  bool c = true;
  ev.visit([&](auto& leaf) { c = c && leaf.mode == 1; });
  return c;
}

/// Advance a row-major multi-index over the first n dims.
TS_HD inline void next_index(index_t* idx, const index_t* dims, int n) {
  for (int d = n - 1; d >= 0; --d) {
    if (++idx[d] < dims[d]) return;
    idx[d] = 0;
  }
}
TS_HD inline void unflatten(index_t flat, index_t* idx, const index_t* dims, int n) {
  for (int d = n - 1; d >= 0; --d) {
    idx[d] = flat % dims[d];
    flat /= dims[d];
  }
}

/// The row stride of the thread-local blocks of C that a kernel hands to a `local_c` epilogue (the int8 GEMM; see
/// policy/assign.hpp's local_tree_epilogue): whole 16-element lines.
inline index_t local_ld(index_t N) { return (N + 15) / 16 * 16; }

}  // namespace tessera::detail
