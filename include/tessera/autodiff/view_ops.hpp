// Differentiable views of Vars: slice, select, permute, transpose of any two axes, broadcast_to / expand, squeeze,
// unsqueeze, flatten (reshape, flatten_batch and the matrix transpose are in ops.hpp), softmax / log_softmax along
// any axis, and leaves made from strided views (ad::parameter(view), ad::constant(view)).
// A Var owns contiguous storage: a Var made from a view (transposed, sliced, stepped) holds a contiguous copy of it
// (Var<T, R, P>(view, requires_grad) converts it through Tensor's constructor), and each view forward here copies
// the view of its input into a new tensor (one strided pass). Each backward is one strided pass too: the same view
// taken of the input's gradient buffer, with the output's gradient added through it (broadcast_to sums it back
// instead). All of it is tensor expressions and backend<P> calls, so it runs on every policy.
#pragma once
#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "tessera/autodiff/ops.hpp"

namespace tessera::ad {

namespace detail {
/// The Var holding view `f` of a's value. Backward adds g through f of a's gradient buffer: `Covers` views (every
/// element of a seen exactly once: permutations, squeeze, unsqueeze) write a fresh buffer, the others (slices)
/// add into a zeroed one.
template <bool Covers, class T, int R, class P, class F>
auto view_var(const Var<T, R, P>& a, F f) {
  auto fwd = f(a.value());
  using V = Var<T, decltype(fwd)::rank, P>;
  return V::make(typename V::tensor(fwd), [a, f](const auto& g) {
    if (!a.requires_grad()) return;
    if constexpr (Covers) {
      bool acc;
      auto gv = f(fresh_or_grad(a, acc));
      if (acc) gv = gv + g.cview();
      else gv = g.cview();
    } else {
      auto gv = f(a.node().grad_buffer());
      gv = gv + g.cview();
    }
  }, a);
}

template <int Axis, int R>
constexpr int axis_of(const char* op) {
  (void)op;
  static_assert(Axis >= -R && Axis < R, "tessera: ad view: the axis is outside the rank of the Var");
  return Axis < 0 ? Axis + R : Axis;
}

/// The permutation moving axis Ax to the end (the others in order), and its inverse.
template <int R, int Ax>
constexpr std::array<int, R> axis_to_last() {
  std::array<int, R> p{};
  for (int i = 0, k = 0; i < R; ++i)
    if (i != Ax) p[std::size_t(k++)] = i;
  p[std::size_t(R - 1)] = Ax;
  return p;
}
template <int R, int Ax>
constexpr std::array<int, R> last_to_axis() {
  constexpr auto p = axis_to_last<R, Ax>();
  std::array<int, R> q{};
  for (int i = 0; i < R; ++i) q[std::size_t(p[std::size_t(i)])] = i;
  return q;
}
}  // namespace detail

/// Leaves from views (transposed, sliced, stepped): the elements are copied into a contiguous tensor the Var owns.
template <class T, class S, class P>
auto parameter(const View<T, S, P>& value) {
  return Var<std::remove_const_t<T>, S::rank, P>(typename Var<std::remove_const_t<T>, S::rank, P>::tensor(value), true);
}
template <class T, class S, class P>
auto constant(const View<T, S, P>& value) {
  return Var<std::remove_const_t<T>, S::rank, P>(typename Var<std::remove_const_t<T>, S::rank, P>::tensor(value), false);
}

/// Elements [start, stop) with `step` along Axis (as tessera::slice; negative Axis counts from the end).
template <int Axis, class T, int R, class P>
auto slice(const Var<T, R, P>& a, index_t start, index_t stop, index_t step = 1) {
  constexpr int ax = detail::axis_of<Axis, R>("slice");
  (void)tessera::slice<ax>(a.value(), start, stop, step);  // checks the range (shape_error) before recording
  return detail::view_var<false>(a, [=](auto& x) { return tessera::slice<ax>(x, start, stop, step); });
}

/// The sub-tensor at index i of Axis (one rank fewer).
template <int Axis, class T, int R, class P>
auto select(const Var<T, R, P>& a, index_t i) {
  constexpr int ax = detail::axis_of<Axis, R>("select");
  (void)tessera::select<ax>(a.value(), i);
  return detail::view_var<false>(a, [=](auto& x) { return tessera::select<ax>(x, i); });
}

/// Axes reordered: result axis k is a's axis Perm[k].
template <int... Perm, class T, int R, class P>
auto permute(const Var<T, R, P>& a) {
  static_assert(tessera::detail::is_permutation<R, Perm...>(), "tessera: ad::permute: the axes must be a permutation of 0 .. rank-1");
  return detail::view_var<true>(a, [](auto& x) { return tessera::permute<Perm...>(x); });
}

/// Axes A and B swapped (any rank; negative axes count from the end). ad::transpose(m) of a matrix is in ops.hpp.
template <int A, int B, class T, int R, class P>
auto transpose(const Var<T, R, P>& a) {
  constexpr int x = detail::axis_of<A, R>("transpose"), y = detail::axis_of<B, R>("transpose");
  constexpr auto perm = [] {
    std::array<int, R> p{};
    for (int i = 0; i < R; ++i) p[std::size_t(i)] = i == x ? y : i == y ? x : i;
    return p;
  }();
  return [&]<std::size_t... I>(std::index_sequence<I...>) { return permute<perm[I]...>(a); }(std::make_index_sequence<R>{});
}

/// Drop Axis, whose extent must be 1 (shape_error otherwise).
template <int Axis, class T, int R, class P>
auto squeeze(const Var<T, R, P>& a) {
  constexpr int ax = detail::axis_of<Axis, R>("squeeze");
  (void)tessera::squeeze<ax>(a.value());
  return detail::view_var<true>(a, [](auto& x) { return tessera::squeeze<ax>(x); });
}

/// Insert an axis of extent 1 before position Axis (0 .. rank).
template <int Axis, class T, int R, class P>
auto unsqueeze(const Var<T, R, P>& a) {
  static_assert(Axis >= 0 && Axis <= R, "tessera: ad::unsqueeze: the position must be in 0 .. rank");
  return detail::view_var<true>(a, [](auto& x) { return tessera::unsqueeze<Axis>(x); });
}

/// All elements in one axis (row-major order).
template <class T, int R, class P>
auto flatten(const Var<T, R, P>& a) {
  return reshape<1>(a, dims_t<1>{a.size()});
}

/// a repeated along its axes of extent 1 and new leading axes (NumPy's rules) to `dims`; the gradient is summed
/// back over them.
template <std::size_t N, class T, int R, class P>
auto broadcast_to(const Var<T, R, P>& a, const std::array<index_t, N>& dims) {
  constexpr int R2 = int(N);
  static_assert(R <= R2, "tessera: ad::broadcast_to cannot lower the rank");
  using V = Var<T, R2, P>;
  return V::make(typename V::tensor(tessera::broadcast_to<dyn_shape_t<R2>>(a.value(), dims)), [a](const auto& g) {
    if (a.requires_grad()) detail::add_reduced(a.node().grad_buffer(), g);
  }, a);
}
/// torch's expand: broadcast_to where an extent of -1 keeps a's extent (aligned right).
template <std::size_t N, class T, int R, class P>
auto expand(const Var<T, R, P>& a, std::array<index_t, N> dims) {
  constexpr int R2 = int(N);
  static_assert(R <= R2, "tessera: ad::expand cannot lower the rank");
  for (int i = 0; i < R2; ++i)
    if (dims[std::size_t(i)] == -1) {
      if (i < R2 - R)
        throw shape_error("tessera: expand: -1 at new leading axis " + std::to_string(i) + " of " +
                          tessera::detail::format_dims(dims) + " (shape " + tessera::detail::format_dims(a.dims()) + ")");
      dims[std::size_t(i)] = a.dims()[std::size_t(i - (R2 - R))];
    }
  return broadcast_to(a, dims);
}

// ---- softmax along any axis ----

/// softmax along Axis (negative: from the end). The kernel runs on rows: for an axis other than the last, the axis is
/// permuted to the end (one strided copy), and the result permuted back; gradients flow through both permutations.
template <int Axis, class T, int R, class P>
Var<T, R, P> softmax(const Var<T, R, P>& z) {
  constexpr int ax = detail::axis_of<Axis, R>("softmax");
  if constexpr (ax == R - 1) {
    return detail::softmax_rows<false>(z);
  } else {
    constexpr auto to = detail::axis_to_last<R, ax>(), back = detail::last_to_axis<R, ax>();
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return permute<back[I]...>(detail::softmax_rows<false>(permute<to[I]...>(z)));
    }(std::make_index_sequence<R>{});
  }
}
/// log_softmax along Axis (negative: from the end); as softmax<Axis>.
template <int Axis, class T, int R, class P>
Var<T, R, P> log_softmax(const Var<T, R, P>& z) {
  constexpr int ax = detail::axis_of<Axis, R>("log_softmax");
  if constexpr (ax == R - 1) {
    return detail::softmax_rows<true>(z);
  } else {
    constexpr auto to = detail::axis_to_last<R, ax>(), back = detail::last_to_axis<R, ax>();
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return permute<back[I]...>(detail::softmax_rows<true>(permute<to[I]...>(z)));
    }(std::make_index_sequence<R>{});
  }
}

}  // namespace tessera::ad
