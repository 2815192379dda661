// The checkpoint file format's building blocks (see tessera/io/checkpoint.hpp for the format itself): the element
// type codes, the header constants and CRC32 (little-endian numbers and elements and the row-major walks of strided
// views come from io/byte_order.hpp, which the interchange formats of interop/ share).
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
#include "tessera/io/byte_order.hpp"

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

}  // namespace detail

}  // namespace tessera
