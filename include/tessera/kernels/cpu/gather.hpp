// Host loops for torch.gather along one axis and its backward (scatter-add): raw pointers, contiguous row-major
// buffers, dims as arrays. autodiff/index_ops.hpp checks the indices (gather_first_bad) before either runs.
#pragma once
#include <array>
#include <cstddef>

#include "tessera/core/shape.hpp"

namespace tessera::detail {

/// The position of the first index outside [0, extent), or -1 when all are inside.
template <class I>
index_t gather_first_bad(const I* idx, index_t n, index_t extent) {
  for (index_t k = 0; k < n; ++k)
    if (idx[k] < 0 || index_t(idx[k]) >= extent) return k;
  return -1;
}

/// For every position p of `id` (the index's dims): out[p] = src[p with p[axis] = idx[p]] (Scatter false), or
/// src[p with p[axis] = idx[p]] += out[p] (Scatter true: the gradient of a gather, duplicates accumulating).
/// src has dims `sd`, which are at least `id` along every axis but `axis`.
template <bool Scatter, class Src, class Dst, class I, std::size_t R>
void cpu_gather_axis(Src* src, const std::array<index_t, R>& sd, const I* idx, const std::array<index_t, R>& id, int axis,
                     Dst* out) {
  index_t n = 1;
  for (auto e : id) n *= e;
  if (n == 0) return;
  const auto ss = contiguous_strides(sd);
  std::array<index_t, R> at{};
  index_t base = 0;  // src offset of `at` without the axis term
  for (index_t k = 0; k < n; ++k) {
    Src& s = src[base + index_t(idx[k]) * ss[std::size_t(axis)]];
    if constexpr (Scatter) s += out[k];
    else out[k] = s;
    for (int d = int(R) - 1; d >= 0; --d) {  // the next position, row-major
      const auto u = std::size_t(d);
      if (++at[u] < id[u]) {
        if (d != axis) base += ss[u];
        break;
      }
      if (d != axis) base -= (at[u] - 1) * ss[u];
      at[u] = 0;
    }
  }
}

}  // namespace tessera::detail
