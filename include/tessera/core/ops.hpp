// The operations as functors: what each elementwise operation and each reduction computes, apart from the nodes
// that record them (expr/) and the kernels that run them (kernels/). Each elementwise functor has one `apply`
// template that serves scalars on the host, scalars on the device and SIMD packets, so the vector lanes, the
// scalar tail and the CUDA kernel compute the same function; a reduction has `identity` and `combine`.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "tessera/core/math.hpp"
#include "tessera/core/types.hpp"

namespace tessera {

namespace op {

template <class V>
inline constexpr bool is_scalar_v = !requires(V v) { v[0]; };

template <class T, class...>
using same_t = T;

/// Arithmetic on any numeric element type (not bool).
struct numeric_base {
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
  template <class T, class... U>
  using result = T;
};
/// Functions defined on floating-point types only.
struct floating_base {
  template <class T>
  static constexpr bool accepts = is_floating_v<T>;
  template <class T, class... U>
  using result = T;
};
struct compare_base {
  template <class T>
  static constexpr bool accepts = true;
  template <class T, class... U>
  using result = bool;
};

template <char Opc, class X>
TS_HD TS_INLINE X arith(X a, X b) {
  if constexpr (Opc == '+') return a + b;
  else if constexpr (Opc == '-') return a - b;
  else return a * b;
}
/// Signed integers wrap (two's complement) instead of overflowing: the arithmetic runs in the unsigned type.
template <char Opc, class V>
TS_HD TS_INLINE V wrapping(V a, V b) {
  using E = simd::elem_t<V>;
  if constexpr (std::is_integral_v<E> && std::is_signed_v<E>) {
    using U = std::make_unsigned_t<E>;
    if constexpr (simd::is_packet_v<V>) {
#if TESSERA_SIMD
      using UV = simd::vec<U, int(sizeof(V) / sizeof(E))>;
      return (V)arith<Opc>((UV)a, (UV)b);
#else
      return arith<Opc>(a, b);
#endif
    } else {
      return static_cast<V>(static_cast<U>(arith<Opc>(static_cast<U>(a), static_cast<U>(b))));
    }
  } else {
    return arith<Opc>(a, b);
  }
}

struct add : numeric_base {
  static constexpr const char* name = "add";
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) { return wrapping<'+'>(a, b); }
};
struct sub : numeric_base {
  static constexpr const char* name = "sub";
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) { return wrapping<'-'>(a, b); }
};
struct mul : numeric_base {
  static constexpr const char* name = "mul";
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) { return wrapping<'*'>(a, b); }
};
/// Integer division follows C++ (truncation; dividing by zero is undefined). int8/uint8 lanes divide in
/// int32, as C++ promotes them, so -128 / -1 gives -128 instead of a trap.
struct div : numeric_base {
  static constexpr const char* name = "div";
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) {
    using E = simd::elem_t<V>;
    if constexpr (simd::is_packet_v<V> && std::is_integral_v<E> && sizeof(E) < 4) {
#if TESSERA_SIMD
      constexpr int N = int(sizeof(V) / sizeof(E));
      using I = simd::vec<std::int32_t, N>;
      return __builtin_convertvector(__builtin_convertvector(a, I) / __builtin_convertvector(b, I), V);
#else
      return a / b;
#endif
    } else if constexpr (std::is_integral_v<E> && sizeof(E) < 4) {
      return static_cast<V>(int(a) / int(b));
    } else {
      return a / b;
    }
  }
};

/// minimum/maximum propagate NaN from either side, as PyTorch's (a NaN fails every comparison, so `b != b` picks a
/// NaN b, and a NaN a is kept); a compare-and-blend more than the plain form, which stays vectorised.
struct min : numeric_base {
  static constexpr const char* name = "min";
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) {
    if constexpr (std::is_same_v<V, bfloat16>) return bfloat16(apply(float(a), float(b)));
    else if constexpr (is_floating_v<simd::elem_t<V>>) return ((b < a) | (b != b)) ? b : a;
    else return b < a ? b : a;
  }
};
struct max : numeric_base {
  static constexpr const char* name = "max";
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) {
    if constexpr (std::is_same_v<V, bfloat16>) return bfloat16(apply(float(a), float(b)));
    else if constexpr (is_floating_v<simd::elem_t<V>>) return ((a < b) | (b != b)) ? b : a;
    else return a < b ? b : a;
  }
};
struct pow : floating_base {
  static constexpr const char* name = "pow";
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) {
    if constexpr (std::is_same_v<V, bfloat16>) return bfloat16(math::pow(float(a), float(b)));
    else return math::pow(a, b);
  }
};

struct neg : numeric_base {
  static constexpr const char* name = "neg";
  template <class V>
  static TS_HD TS_INLINE V apply(V a) {
    using E = simd::elem_t<V>;
    if constexpr (std::is_integral_v<E>) return wrapping<'-'>(V{}, a);
    else return -a;  // -(+0.0) is -0.0
  }
};
struct abs : numeric_base {
  static constexpr const char* name = "abs";
  template <class V>
  static TS_HD TS_INLINE V apply(V a) {
    if constexpr (std::is_same_v<V, bfloat16>) return bfloat16(float(a) < 0 ? -float(a) : float(a));
    else return a < V{} ? neg::apply(a) : a + V{};  // a + 0 turns -0.0 into +0.0
  }
};
struct relu : numeric_base {
  static constexpr const char* name = "relu";
  template <class V>
  static TS_HD TS_INLINE V apply(V a) {
    // a <= 0 fails for NaN, which passes through (PyTorch's relu(NaN) is NaN); -0.0 still gives +0.0
    if constexpr (std::is_same_v<V, bfloat16>) return bfloat16(float(a) <= 0 ? 0.0f : float(a));
    else return a <= V{} ? V{} : a;
  }
};

#define TS_FLOAT_FN(NAME, BODY)                                                              \
  struct NAME : floating_base {                                                              \
    static constexpr const char* name = #NAME;                                               \
    template <class X>                                                                       \
    static TS_HD TS_INLINE X fn(X x) { return BODY; }                                        \
    template <class V>                                                                       \
    static TS_HD TS_INLINE V apply(V a) {                                                    \
      if constexpr (std::is_same_v<V, bfloat16>) return bfloat16(fn(float(a)));              \
      else return fn(a);                                                                     \
    }                                                                                        \
  };
TS_FLOAT_FN(exp, math::exp(x))
TS_FLOAT_FN(log, math::log(x))
TS_FLOAT_FN(sqrt, math::sqrt(x))
TS_FLOAT_FN(rsqrt, 1 / math::sqrt(x))
TS_FLOAT_FN(tanh, math::tanh(x))
TS_FLOAT_FN(sigmoid, math::sigmoid(x))
// GELU as PyTorch's default: x * Phi(x), with the exact error function.
TS_FLOAT_FN(gelu, x * simd::elem_t<X>(0.5) * (simd::elem_t<X>(1) + math::erf(x * simd::elem_t<X>(0.70710678118654752440))))
// d/dx of GELU: Phi(x) + x * phi(x) (for the backward pass).
TS_FLOAT_FN(gelu_grad, simd::elem_t<X>(0.5) * (simd::elem_t<X>(1) + math::erf(x * simd::elem_t<X>(0.70710678118654752440))) +
                           x * simd::elem_t<X>(0.39894228040143267794) * math::exp(x * x * simd::elem_t<X>(-0.5)))
#undef TS_FLOAT_FN

struct clamp : numeric_base {
  static constexpr const char* name = "clamp";
  template <class V>
  static TS_HD TS_INLINE V apply(V x, V lo, V hi) {
    x = x < lo ? lo : x;
    return hi < x ? hi : x;
  }
};

template <class To, class From>
struct cast;

/// Orderings of bool operands compare 0/1 (a bool packet is an all-ones mask, which would order true below false).
struct ordering_base : compare_base {
  static constexpr bool orders_bool_as_int = true;
  template <class T>
  using bool_to_int = cast<std::int32_t, T>;
};

#define TS_COMPARE_OP(NAME, OPR, BASE)                                         \
  struct NAME : BASE {                                                         \
    static constexpr const char* name = #NAME;                                 \
    template <class V>                                                         \
    static TS_HD TS_INLINE auto apply(V a, V b) {                              \
      if constexpr (is_scalar_v<V>) return bool(a OPR b);                      \
      else return simd::to_mask(a OPR b);                                      \
    }                                                                          \
  };
TS_COMPARE_OP(less, <, ordering_base)
TS_COMPARE_OP(less_equal, <=, ordering_base)
TS_COMPARE_OP(greater, >, ordering_base)
TS_COMPARE_OP(greater_equal, >=, ordering_base)
TS_COMPARE_OP(equal, ==, compare_base)
TS_COMPARE_OP(not_equal, !=, compare_base)

#undef TS_COMPARE_OP

struct logical_and : compare_base {
  static constexpr const char* name = "logical_and";
  template <class T>
  static constexpr bool accepts = std::is_same_v<T, bool>;
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) { if constexpr (is_scalar_v<V>) return a && b; else return a & b; }
};
struct logical_or : compare_base {
  static constexpr const char* name = "logical_or";
  template <class T>
  static constexpr bool accepts = std::is_same_v<T, bool>;
  template <class V>
  static TS_HD TS_INLINE V apply(V a, V b) { if constexpr (is_scalar_v<V>) return a || b; else return a | b; }
};
struct logical_not : compare_base {
  static constexpr const char* name = "logical_not";
  template <class T>
  static constexpr bool accepts = std::is_same_v<T, bool>;
  template <class V>
  static TS_HD TS_INLINE V apply(V a) { if constexpr (is_scalar_v<V>) return !a; else return ~a; }
};

struct where {
  static constexpr const char* name = "where";
  template <class C, class T, class...>
  using result = T;
  template <class M, class V>
  static TS_HD TS_INLINE V apply(M m, V a, V b) {
    if constexpr (is_scalar_v<V>) return m ? a : b;
    else {
      constexpr int N = sizeof(V) / sizeof(a[0]);
      return simd::widen_mask<std::remove_cvref_t<decltype(a[0])>, N>(m) ? a : b;
    }
  }
};

template <class To, class From>
struct cast {
  static constexpr const char* name = "cast";
  template <class T>
  static constexpr bool accepts = true;
  template <class>
  using result = To;
  template <class V>
  static TS_HD TS_INLINE auto apply(V a) {
    if constexpr (is_scalar_v<V>) {
      if constexpr (std::is_same_v<To, bool>) return bool(a != V{});
      else if constexpr (std::is_same_v<V, bfloat16> && !std::is_same_v<To, bfloat16>) return apply(float(a));  // as float does
      else if constexpr (std::is_floating_point_v<V> && std::is_integral_v<To> && sizeof(To) < 4)
        return static_cast<To>(static_cast<std::int32_t>(a));
      else return static_cast<To>(a);
    } else {
#if TESSERA_SIMD
      return simd::convert<To, From, int(sizeof(V) / sizeof(a[0]))>(a);
#else
      return a;
#endif
    }
  }
};

}  // namespace op

namespace op {  // reductions
struct sum {
  static constexpr const char* name = "sum";
  template <class T>
  static constexpr bool accepts = true;
  template <class T>
  using result = std::conditional_t<std::is_integral_v<T>, std::int64_t, compute_t<T>>;
  template <class A>
  static TS_HD constexpr A identity() { return A(0); }
  template <class V>
  static TS_HD TS_INLINE V combine(V a, V b) { return a + b; }
};
struct mean : sum {
  static constexpr const char* name = "mean";
  template <class T>
  static constexpr bool accepts = is_floating_v<T>;
};
struct max_reduce {
  static constexpr const char* name = "max";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
  template <class T>
  using result = compute_t<T>;
  template <class A>
  static TS_HD constexpr A identity() {
    if constexpr (std::numeric_limits<A>::has_infinity) return -std::numeric_limits<A>::infinity();
    else return std::numeric_limits<A>::lowest();
  }
  /// NaN wins, as in PyTorch (a max over anything with a NaN is NaN).
  template <class V>
  static TS_HD TS_INLINE V combine(V a, V b) { return op::max::apply(a, b); }
};
struct min_reduce {
  static constexpr const char* name = "min";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
  template <class T>
  using result = compute_t<T>;
  template <class A>
  static TS_HD constexpr A identity() {
    if constexpr (std::numeric_limits<A>::has_infinity) return std::numeric_limits<A>::infinity();
    else return std::numeric_limits<A>::max();
  }
  /// NaN wins, as in PyTorch.
  template <class V>
  static TS_HD TS_INLINE V combine(V a, V b) { return op::min::apply(a, b); }
};
struct argmax {
  static constexpr const char* name = "argmax";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
  template <class T>
  using result = std::int64_t;
};
}  // namespace op

}  // namespace tessera
