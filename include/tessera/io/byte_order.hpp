// Little-endian numbers and elements, and row-major walks of strided views: what the file formats share (the
// checkpoint format, io/checkpoint_format.hpp, and the interchange formats of interop/: safetensors, .npy). No
// dependency beyond the standard library and core/shape.hpp (so interop/ needs no zlib).
//
//   detail::store_le<std::uint32_t>(p, v);  v = detail::get_le<std::uint32_t>(p);    // one unsigned number
//   detail::elements_to_le(src, n, bytes);  detail::elements_from_le(bytes, n, dst);  // n elements (memcpy on x86)
//   detail::for_each_row(dims, strides, [](index_t offset, index_t count, index_t stride) { ... });
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/core/shape.hpp"

namespace tessera::detail {

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
  std::memcpy(static_cast<void*>(dst), src, n * sizeof(T));
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

}  // namespace tessera::detail
