// IDX files (the format of MNIST and Fashion-MNIST), plain or gzip-compressed, and a locator for the Fashion-MNIST
// files as Debian's dataset-fashion-mnist package installs them.
//
// An IDX file: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
// 0x0E float64), the number of dimensions, each dimension as a big-endian uint32, then the elements, row-major,
// big-endian. Images are 0x00000803 (uint8 [n, rows, cols]), labels 0x00000801 (uint8 [n]).
//
// Needs zlib (linked into tessera::tessera when CMake finds it).
#pragma once

#if !__has_include(<zlib.h>)
#error "tessera/data/idx.hpp needs zlib, and <zlib.h> was not found: install zlib's development files (Debian: apt-get install zlib1g-dev) and link ZLIB::ZLIB (tessera::tessera links it when CMake's find_package(ZLIB) succeeds)"
#endif
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/policy/planner.hpp"
#include "tessera/io/byte_order.hpp"
#include "tessera/io/error.hpp"

namespace tessera {

// ---- element types ----------------------------------------------------------------------------------------------

/// The type codes of IDX files.
enum class idx_type : std::uint8_t { u8 = 0x08, i8 = 0x09, i16 = 0x0B, i32 = 0x0C, f32 = 0x0D, f64 = 0x0E };

constexpr bool is_idx_type_code(std::uint8_t c) {
  return c == 0x08 || c == 0x09 || c == 0x0B || c == 0x0C || c == 0x0D || c == 0x0E;
}
constexpr const char* idx_type_name(idx_type t) {
  switch (t) {
    case idx_type::u8: return "uint8";
    case idx_type::i8: return "int8";
    case idx_type::i16: return "int16";
    case idx_type::i32: return "int32";
    case idx_type::f32: return "float32";
    case idx_type::f64: return "float64";
  }
  return "unknown";
}
constexpr std::size_t idx_type_size(idx_type t) {
  switch (t) {
    case idx_type::u8:
    case idx_type::i8: return 1;
    case idx_type::i16: return 2;
    case idx_type::i32:
    case idx_type::f32: return 4;
    case idx_type::f64: return 8;
  }
  return 0;
}

/// The IDX type code of a C++ element type (uint8_t, int8_t, int16_t, int32_t, float, double).
template <class T>
constexpr idx_type idx_type_of() {
  if constexpr (std::is_same_v<T, std::uint8_t>) return idx_type::u8;
  else if constexpr (std::is_same_v<T, std::int8_t>) return idx_type::i8;
  else if constexpr (std::is_same_v<T, std::int16_t>) return idx_type::i16;
  else if constexpr (std::is_same_v<T, std::int32_t>) return idx_type::i32;
  else if constexpr (std::is_same_v<T, float>) return idx_type::f32;
  else if constexpr (std::is_same_v<T, double>) return idx_type::f64;
  else static_assert(sizeof(T) == 0, "tessera: IDX files hold uint8, int8, int16, int32, float or double elements");
}

/// An IDX file's header: element type and dimensions.
struct idx_header {
  idx_type type = idx_type::u8;
  std::vector<index_t> dims;
  /// The first four bytes as one big-endian number (0x00000803 for MNIST images).
  std::uint32_t magic() const { return (std::uint32_t(type) << 8) | std::uint32_t(dims.size()); }
  /// The number of elements; throws std::length_error naming the dimensions if their product overflows index_t
  /// (a header from read_idx_header never does: it is refused first).
  index_t size() const;
};

/// The content of an IDX file: its dimensions and its elements in row-major order (in the host's byte order).
template <class T>
struct idx_array {
  std::vector<index_t> dims;
  std::vector<T> data;
  index_t size() const { return index_t(data.size()); }
};

namespace detail {

inline std::string idx_where(const std::filesystem::path& path) { return "tessera: IDX file " + path.string() + ": "; }

inline std::string hex(std::uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*X", digits, unsigned(v));
  return buf;
}

/// Bytes of a file, read directly or through zlib when the file starts with gzip's magic (1f 8b).
class idx_byte_source {
 public:
  explicit idx_byte_source(const std::filesystem::path& path) : path_(path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail("cannot open: it is a directory");
    file_ = std::fopen(path.c_str(), "rb");
    if (!file_) fail(std::string("cannot open: ") + std::strerror(errno));
    unsigned char magic[2] = {0, 0};
    const std::size_t got = std::fread(magic, 1, 2, file_);
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
      std::fclose(file_);
      file_ = nullptr;
      errno = 0;
      gz_ = gzopen(path.c_str(), "rb");
      if (!gz_) fail(std::string("cannot open as gzip: ") + (errno ? std::strerror(errno) : "out of memory"));
      gzbuffer(gz_, 1u << 17);
    } else {
      std::rewind(file_);
      const auto size = std::filesystem::file_size(path, ec);
      if (!ec) file_size_ = std::uint64_t(size);
    }
  }
  idx_byte_source(const idx_byte_source&) = delete;
  idx_byte_source& operator=(const idx_byte_source&) = delete;
  ~idx_byte_source() {
    if (file_) std::fclose(file_);
    if (gz_) gzclose(gz_);
  }

  bool gzip() const { return gz_ != nullptr; }
  /// The file's size for a plain file (known before reading); empty for gzip.
  std::optional<std::uint64_t> plain_size() const { return file_size_; }

  /// Read up to n bytes; fewer only at the end of the data. Throws on read errors and corrupt gzip data.
  std::size_t read(void* dst, std::size_t n) {
    auto* out = static_cast<unsigned char*>(dst);
    std::size_t total = 0;
    while (total < n) {
      if (gz_) {
        const unsigned chunk = unsigned(std::min<std::size_t>(n - total, std::size_t(1) << 30));
        const int got = gzread(gz_, out + total, chunk);
        if (got < 0) {
          int errnum = 0;
          const char* msg = gzerror(gz_, &errnum);
          fail(std::string("gzip data is corrupt (zlib: ") + (msg ? msg : "unknown error") + ")");
        }
        if (got == 0) break;
        total += std::size_t(got);
      } else {
        const std::size_t got = std::fread(out + total, 1, n - total, file_);
        if (got == 0) {
          if (std::ferror(file_)) fail(std::string("read error: ") + std::strerror(errno));
          break;
        }
        total += got;
      }
    }
    return total;
  }

  /// After a short gzip read: did the compressed stream itself end early?
  bool gzip_cut_short() const {
    if (!gz_) return false;
    int errnum = 0;
    gzerror(gz_, &errnum);
    return errnum == Z_BUF_ERROR;
  }

  /// Count the bytes left (reads them).
  std::uint64_t count_rest() {
    std::uint64_t n = 0;
    unsigned char buf[1 << 14];
    while (const std::size_t got = read(buf, sizeof buf)) n += got;
    return n;
  }

  [[noreturn]] void fail(const std::string& what) const { throw io_error(idx_where(path_) + what); }

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
  gzFile gz_ = nullptr;
  std::optional<std::uint64_t> file_size_;
};

inline std::uint32_t read_be32(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

/// Read and check the header; returns it with the header's length in bytes.
inline std::pair<idx_header, std::size_t> read_idx_header(idx_byte_source& src) {
  unsigned char head[4];
  const std::size_t got = src.read(head, 4);
  if (got < 4)
    src.fail("truncated header: expected at least 4 bytes (two zero bytes, type code, number of dimensions), found " +
             std::to_string(got) + (got == 0 ? " (the file is empty)" : ""));
  const std::uint32_t magic = read_be32(head);
  if (head[0] != 0 || head[1] != 0)
    src.fail("bad magic number " + hex(magic, 8) +
             ": an IDX file starts with two zero bytes, a type code and the number of dimensions (not an IDX file?)");
  if (!is_idx_type_code(head[2]))
    src.fail("unknown type code " + hex(head[2], 2) + " in magic number " + hex(magic, 8) +
             " (IDX type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)");
  if (head[3] == 0) src.fail("bad magic number " + hex(magic, 8) + ": 0 dimensions");
  idx_header h;
  h.type = idx_type(head[2]);
  const std::size_t nd = head[3];
  std::vector<unsigned char> raw(4 * nd);
  const std::size_t got_dims = src.read(raw.data(), raw.size());
  if (got_dims < raw.size())
    src.fail("truncated header: " + std::to_string(nd) + " dimensions need " + std::to_string(4 + 4 * nd) +
             " bytes of header, found " + std::to_string(4 + got_dims));
  h.dims.resize(nd);
  for (std::size_t i = 0; i < nd; ++i) h.dims[i] = index_t(read_be32(raw.data() + 4 * i));
  // Every dimension is below 2^32; their product must stay below 2^62 bytes. Zero extents count as 1 here: a
  // tensor of [0, 2^32 - 1, 2^32 - 1, 2^32 - 1] holds nothing, but its strides would still overflow.
  constexpr std::uint64_t limit = std::uint64_t(1) << 62;
  std::uint64_t bytes = idx_type_size(h.type);
  bool zero = false;
  for (std::size_t i = 0; i < nd; ++i) {
    const auto d = std::max<std::uint64_t>(std::uint64_t(h.dims[i]), 1);
    zero = zero || h.dims[i] == 0;
    if (bytes > limit / d)
      src.fail("dimensions " +
               format_index_list(zero ? h.dims : std::vector<index_t>(h.dims.begin(), h.dims.begin() + std::ptrdiff_t(i + 1))) +
               (zero ? ": their nonzero extents describe more than 2^62 bytes of " : " describe more than 2^62 bytes of ") +
               idx_type_name(h.type) + " data (corrupt header?)");
    bytes *= d;
  }
  return {std::move(h), 4 + 4 * nd};
}

template <class T>
void byteswap_in_place(std::vector<T>& v) {
  if constexpr (sizeof(T) > 1 && std::endian::native == std::endian::little) {
    for (auto& x : v) {
      unsigned char b[sizeof(T)];
      std::memcpy(b, &x, sizeof(T));
      for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
      std::memcpy(&x, b, sizeof(T));
    }
  }
}

/// Bytes read at a time when the data's size is not known before reading (gzip, pipes).
inline constexpr std::size_t idx_chunk_bytes = std::size_t(1) << 20;

/// Read the elements after the header: exactly the number the dimensions give, and nothing after them.
/// Memory: a plain file's size is checked against the dimensions before the buffer is allocated; otherwise the data
/// is read in chunks of idx_chunk_bytes, so a header's claim costs at most one chunk more than the data that is there.
template <class T>
std::vector<T> read_idx_data(idx_byte_source& src, const idx_header& h, std::size_t header_bytes) {
  const std::uint64_t count = std::uint64_t(h.size());
  const std::uint64_t need = count * sizeof(T);  // below 2^62: read_idx_header checked
  const std::string what = "dims " + format_index_list(h.dims) + " of " + idx_type_name(h.type);
  if (auto size = src.plain_size()) {  // plain file: the size is known before reading anything
    const std::uint64_t have = *size >= header_bytes ? *size - header_bytes : 0;
    if (have < need)
      src.fail("truncated: expected " + std::to_string(need) + " bytes of data (" + what + "), found " +
               std::to_string(have));
    if (have > need)
      src.fail("size mismatch: " + what + " need " + std::to_string(need) + " bytes of data, but the file holds " +
               std::to_string(have) + " after its " + std::to_string(header_bytes) + "-byte header");
  }
  std::vector<T> data;
  std::uint64_t filled = 0;  // bytes
  if (src.plain_size() || need <= idx_chunk_bytes) {  // the whole buffer at once: the file holds it, or it is small
    data.resize(std::size_t(count));
    while (filled < need) {
      const std::size_t got = src.read(reinterpret_cast<unsigned char*>(data.data()) + filled, std::size_t(need - filled));
      if (got == 0) break;
      filled += got;
    }
  } else {  // chunks as the data arrives, then one buffer of the size the data turned out to have
    std::vector<std::unique_ptr<unsigned char[]>> chunks;
    while (filled < need) {
      const std::size_t n = std::size_t(std::min<std::uint64_t>(idx_chunk_bytes, need - filled));
      chunks.push_back(std::make_unique_for_overwrite<unsigned char[]>(n));
      const std::size_t got = src.read(chunks.back().get(), n);
      filled += got;
      if (got < n) break;
    }
    if (filled == need) {
      data.resize(std::size_t(count));
      auto* out = reinterpret_cast<unsigned char*>(data.data());
      for (std::size_t i = 0; i < chunks.size(); ++i, out += idx_chunk_bytes)
        std::memcpy(out, chunks[i].get(),
                    std::size_t(std::min<std::uint64_t>(idx_chunk_bytes, need - i * std::uint64_t(idx_chunk_bytes))));
    }
  }
  if (filled < need)
    src.fail("truncated: expected " + std::to_string(need) + " bytes of data (" + what + "), found " +
             std::to_string(filled) + (src.gzip_cut_short() ? " (the gzip stream is cut short)" : ""));
  if (src.gzip()) {  // also makes zlib check the gzip trailer (CRC and length)
    const std::uint64_t extra = src.count_rest();
    if (extra)
      src.fail("size mismatch: " + what + " need " + std::to_string(need) + " bytes of data, but the file holds " +
               std::to_string(need + extra) + " after its " + std::to_string(header_bytes) + "-byte header");
  }
  byteswap_in_place(data);
  return data;
}

}  // namespace detail

inline index_t idx_header::size() const {
  index_t n = 1;
  for (auto d : dims)
    if (__builtin_mul_overflow(n, d, &n))
      throw std::length_error("tessera: IDX dimensions " + detail::format_index_list(dims) +
                              ": their product overflows the element count (index_t)");
  return n;
}

/// The header of an IDX file (plain or gzip): type and dimensions. Throws io_error if it is malformed.
inline idx_header read_idx_header(const std::filesystem::path& path) {
  detail::idx_byte_source src(path);
  return detail::read_idx_header(src).first;
}

/// Read a whole IDX file (plain or gzip) whose elements are of type T (uint8_t, int8_t, int16_t, int32_t, float,
/// double: the file's type code must be T's). Throws io_error naming the file if it is missing, malformed,
/// truncated, of another element type, or longer than its dimensions say.
template <class T>
idx_array<T> read_idx(const std::filesystem::path& path) {
  constexpr idx_type want = idx_type_of<T>();
  detail::idx_byte_source src(path);
  auto [h, header_bytes] = detail::read_idx_header(src);
  if (h.type != want)
    src.fail("holds " + std::string(idx_type_name(h.type)) + " elements (type code " + detail::hex(std::uint32_t(h.type), 2) +
             "), but " + idx_type_name(want) + " (type code " + detail::hex(std::uint32_t(want), 2) + ") was asked for");
  idx_array<T> out;
  out.data = detail::read_idx_data<T>(src, h, header_bytes);
  out.dims = std::move(h.dims);
  return out;
}

// ---- images and labels ------------------------------------------------------------------------------------------

/// x -> (x / 255 - mean) / stddev. The default leaves pixels in [0, 1].
struct image_normalization {
  float mean = 0.0f;
  float stddev = 1.0f;
};
/// Mean and standard deviation of the Fashion-MNIST training images scaled to [0, 1] (computed over all 60000).
inline constexpr image_normalization fashion_mnist_normalization{0.28604f, 0.35302f};

/// Images as load_idx_images returns them: float [n, 1, rows, cols].
using idx_images_t = Tensor<float, Shape<dyn, 1, dyn, dyn>>;
/// Labels as load_idx_dataset returns them: int32 [n].
using idx_labels_t = Tensor<std::int32_t, Shape<dyn>>;

/// An IDX image file (magic 0x00000803: uint8 [n, rows, cols]) as float [n, 1, rows, cols], each pixel
/// (p / 255 - norm.mean) / norm.stddev. Throws io_error naming the file when it is not such a file.
inline idx_images_t load_idx_images(const std::filesystem::path& path, image_normalization norm = {}) {
  if (!(norm.stddev > 0.0f) || !std::isfinite(norm.mean) || !std::isfinite(norm.stddev))
    throw std::invalid_argument("tessera: load_idx_images(" + path.string() + "): the standard deviation must be positive "
                                "and finite (got mean " + std::to_string(norm.mean) + ", stddev " +
                                std::to_string(norm.stddev) + ")");
  detail::idx_byte_source src(path);
  auto [h, header_bytes] = detail::read_idx_header(src);
  if (h.magic() != 0x00000803u)
    src.fail("magic number " + detail::hex(h.magic(), 8) + " (" + idx_type_name(h.type) + ", " +
             std::to_string(h.dims.size()) + " dimensions) is not that of an image file: expected 0x00000803 "
             "(uint8, 3 dimensions: images, rows, columns)");
  const auto pixels = detail::read_idx_data<std::uint8_t>(src, h, header_bytes);
  float lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = (float(v) / 255.0f - norm.mean) / norm.stddev;
  idx_images_t out(h.dims[0], h.dims[1], h.dims[2]);
  float* dst = out.data();
  for (std::size_t i = 0; i < pixels.size(); ++i) dst[i] = lut[pixels[i]];
  return out;
}

/// An IDX label file (magic 0x00000801: uint8 [n]) as a tensor of L (int32_t by default, or int64_t).
template <class L = std::int32_t>
Tensor<L, Shape<dyn>> load_idx_labels(const std::filesystem::path& path) {
  static_assert(std::is_same_v<L, std::int32_t> || std::is_same_v<L, std::int64_t> || std::is_same_v<L, std::uint8_t>,
                "tessera: load_idx_labels<L>: L must be int32_t, int64_t or uint8_t");
  detail::idx_byte_source src(path);
  auto [h, header_bytes] = detail::read_idx_header(src);
  if (h.magic() != 0x00000801u)
    src.fail("magic number " + detail::hex(h.magic(), 8) + " (" + idx_type_name(h.type) + ", " +
             std::to_string(h.dims.size()) + " dimensions) is not that of a label file: expected 0x00000801 "
             "(uint8, 1 dimension)");
  const auto labels = detail::read_idx_data<std::uint8_t>(src, h, header_bytes);
  Tensor<L, Shape<dyn>> out(h.dims[0]);
  for (std::size_t i = 0; i < labels.size(); ++i) out.data()[i] = L(labels[i]);
  return out;
}

/// Images and their labels.
struct idx_dataset {
  idx_images_t images;
  idx_labels_t labels;
  index_t size() const { return images.dim(0); }
};

/// An image file and its label file; throws io_error naming both files if their counts differ.
inline idx_dataset load_idx_dataset(const std::filesystem::path& images_path, const std::filesystem::path& labels_path,
                                    image_normalization norm = {}) {
  idx_dataset d{load_idx_images(images_path, norm), load_idx_labels<std::int32_t>(labels_path)};
  if (d.images.dim(0) != d.labels.dim(0))
    throw io_error("tessera: IDX files " + images_path.string() + " and " + labels_path.string() +
                   ": count mismatch: " + std::to_string(d.images.dim(0)) + " images but " +
                   std::to_string(d.labels.dim(0)) + " labels");
  return d;
}

// ---- Fashion-MNIST ------------------------------------------------------------------------------------------------

/// The ten classes of Fashion-MNIST, by label.
inline constexpr std::array<const char*, 10> fashion_mnist_classes = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/// The environment variable that names a directory holding the Fashion-MNIST files (overrides the default places).
inline constexpr const char* fashion_mnist_dir_env = "TESSERA_FASHION_MNIST_DIR";
/// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* fashion_mnist_debian_dir = "/usr/share/datasets/fashion-mnist";

struct fashion_mnist_files {
  std::filesystem::path train_images, train_labels, test_images, test_labels;
};

namespace detail {
inline std::optional<std::filesystem::path> find_idx_file(const std::filesystem::path& dir, const std::string& stem,
                                                          const std::string& kind) {
  // "train-images-idx3-ubyte" as distributed (and by Debian, gzipped); some copies use "train-images.idx3-ubyte".
  for (const auto& name : {stem + "-" + kind, stem + "." + kind})
    for (const char* ext : {"", ".gz"}) {
      std::error_code ec;
      const auto p = dir / (name + ext);
      if (std::filesystem::is_regular_file(p, ec)) return p;
    }
  return std::nullopt;
}
}  // namespace detail

/// The four Fashion-MNIST files in `dir` (each plain or .gz), or nothing if any is missing.
inline std::optional<fashion_mnist_files> find_fashion_mnist_in(const std::filesystem::path& dir) {
  auto tri = detail::find_idx_file(dir, "train-images", "idx3-ubyte");
  auto trl = detail::find_idx_file(dir, "train-labels", "idx1-ubyte");
  auto tei = detail::find_idx_file(dir, "t10k-images", "idx3-ubyte");
  auto tel = detail::find_idx_file(dir, "t10k-labels", "idx1-ubyte");
  if (!tri || !trl || !tei || !tel) return std::nullopt;
  return fashion_mnist_files{*tri, *trl, *tei, *tel};
}

/// The directories searched for Fashion-MNIST: $TESSERA_FASHION_MNIST_DIR alone when it is set (an explicit
/// choice is not second-guessed), otherwise Debian's /usr/share/datasets/fashion-mnist.
inline std::vector<std::filesystem::path> fashion_mnist_search_dirs() {
  if (const char* env = std::getenv(fashion_mnist_dir_env); env && *env) return {std::filesystem::path(env)};
  return {std::filesystem::path(fashion_mnist_debian_dir)};
}

/// The Fashion-MNIST files from the first search directory that holds all four, or nothing.
inline std::optional<fashion_mnist_files> find_fashion_mnist() {
  for (const auto& dir : fashion_mnist_search_dirs())
    if (auto f = find_fashion_mnist_in(dir)) return f;
  return std::nullopt;
}

/// Like find_fashion_mnist, but throws io_error saying where it looked and how to get the files.
inline fashion_mnist_files locate_fashion_mnist() {
  if (auto f = find_fashion_mnist()) return *f;
  std::string where;
  for (const auto& dir : fashion_mnist_search_dirs()) where += (where.empty() ? "" : ", ") + dir.string();
  throw io_error("tessera: Fashion-MNIST not found in " + where +
                 " (looked for train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                 "t10k-labels-idx1-ubyte, each plain or .gz): install Debian's dataset-fashion-mnist package, or set " +
                 fashion_mnist_dir_env + " to a directory that holds them");
}

enum class fashion_mnist_split { train, test };

/// The Fashion-MNIST training (60000) or test (10000) images and labels, located by locate_fashion_mnist().
inline idx_dataset load_fashion_mnist(fashion_mnist_split split, image_normalization norm = {}) {
  const auto f = locate_fashion_mnist();
  return split == fashion_mnist_split::train ? load_idx_dataset(f.train_images, f.train_labels, norm)
                                             : load_idx_dataset(f.test_images, f.test_labels, norm);
}

}  // namespace tessera
