// Models as types: shapes computed at compile time, libtorch parameter names, the fused forward (Conv2d/Linear with
// the activation after them) equal to the layer-by-layer one, whole-model gradients against finite differences,
// train/eval, and a small model that learns.
#include <tessera/nn/sequential.hpp>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;

using SimpleCNN = nn::Sequential<Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>;

TEST_CASE("SimpleCNN: static shapes, names, parameter count", "[nn]") {
  STATIC_REQUIRE(std::is_same_v<SimpleCNN::output_shape, Shape<dyn, 10>>);
  STATIC_REQUIRE(SimpleCNN::shapes_fit);
  SimpleCNN net(1);
  std::vector<std::string> names;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias"});
  CHECK(net.num_parameters() == 320 + 18496 + 401536 + 1290);  // PyTorch's count for the same net
  ts::Tensor<float, Shape<dyn, 1, 28, 28>, ts::cpu_threads> x(3);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 17) / 17.0f;
  auto y = net.predict(x);
  CHECK(y.dims() == ts::dims_t<2>{3, 10});
  ts::Tensor<float, Shape<dyn, 1, 27, 28>, ts::cpu_threads> bad(2);
  CHECK_THROWS_WITH(net.forward(SimpleCNN::input_var(ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads>(bad), false)),
                    Catch::Contains("[2, 1, 27, 28]") && Catch::Contains("[-1, 1, 28, 28]"));
}

TEST_CASE("the same parameters give the same outputs fused and layer by layer", "[nn]") {
  SimpleCNN net(7);
  ts::Tensor<float, Shape<dyn, 1, 28, 28>, ts::cpu_threads> x(2);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 13) % 29) / 29.0f - 0.3f;
  auto fused = net.predict(x);
  // by hand, unfused
  ad::no_grad ng;
  auto& c1 = net.layer<0>();
  auto& c2 = net.layer<3>();
  auto& f1 = net.layer<7>();
  auto& f2 = net.layer<9>();
  ad::Var<float, 4, ts::cpu_threads> v(x);
  auto h = ad::max_pool2d<2>(ad::relu(ad::conv2d(v, c1.weight, c1.bias, {.padding = 1})));
  h = ad::max_pool2d<2>(ad::relu(ad::conv2d(h, c2.weight, c2.bias, {.padding = 1})));
  auto z = ad::linear(ad::relu(ad::linear(ad::flatten_batch(h), f1.weight, f1.bias)), f2.weight, f2.bias);
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 10; ++j) CHECK(fused(i, j) == Approx(z.value()(i, j)).margin(1e-5));
}

TEST_CASE("whole-model gradients against finite differences (double)", "[nn]") {
  using Small = nn::Sequential<Shape<dyn, 2, 6, 6>, nn::Conv2d<2, 3, 3, {.padding = 1}>, nn::Tanh, nn::AvgPool2d<2>,
                               nn::BatchNorm2d<3>, nn::Flatten, nn::Linear<27, 5>, nn::Sigmoid, nn::Linear<5, 4>>::on<ts::cpu, double>;
  Small net(3);
  auto x = gc::values<4>({3, 2, 6, 6}, 1);
  ts::Tensor<int, Shape<dyn>> labels(3);
  labels(0) = 1;
  labels(1) = 3;
  labels(2) = 0;
  auto params = std::vector<ad::Var<double, 4>>{};
  auto& conv = net.layer<0>();
  auto& bn = net.layer<3>();
  auto& fc = net.layer<5>();
  auto& fc2 = net.layer<7>();
  gc::check([&] { return ad::cross_entropy(net.forward(x), labels); }, conv.weight, conv.bias, bn.weight, bn.bias, fc.weight,
            fc.bias, fc2.weight, fc2.bias);
}

TEST_CASE("dropout is active in train() only; training reduces the loss", "[nn]") {
  using Mlp = nn::Sequential<Shape<dyn, 4>, nn::Linear<4, 16>, nn::ReLU, nn::Dropout<0.5>, nn::Linear<16, 3>>;
  Mlp net(5);
  ts::Tensor<float, Shape<dyn, 4>, ts::cpu_threads> x(64);
  ts::Tensor<int, Shape<dyn>, ts::cpu_threads> y(64);
  ts::Rng rng(11);
  for (index_t i = 0; i < 64; ++i) {
    const int c = int(i % 3);
    y(i) = c;
    for (index_t j = 0; j < 4; ++j) x(i, j) = float(j == c ? 1.5 : 0.0) + rng.normal(0.0f, 0.3f);
  }
  net.eval();
  auto a = net.predict(x);
  auto b = net.predict(x);
  CHECK(a(5, 1) == b(5, 1));
  net.train();
  auto c = net.predict(x);
  bool differs = false;
  for (index_t i = 0; i < 64 && !differs; ++i) differs = c(i, 0) != a(i, 0);
  CHECK(differs);

  auto params = net.parameters();
  auto loss0 = ad::cross_entropy(net.forward(x), y).value()();
  for (int step = 0; step < 200; ++step) {
    net.zero_grad();
    auto loss = ad::cross_entropy(net.forward(x), y);
    loss.backward();
    for (auto& p : params) {
      float* v = p.value();
      const float* g = p.grad();
      for (index_t i = 0; i < p.size; ++i) v[i] -= 0.1f * g[i];
    }
  }
  net.eval();
  auto loss1 = ad::cross_entropy(ad::Var<float, 2, ts::cpu_threads>(net.predict(x)), y).value()();
  CHECK(loss1 < 0.3f * loss0);
}
