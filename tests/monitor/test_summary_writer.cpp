// tessera/monitor: CRC32C against published vectors and a bitwise reference, TFRecord framing, the protobuf
// encoder against protobuf's documented bytes, PNG files inflated back to their rows, histogram buckets against a
// plain-loop count, images and grids against plain loops, the event file read back record by record, CSV quoting
// and its column check, and the errors (bad log directory, bad shapes, use after close).
// The event files are also read by google.protobuf in tests/monitor/read_events.py (ctest: monitor_read_events).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <tessera/autodiff/var.hpp>
#include <tessera/monitor/csv_writer.hpp>
#include <tessera/monitor/summary_writer.hpp>
#include <tessera/tessera.hpp>

#include "file_support.hpp"

namespace ts = tessera;
namespace mon = tessera::monitor;

namespace {
// ---- independent references ----
std::uint32_t crc32c_bitwise(const unsigned char* p, std::size_t n) {
  std::uint32_t c = 0xffffffffu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}
std::uint32_t mask(std::uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }
std::uint64_t le(const std::string& s, std::size_t at, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | (unsigned char)s[at + i];
  return v;
}
std::uint32_t be32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | (unsigned char)s[at + i];
  return v;
}
std::string file_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// TFRecords of a file, each length and data CRC checked.
std::vector<std::string> read_records(const std::string& f) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < f.size()) {
    REQUIRE(at + 12 <= f.size());
    const std::uint64_t n = le(f, at, 8);
    REQUIRE(le(f, at + 8, 4) == mask(crc32c_bitwise((const unsigned char*)f.data() + at, 8)));
    REQUIRE(at + 12 + n + 4 <= f.size());
    const std::string data = f.substr(at + 12, n);
    REQUIRE(le(f, at + 12 + n, 4) == mask(crc32c_bitwise((const unsigned char*)data.data(), n)));
    out.push_back(data);
    at += 12 + n + 4;
  }
  return out;
}

/// A protobuf field as read by a plain decoder: number, wire type, varint / fixed value or bytes.
struct pfield {
  std::uint32_t number, wire;
  std::uint64_t num = 0;
  std::string bytes;
};
std::vector<pfield> parse(const std::string& m) {
  std::vector<pfield> out;
  std::size_t at = 0;
  auto varint = [&] {
    std::uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(at < m.size());
      const unsigned char b = (unsigned char)m[at++];
      v |= std::uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (at < m.size()) {
    const std::uint64_t key = varint();
    pfield f{std::uint32_t(key >> 3), std::uint32_t(key & 7)};
    if (f.wire == 0) f.num = varint();
    else if (f.wire == 1) f.num = le(m, at, 8), at += 8;
    else if (f.wire == 5) f.num = le(m, at, 4), at += 4;
    else {
      REQUIRE(f.wire == 2);
      const std::uint64_t n = varint();
      f.bytes = m.substr(at, n);
      at += n;
    }
    out.push_back(f);
  }
  REQUIRE(at == m.size());
  return out;
}
const pfield& field(const std::vector<pfield>& fs, std::uint32_t number) {
  for (const auto& f : fs)
    if (f.number == number) return f;
  FAIL("field " << number << " missing");
  return fs.front();
}
double as_double(std::uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
/// The Summary.Value of an event record (Event.summary 5 -> Summary.value 1).
std::vector<pfield> value_of(const std::string& event) {
  return parse(field(parse(field(parse(event), 5).bytes), 1).bytes);
}

/// A model as add_histograms sees one: a Var parameter and a plain tensor.
struct fake_model {
  ts::ad::Var<float, 1>* p;
  ts::Tensor<float, ts::Shape<3>> plain;
  template <class F>
  void for_each_parameter(F&& f) {
    f(std::string("w"), *p);
    f(std::string("plain"), plain);
  }
};
}  // namespace

TEST_CASE("crc32c: published vectors and a bitwise reference", "[monitor]") {
  CHECK(mon::crc32c("123456789") == 0xE3069283u);
  CHECK(mon::crc32c("") == 0u);
  std::string zeros(32, '\0'), ones(32, '\xff'), inc(32, '\0');
  for (int i = 0; i < 32; ++i) inc[i] = char(i);
  CHECK(mon::crc32c(zeros) == 0x8A9136AAu);  // RFC 3720, B.4
  CHECK(mon::crc32c(ones) == 0x62A8AB43u);
  CHECK(mon::crc32c(inc) == 0x46DD794Eu);
  std::mt19937 rng(7);
  for (std::size_t n : {1u, 7u, 33u, 1001u}) {
    std::string s(n, '\0');
    for (auto& c : s) c = char(rng());
    CHECK(mon::crc32c(s) == crc32c_bitwise((const unsigned char*)s.data(), n));
    // continued over two pieces
    CHECK(mon::crc32c(s.data() + n / 3, n - n / 3, mon::crc32c(s.data(), n / 3)) == mon::crc32c(s));
    CHECK(mon::masked_crc32c(s.data(), n) == mask(crc32c_bitwise((const unsigned char*)s.data(), n)));
  }
}

TEST_CASE("tfrecord framing: length, masked CRCs, data", "[monitor]") {
  for (std::size_t n : {0u, 3u, 257u}) {
    std::string data(n, 'x');
    for (std::size_t i = 0; i < n; ++i) data[i] = char(i * 31 + 5);
    const std::string r = mon::tfrecord_frame(data);
    REQUIRE(r.size() == n + 16);
    CHECK(le(r, 0, 8) == n);
    CHECK(le(r, 8, 4) == mask(crc32c_bitwise((const unsigned char*)r.data(), 8)));
    CHECK(r.substr(12, n) == data);
    CHECK(le(r, 12 + n, 4) == mask(crc32c_bitwise((const unsigned char*)data.data(), n)));
  }
}

TEST_CASE("proto_encoder: the bytes protobuf's encoding guide gives", "[monitor]") {
  mon::proto_encoder m;
  m.add_int64(1, 150);
  CHECK(m.bytes() == std::string("\x08\x96\x01", 3));
  mon::proto_encoder s;
  s.add_bytes(2, "testing");
  CHECK(s.bytes() == std::string("\x12\x07testing", 9));
  mon::proto_encoder neg;
  neg.add_int64(2, -1);  // ten bytes of varint
  CHECK(neg.bytes() == std::string("\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11));
  mon::proto_encoder d;
  d.add_double(1, 1.0).add_float(2, -2.0f);
  CHECK(d.bytes() == std::string("\x09\0\0\0\0\0\0\xf0\x3f\x15\0\0\0\xc0", 14));
  mon::proto_encoder p;
  const double v[2] = {0.5, -3.0};
  p.add_packed_doubles(6, v);
  const auto f = parse(p.bytes());
  REQUIRE(f.size() == 1);
  CHECK(f[0].number == 6);
  CHECK(f[0].wire == 2);
  CHECK(as_double(le(f[0].bytes, 0, 8)) == 0.5);
  CHECK(as_double(le(f[0].bytes, 8, 8)) == -3.0);
  mon::proto_encoder outer;  // a message field of 200 bytes: a two-byte length
  mon::proto_encoder inner;
  inner.add_bytes(1, std::string(197, 'a'));
  outer.add_message(5, inner);
  CHECK(outer.bytes().substr(0, 3) == std::string("\x2a\xc8\x01", 3));
}

TEST_CASE("encode_png: chunks with their CRCs, rows inflated back with filter byte 0", "[monitor]") {
  for (int ch : {1, 2, 3, 4}) {
    const long long h = 5, w = 7;
    std::vector<std::uint8_t> px(std::size_t(h * w * ch));
    for (std::size_t i = 0; i < px.size(); ++i) px[i] = std::uint8_t(i * 37 + ch);
    const std::string png = mon::encode_png(px.data(), h, w, ch);
    REQUIRE(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
    std::size_t at = 8;
    std::string idat, types;
    while (at < png.size()) {
      const std::uint32_t n = be32(png, at);
      const std::string type = png.substr(at + 4, 4), data = png.substr(at + 8, n);
      const uLong crc = ::crc32(::crc32(0L, Z_NULL, 0), (const Bytef*)png.data() + at + 4, n + 4);
      CHECK(be32(png, at + 8 + n) == std::uint32_t(crc));
      types += type + " ";
      if (type == "IHDR") {
        CHECK(be32(data, 0) == w);
        CHECK(be32(data, 4) == h);
        CHECK(int(data[8]) == 8);
        const int expect_type[5] = {0, 0, 4, 2, 6};
        CHECK(int(data[9]) == expect_type[ch]);
        CHECK(data.substr(10) == std::string(3, '\0'));
      }
      if (type == "IDAT") idat += data;
      at += 12 + n;
    }
    CHECK(types == "IHDR IDAT IEND ");
    std::vector<unsigned char> raw(std::size_t(h * (w * ch + 1)) + 10);
    uLongf len = raw.size();
    REQUIRE(::uncompress(raw.data(), &len, (const Bytef*)idat.data(), idat.size()) == Z_OK);
    REQUIRE(len == std::size_t(h * (w * ch + 1)));
    for (long long y = 0; y < h; ++y) {
      CHECK(raw[std::size_t(y * (w * ch + 1))] == 0);
      for (long long x = 0; x < w * ch; ++x) CHECK(raw[std::size_t(y * (w * ch + 1) + 1 + x)] == px[std::size_t(y * w * ch + x)]);
    }
  }
  std::uint8_t one = 0;
  CHECK_THROWS_AS(mon::encode_png(&one, 1, 1, 5), std::invalid_argument);
  CHECK_THROWS_AS(mon::encode_png(&one, 0, 1, 1), std::invalid_argument);
}

TEST_CASE("histograms: TensorFlow's default buckets, counted as a plain loop counts them", "[monitor]") {
  const auto& lim = mon::default_bucket_limits();
  REQUIRE(lim.size() % 2 == 1);
  const std::size_t mid = lim.size() / 2;
  CHECK(lim.front() == -DBL_MAX);
  CHECK(lim.back() == DBL_MAX);
  CHECK(lim[mid] == 0.0);
  CHECK(lim[mid + 1] == 1e-12);
  for (std::size_t i = 0; i + 1 < lim.size(); ++i) CHECK(lim[i] < lim[i + 1]);
  for (std::size_t i = 1; i <= mid; ++i) CHECK(lim[mid - i] == -lim[mid + i]);
  for (std::size_t i = mid + 1; i + 2 < lim.size(); ++i) CHECK(lim[i + 1] / lim[i] == Approx(1.1).epsilon(1e-12));
  CHECK(lim[lim.size() - 2] < 1e20);
  CHECK(lim[lim.size() - 2] * 1.1 >= 1e20 * (1 - 1e-12));
  CHECK(lim.size() == 1551);  // 775 limits each side of 0 (1e-12 x 1.1^k below 1e20, then DBL_MAX)

  std::mt19937 rng(3);
  std::normal_distribution<double> nd(0.0, 2.0);
  std::vector<double> v;
  for (int i = 0; i < 1003; ++i) v.push_back(nd(rng));
  v.push_back(0.0);
  v.push_back(0.0);
  v.push_back(1e-12);  // exactly a limit: counts in the next bucket up
  v.push_back(-5e30);  // below -1e20
  v.push_back(7e25);
  std::vector<double> count(lim.size(), 0.0);
  double sum = 0, sq = 0, lo = v[0], hi = v[0];
  for (double x : v) {
    std::size_t b = 0;
    while (b < lim.size() && !(x < lim[b])) ++b;  // the first limit above x
    count[b] += 1;
    sum += x, sq += x * x, lo = std::min(lo, x), hi = std::max(hi, x);
  }
  const auto h = mon::make_histogram(v);
  CHECK(h.num == double(v.size()));
  CHECK(h.min == lo);
  CHECK(h.max == hi);
  CHECK(h.sum == Approx(sum).epsilon(1e-12));
  CHECK(h.sum_squares == Approx(sq).epsilon(1e-12));
  REQUIRE(h.bucket.size() == h.bucket_limit.size());
  // expand the written buckets: a non-empty one sits at its limit, an empty one stands for a run ending at its limit
  std::vector<double> expanded(lim.size(), -1.0);
  std::size_t at = 0;
  for (std::size_t k = 0; k < h.bucket.size(); ++k) {
    const std::size_t b = std::size_t(std::find(lim.begin(), lim.end(), h.bucket_limit[k]) - lim.begin());
    REQUIRE(b < lim.size());
    REQUIRE(b >= at);
    if (h.bucket[k] > 0) {
      CHECK(b == at);  // a non-empty bucket is never merged
    } else if (k + 1 < h.bucket.size()) {
      CHECK(h.bucket[k + 1] > 0);  // runs of empty buckets are merged whole
    }
    for (std::size_t i = at; i < b; ++i) expanded[i] = 0;
    expanded[b] = h.bucket[k];
    at = b + 1;
  }
  CHECK(at == lim.size());
  for (std::size_t i = 0; i < lim.size(); ++i) CHECK(expanded[i] == count[i]);
  CHECK(count[mid + 1] >= 2);  // the zeros (0 < 1e-12)
  CHECK(count[1] == 1);      // -5e30: the first limit above it is the one just above -1e20
  CHECK(count.back() == 1);  // 7e25: the bucket of limit DBL_MAX

  CHECK_THROWS_AS(mon::make_histogram(std::vector<double>{}), std::invalid_argument);
  CHECK_THROWS_WITH(mon::make_histogram(std::vector<double>{1.0, NAN}), Catch::Contains("value 1 of 2 is NaN"));
}

TEST_CASE("images: CHW / HWC / HW to pixels, and the grid of [N,C,H,W] filters", "[monitor]") {
  ts::Tensor<float, ts::Shape<3, 2, 5>> chw;  // C=3, H=2, W=5, values outside [0, 1] clamp
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 5; ++x) chw(c, y, x) = float(c * 10 + y * 5 + x) / 20.0f - 0.2f;
  const auto im = mon::make_image(chw);
  REQUIRE(im.height == 2);
  REQUIRE(im.width == 5);
  REQUIRE(im.channels == 3);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 5; ++x) {
        const double v = std::clamp(double(chw(c, y, x)), 0.0, 1.0);
        CHECK(int(im.pixels[std::size_t((y * 5 + x) * 3 + c)]) == int(std::lround(v * 255)));
      }
  ts::Tensor<std::uint8_t, ts::Shape<3, 4, 2>> hwc;
  for (int i = 0; i < 24; ++i) hwc.data()[i] = std::uint8_t(i * 11);
  const auto im2 = mon::make_image(hwc, mon::image_format::hwc);
  CHECK((im2.height == 3 && im2.width == 4 && im2.channels == 2));
  CHECK(im2.pixels == std::vector<std::uint8_t>(hwc.data(), hwc.data() + 24));
  ts::Tensor<std::uint8_t, ts::Shape<6, 2, 2>> bad;
  CHECK_THROWS_WITH(mon::make_image(bad), Catch::Contains("[6, 2, 2]") && Catch::Contains("image_format::hwc"));
  const auto im3 = mon::make_image(ts::slice<2>(hwc, 1, 2), mon::image_format::hwc);  // a strided view [3, 4, 1]
  REQUIRE((im3.height == 3 && im3.width == 4 && im3.channels == 1));
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x) CHECK(int(im3.pixels[std::size_t(y * 4 + x)]) == int(hwc(y, x, 1)));

  // four 1-channel 2x3 filters, 2 columns, padding 1, scale 2: a 2 x 2 grid of 4x6 tiles
  ts::Tensor<float, ts::Shape<4, 1, 2, 3>> f;
  for (int i = 0; i < 24; ++i) f.data()[i] = float(i) - 6.0f;
  const auto g = mon::make_image_grid(f, {.columns = 2, .padding = 1, .scale = 2, .pad_value = 9});
  REQUIRE(g.channels == 1);
  REQUIRE(g.height == 2 * (4 + 1) + 1);
  REQUIRE(g.width == 2 * (6 + 1) + 1);
  for (long long y = 0; y < g.height; ++y)
    for (long long x = 0; x < g.width; ++x) {
      const bool pad = y % 5 == 0 || x % 7 == 0;
      const int t = int(y / 5) * 2 + int(x / 7);
      const int fy = int((y % 5 - 1) / 2), fx = int((x % 7 - 1) / 2);
      const int want = pad ? 9 : int(std::lround((f.data()[t * 6 + fy * 3 + fx] + 6.0) / 23.0 * 255));
      CHECK(int(g.pixels[std::size_t(y * g.width + x)]) == want);
    }
  CHECK_THROWS_AS(mon::make_image_grid(chw), std::invalid_argument);
}

TEST_CASE("summary_writer: the event file, record by record", "[monitor]") {
  tst::temp_dir dir("monitor_events");
  const auto logdir = dir / "run" / "a";  // created with its parent
  std::filesystem::path file;
  {
    mon::summary_writer w(logdir);
    file = w.path();
    CHECK(file.parent_path() == logdir);
    CHECK(file.filename().string().rfind("events.out.tfevents.", 0) == 0);
    w.add_scalar("loss", 0.25, 7);
    w.add_scalar("loss", -3.5, -2);
    ts::ad::Var<float, 1> p(ts::Tensor<float, ts::Shape<ts::dyn>>(5), true);
    p.mutable_value() = 2.0f;
    fake_model m{&p, {}};
    m.plain = 1.0f;
    w.add_histograms(m, 3, "net/");  // p has no gradient yet
    p.mutable_grad() = -1.0f;
    w.add_histograms(m, 4);
    w.add_text("note", "a *b*", 5);
    CHECK_THROWS_AS(w.add_scalar("", 1, 0), std::invalid_argument);
    CHECK_THROWS_WITH(w.add_histogram("h", std::vector<float>{1, INFINITY}, 9), Catch::Contains("'h', step 9"));
    mon::summary_writer second(logdir);  // same second, same name: the second file gets a suffix
    CHECK(second.path() != file);
  }
  const auto recs = read_records(file_text(file));
  REQUIRE(recs.size() == 1 + 2 + 2 + 3 + 1);
  CHECK(field(parse(recs[0]), 3).bytes == "brain.Event:2");
  auto ev = parse(recs[1]);
  CHECK(field(ev, 2).num == 7);
  auto v = value_of(recs[1]);
  CHECK(field(v, 1).bytes == "loss");
  float f;
  const auto bits = std::uint32_t(field(v, 2).num);
  std::memcpy(&f, &bits, 4);
  CHECK(f == 0.25f);
  CHECK(std::int64_t(field(parse(recs[2]), 2).num) == -2);
  std::vector<std::string> tags;
  for (std::size_t i = 3; i < 8; ++i) tags.push_back(field(value_of(recs[i]), 1).bytes);
  CHECK(tags == std::vector<std::string>{"net/weights/w", "net/weights/plain", "weights/w", "grads/w", "weights/plain"});
  const auto grad = parse(field(value_of(recs[6]), 6).bytes);  // grads/w: five values -1
  CHECK(as_double(field(grad, 1).num) == -1.0);
  CHECK(as_double(field(grad, 3).num) == 5.0);
  CHECK(as_double(field(grad, 4).num) == -5.0);
  const auto text = value_of(recs[8]);
  CHECK(field(parse(field(text, 8).bytes), 8).bytes == "a *b*");
  CHECK(field(parse(field(parse(field(text, 9).bytes), 1).bytes), 1).bytes == "text");
}

TEST_CASE("summary_writer: errors name the path", "[monitor]") {
  tst::temp_dir dir("monitor_errors");
  { std::ofstream(dir / "file") << "x"; }
  CHECK_THROWS_AS(mon::summary_writer(dir / "file"), ts::io_error);
  CHECK_THROWS_WITH(mon::summary_writer(dir / "file" / "sub"), Catch::Contains((dir / "file" / "sub").string()));
  mon::summary_writer w(dir / "ok");
  w.close();
  CHECK_THROWS_AS(w.add_scalar("x", 1, 0), std::logic_error);
  CHECK_THROWS_AS(w.flush(), std::logic_error);
  CHECK_THROWS_AS(mon::csv_writer(dir / "file" / "log.csv"), ts::io_error);
}

TEST_CASE("csv_writer: header from the first row, quoting, the column check", "[monitor]") {
  tst::temp_dir dir("monitor_csv");
  const auto path = dir / "log.csv";
  {
    mon::csv_writer c(path);
    c.write_row({{"step", 1}, {"loss", 0.1}, {"note", "plain"}});
    CHECK(file_text(path) == "step,loss,note\n1,0.1,plain\n");  // flushed per row
    c.write_row({{"step", 2}, {"loss", -2.5f}, {"note", "a, \"b\"\nc"}});
    c.write_row({{"step", std::int64_t(1) << 40}, {"loss", 1e-300}, {"note", " lead"}});
    CHECK_THROWS_WITH(c.write_row({{"step", 3}, {"acc", 0.5}, {"note", ""}}),
                      Catch::Contains("row 4") && Catch::Contains("(step, acc, note)") &&
                          Catch::Contains("(step, loss, note)"));
    CHECK_THROWS_AS(c.write_row({{"step", 3}, {"loss", 0.5}}), std::invalid_argument);
    c.write_row({{"step", true}, {"loss", std::string("x")}, {"note", "\"\""}});
    CHECK(c.rows() == 4);
  }
  CHECK(file_text(path) ==
        "step,loss,note\n1,0.1,plain\n2,-2.5,\"a, \"\"b\"\"\nc\"\n1099511627776,1e-300,\" lead\"\ntrue,x,\"\"\"\"\"\"\n");
  CHECK(mon::csv_writer::quote("a b") == "a b");
  CHECK(mon::csv_writer::quote("x\r") == "\"x\r\"");
  mon::csv_writer d(dir / "dup.csv");
  CHECK_THROWS_WITH(d.write_row({{"a", 1}, {"a", 2}}), Catch::Contains("'a' appears twice"));
  if (std::filesystem::exists("/dev/full")) {  // every write fails with ENOSPC: the flush per row reports it
    mon::csv_writer full("/dev/full");
    CHECK_THROWS_WITH(full.write_row({{"a", 1}}), Catch::Contains("writing row 1 to /dev/full failed"));
  }
}
