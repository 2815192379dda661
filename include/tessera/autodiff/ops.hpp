// Differentiable operations on Vars: reductions, matmul, views and softmax; the elementwise arithmetic and unary
// functions are in autodiff/fused.hpp (included here), where a whole elementwise expression is recorded as one node:
// one fused pass forward and one backward. Backward rules run as fused expressions; softmax and log_softmax along
// rows, and a broadcast gradient summed back (add_reduced), are kernels reached through backend<P>
// (kernels/backend.hpp), for every policy alike.
#pragma once
#include <type_traits>

#include "tessera/autodiff/fused.hpp"
#include "tessera/autodiff/var.hpp"
#include "tessera/expr/matmul.hpp"
#include "tessera/expr/views.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif

namespace tessera::ad {

namespace detail {
/// v's gradient tensor: made (not zeroed, `accumulate` false) when v has none yet, else the one it has (`accumulate`
/// true: add to it).
template <class V>
typename V::tensor& fresh_or_grad(const V& v, bool& accumulate) {
  auto& nd = v.node();
  accumulate = nd.has_grad;
  if (!nd.has_grad) {
    nd.grad = typename V::tensor(v.dims());
    nd.has_grad = true;
  }
  return nd.grad;
}

/// The gradient buffer of a Var that needs one (see fresh_or_grad), or null (`accumulate` false) when v is empty or
/// needs no gradient.
template <class V>
typename V::value_type* grad_of(const V& v, bool& accumulate) {
  accumulate = false;
  if (!v.defined() || !v.requires_grad()) return nullptr;
  return fresh_or_grad(v, accumulate).data();
}

}  // namespace detail

// ---- arithmetic and the unary functions: autodiff/fused.hpp (recorded whole, fused) ----

// ---- reductions ----

/// The sum of all elements (rank 0).
template <class T, int R, class P>
auto sum(const Var<T, R, P>& a) {
  using V = Var<T, 0, P>;
  return V::make(typename V::tensor(tessera::sum(a.value())), [a](const auto& g) {
    detail::accumulate(a, tessera::broadcast_to<dyn_shape_t<R>>(g.cview(), a.dims()));
  }, a);
}
/// The mean of all elements (rank 0).
template <class T, int R, class P>
auto mean(const Var<T, R, P>& a) {
  return sum(a) * (1.0 / double(a.size()));
}

// ---- products and views ----

/// The same elements under new dims (row-major order); the gradient is reshaped back.
template <int R2, class T, int R, class P>
auto reshape(const Var<T, R, P>& a, const dims_t<R2>& dims) {
  using V = Var<T, R2, P>;
  return V::make(typename V::tensor(tessera::reshape<dyn_shape_t<R2>>(a.value(), dims)), [a](const auto& g) {
    detail::accumulate(a, tessera::reshape<dyn_shape_t<R>>(g, a.dims()));
  }, a);
}
/// [N, ...] -> [N, rest]: the batch dimension kept, the others flattened.
template <class T, int R, class P>
auto flatten_batch(const Var<T, R, P>& a) {
  const auto& d = a.dims();
  index_t rest = 1;
  for (int i = 1; i < R; ++i) rest *= d[i];
  return reshape<2>(a, dims_t<2>{d[0], rest});
}
/// The transpose of a matrix.
template <class T, class P>
auto transpose(const Var<T, 2, P>& a) {
  using V = Var<T, 2, P>;
  return V::make(typename V::tensor(tessera::transpose(a.value())), [a](const auto& g) {
    detail::accumulate(a, tessera::transpose(g));
  }, a);
}

namespace detail {
/// Throws shape_error naming both shapes unless a [..., M, K] (or [K]) and b [..., K, N] (or [K]) fit torch.matmul:
/// equal inner extents, batch dims broadcastable (aligned right).
template <std::size_t RA, std::size_t RB>
void check_matmul_shapes(const std::array<index_t, RA>& da, const std::array<index_t, RB>& db) {
  const index_t ka = da[RA - 1], kb = db[RB == 1 ? 0 : RB - 2];
  const auto both = [&] { return tessera::detail::format_dims(da) + " and " + tessera::detail::format_dims(db); };
  if (ka != kb)
    throw shape_error("tessera: matmul: shapes " + both() + " do not fit (the columns of the left must equal the rows of the right)");
  const int na = RA >= 2 ? int(RA) - 2 : 0, nb = RB >= 2 ? int(RB) - 2 : 0;
  for (int i = 1; i <= na && i <= nb; ++i) {
    const index_t x = da[std::size_t(na - i)], y = db[std::size_t(nb - i)];
    if (x != y && x != 1 && y != 1)
      throw shape_error("tessera: matmul: the batch dimensions of " + both() + " cannot be broadcast together");
  }
}

/// The product of a [..., M, K] and b [..., K, N] (batch dims broadcast, as torch.matmul) through the planner's
/// batched GEMM. dA = G B^T and dB = A^T G, each summed over the batch dims its operand was broadcast along.
template <class T, int RA, int RB, class P>
auto matmul_batched(const Var<T, RA, P>& a, const Var<T, RB, P>& b) {
  auto fwd = tessera::matmul(a.value(), b.value());
  using V = Var<T, decltype(fwd)::rank, P>;
  return V::make(typename V::tensor(fwd), [a, b](const auto& g) {
    if (a.requires_grad()) accumulate(a, tessera::matmul(g, tessera::transpose(b.value())));
    if (b.requires_grad()) accumulate(b, tessera::matmul(tessera::transpose(a.value()), g));
  }, a, b);
}

template <std::size_t R>
std::array<index_t, R - 1> drop_dim(const std::array<index_t, R>& d, std::size_t at) {
  std::array<index_t, R - 1> o{};
  for (std::size_t i = 0, k = 0; i < R; ++i)
    if (i != at) o[k++] = d[i];
  return o;
}
}  // namespace detail

/// torch.matmul on Vars: matrices, batches of matrices with broadcast batch dims ([B, M, K] x [K, N] -> [B, M, N],
/// [B, 1, M, K] x [H, K, N] -> [B, H, M, N]), matrix-vector ([..., M, K] x [K] -> [..., M]), vector-matrix
/// ([K] x [..., K, N] -> [..., N]) and the dot product of two vectors (rank 0). A vector operand is seen as a
/// one-row (left) or one-column (right) matrix and that axis dropped from the result, as torch does.
template <class T, int RA, int RB, class P>
auto matmul(const Var<T, RA, P>& a, const Var<T, RB, P>& b) {
  static_assert(RA >= 1 && RB >= 1, "tessera: ad::matmul takes vectors (rank 1), matrices or batches of matrices, not scalars");
  detail::check_matmul_shapes(a.dims(), b.dims());
  if constexpr (RA >= 2 && RB >= 2) {
    return detail::matmul_batched(a, b);
  } else if constexpr (RA >= 2) {
    auto c = detail::matmul_batched(a, reshape<2>(b, dims_t<2>{b.dims()[0], 1}));
    return reshape<RA - 1>(c, detail::drop_dim(c.dims(), RA - 1));
  } else if constexpr (RB >= 2) {
    auto c = detail::matmul_batched(reshape<2>(a, dims_t<2>{1, a.dims()[0]}), b);
    return reshape<RB - 1>(c, detail::drop_dim(c.dims(), RB - 2));
  } else {
    auto c = detail::matmul_batched(reshape<2>(a, dims_t<2>{1, a.dims()[0]}), reshape<2>(b, dims_t<2>{b.dims()[0], 1}));
    return reshape<0>(c, dims_t<0>{});
  }
}

// ---- softmax ----
// These run along the last axis; ad::softmax<Axis> / ad::log_softmax<Axis> for any other axis are in view_ops.hpp.

namespace detail {
/// softmax (or log-softmax) along the last axis of z (rows: every other axis flattened); the backward from the output.
template <bool Log, class T, int R, class P>
Var<T, R, P> softmax_rows(const Var<T, R, P>& z) {
  static_assert(R >= 1, "tessera: softmax needs a Var of rank 1 or more");
  using V = Var<T, R, P>;
  const index_t C = z.dims()[R - 1], B = C ? z.size() / C : 0;
  typename V::tensor y(z.dims());
  backend<P>::template softmax_rows<Log>(z.value().data(), y.data(), B, C);
  return V::make(std::move(y), [z, B, C](const auto& g, const auto& out) {
    bool acc;
    if (T* gz = grad_of(z, acc)) backend<P>::template softmax_rows_backward<Log>(g.data(), out.data(), gz, B, C, acc);
  }, z);
}
}  // namespace detail

/// log(softmax(z)) along the last axis of z (any rank >= 1); dz = g - softmax * sum(g).
template <class T, int R, class P>
Var<T, R, P> log_softmax(const Var<T, R, P>& z) {
  return detail::softmax_rows<true>(z);
}

/// softmax along the last axis of z (any rank >= 1); dz = y * (g - sum(g * y)).
template <class T, int R, class P>
Var<T, R, P> softmax(const Var<T, R, P>& z) {
  return detail::softmax_rows<false>(z);
}

}  // namespace tessera::ad
