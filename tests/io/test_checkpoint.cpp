// Checkpoints: round trips of every element type and rank, the byte layout of a small file, atomic writes (no
// temporary left behind, an existing file intact when a write fails), and errors naming the file, the entry and
// both shapes: corrupt bytes, truncation, wrong shapes or types, missing names.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
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
using tst::read_file;
using tst::write_file;
using tst::other_files;

template <class T, class S>
void fill(ts::Tensor<T, S>& t, int salt) {
  for (index_t k = 0; k < t.size(); ++k) {
    const long v = long((k * 37 + salt * 11) % 201) - 100;
    if constexpr (std::is_same_v<T, bool>) t.data()[k] = (v & 1) != 0;
    else if constexpr (std::is_floating_point_v<T> || std::is_same_v<T, ts::bfloat16>) t.data()[k] = T(float(v) * 0.25f);
    else t.data()[k] = T(v);
  }
}
template <class T, class S>
bool same(const ts::Tensor<T, S>& a, const ts::Tensor<T, S>& b) {
  if (a.dims() != b.dims()) return false;
  return std::memcmp(a.data(), b.data(), std::size_t(a.size()) * sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("round trip of tensors of every element type and rank, scalars and strings", "[checkpoint]") {
  temp_dir dir("ckpt_roundtrip");
  const fs::path file = dir / "model.ckpt";

  ts::Tensor<float, Shape<dyn>> a(1);
  ts::Tensor<double, Shape<dyn>> b(7);
  ts::Tensor<std::int32_t, Shape<dyn>> c(33);
  ts::Tensor<float, Shape<dyn, 33>> d(7);
  ts::Tensor<std::int64_t, Shape<1, 7, 3>> e;
  ts::Tensor<std::uint8_t, Shape<dyn, dyn>> f(7, 33);
  ts::Tensor<std::int8_t, Shape<dyn>> g(33);
  ts::Tensor<ts::bfloat16, Shape<3, 1>> h;
  ts::Tensor<bool, Shape<dyn>> i(7);
  ts::Tensor<float, Shape<>> s0;  // rank 0
  ts::Tensor<float, Shape<dyn, 4>> none(0);  // no elements
  fill(a, 1), fill(b, 2), fill(c, 3), fill(d, 4), fill(e, 5), fill(f, 6), fill(g, 7), fill(h, 8), fill(i, 9), fill(s0, 10);

  ts::checkpoint_writer w;
  w.add("a", a), w.add("layer.b", b), w.add("c", c), w.add("d", d), w.add("e", e), w.add("f", f);
  w.add("g", g), w.add("h", h), w.add("i", i), w.add("s0", s0), w.add("none", none);
  w.add_scalar("epoch", 12);
  w.add_scalar("lr", 0.125);
  w.add_scalar("steps", std::uint64_t(1) << 40);
  w.add_scalar("done", true);
  w.add_string("arch", "lenet-5 \xce\xbb");  // UTF-8 passes through
  w.add_string("empty", "");
  CHECK(w.size() == 17);
  CHECK_THROWS_AS(w.add("a", b), std::invalid_argument);  // a second "a"
  CHECK_THROWS_AS(w.add("", b), std::invalid_argument);
  w.write(file);
  CHECK(other_files(dir.path, {"model.ckpt"}).empty());  // the temporary file is gone

  ts::checkpoint_reader r(file);
  CHECK(r.names() == std::vector<std::string>{"a", "layer.b", "c", "d", "e", "f", "g", "h", "i", "s0", "none", "epoch",
                                              "lr", "steps", "done", "arch", "empty"});
  CHECK(r.contains("layer.b"));
  CHECK_FALSE(r.contains("b"));
  CHECK(r.dims("d") == std::vector<index_t>{7, 33});
  CHECK(r.dtype("h") == ts::checkpoint_dtype::bf16);

  ts::Tensor<float, Shape<dyn>> a2(1);
  ts::Tensor<double, Shape<dyn>> b2(7);
  ts::Tensor<std::int32_t, Shape<dyn>> c2(33);
  ts::Tensor<float, Shape<dyn, 33>> d2(7);
  ts::Tensor<std::int64_t, Shape<1, 7, 3>> e2;
  ts::Tensor<std::uint8_t, Shape<dyn, dyn>> f2(7, 33);
  ts::Tensor<std::int8_t, Shape<dyn>> g2(33);
  ts::Tensor<ts::bfloat16, Shape<3, 1>> h2;
  ts::Tensor<bool, Shape<dyn>> i2(7);
  ts::Tensor<float, Shape<>> s02;
  ts::Tensor<float, Shape<dyn, 4>> none2(0);
  r.read_into("a", a2), r.read_into("layer.b", b2), r.read_into("c", c2), r.read_into("d", d2), r.read_into("e", e2);
  r.read_into("f", f2), r.read_into("g", g2), r.read_into("h", h2), r.read_into("i", i2), r.read_into("s0", s02);
  r.read_into("none", none2);
  CHECK(same(a, a2));
  CHECK(same(b, b2));
  CHECK(same(c, c2));
  CHECK(same(d, d2));
  CHECK(same(e, e2));
  CHECK(same(f, f2));
  CHECK(same(g, g2));
  CHECK(same(h, h2));
  CHECK(same(i, i2));
  CHECK(same(s0, s02));
  // spot values from fill(): element k is ((k * 37 + salt * 11) % 201 - 100), floats times 0.25
  CHECK(b2(6) == double(((6 * 37 + 22) % 201 - 100) * 0.25));  // 244 % 201 = 43 -> -57 * 0.25
  CHECK(b2(6) == -14.25);
  CHECK(c2(32) == (32 * 37 + 33) % 201 - 100);  // 1217 % 201 = 11 -> -89
  CHECK(d2(6, 32) == float(((230 * 37 + 44) % 201) - 100) * 0.25f);

  // get: a new tensor with the file's extents
  const auto d3 = r.get<float, Shape<dyn, dyn>>("d");
  CHECK(d3.dims() == ts::dims_t<2>{7, 33});
  CHECK(std::memcmp(d3.data(), d.data(), 7 * 33 * sizeof(float)) == 0);
  CHECK_THROWS_WITH((r.get<float, Shape<dyn, 32>>("d")),
                    Contains("parameter d has shape [7, 33] in the file but the static shape [-1, 32]"));

  CHECK(r.scalar<int>("epoch") == 12);
  CHECK(r.scalar<double>("lr") == 0.125);
  CHECK(r.scalar<std::uint64_t>("steps") == (std::uint64_t(1) << 40));
  CHECK(r.scalar<bool>("done"));
  CHECK(r.scalar<float>("s0") == s0());
  CHECK(r.string("arch") == "lenet-5 \xce\xbb");
  CHECK(r.string("empty").empty());
  CHECK_THROWS_WITH(r.scalar<int>("d"), Contains("entry d is a tensor of shape [7, 33], not a scalar"));
  CHECK_THROWS_WITH(r.scalar<int>("arch"), Contains("entry arch is a string"));
  CHECK_THROWS_WITH(r.string("lr"), Contains("entry lr holds double data, not a string"));

  // writing again replaces the file
  ts::checkpoint_writer w2;
  w2.add("only", a);
  w2.write(file);
  CHECK(ts::checkpoint_reader(file).names() == std::vector<std::string>{"only"});
  CHECK(other_files(dir.path, {"model.ckpt"}).empty());
}

TEST_CASE("strided views are stored in row-major order and read back into strided views", "[checkpoint]") {
  temp_dir dir("ckpt_views");
  // m is 2 x 3 row-major: m[r][c] = 10 r + c; its transpose is a 3 x 2 view with strides {1, 3}
  float m[6] = {0, 1, 2, 10, 11, 12};
  const auto mt = ts::map<Shape<3, 2>>(m, {3, 2}, {1, 3});
  ts::checkpoint_writer w;
  w.add("t", mt);
  w.write(dir / "v.ckpt");
  ts::checkpoint_reader r(dir / "v.ckpt");
  ts::Tensor<float, Shape<3, 2>> t;
  r.read_into("t", t);
  CHECK(t.to_vector() == std::vector<float>{0, 10, 1, 11, 2, 12});
  // read into the transposed view of another array: back to the original layout
  float out[6] = {};
  r.read_into("t", ts::map<Shape<3, 2>>(out, {3, 2}, {1, 3}));
  for (int k = 0; k < 6; ++k) CHECK(out[k] == m[k]);
  CHECK_THROWS_WITH(r.read_into("t", ts::map<Shape<2, 3>>(out, {2, 3})),
                    Contains("parameter t has shape [3, 2] in the file but [2, 3] in the model"));
}

TEST_CASE("the file layout, byte by byte", "[checkpoint]") {
  temp_dir dir("ckpt_layout");
  ts::Tensor<float, Shape<1>> one;
  one(0) = 1.0f;  // 0x3f800000
  ts::checkpoint_writer w;
  w.add("a", one);
  w.write(dir / "one.ckpt");
  const bytes f = read_file(dir / "one.ckpt");
  // header 32 + entry (4 name length + 1 name + 1 dtype + 1 rank + 8 extent + 8 data length + 4 data) 27 + CRC 4
  REQUIRE(f.size() == 63u);
  const bytes expected_head = {'T', 'S', 'R', 'A', 'C', 'K', 'P', 'T',  // magic
                               1, 0, 0, 0,                              // version 1
                               0, 0, 0, 0,                              // flags
                               63, 0, 0, 0, 0, 0, 0, 0,                 // file length
                               1, 0, 0, 0, 0, 0, 0, 0,                  // one entry
                               1, 0, 0, 0, 'a',                         // name
                               1,                                       // dtype float
                               1,                                       // rank 1
                               1, 0, 0, 0, 0, 0, 0, 0,                  // extent 1
                               4, 0, 0, 0, 0, 0, 0, 0,                  // 4 bytes of data
                               0x00, 0x00, 0x80, 0x3f};                 // 1.0f little-endian
  CHECK(bytes(f.begin(), f.end() - 4) == expected_head);
  const uLong crc = crc32(crc32(0, nullptr, 0), f.data(), 59);
  const std::uint32_t stored = std::uint32_t(f[59]) | std::uint32_t(f[60]) << 8 | std::uint32_t(f[61]) << 16 |
                               std::uint32_t(f[62]) << 24;
  CHECK(stored == std::uint32_t(crc));
}

TEST_CASE("corrupt, truncated and foreign files are refused with the reason", "[checkpoint][errors]") {
  temp_dir dir("ckpt_corrupt");
  const fs::path file = dir / "x.ckpt";
  const std::string where = "tessera: checkpoint " + file.string() + ": ";
  ts::Tensor<float, Shape<dyn, 7>> t(33);
  fill(t, 1);
  ts::checkpoint_writer w;
  w.add("w", t);
  w.add_scalar("epoch", 3);
  w.write(file);
  const bytes good = read_file(file);
  REQUIRE(good.size() > 500);

  // one data byte changed
  bytes bad = good;
  bad[300] ^= 0x10;
  write_file(file, bad);
  CHECK_THROWS_AS(ts::checkpoint_reader(file), ts::io_error);
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains(where + "checksum mismatch") && Contains("corrupt"));
  // the stored checksum changed
  bad = good;
  bad.back() ^= 0x80;
  write_file(file, bad);
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains(where + "checksum mismatch"));

  // truncated: half of it, ten bytes of it, nothing of it
  write_file(file, bytes(good.begin(), good.begin() + std::ptrdiff_t(good.size() / 2)));
  CHECK_THROWS_WITH(ts::checkpoint_reader(file),
                    Contains(where + "truncated: the header says " + std::to_string(good.size()) + " bytes, the file has " +
                             std::to_string(good.size() / 2)));
  write_file(file, bytes(good.begin(), good.begin() + 10));
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains(where + "truncated: 10 bytes"));
  write_file(file, {});
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains(where + "the file is empty"));
  // bytes appended
  bad = good;
  bad.push_back(0);
  write_file(file, bad);
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains(where) && Contains("data appended"));

  // another kind of file; a later format version
  write_file(file, {'P', 'K', 3, 4, 0, 0, 0, 0});
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains(where + "not a tessera checkpoint"));
  bad = good;
  bad[8] = 2;
  write_file(file, bad);
  CHECK_THROWS_WITH(ts::checkpoint_reader(file), Contains(where + "format version 2 is not supported"));

  // missing file
  CHECK_THROWS_WITH(ts::checkpoint_reader(dir / "nope.ckpt"),
                    Contains((dir / "nope.ckpt").string()) && Contains("cannot open: No such file"));
}

TEST_CASE("wrong shapes, element types and names are refused naming the file, the entry and both shapes",
          "[checkpoint][errors]") {
  temp_dir dir("ckpt_shapes");
  const fs::path file = dir / "x.ckpt";
  ts::Tensor<float, Shape<32, 1, 3, 3>> conv;
  ts::Tensor<float, Shape<dyn>> bias(32);
  fill(conv, 1), fill(bias, 2);
  ts::checkpoint_writer w;
  w.add("0.weight", conv);
  w.add("0.bias", bias);
  w.write(file);
  ts::checkpoint_reader r(file);

  ts::Tensor<float, Shape<32, 1, 5, 5>> conv5;
  CHECK_THROWS_WITH(r.read_into("0.weight", conv5),
                    Contains("checkpoint " + file.string() +
                             ": parameter 0.weight has shape [32, 1, 3, 3] in the file but [32, 1, 5, 5] in the model"));
  ts::Tensor<float, Shape<dyn>> bias16(16);  // dynamic extents must match too
  CHECK_THROWS_WITH(r.read_into("0.bias", bias16),
                    Contains("parameter 0.bias has shape [32] in the file but [16] in the model"));
  ts::Tensor<float, Shape<32, 1>> rank2;
  CHECK_THROWS_WITH(r.read_into("0.bias", rank2), Contains("has shape [32] in the file but [32, 1] in the model"));
  ts::Tensor<double, Shape<dyn>> dbias(32);
  CHECK_THROWS_WITH(r.read_into("0.bias", dbias),
                    Contains(file.string()) &&
                        Contains("parameter 0.bias has element type float in the file but double in the model"));
  CHECK_THROWS_WITH(r.read_into("fc.bias", bias),
                    Contains(file.string()) && Contains("no parameter named fc.bias in the file") &&
                        Contains("it holds 2 entries: 0.weight, 0.bias"));
  CHECK_THROWS_AS(r.read_into("fc.bias", bias), ts::io_error);
  // a failed read leaves the destination alone
  std::fill(bias16.data(), bias16.data() + 16, 7.0f);
  CHECK_THROWS(r.read_into("0.bias", bias16));
  CHECK(bias16(15) == 7.0f);
}

namespace {
/// A model in the shape the checkpoint functions expect: for_each_parameter(f) calls f(name, tensor&).
struct tiny_model {
  ts::Tensor<float, Shape<4, 1, 3, 3>> conv_w;
  ts::Tensor<float, Shape<4>> conv_b;
  ts::Tensor<float, Shape<10, 4>> fc_w;
  template <class F>
  void for_each_parameter(F&& f) {
    f("0.weight", conv_w);
    f("0.bias", conv_b);
    f(std::string("2.weight"), fc_w);
  }
};
/// An optimizer's state: a step count and a momentum buffer per parameter.
struct tiny_sgd {
  ts::Tensor<std::int64_t, Shape<>> step;
  ts::Tensor<float, Shape<4, 1, 3, 3>> m0;
  ts::Tensor<float, Shape<4>> m1;
  ts::Tensor<float, Shape<10, 4>> m2;
  template <class F>
  void for_each_state(F&& f) {
    f("step", step);
    f("momentum.0.weight", m0);
    f("momentum.0.bias", m1);
    f("momentum.2.weight", m2);
  }
};
struct smaller_model {
  ts::Tensor<float, Shape<4, 1, 3, 3>> conv_w;
  template <class F>
  void for_each_parameter(F&& f) {
    f("0.weight", conv_w);
  }
};
struct bigger_model {
  tiny_model base;
  ts::Tensor<float, Shape<10>> fc_b;
  template <class F>
  void for_each_parameter(F&& f) {
    base.for_each_parameter(f);
    f("2.bias", fc_b);
  }
};
}  // namespace

TEST_CASE("a model and its optimizer's state saved and restored", "[checkpoint]") {
  temp_dir dir("ckpt_model");
  const fs::path file = dir / "run.ckpt";
  tiny_model model;
  tiny_sgd opt;
  fill(model.conv_w, 1), fill(model.conv_b, 2), fill(model.fc_w, 3);
  opt.step() = 1234;
  fill(opt.m0, 4), fill(opt.m1, 5), fill(opt.m2, 6);

  ts::checkpoint_writer w;
  w.add_parameters(model, "model.");
  w.add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.");
  w.add_scalar("epoch", 3);
  w.write(file);

  ts::checkpoint_reader r(file);
  CHECK(r.names() == std::vector<std::string>{"model.0.weight", "model.0.bias", "model.2.weight", "optim.step",
                                              "optim.momentum.0.weight", "optim.momentum.0.bias",
                                              "optim.momentum.2.weight", "epoch"});
  tiny_model model2;
  tiny_sgd opt2;
  CHECK(r.read_parameters(model2, "model.", ts::unmatched_entries::error) == 3);
  CHECK(r.read_all([&](auto&& f) { opt2.for_each_state(f); }, "optim.", ts::unmatched_entries::error) == 4);
  CHECK(same(model.conv_w, model2.conv_w));
  CHECK(same(model.conv_b, model2.conv_b));
  CHECK(same(model.fc_w, model2.fc_w));
  CHECK(opt2.step() == 1234);
  CHECK(same(opt.m0, opt2.m0));
  CHECK(same(opt.m2, opt2.m2));
  CHECK(r.scalar<int>("epoch") == 3);

  // a model with fewer parameters: allowed by default, an error when every entry must be used
  smaller_model small;
  CHECK(r.read_parameters(small, "model.") == 1);
  CHECK(same(small.conv_w, model.conv_w));
  CHECK_THROWS_WITH(r.read_parameters(small, "model.", ts::unmatched_entries::error),
                    Contains(file.string()) && Contains("entry model.0.bias in the file matches no parameter"));
  // a model with more parameters: the missing one is named
  bigger_model big;
  CHECK_THROWS_WITH(r.read_parameters(big, "model."),
                    Contains(file.string()) && Contains("no parameter named model.2.bias"));
}

TEST_CASE("writes are atomic: no temporary left, an existing file intact when a write fails", "[checkpoint][atomic]") {
  temp_dir dir("ckpt_atomic");
  const fs::path file = dir / "good.ckpt";
  ts::Tensor<float, Shape<dyn>> small(7);
  fill(small, 1);
  ts::checkpoint_writer good;
  good.add("w", small);
  good.write(file);
  const bytes before = read_file(file);
  CHECK(other_files(dir.path, {"good.ckpt"}).empty());

  ts::Tensor<float, Shape<dyn>> big(1 << 18);  // 1 MiB
  fill(big, 2);
  ts::checkpoint_writer w;
  w.add("w", big);

  SECTION("the temporary file cannot be created") {
    // open() fails with EMFILE (the hook stands in for it: no way to make it fail for root otherwise)
    const auto old_hook = ts::set_io_fault_hook([](ts::io_step s, const char*) { return s == ts::io_step::create ? EMFILE : 0; });
    const std::string tmp = file.string() + ".tmp." + std::to_string(::getpid()) + ".";
    CHECK_THROWS_AS(w.write(file), ts::io_error);
    CHECK_THROWS_WITH(w.write(file), Contains("checkpoint " + file.string()) &&
                                         Contains("cannot create the temporary file " + tmp) &&
                                         Contains("Too many open files"));
    ts::set_io_fault_hook(old_hook);
  }
  SECTION("the disk fills up while writing (RLIMIT_FSIZE)") {
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing us
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    rlimit lim = old;
    lim.rlim_cur = 64 * 1024;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    std::string message;
    try {
      w.write(file);
    } catch (const ts::io_error& e) {
      message = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    CHECK_THAT(message, Contains("checkpoint " + file.string()) && Contains("cannot write") && Contains("too large"));
  }
  SECTION("the directory is not writable") {
    fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
    if (::access(dir.path.c_str(), W_OK) == 0) {
      fs::permissions(dir.path, fs::perms::owner_all);
      WARN("running as root: a read-only directory is still writable, so this section checks nothing");
      return;
    }
    CHECK_THROWS_WITH(w.write(file), Contains("checkpoint " + file.string()) && Contains("Permission denied"));
    fs::permissions(dir.path, fs::perms::owner_all);
  }
  SECTION("the parent directory does not exist") {
    CHECK_THROWS_WITH(w.write(dir / "no" / "such.ckpt"), Contains("cannot create the temporary file") &&
                                                             Contains("No such file or directory"));
  }
  // whatever failed: the good file is as it was and still loads; no temporary is left behind
  CHECK(read_file(file) == before);
  ts::Tensor<float, Shape<dyn>> back(7);
  ts::checkpoint_reader(file).read_into("w", back);
  CHECK(same(back, small));
  CHECK(other_files(dir.path, {"good.ckpt"}).empty());
}
