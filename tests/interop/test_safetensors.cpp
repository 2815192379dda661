// safetensors files (interop/safetensors.hpp): bit-for-bit round trips of every element type at odd sizes and ranks
// 0-4 (the file's bytes checked against a layout computed here), files written by hand as Python's json.dumps
// writes them, hostile files (truncated, overlapping or gapped offsets, bad JSON, huge header lengths, every byte
// of a file flipped), and models: parameters and buffers, names, renames, strictness, mismatches named.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "file_support.hpp"
#include "tessera/interop/safetensors.hpp"
#include "tessera/nn/batchnorm1d.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/tessera.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
using ts::dyn;
using ts::index_t;

namespace {

/// Deterministic bytes (a 64-bit LCG); bools get 0 or 1.
template <class T, class X>
void fill_bits(X& t, std::uint64_t seed) {
  auto* p = reinterpret_cast<unsigned char*>(t.data());
  const std::size_t n = std::size_t(t.size()) * sizeof(T);
  for (std::size_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = std::is_same_v<T, bool> ? (seed >> 40) & 1 : static_cast<unsigned char>(seed >> 56);
  }
}

template <class T>
const char* st_name() {
  if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, ts::bfloat16>) return "BF16";
  else if constexpr (std::is_same_v<T, std::int8_t>) return "I8";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "U8";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "I32";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "I64";
  else return "BOOL";
}

std::uint64_t le64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

/// A file as bytes: the header length, the header, the data.
tst::bytes make_file(const std::string& header, const tst::bytes& data) {
  tst::bytes b(8);
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) b[std::size_t(i)] = static_cast<unsigned char>(n >> (8 * i));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

/// The io_error message of reading `b`, or "" when it reads.
std::string read_error(const tst::bytes& b) {
  try {
    (void)ts::safetensors_reader::from_bytes(b, "t.st");
  } catch (const ts::io_error& e) {
    return e.what();
  }
  return "";
}

template <class T, int R>
void round_trip(const ts::dims_t<R>& d, std::uint64_t seed) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  fill_bits<T>(t, seed);
  ts::safetensors_writer w;
  w.add("x.y", t);
  w.add_metadata("format", "pt");
  const auto file = w.bytes();

  // the layout, read here by hand: header length, the header's text, the data right after it
  const std::uint64_t n = le64(file.data());
  REQUIRE((8 + n) % 8 == 0);
  const std::string header(reinterpret_cast<const char*>(file.data() + 8), std::size_t(n));
  std::string shape = "[";
  for (int i = 0; i < R; ++i) shape += (i ? "," : "") + std::to_string(d[i]);
  shape += "]";
  const std::size_t bytes = std::size_t(t.size()) * sizeof(T);
  CHECK(header.find(std::string("\"x.y\":{\"dtype\":\"") + st_name<T>() + "\",\"shape\":" + shape +
                    ",\"data_offsets\":[0," + std::to_string(bytes) + "]}") != std::string::npos);
  CHECK(header.find("\"__metadata__\":{\"format\":\"pt\"}") != std::string::npos);
  REQUIRE(file.size() == 8 + n + bytes);
  CHECK((bytes == 0 || std::memcmp(file.data() + 8 + n, t.data(), bytes) == 0));

  const auto r = ts::safetensors_reader::from_bytes(file);
  CHECK(r.metadata().at("format") == "pt");
  CHECK(r.dtype("x.y") == ts::tensor_dtype_of<T>());
  const auto u = r.template get<T, ts::dyn_shape_t<R>>("x.y");
  REQUIRE(u.dims() == t.dims());
  CHECK((bytes == 0 || std::memcmp(u.data(), t.data(), bytes) == 0));
  ts::Tensor<T, ts::dyn_shape_t<R>> v(d);
  r.read_into("x.y", v);
  CHECK((bytes == 0 || std::memcmp(v.data(), t.data(), bytes) == 0));
}

}  // namespace

TEMPLATE_TEST_CASE("safetensors: every element type round-trips bit for bit, ranks 0-4, odd sizes", "[safetensors]", float,
                   double, ts::bfloat16, std::int8_t, std::uint8_t, std::int32_t, std::int64_t, bool) {
  round_trip<TestType, 0>({}, 1);
  for (index_t n : {1, 7, 33, 65, 127}) {
    INFO("n = " << n);
    round_trip<TestType, 1>({n}, std::uint64_t(n));
    round_trip<TestType, 2>({n, 3}, std::uint64_t(n) + 1);
    round_trip<TestType, 3>({3, n, 1}, std::uint64_t(n) + 2);
    round_trip<TestType, 4>({2, 1, n, 3}, std::uint64_t(n) + 3);
  }
  round_trip<TestType, 2>({0, 5}, 9);  // empty: offsets [0, 0]
}

TEST_CASE("safetensors: several tensors and a strided view; the file on disk is the same as in memory", "[safetensors]") {
  tst::temp_dir dir("safetensors_multi");
  ts::Tensor<float, ts::Shape<dyn, dyn>> a(7, 33);
  fill_bits<float>(a, 3);
  ts::Tensor<std::int64_t, ts::Shape<>> s;
  s() = -5;
  ts::safetensors_writer w;
  w.add("a", a);
  w.add("a_t", ts::transpose(a.view()));  // stored row-major: element (j, i) of the transpose is a(i, j)
  w.add("step", s);
  CHECK_THROWS_WITH(w.add("a", a), Catch::Contains("two tensors are named a"));
  CHECK_THROWS_WITH(w.add("__metadata__", a), Catch::Contains("reserved"));
  w.write(dir / "m.safetensors");
  CHECK(tst::read_file(dir / "m.safetensors") == w.bytes());
  CHECK(tst::other_files(dir.path, {"m.safetensors"}).empty());

  ts::safetensors_reader r(dir / "m.safetensors");
  CHECK(r.names() == std::vector<std::string>{"a", "a_t", "step"});
  const auto at = r.get<float, ts::Shape<33, 7>>("a_t");
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 33; ++j) REQUIRE(std::memcmp(&at(j, i), &a(i, j), 4) == 0);
  CHECK(r.get<std::int64_t, ts::Shape<>>("step")() == -5);
  // read into a strided view: the transpose of a fresh tensor gets a back
  ts::Tensor<float, ts::Shape<dyn, dyn>> b(33, 7);
  r.read_into("a", ts::transpose(b.view()));
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 33; ++j) REQUIRE(std::memcmp(&b(j, i), &a(i, j), 4) == 0);
}

TEST_CASE("safetensors: a header as Python's json.dumps writes it (spaces, any order, escapes, padding)", "[safetensors]") {
  tst::bytes data = {0, 0, 128, 63, 0, 0, 0, 64, 7, 0, 0, 0, 0, 0, 0, 0};  // 1.0f, 2.0f, int64 7
  const std::string h =
      "{\"__metadata__\": {\"note\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\"\"}, \"i\": {\"dtype\": \"I64\", \"shape\": [], "
      "\"data_offsets\": [8, 16]}, \"f\": {\"shape\": [2], \"data_offsets\": [0, 8], \"dtype\": \"F32\"}}    ";
  const auto r = ts::safetensors_reader::from_bytes(make_file(h, data));
  CHECK(r.metadata().at("note") == "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\"");
  const auto f = r.get<float, ts::Shape<2>>("f");
  CHECK(f(0) == 1.0f);
  CHECK(f(1) == 2.0f);
  CHECK(r.get<std::int64_t, ts::Shape<>>("i")() == 7);
  CHECK(r.dims("f") == std::vector<index_t>{2});
  CHECK_THROWS_WITH((r.get<double, ts::Shape<2>>("f")),
                    Catch::Contains("tensor f") && Catch::Contains("F32") && Catch::Contains("double"));
  CHECK_THROWS_WITH((r.get<float, ts::Shape<3>>("f")), Catch::Contains("tensor f has shape [2] in the file but [3]"));
  CHECK_THROWS_WITH((r.get<float, ts::Shape<2>>("g")), Catch::Contains("no tensor named g"));
}

TEST_CASE("safetensors: hostile files are io_errors naming the file and the tensor", "[safetensors][hostile]") {
  const tst::bytes d8 = {0, 0, 128, 63, 0, 0, 0, 64};
  auto one = [](const std::string& entry) { return "{\"w\": {" + entry + "}}"; };
  const std::string good = one("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]");
  REQUIRE(read_error(make_file(good, d8)).empty());

  SECTION("truncated") {
    const auto full = make_file(good, d8);
    CHECK_THAT(read_error(tst::bytes(full.begin(), full.begin() + 5)), Catch::Contains("t.st: truncated: 5 bytes"));
    CHECK_THAT(read_error(tst::bytes(full.begin(), full.begin() + 20)), Catch::Contains("truncated: the header length says"));
    CHECK_THAT(read_error(tst::bytes(full.end() - 3, full.end())), Catch::Contains("truncated"));
    CHECK_THAT(read_error(tst::bytes(full.begin(), full.end() - 1)),
               Catch::Contains("tensor w: data_offsets [0, 8] run past the 7 bytes of data"));
    CHECK_THAT(read_error({}), Catch::Contains("truncated: 0 bytes"));
  }
  SECTION("huge or impossible header lengths") {
    auto b = make_file(good, d8);
    for (std::uint64_t n : {std::uint64_t(100'000'001), std::uint64_t(1) << 63, ~std::uint64_t(0)}) {
      for (int i = 0; i < 8; ++i) b[std::size_t(i)] = static_cast<unsigned char>(n >> (8 * i));
      CHECK_THAT(read_error(b), Catch::Contains("above the limit of 100000000 bytes"));
    }
    CHECK_THAT(read_error(make_file("", {})), Catch::Contains("does not start with '{'"));
    CHECK_THAT(read_error(make_file("[1, 2]", {})), Catch::Contains("does not start with '{'"));
  }
  SECTION("offsets: overlapping, gapped, reversed, trailing bytes, sizes that disagree") {
    const std::string two = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
                            "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}";
    CHECK_THAT(read_error(make_file(two, tst::bytes(12))),
               Catch::Contains("tensor b: its bytes [4, 12) overlap those of tensor a [0, 8)"));
    const std::string same = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
                             "\"b\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}";
    CHECK_THAT(read_error(make_file(same, d8)), Catch::Contains("overlap"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]"), tst::bytes(12))),
               Catch::Contains("tensor w: bytes [0, 4) of the data before it belong to no tensor"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]"), d8)),
               Catch::Contains("tensor w: data_offsets [8, 0] end before they begin"));
    CHECK_THAT(read_error(make_file(good, tst::bytes(11))), Catch::Contains("3 bytes after the last tensor's data"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]"), d8)),
               Catch::Contains("tensor w: 8 bytes of data for shape [3] of F32 (expected 12)"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4], \"data_offsets\": [0, 8]"), d8)),
               Catch::Contains("tensor w: shape [4611686018427387904, 4] of F32 is too large"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 18446744073709551615]"), d8)),
               Catch::Contains("run past"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 18446744073709551616]"), d8)),
               Catch::Contains("tensor w: data_offsets is not a pair of offsets"));
  }
  SECTION("entries: dtype, shape and fields") {
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [0, 8]"), d8)),
               Catch::Contains("tensor w: dtype F16 is not supported"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]"), d8)),
               Catch::Contains("tensor w: shape holds something other than an extent"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [2.0], \"data_offsets\": [0, 8]"), d8)),
               Catch::Contains("tensor w: shape holds something other than an extent"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,2], \"data_offsets\": [0, 8]"), d8)),
               Catch::Contains("tensor w: rank 9 is above"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [2]"), d8)),
               Catch::Contains("tensor w: its entry lacks dtype, shape or data_offsets"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8], \"x\": 1"), d8)),
               Catch::Contains("tensor w: unknown field \"x\""));
    CHECK_THAT(read_error(make_file("{\"w\": [1]}", d8)), Catch::Contains("tensor w: its entry is not an object"));
    CHECK_THAT(read_error(make_file(one("\"dtype\": \"BOOL\", \"shape\": [2], \"data_offsets\": [0, 2]"), {1, 2})),
               Catch::Contains("tensor w: BOOL element 1 is the byte 2"));
    CHECK_THAT(read_error(make_file("{\"__metadata__\": {\"k\": 3}}", {})), Catch::Contains("__metadata__ entry k is not a string"));
  }
  SECTION("bad JSON") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"{\"w\": {\"dtype\": \"F32\"", "not valid JSON: at byte"},
        {"{\"w\": 1,}", "a key (a string) was expected"},
        {"{\"a\": 1, \"a\": 2}", "the key \"a\" appears twice"},
        {"{\"a\": 01}", "leading zero"},
        {"{\"a\": tru}", "not a JSON value"},
        {"{\"a\": \"x\ty\"}", "control character"},
        {"{\"a\": \"\\q\"}", "unknown escape"},
        {"{\"a\": \"\\ud800\"}", "high surrogate"},
        {"{\"a\": \"\xc3\x28\"}", "not valid UTF-8"},
        {"{\"a\": \"\xed\xa0\x80\"}", "not valid UTF-8"},  // a surrogate encoded as UTF-8
        {"{\"a\": 1} {}", "more follows"},
        {"{\"a\" 1}", "':' was expected"},
        {"{'a': 1}", "a key (a string) was expected"},
        {"{\"a\": NaN}", "not a JSON value"},
        {"{\"a\": " + std::string(100, '[') + std::string(100, ']') + "}", "nested more than 64 levels"},
    };
    for (const auto& [h, what] : cases) {
      INFO(h);
      CHECK_THAT(read_error(make_file(h, {})), Catch::Contains(what));
    }
  }
}

TEST_CASE("safetensors: every byte of a small file changed still gives a tensor or an io_error", "[safetensors][hostile]") {
  ts::Tensor<float, ts::Shape<3>> a;
  a(0) = 1, a(1) = 2, a(2) = 3;
  ts::Tensor<bool, ts::Shape<2>> b;
  b(0) = true, b(1) = false;
  ts::safetensors_writer w;
  w.add("a", a);
  w.add("b", b);
  w.add_metadata("k", "v");
  const auto good = w.bytes();
  int read = 0, refused = 0;
  for (std::size_t i = 0; i < good.size(); ++i)
    for (unsigned v : {0u, 1u, 0x7fu, 0xffu, unsigned(good[i] ^ 0x20u)}) {
      auto bad = good;
      bad[i] = static_cast<unsigned char>(v);
      try {
        const auto r = ts::safetensors_reader::from_bytes(bad);
        for (const auto& n : r.names()) (void)r.dims(n);
        ++read;
      } catch (const ts::io_error&) {
        ++refused;
      }
    }
  CHECK(read > 0);
  CHECK(refused > 0);
}

namespace {
using Small = nn::Sequential<ts::Shape<dyn, 2, 5, 5>, nn::Conv2d<2, 3, 3, ts::conv2d_options{.padding = 1}>,
                             nn::BatchNorm2d<3>, nn::ReLU, nn::Flatten, nn::Linear<75, 4>, nn::BatchNorm1d<4>>;
using Wider = nn::Sequential<ts::Shape<dyn, 2, 5, 5>, nn::Conv2d<2, 3, 3, ts::conv2d_options{.padding = 1}>,
                             nn::BatchNorm2d<3>, nn::ReLU, nn::Flatten, nn::Linear<75, 5>, nn::BatchNorm1d<5>>;

/// name -> bytes of every parameter and buffer
template <class M>
std::map<std::string, std::vector<unsigned char>> snapshot(M& m) {
  std::map<std::string, std::vector<unsigned char>> out;
  auto take = [&](const std::string& n, const auto& t) {
    using T = typename std::remove_cvref_t<decltype(t)>::value_type;
    const auto* p = reinterpret_cast<const unsigned char*>(t.data());
    out[n].assign(p, p + std::size_t(t.size()) * sizeof(T));
  };
  m.for_each_parameter([&](const std::string& n, auto& v) { take(n, v.value()); });
  m.for_each_buffer([&](const std::string& n, auto& t) { take(n, t); });
  return out;
}
}  // namespace

TEST_CASE("safetensors: a model's parameters and buffers, named as torch.nn.Sequential names them", "[safetensors][model]") {
  tst::temp_dir dir("safetensors_model");
  Small a(1);
  ts::Tensor<float, ts::Shape<dyn, 2, 5, 5>> x(4);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 7) * 0.25f - 0.5f;
  a.train();
  (void)a.forward(x);  // running statistics and num_batches_tracked move away from their initial values
  (void)a.forward(x);
  ts::save_safetensors(dir / "a.safetensors", a, {{"epochs", "2"}});

  ts::safetensors_reader r(dir / "a.safetensors");
  CHECK(r.names() == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "5.weight",
                                              "5.bias", "1.running_mean", "1.running_var", "5.running_mean",
                                              "5.running_var", "5.num_batches_tracked"});
  CHECK(r.metadata().at("epochs") == "2");
  CHECK(r.dtype("5.num_batches_tracked") == ts::tensor_dtype::i64);
  CHECK(r.dims("5.num_batches_tracked").empty());
  CHECK(r.get<std::int64_t, ts::Shape<>>("5.num_batches_tracked")() == 2);

  Small b(7);
  CHECK(snapshot(b) != snapshot(a));
  CHECK(ts::load_safetensors(dir / "a.safetensors", b) == 13);
  CHECK(snapshot(b) == snapshot(a));

  SECTION("without buffers") {
    Small c(7);
    ts::save_safetensors(dir / "p.safetensors", c, {}, {.buffers = false});
    CHECK(ts::safetensors_reader(dir / "p.safetensors").size() == 8);
    CHECK(ts::load_safetensors(dir / "p.safetensors", b, {.buffers = false}) == 8);
    CHECK_THROWS_WITH(ts::load_safetensors(dir / "p.safetensors", b),
                      Catch::Contains("no tensor 1.running_mean in the file"));
  }
  SECTION("renamed: a function, or prefixes") {
    auto rename = ts::rename_prefixes({{"0.", "conv."}, {"1.", "bn."}, {"4.", "fc."}});
    CHECK(rename("1.running_var") == "bn.running_var");
    CHECK(rename("7.weight") == "7.weight");
    ts::save_safetensors(dir / "r.safetensors", a, {}, {.rename = rename});
    ts::safetensors_reader rr(dir / "r.safetensors");
    CHECK(rr.contains("fc.weight"));
    CHECK(rr.contains("bn.running_var"));
    CHECK(rr.contains("5.num_batches_tracked"));
    CHECK_FALSE(rr.contains("4.weight"));
    Small c(9);
    ts::load_safetensors(dir / "r.safetensors", c, {.rename = rename});
    CHECK(snapshot(c) == snapshot(a));
    CHECK_THROWS_WITH(ts::load_safetensors(dir / "r.safetensors", c), Catch::Contains("no tensor 0.weight in the file"));
    CHECK_THROWS_WITH(ts::save_safetensors(dir / "x.safetensors", a, {}, {.rename = [](const std::string&) { return std::string("same"); }}),
                      Catch::Contains("two of the model's tensors are renamed same"));
  }
  SECTION("mismatches name the tensor and both shapes or types; a failed load changes nothing") {
    Wider w(3);
    const auto before = snapshot(w);
    CHECK_THROWS_WITH(ts::load_safetensors(dir / "a.safetensors", w),
                      Catch::Contains("tensor 4.weight has shape [4, 75] in the file but [5, 75] in the model's 4.weight"));
    CHECK(snapshot(w) == before);  // 0.weight etc. were checked, not written
    Small::on<ts::cpu_threads, double> d(3);
    CHECK_THROWS_WITH(ts::load_safetensors(dir / "a.safetensors", d),
                      Catch::Contains("tensor 0.weight: the file holds F32 (float) of shape [3, 2, 3, 3] but the model's "
                                      "0.weight is double of shape [3, 2, 3, 3]"));
    ts::safetensors_writer extra;
    extra.add_all([&](auto&& f) { a.for_each_parameter(f); });
    extra.add_all([&](auto&& f) { a.for_each_buffer(f); });
    extra.add("head.weight", ts::Tensor<float, ts::Shape<2>>());
    extra.write(dir / "extra.safetensors");
    CHECK_THROWS_WITH(ts::load_safetensors(dir / "extra.safetensors", b),
                      Catch::Contains("tensor head.weight in the file matches no tensor of the model"));
    CHECK(ts::load_safetensors(dir / "extra.safetensors", b, {.strict = false}) == 13);
    // PyTorch's BatchNorm2d keeps num_batches_tracked, tessera's does not: accepted beside its running_mean
    ts::safetensors_writer torch_like;
    torch_like.add_all([&](auto&& f) { a.for_each_parameter(f); });
    torch_like.add_all([&](auto&& f) { a.for_each_buffer(f); });
    ts::Tensor<std::int64_t, ts::Shape<>> count;
    count() = 5;
    torch_like.add("1.num_batches_tracked", count);
    torch_like.write(dir / "torch_like.safetensors");
    CHECK(ts::load_safetensors(dir / "torch_like.safetensors", b) == 13);
    torch_like.add("4.num_batches_tracked", count);  // no running_mean beside it: an error
    torch_like.write(dir / "torch_like.safetensors");
    CHECK_THROWS_WITH(ts::load_safetensors(dir / "torch_like.safetensors", b),
                      Catch::Contains("tensor 4.num_batches_tracked in the file matches no tensor"));
  }
}
