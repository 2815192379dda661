// matmul(a, b): the 2-D matrix product as an expression node. At the top of an assignment it runs the GEMM
// straight into the destination; inside a larger expression it is evaluated once into a temporary and read
// as a leaf. (Epilogue fusion of the surrounding elementwise tree is the next step; see docs/architecture.md.)
#pragma once
#include <memory>
#include <string>
#include <type_traits>

#include "tessera/expr/node.hpp"
#include "tessera/kernels/cpu/gemm.hpp"

namespace tessera {

namespace op {
struct matmul {
  static constexpr const char* name = "matmul";
};
}  // namespace op

namespace error {
/// Instantiated when the inner extents of a matrix product differ: names both shapes.
template <class A, class B>
struct matmul_inner_extents_differ {
  static constexpr extent_t ka = A::extents[A::rank - 1], kb = B::extents[0];
  static constexpr bool ok = ka == dyn || kb == dyn || ka == kb;
  static_assert(ok, "tessera: matmul: the columns of the left operand must equal the rows of the right operand");
};
template <class A, class B>
struct matmul_needs_matrices {
  static constexpr bool ok = A::rank == 2 && B::rank == 2;
  static_assert(ok, "tessera: matmul takes two rank-2 operands (batched matmul is not implemented yet)");
};
}  // namespace error

namespace detail {

template <class A, class B>
struct matmul_node {
  using value_type = typename A::value_type;
  using shape_type = Shape<A::shape_type::extents[0], B::shape_type::extents[1]>;
  using policy = common_policy_t<typename A::policy, typename B::policy>;
  static constexpr int rank = 2;
  static constexpr bool is_tessera_expression = true;
  static constexpr int contractions = 1;
  static constexpr bool is_contraction = true;
  static constexpr bool packable = simd::packable_v<value_type>;
  static constexpr std::size_t max_lane_size = sizeof(value_type);

  A a;  // Views (leaves) or materialised operands
  B b;
  dims_t<2> dims_;
  mutable std::shared_ptr<const Tensor<value_type, shape_type, policy>> cache;
  // Set by assign() while it builds an epilogue: the product is then read from the destination itself.
  mutable const value_type* fuse_target = nullptr;
  mutable dims_t<2> fuse_strides{};

  matmul_node(A a_, B b_) : a(std::move(a_)), b(std::move(b_)) {
    if (a.dims()[1] != b.dims()[0])
      throw shape_error("tessera: matmul: shapes " + format_dims(a.dims()) + " and " + format_dims(b.dims()) +
                        " do not fit (the columns of the left must equal the rows of the right)");
    dims_ = {a.dims()[0], b.dims()[1]};
  }
  const dims_t<2>& expr_dims() const { return dims_; }

  template <int R>
  auto evaluator(const dims_t<R>& out) const {
    if (fuse_target) return make_leaf_eval<value_type, R>(fuse_target, dims_, fuse_strides, out);
    return materialize_as_leaf<R>(*this, cache, out);
  }
  template <class F>
  void for_each_contraction(F&& f) const { f(*this); }
  template <class F>
  void for_each_leaf(F&&) const {}
  template <class F>
  void for_each_operand(F&& f) const {
    f(a);
    f(b);
  }

  /// dst = a * b (dst must not overlap a or b; assign() sees to that). `epi(i0, j0, rows, cols)` runs on each
  /// finished tile of dst while it is still in cache.
  template <class DV, class Epi = no_epilogue>
  void run_into(const DV& dst, const Epi& epi = {}) const {
    using P = typename DV::policy;
    static_assert(!P::on_device, "tessera: matmul on the cuda policy is not implemented yet");
    static_assert(std::is_floating_point_v<value_type>, "tessera: matmul supports float and double for now");
    if (dst.strides()[1] != 1 && dst.dims()[1] > 1) {  // GEMM writes rows: go through a contiguous temporary
      Tensor<value_type, shape_type, P> t(*this);
      DV d = dst;
      d = t.cview();
      return;
    }
    cpu_gemm<value_type>(dims_[0], dims_[1], a.dims()[1], {a.data(), a.strides()[0], a.strides()[1]},
                         {b.data(), b.strides()[0], b.strides()[1]}, dst.data(), dst.strides()[0], false,
                         P::num_threads(), epi);
  }
};

/// Operands of a contraction are read through strides: views pass as they are, other expressions are evaluated.
template <class X>
auto contraction_operand(X&& x) {
  auto e = as_expr(std::forward<X>(x));
  using E = decltype(e);
  if constexpr (requires { typename E::element_type; } && !requires { e.hold; }) return e;
  else return owned_leaf<typename E::value_type, typename E::shape_type, typename E::policy>(
      Tensor<typename E::value_type, typename E::shape_type, typename E::policy>(e));
}
}  // namespace detail

/// The matrix product of two rank-2 tensors, views or expressions (transposed views are read in place).
template <detail::TensorLike A, detail::TensorLike B>
auto matmul(A&& a, B&& b) {
  auto ea = detail::contraction_operand(std::forward<A>(a));
  auto eb = detail::contraction_operand(std::forward<B>(b));
  using EA = decltype(ea);
  using EB = decltype(eb);
  (void)error::matmul_needs_matrices<typename EA::shape_type, typename EB::shape_type>::ok;
  if constexpr (EA::rank == 2 && EB::rank == 2) {
    (void)error::matmul_inner_extents_differ<typename EA::shape_type, typename EB::shape_type>::ok;
    (void)error::element_types_differ<op::matmul, typename EA::value_type, typename EB::value_type>::ok;
    return detail::matmul_node<EA, EB>(std::move(ea), std::move(eb));
  }
}

}  // namespace tessera
