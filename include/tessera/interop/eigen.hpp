// Zero-copy bridges to Eigen (include this header yourself; tessera.hpp does not pull Eigen in).
//   from_eigen(matrix)        View<T, Shape<dyn, dyn>> over an Eigen matrix (either storage order, any outer stride)
//   from_eigen(eigen_tensor)  View<T, dyn_shape_t<N>> over an Eigen::Tensor (either layout)
//   to_eigen(view2d)          Eigen::Map of a rank-2 tensor or view, strides and all
//   to_eigen_tensor(x)        Eigen::TensorMap (row-major) of a contiguous tensor or view
#pragma once
#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include "tessera/tessera.hpp"

namespace tessera {

template <class Derived>
  requires std::is_base_of_v<Eigen::PlainObjectBase<std::remove_const_t<Derived>>, std::remove_const_t<Derived>>
auto from_eigen(Derived& m) {
  using Scalar = typename std::remove_const_t<Derived>::Scalar;
  using T = std::conditional_t<std::is_const_v<Derived>, const Scalar, Scalar>;
  const dims_t<2> d{index_t(m.rows()), index_t(m.cols())};
  const dims_t<2> s = std::remove_const_t<Derived>::IsRowMajor ? dims_t<2>{index_t(m.outerStride()), 1}
                                                               : dims_t<2>{1, index_t(m.outerStride())};
  return View<T, Shape<dyn, dyn>, cpu>(m.data(), d, s);
}

template <class Scalar, int N, int Options, class IndexType>
auto from_eigen(Eigen::Tensor<Scalar, N, Options, IndexType>& t) {
  dims_t<N> d{}, s{};
  for (int i = 0; i < N; ++i) d[i] = index_t(t.dimension(i));
  if constexpr ((Options & Eigen::RowMajor) != 0) s = contiguous_strides(d);
  else {
    index_t acc = 1;
    for (int i = 0; i < N; ++i) { s[i] = acc; acc *= d[i]; }
  }
  return View<Scalar, dyn_shape_t<N>, cpu>(t.data(), d, s);
}

/// An Eigen::Map over a rank-2 tensor or view (no copy; any strides).
template <class X>
auto to_eigen(X&& x) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  static_assert(V::rank == 2, "tessera: to_eigen maps rank-2 tensors; use to_eigen_tensor for other ranks");
  static_assert(!V::policy::on_device, "tessera: to_eigen needs host memory; copy with to<cpu>(x) first");
  using E = typename V::element_type;
  using M = Eigen::Matrix<std::remove_const_t<E>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MapT = Eigen::Map<std::conditional_t<std::is_const_v<E>, const M, M>, Eigen::Unaligned, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  return MapT(v.data(), v.dims()[0], v.dims()[1], Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(v.strides()[0], v.strides()[1]));
}

/// An Eigen::TensorMap (row-major) over a contiguous tensor or view; throws shape_error for strided views.
template <class X>
auto to_eigen_tensor(X&& x) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  static_assert(!V::policy::on_device, "tessera: to_eigen_tensor needs host memory; copy with to<cpu>(x) first");
  if (!v.is_contiguous())
    throw shape_error("tessera: to_eigen_tensor: the view of shape " + detail::format_dims(v.dims()) +
                      " is not contiguous; use to_eigen for rank 2 or copy with eval(x)");
  using E = typename V::element_type;
  using TT = Eigen::Tensor<std::remove_const_t<E>, V::rank, Eigen::RowMajor, Eigen::DenseIndex>;
  std::array<Eigen::DenseIndex, V::rank> d{};
  for (int i = 0; i < V::rank; ++i) d[i] = Eigen::DenseIndex(v.dims()[i]);
  return Eigen::TensorMap<std::conditional_t<std::is_const_v<E>, const TT, TT>>(v.data(), d);
}

}  // namespace tessera
