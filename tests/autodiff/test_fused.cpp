// Free-form expressions of Vars recorded whole (autodiff/fused.hpp): values and gradients against plain loops and
// finite differences, one pass forward and one pass backward, repeated leaves, broadcast leaves, constants, and
// the expression used lazily (auto) and as a Var.
#include <catch2/catch.hpp>

#include <cmath>
#include <tessera/autodiff/ops.hpp>
#include <tessera/autodiff/reduce_ops.hpp>

#include "autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;

namespace {
double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// y = tanh(a*b + c) * sigmoid(a - c) and its partial derivatives, by hand.
struct chain_ref {
  double y, da, db, dc;
  chain_ref(double a, double b, double c) {
    const double t = std::tanh(a * b + c), s = sig(a - c), dt = 1 - t * t, ds = s * (1 - s);
    y = t * s;
    da = dt * b * s + t * ds;
    db = dt * a * s;
    dc = dt * s - t * ds;
  }
};

template <class T, class P>
ts::Tensor<T, ts::dyn_shape_t<1>, P> filled(ts::index_t n, int salt) {
  ts::Tensor<T, ts::dyn_shape_t<1>, P> t(n);
  for (ts::index_t i = 0; i < n; ++i) t.data()[i] = T(std::sin(0.37 * double(i) + salt) * 1.3);
  return t;
}
}  // namespace

TEMPLATE_TEST_CASE("fused chain: values and gradients against plain loops", "[fused]", float, double) {
  using T = TestType;
  for (ts::index_t n : {1, 7, 33, 65, 1000, 40000}) {
    auto run = [&](auto policy) {
      using P = decltype(policy);
      auto a = ad::parameter(filled<T, P>(n, 1)), b = ad::parameter(filled<T, P>(n, 2)), c = ad::parameter(filled<T, P>(n, 3));
      auto g = filled<T, P>(n, 4);
      ad::Var<T, 1, P> y = ad::tanh(a * b + c) * ad::sigmoid(a - c);
      y.backward(g);
      const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
      for (ts::index_t i = 0; i < n; ++i) {
        const chain_ref r(a.value().data()[i], b.value().data()[i], c.value().data()[i]);
        const double gi = g.data()[i];
        INFO("n = " << n << ", i = " << i);
        CHECK(y.value().data()[i] == Approx(r.y).margin(tol));
        CHECK(a.grad().data()[i] == Approx(gi * r.da).margin(tol));
        CHECK(b.grad().data()[i] == Approx(gi * r.db).margin(tol));
        CHECK(c.grad().data()[i] == Approx(gi * r.dc).margin(tol));
      }
    };
    run(ts::cpu{});
    run(ts::cpu_threads{});
  }
}

#ifdef TESSERA_INSTRUMENT
TEST_CASE("fused chain: one pass forward, one pass backward", "[fused]") {
  const ts::index_t n = 100000;
  auto a = ad::parameter(filled<float, ts::cpu_threads>(n, 1)), b = ad::parameter(filled<float, ts::cpu_threads>(n, 2)),
       c = ad::parameter(filled<float, ts::cpu_threads>(n, 3));
  auto y = ad::tanh(a * b + c) * ad::sigmoid(a - c);  // not evaluated yet
  ts::stats::reset();
  const auto& v = y.value();
  CHECK(ts::stats::read().passes == 1);
  CHECK(v.size() == n);
  auto& nd = y.node();
  CHECK(nd.inputs.size() == 5);  // a, b, c, a, c: every occurrence, one node
  // the node's backward alone (the seed put in place first)
  nd.grad_buffer() = 1.0f;
  ts::stats::reset();
  nd.backward_fn();
  CHECK(ts::stats::read().passes == 1);
  CHECK(a.has_grad());
  CHECK(b.has_grad());
  CHECK(c.has_grad());
}
#endif

TEST_CASE("fused: gradients by finite differences (double), repeated leaves and constants", "[fused]") {
  for (ts::index_t n : {1, 7, 33}) {
    auto a = ad::parameter(gc::values<1>({n}, 1)), b = ad::parameter(gc::values<1>({n}, 2, 0.2, 1.5));
    auto c = ad::constant(gc::values<1>({n}, 3));
    gc::check([&] { return ad::sum(ad::tanh(a * b + c) * ad::sigmoid(a - c)); }, a, b);
    gc::check([&] { return ad::sum(a * a - a / b + 2.0 * ad::exp(-a) + ad::square(b) - 3.0 / b); }, a, b);
    gc::check([&] { return ad::sum(ad::log(b) + ad::sqrt(b) * ad::relu(a) + ad::gelu(a) - ad::abs(a - 0.1)); }, a, b);
    // an expression kept in a variable and used twice
    gc::check([&] {
      auto t = a * b + 1.0;
      return ad::sum(t * t + ad::tanh(t));
    }, a, b);
  }
}

TEST_CASE("fused: broadcast leaves get their gradients summed to their shape", "[fused]") {
  const ts::index_t N = 7, C = 5;
  auto x = ad::parameter(gc::values<2>({N, C}, 1));
  auto w = ad::parameter(gc::values<1>({C}, 2));
  auto s = ad::parameter(gc::values<2>({N, 1}, 3));
  gc::check([&] { return ad::sum(ad::tanh(x * w + s) * x); }, x, w, s);
}

TEST_CASE("fused: policies agree, gradients accumulate over two backward passes", "[fused]") {
  const ts::index_t n = 33;
  auto a = ad::parameter(filled<float, ts::cpu>(n, 1)), b = ad::parameter(filled<float, ts::cpu>(n, 2));
  ad::sum(a * b).backward();
  ad::sum(a * b).backward();
  for (ts::index_t i = 0; i < n; ++i) CHECK(a.grad().data()[i] == Approx(2 * b.value().data()[i]));
}

TEST_CASE("fused: an expression is a Var; evaluation happens once", "[fused]") {
  auto a = ad::parameter(filled<double, ts::cpu>(7, 1));
  auto e = a * 2.0 + 1.0;
  static_assert(std::is_base_of_v<ad::Var<double, 1, ts::cpu>, decltype(e)>);
  CHECK(e.dims() == ts::dims_t<1>{7});
  ad::Var<double, 1, ts::cpu> v1 = e, v2 = e;  // both copies share the one evaluation
  CHECK(v1.ptr() == v2.ptr());
  CHECK(v1.value().data()[3] == Approx(2 * a.value().data()[3] + 1));
  auto f = ad::eval(a - 1.0);
  static_assert(std::is_same_v<decltype(f), ad::Var<double, 1, ts::cpu>>);
}

TEST_CASE("fused: shapes that do not broadcast throw at the operator, naming both", "[fused]") {
  auto a = ad::parameter(filled<float, ts::cpu>(7, 1)), b = ad::parameter(filled<float, ts::cpu>(5, 2));
  CHECK_THROWS_AS(a * b, ts::shape_error);
  try {
    (void)(a + b);
  } catch (const ts::shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("7") != std::string::npos);
    CHECK(m.find("5") != std::string::npos);
  }
}

TEST_CASE("fused: no_grad records nothing", "[fused]") {
  auto a = ad::parameter(filled<float, ts::cpu>(7, 1));
  ad::no_grad ng;
  ad::Var<float, 1, ts::cpu> y = ad::tanh(a) * 3.0f;
  CHECK_FALSE(y.requires_grad());
}
