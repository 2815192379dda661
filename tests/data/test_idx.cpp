// IDX files: small files written here (plain and gzip) read back against values computed by hand; every malformed
// case throws io_error naming the file; the Fashion-MNIST locator; the real Fashion-MNIST files when installed.
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <tessera/core/random.hpp>
#include <tessera/data/idx.hpp>
#include <unistd.h>
#include <vector>

#include "file_support.hpp"

namespace ts = tessera;
namespace fs = std::filesystem;
using Catch::Contains;
using bytes = std::vector<unsigned char>;

namespace {
using tst::temp_dir;
using tst::read_file;
using tst::write_file;
using tst::write_gzip;

std::string path_string(const fs::path& p) { return p.string(); }

/// An IDX header: two zero bytes, the type code, the number of dimensions, each dimension big-endian.
bytes idx_header_bytes(unsigned char type, const std::vector<std::uint32_t>& dims) {
  bytes b = {0, 0, type, static_cast<unsigned char>(dims.size())};
  for (auto d : dims) {
    b.push_back(static_cast<unsigned char>(d >> 24));
    b.push_back(static_cast<unsigned char>(d >> 16));
    b.push_back(static_cast<unsigned char>(d >> 8));
    b.push_back(static_cast<unsigned char>(d));
  }
  return b;
}
bytes cat(bytes a, const bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
/// Pixel k of the test images: 51 is odd, so 256 consecutive pixels take every value 0..255 once; 0 at k = 0, 255 at k = 5.
unsigned char pixel(int k) { return static_cast<unsigned char>((k * 51) % 256); }

bytes image_file(int n, int rows, int cols) {
  bytes data;
  for (int k = 0; k < n * rows * cols; ++k) data.push_back(pixel(k));
  return cat(idx_header_bytes(0x08, {std::uint32_t(n), std::uint32_t(rows), std::uint32_t(cols)}), data);
}
bytes label_file(const std::vector<unsigned char>& labels) {
  return cat(idx_header_bytes(0x08, {std::uint32_t(labels.size())}), labels);
}

}  // namespace

TEST_CASE("uint8 images and labels, plain and gzip, read back byte for byte", "[idx]") {
  temp_dir dir("idx_read");
  const int n = 3, rows = 2, cols = 5;
  const bytes img = image_file(n, rows, cols);
  REQUIRE(img.size() == 16 + 30);
  write_file(dir / "img.idx", img);
  write_gzip(dir / "img.idx.gz", img);
  const std::vector<unsigned char> labs = {7, 0, 9, 3, 3, 1, 8};
  write_file(dir / "lab.idx", label_file(labs));
  write_gzip(dir / "lab.gz", label_file(labs));  // gzip is detected by content, not by the name

  for (const char* name : {"img.idx", "img.idx.gz"}) {
    INFO(name);
    const auto h = ts::read_idx_header(dir / name);
    CHECK(h.type == ts::idx_type::u8);
    CHECK(h.dims == std::vector<ts::index_t>{3, 2, 5});
    CHECK(h.magic() == 0x00000803u);

    const auto a = ts::read_idx<std::uint8_t>(dir / name);
    REQUIRE(a.dims == std::vector<ts::index_t>{3, 2, 5});
    REQUIRE(a.size() == 30);
    for (int k = 0; k < 30; ++k) CHECK(a.data[k] == pixel(k));

    const auto x = ts::load_idx_images(dir / name);
    REQUIRE(x.dims() == ts::dims_t<4>{3, 1, 2, 5});
    for (int i = 0; i < n; ++i)
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) CHECK(x(i, 0, r, c) == float(pixel(i * 10 + r * 5 + c)) / 255.0f);
    // the ends of [0, 1]: pixel 0 is 0, pixel 5 (image 0, row 1, column 0) is 255; pixel 6 is 306 - 256 = 50
    CHECK(x(0, 0, 0, 0) == 0.0f);
    CHECK(x(0, 0, 1, 0) == 1.0f);
    CHECK(x(0, 0, 1, 1) == 50.0f / 255.0f);

    const auto z = ts::load_idx_images(dir / name, {0.5f, 0.25f});
    for (int k = 0; k < 30; ++k) CHECK(z.data()[k] == Approx((float(pixel(k)) / 255.0f - 0.5f) / 0.25f).margin(1e-6));
  }
  for (const char* name : {"lab.idx", "lab.gz"}) {
    INFO(name);
    const auto y = ts::load_idx_labels(dir / name);
    static_assert(std::is_same_v<decltype(y), const ts::Tensor<std::int32_t, ts::Shape<ts::dyn>>>);
    REQUIRE(y.dim(0) == 7);
    for (int i = 0; i < 7; ++i) CHECK(y(i) == labs[i]);
    const auto y64 = ts::load_idx_labels<std::int64_t>(dir / name);
    CHECK(y64(2) == 9);
  }
  write_file(dir / "lab3.idx", label_file({1, 2, 3}));
  const auto d = ts::load_idx_dataset(dir / "img.idx.gz", dir / "lab3.idx");
  CHECK(d.size() == 3);
  CHECK(d.labels(2) == 3);
  CHECK(d.images(2, 0, 1, 4) == float(pixel(29)) / 255.0f);
}

TEST_CASE("every IDX element type, big-endian on disk", "[idx]") {
  temp_dir dir("idx_types");
  // int8 [2, 2]: 0x80 = -128, 0x7f = 127, 0xff = -1, 0x00
  write_file(dir / "i8", cat(idx_header_bytes(0x09, {2, 2}), {0x80, 0x7f, 0xff, 0x00}));
  const auto a = ts::read_idx<std::int8_t>(dir / "i8");
  CHECK(a.dims == std::vector<ts::index_t>{2, 2});
  CHECK(a.data == std::vector<std::int8_t>{-128, 127, -1, 0});

  // int16 [3]: 0xfffe = -2, 0x0102 = 258, 0x8000 = -32768
  write_gzip(dir / "i16.gz", cat(idx_header_bytes(0x0B, {3}), {0xff, 0xfe, 0x01, 0x02, 0x80, 0x00}));
  CHECK(ts::read_idx<std::int16_t>(dir / "i16.gz").data == std::vector<std::int16_t>{-2, 258, -32768});

  // int32 [2]: 0x01020304 = 16909060, 0xfffffffd = -3
  write_file(dir / "i32", cat(idx_header_bytes(0x0C, {2}), {0x01, 0x02, 0x03, 0x04, 0xff, 0xff, 0xff, 0xfd}));
  CHECK(ts::read_idx<std::int32_t>(dir / "i32").data == std::vector<std::int32_t>{16909060, -3});

  // float32 [1, 2]: 0x3fc00000 = 1.5, 0xc1200000 = -10
  write_file(dir / "f32", cat(idx_header_bytes(0x0D, {1, 2}), {0x3f, 0xc0, 0x00, 0x00, 0xc1, 0x20, 0x00, 0x00}));
  CHECK(ts::read_idx<float>(dir / "f32").data == std::vector<float>{1.5f, -10.0f});

  // float64 [1]: 0xbfd0000000000000 = -0.25
  write_gzip(dir / "f64.gz", cat(idx_header_bytes(0x0E, {1}), {0xbf, 0xd0, 0, 0, 0, 0, 0, 0}));
  CHECK(ts::read_idx<double>(dir / "f64.gz").data == std::vector<double>{-0.25});

  // an empty array is a valid file
  write_file(dir / "empty", idx_header_bytes(0x08, {0, 28, 28}));
  CHECK(ts::load_idx_images(dir / "empty").dims() == ts::dims_t<4>{0, 1, 28, 28});
}

TEST_CASE("gzip data larger than the reader's chunk reads back whole; cut short, it is truncated", "[idx]") {
  temp_dir dir("idx_chunks");
  // int32 [3, 100001]: 1200012 bytes, more than one 1 MiB chunk and not a multiple of it; element k is k * 7 - 5
  const int n = 3 * 100001;
  bytes b = idx_header_bytes(0x0C, {3, 100001});
  for (int k = 0; k < n; ++k) {
    const auto v = static_cast<std::uint32_t>(std::int32_t(k * 7 - 5));
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
  }
  REQUIRE(b.size() - 12 > (std::size_t(1) << 20));
  write_gzip(dir / "big.gz", b);
  const auto a = ts::read_idx<std::int32_t>(dir / "big.gz");
  CHECK(a.dims == std::vector<ts::index_t>{3, 100001});
  REQUIRE(a.size() == n);
  int wrong = 0;
  for (int k = 0; k < n; ++k) wrong += a.data[std::size_t(k)] != k * 7 - 5;
  CHECK(wrong == 0);
  // the data cut inside the second chunk, and 8 bytes too many
  write_gzip(dir / "cut.gz", bytes(b.begin(), b.end() - 100000));
  CHECK_THROWS_WITH(ts::read_idx<std::int32_t>(dir / "cut.gz"),
                    Contains(path_string(dir / "cut.gz")) && Contains("expected 1200012 bytes of data") &&
                        Contains("found 1100012"));
  write_gzip(dir / "long.gz", cat(b, {1, 2, 3, 4, 5, 6, 7, 8}));
  CHECK_THROWS_WITH(ts::read_idx<std::int32_t>(dir / "long.gz"), Contains("size mismatch") && Contains("holds 1200020"));
}

TEST_CASE("malformed IDX files throw io_error naming the file and the fault", "[idx][errors]") {
  temp_dir dir("idx_bad");
  auto path = [&](const std::string& name) { return (dir / name).string(); };

  // missing file, a directory
  CHECK_THROWS_AS(ts::read_idx<std::uint8_t>(dir / "nope"), ts::io_error);
  CHECK_THROWS_WITH(ts::read_idx<std::uint8_t>(dir / "nope"),
                    Contains(path("nope")) && Contains("cannot open") && Contains("No such file"));
  CHECK_THROWS_WITH(ts::load_idx_images(dir.path), Contains(dir.path.string()) && Contains("directory"));

  // empty file, a header cut inside the dimensions
  write_file(dir / "empty", {});
  CHECK_THROWS_WITH(ts::load_idx_labels(dir / "empty"), Contains(path("empty")) && Contains("truncated header") &&
                                                            Contains("the file is empty"));
  write_file(dir / "short_head", {0, 0, 8, 3, 0, 0, 0, 5, 0, 0});
  CHECK_THROWS_WITH(ts::load_idx_images(dir / "short_head"),
                    Contains(path("short_head")) && Contains("truncated header: 3 dimensions need 16 bytes of header, found 10"));

  // wrong magic, unknown type code, no dimensions
  write_file(dir / "magic", {0x1f, 0x00, 0x08, 0x01, 0, 0, 0, 1, 5});
  CHECK_THROWS_WITH(ts::load_idx_labels(dir / "magic"),
                    Contains(path("magic")) && Contains("bad magic number 0x1F000801"));
  write_file(dir / "type", cat(idx_header_bytes(0x07, {1}), {5}));
  CHECK_THROWS_WITH(ts::read_idx<std::uint8_t>(dir / "type"),
                    Contains(path("type")) && Contains("unknown type code 0x07"));
  write_file(dir / "nodims", {0, 0, 8, 0, 5});
  CHECK_THROWS_WITH(ts::read_idx<std::uint8_t>(dir / "nodims"), Contains(path("nodims")) && Contains("0 dimensions"));

  // dimensions that describe more data than any file holds: refused before anything is allocated
  write_gzip(dir / "huge.gz", cat(idx_header_bytes(0x08, {0xffffffffu, 0xffffffffu, 2}), {1, 2, 3}));
  CHECK_THROWS_WITH(ts::load_idx_images(dir / "huge.gz"),
                    Contains(path("huge.gz")) && Contains("dimensions [4294967295, 4294967295] describe more than 2^62 bytes"));
  // a zero extent does not excuse the others: a tensor of these extents would overflow its strides
  write_file(dir / "zero_huge", idx_header_bytes(0x08, {0, 0xffffffffu, 0xffffffffu, 0xffffffffu}));
  CHECK_THROWS_WITH(ts::read_idx_header(dir / "zero_huge"),
                    Contains(path("zero_huge")) && Contains("[0, 4294967295, 4294967295, 4294967295]") &&
                        Contains("more than 2^62 bytes"));
  write_file(dir / "zero_images", idx_header_bytes(0x08, {0, 0xffffffffu, 0xffffffffu}));
  CHECK_THROWS_WITH(ts::load_idx_images(dir / "zero_images"),
                    Contains(path("zero_images")) && Contains("[0, 4294967295, 4294967295]"));
  // a header built by hand: its size() is checked too
  ts::idx_header by_hand{ts::idx_type::u8, {0xffffffffll, 0xffffffffll, 0xffffffffll}};
  CHECK_THROWS_AS(by_hand.size(), std::length_error);
  CHECK_THROWS_WITH(by_hand.size(), Contains("[4294967295, 4294967295, 4294967295]"));
  // a plausible header over too little gzip data: the buffer grows with the data, not with the header's claim
  write_gzip(dir / "claims.gz", cat(idx_header_bytes(0x08, {1000000000}), {1, 2, 3}));
  CHECK_THROWS_WITH(ts::load_idx_labels(dir / "claims.gz"),
                    Contains(path("claims.gz")) && Contains("expected 1000000000 bytes of data") && Contains("found 3"));

  // the type the caller asks for differs from the file's
  write_file(dir / "f32", cat(idx_header_bytes(0x0D, {1}), {0x3f, 0x80, 0, 0}));
  CHECK_THROWS_WITH(ts::read_idx<std::uint8_t>(dir / "f32"),
                    Contains(path("f32")) && Contains("holds float32 elements (type code 0x0D), but uint8"));
  // an image file read as labels and a label file read as images
  write_file(dir / "img", image_file(2, 3, 3));
  write_file(dir / "lab", label_file({1, 2}));
  CHECK_THROWS_WITH(ts::load_idx_labels(dir / "img"),
                    Contains(path("img")) && Contains("magic number 0x00000803") && Contains("not that of a label file"));
  CHECK_THROWS_WITH(ts::load_idx_images(dir / "lab"),
                    Contains(path("lab")) && Contains("magic number 0x00000801") && Contains("not that of an image file"));
  CHECK_THROWS_WITH(ts::load_idx_images(dir / "f32"), Contains("magic number 0x00000D01"));

  // truncated data: the dimensions of MNIST's training images with only 1000 bytes after the header
  bytes cut = idx_header_bytes(0x08, {60000, 28, 28});
  for (int k = 0; k < 1000; ++k) cut.push_back(pixel(k));
  write_file(dir / "cut", cut);
  write_gzip(dir / "cut.gz", cut);
  for (const char* name : {"cut", "cut.gz"}) {
    CHECK_THROWS_WITH(ts::load_idx_images(dir / name),
                      Contains(path(name)) && Contains("truncated: expected 47040000 bytes of data") &&
                          Contains("found 1000") && Contains("[60000, 28, 28]"));
  }
  // the dimensions' product does not match the data: 2 x 3 x 3 = 18 bytes wanted, 25 there
  bytes extra = image_file(2, 3, 3);
  for (int k = 0; k < 7; ++k) extra.push_back(0);
  write_file(dir / "extra", extra);
  write_gzip(dir / "extra.gz", extra);
  for (const char* name : {"extra", "extra.gz"}) {
    CHECK_THROWS_WITH(ts::load_idx_images(dir / name),
                      Contains(path(name)) && Contains("size mismatch") && Contains("need 18 bytes of data") &&
                          Contains("holds 25"));
  }
  // a multi-byte type cut inside an element: 3 int32 need 12 bytes
  write_file(dir / "i32cut", cat(idx_header_bytes(0x0C, {3}), {0, 0, 0, 1, 0, 0, 0, 2, 0, 0}));
  CHECK_THROWS_WITH(ts::read_idx<std::int32_t>(dir / "i32cut"),
                    Contains(path("i32cut")) && Contains("expected 12 bytes of data") && Contains("found 10"));

  // a gzip file cut short: the compressed stream ends inside the data
  bytes big = idx_header_bytes(0x08, {20000});
  std::uint64_t s = 12345;
  for (int k = 0; k < 20000; ++k) big.push_back(static_cast<unsigned char>(ts::splitmix64(s)));  // incompressible
  write_gzip(dir / "whole.gz", big);
  bytes gz = read_file(dir / "whole.gz");
  REQUIRE(gz.size() > 20000);
  write_file(dir / "short.gz", bytes(gz.begin(), gz.begin() + 12000));
  CHECK(ts::load_idx_labels(dir / "whole.gz").dim(0) == 20000);
  CHECK_THROWS_WITH(ts::load_idx_labels(dir / "short.gz"),
                    Contains(path("short.gz")) && Contains("truncated: expected 20000 bytes of data") &&
                        Contains("the gzip stream is cut short"));
  // a corrupt gzip file: one bit of the stored CRC32 (the trailer's first byte) flipped
  bytes bad = gz;
  bad[bad.size() - 8] ^= 0x01;
  write_file(dir / "crc.gz", bad);
  CHECK_THROWS_WITH(ts::load_idx_labels(dir / "crc.gz"),
                    Contains(path("crc.gz")) && Contains("gzip data is corrupt") && Contains("incorrect data check"));

  // images and labels that do not pair up
  write_file(dir / "lab3", label_file({1, 2, 3}));
  CHECK_THROWS_WITH(ts::load_idx_dataset(dir / "img", dir / "lab3"),
                    Contains(path("img")) && Contains(path("lab3")) && Contains("2 images but 3 labels"));
  CHECK_THROWS_AS(ts::load_idx_dataset(dir / "img", dir / "lab3"), ts::io_error);
  static_assert(std::is_base_of_v<std::runtime_error, ts::io_error>);

  // a normalisation that would divide by zero
  CHECK_THROWS_AS(ts::load_idx_images(dir / "img", {0.5f, 0.0f}), std::invalid_argument);
}

namespace {
/// Set an environment variable for the scope of a test, restoring the old value afterwards.
struct scoped_env {
  std::string name;
  std::optional<std::string> old;
  scoped_env(const char* n, const std::optional<std::string>& value) : name(n) {
    if (const char* v = std::getenv(n)) old = v;
    if (value) ::setenv(n, value->c_str(), 1);
    else ::unsetenv(n);
  }
  ~scoped_env() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};
}  // namespace

TEST_CASE("the Fashion-MNIST locator honours TESSERA_FASHION_MNIST_DIR", "[idx][fashion]") {
  temp_dir dir("idx_fashion");
  fs::create_directories(dir / "empty");
  write_file(dir / "train-images-idx3-ubyte", image_file(3, 2, 2));
  write_gzip(dir / "train-labels-idx1-ubyte.gz", label_file({0, 1, 2}));
  write_file(dir / "t10k-images-idx3-ubyte", image_file(2, 2, 2));
  write_file(dir / "t10k-labels-idx1-ubyte", label_file({9, 8}));
  {
    scoped_env env(ts::fashion_mnist_dir_env, dir.path.string());
    const auto f = ts::find_fashion_mnist();
    REQUIRE(f.has_value());
    CHECK(f->train_labels == dir / "train-labels-idx1-ubyte.gz");
    CHECK(f->test_images == dir / "t10k-images-idx3-ubyte");
    const auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test);
    CHECK(test.size() == 2);
    CHECK(test.labels(0) == 9);
    const auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train);
    CHECK(train.size() == 3);
    CHECK(train.labels(2) == 2);
  }
  {
    scoped_env env(ts::fashion_mnist_dir_env, (dir / "empty").string());
    CHECK_FALSE(ts::find_fashion_mnist().has_value());
    CHECK_THROWS_WITH(ts::locate_fashion_mnist(), Contains((dir / "empty").string()) &&
                                                      Contains("Fashion-MNIST not found") &&
                                                      Contains("TESSERA_FASHION_MNIST_DIR"));
  }
  // one of the four files missing
  fs::remove(dir / "t10k-labels-idx1-ubyte");
  CHECK_FALSE(ts::find_fashion_mnist_in(dir.path).has_value());
}

TEST_CASE("the real Fashion-MNIST files, when installed", "[idx][fashion]") {
  scoped_env env(ts::fashion_mnist_dir_env, std::nullopt);  // the default places only
  const auto files = ts::find_fashion_mnist();
  if (!files) {
    WARN("Fashion-MNIST is not installed in " << ts::fashion_mnist_debian_dir
                                              << " (Debian package dataset-fashion-mnist): test skipped");
    return;
  }
  const auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train);
  const auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test);
  REQUIRE(train.images.dims() == ts::dims_t<4>{60000, 1, 28, 28});
  REQUIRE(train.labels.dim(0) == 60000);
  REQUIRE(test.images.dims() == ts::dims_t<4>{10000, 1, 28, 28});
  REQUIRE(test.labels.dim(0) == 10000);

  // labels in 0..9, and both splits balanced: 6000 and 1000 of each class
  for (const auto* d : {&train, &test}) {
    std::vector<long> count(10, 0);
    bool in_range = true;
    for (ts::index_t i = 0; i < d->size(); ++i) {
      const auto l = d->labels(i);
      if (l < 0 || l > 9) in_range = false;
      else ++count[std::size_t(l)];
    }
    CHECK(in_range);
    for (int c = 0; c < 10; ++c) CHECK(count[std::size_t(c)] == d->size() / 10);
  }
  // the first labels as the files hold them (xxd of the decompressed files)
  const std::vector<int> train_first = {9, 0, 0, 3, 0, 2, 7, 2}, test_first = {9, 2, 1, 1, 6, 1, 4, 6};
  for (int i = 0; i < 8; ++i) {
    CHECK(train.labels(i) == train_first[std::size_t(i)]);
    CHECK(test.labels(i) == test_first[std::size_t(i)]);
  }
  // pixels in [0, 1]; the published normalisation constants are the training set's mean and deviation
  double sum = 0, sq = 0;
  float lo = 1, hi = 0;
  const float* p = train.images.data();
  for (ts::index_t i = 0; i < train.images.size(); ++i) {
    sum += p[i];
    sq += double(p[i]) * p[i];
    lo = std::min(lo, p[i]);
    hi = std::max(hi, p[i]);
  }
  const double n = double(train.images.size()), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  CHECK(lo == 0.0f);
  CHECK(hi == 1.0f);
  CHECK(mean == Approx(ts::fashion_mnist_normalization.mean).margin(1e-5));
  CHECK(sd == Approx(ts::fashion_mnist_normalization.stddev).margin(1e-5));
}
