// nn::LSTM and nn::LastStep in a Sequential: static shapes, libtorch parameter names and PyTorch's count and
// initialisation range, whole-model gradients in double, and a small model that learns with SGD and Adam.
#include <tessera/nn/recurrent.hpp>
#include <tessera/optim/optim.hpp>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;

using RowLSTM = nn::Sequential<Shape<dyn, 28, 28>, nn::LSTM<28, 128, {.num_layers = 2, .dropout = 0.2, .batch_first = true}>,
                               nn::LastStep, nn::Linear<128, 10>>;

TEST_CASE("LSTM model: static shapes, names, parameter count, initialisation", "[nn][rnn]") {
  STATIC_REQUIRE(RowLSTM::shapes_fit);
  STATIC_REQUIRE(std::is_same_v<RowLSTM::output_shape, Shape<dyn, 10>>);
  STATIC_REQUIRE(std::is_same_v<nn::LSTM<28, 128>::output<Shape<dyn, 28, 28>>, Shape<dyn, 28, 128>>);
  STATIC_REQUIRE(!nn::LSTM<28, 128>::accepts<Shape<dyn, 28, 27>>);
  STATIC_REQUIRE(!nn::LastStep::accepts<Shape<dyn, 28>>);
  RowLSTM net(1);
  std::vector<std::string> names;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.weight_ih_l0", "0.weight_hh_l0", "0.bias_ih_l0", "0.bias_hh_l0", "0.weight_ih_l1",
                                          "0.weight_hh_l1", "0.bias_ih_l1", "0.bias_hh_l1", "2.weight", "2.bias"});
  CHECK(net.num_parameters() == 80896 + 132096 + 1290);  // PyTorch's count
  const float bound = 1.0f / std::sqrt(128.0f);
  net.for_each_parameter([&](const std::string& n, auto& v) {
    if (n.rfind("0.", 0) != 0) return;
    float lo = 1, hi = -1;
    for (index_t i = 0; i < v.size(); ++i) {
      lo = std::min(lo, v.value().data()[i]);
      hi = std::max(hi, v.value().data()[i]);
    }
    INFO(n);
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > bound);  // spread over the range
  });
  ts::Tensor<float, Shape<dyn, 28, 28>, ts::cpu_threads> x(3);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 17) / 17.0f;
  auto y = net.predict(x);
  CHECK(y.dims() == ts::dims_t<2>{3, 10});
  // evaluation is deterministic, training draws dropout masks
  net.eval();
  auto e1 = net.predict(x), e2 = net.predict(x);
  for (index_t i = 0; i < e1.size(); ++i) CHECK(e1.data()[i] == e2.data()[i]);
  net.train();
  auto out = net.forward(x);
  auto loss = ad::sum(out * out);
  loss.backward();
  net.for_each_parameter([&](const std::string& n, auto& v) {
    INFO(n);
    CHECK(v.has_grad());
  });
}

TEST_CASE("LSTM model gradients in double", "[nn][rnn]") {
  using Small = nn::Sequential<Shape<dyn, 4, 3>, nn::LSTM<3, 5, {.num_layers = 2}>, nn::LastStep, nn::Linear<5, 2>>::on<ts::cpu_threads, double>;
  Small net(3);
  ad::Var<double, 3, ts::cpu_threads> x(gc::values<3, ts::cpu_threads>({2, 4, 3}, 1), true);
  ad::Var<double, 2, ts::cpu_threads> k(gc::values<2, ts::cpu_threads>({2, 2}, 2), false);
  auto loss = [&] { return ad::sum(net.forward(x) * k); };
  auto& lstm = net.layer<0>();
  gc::check(loss, x, lstm.layers[0].weight_ih, lstm.layers[0].weight_hh, lstm.layers[1].weight_ih, lstm.layers[1].bias_hh);
}

namespace {
/// Sequences of 28 steps of 28 features; the class is which of 4 features carries a bump late in the sequence.
struct toy {
  ts::Tensor<float, Shape<dyn, 28, 28>, ts::cpu_threads> x;
  ts::Tensor<int, Shape<dyn>, ts::cpu_threads> y;
  explicit toy(index_t n) : x(n), y(n) {
    ts::Rng rng(5);
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = 0.1f * (rng.uniform() - 0.5f);
    for (index_t b = 0; b < n; ++b) {
      const int c = int(rng.below(4));
      y(b) = c;
      for (index_t t = 20; t < 28; ++t) x(b, t, 3 * c) += 1.0f;
    }
  }
};

template <class Opt>
void learns(Opt make_opt) {
  ts::cpu_threads::set_num_threads(2);
  RowLSTM net(11);
  auto opt = make_opt(net);
  toy d(32);
  float first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    opt.zero_grad();
    auto loss = ad::cross_entropy(net.forward(d.x), d.y);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.value()();
    last = loss.value()();
  }
  INFO("first loss " << first << ", last " << last);
  CHECK(last < 0.8f * first);
}
}  // namespace

TEST_CASE("LSTM model learns a toy problem with SGD and Adam", "[nn][rnn]") {
  learns([](RowLSTM& net) { return ts::optim::SGD<float>(net.parameters(), {.lr = 0.5, .momentum = 0.9}); });
  learns([](RowLSTM& net) { return ts::optim::Adam<float>(net.parameters(), {.lr = 0.01}); });
}
