// max_pool2d and avg_pool2d over NCHW tensors as expression nodes. Kernel, stride and padding are template
// arguments, so static heights and widths give a static output shape. At the top of an assignment the planner
// has the pool written into the destination directly (policy/planner.hpp), and an elementwise tree around it
// runs on each plane as it is finished; inside any other expression it is evaluated once into a temporary.
#pragma once
#include <limits>
#include <memory>
#include <string>
#include <type_traits>

#include "tessera/expr/matmul.hpp"
#include "tessera/expr/reduce.hpp"

namespace tessera {

namespace op {
struct max_pool2d {
  static constexpr const char* name = "max_pool2d";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
};
/// Average over the window, padding counted as zeros (PyTorch's default count_include_pad=True).
struct avg_pool2d {
  static constexpr const char* name = "avg_pool2d";
  template <class T>
  static constexpr bool accepts = std::is_floating_point_v<T>;
};
}  // namespace op

namespace detail {

constexpr extent_t pooled_extent(extent_t e, int k, int s, int p) { return e == dyn ? dyn : (e + 2 * p - k) / s + 1; }


template <class C, int K, int S, int P>
using pool_shape_t = Shape<C::shape_type::extents[0], C::shape_type::extents[1], pooled_extent(C::shape_type::extents[2], K, S, P),
                           pooled_extent(C::shape_type::extents[3], K, S, P)>;

template <class Op, class C, int K, int S, int P>
struct pool_node : contraction_node_base<pool_node<Op, C, K, S, P>, typename C::value_type, pool_shape_t<C, K, S, P>, typename C::policy> {
  using value_type = typename C::value_type;
  using shape_type = pool_shape_t<C, K, S, P>;
  using policy = typename C::policy;
  static constexpr int rank = 4;
  static constexpr bool nchw_epilogue_ok = true;  // an elementwise tree around it runs on each finished plane
  static constexpr bool is_max = std::is_same_v<Op, op::max_pool2d>;
  static constexpr int kernel = K, stride = S, padding = P;

  C src;
  dims_t<4> dims_;

  explicit pool_node(C c) : src(std::move(c)) {
    const auto d = src.dims();
    if (d[2] + 2 * P < K || d[3] + 2 * P < K)
      throw shape_error(std::string("tessera: ") + Op::name + ": the input " + format_dims(d) + " is smaller than the " +
                        std::to_string(K) + "x" + std::to_string(K) + " window (padding " + std::to_string(P) + ")");
    dims_ = {d[0], d[1], (d[2] + 2 * P - K) / S + 1, (d[3] + 2 * P - K) / S + 1};
  }
  const dims_t<4>& expr_dims() const { return dims_; }
  template <class F>
  void for_each_operand(F&& f) const { f(src); }

};

template <class Op, int K, int S, int P, class X>
auto make_pool(X&& x) {
  static_assert(K >= 1 && S >= 1 && P >= 0 && 2 * P <= K, "tessera: pooling needs kernel >= 1, stride >= 1 and 0 <= padding <= kernel/2");
  auto e = contraction_operand(std::forward<X>(x));
  using E = decltype(e);
  static_assert(E::rank == 4, "tessera: pooling takes an NCHW tensor (rank 4)");
  (void)error::element_type_not_supported<Op, typename E::value_type>::ok;
  return pool_node<Op, E, K, S, P>(std::move(e));
}
}  // namespace detail

/// Max over K x K windows of an NCHW tensor, stride S (default K), padding P (padded cells never win).
template <int K, int S = K, int P = 0, detail::TensorLike X>
auto max_pool2d(X&& x) {
  return detail::make_pool<op::max_pool2d, K, S, P>(std::forward<X>(x));
}
/// Mean over K x K windows of an NCHW tensor, stride S (default K), padding P counted as zeros.
template <int K, int S = K, int P = 0, detail::TensorLike X>
auto avg_pool2d(X&& x) {
  return detail::make_pool<op::avg_pool2d, K, S, P>(std::forward<X>(x));
}

}  // namespace tessera
