// Compositions (nn/composition.hpp): Residual, Seq and Identity as layers of a Sequential. Shapes at compile time,
// parameter and buffer names as PyTorch prints a module with submodules, forwards against plain loops (identity and
// projection shortcuts) and against the same operations run by hand, gradients of every parameter and of the input
// against finite differences in double (a ResNet basic block with BatchNorm2d in training, a projection shortcut),
// and the run-time check of branches whose outputs differ.
#include <tessera/nn/composition.hpp>
#include <tessera/nn/sequential.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
// A ResNet basic block (identity shortcut) and a down-sampling one (projection shortcut).
template <int C>
using Basic = nn::Residual<nn::Seq<nn::Conv2d<C, C, 3, {.padding = 1}>, nn::BatchNorm2d<C>, nn::ReLU,
                                   nn::Conv2d<C, C, 3, {.padding = 1}>, nn::BatchNorm2d<C>>>;
template <int C>
using Down = nn::Residual<nn::Seq<nn::Conv2d<C, 2 * C, 3, {.stride = 2, .padding = 1}>, nn::BatchNorm2d<2 * C>, nn::ReLU,
                                  nn::Conv2d<2 * C, 2 * C, 3, {.padding = 1}>, nn::BatchNorm2d<2 * C>>,
                          nn::Seq<nn::Conv2d<C, 2 * C, 1, {.stride = 2}>, nn::BatchNorm2d<2 * C>>>;
using TinyResNet = nn::Sequential<Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 2, 3, {.padding = 1}>, nn::BatchNorm2d<2>, nn::ReLU,
                                  Basic<2>, Down<2>, nn::AvgPool2d<4>, nn::Flatten, nn::Linear<4, 3>>;

// Residual blocks of Linear layers, computed again below by plain loops.
using MlpBlock = nn::Residual<nn::Seq<nn::Linear<3, 5>, nn::Tanh, nn::Linear<5, 3>>>;                 // identity, ReLU
using MlpProj = nn::Residual<nn::Seq<nn::Linear<3, 4>, nn::ReLU, nn::Linear<4, 4>>, nn::Linear<3, 4>, nn::Tanh>;

template <class V>
std::vector<double> host_values(const V& v) {
  auto t = v.value();
  std::vector<double> out(std::size_t(t.size()));
  for (index_t i = 0; i < t.size(); ++i) out[std::size_t(i)] = double(t.data()[i]);
  return out;
}
/// y[n][o] = b[o] + sum_i x[n][i] W[o][i] by loops.
std::vector<double> linear_loops(const std::vector<double>& x, index_t N, index_t I, const std::vector<double>& W,
                                 const std::vector<double>& b, index_t O) {
  std::vector<double> y(std::size_t(N * O));
  for (index_t n = 0; n < N; ++n)
    for (index_t o = 0; o < O; ++o) {
      double s = b[std::size_t(o)];
      for (index_t i = 0; i < I; ++i) s += x[std::size_t(n * I + i)] * W[std::size_t(o * I + i)];
      y[std::size_t(n * O + o)] = s;
    }
  return y;
}

/// Every parameter of the model against finite differences, and the input's gradient (double).
template <class Net, class X, class C>
void check_model_gradients(Net& net, X& x, const C& weights) {
  auto loss = [&] { return ad::sum(net.forward(x) * weights); };
  gc::check(loss, x);
  net.for_each_parameter([&](const std::string& name, auto& p) {
    INFO("parameter " << name);
    net.zero_grad();
    gc::check(loss, p);
  });
}
}  // namespace

TEST_CASE("Residual and Seq: shapes at compile time, parameter and buffer names", "[nn][residual]") {
  STATIC_REQUIRE(TinyResNet::shapes_fit);
  STATIC_REQUIRE(std::is_same_v<TinyResNet::output_shape, Shape<dyn, 3>>);
  STATIC_REQUIRE(std::is_same_v<Basic<4>::output<Shape<dyn, 4, 7, 7>>, Shape<dyn, 4, 7, 7>>);
  STATIC_REQUIRE(std::is_same_v<Down<4>::output<Shape<dyn, 4, 7, 7>>, Shape<dyn, 8, 4, 4>>);
  STATIC_REQUIRE(Down<4>::accepts<Shape<dyn, 4, 7, 7>>);
  STATIC_REQUIRE(std::is_same_v<nn::Seq<nn::Linear<3, 4>, nn::ReLU>::output<Shape<dyn, 3>>, Shape<dyn, 4>>);
  STATIC_REQUIRE(std::is_same_v<nn::Identity::output<Shape<2, 5, 7>>, Shape<2, 5, 7>>);

  TinyResNet net(1);
  std::vector<std::string> names, buffers;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  net.for_each_buffer([&](const std::string& n, auto&) { buffers.push_back(n); });
  const std::vector<std::string> want = {
      "0.weight", "0.bias", "1.weight", "1.bias",
      "3.main.0.weight", "3.main.0.bias", "3.main.1.weight", "3.main.1.bias",
      "3.main.3.weight", "3.main.3.bias", "3.main.4.weight", "3.main.4.bias",
      "4.main.0.weight", "4.main.0.bias", "4.main.1.weight", "4.main.1.bias",
      "4.main.3.weight", "4.main.3.bias", "4.main.4.weight", "4.main.4.bias",
      "4.shortcut.0.weight", "4.shortcut.0.bias", "4.shortcut.1.weight", "4.shortcut.1.bias",
      "7.weight", "7.bias"};
  CHECK(names == want);
  CHECK(buffers == std::vector<std::string>{"1.running_mean", "1.running_var", "3.main.1.running_mean", "3.main.1.running_var",
                                            "3.main.4.running_mean", "3.main.4.running_var", "4.main.1.running_mean",
                                            "4.main.1.running_var", "4.main.4.running_mean", "4.main.4.running_var",
                                            "4.shortcut.1.running_mean", "4.shortcut.1.running_var"});
  // PyTorch's count for the same net: 20 + 4 + (36 + 2 + 4 + 36 + 2 + 4) + (72 + 4 + 8 + 144 + 4 + 8 + 8 + 4 + 8) + 15
  CHECK(net.num_parameters() == 20 + 4 + 84 + 260 + 15);
  CHECK(net.parameters().size() == want.size());

  // a single-layer branch is named without a position, as a submodule that is the layer itself
  nn::Sequential<Shape<dyn, 3>, MlpProj> proj(2);
  names.clear();
  proj.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.main.0.weight", "0.main.0.bias", "0.main.2.weight", "0.main.2.bias",
                                          "0.shortcut.weight", "0.shortcut.bias"});
  // Seq alone, as a layer of a model
  nn::Sequential<Shape<dyn, 3>, nn::Seq<nn::Linear<3, 4>, nn::ReLU>, nn::Identity, nn::Linear<4, 2>> seq(3);
  names.clear();
  seq.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.0.weight", "0.0.bias", "2.weight", "2.bias"});
}

TEMPLATE_TEST_CASE("Residual forward against plain loops (identity and projection shortcuts)", "[nn][residual]", ts::cpu,
                   ts::cpu_threads) {
  using P = TestType;
  const index_t N = 7;
  auto xt = gc::values<2, P>({N, 3}, 5);
  {  // relu(L2(tanh(L1 x)) + x)
    typename nn::Sequential<Shape<dyn, 3>, MlpBlock>::template on<P, double> net(4);
    auto& main = net.template layer<0>().main;
    const auto y = host_values(ad::Var<double, 2, P>(net.predict(xt), false));
    const auto x = host_values(ad::Var<double, 2, P>(xt, false));
    auto h = linear_loops(x, N, 3, host_values(main.template layer<0>().weight), host_values(main.template layer<0>().bias), 5);
    for (auto& v : h) v = std::tanh(v);
    auto m = linear_loops(h, N, 5, host_values(main.template layer<2>().weight), host_values(main.template layer<2>().bias), 3);
    REQUIRE(y.size() == m.size());
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == Approx(std::max(0.0, m[i] + x[i])).epsilon(1e-12).margin(1e-14));
  }
  {  // tanh(L2(relu(L1 x)) + S x)
    typename nn::Sequential<Shape<dyn, 3>, MlpProj>::template on<P, double> net(5);
    auto& blk = net.template layer<0>();
    const auto y = host_values(ad::Var<double, 2, P>(net.predict(xt), false));
    const auto x = host_values(ad::Var<double, 2, P>(xt, false));
    auto h = linear_loops(x, N, 3, host_values(blk.main.template layer<0>().weight), host_values(blk.main.template layer<0>().bias), 4);
    for (auto& v : h) v = std::max(0.0, v);
    auto m = linear_loops(h, N, 4, host_values(blk.main.template layer<2>().weight), host_values(blk.main.template layer<2>().bias), 4);
    auto s = linear_loops(x, N, 3, host_values(blk.shortcut.weight), host_values(blk.shortcut.bias), 4);
    REQUIRE(y.size() == m.size());
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == Approx(std::tanh(m[i] + s[i])).epsilon(1e-12).margin(1e-14));
  }
}

TEMPLATE_TEST_CASE("a ResNet block equals its operations run by hand (train and eval)", "[nn][residual]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  typename nn::Sequential<Shape<dyn, 2, 5, 5>, Down<2>>::template on<P, float> net(6);
  typename nn::Sequential<Shape<dyn, 2, 5, 5>, Down<2>>::template on<P, float> twin(6);  // same seed: same parameters
  auto x = gc::values<4, P>({3, 2, 5, 5}, 9);
  ts::Tensor<float, ts::dyn_shape_t<4>, P> xf(ts::cast<float>(x));
  for (bool training : {true, false}) {
    INFO("training " << training);
    net.train(training);
    const auto y = net.predict(xf);
    auto& b = twin.template layer<0>();
    auto& m = b.main;
    ad::no_grad ng;
    ad::Var<float, 4, P> v(xf, false);
    auto c1 = m.template layer<0>(), c2 = m.template layer<3>();
    auto& n1 = m.template layer<1>();
    auto& n2 = m.template layer<4>();
    ad::Var<float, 4, P> h = ad::relu(ad::batch_norm2d(ad::conv2d(v, c1.weight, c1.bias, {.stride = 2, .padding = 1}), n1.weight, n1.bias,
                                       n1.running_mean, n1.running_var, training));
    h = ad::batch_norm2d(ad::conv2d(h, c2.weight, c2.bias, {.padding = 1}), n2.weight, n2.bias, n2.running_mean, n2.running_var, training);
    auto& sc = b.shortcut.template layer<0>();
    auto& sn = b.shortcut.template layer<1>();
    auto s = ad::batch_norm2d(ad::conv2d(v, sc.weight, sc.bias, {.stride = 2}), sn.weight, sn.bias, sn.running_mean, sn.running_var,
                              training);
    auto want = ad::relu(h + s).value();
    REQUIRE(y.dims() == ts::dims_t<4>{3, 4, 3, 3});
    REQUIRE(want.dims() == y.dims());
    for (index_t i = 0; i < y.size(); ++i) CHECK(y.data()[i] == Approx(want.data()[i]).epsilon(1e-5).margin(1e-6));
    // the running statistics moved the same way in both (train) or stayed (eval)
    auto& rn = net.template layer<0>().main.template layer<1>();
    for (index_t c = 0; c < 4; ++c) CHECK(rn.running_mean.data()[c] == Approx(n1.running_mean.data()[c]).margin(1e-6));
  }
}

TEMPLATE_TEST_CASE("Residual gradients against finite differences (double)", "[nn][residual]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  SECTION("basic block with BatchNorm2d in training, identity shortcut") {
    typename nn::Sequential<Shape<dyn, 2, 5, 5>, Basic<2>>::template on<P, double> net(11);
    ad::Var<double, 4, P> x(gc::values<4, P>({2, 2, 5, 5}, 3), true);
    ad::Var<double, 4, P> w(gc::values<4, P>({2, 2, 5, 5}, 8), false);
    check_model_gradients(net, x, w);
  }
  SECTION("projection shortcut (stride 2), eval mode") {
    typename nn::Sequential<Shape<dyn, 2, 5, 5>, Down<2>>::template on<P, double> net(12);
    net.eval();
    ad::Var<double, 4, P> x(gc::values<4, P>({2, 2, 5, 5}, 4), true);
    ad::Var<double, 4, P> w(gc::values<4, P>({2, 4, 3, 3}, 6), false);
    check_model_gradients(net, x, w);
  }
  SECTION("nested: a Residual inside a Seq inside a Residual, Linear layers, odd sizes") {
    using Inner = nn::Residual<nn::Seq<nn::Linear<7, 7>, nn::Tanh>, nn::Identity, nn::Identity>;
    using Outer = nn::Residual<nn::Seq<Inner, nn::Linear<7, 7>>, nn::Linear<7, 7>, nn::Sigmoid>;
    typename nn::Sequential<Shape<dyn, 7>, Outer, nn::Linear<7, 1>>::template on<P, double> net(13);
    std::vector<std::string> names;
    net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
    CHECK(names == std::vector<std::string>{"0.main.0.main.0.weight", "0.main.0.main.0.bias", "0.main.1.weight", "0.main.1.bias",
                                            "0.shortcut.weight", "0.shortcut.bias", "1.weight", "1.bias"});
    ad::Var<double, 2, P> x(gc::values<2, P>({33, 7}, 2), true);
    ad::Var<double, 2, P> w(gc::values<2, P>({33, 1}, 7), false);
    check_model_gradients(net, x, w);
  }
}

TEST_CASE("Residual: branches that differ at run time throw, naming both shapes", "[nn][residual]") {
  // a 3x3 convolution without padding shrinks the map; with dynamic spatial extents only the run can tell
  nn::Sequential<Shape<dyn, 2, dyn, dyn>, nn::Residual<nn::Conv2d<2, 2, 3>>> net(1);
  ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads> x(ts::dims_t<4>{1, 2, 6, 6});
  x = 0.5f;
  CHECK_THROWS_AS(net.predict(x), ts::shape_error);
  CHECK_THROWS_WITH(net.predict(x), Catch::Contains("[1, 2, 4, 4]") && Catch::Contains("[1, 2, 6, 6]") &&
                                        Catch::Contains("Residual"));
}
