// Checkpoints built by hand, byte by byte, with a valid length and CRC32 but hostile entries: extents whose element or
// byte count wraps around 2^64, bool bytes other than 0 and 1, strings of another rank. Each must be refused when
// the file is read, with an io_error naming the entry and its extents, before any tensor is made from it. Also the
// writer's side: a view whose extents overflow the byte count is refused with std::length_error.
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <tessera/io/checkpoint.hpp>
#include <vector>

#include "file_support.hpp"

namespace ts = tessera;
namespace fs = std::filesystem;
using Catch::Contains;
using ts::dyn;
using ts::index_t;
using ts::Shape;
using bytes = std::vector<unsigned char>;

namespace {
using tst::temp_dir;
using tst::write_file;

/// One entry as the file holds it: the data length field is given separately from the data (a lie, for tests).
struct raw_entry {
  std::string name;
  std::uint8_t dtype;
  std::vector<std::uint64_t> extents;
  std::uint64_t data_length;
  bytes data;
};

void put(bytes& b, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

/// A checkpoint image in format version 1 with a correct file length and CRC32 (written out here, not by tessera).
bytes image(const std::vector<raw_entry>& entries) {
  bytes b = {'T', 'S', 'R', 'A', 'C', 'K', 'P', 'T'};
  put(b, 1, 4);  // version
  put(b, 0, 4);  // flags
  put(b, 0, 8);  // file length, set below
  put(b, entries.size(), 8);
  for (const auto& e : entries) {
    put(b, e.name.size(), 4);
    b.insert(b.end(), e.name.begin(), e.name.end());
    b.push_back(e.dtype);
    b.push_back(static_cast<unsigned char>(e.extents.size()));
    for (auto d : e.extents) put(b, d, 8);
    put(b, e.data_length, 8);
    b.insert(b.end(), e.data.begin(), e.data.end());
  }
  const std::uint64_t length = b.size() + 4;
  for (int i = 0; i < 8; ++i) b[16 + std::size_t(i)] = static_cast<unsigned char>(length >> (8 * i));
  const uLong crc = crc32(crc32(0, nullptr, 0), b.data(), uInt(b.size()));
  put(b, crc, 4);
  return b;
}

std::string list(const std::vector<std::uint64_t>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i != d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

TEST_CASE("the 67-byte file of the issue: one f64 entry of 2^61 + 1 elements over 8 bytes is refused",
          "[checkpoint][errors][hostile]") {
  temp_dir dir("ckpt_wrap");
  const fs::path file = dir / "wrap.ckpt";
  // (2^61 + 1) * 8 = 2^64 + 8: the byte count wraps to the 8 bytes present
  const bytes f = image({{"x", 2, {(std::uint64_t(1) << 61) + 1}, 8, bytes(8, 0x41)}});
  REQUIRE(f.size() == 67u);
  write_file(file, f);
  CHECK_THROWS_AS(ts::checkpoint_reader(file), ts::io_error);
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains("tessera: checkpoint " + file.string()) &&
                                                     Contains("malformed entry x") &&
                                                     Contains("[2305843009213693953]") && Contains("double"));
}

TEST_CASE("extents whose element or byte count wraps are refused for every dtype and rank, naming the extents",
          "[checkpoint][errors][hostile]") {
  temp_dir dir("ckpt_wrap_all");
  const fs::path file = dir / "wrap.ckpt";
  const std::pair<std::uint8_t, int> dtypes[] = {{1, 4}, {2, 8}, {3, 4}, {4, 8}, {5, 1}, {6, 1}, {7, 2}, {8, 1}};
  for (auto [code, size] : dtypes) {
    int log2_size = 0;
    while ((1 << log2_size) < size) ++log2_size;
    for (int rank = 1; rank <= 4; ++rank) {
      for (int extra : {0, 1}) {  // elements * size exactly 2^64 (wraps to 0 bytes), or 2^64 + size (wraps to size)
        // rank - 1 extents of 2, the last one making the product 2^(64 - log2 size) (+ 1 with extra)
        std::vector<std::uint64_t> ext(std::size_t(rank - 1), 2);
        const int last_log2 = 64 - log2_size - (rank - 1);
        if (last_log2 >= 64) continue;  // rank 1 of one-byte elements: 2^64 elements is not an extent
        ext.push_back((std::uint64_t(1) << last_log2) + std::uint64_t(extra));
        std::uint64_t elements = 1;  // modulo 2^64, as a careless reader computes it
        for (auto d : ext) elements *= d;
        const std::uint64_t wrapped = elements * std::uint64_t(size);
        const bytes data(std::size_t(std::min<std::uint64_t>(wrapped, 64)), 0);
        write_file(file, image({{"t", code, ext, wrapped, data}}));
        INFO("dtype " << int(code) << ", extents " << list(ext) << ", data length " << wrapped);
        CHECK_THROWS_AS(ts::checkpoint_reader(file), ts::io_error);
        CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains("malformed entry t") && Contains(list(ext)));
      }
    }
  }
}

TEST_CASE("a zero extent does not let the other extents overflow the strides", "[checkpoint][errors][hostile]") {
  temp_dir dir("ckpt_zero_ext");
  const fs::path file = dir / "zero.ckpt";
  // 0 elements, 0 bytes: but the row-major strides 2^62 * 2^62 overflow
  const std::vector<std::uint64_t> ext = {0, std::uint64_t(1) << 62, std::uint64_t(1) << 62};
  write_file(file, image({{"z", 1, ext, 0, {}}}));
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains("malformed entry z") && Contains(list(ext)));
  // an extent that is negative as a signed number
  const std::vector<std::uint64_t> neg = {0, std::uint64_t(-3)};
  write_file(file, image({{"n", 1, neg, 0, {}}}));
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains("malformed entry n") && Contains(list(neg)));
  // empty tensors of sane extents still load
  write_file(file, image({{"e", 1, {0, 1000, 3}, 0, {}}}));
  const auto t = ts::checkpoint_reader(file).get<float, Shape<dyn, dyn, 3>>("e");
  CHECK(t.dims() == ts::dims_t<3>{0, 1000, 3});
}

TEST_CASE("bool entries hold only bytes 0 and 1", "[checkpoint][errors][hostile]") {
  temp_dir dir("ckpt_bool");
  const fs::path file = dir / "b.ckpt";
  write_file(file, image({{"flags", 8, {3}, 3, {1, 0, 2}}}));  // reading 2 as a bool is undefined behaviour
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains("malformed entry flags") && Contains("bool") &&
                                                     Contains("element 2") && Contains("2"));
  write_file(file, image({{"flags", 8, {3}, 3, {1, 0, 1}}}));
  const auto t = ts::checkpoint_reader(file).get<bool, Shape<3>>("flags");
  CHECK((t(0) && !t(1) && t(2)));
}

TEST_CASE("string entries are of rank 1", "[checkpoint][errors][hostile]") {
  temp_dir dir("ckpt_str");
  const fs::path file = dir / "s.ckpt";
  write_file(file, image({{"s", 9, {}, 1, {'x'}}}));
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains("malformed entry s") && Contains("rank 0"));
  write_file(file, image({{"s", 9, {2, 2}, 4, {'a', 'b', 'c', 'd'}}}));
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains("malformed entry s") && Contains("rank 2"));
  write_file(file, image({{"s", 9, {4}, 4, {'a', 'b', 'c', 'd'}}}));
  CHECK(ts::checkpoint_reader(file).string("s") == "abcd");
}

TEST_CASE("the writer refuses a view whose byte count overflows, naming the extents", "[checkpoint][errors][hostile]") {
  float x = 1.0f;
  // 2^31 x 2^31 floats (every element the same one, strides 0): 2^62 elements, 2^64 bytes, which wraps to 0
  const index_t big = index_t(1) << 31;
  ts::View<float, Shape<dyn, dyn>, ts::cpu> v(&x, {big, big}, {0, 0});
  ts::checkpoint_writer w;
  CHECK_THROWS_AS(w.add("v", v), std::length_error);
  CHECK_THROWS_WITH(w.add("v", v), Contains("v") && Contains("[2147483648, 2147483648]"));
  CHECK(w.size() == 0);
}
