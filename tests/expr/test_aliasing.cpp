// Aliasing is safe: an assignment whose operands overlap the destination either runs in place (when every
// element reads only itself) or goes through a temporary. Never a silently wrong answer.
#include <catch2/catch.hpp>

#include <tessera/tessera.hpp>

namespace ts = tessera;

TEMPLATE_TEST_CASE("a = a + b runs in place, in one pass", "[alias]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  for (ts::index_t n : {1, 7, 65, 50000}) {
    ts::Tensor<float, ts::Shape<ts::dyn>, P> a(n), b(n);
    for (ts::index_t i = 0; i < n; ++i) {
      a(i) = float(i);
      b(i) = 2.0f;
    }
    ts::stats::reset();
    a = a + b * a;
    CHECK(ts::stats::read().passes == 1);
    CHECK(ts::stats::read().allocations == 0);
    for (ts::index_t i = 0; i < n; ++i) REQUIRE(a(i) == 3.0f * float(i));
  }
}

TEMPLATE_TEST_CASE("a = transpose(a) on a square tensor gives the transpose", "[alias]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  for (ts::index_t n : {1, 7, 33, 127, 300}) {
    ts::Tensor<std::int32_t, ts::Shape<ts::dyn, ts::dyn>, P> a(n, n);
    for (ts::index_t i = 0; i < n; ++i)
      for (ts::index_t j = 0; j < n; ++j) a(i, j) = std::int32_t(i * 1000 + j);
    a = ts::transpose(a);
    for (ts::index_t i = 0; i < n; ++i)
      for (ts::index_t j = 0; j < n; ++j) REQUIRE(a(i, j) == std::int32_t(j * 1000 + i));
  }
}

TEST_CASE("a = a + transpose(a) reads the old values", "[alias]") {
  const ts::index_t n = 65;
  ts::Tensor<double, ts::Shape<ts::dyn, ts::dyn>> a(n, n);
  for (ts::index_t i = 0; i < n; ++i)
    for (ts::index_t j = 0; j < n; ++j) a(i, j) = double(i * n + j);
  a = a + ts::transpose(a);
  for (ts::index_t i = 0; i < n; ++i)
    for (ts::index_t j = 0; j < n; ++j) REQUIRE(a(i, j) == double(i * n + j + j * n + i));
}

TEST_CASE("overlapping shifted views copy as if through a temporary", "[alias]") {
  const ts::index_t n = 101;
  ts::Tensor<float, ts::Shape<ts::dyn>> a(n);
  for (ts::index_t i = 0; i < n; ++i) a(i) = float(i);
  // shift right by one: a[1:] = a[:-1] (a naive forward loop would smear a[0] everywhere)
  ts::slice<0>(a, 1, n) = ts::slice<0>(a, 0, n - 1);
  CHECK(a(0) == 0.0f);
  for (ts::index_t i = 1; i < n; ++i) REQUIRE(a(i) == float(i - 1));
  // shift left by one: a[:-1] = a[1:] * 2
  ts::slice<0>(a, 0, n - 1) = ts::slice<0>(a, 1, n) * 2.0f;
  for (ts::index_t i = 0; i + 1 < n; ++i) REQUIRE(a(i) == 2.0f * float(i));
}

TEST_CASE("a reduction into part of its own source", "[alias]") {
  ts::Tensor<float, ts::Shape<4, 4>> a;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) a(i, j) = float(i + j);
  // row sums written into column 0 of the same tensor
  ts::select<1>(a, 0) = ts::sum<1>(a);
  for (int i = 0; i < 4; ++i) REQUIRE(a(i, 0) == float(4 * i + 6));
  for (int i = 0; i < 4; ++i) REQUIRE(a(i, 1) == float(i + 1));
}

TEST_CASE("a broadcast view cannot be a destination", "[alias]") {
  ts::Tensor<float, ts::Shape<3>> row;
  auto b = ts::broadcast_to<ts::Shape<ts::dyn, 3>>(row, {4, 3});
  ts::View<float, ts::Shape<ts::dyn, 3>> writable(const_cast<float*>(b.data()), b.dims(), b.strides());
  ts::Tensor<float, ts::Shape<ts::dyn, 3>> x(4);
  x = 1.0f;
  REQUIRE_THROWS_AS(writable = x + 1.0f, ts::shape_error);
  REQUIRE_THROWS_WITH(writable = x + 1.0f, Catch::Contains("broadcast view"));
}
