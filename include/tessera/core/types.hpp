// Element types: float, double, bfloat16, int8, uint8, int32, int64 and bool.
#pragma once
#include <concepts>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tessera/config.hpp"

namespace tessera {

/// Brain float: float's sign and exponent with a 7-bit mantissa; arithmetic is done in float, stored rounded to nearest even.
struct bfloat16 {
  std::uint16_t bits = 0;
  bfloat16() = default;
  TS_HD bfloat16(float f) {  // NOLINT(google-explicit-constructor): behaves as a float
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) bits = std::uint16_t((u >> 16) | 0x40);  // keep NaN a NaN
    else bits = std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  template <class U>
    requires(std::is_arithmetic_v<U> && !std::is_same_v<U, float>)
  TS_HD bfloat16(U v) : bfloat16(static_cast<float>(v)) {}  // NOLINT(google-explicit-constructor)
  TS_HD operator float() const {
    std::uint32_t u = std::uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  friend TS_HD bfloat16 operator+(bfloat16 a, bfloat16 b) { return float(a) + float(b); }
  friend TS_HD bfloat16 operator-(bfloat16 a, bfloat16 b) { return float(a) - float(b); }
  friend TS_HD bfloat16 operator*(bfloat16 a, bfloat16 b) { return float(a) * float(b); }
  friend TS_HD bfloat16 operator/(bfloat16 a, bfloat16 b) { return float(a) / float(b); }
  friend TS_HD bfloat16 operator-(bfloat16 a) { return -float(a); }
  bfloat16& operator+=(bfloat16 b) { return *this = *this + b; }
};

template <class T>
inline constexpr bool is_element_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bfloat16> ||
    std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int32_t> ||
    std::is_same_v<T, std::int64_t> || std::is_same_v<T, bool>;

/// The element types a tensor may hold.
template <class T>
concept Element = is_element_v<T>;

template <class T>
inline constexpr bool is_floating_v = std::is_floating_point_v<T> || std::is_same_v<T, bfloat16>;

template <class T>
inline constexpr bool is_integral_element_v = is_element_v<T> && std::is_integral_v<T> && !std::is_same_v<T, bool>;

/// Type in which a scalar function of T is computed (bfloat16 computes in float).
template <class T>
using compute_t = std::conditional_t<std::is_same_v<T, bfloat16>, float, T>;

template <class T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
  else if constexpr (std::is_same_v<T, std::int8_t>) return "int8";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "uint8";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "int64";
  else if constexpr (std::is_same_v<T, bool>) return "bool";
  else return "unsupported";
}

}  // namespace tessera
