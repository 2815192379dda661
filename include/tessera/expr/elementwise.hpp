// Elementwise operations: operators, math functions, comparisons, where, cast.
// Each operation is a functor with one `apply` template that serves scalars (host and device) and SIMD packets.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tessera/core/math.hpp"
#include "tessera/core/ops.hpp"
#include "tessera/expr/node.hpp"

namespace tessera {



// ---- free functions ----------------------------------------------------------------------------------------

#define TS_BINARY_FN(FN, OP)                                                                 \
  template <class A, class B>                                                                \
    requires(detail::Operand<A> && detail::Operand<B> &&                                     \
             (detail::TensorLike<A> || detail::TensorLike<B>))                               \
  auto FN(A&& a, B&& b) { return detail::make_binary<op::OP>(std::forward<A>(a), std::forward<B>(b)); }
TS_BINARY_FN(operator+, add)
TS_BINARY_FN(operator-, sub)
TS_BINARY_FN(operator*, mul)
TS_BINARY_FN(operator/, div)
TS_BINARY_FN(operator<, less)
TS_BINARY_FN(operator<=, less_equal)
TS_BINARY_FN(operator>, greater)
TS_BINARY_FN(operator>=, greater_equal)
TS_BINARY_FN(operator==, equal)
TS_BINARY_FN(operator!=, not_equal)
TS_BINARY_FN(operator&&, logical_and)
TS_BINARY_FN(operator||, logical_or)
TS_BINARY_FN(minimum, min)
TS_BINARY_FN(maximum, max)
TS_BINARY_FN(min, min)
TS_BINARY_FN(max, max)
TS_BINARY_FN(pow, pow)
TS_BINARY_FN(equal, equal)
#undef TS_BINARY_FN

#define TS_UNARY_FN(FN, OP)                                                                  \
  template <detail::TensorLike A>                                                            \
  auto FN(A&& a) { return detail::make_unary<op::OP>(std::forward<A>(a)); }
TS_UNARY_FN(operator-, neg)
TS_UNARY_FN(operator!, logical_not)
TS_UNARY_FN(neg, neg)
TS_UNARY_FN(abs, abs)
TS_UNARY_FN(relu, relu)
TS_UNARY_FN(exp, exp)
TS_UNARY_FN(log, log)
TS_UNARY_FN(sqrt, sqrt)
TS_UNARY_FN(rsqrt, rsqrt)
TS_UNARY_FN(tanh, tanh)
TS_UNARY_FN(sigmoid, sigmoid)
TS_UNARY_FN(gelu, gelu)
TS_UNARY_FN(gelu_grad, gelu_grad)
#undef TS_UNARY_FN

/// Elementwise clamp to [lo, hi] (scalars or tensors, broadcast).
template <detail::TensorLike X, detail::Operand L, detail::Operand H>
auto clamp(X&& x, L&& lo, H&& hi) {
  auto ex = detail::as_expr(std::forward<X>(x));
  using T = typename decltype(ex)::value_type;
  auto conv = [](auto&& o) {
    if constexpr (detail::is_scalar_v<decltype(o)>) return detail::scalar_as<T>(o);
    else return detail::as_expr(std::forward<decltype(o)>(o));
  };
  auto el = conv(std::forward<L>(lo));
  auto eh = conv(std::forward<H>(hi));
  (void)error::element_types_differ<op::clamp, T, typename decltype(el)::value_type>::ok;
  (void)error::element_types_differ<op::clamp, T, typename decltype(eh)::value_type>::ok;
  (void)error::element_type_not_supported<op::clamp, T>::ok;
  return detail::make_map<op::clamp>(std::move(ex), std::move(el), std::move(eh));
}

/// where(cond, a, b): a where cond is true, else b; cond is a bool expression; a and b tensors or scalars.
template <detail::TensorLike C, detail::Operand A, detail::Operand B>
auto where(C&& cond, A&& a, B&& b) {
  auto ec = detail::as_expr(std::forward<C>(cond));
  static_assert(std::is_same_v<typename decltype(ec)::value_type, bool>,
                "tessera: where: the condition must be a bool expression (a comparison, or a bool tensor)");
  if constexpr (detail::is_scalar_v<A> && detail::is_scalar_v<B>) {
    using T = std::common_type_t<std::remove_cvref_t<A>, std::remove_cvref_t<B>>;
    return detail::make_map<op::where>(std::move(ec), detail::scalar_node<T>{T(a)}, detail::scalar_node<T>{T(b)});
  } else if constexpr (detail::is_scalar_v<A>) {
    auto eb = detail::as_expr(std::forward<B>(b));
    return detail::make_map<op::where>(std::move(ec), detail::scalar_as<typename decltype(eb)::value_type>(a), std::move(eb));
  } else if constexpr (detail::is_scalar_v<B>) {
    auto ea = detail::as_expr(std::forward<A>(a));
    return detail::make_map<op::where>(std::move(ec), std::move(ea), detail::scalar_as<typename decltype(ea)::value_type>(b));
  } else {
    auto ea = detail::as_expr(std::forward<A>(a));
    auto eb = detail::as_expr(std::forward<B>(b));
    (void)error::element_types_differ<op::where, typename decltype(ea)::value_type, typename decltype(eb)::value_type>::ok;
    return detail::make_map<op::where>(std::move(ec), std::move(ea), std::move(eb));
  }
}

/// Convert each element to To (C++ conversion rules; floating to narrow integer goes through int32).
template <Element To, detail::TensorLike A>
auto cast(A&& a) {
  auto ea = detail::as_expr(std::forward<A>(a));
  return detail::make_map<op::cast<To, typename decltype(ea)::value_type>>(std::move(ea));
}


}  // namespace tessera
