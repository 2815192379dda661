// Factories (core/factory.hpp): zeros, ones, full, arange, linspace, eye, rand, randn, randint. Values are checked
// against plain loops (and Rng's own draws for the random ones), arange's lengths against torch 1.13's for odd steps,
// random tensors for reproducibility and, at n = 100000, their mean and variance within 5 standard errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <tessera/core/factory.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dims_t;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
template <class T>
std::vector<double> as_doubles(const std::vector<T>& v) {
  std::vector<double> d;
  for (const T& x : v) d.push_back(double(x));
  return d;
}
}  // namespace

TEMPLATE_TEST_CASE("zeros, ones, full: every element, static and dynamic shapes", "[factory]", float, double, ts::bfloat16,
                   std::int8_t, std::uint8_t, std::int32_t, std::int64_t, bool) {
  using T = TestType;
  auto z = ts::zeros<T, Shape<2, 3>>();
  static_assert(std::is_same_v<decltype(z), ts::Tensor<T, Shape<2, 3>, ts::cpu>>);  // cpu: the Tensor's default
  for (index_t i = 0; i < z.size(); ++i) CHECK(double(z.data()[i]) == 0.0);
  auto o = ts::ones<T, Shape<dyn, 3>, ts::cpu_threads>(5);
  static_assert(std::is_same_v<decltype(o), ts::Tensor<T, Shape<dyn, 3>, ts::cpu_threads>>);
  CHECK(o.dims() == dims_t<2>{5, 3});
  for (index_t i = 0; i < o.size(); ++i) CHECK(double(o.data()[i]) == 1.0);
  auto d = ts::zeros<T>(4, 7, 1);
  static_assert(std::is_same_v<decltype(d), ts::Tensor<T, Shape<dyn, dyn, dyn>, ts::cpu>>);
  CHECK(d.dims() == dims_t<3>{4, 7, 1});
  auto e = ts::ones<T, ts::cpu_threads>(dims_t<2>{3, 0});
  CHECK(e.size() == 0);
  auto f = ts::full<T, Shape<dyn, 2>>({3, 2}, T(1));
  CHECK(f.dims() == dims_t<2>{3, 2});
  for (index_t i = 0; i < f.size(); ++i) CHECK(double(f.data()[i]) == 1.0);
  auto g = ts::ones<T, Shape<dyn, 3>>(dims_t<2>{2, 3});
  CHECK(g.size() == 6);
  auto h = ts::zeros<T, Shape<dyn, 3>>(2, 3);  // every extent given
  CHECK(h.dims() == dims_t<2>{2, 3});
}

TEST_CASE("full: the value, in each form", "[factory]") {
  const auto a = ts::full<float, Shape<3>>(2.5f);
  CHECK(a.to_vector() == std::vector<float>{2.5f, 2.5f, 2.5f});
  const auto b = ts::full<std::int32_t, ts::cpu_threads>(dims_t<2>{2, 2}, -7);
  static_assert(std::is_same_v<std::remove_const_t<decltype(b)>, ts::Tensor<std::int32_t, Shape<dyn, dyn>, ts::cpu_threads>>);
  CHECK(b.to_vector() == std::vector<std::int32_t>{-7, -7, -7, -7});
  const auto c = ts::full<double, Shape<>>(0.125);
  CHECK(c.item() == 0.125);
}

TEST_CASE("factories: a negative or misfit size names the shape", "[factory]") {
  CHECK_THROWS_WITH(ts::zeros<float>(2, -3), Catch::Contains("[2, -3]"));
  using S3 = Shape<dyn, 3>;
  const dims_t<2> negative{-1, 3}, misfit{2, 4};
  CHECK_THROWS_AS((ts::ones<float, S3>(negative)), ts::shape_error);
  CHECK_THROWS_WITH((ts::ones<float, S3>(misfit)), Catch::Contains("[2, 4]"));
  CHECK_THROWS_WITH(ts::eye<float>(-2), Catch::Contains("[-2, -2]"));
  ts::Rng rng(1);
  CHECK_THROWS_WITH(ts::rand<float>(dims_t<1>{-5}, rng), Catch::Contains("[-5]"));
}

TEST_CASE("arange: torch's lengths at odd steps, values start + i * step", "[factory]") {
  struct c {
    double start, end, step;
    index_t torch_len;  // len(torch.arange(start, end, step, dtype=torch.float64)) in torch 1.13
  };
  for (const c& k : {c{0, 1, 0.1, 10}, c{1, 2.5, 0.5, 3}, c{0, 10, 3, 4}, c{-1, -10, -2.5, 4}, c{0, 0.3, 0.1, 3},
                     c{0, 1, 0.3, 4}, c{2, 2, 1, 0}, c{0.5, -0.25, -0.25, 3}}) {
    CAPTURE(k.start, k.end, k.step);
    const auto t = ts::arange<double>(k.start, k.end, k.step);
    REQUIRE(t.size() == k.torch_len);
    for (index_t i = 0; i < t.size(); ++i) CHECK(t(i) == k.start + double(i) * k.step);
    const auto f = ts::arange<float, ts::cpu_threads>(k.start, k.end, k.step);
    REQUIRE(f.size() == k.torch_len);
    for (index_t i = 0; i < f.size(); ++i) CHECK(f(i) == float(k.start + double(i) * k.step));
  }
  CHECK(ts::arange<std::int32_t>(-5, 7, 3).to_vector() == std::vector<std::int32_t>{-5, -2, 1, 4});
  CHECK(ts::arange<std::int64_t>(10, 0, -4).to_vector() == std::vector<std::int64_t>{10, 6, 2});
  CHECK(ts::arange<std::uint8_t>(4).to_vector() == std::vector<std::uint8_t>{0, 1, 2, 3});
  const auto b = ts::arange<ts::bfloat16>(0, 2, 0.5);
  CHECK(as_doubles(b.to_vector()) == std::vector<double>{0, 0.5, 1, 1.5});
}

TEST_CASE("arange: bad arguments name the values", "[factory]") {
  CHECK_THROWS_WITH(ts::arange<float>(0, 1, 0), Catch::Contains("start 0, end 1, step 0") && Catch::Contains("nonzero"));
  CHECK_THROWS_WITH(ts::arange<float>(0, 5, -1), Catch::Contains("step -1") && Catch::Contains("sign"));
  CHECK_THROWS_WITH(ts::arange<std::int32_t>(5, 0, 2), Catch::Contains("start 5, end 0, step 2"));
  CHECK_THROWS_AS(ts::arange<double>(0, INFINITY, 1), std::invalid_argument);
  CHECK_THROWS_AS(ts::arange<double>(NAN), std::invalid_argument);
}

TEST_CASE("linspace: torch's two halves, endpoints exact", "[factory]") {
  for (index_t steps : {2, 5, 7, 10}) {
    const auto t = ts::linspace<float>(-1.0, 1.0, steps);
    REQUIRE(t.size() == steps);
    const float step = 2.0f / float(steps - 1);
    for (index_t i = 0; i < steps; ++i) CHECK(t(i) == (i < steps / 2 ? -1.0f + step * float(i) : 1.0f - step * float(steps - i - 1)));
    CHECK(t(0) == -1.0f);
    CHECK(t(steps - 1) == 1.0f);
  }
  // torch.linspace(0, 10, 4, dtype=torch.int32) = [0, 3, 6, 10]
  CHECK(ts::linspace<std::int32_t>(0, 10, 4).to_vector() == std::vector<std::int32_t>{0, 3, 6, 10});
  CHECK(ts::linspace<double>(3, 7, 1).to_vector() == std::vector<double>{3});
  CHECK(ts::linspace<double, ts::cpu_threads>(3, 7, 0).size() == 0);
  CHECK_THROWS_WITH(ts::linspace<float>(0, 1, -2), Catch::Contains("steps -2"));
}

TEST_CASE("eye: ones on the diagonal, square or not", "[factory]") {
  for (auto [n, m] : std::initializer_list<std::pair<index_t, index_t>>{{3, 3}, {2, 5}, {5, 2}, {0, 4}, {1, 1}}) {
    const auto t = ts::eye<double, ts::cpu_threads>(n, m);
    REQUIRE(t.dims() == dims_t<2>{n, m});
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < m; ++j) CHECK(t(i, j) == (i == j ? 1.0 : 0.0));
  }
  CHECK(ts::eye<std::int32_t>(2).to_vector() == std::vector<std::int32_t>{1, 0, 0, 1});
}

TEST_CASE("rand, randn, randint: Rng's draws in row-major order, reproducible from a seed", "[factory]") {
  ts::Rng rng(42), ref(42);
  const auto a = ts::rand<float, Shape<3, 5>>(rng);
  for (index_t i = 0; i < a.size(); ++i) CHECK(a.data()[i] == ref.uniform());
  const auto b = ts::randn<double>(dims_t<2>{7, 3}, rng);  // the Rng advanced: the next draws
  for (index_t i = 0; i < b.size(); ++i) CHECK(b.data()[i] == ref.normal_double());
  const auto c = ts::randint<std::int64_t, Shape<dyn>>(-3, 4, dims_t<1>{11}, rng);
  for (index_t i = 0; i < c.size(); ++i) CHECK(c(i) == ref.uniform_int(-3, 3));
  CHECK(rng == ref);
  // a seed is a fresh Rng(seed); the same seed gives the same tensor under every policy
  ts::Rng r9(9);
  CHECK(ts::rand<float, Shape<4, 4>>(9).to_vector() == ts::rand<float, Shape<4, 4>, ts::cpu_threads>(r9).to_vector());
  CHECK(ts::randn<float>(dims_t<1>{33}, 5).to_vector() == ts::randn<float, ts::cpu_threads>(dims_t<1>{33}, 5).to_vector());
  CHECK(ts::randn<float>(dims_t<1>{33}, 5).to_vector() != ts::randn<float>(dims_t<1>{33}, 6).to_vector());
  CHECK(ts::randint<std::int32_t>(0, 100, dims_t<1>{20}, 3).to_vector() ==
        ts::randint<std::int32_t, Shape<20>>(0, 100, 3).to_vector());
  const auto bf = ts::rand<ts::bfloat16, Shape<dyn>>(dims_t<1>{50}, 1);
  for (index_t i = 0; i < bf.size(); ++i) CHECK((float(bf(i)) >= 0.0f && float(bf(i)) <= 1.0f));
}

TEST_CASE("rand and randn: mean and variance at n = 100000 within 5 standard errors", "[factory]") {
  const index_t n = 100000;
  const auto u = ts::rand<double, ts::cpu_threads>(dims_t<1>{n}, 2024).to_vector();
  double s = 0, s2 = 0, lo = 1, hi = 0;
  for (double x : u) s += x, s2 += x * x, lo = std::min(lo, x), hi = std::max(hi, x);
  double mean = s / double(n), var = s2 / double(n) - mean * mean;
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  CHECK(std::abs(mean - 0.5) < 5 * std::sqrt(1.0 / 12.0 / double(n)));
  CHECK(std::abs(var - 1.0 / 12.0) < 5 * std::sqrt((1.0 / 80.0 - 1.0 / 144.0) / double(n)));  // Var(X^2 - ...) of U(0,1)
  const auto g = ts::randn<float>(dims_t<2>{n / 10, 10}, 77).to_vector();
  s = s2 = 0;
  for (float x : g) s += x, s2 += double(x) * x;
  mean = s / double(n), var = s2 / double(n) - mean * mean;
  CHECK(std::abs(mean) < 5 * std::sqrt(1.0 / double(n)));
  CHECK(std::abs(var - 1.0) < 5 * std::sqrt(2.0 / double(n)));
}

TEST_CASE("randint: [low, high), every value drawn, bad ranges name the values", "[factory]") {
  const auto t = ts::randint<std::uint8_t>(250, 256, dims_t<1>{600}, 11).to_vector();
  std::set<int> seen(t.begin(), t.end());
  CHECK(seen == std::set<int>{250, 251, 252, 253, 254, 255});
  const auto f = ts::randint<float, Shape<dyn, 2>>(-2, 1, dims_t<2>{300, 2}, 4).to_vector();
  std::set<float> fs(f.begin(), f.end());
  CHECK(fs == std::set<float>{-2.0f, -1.0f, 0.0f});
  CHECK_THROWS_WITH(ts::randint<std::int32_t>(5, 5, dims_t<1>{3}, 1), Catch::Contains("low 5, high 5"));
  CHECK_THROWS_WITH(ts::randint<std::int32_t>(5, 2, dims_t<1>{3}, 1), Catch::Contains("high must be greater"));
  CHECK_THROWS_WITH(ts::randint<std::uint8_t>(0, 257, dims_t<1>{3}, 1), Catch::Contains("does not fit in uint8"));
  CHECK_THROWS_WITH(ts::randint<std::int8_t>(-129, 0, dims_t<1>{3}, 1), Catch::Contains("low -129"));
}
