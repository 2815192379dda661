// NumPy's .npy files: one array per file, read and written by numpy.load / numpy.save.
//
//   tessera::save_npy("x.npy", tensor);                                  // or a host view (any strides); atomic
//   auto x = tessera::load_npy<float, Shape<dyn, 28, 28>>("x.npy");      // element type, rank, static extents checked
//   tessera::load_npy_into("x.npy", tensor_or_view);                    // extents must be the file's
//   npy_header h = tessera::read_npy_header("x.npy");                   // descr, dtype, shape, version
//
// Format (versions 1.0, 2.0 and 3.0): "\x93NUMPY" | major | minor | header length (u16 little-endian in 1.0, u32
// in 2.0 and 3.0) | a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with
// spaces to a multiple of 64 bytes and ended by '\n' | the elements, C order. The writer writes 1.0 (2.0 when the
// header passes 65535 bytes) as numpy does, through io/atomic_file.hpp (a temporary, fsync'd, renamed).
// Element types: '<f4' float, '<f8' double, '|i1' int8, '|u1' uint8, '<i4' int32, '<i8' int64, '|b1' bool ('<' may
// also be '=' on this little-endian host; '|' may be '<' or '=' for one byte). bfloat16 has no npy type: saving
// or loading one is a compile error saying so. Refused with an io_error naming the file: fortran_order True (write
// numpy.ascontiguousarray(a) first), big-endian and any other descr, a shape whose byte count reaches 2^63 (checked
// by division), a header that is not exactly such a dict, data that is shorter or longer than the shape says, bool
// bytes other than 0 and 1.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"
#include "tessera/interop/file_support.hpp"
#include "tessera/io/error.hpp"

namespace tessera {

/// What a .npy file's header says.
struct npy_header {
  int major = 1, minor = 0;     ///< format version
  std::string descr;            ///< as written ("<f4")
  tensor_dtype dtype{};         ///< the element type it stands for
  std::vector<index_t> shape;   ///< C order
  std::size_t data_offset = 0;  ///< where the elements start in the file
};

/// numpy's descr of a dtype ("<f4", "|b1", ...).
constexpr const char* npy_descr(tensor_dtype d) {
  switch (d) {
    case tensor_dtype::f32: return "<f4";
    case tensor_dtype::f64: return "<f8";
    case tensor_dtype::i8: return "|i1";
    case tensor_dtype::u8: return "|u1";
    case tensor_dtype::i32: return "<i4";
    case tensor_dtype::i64: return "<i8";
    case tensor_dtype::boolean: return "|b1";
    case tensor_dtype::bf16: return "";
  }
  return "";
}

namespace detail::interop {
inline constexpr char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

[[noreturn]] inline void npy_fail(const std::filesystem::path& path, const std::string& what) {
  throw io_error("tessera: npy " + path.string() + ": " + what);
}

/// The dict literal numpy writes, parsed strictly: the three keys once each, in any order, with a trailing comma
/// allowed.
class npy_dict_parser {
 public:
  npy_dict_parser(std::string_view s, const std::filesystem::path& path) : p_(s.data()), end_(s.data() + s.size()), path_(path) {}
  void parse(npy_header& h) {
    bool have_descr = false, have_order = false, have_shape = false;
    ws();
    expect('{');
    while (true) {
      ws();
      if (peek() == '}') break;
      const std::string key = quoted();
      ws();
      expect(':');
      ws();
      if (key == "descr" && !have_descr) {
        h.descr = quoted();
        have_descr = true;
      } else if (key == "fortran_order" && !have_order) {
        if (word("True")) fail("fortran_order is True: tessera reads C order only (save numpy.ascontiguousarray(a))");
        if (!word("False")) fail("fortran_order is neither True nor False");
        have_order = true;
      } else if (key == "shape" && !have_shape) {
        shape(h.shape);
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "' in the header (it holds descr, fortran_order and shape, once each)");
      }
      ws();
      if (peek() == ',') {
        ++p_;
        continue;
      }
      ws();
      if (peek() != '}') fail("',' or '}' expected in the header dict");
    }
    ++p_;
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n')) ++p_;
    if (p_ != end_) fail("bytes after the header dict");
    if (!have_descr || !have_order || !have_shape) fail("the header dict lacks descr, fortran_order or shape");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { npy_fail(path_, what); }
  char peek() const { return p_ == end_ ? '\0' : *p_; }
  void ws() {
    while (p_ != end_ && *p_ == ' ') ++p_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("'") + c + "' expected in the header dict");
    ++p_;
  }
  bool word(std::string_view w) {
    if (std::size_t(end_ - p_) < w.size() || std::string_view(p_, w.size()) != w) return false;
    p_ += w.size();
    return true;
  }
  std::string quoted() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("a quoted string expected in the header dict");
    ++p_;
    std::string s;
    while (peek() != q) {
      if (p_ == end_ || *p_ == '\\' || *p_ == '\n') fail("a malformed string in the header dict");
      s += *p_++;
    }
    ++p_;
    return s;
  }
  void shape(std::vector<index_t>& out) {
    expect('(');
    ws();
    bool comma = true;
    while (peek() != ')') {
      if (!comma) fail("',' expected between the extents of shape");
      if (peek() < '0' || peek() > '9') fail("shape holds something other than an extent >= 0");
      std::uint64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const unsigned d = unsigned(*p_++ - '0');
        if (v > (std::uint64_t(INT64_MAX) - d) / 10) fail("an extent of shape is too large");
        v = v * 10 + d;
      }
      out.push_back(index_t(v));
      if (out.size() > std::size_t(max_rank)) fail("rank above tessera's " + std::to_string(max_rank));
      ws();
      comma = peek() == ',';
      if (comma) ++p_;
      ws();
    }
    if (out.size() == 1 && !comma) fail("a one-extent shape is written (n,)");
    ++p_;
  }
  const char* p_;
  const char* end_;
  const std::filesystem::path& path_;
};

inline bool npy_dtype_from_descr(const std::string& d, tensor_dtype& out) {
  if (d.size() != 3) return false;
  const char order = d[0];
  const std::string code = d.substr(1);
  const bool one_byte = code == "i1" || code == "u1" || code == "b1";
  if (!(order == '<' || order == '=' || (order == '|' && one_byte))) return false;
  if (code == "f4") out = tensor_dtype::f32;
  else if (code == "f8") out = tensor_dtype::f64;
  else if (code == "i1") out = tensor_dtype::i8;
  else if (code == "u1") out = tensor_dtype::u8;
  else if (code == "i4") out = tensor_dtype::i32;
  else if (code == "i8") out = tensor_dtype::i64;
  else if (code == "b1") out = tensor_dtype::boolean;
  else return false;
  return true;
}

/// Parse the header of a whole file's bytes, and check that the data is exactly what the shape needs.
inline npy_header parse_npy(const std::vector<unsigned char>& b, const std::filesystem::path& path) {
  npy_header h;
  if (b.size() < 10 || std::memcmp(b.data(), npy_magic, 6) != 0)
    npy_fail(path, b.size() < 10 ? "truncated: " + std::to_string(b.size()) + " bytes, fewer than a header needs"
                                 : "not an .npy file (it does not start with \"\\x93NUMPY\")");
  h.major = b[6];
  h.minor = b[7];
  if (h.major < 1 || h.major > 3 || h.minor != 0)
    npy_fail(path, "format version " + std::to_string(h.major) + "." + std::to_string(h.minor) +
                       " is not supported (tessera reads 1.0, 2.0 and 3.0)");
  const std::size_t len_bytes = h.major == 1 ? 2 : 4;
  if (b.size() < 8 + len_bytes) npy_fail(path, "truncated inside the header length");
  const std::uint64_t len = h.major == 1 ? get_le<std::uint16_t>(b.data() + 8) : get_le<std::uint32_t>(b.data() + 8);
  h.data_offset = 8 + len_bytes;
  if (len > b.size() - h.data_offset)
    npy_fail(path, "truncated: the header length says " + std::to_string(len) + " bytes, " +
                       std::to_string(b.size() - h.data_offset) + " follow");
  const std::string_view text(reinterpret_cast<const char*>(b.data() + h.data_offset), std::size_t(len));
  h.data_offset += std::size_t(len);
  if (text.empty() || text.back() != '\n') npy_fail(path, "the header does not end with a newline");
  npy_dict_parser(text, path).parse(h);
  if (!npy_dtype_from_descr(h.descr, h.dtype))
    npy_fail(path, "descr '" + h.descr +
                       "' is not supported (tessera reads '<f4', '<f8', '|i1', '|u1', '<i4', '<i8', '|b1'; "
                       "little-endian only: a.astype(a.dtype.newbyteorder('<')))");
  const std::size_t elem = tensor_dtype_size(h.dtype);
  std::uint64_t count = 0;
  if (!element_count(h.shape, elem, count))
    npy_fail(path, "shape " + format_index_list(h.shape) + " of '" + h.descr + "' is too large (more than 2^63 bytes)");
  const std::uint64_t have = b.size() - h.data_offset;
  if (have != count * elem)  // (element_count keeps count * elem below 2^63)
    npy_fail(path, "shape " + format_index_list(h.shape) + " of '" + h.descr + "' needs " + std::to_string(count * elem) +
                       " bytes of data, the file has " + std::to_string(have) + (have < count * elem ? " (truncated)" : ""));
  if (h.dtype == tensor_dtype::boolean)
    for (std::uint64_t i = 0; i < count; ++i)
      if (b[h.data_offset + i] > 1)
        npy_fail(path, "bool element " + std::to_string(i) + " is the byte " + std::to_string(b[h.data_offset + i]) +
                           ", not 0 or 1");
  return h;
}

inline std::vector<unsigned char> npy_file_bytes(const std::filesystem::path& path) {
  return read_whole_file(path, UINT64_MAX, [&](const std::string& m) { npy_fail(path, m); });
}

template <class T>
constexpr void npy_check_type() {
  static_assert(!std::is_same_v<std::remove_const_t<T>, bfloat16>,
                "tessera: .npy has no bfloat16 type: convert to float first (tessera::cast<float>(x)) or use safetensors");
}

/// The header bytes numpy writes for a dtype and shape (version 1.0, or 2.0 when longer than 65535 bytes).
inline std::vector<unsigned char> npy_prefix(tensor_dtype d, const std::vector<index_t>& shape) {
  std::string dict = std::string("{'descr': '") + npy_descr(d) + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  dict += shape.size() == 1 ? ",), }" : "), }";
  const bool v2 = 10 + dict.size() + 1 > 65535;
  const std::size_t pre = v2 ? 12 : 10;
  std::size_t total = pre + dict.size() + 1;
  total = (total + 63) / 64 * 64;
  dict.append(total - pre - dict.size() - 1, ' ');
  dict += '\n';
  std::vector<unsigned char> out(pre + dict.size());
  std::memcpy(out.data(), npy_magic, 6);
  out[6] = v2 ? 2 : 1;
  out[7] = 0;
  if (v2) store_le<std::uint32_t>(out.data() + 8, std::uint32_t(dict.size()));
  else store_le<std::uint16_t>(out.data() + 8, std::uint16_t(dict.size()));
  std::memcpy(out.data() + pre, dict.data(), dict.size());
  return out;
}

template <class T>
void npy_check_fit(const npy_header& h, const std::vector<index_t>& want, const std::filesystem::path& path,
                   const char* note = "") {
  if (h.dtype != tensor_dtype_of<T>())
    npy_fail(path, "the file holds '" + h.descr + "' (" + tensor_dtype_name(h.dtype) + ") of shape " + format_index_list(h.shape) +
                       " but the destination is " + type_name<T>() + " of shape " + format_index_list(want) + note);
  if (h.shape != want)
    npy_fail(path, "the file holds shape " + format_index_list(h.shape) + " but the destination has shape " + format_index_list(want) + note);
}
}  // namespace detail::interop

/// The header of a .npy file (the whole file is checked: dtype, shape, data length).
inline npy_header read_npy_header(const std::filesystem::path& path) {
  return detail::interop::parse_npy(detail::interop::npy_file_bytes(path), path);
}

/// A tensor (a cuda tensor: through a host copy) as a .npy file, written atomically.
template <Element T, ShapeType S, Policy P>
void save_npy(const std::filesystem::path& path, const Tensor<T, S, P>& t) {
  detail::interop::npy_check_type<T>();
  auto out = detail::interop::npy_prefix(tensor_dtype_of<T>(), detail::to_index_vector(t.dims()));
  const auto data = detail::interop::host_bytes(t);
  out.insert(out.end(), data.begin(), data.end());
  detail::interop::write_atomically(path, out, "npy");
}
/// A host view of any strides as a .npy file (C order), written atomically.
template <class T, ShapeType S, Policy P>
void save_npy(const std::filesystem::path& path, const View<T, S, P>& v) {
  detail::interop::npy_check_type<T>();
  auto out = detail::interop::npy_prefix(tensor_dtype_of<std::remove_const_t<T>>(), detail::to_index_vector(v.dims()));
  const auto data = detail::interop::host_bytes(v);
  out.insert(out.end(), data.begin(), data.end());
  detail::interop::write_atomically(path, out, "npy");
}

/// A .npy file into a tensor or a host view whose element type and extents are exactly the file's.
template <Element T, ShapeType S, Policy P>
void load_npy_into(const std::filesystem::path& path, Tensor<T, S, P>& t) {
  detail::interop::npy_check_type<T>();
  const auto b = detail::interop::npy_file_bytes(path);
  const auto h = detail::interop::parse_npy(b, path);
  detail::interop::npy_check_fit<T>(h, detail::to_index_vector(t.dims()), path);
  detail::interop::bytes_into(b.data() + h.data_offset, t);
}
template <class T, ShapeType S, Policy P>
void load_npy_into(const std::filesystem::path& path, const View<T, S, P>& v) {
  detail::interop::npy_check_type<T>();
  const auto b = detail::interop::npy_file_bytes(path);
  const auto h = detail::interop::parse_npy(b, path);
  detail::interop::npy_check_fit<std::remove_const_t<T>>(h, detail::to_index_vector(v.dims()), path);
  detail::interop::bytes_into(b.data() + h.data_offset, v);
}

/// A .npy file as a new tensor: element type T, rank S's, S's static extents (dynamic ones are the file's).
template <Element T, ShapeType S, Policy P = cpu>
Tensor<T, S, P> load_npy(const std::filesystem::path& path) {
  detail::interop::npy_check_type<T>();
  const auto b = detail::interop::npy_file_bytes(path);
  const auto h = detail::interop::parse_npy(b, path);
  std::vector<index_t> want(S::extents.begin(), S::extents.end());
  if (h.shape.size() == want.size())
    for (std::size_t i = 0; i < want.size(); ++i)
      if (want[i] == dyn) want[i] = h.shape[i];
  detail::interop::npy_check_fit<T>(h, want, path, " (-1 = dyn)");
  dims_t<S::rank> d{};
  for (int i = 0; i < S::rank; ++i) d[i] = h.shape[std::size_t(i)];
  Tensor<T, S, P> t(d);
  detail::interop::bytes_into(b.data() + h.data_offset, t);
  return t;
}

}  // namespace tessera
