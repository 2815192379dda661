// Views: slice, select, transpose, permute, reshape, flatten, broadcast_to, squeeze, unsqueeze, and
// static <-> dynamic shape conversion. Each returns a View over the same memory (no copy); strides do the work.
#pragma once
#include <algorithm>
#include <string>
#include <type_traits>

#include "tessera/expr/node.hpp"

namespace tessera {

namespace detail {
template <class X>
concept Viewable = is_tensor_v<std::remove_cvref_t<X>> || requires { typename std::remove_cvref_t<X>::element_type; };

/// The View of a tensor or view (mutable where the tensor is).
template <class X>
auto as_view(X&& x) {
  using D = std::remove_cvref_t<X>;
  static_assert(Viewable<X>, "tessera: views are taken of tensors and views; evaluate an expression first with tessera::eval(expr)");
  if constexpr (is_tensor_v<D>) {
    static_assert(!std::is_rvalue_reference_v<X&&>, "tessera: a view of a temporary tensor would dangle; name the tensor first");
    return x.view();
  } else {
    return D(x);
  }
}

template <class V>
using view_elem_t = typename V::element_type;

template <class S, int Axis>
constexpr int norm_axis() {
  (void)error::axis_out_of_range<op::assign, Axis, S>::ok;
  return Axis < 0 ? Axis + S::rank : Axis;
}

template <class S, int Axis, extent_t E>
constexpr auto replace_extent() {
  std::array<extent_t, S::rank> a{};
  for (int i = 0; i < S::rank; ++i) a[i] = i == Axis ? E : S::extents[i];
  return a;
}
template <class S, int Axis>
constexpr auto drop_extent() {
  std::array<extent_t, S::rank - 1> a{};
  for (int i = 0, k = 0; i < S::rank; ++i)
    if (i != Axis) a[k++] = S::extents[i];
  return a;
}
template <class S, int Axis>
constexpr auto insert_unit() {
  std::array<extent_t, S::rank + 1> a{};
  for (int i = 0, k = 0; i <= S::rank; ++i) a[i] = i == Axis ? 1 : S::extents[k++];
  return a;
}
template <class S, int... P>
constexpr auto permute_extents() {
  constexpr int p[] = {P...};
  std::array<extent_t, S::rank> a{};
  for (int i = 0; i < S::rank; ++i) a[i] = S::extents[p[i]];
  return a;
}
template <int R, int... P>
constexpr bool is_permutation() {
  if (int(sizeof...(P)) != R) return false;
  constexpr int p[] = {P...};
  bool seen[R > 0 ? R : 1] = {};
  for (int v : p) {
    if (v < 0 || v >= R || seen[v]) return false;
    seen[v] = true;
  }
  return true;
}
}  // namespace detail

namespace op {
struct slice { static constexpr const char* name = "slice"; };
struct reshape { static constexpr const char* name = "reshape"; };
struct squeeze { static constexpr const char* name = "squeeze"; };
struct broadcast_to { static constexpr const char* name = "broadcast_to"; };
}  // namespace op

/// Elements [start, stop) with step along Axis (0 <= start <= stop <= extent, step >= 1).
template <int Axis, detail::Viewable X>
auto slice(X&& x, index_t start, index_t stop, index_t step = 1) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  constexpr int ax = detail::norm_axis<S, Axis>();
  if (step < 1 || start < 0 || stop < start || stop > v.dims()[ax])
    throw shape_error("tessera: slice: [" + std::to_string(start) + ", " + std::to_string(stop) + ") step " +
                      std::to_string(step) + " does not fit axis " + std::to_string(ax) + " of shape " +
                      detail::format_dims(v.dims()));
  auto d = v.dims();
  auto s = v.strides();
  d[ax] = (stop - start + step - 1) / step;
  auto* p = v.data() + start * s[ax];
  s[ax] *= step;
  using S2 = shape_from_array_t<detail::replace_extent<S, ax, dyn>()>;
  return View<detail::view_elem_t<V>, S2, typename V::policy>(p, d, s);
}

/// The sub-tensor at index i of Axis (one rank fewer).
template <int Axis, detail::Viewable X>
auto select(X&& x, index_t i) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  constexpr int ax = detail::norm_axis<S, Axis>();
  if (i < 0 || i >= v.dims()[ax])
    throw shape_error("tessera: select: index " + std::to_string(i) + " is outside axis " + std::to_string(ax) +
                      " of shape " + detail::format_dims(v.dims()));
  dims_t<S::rank - 1> d{}, s{};
  for (int k = 0, o = 0; k < S::rank; ++k)
    if (k != ax) { d[o] = v.dims()[k]; s[o] = v.strides()[k]; ++o; }
  using S2 = shape_from_array_t<detail::drop_extent<S, ax>()>;
  return View<detail::view_elem_t<V>, S2, typename V::policy>(v.data() + i * v.strides()[ax], d, s);
}

/// Axes reordered: result axis k is source axis P[k].
template <int... P, detail::Viewable X>
auto permute(X&& x) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  static_assert(detail::is_permutation<S::rank, P...>(), "tessera: permute: the axes must be a permutation of 0 .. rank-1");
  constexpr int p[] = {P...};
  dims_t<S::rank> d{}, s{};
  for (int k = 0; k < S::rank; ++k) { d[k] = v.dims()[p[k]]; s[k] = v.strides()[p[k]]; }
  using S2 = shape_from_array_t<detail::permute_extents<S, P...>()>;
  return View<detail::view_elem_t<V>, S2, typename V::policy>(v.data(), d, s);
}

/// The last two axes swapped (a matrix transpose for rank 2).
template <detail::Viewable X>
auto transpose(X&& x) {
  using S = typename decltype(detail::as_view(x))::shape_type;
  static_assert(S::rank >= 2, "tessera: transpose needs rank 2 or more");
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return permute<int(I)..., S::rank - 1, S::rank - 2>(std::forward<X>(x));
  }(std::make_index_sequence<S::rank - 2>{});
}

/// The same elements under another shape (row-major order). Needs a contiguous source.
template <ShapeType S2, detail::Viewable X>
auto reshape(X&& x, const dims_t<S2::rank>& dims) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  if constexpr (S::is_static && S2::is_static) {
    constexpr auto prod = [](const auto& a) { index_t n = 1; for (auto e : a) n *= e; return n; };
    static_assert(prod(S::extents) == prod(S2::extents), "tessera: reshape: the static shapes hold different numbers of elements");
  }
  if (checked_product(dims, "reshape") != v.size())
    throw shape_error("tessera: reshape: shape " + detail::format_dims(v.dims()) + " cannot become " + detail::format_dims(dims) +
                      " (different number of elements)");
  if (!v.is_contiguous())
    throw shape_error("tessera: reshape: the view of shape " + detail::format_dims(v.dims()) +
                      " is not contiguous; copy it first with tessera::eval(x)");
  return View<detail::view_elem_t<V>, S2, typename V::policy>(v.data(), dims, contiguous_strides(dims));
}
/// reshape to S2, whose one dynamic extent (if any) is inferred from the size.
template <ShapeType S2, detail::Viewable X>
auto reshape(X&& x) {
  static_assert(S2::num_dyn <= 1, "tessera: reshape<S>(x) infers at most one dynamic extent; pass the extents");
  auto v = detail::as_view(std::forward<X>(x));
  dims_t<S2::rank> d{};
  index_t known = 1;
  for (int i = 0; i < S2::rank; ++i)
    if (S2::extents[i] != dyn) { d[i] = S2::extents[i]; known *= d[i]; }
  for (int i = 0; i < S2::rank; ++i)
    if (S2::extents[i] == dyn) d[i] = known ? v.size() / known : 0;
  return reshape<S2>(v, d);
}

/// All elements in one dimension.
template <detail::Viewable X>
auto flatten(X&& x) {
  return reshape<Shape<dyn>>(std::forward<X>(x));
}

/// Repeat along axes of extent 1 (and new leading axes) without copying: stride 0. Read-only.
template <ShapeType S2, detail::Viewable X>
auto broadcast_to(X&& x, const dims_t<S2::rank>& dims) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  static_assert(S::rank <= S2::rank, "tessera: broadcast_to cannot lower the rank");
  using B = broadcast_t<op::broadcast_to, S, S2>;
  (void)sizeof(B);
  if (broadcast_dims(v.dims(), dims, "broadcast_to") != dims)
    throw shape_error("tessera: broadcast_to: shape " + detail::format_dims(v.dims()) + " cannot be broadcast to " + detail::format_dims(dims));
  auto s = detail::aligned_strides<S2::rank>(v.dims(), v.strides(), dims);
  return View<const typename V::value_type, S2, typename V::policy>(v.data(), dims, s);
}

/// Drop Axis, whose extent must be 1.
template <int Axis, detail::Viewable X>
auto squeeze(X&& x) {
  auto v = detail::as_view(std::forward<X>(x));
  using S = typename decltype(v)::shape_type;
  constexpr int ax = detail::norm_axis<S, Axis>();
  static_assert(S::extents[ax] == 1 || S::extents[ax] == dyn, "tessera: squeeze: the axis has a static extent other than 1");
  if (v.dims()[ax] != 1)
    throw shape_error("tessera: squeeze: axis " + std::to_string(ax) + " of shape " + detail::format_dims(v.dims()) + " is not 1");
  return select<ax>(v, 0);
}

/// Insert an axis of extent 1 before position Axis (0 .. rank).
template <int Axis, detail::Viewable X>
auto unsqueeze(X&& x) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  static_assert(Axis >= 0 && Axis <= S::rank, "tessera: unsqueeze: the position must be in 0 .. rank");
  dims_t<S::rank + 1> d{}, s{};
  for (int i = 0, k = 0; i <= S::rank; ++i) {
    if (i == Axis) { d[i] = 1; s[i] = 0; }
    else { d[i] = v.dims()[k]; s[i] = v.strides()[k]; ++k; }
  }
  using S2 = shape_from_array_t<detail::insert_unit<S, Axis>()>;
  return View<detail::view_elem_t<V>, S2, typename V::policy>(v.data(), d, s);
}

/// The same view with static extents S2 (each checked at run time).
template <ShapeType S2, detail::Viewable X>
auto as_static(X&& x) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  static_assert(S2::rank == V::rank, "tessera: as_static: the rank must stay the same");
  static_assert(shapes_compatible_v<typename V::shape_type, S2>, "tessera: as_static: a static extent differs");
  return View<detail::view_elem_t<V>, S2, typename V::policy>(v.data(), v.dims(), v.strides());
}
/// The same view with every extent dynamic.
template <detail::Viewable X>
auto as_dynamic(X&& x) {
  auto v = detail::as_view(std::forward<X>(x));
  using V = decltype(v);
  return View<detail::view_elem_t<V>, dyn_shape_t<V::rank>, typename V::policy>(v.data(), v.dims(), v.strides());
}

}  // namespace tessera
