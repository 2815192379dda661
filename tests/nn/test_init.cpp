// Initialisers (tessera/nn/init.hpp) against torch.nn.init's definitions: fans of conv and linear weights, gains,
// the bounds and standard deviations of kaiming/xavier/uniform/normal checked on the statistics of large tensors,
// PyTorch's default Linear/Conv initialisation, determinism for a seed, and errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/random.hpp"
#include "tessera/nn/init.hpp"
#include "tessera/nn/parameter.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
namespace init = tessera::nn::init;
using ts::index_t;

namespace {

template <class T, int R>
nn::parameter_ref<T> make_param(const std::string& name, const ts::dims_t<R>& dims) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(dims);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(-12345);  // every initialiser must overwrite this
  return nn::make_parameter_ref(name, ad::Var<T, R>(t, true));
}

struct stats {
  double mean = 0, stddev = 0, min = 0, max = 0;
};
template <class T>
stats stats_of(const nn::parameter_ref<T>& p) {
  const T* v = p.value();
  double sum = 0, sq = 0, lo = double(v[0]), hi = double(v[0]);
  for (index_t i = 0; i < p.size; ++i) {
    sum += double(v[i]);
    lo = std::min(lo, double(v[i]));
    hi = std::max(hi, double(v[i]));
  }
  const double mean = sum / double(p.size);
  for (index_t i = 0; i < p.size; ++i) sq += (double(v[i]) - mean) * (double(v[i]) - mean);
  return {mean, std::sqrt(sq / double(p.size)), lo, hi};
}

/// Uniform in [-bound, bound): inside the bounds, reaching close to both, mean 0 and std bound / sqrt(3).
template <class T>
void check_uniform(const nn::parameter_ref<T>& p, double lo, double hi) {
  const stats s = stats_of(p);
  const double width = hi - lo;
  INFO(p.name << ": mean " << s.mean << " std " << s.stddev << " range [" << s.min << ", " << s.max << "] expected ["
              << lo << ", " << hi << ")");
  CHECK(s.min >= lo);
  CHECK(s.max < hi);
  CHECK(s.min < lo + 1e-3 * width);
  CHECK(s.max > hi - 1e-3 * width);
  // 131072 draws: the mean's standard error is width / sqrt(12 n) ~ 8e-4 width
  CHECK(std::abs(s.mean - (lo + hi) / 2) < 5e-3 * width);
  CHECK(s.stddev == Approx(width / std::sqrt(12.0)).epsilon(0.01));
}

template <class T>
void check_normal(const nn::parameter_ref<T>& p, double mean, double stddev) {
  const stats s = stats_of(p);
  INFO(p.name << ": mean " << s.mean << " std " << s.stddev << " expected mean " << mean << " std " << stddev);
  CHECK(std::abs(s.mean - mean) < 0.01 * stddev);
  CHECK(s.stddev == Approx(stddev).epsilon(0.01));
  CHECK(s.max > mean + 3.5 * stddev);  // tails are there (P(|z| > 3.5) * 131072 ~ 61 draws)
  CHECK(s.min < mean - 3.5 * stddev);
}

}  // namespace

TEST_CASE("fan_in and fan_out as torch.nn.init computes them", "[init]") {
  // conv weight [out = 32, in = 1, 3, 3]: receptive field 9
  CHECK(init::fan_in_fan_out(std::vector<index_t>{32, 1, 3, 3}) == init::fans{9, 288});
  // linear weight [out = 128, in = 3136]
  CHECK(init::fan_in_fan_out(std::vector<index_t>{128, 3136}) == init::fans{3136, 128});
  CHECK(init::fan_in_fan_out(ts::dims_t<3>{4, 6, 5}) == init::fans{30, 20});
  CHECK(init::fan_in_fan_out(ts::dims_t<5>{8, 2, 3, 3, 3}) == init::fans{54, 216});
  auto conv = make_param<float, 4>("0.weight", {32, 1, 3, 3});
  const auto [fan_in, fan_out] = init::fan_in_fan_out(conv);
  CHECK(fan_in == 9);
  CHECK(fan_out == 288);
  CHECK_THROWS_WITH(init::fan_in_fan_out(std::vector<index_t>{7}),
                    Catch::Contains("fewer than 2 dimensions") && Catch::Contains("[7]"));
  auto bias = make_param<float, 1>("0.bias", {32});
  CHECK_THROWS_AS(init::fan_in_fan_out(bias), std::invalid_argument);
}

TEST_CASE("calculate_gain as torch.nn.init.calculate_gain", "[init]") {
  using init::nonlinearity;
  CHECK(init::calculate_gain(nonlinearity::linear) == 1.0);
  CHECK(init::calculate_gain(nonlinearity::conv2d) == 1.0);
  CHECK(init::calculate_gain(nonlinearity::sigmoid) == 1.0);
  CHECK(init::calculate_gain(nonlinearity::tanh) == Approx(5.0 / 3.0));
  CHECK(init::calculate_gain(nonlinearity::relu) == Approx(std::sqrt(2.0)));
  CHECK(init::calculate_gain(nonlinearity::leaky_relu) == Approx(std::sqrt(2.0 / (1.0 + 0.01 * 0.01))));
  CHECK(init::calculate_gain(nonlinearity::leaky_relu, 0.2) == Approx(std::sqrt(2.0 / 1.04)));
  CHECK(init::calculate_gain(nonlinearity::leaky_relu, 0.0) == Approx(std::sqrt(2.0)));
  CHECK(init::calculate_gain(nonlinearity::leaky_relu, std::sqrt(5.0)) == Approx(std::sqrt(1.0 / 3.0)));
  CHECK(init::calculate_gain(nonlinearity::selu) == 0.75);
  CHECK(std::string(init::nonlinearity_name(nonlinearity::conv_transpose2d)) == "conv_transpose2d");
}

TEMPLATE_TEST_CASE("uniform_, normal_, constant_, zeros_, ones_", "[init]", float, double) {
  using T = TestType;
  ts::Rng rng(123);
  auto p = make_param<T, 2>("w", {256, 512});
  init::uniform_(p, -0.25, 0.75, rng);
  check_uniform(p, -0.25, 0.75);
  init::normal_(p, 0.5, 2.0, rng);
  check_normal(p, 0.5, 2.0);
  init::constant_(p, 0.125);
  CHECK(stats_of(p).min == 0.125);
  CHECK(stats_of(p).max == 0.125);
  init::zeros_(p);
  CHECK(stats_of(p).min == 0.0);
  CHECK(stats_of(p).max == 0.0);
  init::ones_(p);
  CHECK(stats_of(p).min == 1.0);
  CHECK(stats_of(p).max == 1.0);
}

TEMPLATE_TEST_CASE("kaiming and xavier: bounds and standard deviations from the fans", "[init]", float, double) {
  using T = TestType;
  ts::Rng rng(2024);
  // [256, 512]: fan_in 512, fan_out 256
  auto p = make_param<T, 2>("w", {256, 512});
  using init::fan_mode;
  using init::nonlinearity;
  SECTION("kaiming_uniform_, relu, fan_in: bound sqrt(2) sqrt(3 / 512)") {
    init::kaiming_uniform_(p, rng, 0.0, fan_mode::fan_in, nonlinearity::relu);
    const double b = std::sqrt(2.0) * std::sqrt(3.0 / 512);
    check_uniform(p, -b, b);
  }
  SECTION("kaiming_uniform_ defaults (a = 0, fan_in, leaky_relu) equal relu's") {
    init::kaiming_uniform_(p, rng);
    const double b = std::sqrt(6.0 / 512);
    check_uniform(p, -b, b);
  }
  SECTION("kaiming_uniform_, leaky_relu a = 0.2, fan_out") {
    init::kaiming_uniform_(p, rng, 0.2, fan_mode::fan_out, nonlinearity::leaky_relu);
    const double b = std::sqrt(2.0 / 1.04) * std::sqrt(3.0 / 256);
    check_uniform(p, -b, b);
  }
  SECTION("kaiming_normal_, relu, fan_in: std sqrt(2 / 512)") {
    init::kaiming_normal_(p, rng, 0.0, fan_mode::fan_in, nonlinearity::relu);
    check_normal(p, 0.0, std::sqrt(2.0 / 512));
  }
  SECTION("kaiming_normal_, tanh, fan_out: std 5/3 / sqrt(256)") {
    init::kaiming_normal_(p, rng, 0.0, fan_mode::fan_out, nonlinearity::tanh);
    check_normal(p, 0.0, 5.0 / 3.0 / 16.0);
  }
  SECTION("kaiming_normal_, linear and sigmoid: gain 1") {
    init::kaiming_normal_(p, rng, 0.0, fan_mode::fan_in, nonlinearity::sigmoid);
    check_normal(p, 0.0, 1.0 / std::sqrt(512.0));
  }
  SECTION("xavier_uniform_: bound sqrt(6 / (512 + 256)), and with a gain") {
    init::xavier_uniform_(p, rng);
    check_uniform(p, -std::sqrt(6.0 / 768), std::sqrt(6.0 / 768));
    init::xavier_uniform_(p, rng, init::calculate_gain(nonlinearity::tanh));
    const double b = 5.0 / 3.0 * std::sqrt(6.0 / 768);
    check_uniform(p, -b, b);
  }
  SECTION("xavier_normal_: std sqrt(2 / (512 + 256)) times the gain") {
    init::xavier_normal_(p, rng);
    check_normal(p, 0.0, std::sqrt(2.0 / 768));
    init::xavier_normal_(p, rng, 2.0);
    check_normal(p, 0.0, 2.0 * std::sqrt(2.0 / 768));
  }
  SECTION("conv weights: the receptive field counts in both fans") {
    auto conv = make_param<T, 4>("conv", {256, 32, 4, 4});  // fan_in 512, fan_out 4096; 131072 elements
    init::kaiming_uniform_(conv, rng, 0.0, fan_mode::fan_in, nonlinearity::relu);
    check_uniform(conv, -std::sqrt(6.0 / 512), std::sqrt(6.0 / 512));
    init::xavier_uniform_(conv, rng);
    check_uniform(conv, -std::sqrt(6.0 / (512 + 4096)), std::sqrt(6.0 / (512 + 4096)));
  }
}

TEMPLATE_TEST_CASE("PyTorch's default Linear and Conv initialisation", "[init]", float, double) {
  using T = TestType;
  ts::Rng rng(99);
  SECTION("Linear [128, 3136]: weight and bias uniform in +-1/sqrt(3136) = +-1/56") {
    auto w = make_param<T, 2>("0.weight", {128, 3136});
    auto b = make_param<T, 1>("0.bias", {128});
    init::torch_default_linear_(w, b, rng);
    check_uniform(w, -1.0 / 56, 1.0 / 56);
    const stats sb = stats_of(b);
    CHECK(sb.min >= -1.0 / 56);
    CHECK(sb.max < 1.0 / 56);
    CHECK(sb.max - sb.min > 1.0 / 56);  // 128 draws spread over the range
  }
  SECTION("Conv [32, 1, 3, 3]: +-1/3") {
    auto w = make_param<T, 4>("0.weight", {32, 1, 3, 3});
    auto b = make_param<T, 1>("0.bias", {32});
    init::torch_default_conv_(w, b, rng);
    for (const auto* p : {&w, &b}) {
      const stats s = stats_of(*p);
      CHECK(s.min >= -1.0 / 3);
      CHECK(s.max < 1.0 / 3);
      CHECK(s.max - s.min > 0.3);
    }
    // large conv: the statistics of a uniform in +-1/sqrt(fan_in)
    auto big = make_param<T, 4>("1.weight", {512, 64, 2, 2});  // fan_in 256: +-1/16
    init::torch_default_conv_(big, rng);
    check_uniform(big, -1.0 / 16, 1.0 / 16);
  }
  SECTION("the weight is drawn first, then the bias (PyTorch's order), from the same generator") {
    auto w1 = make_param<T, 2>("w", {4, 9});
    auto b1 = make_param<T, 1>("b", {4});
    auto w2 = make_param<T, 2>("w", {4, 9});
    auto b2 = make_param<T, 1>("b", {4});
    ts::Rng r1(5), r2(5);
    init::torch_default_linear_(w1, b1, r1);
    init::kaiming_uniform_(w2, r2, std::sqrt(5.0));
    init::uniform_(b2, -1.0 / 3, 1.0 / 3, r2);
    for (index_t i = 0; i < 36; ++i) CHECK(w1.value()[i] == w2.value()[i]);
    for (index_t i = 0; i < 4; ++i) CHECK(b1.value()[i] == b2.value()[i]);
  }
  SECTION("mismatched bias and weight ranks are errors") {
    auto w = make_param<T, 2>("0.weight", {8, 3});
    auto bad_bias = make_param<T, 1>("0.bias", {3});
    CHECK_THROWS_WITH(init::torch_default_linear_(w, bad_bias, rng),
                      Catch::Contains("0.bias") && Catch::Contains("[3]") && Catch::Contains("[8]"));
    CHECK_THROWS_WITH(init::torch_default_conv_(w, rng), Catch::Contains("at least 3 dims"));
  }
}

TEMPLATE_TEST_CASE("the same seed gives the same values; another seed does not", "[init]", float, double) {
  using T = TestType;
  auto a = make_param<T, 2>("a", {64, 32});
  auto b = make_param<T, 2>("b", {64, 32});
  auto c = make_param<T, 2>("c", {64, 32});
  auto same = [&](const nn::parameter_ref<T>& x, const nn::parameter_ref<T>& y) {
    for (index_t i = 0; i < x.size; ++i)
      if (x.value()[i] != y.value()[i]) return false;
    return true;
  };
  using init::fan_mode;
  using init::nonlinearity;
  auto fill = [](const nn::parameter_ref<T>& p, std::uint64_t seed, int which) {
    ts::Rng rng(seed);
    switch (which) {
      case 0: init::kaiming_uniform_(p, rng); break;
      case 1: init::kaiming_normal_(p, rng, 0.0, fan_mode::fan_out, nonlinearity::relu); break;
      case 2: init::xavier_uniform_(p, rng); break;
      case 3: init::xavier_normal_(p, rng); break;
      case 4: init::uniform_(p, -1.0, 1.0, rng); break;
      default: init::normal_(p, 0.0, 1.0, rng); break;
    }
  };
  for (int which = 0; which < 6; ++which) {
    INFO("initialiser " << which);
    fill(a, 42, which);
    fill(b, 42, which);
    fill(c, 43, which);
    CHECK(same(a, b));
    CHECK_FALSE(same(a, c));
  }
}

TEST_CASE("initialiser errors and empty parameters", "[init]") {
  ts::Rng rng(1);
  auto p = make_param<float, 2>("w", {4, 4});
  CHECK_THROWS_WITH(init::uniform_(p, 1.0, -1.0, rng), Catch::Contains("lo > hi"));
  CHECK_THROWS_WITH(init::normal_(p, 0.0, -1.0, rng), Catch::Contains("std"));
  CHECK_THROWS_AS(init::uniform_(p, 0.0, std::nan(""), rng), std::invalid_argument);
  auto vec = make_param<float, 1>("v", {16});
  CHECK_THROWS_WITH(init::kaiming_uniform_(vec, rng), Catch::Contains("fewer than 2 dimensions"));
  CHECK_THROWS_WITH(init::xavier_normal_(vec, rng), Catch::Contains("fewer than 2 dimensions"));
  auto empty = make_param<float, 2>("e", {0, 5});
  const ts::Rng before = rng;
  init::kaiming_uniform_(empty, rng);  // no elements: nothing drawn, nothing thrown (PyTorch only warns)
  init::xavier_normal_(empty, rng);
  CHECK(rng == before);
  nn::parameter_ref<float> unbound;
  unbound.name = "u";
  CHECK_THROWS_WITH(init::zeros_(unbound), Catch::Contains("'u'") && Catch::Contains("not bound"));
}
