// CUDA policy tests: the same expressions as on the CPU, one kernel launch each. Without a GPU the
// executable prints why and exits 77, which ctest reports as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <cstdio>
#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using ts::Shape;


TEMPLATE_TEST_CASE("the fused chain is one kernel and matches a host loop", "[cuda]", float, double) {
  using T = TestType;
  for (ts::index_t n : {1, 7, 33, 65, 127, 100003}) {
    ts::Tensor<T, Shape<dyn, 3>> x(n), y(n), z(n);
    for (ts::index_t i = 0; i < n; ++i)
      for (int j = 0; j < 3; ++j) {
        x(i, j) = T(0.01) * T(i % 101) - T(0.2) * T(j);
        y(i, j) = T(0.5) - T(0.003) * T(i % 37);
        z(i, j) = T(0.1) * T(j) - T(0.25);
      }
    auto dx = ts::to<ts::cuda>(x), dy = ts::to<ts::cuda>(y), dz = ts::to<ts::cuda>(z);
    ts::Tensor<T, Shape<dyn, 3>, ts::cuda> out(n);
    ts::stats::reset();
    out = ts::tanh(dx * dy + T(0.5) * dz) * ts::sigmoid(dx - dz) + ts::relu(dy);
    CHECK(ts::stats::read().launches == 1);
    CHECK(ts::stats::read().allocations == 0);
    auto h = ts::to<ts::cpu>(out);
    for (ts::index_t i = 0; i < n; ++i)
      for (int j = 0; j < 3; ++j) {
        const double a = x(i, j), b = y(i, j), c = z(i, j);
        const double ref = std::tanh(a * b + 0.5 * c) / (1 + std::exp(-(a - c))) + (b > 0 ? b : 0);
        REQUIRE(double(h(i, j)) == Approx(ref).epsilon(1e-5).margin(1e-6));
      }
  }
}

TEST_CASE("broadcasting, strided views and integer types on the device", "[cuda]") {
  const ts::index_t n = 65;
  ts::Tensor<std::int32_t, Shape<dyn, 7>> a(n);
  ts::Tensor<std::int32_t, Shape<7>> row;
  for (int j = 0; j < 7; ++j) row(j) = j * 10;
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 7; ++j) a(i, j) = std::int32_t(i - j);
  auto da = ts::to<ts::cuda>(a);
  auto drow = ts::to<ts::cuda>(row);
  ts::Tensor<std::int32_t, Shape<7, dyn>, ts::cuda> t = ts::transpose(da) + ts::unsqueeze<1>(drow);
  auto h = ts::to<ts::cpu>(t);
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 7; ++j) REQUIRE(h(j, i) == std::int32_t(i - j + j * 10));
  ts::Tensor<bool, Shape<dyn, 7>, ts::cuda> m = da > 3;
  auto hm = ts::to<ts::cpu>(m);
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 7; ++j) REQUIRE(hm(i, j) == (i - j > 3));
}

TEST_CASE("reductions over all and chosen axes on the device", "[cuda]") {
  const ts::index_t n = 127;
  ts::Tensor<float, Shape<dyn, 5, 3>> x(n);
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 3; ++k) x(i, j, k) = float((i * 7 + j * 3 + k) % 11) - 5.0f;
  auto dx = ts::to<ts::cuda>(x);
  ts::Tensor<float, Shape<>, ts::cuda> s = ts::sum(dx * 2.0f);
  ts::Tensor<float, Shape<dyn, 3>, ts::cuda> m = ts::mean<1>(dx);
  ts::Tensor<float, Shape<5>, ts::cuda> mx = ts::max<0, 2>(dx);
  auto hs = ts::to<ts::cpu>(s);
  auto hm = ts::to<ts::cpu>(m);
  auto hmx = ts::to<ts::cpu>(mx);
  double ref = 0;
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 3; ++k) ref += 2.0 * x(i, j, k);
  CHECK(hs() == Approx(ref).margin(1e-3));
  for (ts::index_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) {
      double r = 0;
      for (int j = 0; j < 5; ++j) r += x(i, j, k);
      REQUIRE(hm(i, k) == Approx(r / 5).epsilon(1e-6));
    }
  for (int j = 0; j < 5; ++j) {
    float r = -1e30f;
    for (ts::index_t i = 0; i < n; ++i)
      for (int k = 0; k < 3; ++k) r = std::max(r, x(i, j, k));
    REQUIRE(hmx(j) == r);
  }
}
