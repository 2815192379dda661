// max_pool2d and avg_pool2d over NCHW tensors as expression nodes. The window (pool2d_options of kernels/backend.hpp:
// kernel, stride, padding and max dilation per axis, ceil_mode, count_include_pad) is a template argument, so static
// heights and widths give a static output shape. At the top of an assignment the planner
// has the pool written into the destination directly (policy/planner.hpp), and an elementwise tree around it
// runs on each plane as it is finished; inside any other expression it is evaluated once into a temporary.
#pragma once
#include <limits>
#include <memory>
#include <string>
#include <type_traits>

#include "tessera/expr/matmul.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/kernels/backend.hpp"

namespace tessera {

namespace op {
struct max_pool2d {
  static constexpr const char* name = "max_pool2d";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
};
/// Average over the window, padding counted as zeros unless count_include_pad is false (PyTorch's rule).
struct avg_pool2d {
  static constexpr const char* name = "avg_pool2d";
  template <class T>
  static constexpr bool accepts = std::is_floating_point_v<T>;
};
}  // namespace op

namespace detail {

/// Output extent of a pooling along one axis (dyn stays dyn); see pool_out_extent (kernels/backend.hpp).
constexpr extent_t pooled_extent(extent_t e, int k, int s, int p, int d = 1, bool ceil_mode = false) {
  return e == dyn ? dyn : pool_out_extent(e, k, s, p, d, ceil_mode);
}

/// The stride max_pool2d<K> takes when none is given: the kernel (K an int), or 0 (K a pool2d_options, which
/// carries its own).
constexpr int pool_default_stride(int k) { return k; }
constexpr int pool_default_stride(const pool2d_options&) { return 0; }

constexpr pool2d_options pool_options_of(const pool2d_options& o, int, int) { return o; }
constexpr pool2d_options pool_options_of(int k, int s, int p) { return {.kernel = k, .stride = s, .padding = p}; }

/// The options of a pooling spelled max_pool2d<K, S, P> (ints) or max_pool2d<pool2d_options{...}>. (Overloads,
/// not if constexpr: nvcc's host pass compiles the discarded branch.)
template <auto K, int S, int P>
constexpr pool2d_options pool_options() {
  static_assert(!std::is_same_v<std::remove_cv_t<decltype(K)>, pool2d_options> || (S == 0 && P == 0),
                "tessera: pooling: with pool2d_options give the stride and padding inside the options");
  return pool_options_of(K, S, P);
}

template <class C, pool2d_options O>
using pool_shape_t =
    Shape<C::shape_type::extents[0], C::shape_type::extents[1],
          pooled_extent(C::shape_type::extents[2], O.kernel.h, O.step().h, O.padding.h, O.dilation.h, O.ceil_mode),
          pooled_extent(C::shape_type::extents[3], O.kernel.w, O.step().w, O.padding.w, O.dilation.w, O.ceil_mode)>;

template <class Op, class C, pool2d_options O>
struct pool_node : contraction_node_base<pool_node<Op, C, O>, typename C::value_type, pool_shape_t<C, O>, typename C::policy> {
  using value_type = typename C::value_type;
  using shape_type = pool_shape_t<C, O>;
  using policy = typename C::policy;
  static constexpr int rank = 4;
  static constexpr bool nchw_epilogue_ok = true;  // an elementwise tree around it runs on each finished plane
  static constexpr bool is_max = std::is_same_v<Op, op::max_pool2d>;
  static constexpr pool2d_options options = O;

  C src;
  dims_t<4> dims_;

  explicit pool_node(C c) : src(std::move(c)) {
    const auto d = src.dims();
    const index_t kh = O.dilation.h * (O.kernel.h - 1) + 1, kw = O.dilation.w * (O.kernel.w - 1) + 1;
    if (d[2] + 2 * O.padding.h < kh || d[3] + 2 * O.padding.w < kw)
      throw shape_error(std::string("tessera: ") + Op::name + ": the input " + format_dims(d) + " is smaller than the " +
                        std::to_string(kh) + "x" + std::to_string(kw) + " window (padding " + std::to_string(O.padding.h) +
                        ", " + std::to_string(O.padding.w) + ")");
    dims_ = {d[0], d[1], pool_out_extent(d[2], O.kernel.h, O.step().h, O.padding.h, O.dilation.h, O.ceil_mode),
             pool_out_extent(d[3], O.kernel.w, O.step().w, O.padding.w, O.dilation.w, O.ceil_mode)};
  }
  const dims_t<4>& expr_dims() const { return dims_; }
  template <class F>
  void for_each_operand(F&& f) const { f(src); }
};

template <class Op, pool2d_options O, class X>
auto make_pool(X&& x) {
  static_assert(O.valid(), "tessera: pooling needs kernel >= 1, stride >= 1 (or 0: the kernel), 0 <= padding <= kernel/2 "
                           "and dilation >= 1 on both axes");
  static_assert(std::is_same_v<Op, op::max_pool2d> || O.dilation == hw{1}, "tessera: avg_pool2d has no dilation (as PyTorch)");
  auto e = contraction_operand(std::forward<X>(x));
  using E = decltype(e);
  static_assert(E::rank == 4, "tessera: pooling takes an NCHW tensor (rank 4)");
  (void)error::element_type_not_supported<Op, typename E::value_type>::ok;
  return pool_node<Op, E, O>(std::move(e));
}
}  // namespace detail

/// Max over K x K windows of an NCHW tensor, stride S (default K), padding P (padded cells never win); or with
/// every option, max_pool2d<pool2d_options{.kernel = {3, 2}, .stride = 2, .padding = 1, .ceil_mode = true}>(x).
template <auto K, int S = detail::pool_default_stride(K), int P = 0, detail::TensorLike X>
auto max_pool2d(X&& x) {
  return detail::make_pool<op::max_pool2d, detail::pool_options<K, S, P>()>(std::forward<X>(x));
}
/// Mean over K x K windows of an NCHW tensor, stride S (default K), padding P counted as zeros; or
/// avg_pool2d<pool2d_options{...}>(x) (count_include_pad = false: the divisor counts only the input's cells).
template <auto K, int S = detail::pool_default_stride(K), int P = 0, detail::TensorLike X>
auto avg_pool2d(X&& x) {
  return detail::make_pool<op::avg_pool2d, detail::pool_options<K, S, P>()>(std::forward<X>(x));
}

}  // namespace tessera
