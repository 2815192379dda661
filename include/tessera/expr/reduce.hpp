// Reductions over all or chosen axes: sum, mean, max, min, argmax, with keepdim.
// A reduction reads its source expression in one fused pass. Inside a larger elementwise expression
// (x - mean<1>(x, keepdim)) it is evaluated once into a temporary before the outer loop runs.
#pragma once
#include <bit>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>

#include "tessera/expr/elementwise.hpp"
#include "tessera/expr/node.hpp"

namespace tessera {

/// Tag: keep reduced axes as extent 1.
struct keepdim_t {};
inline constexpr keepdim_t keepdim{};




namespace detail {

template <class Op, class S, int... Axes>
constexpr std::uint32_t axes_mask() {
  (void)(error::axis_out_of_range<Op, Axes, S>::ok && ...);
  if constexpr (sizeof...(Axes) == 0) return S::rank >= 32 ? ~0u : (1u << S::rank) - 1u;
  else return ((1u << ((Axes + S::rank) % (S::rank > 0 ? S::rank : 1))) | ...);
}

template <class S, std::uint32_t Mask, bool Keep>
constexpr auto reduced_extents() {
  constexpr int kept = [] {
    int k = 0;
    for (int i = 0; i < S::rank; ++i) k += (Keep || !((Mask >> i) & 1u)) ? 1 : 0;
    return k;
  }();
  std::array<extent_t, kept> a{};
  int k = 0;
  for (int i = 0; i < S::rank; ++i) {
    if ((Mask >> i) & 1u) {
      if (Keep) a[k++] = 1;
    } else a[k++] = S::extents[i];
  }
  return a;
}

template <class Op, class C, std::uint32_t Mask, bool Keep>
struct reduce_node {
  using source_type = C;
  using op_type = Op;
  using value_type = typename Op::template result<typename C::value_type>;
  using shape_type = shape_from_array_t<reduced_extents<typename C::shape_type, Mask, Keep>()>;
  using policy = typename C::policy;
  static constexpr int rank = shape_type::rank;
  static constexpr int source_rank = C::rank;
  static constexpr bool is_tessera_expression = true;
  static constexpr int contractions = 0;  // evaluated on its own before the outer loop
  static constexpr bool is_reduction = true;
  static constexpr bool packable = simd::packable_v<value_type>;
  static constexpr std::size_t max_lane_size = sizeof(value_type);
  static constexpr std::uint32_t mask = Mask;
  static constexpr bool keep = Keep;

  C child;
  dims_t<rank> dims_;
  mutable std::shared_ptr<const Tensor<value_type, shape_type, policy>> cache;

  explicit reduce_node(C c) : child(std::move(c)) {
    const auto sd = child.expr_dims();
    int k = 0;
    for (int i = 0; i < source_rank; ++i) {
      if ((Mask >> i) & 1u) {
        if (Keep) dims_[k++] = 1;
      } else dims_[k++] = sd[i];
    }
    if constexpr (std::is_same_v<Op, op::argmax> || std::is_same_v<Op, op::max_reduce> || std::is_same_v<Op, op::min_reduce>) {
      for (int i = 0; i < source_rank; ++i)
        if (((Mask >> i) & 1u) && sd[i] == 0)
          throw shape_error(std::string("tessera: ") + Op::name + ": cannot reduce the empty axis " + std::to_string(i) +
                            " of shape " + format_dims(sd));
    }
  }
  const dims_t<rank>& expr_dims() const { return dims_; }
  const C& source() const { return child; }

  template <int R>
  auto evaluator(const dims_t<R>& out) const {
    return materialize_as_leaf<R>(*this, cache, out);
  }
  template <class F>
  void for_each_leaf(F&&) const {}

  /// Output strides aligned to the source's dims: 0 along reduced axes.
  template <class DV>
  dims_t<source_rank> out_strides_in_source(const DV& dst) const {
    dims_t<source_rank> s{};
    int k = 0;
    for (int i = 0; i < source_rank; ++i) {
      if ((Mask >> i) & 1u) {
        s[i] = 0;
        if (Keep) ++k;
      } else s[i] = dst.strides()[k++];
    }
    return s;
  }

};

template <class Op, bool Keep, int... Axes, class X>
auto make_reduce(X&& x) {
  auto ex = as_expr(std::forward<X>(x));
  using E = decltype(ex);
  (void)error::element_type_not_supported<Op, typename E::value_type>::ok;
  constexpr std::uint32_t m = axes_mask<Op, typename E::shape_type, Axes...>();
  return reduce_node<Op, E, m, Keep>(std::move(ex));
}
}  // namespace detail

#define TS_REDUCTION(FN, OP)                                                                         \
  template <int... Axes, detail::TensorLike X>                                                       \
  auto FN(X&& x) { return detail::make_reduce<op::OP, false, Axes...>(std::forward<X>(x)); }         \
  template <int... Axes, detail::TensorLike X>                                                       \
  auto FN(X&& x, keepdim_t) { return detail::make_reduce<op::OP, true, Axes...>(std::forward<X>(x)); }
/// sum(x): all axes; sum<1>(x): axis 1; sum<0, -1>(x, keepdim): axes 0 and last, kept as extent 1.
TS_REDUCTION(sum, sum)
TS_REDUCTION(mean, mean)
TS_REDUCTION(max, max_reduce)
TS_REDUCTION(min, min_reduce)
#undef TS_REDUCTION
/// argmax(x): index into the flattened tensor; argmax<Axis>(x): indices along one axis (int64).
template <int... Axes, detail::TensorLike X>
auto argmax(X&& x) {
  static_assert(sizeof...(Axes) <= 1, "tessera: argmax takes one axis, or none for the flattened tensor");
  return detail::make_reduce<op::argmax, false, Axes...>(std::forward<X>(x));
}
template <int... Axes, detail::TensorLike X>
auto argmax(X&& x, keepdim_t) {
  static_assert(sizeof...(Axes) == 1, "tessera: argmax with keepdim takes one axis");
  return detail::make_reduce<op::argmax, true, Axes...>(std::forward<X>(x));
}

}  // namespace tessera
