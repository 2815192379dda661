// The embedding lookup as a differentiable operation, written once for every policy:
//   embedding(weight, indices, padding_idx, max_norm, norm_type)   weight [Num, Dim], integer indices of any rank R
//       (int32 or int64, on the host) -> [indices' dims..., Dim]: row indices[i] of weight for each i. max_norm > 0
//       first renormalises, in place in the weight, each looked-up row whose norm_type-norm exceeds max_norm
//       (embedding_renorm_, PyTorch's torch.embedding_renorm_: no gradient through it).
// The indices are read and checked on the host (std::out_of_range naming the index, its position and Num), then
// copied to P's memory. The backward adds each output row's gradient into the weight row it came from, duplicates
// accumulating (PyTorch's embedding_dense_backward); rows equal to padding_idx (when >= 0) get no gradient. The
// rows are grouped on the host (a stable sort: each weight row sums its gradient rows in input order), so every
// policy gives the same result every run; kernels through backend<P> (kernels/cpu/embedding.hpp,
// kernels/cuda/embedding.hpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/autodiff/ops.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif

namespace tessera::ad {

/// PyTorch's torch.embedding_renorm_: each distinct row r of weight named by `indices` whose norm_type-norm n exceeds
/// max_norm is scaled in place by max_norm / (n + 1e-7); other rows are untouched; no gradient is recorded. norm_type
/// may be +infinity (the largest magnitude). The indices must already be checked to lie in [0, Num).
template <class T, class P>
void embedding_renorm_(Var<T, 2, P> weight, const std::vector<index_t>& indices, double max_norm, double norm_type) {
  if (!(max_norm > 0.0)) throw std::invalid_argument("tessera: embedding: max_norm must be > 0, got " + std::to_string(max_norm));
  if (!(norm_type > 0.0)) throw std::invalid_argument("tessera: embedding: norm_type must be > 0, got " + std::to_string(norm_type));
  std::vector<index_t> rows(indices);
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  const index_t U = index_t(rows.size()), dim = weight.dims()[1];
  if (U == 0 || dim == 0) return;
  using T2 = Tensor<T, dyn_shape_t<2>, P>;
  std::vector<index_t> offsets(std::size_t(U) + 1);
  std::iota(offsets.begin(), offsets.end(), index_t(0));  // row r's delta is row r of `delta` (also its position list)
  Tensor<index_t, dyn_shape_t<1>, P> prows(U), poff(U + 1);
  backend<P>::from_host(prows.data(), rows.data(), U);
  backend<P>::from_host(poff.data(), offsets.data(), U + 1);
  T* w = weight.mutable_value().data();
  T2 picked(U, dim);  // the rows, gathered
  backend<P>::embedding_forward(static_cast<const T*>(w), prows.data(), picked.data(), U, dim);
  T2 norm(U, index_t(1));
  if (norm_type == 2.0) norm = tessera::sqrt(tessera::sum<1>(picked * picked, keepdim));
  else if (norm_type == 1.0) norm = tessera::sum<1>(tessera::abs(picked), keepdim);
  else if (std::isinf(norm_type)) norm = tessera::max<1>(tessera::abs(picked), keepdim);
  else norm = tessera::pow(tessera::sum<1>(tessera::pow(tessera::abs(picked), T(norm_type)), keepdim), T(1.0 / norm_type));
  // w_r += (scale_r - 1) w_r with scale_r = max_norm / (n_r + 1e-7) where n_r > max_norm (else 1): one scatter-add
  const T mx = T(max_norm);
  const T2 delta = picked * (tessera::where(norm > mx, mx / (norm + T(1e-7)), T(1)) - T(1));
  backend<P>::embedding_backward(delta.data(), prows.data(), poff.data(), poff.data(), U, dim, w);
}

/// Rows of `weight` [Num, Dim] picked by integer `indices` (host tensor of any rank R): a Var [indices' dims..., Dim].
/// padding_idx >= 0: that row gets no gradient (its value is whatever the weight holds; nn::Embedding zeroes it).
/// max_norm > 0: the rows looked up are first renormalised in the weight (embedding_renorm_); 0: off.
template <class T, class P, class I, class SI, class PI>
Var<T, SI::rank + 1, P> embedding(const Var<T, 2, P>& weight, const Tensor<I, SI, PI>& indices, index_t padding_idx = -1,
                                  double max_norm = 0.0, double norm_type = 2.0) {
  static_assert(is_host_policy_v<PI>, "tessera: embedding reads the indices on the host");
  static_assert(std::is_integral_v<I> && !std::is_same_v<I, bool>, "tessera: embedding takes integer indices (int32 or int64)");
  constexpr int R = SI::rank;
  const index_t num = weight.dims()[0], dim = weight.dims()[1];
  const index_t n = indices.size();
  std::vector<index_t> idx(static_cast<std::size_t>(n));
  {
    Tensor<I, dyn_shape_t<R>, PI> c(indices);  // contiguous, row-major
    for (index_t i = 0; i < n; ++i) {
      const auto v = c.data()[i];
      if (v < 0 || index_t(v) >= num)
        throw std::out_of_range("tessera: embedding: index " + std::to_string(static_cast<long long>(v)) + " at position " +
                                std::to_string(i) + " is outside [0, " + std::to_string(num) + ") (the weight has " +
                                std::to_string(num) + " rows)");
      idx[std::size_t(i)] = index_t(v);
    }
  }
  if (padding_idx >= num)
    throw std::out_of_range("tessera: embedding: padding_idx " + std::to_string(padding_idx) + " is outside [0, " +
                            std::to_string(num) + ")");
  if (max_norm < 0.0) throw std::invalid_argument("tessera: embedding: max_norm must be >= 0 (0: off), got " + std::to_string(max_norm));
  if (max_norm > 0.0) embedding_renorm_(weight, idx, max_norm, norm_type);
  dims_t<R + 1> od{};
  for (int k = 0; k < R; ++k) od[std::size_t(k)] = indices.dims()[k];
  od[std::size_t(R)] = dim;
  using V = Var<T, R + 1, P>;
  typename V::tensor y(od);
  {
    Tensor<index_t, dyn_shape_t<1>, P> pidx(n);
    backend<P>::from_host(pidx.data(), idx.data(), n);
    backend<P>::embedding_forward(weight.value().data(), pidx.data(), y.data(), n, dim);
  }
  auto hidx = std::make_shared<const std::vector<index_t>>(std::move(idx));
  return V::make(std::move(y), [weight, hidx, padding_idx, num, dim](const auto& g, const auto&) {
    bool acc;
    T* dw = detail::grad_of(weight, acc);
    if (!dw) return;
    if (!acc) backend<P>::zero(dw, num * dim);
    // group the positions by weight row (stable: each row's gradient rows are summed in input order)
    const auto& ix = *hidx;
    std::vector<index_t> pos;
    pos.reserve(ix.size());
    for (std::size_t i = 0; i < ix.size(); ++i)
      if (ix[i] != padding_idx) pos.push_back(index_t(i));
    std::stable_sort(pos.begin(), pos.end(), [&](index_t a, index_t b) { return ix[std::size_t(a)] < ix[std::size_t(b)]; });
    std::vector<index_t> rows, offsets;
    for (std::size_t k = 0; k < pos.size(); ++k)
      if (k == 0 || ix[std::size_t(pos[k])] != ix[std::size_t(pos[k - 1])]) {
        rows.push_back(ix[std::size_t(pos[k])]);
        offsets.push_back(index_t(k));
      }
    offsets.push_back(index_t(pos.size()));
    const index_t nrows = index_t(rows.size()), npos = index_t(pos.size());
    if (nrows == 0) return;
    Tensor<index_t, dyn_shape_t<1>, P> prows(nrows), poff(nrows + 1), ppos(npos);
    backend<P>::from_host(prows.data(), rows.data(), nrows);
    backend<P>::from_host(poff.data(), offsets.data(), nrows + 1);
    backend<P>::from_host(ppos.data(), pos.data(), npos);
    backend<P>::embedding_backward(g.data(), prows.data(), poff.data(), ppos.data(), nrows, dim, dw);
  }, weight);
}

}  // namespace tessera::ad
