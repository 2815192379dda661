// Differentiable elementwise pow, rsqrt, clamp, where, minimum and maximum on Vars, with PyTorch's gradients
// (the formulas of its derivatives.yaml and FunctionsManual.cpp, edge cases included; each operation says which).
// Binary operations broadcast as the arithmetic of ops.hpp does: an input's gradient is summed over the dims
// where it was broadcast. Forward and backward are fused expressions, so they run on every policy.
#pragma once
#include "tessera/autodiff/ops.hpp"

#include <cmath>
#include <type_traits>
#include <utility>

namespace tessera::ad {

// ---- pow ----

/// a ** b elementwise (broadcasting). Gradients as PyTorch's pow_backward_self and pow_backward_exponent:
///   d/da: where(b == 0, 0, g * (b * a ** (b - 1)))  (0 where b == 0, also at a == 0, where b * a ** (b - 1) is NaN);
///   d/db: g * where(a == 0 & b >= 0, 0, out * log(a))  (NaN for a < 0; -inf for a == 0 and b < 0).
template <class T, int RA, int RB, class P>
auto pow(const Var<T, RA, P>& a, const Var<T, RB, P>& b) {
  using V = Var<T, detail::max_rank<RA, RB>, P>;
  return V::make(typename V::tensor(tessera::pow(a.value(), b.value())), [a, b](const auto& g, const auto& out) {
    const auto& x = a.value();
    const auto& e = b.value();
    if (a.requires_grad()) detail::accumulate(a, tessera::where(e == T(0), T(0), g * (e * tessera::pow(x, e - T(1)))));
    if (b.requires_grad())
      detail::accumulate(b, g * tessera::where((x == T(0)) && (e >= T(0)), T(0), out * tessera::log(x)));
  }, a, b);
}
/// a ** e for a constant e. PyTorch's pow_backward: zeros when e == 0 (whatever a is, NaN included), else
/// g * (e * a ** (e - 1)).
template <class T, int R, class P, class S>
  requires std::is_arithmetic_v<S>
auto pow(const Var<T, R, P>& a, S exponent) {
  using V = Var<T, R, P>;
  const T e = T(exponent);
  return V::make(typename V::tensor(tessera::pow(a.value(), e)), [a, e](const auto& g) {
    if (e == T(0)) return;  // the gradient is zero: nothing to add
    detail::accumulate(a, g * (e * tessera::pow(a.value(), e - T(1))));
  }, a);
}
/// s ** b for a constant base s. PyTorch's pow_backward_exponent with a scalar base: g * (out * log(s)), masked to 0
/// where b >= 0 when s == 0 (so s == 0, b < 0 gives -inf, and s < 0 gives NaN).
template <class T, int R, class P, class S>
  requires std::is_arithmetic_v<S>
auto pow(S base, const Var<T, R, P>& b) {
  using V = Var<T, R, P>;
  const T s = T(base);
  return V::make(typename V::tensor(tessera::pow(s, b.value())), [b, s](const auto& g, const auto& out) {
    const T log_s = T(std::log(double(s)));
    if (s == T(0)) detail::accumulate(b, g * tessera::where(b.value() >= T(0), T(0), out * log_s));
    else detail::accumulate(b, g * (out * log_s));
  }, b);
}

// ---- rsqrt ----

/// 1 / sqrt(a). PyTorch's rule: -0.5 * g * out ** 3 (out * out * out, as PyTorch's pow computes a cube); -inf at
/// a == 0, NaN for a < 0.
template <class T, int R, class P>
auto rsqrt(const Var<T, R, P>& a) {
  using V = Var<T, R, P>;
  return V::make(typename V::tensor(tessera::rsqrt(a.value())), [a](const auto& g, const auto& out) {
    detail::accumulate(a, T(-0.5) * g * (out * out * out));
  }, a);
}

// ---- clamp ----

/// a clamped to [lo, hi] (both bounds given). PyTorch's clamp_backward: g where lo <= a <= hi (both ends inclusive:
/// an element at a bound gets the gradient), else 0; a NaN element gets 0 (it fails both comparisons), and so does
/// every element when lo > hi.
template <class T, int R, class P, class L, class H>
  requires(std::is_arithmetic_v<L> && std::is_arithmetic_v<H>)
auto clamp(const Var<T, R, P>& a, L lo, H hi) {
  using V = Var<T, R, P>;
  const T l = T(lo), h = T(hi);
  return V::make(typename V::tensor(tessera::clamp(a.value(), l, h)), [a, l, h](const auto& g) {
    const auto& x = a.value();
    detail::accumulate(a, tessera::where((x >= l) && (x <= h), g, T(0)));
  }, a);
}

// ---- where ----

/// a where cond is true, else b (broadcasting all three). cond is a bool tensor, view or expression; it is not
/// differentiable and is evaluated once (its result is kept for backward). PyTorch's rule: a gets where(cond, g, 0),
/// b gets where(cond, 0, g); a NaN gradient does not cross to the side that was not chosen.
template <class C, class T, int RA, int RB, class P>
  requires tessera::detail::TensorLike<C>
auto where(C&& cond, const Var<T, RA, P>& a, const Var<T, RB, P>& b) {
  auto ec = tessera::detail::as_expr(std::forward<C>(cond));
  using E = decltype(ec);
  static_assert(std::is_same_v<typename E::value_type, bool>,
                "tessera: ad::where: the condition must be a bool tensor or expression (a comparison)");
  constexpr int RC = E::rank;
  using CT = Tensor<bool, dyn_shape_t<RC>, P>;
  CT c(ec);
  using V = Var<T, detail::max_rank<RC, detail::max_rank<RA, RB>>, P>;
  typename V::tensor value(tessera::where(c, a.value(), b.value()));
  return V::make(std::move(value), [a, b, c = std::move(c)](const auto& g) {
    if (a.requires_grad()) detail::accumulate(a, tessera::where(c, g, T(0)));
    if (b.requires_grad()) detail::accumulate(b, tessera::where(c, T(0), g));
  }, a, b);
}

// ---- minimum, maximum ----

/// The smaller of a and b elementwise (broadcasting; NaN from either side wins). PyTorch's rule (derivatives.yaml,
/// minimum): a gets where(a == b, g / 2, g) masked to 0 where a > b, b the same masked to 0 where a < b. Ties split
/// the gradient half and half; where either side is NaN neither comparison holds, so both get g.
template <class T, int RA, int RB, class P>
auto minimum(const Var<T, RA, P>& a, const Var<T, RB, P>& b) {
  using V = Var<T, detail::max_rank<RA, RB>, P>;
  return V::make(typename V::tensor(tessera::minimum(a.value(), b.value())), [a, b](const auto& g) {
    const auto& x = a.value();
    const auto& y = b.value();
    if (a.requires_grad()) detail::accumulate(a, tessera::where(x > y, T(0), tessera::where(x == y, g / T(2), g)));
    if (b.requires_grad()) detail::accumulate(b, tessera::where(x < y, T(0), tessera::where(x == y, g / T(2), g)));
  }, a, b);
}
/// The larger of a and b elementwise. PyTorch's rule (derivatives.yaml, maximum): a gets where(a == b, g / 2, g)
/// masked to 0 where a < b, b the same masked to 0 where a > b (ties half and half, NaN: both get g).
template <class T, int RA, int RB, class P>
auto maximum(const Var<T, RA, P>& a, const Var<T, RB, P>& b) {
  using V = Var<T, detail::max_rank<RA, RB>, P>;
  return V::make(typename V::tensor(tessera::maximum(a.value(), b.value())), [a, b](const auto& g) {
    const auto& x = a.value();
    const auto& y = b.value();
    if (a.requires_grad()) detail::accumulate(a, tessera::where(x < y, T(0), tessera::where(x == y, g / T(2), g)));
    if (b.requires_grad()) detail::accumulate(b, tessera::where(x > y, T(0), tessera::where(x == y, g / T(2), g)));
  }, a, b);
}

}  // namespace tessera::ad
