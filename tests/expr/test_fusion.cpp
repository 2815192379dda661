// Fusion is observable: in a test build (TESSERA_INSTRUMENT) the policies count passes over memory and
// allocations. A chain of elementwise operations must be one pass with no temporary.
#include <catch2/catch.hpp>

#include <cmath>
#include <tessera/tessera.hpp>

namespace ts = tessera;

static_assert(ts::stats::enabled, "the test build defines TESSERA_INSTRUMENT");

TEMPLATE_TEST_CASE("a chain of seven elementwise operations is one pass with no temporary", "[fusion]", ts::cpu,
                   ts::cpu_threads) {
  using P = TestType;
  ts::cpu_threads::set_num_threads(2);
  for (ts::index_t n : {1, 7, 33, 127, 70001}) {
    ts::Tensor<float, ts::Shape<ts::dyn, 3>, P> x(n), y(n), z(n), out(n);
    for (ts::index_t i = 0; i < n; ++i)
      for (int j = 0; j < 3; ++j) {
        x(i, j) = 0.01f * float(i % 97) - 0.3f * j;
        y(i, j) = 0.02f * float(i % 13) + 0.1f;
        z(i, j) = -0.05f * float(j) + 0.001f * float(i % 7);
      }
    ts::stats::reset();
    out = ts::tanh(x * y + 0.5f * z) * ts::sigmoid(x - z) + ts::relu(y);
    const auto c = ts::stats::read();
    CHECK(c.passes == 1);
    CHECK(c.allocations == 0);
    for (ts::index_t i = 0; i < n; ++i)
      for (int j = 0; j < 3; ++j) {
        const float a = x(i, j), b = y(i, j), d = z(i, j);
        const float ref = std::tanh(a * b + 0.5f * d) * (1.0f / (1.0f + std::exp(-(a - d)))) + (b > 0 ? b : 0.0f);
        REQUIRE(out(i, j) == Approx(ref).epsilon(1e-5).margin(1e-6));
      }
  }
}

TEST_CASE("a broadcast operand fuses into the same pass", "[fusion]") {
  const ts::index_t n = 65;
  ts::Tensor<double, ts::Shape<ts::dyn, 7>> x(n), out(n);
  ts::Tensor<double, ts::Shape<7>> bias;
  for (int j = 0; j < 7; ++j) bias(j) = 0.5 * j;
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 7; ++j) x(i, j) = double(i) - 3.0 * j;
  ts::stats::reset();
  out = ts::relu(x + bias) * 2.0 - ts::abs(x) / 4.0 + ts::exp(bias * 0.1);
  CHECK(ts::stats::read().passes == 1);
  CHECK(ts::stats::read().allocations == 0);
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 7; ++j) {
      const double v = x(i, j) + bias(j);
      const double ref = (v > 0 ? v : 0) * 2.0 - std::abs(x(i, j)) / 4.0 + std::exp(bias(j) * 0.1);
      REQUIRE(out(i, j) == Approx(ref).epsilon(1e-12));
    }
}

TEMPLATE_TEST_CASE("a reduction of an elementwise tree is one pass", "[fusion]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  ts::cpu_threads::set_num_threads(2);
  const ts::index_t n = 40001;
  ts::Tensor<float, ts::Shape<ts::dyn>, P> x(n), y(n);
  for (ts::index_t i = 0; i < n; ++i) {
    x(i) = float(i % 11) * 0.25f;
    y(i) = float(i % 5) - 2.0f;
  }
  ts::Tensor<float, ts::Shape<>, P> s;
  ts::stats::reset();
  s = ts::sum(x * y + ts::relu(y) - x / 2.0f);
  CHECK(ts::stats::read().passes == 1);
  CHECK(ts::stats::read().allocations == 0);
  double ref = 0;
  for (ts::index_t i = 0; i < n; ++i) {
    const double a = x(i), b = y(i);
    ref += a * b + (b > 0 ? b : 0) - a / 2;
  }
  CHECK(s() == Approx(ref).epsilon(1e-5));
}

TEST_CASE("a reduction inside an expression is evaluated once, then fused as a leaf", "[fusion]") {
  const ts::index_t n = 33;
  ts::Tensor<float, ts::Shape<ts::dyn, 5>> x(n), out(n);
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 5; ++j) x(i, j) = float(i * 5 + j) * 0.1f;
  ts::stats::reset();
  out = ts::exp(x - ts::max<1>(x, ts::keepdim));  // the softmax numerator
  // one pass for the row maxima (into one temporary), one for the expression
  CHECK(ts::stats::read().passes == 2);
  CHECK(ts::stats::read().allocations == 1);
  for (ts::index_t i = 0; i < n; ++i)
    for (int j = 0; j < 5; ++j) REQUIRE(out(i, j) == Approx(std::exp(float(j - 4) * 0.1f)).epsilon(1e-5));
}
