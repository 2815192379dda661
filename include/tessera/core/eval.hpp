// Evaluators: what a kernel holds for each node of an expression while it loops over the destination.
// An evaluator is a small copyable struct (pointers and strides, no ownership), usable in host loops and
// passed by value to CUDA kernels. The loop sets a row (all indices but the innermost), then asks for
// scalar(j) or packet<N, Contig>(j) along that row.
#pragma once
#include <type_traits>

#include "tessera/core/shape.hpp"
#include "tessera/core/simd.hpp"

namespace tessera::detail {

/// A tensor read through strides aligned to the destination (stride 0 where it is broadcast).
template <class T, int R>
struct leaf_eval {
  using value_type = T;
  const T* base;
  const T* row;
  index_t s[R > 0 ? R : 1];
  index_t sin;  ///< stride along the innermost (coalesced) dimension
  int mode;     ///< 0: broadcast along the row, 1: contiguous, 2: strided

  TS_HD TS_INLINE T scalar(index_t j) const { return row[j * sin]; }
#if TESSERA_SIMD
  template <int N, bool Contig>
  TS_INLINE simd::packet<T, N> packet(index_t j) const {
    if constexpr (Contig) return simd::load<T, N>(row + j);
    else if (mode == 1) return simd::load<T, N>(row + j);
    else if (mode == 0) return simd::broadcast<T, N>(row);
    else return simd::gather<T, N>(row + j * sin, sin);
  }
#endif
  TS_INLINE void prefetch(index_t j) const {
#if !TS_ON_DEVICE
    __builtin_prefetch(row + j);
#endif
  }
  TS_HD TS_INLINE void set_row(const index_t* idx, int nouter) {
    const T* p = base;
    for (int d = 0; d < nouter; ++d) p += idx[d] * s[d];
    row = p;
  }
  template <class F>
  TS_HD void visit(F&& f) { f(*this); }
};

/// Strides of a tensor with dims `own` aligned right against destination dims `out` (broadcast dims get 0).
template <int R, std::size_t RO>
dims_t<R> aligned_strides(const dims_t<RO>& own, const dims_t<RO>& strides, const dims_t<R>& out) {
  static_assert(int(RO) <= R);
  dims_t<R> s{};
  for (int i = 0; i < int(RO); ++i) {
    const int o = R - int(RO) + i;
    s[o] = (own[i] == 1 && out[o] != 1) ? 0 : strides[i];
  }
  return s;
}

template <class T, int R, std::size_t RO>
leaf_eval<T, R> make_leaf_eval(const T* data, const dims_t<RO>& own, const dims_t<RO>& strides, const dims_t<R>& out) {
  leaf_eval<T, R> e{};
  e.base = e.row = data;
  auto s = aligned_strides<R>(own, strides, out);
  for (int i = 0; i < R; ++i) e.s[i] = s[i];
  e.sin = R > 0 ? s[R - 1] : 0;
  e.mode = e.sin == 0 ? 0 : e.sin == 1 ? 1 : 2;
  return e;
}

/// A constant.
template <class T>
struct scalar_eval {
  using value_type = T;
  T value;
  TS_HD TS_INLINE T scalar(index_t) const { return value; }
#if TESSERA_SIMD
  template <int N, bool Contig>
  TS_INLINE simd::packet<T, N> packet(index_t) const { return simd::broadcast<T, N>(&value); }
#endif
  TS_INLINE void prefetch(index_t) const {}
  TS_HD TS_INLINE void set_row(const index_t*, int) {}
  template <class F>
  TS_HD void visit(F&&) {}
};

}  // namespace tessera::detail
