// The checkpoint file format's building blocks (see tessera/io/checkpoint.hpp for the format itself): the element
// type codes, the header constants, CRC32, little-endian numbers and elements, and row-major walks of strided views.
#pragma once

#if !__has_include(<zlib.h>)
#error "tessera/io/checkpoint.hpp (checkpoint_format.hpp) needs zlib, and <zlib.h> was not found: install zlib's development files (Debian: apt-get install zlib1g-dev) and link ZLIB::ZLIB (tessera::tessera links it when CMake's find_package(ZLIB) succeeds)"
#endif
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/core/shape.hpp"
#include "tessera/core/types.hpp"

namespace tessera {

/// Element type codes of checkpoint entries.
enum class checkpoint_dtype : std::uint8_t {
  f32 = 1, f64 = 2, i32 = 3, i64 = 4, u8 = 5, i8 = 6, bf16 = 7, boolean = 8, string = 9
};

constexpr bool is_checkpoint_dtype(std::uint8_t c) { return c >= 1 && c <= 9; }

/// The name of a dtype, as tessera::type_name<T>() spells the element type ("float", "int64", ...).
constexpr const char* checkpoint_dtype_name(checkpoint_dtype d) {
  switch (d) {
    case checkpoint_dtype::f32: return "float";
    case checkpoint_dtype::f64: return "double";
    case checkpoint_dtype::i32: return "int32";
    case checkpoint_dtype::i64: return "int64";
    case checkpoint_dtype::u8: return "uint8";
    case checkpoint_dtype::i8: return "int8";
    case checkpoint_dtype::bf16: return "bfloat16";
    case checkpoint_dtype::boolean: return "bool";
    case checkpoint_dtype::string: return "string";
  }
  return "unknown";
}
constexpr std::size_t checkpoint_dtype_size(checkpoint_dtype d) {
  switch (d) {
    case checkpoint_dtype::f32:
    case checkpoint_dtype::i32: return 4;
    case checkpoint_dtype::f64:
    case checkpoint_dtype::i64: return 8;
    case checkpoint_dtype::bf16: return 2;
    default: return 1;
  }
}

/// The dtype code of a tensor element type.
template <Element T>
constexpr checkpoint_dtype checkpoint_dtype_of() {
  if constexpr (std::is_same_v<T, float>) return checkpoint_dtype::f32;
  else if constexpr (std::is_same_v<T, double>) return checkpoint_dtype::f64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return checkpoint_dtype::i32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return checkpoint_dtype::i64;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return checkpoint_dtype::u8;
  else if constexpr (std::is_same_v<T, std::int8_t>) return checkpoint_dtype::i8;
  else if constexpr (std::is_same_v<T, bfloat16>) return checkpoint_dtype::bf16;
  else return checkpoint_dtype::boolean;
}

namespace detail {

inline constexpr char checkpoint_magic[8] = {'T', 'S', 'R', 'A', 'C', 'K', 'P', 'T'};
inline constexpr std::uint32_t checkpoint_version = 1;
/// magic, version, flags, file length, entry count
inline constexpr std::size_t checkpoint_header_bytes = 8 + 4 + 4 + 8 + 8;
inline constexpr std::size_t checkpoint_max_name = 65535;

inline std::uint32_t crc32_update(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  uLong c = crc;
  while (n) {
    const uInt chunk = uInt(std::min<std::size_t>(n, std::size_t(1) << 30));
    c = ::crc32(c, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return std::uint32_t(c);
}

template <class U>
void store_le(unsigned char* p, U v) {
  static_assert(std::is_unsigned_v<U>);
  for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
template <class U>
U get_le(const unsigned char* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= U(p[i]) << (8 * i);
  return v;
}

/// Copy n elements to little-endian bytes (a memcpy on little-endian hosts).
template <class T>
void elements_to_le(const T* src, std::size_t n, unsigned char* dst) {
  if (n == 0) return;
  std::memcpy(dst, src, n * sizeof(T));
  if constexpr (sizeof(T) > 1 && std::endian::native == std::endian::big)
    for (std::size_t i = 0; i < n; ++i) std::reverse(dst + i * sizeof(T), dst + (i + 1) * sizeof(T));
}
template <class T>
void elements_from_le(const unsigned char* src, std::size_t n, T* dst) {
  if (n == 0) return;
  std::memcpy(dst, src, n * sizeof(T));
  if constexpr (sizeof(T) > 1 && std::endian::native == std::endian::big)
    for (std::size_t i = 0; i < n; ++i) {
      auto* b = reinterpret_cast<unsigned char*>(dst + i);
      std::reverse(b, b + sizeof(T));
    }
}

/// Call f(offset, count, stride) for each innermost row of a strided view, in row-major order.
template <std::size_t R, class F>
void for_each_row(const dims_t<R>& dims, const dims_t<R>& strides, F&& f) {
  if constexpr (R == 0) {
    f(index_t(0), index_t(1), index_t(1));
  } else {
    for (auto d : dims)
      if (d == 0) return;
    std::array<index_t, R> idx{};
    while (true) {
      index_t off = 0;
      for (std::size_t i = 0; i + 1 < R; ++i) off += idx[i] * strides[i];
      f(off, dims[R - 1], strides[R - 1]);
      int d = int(R) - 2;
      for (; d >= 0; --d) {
        if (++idx[d] < dims[d]) break;
        idx[d] = 0;
      }
      if (d < 0) return;
    }
  }
}

inline std::string format_index_list(const std::vector<index_t>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i != d.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(d[i]);
  }
  return s + "]";
}

template <std::size_t R>
std::vector<index_t> to_index_vector(const dims_t<R>& d) {
  return std::vector<index_t>(d.begin(), d.end());
}

}  // namespace detail

}  // namespace tessera
