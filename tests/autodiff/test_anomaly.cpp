// Anomaly mode (ad::set_detect_anomaly / ad::detect_anomaly, as torch.autograd.set_detect_anomaly): the first
// operation whose result or gradient is NaN or Inf throws, naming the operation and, in a model, the layer. And a
// graph used by backward() once cannot be used again (as PyTorch without retain_graph).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <tessera/autodiff/ops.hpp>
#include <tessera/nn/sequential.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;
using V1 = ad::Var<double, 1>;

namespace {
ts::Tensor<double, Shape<dyn>> vec(std::initializer_list<double> v) {
  return ts::Tensor<double, Shape<dyn>>(v, ts::dims_t<1>{index_t(v.size())});
}
}  // namespace

TEST_CASE("anomaly mode: a forward that makes NaN names its operation", "[autodiff][anomaly]") {
  auto x = ad::parameter(vec({0.5, -1.0, 2.0}));
  SECTION("off: the NaN flows on, as before") {
    REQUIRE_FALSE(ad::detect_anomaly_enabled());
    auto y = ad::log(x);
    CHECK(std::isnan(y.value()(1)));
  }
  SECTION("on: log(-1) stops there") {
    ad::detect_anomaly on;
    REQUIRE_THROWS_AS(ad::log(x), ad::anomaly_error);
    REQUIRE_THROWS_WITH(ad::log(x), Catch::Contains("the forward of log") && Catch::Contains("NaN") &&
                                        Catch::Contains("[3]") && Catch::Contains("its inputs were finite"));
  }
  SECTION("on: an input that already held NaN is named as such") {
    x.mutable_value()(2) = std::numeric_limits<double>::quiet_NaN();
    ad::detect_anomaly on;
    REQUIRE_THROWS_WITH(ad::exp(x), Catch::Contains("the forward of exp") && Catch::Contains("its input 0 [3] already held NaN"));
  }
  CHECK_FALSE(ad::detect_anomaly_enabled());  // the scope restored the setting
}

TEST_CASE("anomaly mode: a backward that makes Inf names its operation", "[autodiff][anomaly]") {
  auto x = ad::parameter(vec({0.0, 4.0}));
  ad::set_detect_anomaly(true);
  // sqrt(0) is finite; its gradient 1 / (2 sqrt(0)) is not
  auto loss = ad::sum(ad::sqrt(x));
  REQUIRE_THROWS_WITH(loss.backward(), Catch::Contains("the backward of sqrt") && Catch::Contains("Inf") &&
                                           Catch::Contains("gradient of its input 0 [2]"));
  ad::set_detect_anomaly(false);
  auto again = ad::sum(ad::sqrt(x));
  REQUIRE_NOTHROW(again.backward());  // off: the Inf gradient is the caller's to see
  CHECK(std::isinf(x.grad()(0)));
}

TEST_CASE("anomaly mode inside a model names the layer", "[autodiff][anomaly][nn]") {
  using Net = nn::Sequential<Shape<dyn, 4>, nn::Linear<4, 5>, nn::ReLU, nn::Linear<5, 3>>;
  Net net(3);
  ts::Tensor<float, Shape<dyn, 4>, ts::cpu_threads> x(2);
  x = 0.25f;
  net.for_each_parameter([](const std::string& name, auto& p) {
    if (name == "2.weight") p.mutable_value().data()[3] = std::numeric_limits<float>::infinity();
  });
  ad::detect_anomaly on;
  REQUIRE_THROWS_WITH(net.forward(x), Catch::Contains("in layer 2 (Linear)") && Catch::Contains("already held Inf"));
  // the first layers (Linear fused with ReLU) are named together
  net.for_each_parameter([](const std::string& name, auto& p) {
    if (name == "0.bias") p.mutable_value().data()[0] = std::numeric_limits<float>::quiet_NaN();
  });
  REQUIRE_THROWS_WITH(net.forward(x), Catch::Contains("in layers 0-1 (Linear, ReLU)") && Catch::Contains("NaN"));
}

TEST_CASE("a second backward through a freed graph is an error", "[autodiff]") {
  auto x = ad::parameter(vec({1.0, 2.0, 3.0}));
  auto y = ad::eval(ad::tanh(x));  // an interior node of the graph (an `auto` expression would be evaluated afresh at each use)
  auto loss = ad::sum(y * y);
  loss.backward();
  const double g0 = x.grad()(0);
  // before: accepted, doubling loss's own gradient and sending nothing to x
  REQUIRE_THROWS_WITH(loss.backward(), Catch::Contains("already used by an earlier backward()"));
  // a new loss over the freed interior node y: its gradient could not reach x
  auto loss2 = ad::sum(y);
  REQUIRE_THROWS_AS(loss2.backward(), std::logic_error);
  CHECK(x.grad()(0) == g0);
  // an expression kept unevaluated is no node of the freed graph: used again, it is evaluated afresh
  auto x2 = ad::parameter(vec({1.0, 2.0, 3.0}));
  auto e = ad::tanh(x2);
  ad::sum(e * e).backward();
  CHECK(x2.grad()(0) == Approx(g0));
  ad::sum(e).backward();
  CHECK(x2.grad()(0) == Approx(g0 + (1 - std::tanh(1.0) * std::tanh(1.0))));
  // a fresh forward works, and accumulates into x
  auto loss3 = ad::sum(ad::tanh(x) * ad::tanh(x));
  loss3.backward();
  CHECK(x.grad()(0) == Approx(2 * g0));
  // backward from a leaf twice only accumulates (nothing was freed)
  auto leaf = ad::parameter(vec({1.0}));
  ts::Tensor<double, Shape<dyn>> seed = vec({1.0});
  leaf.backward(seed);
  REQUIRE_NOTHROW(leaf.backward(seed));
  CHECK(leaf.grad()(0) == 2.0);
}
