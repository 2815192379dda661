// Tensor (owning, contiguous, row-major, 64-byte aligned) and View (non-owning, strided).
//
// Assigning an expression (or a scalar, or another tensor) to a tensor or view is work: it goes to planner<P>,
// which policy/planner.hpp defines (tessera/tessera.hpp includes it). This file only declares it, so that core/
// depends on nothing above it; a program that assigns without the planner gets a compile error saying which
// header to include (never a link error).
#pragma once
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/core/eval.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/types.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/core/simd.hpp"

namespace tessera {

/// Anything that can stand in an expression tree: views, nodes, scalars wrapped as nodes.
template <class E>
concept Expression = requires {
  requires std::remove_cvref_t<E>::is_tessera_expression;
  typename std::remove_cvref_t<E>::value_type;
  typename std::remove_cvref_t<E>::shape_type;
};

template <class T, ShapeType S, Policy P>
class View;
template <Element T, ShapeType S, Policy P>
class Tensor;

namespace error {
/// Instantiated when an expression's static shape cannot be stored in a destination's static shape.
template <class Op, class ExprShape, class DestShape>
struct static_shapes_differ {
  static constexpr bool ok = shapes_compatible_v<ExprShape, DestShape>;
  static_assert(ok, "tessera: the expression's static shape does not fit the destination's (rank or a static extent differs)");
};
}  // namespace error

namespace op {
struct assign { static constexpr const char* name = "assign"; };
}  // namespace op

/// Runs assignments of policy P: aliasing checks, fusion, the backend's kernels (policy/planner.hpp).
template <class P>
struct planner;

namespace detail {
/// dst = e through the planner (declared above, defined by policy/planner.hpp).
template <class DV, class E>
void run_assignment(const DV& dst, const E& e) {
  using P = typename DV::policy;
  static_assert(requires { planner<P>::available; },
                "tessera: assigning to a tensor or view runs the planner: include tessera/tessera.hpp (or "
                "tessera/policy/planner.hpp)");
  planner<P>::assign(dst, e);
}

/// A constant broadcast over the whole expression (the leaf a scalar operand becomes).
template <class T>
struct scalar_node {
  using value_type = T;
  using shape_type = Shape<>;
  using policy = void;
  static constexpr int rank = 0;
  static constexpr bool is_tessera_expression = true;
  static constexpr int contractions = 0;
  static constexpr bool packable = simd::packable_v<T>;
  static constexpr std::size_t max_lane_size = sizeof(std::conditional_t<std::is_same_v<T, bool>, int, T>);
  T value;
  dims_t<0> expr_dims() const { return {}; }
  template <int R>
  scalar_eval<T> evaluator(const dims_t<R>&) const { return {value}; }
  template <class F>
  void for_each_leaf(F&&) const {}
};

template <class T, class E>
constexpr void check_storable() {
  using V = typename std::remove_cvref_t<E>::value_type;
  static_assert(std::is_same_v<V, std::remove_const_t<T>>,
                "tessera: the expression's element type differs from the destination's; convert it with tessera::cast<T>(expr)");
}
template <class P, class E>
constexpr void check_policy() {
  using EP = typename std::remove_cvref_t<E>::policy;
  static_assert(std::is_void_v<EP> || std::is_same_v<EP, P>,
                "tessera: the expression's policy differs from the destination's; move it with tessera::to<Policy>(tensor)");
}
}  // namespace detail

/// Non-owning strided view of a tensor's memory. Copying a View is shallow; assigning to one writes its elements.
template <class T, ShapeType S, Policy P = cpu>
class View {
 public:
  using element_type = T;
  using value_type = std::remove_const_t<T>;
  using shape_type = S;
  using policy = P;
  static constexpr int rank = S::rank;
  static constexpr bool is_tessera_expression = true;
  static constexpr int contractions = 0;  ///< matmul/conv nodes in the tree (for epilogue fusion)
  static constexpr bool packable = simd::packable_v<value_type>;
  static constexpr std::size_t max_lane_size = sizeof(std::conditional_t<std::is_same_v<value_type, bool>, int, value_type>);

  View() = default;
  View(T* data, const dims_t<rank>& dims, const dims_t<rank>& strides) : data_(data), dims_(dims), strides_(strides) {
    check_static_extents<S>(dims_, "view");
    (void)checked_product(dims_, "view");  // size() and every loop over the view may then multiply extents freely
  }
  View(const View&) = default;
  /// A mutable view converts to a read-only one, and a view with static extents to one with fewer.
  template <class U, class S2>
    requires(std::is_same_v<std::remove_const_t<U>, value_type> && (std::is_const_v<T> || !std::is_const_v<U>) &&
             shapes_compatible_v<S2, S>)
  View(const View<U, S2, P>& o) : View(o.data(), o.dims(), o.strides()) {}  // NOLINT: implicit like pointer conversions

  T* data() const { return data_; }
  const dims_t<rank>& dims() const { return dims_; }
  const dims_t<rank>& strides() const { return strides_; }
  index_t dim(int i) const { return dims_[i]; }
  index_t stride(int i) const { return strides_[i]; }
  index_t size() const { return product(dims_); }
  bool is_contiguous() const {
    index_t acc = 1;
    for (int i = rank - 1; i >= 0; --i) {
      if (dims_[i] != 1 && strides_[i] != acc) return false;
      acc *= dims_[i];
    }
    return true;
  }

  template <std::integral... I>
    requires(sizeof...(I) == rank)
  T& operator()(I... idx) const {
    static_assert(!P::on_device, "tessera: element access on a cuda tensor; copy it to the host with tessera::to<cpu>(t)");
#if TESSERA_DEBUG_CHECKS
    check_index({index_t(idx)...});
#endif
    index_t off = 0, k = 0;
    ((off += index_t(idx) * strides_[k++]), ...);
    return data_[off];
  }

  /// The single element of a view holding exactly one (any rank), copied to the host; any other size is a
  /// shape_error naming the shape.
  value_type item() const {
    if (size() != 1)
      throw shape_error("tessera: item(): a tensor of shape " + detail::format_dims(dims_) + " has " + std::to_string(size()) +
                        " elements; item() needs exactly one");
    if constexpr (P::on_device) {
      value_type v{};
      memory<P>::copy_to_host(&v, data_, 1);
      return v;
    } else {
      return *data_;
    }
  }

  View& operator=(const View& o) { return assign_from(o); }
  template <Expression E>
  View& operator=(const E& e) { return assign_from(e); }
  /// Fill with v.
  template <class U>
    requires std::is_arithmetic_v<U> || std::is_same_v<U, bfloat16>
  View& operator=(U v) {
    static_assert(!std::is_const_v<T>, "tessera: cannot assign through a read-only view");
    detail::run_assignment(*this, detail::scalar_node<value_type>{static_cast<value_type>(v)});
    return *this;
  }

  // ---- expression interface ----
  dims_t<rank> expr_dims() const { return dims_; }
  template <int R>
  auto evaluator(const dims_t<R>& out) const {
    return detail::make_leaf_eval<value_type, R>(data_, dims_, strides_, out);
  }
  template <class F>
  void for_each_leaf(F&& f) const { f(*this); }

 private:
  template <class E>
  View& assign_from(const E& e) {
    static_assert(!std::is_const_v<T>, "tessera: cannot assign through a read-only view");
    detail::check_storable<T, E>();
    detail::check_policy<P, E>();
    (void)error::static_shapes_differ<op::assign, typename std::remove_cvref_t<E>::shape_type, S>::ok;
    detail::run_assignment(*this, e);
    return *this;
  }

  /// Debug builds (config.hpp's TESSERA_DEBUG_CHECKS): an index outside the extents is a std::out_of_range.
  void check_index(const dims_t<rank>& at) const {
    for (int i = 0; i < rank; ++i)
      if (at[i] < 0 || at[i] >= dims_[i])
        throw std::out_of_range("tessera: element " + detail::format_dims(at) + " is out of range for shape " +
                                detail::format_dims(dims_) + " (axis " + std::to_string(i) + ")");
  }

  T* data_ = nullptr;
  dims_t<rank> dims_{};
  dims_t<rank> strides_{};
};

/// Owning tensor: contiguous, row-major, 64-byte aligned, value semantics (copies are deep).
template <Element T, ShapeType S, Policy P = cpu>
class Tensor {
 public:
  using value_type = T;
  using shape_type = S;
  using policy = P;
  static constexpr int rank = S::rank;
  using view_type = View<T, S, P>;
  using const_view_type = View<const T, S, P>;

  /// Static extents allocate; dynamic ones start at 0.
  Tensor() {
    for (int i = 0; i < rank; ++i) dims_[i] = S::extents[i] == dyn ? 0 : S::extents[i];
    allocate();
  }
  /// Either the dynamic extents alone, or every extent (static ones are checked).
  template <std::integral... I>
    requires(sizeof...(I) > 0 && (sizeof...(I) == S::num_dyn || sizeof...(I) == rank))
  explicit Tensor(I... e) {
    const index_t given[] = {index_t(e)...};
    if constexpr (sizeof...(I) == rank) {
      for (int i = 0; i < rank; ++i) dims_[i] = given[i];
    } else {
      int k = 0;
      for (int i = 0; i < rank; ++i) dims_[i] = S::extents[i] == dyn ? given[k++] : S::extents[i];
    }
    check_nonnegative();
    check_static_extents<S>(dims_, "tensor");
    allocate();
  }
  explicit Tensor(const dims_t<rank>& d) : dims_(d) {
    check_nonnegative();
    check_static_extents<S>(dims_, "tensor");
    allocate();
  }
  /// A tensor holding a copy of `values` (row-major), with the given extents.
  Tensor(std::initializer_list<T> values, const dims_t<rank>& d) : Tensor(d) { copy_from_host(values.begin(), values.size()); }
  Tensor(const std::vector<T>& values, const dims_t<rank>& d) : Tensor(d) {
    if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> is packed: unpack it first
      const std::unique_ptr<bool[]> b(new bool[values.size()]);
      std::copy(values.begin(), values.end(), b.get());
      copy_from_host(b.get(), values.size());
    } else {
      copy_from_host(values.data(), values.size());
    }
  }

  Tensor(const Tensor& o) : dims_(o.dims_) {
    allocate();
    *this = o.cview();
  }
  Tensor(Tensor&& o) noexcept : data_(std::exchange(o.data_, nullptr)), dims_(o.dims_) {
    for (int i = 0; i < rank; ++i)
      if (S::extents[i] == dyn) o.dims_[i] = 0;
  }
  /// Evaluate an expression into a new tensor (its static extents checked at compile time, dynamic ones at run time).
  template <Expression E>
  Tensor(const E& e) {  // NOLINT(google-explicit-constructor): `Tensor z = expr;` is the point
    static_check<E>();
    dims_ = e.expr_dims();
    check_static_extents<S>(dims_, "tensor from expression");
    allocate();
    detail::run_assignment(view(), e);
  }
  /// From a tensor of another static shape (same rank; static extents checked at compile time, dynamic ones at run time).
  template <class S2>
    requires(!std::is_same_v<S2, S>)
  Tensor(const Tensor<T, S2, P>& o) : Tensor(o.cview()) {}  // NOLINT(google-explicit-constructor)
  ~Tensor() { memory<P>::deallocate(data_); }

  Tensor& operator=(const Tensor& o) {
    if (this != &o) *this = o.cview();
    return *this;
  }
  Tensor& operator=(Tensor&& o) noexcept {
    if (this != &o) {
      memory<P>::deallocate(data_);
      data_ = std::exchange(o.data_, nullptr);
      dims_ = o.dims_;
      for (int i = 0; i < rank; ++i)
        if (S::extents[i] == dyn) o.dims_[i] = 0;
    }
    return *this;
  }
  /// Evaluate into this tensor; it takes the expression's extents (reallocating only if they differ).
  template <Expression E>
  Tensor& operator=(const E& e) {
    static_check<E>();
    const auto d = e.expr_dims();
    if (d == dims_) {
      detail::run_assignment(view(), e);
    } else {
      Tensor t(e);  // the old buffer may be read by e: evaluate first, then swap
      *this = std::move(t);
    }
    return *this;
  }
  template <class U>
    requires std::is_arithmetic_v<U> || std::is_same_v<U, bfloat16>
  Tensor& operator=(U v) {
    view() = v;
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  const dims_t<rank>& dims() const { return dims_; }
  dims_t<rank> strides() const { return contiguous_strides(dims_); }
  index_t dim(int i) const { return dims_[i]; }
  index_t size() const { return product(dims_); }

  view_type view() { return view_type(data_, dims_, strides()); }
  const_view_type view() const { return cview(); }
  const_view_type cview() const { return const_view_type(data_, dims_, strides()); }
  operator view_type() { return view(); }              // NOLINT
  operator const_view_type() const { return cview(); }  // NOLINT

  template <std::integral... I>
    requires(sizeof...(I) == rank)
  T& operator()(I... idx) { return view()(idx...); }
  template <std::integral... I>
    requires(sizeof...(I) == rank)
  const T& operator()(I... idx) const { return cview()(idx...); }

  /// The single element of a tensor holding exactly one (any rank), copied to the host; any other size is a
  /// shape_error naming the shape.
  T item() const { return cview().item(); }

  /// Elements in row-major order, copied to the host.
  std::vector<T> to_vector() const;

 private:
  template <class E>
  static constexpr void static_check() {
    detail::check_storable<T, E>();
    detail::check_policy<P, E>();
    (void)error::static_shapes_differ<op::assign, typename std::remove_cvref_t<E>::shape_type, S>::ok;
  }
  void check_nonnegative() const {
    for (auto e : dims_)
      if (e < 0) throw shape_error("tessera: tensor: negative extent in " + detail::format_dims(dims_));
  }
  void allocate() {
    const index_t n = checked_product(dims_, "tensor");
    (void)checked_bytes(dims_, n, sizeof(T), memory<P>::alignment, "tensor");
    data_ = memory<P>::template allocate<T>(std::size_t(n));
  }
  void copy_from_host(const T* src, std::size_t n);

  T* data_ = nullptr;
  dims_t<rank> dims_{};
};

// Host-side copies; the cuda policy specialises memory<cuda>::copy.
template <Element T, ShapeType S, Policy P>
void Tensor<T, S, P>::copy_from_host(const T* src, std::size_t n) {
  if (index_t(n) != size())
    throw shape_error("tessera: tensor: " + std::to_string(n) + " values given for shape " + detail::format_dims(dims_));
  if constexpr (P::on_device) memory<P>::copy_to_device(data_, src, n);
  else if (n) std::memcpy(data_, src, n * sizeof(T));
}

template <Element T, ShapeType S, Policy P>
std::vector<T> Tensor<T, S, P>::to_vector() const {
  const std::size_t n = static_cast<std::size_t>(size());
  if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> is packed
    const std::unique_ptr<bool[]> b(new bool[n]);
    if constexpr (P::on_device) memory<P>::copy_to_host(b.get(), data_, n);
    else if (n) std::memcpy(b.get(), data_, n);
    return std::vector<bool>(b.get(), b.get() + n);
  } else {
    std::vector<T> v(n);
    if constexpr (P::on_device) memory<P>::copy_to_host(v.data(), data_, n);
    else if (n) std::memcpy(v.data(), data_, n * sizeof(T));
    return v;
  }
}

/// A view over memory the caller owns (a std::vector's data, a C array): zero-copy, row-major unless strides are given.
template <ShapeType S, class T, Policy P = cpu>
View<T, S, P> map(T* data, const dims_t<S::rank>& dims) {
  return View<T, S, P>(data, dims, contiguous_strides(dims));
}
template <ShapeType S, class T, Policy P = cpu>
View<T, S, P> map(T* data, const dims_t<S::rank>& dims, const dims_t<S::rank>& strides) {
  return View<T, S, P>(data, dims, strides);
}

}  // namespace tessera

