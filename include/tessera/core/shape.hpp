// Shapes: each extent a compile-time size or `dyn`; NumPy broadcasting at compile time where extents are static.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "tessera/core/error.hpp"

namespace tessera {

using extent_t = std::int64_t;
/// An extent known only at run time. Shows as -1 in compiler messages.
inline constexpr extent_t dyn = -1;
inline constexpr int max_rank = 8;

template <extent_t... E>
struct Shape {
  static constexpr int rank = static_cast<int>(sizeof...(E));
  static_assert(rank <= max_rank, "tessera::Shape: a rank above 8 is not supported");
  static_assert(((E == dyn || E >= 0) && ...), "tessera::Shape: an extent must be a non-negative size or tessera::dyn");
  static constexpr std::array<extent_t, sizeof...(E)> extents{E...};
  static constexpr bool is_static = ((E != dyn) && ...);
  static constexpr int num_dyn = (0 + ... + (E == dyn ? 1 : 0));
};

template <class S>
inline constexpr bool is_shape_v = false;
template <extent_t... E>
inline constexpr bool is_shape_v<Shape<E...>> = true;
template <class S>
concept ShapeType = is_shape_v<S>;

namespace detail {
template <auto A, class Seq = std::make_index_sequence<A.size()>>
struct shape_from_array;
template <auto A, std::size_t... I>
struct shape_from_array<A, std::index_sequence<I...>> {
  using type = Shape<A[I]...>;
};
}  // namespace detail
/// The Shape whose extents are the constexpr std::array A.
template <auto A>
using shape_from_array_t = typename detail::shape_from_array<A>::type;

/// Shape of `R` dynamic extents.
namespace detail {
template <int R>
constexpr std::array<extent_t, R> all_dyn() {
  std::array<extent_t, R> a{};
  for (auto& e : a) e = dyn;
  return a;
}
}  // namespace detail
template <int R>
using dyn_shape_t = shape_from_array_t<detail::all_dyn<R>()>;

// ---- compile-time broadcasting ------------------------------------------------------------------------------

namespace detail {
struct broadcast_outcome {
  bool ok = true;
  std::array<extent_t, max_rank> ext{};
};
template <class A, class B>
constexpr broadcast_outcome broadcast_extents() {
  constexpr int ra = A::rank, rb = B::rank, r = ra > rb ? ra : rb;
  broadcast_outcome out;
  for (int i = 0; i < r; ++i) {
    const int ia = ra - r + i, ib = rb - r + i;
    const extent_t ea = ia >= 0 ? A::extents[ia] : 1, eb = ib >= 0 ? B::extents[ib] : 1;
    extent_t e;
    if (ea == dyn && eb == dyn) e = dyn;
    else if (ea == dyn) e = eb == 1 ? dyn : eb;
    else if (eb == dyn) e = ea == 1 ? dyn : ea;
    else if (ea == eb || eb == 1) e = ea;
    else if (ea == 1) e = eb;
    else { out.ok = false; e = dyn; }
    out.ext[i] = e;
  }
  return out;
}
template <class A, class B>
constexpr auto broadcast_array() {
  constexpr int r = A::rank > B::rank ? A::rank : B::rank;
  constexpr auto o = broadcast_extents<A, B>();
  std::array<extent_t, r> a{};
  for (int i = 0; i < r; ++i) a[i] = o.ext[i];
  return a;
}
}  // namespace detail

namespace error {
/// Instantiated when two static shapes cannot be broadcast: the compiler's first line names
/// the operation and both shapes, e.g. `shapes_cannot_be_broadcast<op::add, Shape<4, 3>, Shape<5, 3>>`.
template <class Op, class A, class B>
struct shapes_cannot_be_broadcast {
  static constexpr bool ok = detail::broadcast_extents<A, B>().ok;
  static_assert(ok, "tessera: the operands' static shapes cannot be broadcast together (each extent must match or be 1)");
};
}  // namespace error

/// Result of broadcasting static shapes A and B under operation Op (a compile error naming Op, A and B if they clash).
namespace detail {
template <class Op, class A, class B>
struct broadcast_checked : error::shapes_cannot_be_broadcast<Op, A, B> {
  using type = shape_from_array_t<broadcast_array<A, B>()>;
};
}  // namespace detail
template <class Op, class A, class B>
using broadcast_t = typename detail::broadcast_checked<Op, A, B>::type;

namespace error {
/// Instantiated when an operation names an axis the shape does not have.
template <class Op, int Axis, class S>
struct axis_out_of_range {
  static constexpr bool ok = Axis >= -S::rank && Axis < S::rank;
  static_assert(ok, "tessera: the axis is out of range for this shape (axes run from -rank to rank-1)");
};
}  // namespace error

// ---- run-time extents ---------------------------------------------------------------------------------------

template <std::size_t R>
using dims_t = std::array<index_t, R>;

/// Broadcast run-time extents; throws shape_error naming the operation and both shapes.
template <std::size_t RA, std::size_t RB>
auto broadcast_dims(const dims_t<RA>& a, const dims_t<RB>& b, const char* op) {
  constexpr std::size_t r = RA > RB ? RA : RB;
  dims_t<r> out{};
  for (std::size_t i = 0; i != r; ++i) {
    const long ia = long(RA) - long(r) + long(i), ib = long(RB) - long(r) + long(i);
    const index_t ea = ia >= 0 ? a[ia] : 1, eb = ib >= 0 ? b[ib] : 1;
    if (ea == eb || eb == 1) out[i] = ea;
    else if (ea == 1) out[i] = eb;
    else
      throw shape_error(std::string("tessera: ") + op + ": shapes " + detail::format_dims(a) + " and " +
                        detail::format_dims(b) + " cannot be broadcast together");
  }
  return out;
}

/// Check run-time extents against the static ones of S.
template <ShapeType S>
void check_static_extents(const dims_t<S::rank>& d, const char* what) {
  for (int i = 0; i < S::rank; ++i)
    if (S::extents[i] != dyn && S::extents[i] != d[i]) {
      dims_t<S::rank> st{};
      for (int k = 0; k < S::rank; ++k) st[k] = S::extents[k];
      throw shape_error(std::string("tessera: ") + what + ": shape " + detail::format_dims(d) +
                        " does not fit the static shape " + detail::format_dims(st) + " (-1 = dyn)");
    }
}

/// Number of elements of extents d. Unchecked: for extents already validated by checked_product (every Tensor, View
/// and reshape does on construction, so a product of their extents cannot wrap).
template <std::size_t R>
constexpr index_t product(const dims_t<R>& d) {
  index_t n = 1;
  for (auto e : d) n *= e;
  return n;
}

/// Number of elements of extents d, checked: a negative extent is a shape_error, a count that does not fit in
/// index_t is a std::length_error naming the extents (2^32 x 2^32 would otherwise wrap to 0). `what` names the caller.
/// Zero extents count as 1 in the check, so that the row-major strides of an empty [0, 2^32, 2^32] are countable too.
template <std::size_t R>
index_t checked_product(const dims_t<R>& d, const char* what) {
  index_t n = 1, strides = 1;
  bool wrapped = false;
  for (auto e : d) {
    if (e < 0) throw shape_error(std::string("tessera: ") + what + ": negative extent in " + detail::format_dims(d));
    wrapped |= __builtin_mul_overflow(n, e, &n);
    wrapped |= __builtin_mul_overflow(strides, e == 0 ? index_t(1) : e, &strides);
  }
  if (wrapped)
    throw std::length_error(std::string("tessera: ") + what + ": the extents " + detail::format_dims(d) +
                            " hold more elements than a 64-bit index can count");
  return n;
}

/// Bytes of n elements of `elem_size` bytes each, rounded up to `align`; a std::length_error naming the extents d
/// when that does not fit in std::size_t (2^62 floats would otherwise wrap to a 0- or 64-byte block).
template <std::size_t R>
std::size_t checked_bytes(const dims_t<R>& d, index_t n, std::size_t elem_size, std::size_t align, const char* what) {
  std::size_t bytes = 0;
  if (n < 0 || __builtin_mul_overflow(std::size_t(n), elem_size, &bytes) || bytes > ~std::size_t(0) - align)
    throw std::length_error(std::string("tessera: ") + what + ": the extents " + detail::format_dims(d) + " need " +
                            std::to_string(n) + " elements of " + std::to_string(elem_size) +
                            " bytes, more than the address space holds");
  return (bytes + align - 1) / align * align;
}

/// Row-major strides of a contiguous tensor.
template <std::size_t R>
constexpr dims_t<R> contiguous_strides(const dims_t<R>& d) {
  dims_t<R> s{};
  index_t acc = 1;
  for (int i = int(R) - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= d[i];
  }
  return s;
}

/// Can static shape From be viewed as static shape To (same rank, static extents agree where both are static)?
template <class From, class To>
inline constexpr bool shapes_compatible_v = [] {
  if constexpr (From::rank != To::rank) return false;
  else {
    for (int i = 0; i < From::rank; ++i)
      if (From::extents[i] != dyn && To::extents[i] != dyn && From::extents[i] != To::extents[i]) return false;
    return true;
  }
}();

}  // namespace tessera
