// prune/shrink.hpp: with_widths_t against hand-written model types; prune_channels' masks against norms computed here
// with loops; shrink against the masked model's outputs on odd batch sizes (1, 7, 33) for the SimpleCNN, a CNN with
// BatchNorm2d/BatchNorm1d and an MLP; the shrunk model's weights against the kept rows picked here; int8 conversion of
// the shrunk model; the errors.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/prune/mask.hpp>
#include <tessera/prune/shrink.hpp>
#include <tessera/quant/model.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
namespace prune = tessera::prune;
using ts::dyn;
using ts::index_t;

namespace {
using SimpleCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>::on<ts::cpu_threads>;
using SmallCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 16, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<16, 32, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<32 * 7 * 7, 64>, nn::ReLU, nn::Linear<64, 10>>::on<ts::cpu_threads>;
static_assert(std::is_same_v<prune::with_widths_t<SimpleCNN, 16, 32, 64>, SmallCNN>);
static_assert(prune::prunable_layers_v<SimpleCNN> == 3);

using BNCNN = nn::Sequential<ts::Shape<dyn, 3, 12, 12>,
    nn::Conv2d<3, 8, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<8>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<8, 12, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<12>, nn::ReLU, nn::AvgPool2d<2>,
    nn::Flatten, nn::Linear<12 * 3 * 3, 20>, nn::BatchNorm1d<20>, nn::ReLU, nn::GELU, nn::Linear<20, 5>>;
using BNSmall = nn::Sequential<ts::Shape<dyn, 3, 12, 12>,
    nn::Conv2d<3, 5, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<5>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<5, 6, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<6>, nn::ReLU, nn::AvgPool2d<2>,
    nn::Flatten, nn::Linear<6 * 3 * 3, 11>, nn::BatchNorm1d<11>, nn::ReLU, nn::GELU, nn::Linear<11, 5>>;
static_assert(std::is_same_v<prune::with_widths_t<BNCNN, 5, 6, 11>, BNSmall>);

using MLP = nn::Sequential<ts::Shape<dyn, 4, 5>, nn::Flatten, nn::Linear<20, 16>, nn::ReLU, nn::Linear<16, 12>, nn::Tanh,
                           nn::Linear<12, 3, false>>;
using MLPSmall = nn::Sequential<ts::Shape<dyn, 4, 5>, nn::Flatten, nn::Linear<20, 9>, nn::ReLU, nn::Linear<9, 5>, nn::Tanh,
                                nn::Linear<5, 3, false>>;
static_assert(std::is_same_v<prune::with_widths_t<MLP, 9, 5>, MLPSmall>);
static_assert(std::is_same_v<prune::with_widths_t<MLP, 16, 12>, MLP>);

template <class S>
ts::Tensor<float, S> input(index_t batch, auto... rest) {
  ts::Tensor<float, S> x(batch, rest...);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.37f * float(i) + 0.1f) * 1.3f;
  return x;
}

/// max |a - b| <= tol * max |a| over the whole output.
template <class A, class B>
void check_close(const A& a, const B& b, double tol) {
  REQUIRE(a.dims() == b.dims());
  double scale = 0, diff = 0;
  for (index_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(double(a.data()[i])));
    diff = std::max(diff, std::fabs(double(a.data()[i]) - double(b.data()[i])));
  }
  INFO("max difference " << diff << " against max |output| " << scale);
  CHECK(scale > 0);
  CHECK(diff <= tol * scale);
}

template <class Model>
std::vector<float> values(Model& net, const std::string& name) {
  std::vector<float> out;
  net.for_each_parameter([&](const std::string& n, auto& v) {
    if (n == name) out.assign(v.value().data(), v.value().data() + v.size());
  });
  REQUIRE(!out.empty());
  return out;
}

/// The rows (dim 0) of an [R, inner] tensor kept by an L1 prune of k rows: the R - k of largest L1 norm, by hand.
std::vector<index_t> kept_rows(const std::vector<float>& w, index_t R, index_t k) {
  const index_t inner = index_t(w.size()) / R;
  std::vector<double> s(std::size_t(R), 0.0);
  for (index_t r = 0; r < R; ++r)
    for (index_t i = 0; i < inner; ++i) s[std::size_t(r)] += std::fabs(double(w[std::size_t(r * inner + i)]));
  std::vector<index_t> order(static_cast<std::size_t>(R));
  std::iota(order.begin(), order.end(), index_t(0));
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return s[std::size_t(a)] > s[std::size_t(b)]; });
  order.resize(std::size_t(R - k));
  std::sort(order.begin(), order.end());
  return order;
}
}  // namespace

TEST_CASE("shrink: the SimpleCNN with half its channels gives the masked model's outputs", "[prune]") {
  ts::cpu_threads::set_num_threads(2);
  SimpleCNN net(1);
  const auto w0 = values(net, "0.weight"), w3 = values(net, "3.weight"), w7 = values(net, "7.weight");
  prune::pruning<float> p;
  prune::prune_channels(p, net, 0.5);
  // the masks: the rows of largest L1 norm, with the biases of the other rows masked too
  const auto k0 = kept_rows(w0, 32, 16);
  for (index_t r = 0; r < 32; ++r) {
    const bool kept = std::binary_search(k0.begin(), k0.end(), r);
    CHECK(p.mask("0.weight")[std::size_t(r * 9)] == (kept ? 1.0f : 0.0f));
    CHECK(p.mask("0.bias")[std::size_t(r)] == (kept ? 1.0f : 0.0f));
  }
  net.eval();
  auto small = prune::shrink<SmallCNN>(net, p);
  CHECK(!small.is_training());
  CHECK(small.num_parameters() == 16 * 10 + 32 * 16 * 9 + 32 + 64 * 32 * 49 + 64 + 64 * 10 + 10);
  // layer 3's weights: the kept rows of 3.weight (by the norms of whole rows, as ln_structured on each layer in
  // PyTorch) and the columns of the input channels k0
  const auto k3 = kept_rows(w3, 64, 32);
  const auto s3 = values(small, "3.weight");
  for (std::size_t r = 0; r < k3.size(); ++r)
    for (std::size_t c = 0; c < k0.size(); ++c)
      for (index_t t = 0; t < 9; ++t)
        CHECK(s3[(r * 16 + c) * 9 + std::size_t(t)] == w3[std::size_t((k3[r] * 32 + k0[c]) * 9 + t)]);
  // layer 7 after Flatten: the kept channels' 49-column blocks
  const auto s7 = values(small, "7.weight");
  const auto m7 = p.mask("7.weight");
  std::vector<index_t> k7;
  for (index_t r = 0; r < 128; ++r)
    if (m7[std::size_t(r * 3136 + k3[0] * 49)] != 0.0f) k7.push_back(r);
  REQUIRE(k7.size() == 64);
  for (std::size_t r = 0; r < 64; r += 7)
    for (std::size_t c = 0; c < 32; ++c)
      for (index_t j = 0; j < 49; j += 5) CHECK(s7[r * 1568 + c * 49 + std::size_t(j)] == w7[std::size_t(k7[r] * 3136 + k3[c] * 49 + j)]);
  for (index_t batch : {1, 7, 33}) {
    auto x = input<ts::Shape<dyn, 1, 28, 28>>(batch, 1, 28, 28);
    const auto want = net.predict(x);
    const auto got = small.predict(x);
    check_close(want, got, 1e-5);
  }
}

TEST_CASE("shrink: a CNN with BatchNorm2d and BatchNorm1d, trained a little, pruned by counts", "[prune]") {
  BNCNN net(2);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  auto x = input<ts::Shape<dyn, 3, 12, 12>>(16, 3, 12, 12);
  ts::Tensor<std::int32_t, ts::Shape<dyn>> y(16);
  for (index_t i = 0; i < 16; ++i) y(i) = std::int32_t(i % 5);
  auto train = [&](prune::pruning<float>* p) {
    net.train();
    opt.zero_grad();
    auto loss = ad::cross_entropy(net.forward(x), y);
    loss.backward();
    if (p) p->mask_gradients(net);
    opt.step();
    if (p) p->apply(net);
  };
  for (int i = 0; i < 3; ++i) train(nullptr);  // running statistics, gamma and beta away from 1 and 0
  prune::pruning<float> p;
  prune::prune_channels(p, net, std::vector<prune::amount>{3, 6, 9});
  CHECK(p.has_mask("1.weight"));
  CHECK(p.has_mask("10.bias"));
  for (int i = 0; i < 3; ++i) train(&p);  // fine-tuning keeps the dropped channels at 0
  net.eval();
  auto small = prune::shrink<BNSmall>(net, p);
  // the BatchNorm2d after layer 4: running statistics of the kept channels
  std::vector<float> rm;
  net.for_each_buffer([&](const std::string& n, auto& t) {
    if (n == "5.running_mean") rm.assign(t.data(), t.data() + t.size());
  });
  std::vector<float> srm;
  small.for_each_buffer([&](const std::string& n, auto& t) {
    if (n == "5.running_mean") srm.assign(t.data(), t.data() + t.size());
  });
  const auto m4 = p.mask("4.weight");
  std::vector<float> want_rm;
  for (index_t c = 0; c < 12; ++c)
    if (std::any_of(m4.begin() + c * 72, m4.begin() + (c + 1) * 72, [](float v) { return v != 0; }))  // [12, 8, 3, 3]
      want_rm.push_back(rm[std::size_t(c)]);
  CHECK(srm == want_rm);
  for (index_t batch : {1, 7, 33}) {
    auto xb = input<ts::Shape<dyn, 3, 12, 12>>(batch, 3, 12, 12);
    check_close(net.predict(xb), small.predict(xb), 1e-5);
  }
}

TEST_CASE("shrink: an MLP (Linear without bias last), L2 norms, after remove", "[prune]") {
  MLP net(4);
  prune::pruning<float> p;
  prune::prune_channels(p, net, std::vector<prune::amount>{7, 0.6}, 2);  // 16 -> 9, 12 -> round(7.2) = 7 pruned -> 5
  for (index_t batch : {1, 7, 33}) {
    auto x = input<ts::Shape<dyn, 4, 5>>(batch, 4, 5);
    const auto want = net.predict(x);
    check_close(want, prune::shrink<MLPSmall>(net, p).predict(x), 1e-5);
    // the masks removed: the channels whose weights are all zero go
    prune::pruning<float> q = p;
    q.remove_all();
    check_close(want, prune::shrink<MLPSmall>(net, q).predict(x), 1e-5);
    check_close(want, prune::shrink<MLPSmall>(net).predict(x), 1e-5);
  }
}

TEST_CASE("shrink: the shrunk SimpleCNN converts to int8 and runs", "[prune]") {
  ts::cpu_threads::set_num_threads(2);
  SimpleCNN net(6);
  prune::pruning<float> p;
  prune::prune_channels(p, net, 0.5);
  net.eval();
  auto small = prune::shrink<SmallCNN>(net, p);
  auto calib = input<ts::Shape<dyn, 1, 28, 28>>(64, 1, 28, 28);
  auto q = ts::quant::quantize(small, calib);
  auto x = input<ts::Shape<dyn, 1, 28, 28>>(33, 1, 28, 28);
  const auto f = small.predict(x);
  const auto g = q.predict(x);
  REQUIRE(g.dims() == f.dims());
  double scale = 0, diff = 0;
  for (index_t i = 0; i < f.size(); ++i) {
    scale = std::max(scale, std::fabs(double(f.data()[i])));
    diff = std::max(diff, std::fabs(double(f.data()[i]) - double(g.data()[i])));
  }
  INFO("int8 against float: max difference " << diff << ", max |logit| " << scale);
  CHECK(diff < 0.1 * scale);  // int8 rounding, not a different model
}

TEST_CASE("shrink: errors name the layer and the counts", "[prune]") {
  auto message = [&](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  MLP net(9);
  prune::pruning<float> p;
  prune::prune_channels(p, net, std::vector<prune::amount>{6, 7});  // 16 -> 10, not 9
  const auto m1 = message([&] { prune::shrink<MLPSmall>(net, p); });
  CHECK(m1.find("layer 1 (weight [16, 20]) keeps 10 of its 16 output channels") != std::string::npos);
  CHECK(m1.find("[9, 20]") != std::string::npos);
  CHECK(message([&] { prune::prune_channels(p, net, std::vector<prune::amount>{6}); }).find("1 amounts given, the model has 2") !=
        std::string::npos);
  // PyTorch's ln_structured alone masks the weight, not the bias: the dropped neurons still output relu(bias)
  MLP other(9);
  prune::pruning<float> w;
  w.ln_structured(other, "1.weight", 7, 1);
  w.ln_structured(other, "3.weight", 7, 1);
  const auto m2 = message([&] { prune::shrink<MLPSmall>(other, w); });
  CHECK(m2.find("layer 1 drops output channel") != std::string::npos);
  CHECK(m2.find("require_exact") != std::string::npos);
  CHECK(message([&] { prune::shrink<MLPSmall>(other, w, {.require_exact = false}); }) == "no exception");
  // unpruned: all 16 channels kept
  MLP full(9);
  CHECK(message([&] { prune::shrink<MLPSmall>(full); }).find("keeps 16 of its 16") != std::string::npos);
}
