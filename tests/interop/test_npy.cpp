// .npy files (interop/npy.hpp): bit-for-bit round trips of every element type npy has, at odd sizes and ranks 0-4,
// with the file's bytes checked against the layout numpy writes (computed here); files in versions 2.0 and 3.0 and
// headers written other ways; hostile and refused files (Fortran order, big-endian, truncated, extra bytes, bad
// header dicts, bool bytes), every byte of a file changed.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "file_support.hpp"
#include "tessera/interop/npy.hpp"
#include "tessera/tessera.hpp"

namespace ts = tessera;
using ts::dyn;
using ts::index_t;

namespace {

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
std::string descr() {
  if constexpr (std::is_same_v<T, float>) return "<f4";
  else if constexpr (std::is_same_v<T, double>) return "<f8";
  else if constexpr (std::is_same_v<T, std::int8_t>) return "|i1";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "|u1";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "<i4";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "<i8";
  else return "|b1";
}

/// A file as numpy 1.x writes it, built here: magic, version, u16 length, the dict padded to 64 bytes and '\n'.
tst::bytes numpy_file(const std::string& dict, const tst::bytes& data, int major = 1, bool pad = true) {
  const std::size_t pre = major == 1 ? 10 : 12;
  std::string h = dict;
  if (pad)
    while ((pre + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  tst::bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
  for (std::size_t i = 0; i < pre - 8; ++i) b.push_back(static_cast<unsigned char>(h.size() >> (8 * i)));
  b.insert(b.end(), h.begin(), h.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::string load_error(const tst::temp_dir& dir, const tst::bytes& b) {
  tst::write_file(dir / "h.npy", b);
  try {
    (void)ts::read_npy_header(dir / "h.npy");
  } catch (const ts::io_error& e) {
    return e.what();
  }
  return "";
}

template <class T, int R>
void round_trip(const tst::temp_dir& dir, const ts::dims_t<R>& d, std::uint64_t seed) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  fill_bits<T>(t, seed);
  ts::save_npy(dir / "t.npy", t);
  std::string shape = "(";
  for (int i = 0; i < R; ++i) shape += (i ? ", " : "") + std::to_string(d[i]);
  shape += R == 1 ? ",)" : ")";
  const std::size_t bytes = std::size_t(t.size()) * sizeof(T);
  tst::bytes data(bytes);
  if (bytes) std::memcpy(data.data(), t.data(), bytes);
  CHECK(tst::read_file(dir / "t.npy") ==
        numpy_file("{'descr': '" + descr<T>() + "', 'fortran_order': False, 'shape': " + shape + ", }", data));

  const auto h = ts::read_npy_header(dir / "t.npy");
  CHECK(h.descr == descr<T>());
  CHECK(h.shape == std::vector<index_t>(d.begin(), d.end()));
  CHECK(h.data_offset % 64 == 0);
  const auto u = ts::load_npy<T, ts::dyn_shape_t<R>>(dir / "t.npy");
  REQUIRE(u.dims() == t.dims());
  CHECK((bytes == 0 || std::memcmp(u.data(), t.data(), bytes) == 0));
  ts::Tensor<T, ts::dyn_shape_t<R>> v(d);
  ts::load_npy_into(dir / "t.npy", v);
  CHECK((bytes == 0 || std::memcmp(v.data(), t.data(), bytes) == 0));
}

}  // namespace

TEMPLATE_TEST_CASE("npy: every element type round-trips bit for bit in numpy's layout, ranks 0-4, odd sizes", "[npy]", float,
                   double, std::int8_t, std::uint8_t, std::int32_t, std::int64_t, bool) {
  tst::temp_dir dir("npy_round_trip");
  round_trip<TestType, 0>(dir, {}, 1);
  for (index_t n : {1, 7, 33, 65, 127}) {
    INFO("n = " << n);
    round_trip<TestType, 1>(dir, {n}, std::uint64_t(n));
    round_trip<TestType, 2>(dir, {n, 3}, std::uint64_t(n) + 1);
    round_trip<TestType, 3>(dir, {3, n, 1}, std::uint64_t(n) + 2);
    round_trip<TestType, 4>(dir, {2, 1, n, 3}, std::uint64_t(n) + 3);
  }
  round_trip<TestType, 2>(dir, {0, 5}, 9);
}

TEST_CASE("npy: strided views, static shapes, headers written other ways", "[npy]") {
  tst::temp_dir dir("npy_views");
  ts::Tensor<double, ts::Shape<dyn, dyn>> a(7, 33);
  fill_bits<double>(a, 5);
  ts::save_npy(dir / "at.npy", ts::transpose(a.view()));
  const auto at = ts::load_npy<double, ts::Shape<33, 7>>(dir / "at.npy");
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 33; ++j) REQUIRE(std::memcmp(&at(j, i), &a(i, j), 8) == 0);
  ts::Tensor<double, ts::Shape<dyn, dyn>> b(7, 33);
  ts::load_npy_into(dir / "at.npy", ts::transpose(b.view()));
  CHECK(std::memcmp(b.data(), a.data(), 7 * 33 * 8) == 0);

  CHECK_THROWS_WITH((ts::load_npy<double, ts::Shape<33, 8>>(dir / "at.npy")),
                    Catch::Contains("the file holds shape [33, 7] but the destination has shape [33, 8]"));
  CHECK_THROWS_WITH((ts::load_npy<float, ts::Shape<dyn, 7>>(dir / "at.npy")),
                    Catch::Contains("at.npy: the file holds '<f8' (double) of shape [33, 7] but the destination is float"));
  CHECK_THROWS_WITH((ts::load_npy<double, ts::Shape<dyn>>(dir / "at.npy")), Catch::Contains("shape [33, 7]"));

  const tst::bytes f = {0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64};  // 1, 2, 3 as float
  for (const auto& file : {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", f, 2),
                           numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", f, 3),
                           numpy_file("{\"shape\": (3,), \"descr\": \"=f4\", \"fortran_order\": False}", f, 1, false),
                           numpy_file("{'fortran_order':False,'shape':(3,),'descr':'<f4'}", f)}) {
    tst::write_file(dir / "o.npy", file);
    const auto x = ts::load_npy<float, ts::Shape<3>>(dir / "o.npy");
    CHECK(x(0) == 1.0f);
    CHECK(x(2) == 3.0f);
  }
}

TEST_CASE("npy: refused and hostile files are io_errors that say why", "[npy][hostile]") {
  tst::temp_dir dir("npy_hostile");
  const tst::bytes f8(8);
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  REQUIRE(load_error(dir, numpy_file(ok, f8)).empty());
  const auto good = numpy_file(ok, f8);
  const std::vector<std::pair<tst::bytes, std::string>> cases = {
      {numpy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", f8), "fortran_order is True"},
      {numpy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", f8), "descr '>f4' is not supported"},
      {numpy_file("{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", f8), "descr '<f2' is not supported"},
      {numpy_file("{'descr': '<V2', 'fortran_order': False, 'shape': (4,), }", f8), "descr '<V2' is not supported"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", f8),
       "shape [3] of '<f4' needs 12 bytes of data, the file has 8 (truncated)"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", f8), "needs 4 bytes of data, the file has 8"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", f8), "too large"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", f8), "too large"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", f8), "extent >= 0"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", f8), "written (n,)"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,2), }", f8), "rank above"},
      {numpy_file("{'descr': '<f4', 'shape': (2,), }", f8), "lacks descr, fortran_order or shape"},
      {numpy_file("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f8), "unexpected key 'descr'"},
      {numpy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", f8), "unexpected key 'x'"},
      {numpy_file("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", f8), "neither True nor False"},
      {numpy_file("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", {1, 3}), "bool element 1 is the byte 3"},
      {numpy_file(ok + "x", f8), "bytes after the header dict"},
      {tst::bytes(good.begin(), good.begin() + 30), "truncated: the header length says 118 bytes"},
      {tst::bytes(good.begin(), good.begin() + 6), "truncated: 6 bytes"},
      {tst::bytes{'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0, 0}, "not an .npy file"},
  };
  for (const auto& [b, what] : cases) {
    INFO(what);
    CHECK_THAT(load_error(dir, b), Catch::Contains("tessera: npy ") && Catch::Contains(what));
  }
  auto v4 = good;
  v4[6] = 4;
  CHECK_THAT(load_error(dir, v4), Catch::Contains("format version 4.0 is not supported"));
  auto no_newline = good;
  no_newline[10 + 117] = ' ';
  CHECK_THAT(load_error(dir, no_newline), Catch::Contains("does not end with a newline"));
  CHECK_THROWS_WITH(ts::read_npy_header(dir / "missing.npy"), Catch::Contains("missing.npy: cannot open"));
  CHECK_THROWS_WITH(ts::read_npy_header(dir.path), Catch::Contains("it is a directory"));

  // every byte of the file changed: an array or an io_error, never a crash
  int read = 0, refused = 0;
  for (std::size_t i = 0; i < good.size(); ++i)
    for (unsigned v : {0u, 0x7fu, 0xffu, unsigned(good[i] ^ 0x20u)}) {
      auto bad = good;
      bad[i] = static_cast<unsigned char>(v);
      (load_error(dir, bad).empty() ? read : refused)++;
    }
  CHECK(read > 0);
  CHECK(refused > 0);
}
