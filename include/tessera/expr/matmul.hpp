// matmul(a, b): NumPy's matrix product as an expression node: operands, extents and batch dims, nothing more. At
// the top of an assignment the planner runs the GEMM straight into the destination, with the elementwise tree
// around it as its epilogue where it fits (policy/planner.hpp, policy/contractions.hpp); inside a larger
// expression it is evaluated once into a temporary and read as a leaf.
#pragma once
#include <memory>
#include <string>
#include <type_traits>

#include "tessera/expr/node.hpp"

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
  static constexpr extent_t ka = A::extents[A::rank - 1], kb = B::extents[B::rank >= 2 ? B::rank - 2 : 0];
  static constexpr bool ok = ka == dyn || kb == dyn || ka == kb;
  static_assert(ok, "tessera: matmul: the columns of the left operand must equal the rows of the right operand");
};
template <class A, class B>
struct matmul_ranks_not_supported {
  static constexpr bool ok = A::rank >= 2 && B::rank >= 1;
  static_assert(ok, "tessera: matmul takes a left operand of rank 2 or more (matrices, batches of them) and a right "
                    "operand of rank 1 (a vector) or more");
};
}  // namespace error

namespace detail {

/// NumPy's matmul shapes: batch dims broadcast, then [M, N] (or [M] when the right operand is a vector).
template <class SA, class SB>
struct matmul_shapes {
  static constexpr int ra = SA::rank, rb = SB::rank;
  static constexpr bool vec = rb == 1;
  static constexpr int bra = ra - 2, brb = vec ? 0 : rb - 2;
  static constexpr auto batch_a() {
    std::array<extent_t, bra> e{};
    for (int i = 0; i < bra; ++i) e[i] = SA::extents[i];
    return e;
  }
  static constexpr auto batch_b() {
    std::array<extent_t, brb> e{};
    for (int i = 0; i < brb; ++i) e[i] = SB::extents[i];
    return e;
  }
  using batch = broadcast_t<op::matmul, shape_from_array_t<batch_a()>, shape_from_array_t<batch_b()>>;
  static constexpr int nb = batch::rank;
  static constexpr int rank = nb + (vec ? 1 : 2);
  static constexpr auto result() {
    std::array<extent_t, rank> e{};
    for (int i = 0; i < nb; ++i) e[i] = batch::extents[i];
    e[nb] = SA::extents[ra - 2];
    if constexpr (!vec) e[nb + 1] = SB::extents[rb - 1];
    return e;
  }
  using type = shape_from_array_t<result()>;
};

template <class A, class B>
struct matmul_node : contraction_node_base<matmul_node<A, B>, typename A::value_type,
                                           typename matmul_shapes<typename A::shape_type, typename B::shape_type>::type,
                                           common_policy_t<typename A::policy, typename B::policy>> {
  using MS = matmul_shapes<typename A::shape_type, typename B::shape_type>;
  using value_type = typename A::value_type;
  using shape_type = typename MS::type;
  using policy = common_policy_t<typename A::policy, typename B::policy>;
  static constexpr int rank = MS::rank;
  static constexpr int nb = MS::nb;  // batch dims of the result
  static constexpr bool epilogue_ok = A::rank == 2 && B::rank == 2;  // the epilogue works in (row, column) of one GEMM

  A a;  // Views (leaves) or materialised operands
  B b;
  dims_t<rank> dims_;
  dims_t<nb> batch_;
  index_t m_, n_, k_;

  matmul_node(A a_, B b_) : a(std::move(a_)), b(std::move(b_)) {
    const auto& da = a.dims();
    const auto& db = b.dims();
    m_ = da[A::rank - 2];
    k_ = da[A::rank - 1];
    const index_t kb = db[MS::vec ? 0 : B::rank - 2];
    n_ = MS::vec ? 1 : db[B::rank - 1];
    if (k_ != kb)
      throw shape_error("tessera: matmul: shapes " + format_dims(da) + " and " + format_dims(db) +
                        " do not fit (the columns of the left must equal the rows of the right)");
    dims_t<MS::bra> ba{};
    dims_t<MS::brb> bb{};
    for (int i = 0; i < MS::bra; ++i) ba[i] = da[i];
    for (int i = 0; i < MS::brb; ++i) bb[i] = db[i];
    if constexpr (nb > 0) {
      try {
        batch_ = broadcast_dims(ba, bb, "matmul");
      } catch (const shape_error&) {
        throw shape_error("tessera: matmul: the batch dimensions of " + format_dims(da) + " and " + format_dims(db) +
                          " cannot be broadcast together");
      }
    }
    for (int i = 0; i < nb; ++i) dims_[i] = batch_[i];
    dims_[nb] = m_;
    if constexpr (!MS::vec) dims_[nb + 1] = n_;
  }
  const dims_t<rank>& expr_dims() const { return dims_; }

  template <class F>
  void for_each_operand(F&& f) const {
    f(a);
    f(b);
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

/// NumPy's matmul: matrices, batches of matrices (batch dims broadcast) and matrix-vector products, of tensors,
/// views (transposed and strided views are read in place) or expressions (evaluated first).
template <detail::TensorLike A, detail::TensorLike B>
auto matmul(A&& a, B&& b) {
  auto ea = detail::contraction_operand(std::forward<A>(a));
  auto eb = detail::contraction_operand(std::forward<B>(b));
  using EA = decltype(ea);
  using EB = decltype(eb);
  (void)error::matmul_ranks_not_supported<typename EA::shape_type, typename EB::shape_type>::ok;
  if constexpr (EA::rank >= 2 && EB::rank >= 1) {
    (void)error::matmul_inner_extents_differ<typename EA::shape_type, typename EB::shape_type>::ok;
    (void)error::element_types_differ<op::matmul, typename EA::value_type, typename EB::value_type>::ok;
    return detail::matmul_node<EA, EB>(std::move(ea), std::move(eb));
  }
}

}  // namespace tessera
