// Expression nodes: small value types that record an operation and its operands; building one does no work.
#pragma once
#include <memory>
#include <type_traits>
#include <utility>

#include "tessera/core/tensor.hpp"

namespace tessera {

namespace error {
/// Instantiated when an operation gets operands of different element types: names the operation and both types.
template <class Op, class A, class B>
struct element_types_differ {
  static constexpr bool ok = std::is_same_v<A, B>;
  static_assert(ok, "tessera: the operands' element types differ; convert one with tessera::cast<T>(x)");
};
/// Instantiated when an operation does not accept an element type (e.g. tanh of int32).
template <class Op, class T>
struct element_type_not_supported {
  static constexpr bool ok = Op::template accepts<T>;
  static_assert(ok, "tessera: this operation does not accept this element type (see Op::accepts)");
};
}  // namespace error

namespace detail {

template <class E>
using expr_t = std::remove_cvref_t<E>;

/// A temporary tensor moved into an expression; shared so that copying the expression stays cheap.
template <class T, class S, class P>
struct owned_leaf : View<const T, S, P> {
  std::shared_ptr<const Tensor<T, S, P>> hold;
  explicit owned_leaf(Tensor<T, S, P>&& t)
      : owned_leaf(std::make_shared<const Tensor<T, S, P>>(std::move(t))) {}
  explicit owned_leaf(std::shared_ptr<const Tensor<T, S, P>> h) : View<const T, S, P>(h->cview()), hold(std::move(h)) {}
};

template <class X>
inline constexpr bool is_tensor_v = false;
template <class T, class S, class P>
inline constexpr bool is_tensor_v<Tensor<T, S, P>> = true;

template <class X>
inline constexpr bool is_scalar_v = std::is_arithmetic_v<std::remove_cvref_t<X>> || std::is_same_v<std::remove_cvref_t<X>, bfloat16>;

/// Tensors, views and nodes (not bare scalars).
template <class X>
concept TensorLike = Expression<X> || is_tensor_v<std::remove_cvref_t<X>>;
template <class X>
concept Operand = TensorLike<X> || is_scalar_v<X>;

/// The node an operand stands for: tensors become read-only views (temporaries are kept alive), nodes stay as they are.
template <class X>
auto as_expr(X&& x) {
  using D = std::remove_cvref_t<X>;
  if constexpr (is_tensor_v<D>) {
    if constexpr (std::is_rvalue_reference_v<X&&>)
      return owned_leaf<typename D::value_type, typename D::shape_type, typename D::policy>(std::move(x));
    else return x.cview();
  } else if constexpr (Expression<D>) {
    if constexpr (requires { x.hold; }) return D(std::forward<X>(x));  // owned_leaf: keep the tensor alive
    else if constexpr (requires { typename D::element_type; }) return View<const typename D::value_type, typename D::shape_type, typename D::policy>(x);
    else return D(std::forward<X>(x));
  } else {
    static_assert(is_scalar_v<D>, "tessera: an operand must be a tensor, a view, an expression or an arithmetic scalar");
    return scalar_node<D>{x};
  }
}

/// Scalar operand converted to the element type of the tensor operand it meets.
template <class T, class X>
auto scalar_as(X x) {
  static_assert(!(std::is_integral_v<T> && std::is_floating_point_v<X>),
                "tessera: a floating-point scalar meets an integer tensor; convert the tensor with tessera::cast<float>(x) first");
  if constexpr (std::is_same_v<T, bool>) return scalar_node<bool>{bool(x)};
  else return scalar_node<T>{static_cast<T>(x)};
}

// ---- the n-ary elementwise node ----

template <class Op, class... Es>
struct map_eval;

template <class Op, class E0>
struct map_eval<Op, E0> {
  E0 e0;
  TS_HD TS_INLINE auto scalar(index_t j) const { return Op::apply(e0.scalar(j)); }
#if TESSERA_SIMD
  template <int N, bool C>
  TS_INLINE auto packet(index_t j) const { return Op::apply(e0.template packet<N, C>(j)); }
#endif
  TS_INLINE void prefetch(index_t j) const { e0.prefetch(j); }
  TS_HD TS_INLINE void set_row(const index_t* i, int n) { e0.set_row(i, n); }
  template <class F>
  TS_HD void visit(F&& f) { e0.visit(f); }
};

template <class Op, class E0, class E1>
struct map_eval<Op, E0, E1> {
  E0 e0;
  E1 e1;
  TS_HD TS_INLINE auto scalar(index_t j) const { return Op::apply(e0.scalar(j), e1.scalar(j)); }
#if TESSERA_SIMD
  template <int N, bool C>
  TS_INLINE auto packet(index_t j) const { return Op::apply(e0.template packet<N, C>(j), e1.template packet<N, C>(j)); }
#endif
  TS_INLINE void prefetch(index_t j) const { e0.prefetch(j); e1.prefetch(j); }
  TS_HD TS_INLINE void set_row(const index_t* i, int n) { e0.set_row(i, n); e1.set_row(i, n); }
  template <class F>
  TS_HD void visit(F&& f) { e0.visit(f); e1.visit(f); }
};

template <class Op, class E0, class E1, class E2>
struct map_eval<Op, E0, E1, E2> {
  E0 e0;
  E1 e1;
  E2 e2;
  TS_HD TS_INLINE auto scalar(index_t j) const { return Op::apply(e0.scalar(j), e1.scalar(j), e2.scalar(j)); }
#if TESSERA_SIMD
  template <int N, bool C>
  TS_INLINE auto packet(index_t j) const {
    return Op::apply(e0.template packet<N, C>(j), e1.template packet<N, C>(j), e2.template packet<N, C>(j));
  }
#endif
  TS_INLINE void prefetch(index_t j) const { e0.prefetch(j); e1.prefetch(j); e2.prefetch(j); }
  TS_HD TS_INLINE void set_row(const index_t* i, int n) { e0.set_row(i, n); e1.set_row(i, n); e2.set_row(i, n); }
  template <class F>
  TS_HD void visit(F&& f) { e0.visit(f); e1.visit(f); e2.visit(f); }
};

template <class Op, class... Cs>
struct broadcast_shape_of;
template <class Op, class C>
struct broadcast_shape_of<Op, C> { using type = typename C::shape_type; };
template <class Op, class C, class... Rest>
struct broadcast_shape_of<Op, C, Rest...> {
  using type = broadcast_t<Op, typename C::shape_type, typename broadcast_shape_of<Op, Rest...>::type>;
};

template <class Op, class... Cs>
struct policy_of;
template <class Op, class C>
struct policy_of<Op, C> { using type = typename C::policy; };
template <class Op, class C, class... Rest>
struct policy_of<Op, C, Rest...> { using type = common_policy_t<typename C::policy, typename policy_of<Op, Rest...>::type>; };

template <class Op, class... Cs>
struct map_node {
  using value_type = typename Op::template result<typename Cs::value_type...>;
  using shape_type = typename broadcast_shape_of<Op, Cs...>::type;
  using policy = typename policy_of<Op, Cs...>::type;
  static constexpr int rank = shape_type::rank;
  static constexpr bool is_tessera_expression = true;
  static constexpr int contractions = (0 + ... + Cs::contractions);
  static constexpr bool packable = simd::packable_v<value_type> && (Cs::packable && ...);
  static constexpr std::size_t max_lane_size =
      std::max({sizeof(std::conditional_t<std::is_same_v<value_type, bool>, int, value_type>), Cs::max_lane_size...});

  std::tuple<Cs...> children;
  dims_t<rank> dims_;

  explicit map_node(Cs... cs) : children(std::move(cs)...) {
    dims_ = std::apply([](const auto&... c) { return fold_dims(dims_t<0>{}, c...); }, children);
  }
  const dims_t<rank>& expr_dims() const { return dims_; }
  template <int R>
  auto evaluator(const dims_t<R>& out) const {
    return std::apply([&](const auto&... c) { return map_eval<Op, decltype(c.template evaluator<R>(out))...>{c.template evaluator<R>(out)...}; },
                      children);
  }
  template <class F>
  void for_each_leaf(F&& f) const {
    std::apply([&](const auto&... c) { (c.for_each_leaf(f), ...); }, children);
  }
  template <class F>
  void for_each_contraction(F&& f) const {
    std::apply([&](const auto&... c) {
      ([&] { if constexpr (std::remove_cvref_t<decltype(c)>::contractions > 0) c.for_each_contraction(f); }(), ...);
    }, children);
  }

 private:
  template <std::size_t RA, class C, class... Rest>
  static auto fold_dims(const dims_t<RA>& acc, const C& c, const Rest&... rest) {
    auto d = broadcast_dims(acc, c.expr_dims(), Op::name);
    if constexpr (sizeof...(Rest) == 0) return d;
    else return fold_dims(d, rest...);
  }
};

/// A node that has its own kernel (reduction, product, pooling) read as a leaf of a larger expression: evaluated
/// afresh into `cache` at each assignment (its operands may have changed since the last one), then read like a
/// tensor. (So one expression object holding such a node must not be assigned from two threads at once.)
template <int R, class Node, class Cache>
auto materialize_as_leaf(const Node& node, Cache& cache, const dims_t<R>& out) {
  using N = std::remove_cvref_t<Node>;
  cache = std::make_shared<const Tensor<typename N::value_type, typename N::shape_type, typename N::policy>>(node);
  const auto& d = node.expr_dims();
  return make_leaf_eval<typename N::value_type, R>(cache->data(), d, contiguous_strides(d), out);
}


/// What every contraction node (matmul, conv2d, pooling) shares: the flags the planner dispatches on, the cache
/// it is evaluated into when read as a leaf, and the destination it reads while an epilogue runs (fuse_target).
/// The node only describes; policy/planner.hpp runs it.
template <class Derived, class T, class S, class P>
struct contraction_node_base {
  using value_type = T;
  using shape_type = S;
  using policy = P;
  static constexpr int rank = S::rank;
  static constexpr bool is_tessera_expression = true;
  static constexpr bool is_contraction = true;  // evaluated by its own kernel, reads whole rows or windows
  static constexpr int contractions = 1;
  static constexpr bool packable = simd::packable_v<T>;
  static constexpr std::size_t max_lane_size = sizeof(T);

  mutable std::shared_ptr<const Tensor<T, S, P>> cache;
  // Set by assign() while it builds an epilogue: the node is then read from the destination itself.
  mutable const T* fuse_target = nullptr;
  mutable dims_t<S::rank> fuse_strides{};

  template <int R>
  auto evaluator(const dims_t<R>& out) const {
    if (fuse_target) return make_leaf_eval<T, R>(fuse_target, self().expr_dims(), fuse_strides, out);
    return materialize_as_leaf<R>(self(), cache, out);
  }
  template <class F>
  void for_each_contraction(F&& f) const { f(self()); }
  template <class F>
  void for_each_leaf(F&&) const {}

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

template <class Op, class... Cs>
auto make_map(Cs... cs) {
  return map_node<Op, Cs...>(std::move(cs)...);
}

/// Build an elementwise node from operands (tensors, views, nodes, scalars); scalars take the element type of the tensor operand.
template <class Op, class A>
auto make_unary(A&& a) {
  auto ea = as_expr(std::forward<A>(a));
  (void)error::element_type_not_supported<Op, typename decltype(ea)::value_type>::ok;
  return make_map<Op>(std::move(ea));
}

template <class Op, class A, class B>
auto make_binary(A&& a, B&& b) {
  if constexpr (is_scalar_v<A>) {
    auto eb = as_expr(std::forward<B>(b));
    return make_binary<Op>(scalar_as<typename decltype(eb)::value_type>(a), std::move(eb));
  } else if constexpr (is_scalar_v<B>) {
    auto ea = as_expr(std::forward<A>(a));
    return make_binary<Op>(std::move(ea), scalar_as<typename decltype(ea)::value_type>(b));
  } else {
    auto ea = as_expr(std::forward<A>(a));
    auto eb = as_expr(std::forward<B>(b));
    using TA = typename decltype(ea)::value_type;
    using TB = typename decltype(eb)::value_type;
    (void)error::element_types_differ<Op, TA, TB>::ok;
    (void)error::element_type_not_supported<Op, TA>::ok;
    if constexpr (requires { Op::orders_bool_as_int; } && std::is_same_v<TA, bool>) {
      // bool packets are all-ones masks, which would order true below false: compare 0/1 instead
      return make_map<Op>(make_map<typename Op::template bool_to_int<TA>>(std::move(ea)),
                          make_map<typename Op::template bool_to_int<TA>>(std::move(eb)));
    } else {
      return make_map<Op>(std::move(ea), std::move(eb));
    }
  }
}

}  // namespace detail

}  // namespace tessera
