// What the interchange formats of interop/ (safetensors.hpp, npy.hpp) share: the element types they carry
// (tensor_dtype: float, double, bfloat16, int8, uint8, int32, int64, bool), a tensor's or a host view's elements as
// little-endian bytes in row-major order and back, a whole file read into memory with a size bound, and atomic writes
// (io/atomic_file.hpp: a temporary of its own, fsync'd, renamed over the target).
//
//   auto bytes = detail::interop::host_bytes(tensor);             // row-major, little-endian (a cuda tensor: copied)
//   detail::interop::bytes_into(bytes.data(), tensor_or_view);    // the reverse (extents checked by the caller)
//   auto file = detail::interop::read_whole_file(path, limit, fail);  // fail(message) must throw
//
// Nothing here checks names or shapes: each format's reader does, naming its file and tensor in an io_error.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"
#include "tessera/io/atomic_file.hpp"
#include "tessera/io/byte_order.hpp"
#include "tessera/io/error.hpp"

namespace tessera {

/// The element types the interchange formats carry (each format spells them its own way).
enum class tensor_dtype : std::uint8_t { f32, f64, bf16, i8, u8, i32, i64, boolean };

/// The name tessera::type_name<T>() gives the element type ("float", "bfloat16", "int64", "bool", ...).
constexpr const char* tensor_dtype_name(tensor_dtype d) {
  switch (d) {
    case tensor_dtype::f32: return "float";
    case tensor_dtype::f64: return "double";
    case tensor_dtype::bf16: return "bfloat16";
    case tensor_dtype::i8: return "int8";
    case tensor_dtype::u8: return "uint8";
    case tensor_dtype::i32: return "int32";
    case tensor_dtype::i64: return "int64";
    case tensor_dtype::boolean: return "bool";
  }
  return "unknown";
}
constexpr std::size_t tensor_dtype_size(tensor_dtype d) {
  switch (d) {
    case tensor_dtype::f64:
    case tensor_dtype::i64: return 8;
    case tensor_dtype::f32:
    case tensor_dtype::i32: return 4;
    case tensor_dtype::bf16: return 2;
    default: return 1;
  }
}
/// The dtype of a tensor element type.
template <Element T>
constexpr tensor_dtype tensor_dtype_of() {
  if constexpr (std::is_same_v<T, float>) return tensor_dtype::f32;
  else if constexpr (std::is_same_v<T, double>) return tensor_dtype::f64;
  else if constexpr (std::is_same_v<T, bfloat16>) return tensor_dtype::bf16;
  else if constexpr (std::is_same_v<T, std::int8_t>) return tensor_dtype::i8;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return tensor_dtype::u8;
  else if constexpr (std::is_same_v<T, std::int32_t>) return tensor_dtype::i32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return tensor_dtype::i64;
  else return tensor_dtype::boolean;
}

namespace detail::interop {





/// A tensor's elements (a cuda tensor's copied to the host first) as little-endian bytes, row-major.
template <Element T, ShapeType S, Policy P>
std::vector<unsigned char> host_bytes(const Tensor<T, S, P>& t) {
  const std::size_t n = std::size_t(t.size());
  std::vector<unsigned char> out(n * sizeof(T));
  if constexpr (P::on_device) {
    static_assert(!std::is_same_v<T, bool>, "tessera: copy a cuda bool tensor to the host (tessera::to<cpu>) first");
    const auto host = t.to_vector();
    elements_to_le(host.data(), n, out.data());
  } else {
    elements_to_le(t.data(), n, out.data());
  }
  return out;
}
/// A host view's elements (any strides) as little-endian bytes, row-major.
template <class T, ShapeType S, Policy P>
std::vector<unsigned char> host_bytes(const View<T, S, P>& v) {
  static_assert(!P::on_device, "tessera: copy a cuda view to the host (tessera::to<cpu>) first");
  using V = std::remove_const_t<T>;
  std::vector<unsigned char> out(std::size_t(v.size()) * sizeof(V));
  unsigned char* o = out.data();
  for_each_row(v.dims(), v.strides(), [&](index_t off, index_t count, index_t stride) {
    const V* p = v.data() + off;
    if (stride == 1) elements_to_le(p, std::size_t(count), o);
    else
      for (index_t k = 0; k < count; ++k) elements_to_le(p + k * stride, 1, o + k * sizeof(V));
    o += std::size_t(count) * sizeof(V);
  });
  return out;
}

/// Little-endian row-major bytes into a tensor (a cuda tensor: through a host copy) or a host view of any strides.
/// The caller has checked that the bytes hold exactly the destination's elements.
template <Element T, ShapeType S, Policy P>
void bytes_into(const unsigned char* in, Tensor<T, S, P>& t) {
  const std::size_t n = std::size_t(t.size());
  if constexpr (P::on_device) {
    static_assert(!std::is_same_v<T, bool>, "tessera: read a cuda bool tensor on the host first");
    std::vector<T> host(n);
    elements_from_le(in, n, host.data());
    memory<P>::copy_to_device(t.data(), host.data(), n);
  } else {
    elements_from_le(in, n, t.data());
  }
}
template <class T, ShapeType S, Policy P>
void bytes_into(const unsigned char* in, const View<T, S, P>& v) {
  static_assert(!std::is_const_v<T>, "tessera: cannot read into a read-only view");
  static_assert(!P::on_device, "tessera: read into a host tensor, then move it to the device");
  for_each_row(v.dims(), v.strides(), [&](index_t off, index_t count, index_t stride) {
    T* p = v.data() + off;
    if (stride == 1) elements_from_le(in, std::size_t(count), p);
    else
      for (index_t k = 0; k < count; ++k) elements_from_le(in + k * sizeof(T), 1, p + k * stride);
    in += std::size_t(count) * sizeof(T);
  });
}

/// The number of elements of `dims` (each >= 0), or false when their bytes (elem_size each) would pass 2^63
/// (checked by division before multiplying, so that nothing wraps).
inline bool element_count(const std::vector<index_t>& dims, std::size_t elem_size, std::uint64_t& count) {
  const std::uint64_t limit = std::uint64_t(INT64_MAX) / elem_size;
  std::uint64_t nonzero = 1;
  bool empty = false;
  for (auto d : dims) {
    if (d < 0) return false;
    if (d == 0) {
      empty = true;
      continue;
    }
    if (std::uint64_t(d) > limit / nonzero) return false;
    nonzero *= std::uint64_t(d);
  }
  count = empty ? 0 : nonzero;
  return true;
}

/// The whole file; `fail(message)` (which throws) when it cannot be opened or read, is a directory, or holds more
/// than `limit` bytes.
template <class Fail>
std::vector<unsigned char> read_whole_file(const std::filesystem::path& path, std::uint64_t limit, Fail&& fail) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("cannot open: it is a directory");
  std::FILE* f = std::fopen(path.string().c_str(), "rb");
  if (!f) fail(std::string("cannot open: ") + std::strerror(errno));
  struct closer {
    std::FILE* f;
    ~closer() { std::fclose(f); }
  } guard{f};
  std::vector<unsigned char> bytes;
  unsigned char buf[1 << 16];
  while (true) {
    const std::size_t got = std::fread(buf, 1, sizeof buf, f);
    if (bytes.size() + got > limit)
      fail("the file is larger than the limit of " + std::to_string(limit) + " bytes");
    bytes.insert(bytes.end(), buf, buf + got);
    if (got < sizeof buf) {
      if (std::ferror(f)) fail(std::string("read error: ") + std::strerror(errno));
      break;
    }
  }
  return bytes;
}

/// Write `bytes` to `path` atomically (`what` names the kind of file in error messages).
inline void write_atomically(const std::filesystem::path& path, const std::vector<unsigned char>& bytes,
                             const char* what) {
  atomic_file file(path, what);
  if (!bytes.empty()) file.write(bytes.data(), bytes.size());
  file.commit();
}

}  // namespace detail::interop

}  // namespace tessera
