// Gradients of the elementwise, reduction, product and view operations against central finite differences
// (double precision), broadcasting in both directions, graph reuse, no_grad, and errors.
#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;
using V1 = ad::Var<double, 1>;
using V2 = ad::Var<double, 2>;
using V3 = ad::Var<double, 3>;

TEST_CASE("elementwise gradients", "[autodiff]") {
  auto a = ad::parameter(gc::values<2>({7, 5}, 1));
  auto b = ad::parameter(gc::values<2>({7, 5}, 2, 0.5, 2.0));  // positive: log, sqrt, division
  SECTION("arithmetic") { gc::check([&] { return ad::sum(a * b + a / b - b * 3.0 + 2.0 * a); }, a, b); }
  SECTION("exp log sqrt") { gc::check([&] { return ad::sum(ad::exp(a) * ad::log(b) + ad::sqrt(b)); }, a, b); }
  SECTION("tanh sigmoid") { gc::check([&] { return ad::sum(ad::tanh(a * b) * ad::sigmoid(a - b)); }, a, b); }
  SECTION("relu gelu abs square") { gc::check([&] { return ad::sum(ad::relu(a) * b + ad::gelu(a) + ad::abs(a) * ad::square(b)); }, a, b); }
  SECTION("negation, subtraction from a scalar, mean") { gc::check([&] { return ad::mean(1.0 - (-a) * b); }, a, b); }
  SECTION("a Var used twice") { gc::check([&] { return ad::sum(a * a * a); }, a); }
}

TEST_CASE("broadcast gradients are summed over the broadcast dimensions", "[autodiff]") {
  auto x = ad::parameter(gc::values<3>({3, 4, 5}, 3));
  auto row = ad::parameter(gc::values<1>({5}, 4));
  auto col = ad::parameter(gc::values<3>({3, 4, 1}, 5));
  auto mid = ad::parameter(gc::values<2>({1, 5}, 6));
  gc::check([&] { return ad::sum(ad::tanh(x * row + col) - mid * x); }, x, row, col, mid);
}

TEST_CASE("matmul, reshape and transpose gradients", "[autodiff]") {
  for (index_t m : {1, 7}) {
    auto a = ad::parameter(gc::values<2>({m, 5}, 7));
    auto b = ad::parameter(gc::values<2>({5, 3}, 8));
    auto c = ad::parameter(gc::values<2>({3, m}, 9));
    gc::check([&] { return ad::sum(ad::tanh(ad::matmul(a, b)) * ad::transpose(c)); }, a, b, c);
    gc::check([&] { return ad::sum(ad::square(ad::reshape<1>(ad::matmul(a, b), dims_t<1>{m * 3}))); }, a, b);
  }
  auto x = ad::parameter(gc::values<3>({2, 3, 4}, 10));
  auto w = ad::parameter(gc::values<2>({12, 2}, 11));
  gc::check([&] { return ad::sum(ad::sigmoid(ad::matmul(ad::flatten_batch(x), w))); }, x, w);
}

TEST_CASE("backward accumulates into leaves; no_grad records nothing", "[autodiff]") {
  auto a = ad::parameter(gc::values<1>({4}, 12));
  auto c = ad::constant(gc::values<1>({4}, 13));
  ad::sum(a * c).backward();
  ad::sum(a * c).backward();
  for (index_t i = 0; i < 4; ++i) CHECK(a.grad()(i) == Approx(2 * c.value()(i)));
  a.zero_grad();
  CHECK(a.grad()(0) == 0.0);
  {
    ad::no_grad ng;
    auto y = ad::sum(a * c);
    CHECK_FALSE(y.requires_grad());
    CHECK_THROWS_AS(y.backward(), std::logic_error);
  }
  auto y = ad::sum(c * c);
  CHECK_FALSE(y.requires_grad());
  auto z = a * c;
  CHECK_THROWS_WITH(z.backward(ts::Tensor<double, ts::dyn_shape_t<1>>(5)), Catch::Contains("[5]") && Catch::Contains("[4]"));
}
