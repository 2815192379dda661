// Errors that tessera throws for bad input known only at run time.
#pragma once
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace tessera {

using index_t = std::int64_t;

/// Thrown when the dynamic extents of two operands (or of a destination) do not fit; the message names both shapes.
class shape_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Thrown by the CUDA policy when the runtime or a library call fails.
class device_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <std::size_t R>
std::string format_dims(const std::array<index_t, R>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i != R; ++i) {
    if (i) s += ", ";
    s += std::to_string(d[i]);
  }
  return s + "]";
}
}  // namespace detail
}  // namespace tessera
