// Autodiff on the cuda policy against the same operations on cpu_threads: every layer operation's forward value and
// the gradients of all its inputs (loss = sum(y * c) for fixed c), gradients that accumulate (an input used twice),
// broadcasting, reductions and the generic operations, a small Sequential trained 20 SGD steps on both policies
// (the same loss trajectory), and SGD / Adam / AdamW steps on device parameters against host ones (state included).
// float throughout; values are compared to 1e-4 relative (scaled by the tensor's largest magnitude near zero).
// Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"
#include "cuda_autodiff_support.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <tessera/autodiff/nn_ops.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>
#include <tuple>
#include <utility>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dims_t;
using ts::dyn;
using ts::index_t;
using ts::Shape;


namespace {
using host_policy = ts::cpu_threads;

using cuda_test::htensor;
using cuda_test::values;
using cuda_test::leaf;
using cuda_test::require_close;

/// Runs f (a generic lambda: Vars -> output Var) on cpu_threads and on cuda with copies of the same inputs (each
/// requiring a gradient), back-propagates loss = sum(y * c) with fixed c, and compares y and every gradient.
template <class F, class... H>
void check_op(const std::string& name, F&& f, const H&... inputs) {
  auto run = [&](auto pol) {
    using P = decltype(pol);
    auto vars = std::make_tuple(leaf<P>(inputs)...);
    auto y = std::apply(f, vars);
    constexpr int RO = decltype(y)::rank;
    auto c = leaf<P>(values<RO>(y.dims(), 99), false);
    auto loss = ad::sum(y * c);
    loss.backward();
    auto grads = std::apply([](auto&... v) { return std::make_tuple(ts::to<ts::cpu>(v.grad())...); }, vars);
    return std::make_pair(ts::to<ts::cpu>(y.value()), std::move(grads));
  };
  const auto host = run(host_policy{});
  const auto dev = run(ts::cuda{});
  require_close(host.first, dev.first, name + ": forward");
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (require_close(std::get<I>(host.second), std::get<I>(dev.second), name + ": gradient of input " + std::to_string(I)), ...);
  }(std::index_sequence_for<H...>{});
}

const char* act_name(ad::activation a) {
  switch (a) {
    case ad::activation::none: return "none";
    case ad::activation::relu: return "relu";
    case ad::activation::tanh: return "tanh";
    case ad::activation::sigmoid: return "sigmoid";
  }
  return "?";
}
constexpr ad::activation all_acts[] = {ad::activation::none, ad::activation::relu, ad::activation::tanh, ad::activation::sigmoid};
}  // namespace

TEST_CASE("cuda autodiff: linear, every activation, with and without bias", "[cuda][autodiff]") {
  for (index_t b : {1, 7, 33})
    for (auto [in, out] : {std::pair<index_t, index_t>{5, 3}, {37, 19}})
      for (auto act : all_acts) {
        const std::string name = "linear b=" + std::to_string(b) + " in=" + std::to_string(in) + " out=" + std::to_string(out) +
                                 " act=" + act_name(act);
        const auto x = values<2>({b, in}, 1), w = values<2>({out, in}, 2);
        const auto bias = values<1>({out}, 3);
        check_op(name, [act](const auto& x, const auto& w, const auto& b) { return ad::linear(x, w, b, act); }, x, w, bias);
        check_op(name + " (no bias)", [act](const auto& x, const auto& w) { return ad::linear(x, w, {}, act); }, x, w);
        // W and x used twice: the second GEMMs accumulate into the gradients (cuBLASLt's beta = 1)
        check_op(name + " (twice)", [act](const auto& x, const auto& w, const auto& b) {
          return ad::linear(x, w, b, act) + ad::linear(x, w, {}, ad::activation::tanh);
        }, x, w, bias);
      }
}

TEST_CASE("cuda autodiff: conv2d with stride, padding, dilation, groups, bias and activation", "[cuda][autodiff]") {
  struct cfg {
    index_t n, c, h, k, r;
    ts::conv2d_options o;
    ad::activation act;
  };
  for (auto t : {cfg{2, 3, 7, 4, 3, ts::conv2d_options{.padding = 1}, ad::activation::relu},
                 cfg{1, 2, 8, 3, 3, ts::conv2d_options{.stride = 2, .padding = 1}, ad::activation::tanh},
                 cfg{2, 2, 9, 2, 3, ts::conv2d_options{.padding = 2, .dilation = 2}, ad::activation::none},
                 cfg{1, 4, 6, 4, 3, ts::conv2d_options{.padding = 1, .groups = 2}, ad::activation::sigmoid},
                 cfg{1, 1, 5, 2, 1, ts::conv2d_options{}, ad::activation::none},
                 cfg{3, 5, 11, 7, 3, ts::conv2d_options{.padding = 1}, ad::activation::relu}}) {
    const std::string name = "conv2d n=" + std::to_string(t.n) + " c=" + std::to_string(t.c) + " h=" + std::to_string(t.h) +
                             " k=" + std::to_string(t.k) + " r=" + std::to_string(t.r) + " stride=" + std::to_string(t.o.stride.h) +
                             " act=" + act_name(t.act);
    const auto x = values<4>({t.n, t.c, t.h, t.h}, 5), w = values<4>({t.k, t.c / t.o.groups, t.r, t.r}, 6);
    const auto b = values<1>({t.k}, 7);
    const auto o = t.o;
    const auto act = t.act;
    check_op(name, [o, act](const auto& x, const auto& w, const auto& b) { return ad::conv2d(x, w, b, o, act); }, x, w, b);
    check_op(name + " (no bias)", [o, act](const auto& x, const auto& w) { return ad::conv2d(x, w, {}, o, act); }, x, w);
    check_op(name + " (twice)", [o, act](const auto& x, const auto& w, const auto& b) {
      return ad::conv2d(x, w, b, o, act) + ad::conv2d(x, w, b, o, ad::activation::none);
    }, x, w, b);
  }
}

TEST_CASE("cuda autodiff: conv2d + relu + 2x2 max-pool fused", "[cuda][autodiff]") {
  struct cfg {
    index_t n, c, h, k;
  };
  for (auto t : {cfg{2, 3, 9, 5}, cfg{1, 2, 8, 4}, cfg{3, 1, 7, 6}}) {
    const std::string name = "conv2d_relu_maxpool2 n=" + std::to_string(t.n) + " c=" + std::to_string(t.c) + " h=" + std::to_string(t.h);
    const auto x = values<4>({t.n, t.c, t.h, t.h}, 8), w = values<4>({t.k, t.c, 3, 3}, 9);
    const auto b = values<1>({t.k}, 10, -0.3, 0.3);
    const ts::conv2d_options o{.padding = 1};
    check_op(name, [o](const auto& x, const auto& w, const auto& b) { return ad::conv2d_relu_maxpool2(x, w, b, o); }, x, w, b);
    check_op(name + " (no bias)", [o](const auto& x, const auto& w) { return ad::conv2d_relu_maxpool2(x, w, {}, o); }, x, w);
    // the fused operation equals the three operations on the device too
    check_op(name + " (unfused)", [o](const auto& x, const auto& w, const auto& b) {
      return ad::max_pool2d<2>(ad::conv2d(x, w, b, o, ad::activation::relu));
    }, x, w, b);
  }
}

TEST_CASE("cuda autodiff: max and average pooling", "[cuda][autodiff]") {
  htensor<4> x(2, 3, 7, 6);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 37) % 101) / 50.0f - 1.0f;  // distinct within windows
  check_op("max_pool2d<2>", [](const auto& x) { return ad::max_pool2d<2>(x); }, x);
  check_op("avg_pool2d<2>", [](const auto& x) { return ad::avg_pool2d<2>(x); }, x);
  check_op("max_pool2d<3, 2, 1>", [](const auto& x) { return ad::max_pool2d<3, 2, 1>(x); }, x);
  check_op("avg_pool2d<3, 2, 1>", [](const auto& x) { return ad::avg_pool2d<3, 2, 1>(x); }, x);
  check_op("max + avg pool (accumulating)", [](const auto& x) { return ad::max_pool2d<2>(x) + ad::avg_pool2d<2>(x); }, x);
}

TEST_CASE("cuda autodiff: softmax family, cross entropy, mse", "[cuda][autodiff]") {
  for (auto [b, c] : {std::pair<index_t, index_t>{5, 7}, {3, 37}, {70, 10}}) {
    const std::string sz = " " + std::to_string(b) + "x" + std::to_string(c);
    const auto z = values<2>({b, c}, 11, -3, 3);
    check_op("log_softmax" + sz, [](const auto& z) { return ad::log_softmax(z); }, z);
    check_op("softmax" + sz, [](const auto& z) { return ad::softmax(z); }, z);
    check_op("log_softmax + softmax" + sz, [](const auto& z) { return ad::log_softmax(z) + ad::softmax(z); }, z);
    ts::Tensor<int, Shape<dyn>> labels(b), labels2(b);
    for (index_t i = 0; i < b; ++i) {
      labels(i) = int((i * 3) % c);
      labels2(i) = int((i * 5 + 1) % c);
    }
    check_op("cross_entropy" + sz, [&](const auto& z) { return ad::cross_entropy(z, labels); }, z);
    check_op("cross_entropy twice" + sz, [&](const auto& z) { return ad::cross_entropy(z, labels) + ad::cross_entropy(z, labels2) * 0.5; }, z);
    const auto t = values<2>({b, c}, 13);
    check_op("mse_loss" + sz, [](const auto& a, const auto& t) { return ad::mse_loss(a, t); }, z, t);
  }
  // the same errors as on the host
  ts::Tensor<int, Shape<dyn>> bad(5);
  for (index_t i = 0; i < 5; ++i) bad(i) = int(i);
  bad(2) = 7;
  auto z = leaf<ts::cuda>(values<2>({5, 7}, 11));
  CHECK_THROWS_WITH(ad::cross_entropy(z, bad), Catch::Contains("label 7 at row 2"));
}

TEST_CASE("cuda autodiff: dropout draws the host's mask from the same Rng", "[cuda][autodiff]") {
  const auto x = values<3>({3, 5, 7}, 14);
  check_op("dropout p=0.3", [](const auto& x) {
    ts::Rng rng(42);
    return ad::dropout(x, 0.3, rng, true);
  }, x);
  check_op("dropout in evaluation", [](const auto& x) {
    ts::Rng rng(42);
    return ad::dropout(x, 0.3, rng, false);
  }, x);
}

TEST_CASE("cuda autodiff: batch_norm2d in training and evaluation, running statistics", "[cuda][autodiff]") {
  const auto x = values<4>({3, 4, 5, 3}, 15, -2, 3);
  const auto gamma = values<1>({4}, 16, 0.5, 1.5), beta = values<1>({4}, 17);
  for (bool training : {true, false}) {
    std::map<std::string, htensor<1>> stats;
    auto f = [&](const auto& x, const auto& g, const auto& b) {
      using P = typename std::remove_cvref_t<decltype(x)>::policy;
      auto rm = std::make_shared<ts::Tensor<float, Shape<dyn>, P>>(ts::to<P>(values<1>({4}, 18, -0.5, 0.5)));
      auto rv = std::make_shared<ts::Tensor<float, Shape<dyn>, P>>(ts::to<P>(values<1>({4}, 19, 0.5, 2.0)));
      auto y = ad::batch_norm2d(x, g, b, *rm, *rv, training) + ad::batch_norm2d(x, g, b, *rm, *rv, training) * 0.5;
      const std::string p = P::on_device ? "device." : "host.";
      stats[p + "mean"] = ts::to<ts::cpu>(*rm);
      stats[p + "var"] = ts::to<ts::cpu>(*rv);
      return y;
    };
    check_op(std::string("batch_norm2d ") + (training ? "training" : "evaluation"), f, x, gamma, beta);
    require_close(stats["host.mean"], stats["device.mean"], "running mean");
    require_close(stats["host.var"], stats["device.var"], "running var");
  }
}

TEST_CASE("cuda autodiff: broadcasting, reductions, products and views", "[cuda][autodiff]") {
  const auto a = values<2>({5, 7}, 20), col = values<2>({5, 1}, 22);
  const auto row = values<1>({7}, 21);
  check_op("a + row", [](const auto& a, const auto& r) { return a + r; }, a, row);
  check_op("a * col - row", [](const auto& a, const auto& c, const auto& r) { return a * c - r; }, a, col, row);
  const auto big = values<3>({3, 1, 200}, 23);
  const auto small = values<2>({4, 200}, 24);
  const auto one = values<1>({1}, 25);
  check_op("[3,1,200] * [4,200] / [1]", [](const auto& a, const auto& b, const auto& c) { return a * b / (c + 3.0f); }, big, small, one);
  const auto wide = values<2>({300, 100}, 26);
  const auto r100 = values<1>({100}, 27);
  check_op("[300,100] + [100] (a long fold)", [](const auto& a, const auto& b) { return ad::tanh(a + b); }, wide, r100);
  check_op("sum", [](const auto& a) { return ad::sum(ad::exp(a)); }, a);
  check_op("mean", [](const auto& a) { return ad::mean(ad::square(a)); }, a);
  check_op("activations", [](const auto& a) { return ad::sigmoid(a) * ad::relu(a) + ad::gelu(a) - ad::abs(a); }, a);
  const auto m = values<2>({7, 3}, 28);
  check_op("matmul, transpose", [](const auto& a, const auto& m) { return ad::transpose(ad::matmul(a, m)); }, a, m);
  check_op("reshape, flatten", [](const auto& a) { return ad::flatten_batch(ad::reshape<3>(a, dims_t<3>{5, 7, 1})); }, a);
}

TEST_CASE("cuda autodiff: backward with a seed and accumulation over two backward passes", "[cuda][autodiff]") {
  auto run = [](auto pol) {
    using P = decltype(pol);
    auto x = leaf<P>(values<2>({4, 6}, 30));
    auto w = leaf<P>(values<2>({3, 6}, 31));
    auto y = ad::linear(x, w, {}, ad::activation::tanh);
    y.backward(ts::to<P>(values<2>({4, 3}, 32)));
    auto z = ad::sum(ad::linear(x, w, {}, ad::activation::relu));
    z.backward();  // adds to the leaves' gradients
    return std::make_pair(ts::to<ts::cpu>(x.grad()), ts::to<ts::cpu>(w.grad()));
  };
  const auto h = run(host_policy{});
  const auto d = run(ts::cuda{});
  require_close(h.first, d.first, "x.grad");
  require_close(h.second, d.second, "w.grad");
}

namespace {
// A small model with every fused path: conv + relu + maxpool, conv + tanh, batch norm, linear + relu, dropout, linear.
using Tiny = nn::Sequential<Shape<dyn, 2, 12, 12>,
    nn::Conv2d<2, 6, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<6, 8, 3>, nn::Tanh, nn::BatchNorm2d<8>, nn::AvgPool2d<2>,
    nn::Flatten, nn::Linear<8 * 2 * 2, 24>, nn::ReLU, nn::Dropout<0.2>, nn::Linear<24, 5>>;

template <class P>
std::vector<double> train_tiny(int steps) {
  typename Tiny::template on<P> net(/*seed=*/3);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4});
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    const auto xb = values<4>({16, 2, 12, 12}, 100 + s);
    ts::Tensor<int, Shape<dyn>> yb(16);
    for (index_t i = 0; i < 16; ++i) yb(i) = int((i * 7 + s) % 5);
    opt.zero_grad();
    auto loss = ad::cross_entropy(net.forward(ts::Tensor<float, Shape<dyn, 2, 12, 12>>(xb)), yb);
    loss.backward();
    opt.step();
    losses.push_back(double(ts::to<ts::cpu>(loss.value())()));
  }
  return losses;
}
}  // namespace

TEST_CASE("cuda autodiff: a small Sequential trains 20 SGD steps as on the host", "[cuda][autodiff][nn]") {
  const auto h = train_tiny<host_policy>(20);
  const auto d = train_tiny<ts::cuda>(20);
  REQUIRE(h.size() == d.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    INFO("step " << i << ": host loss " << h[i] << ", device loss " << d[i]);
    REQUIRE(d[i] == Approx(h[i]).epsilon(2e-3));
  }
  CHECK(d.back() < d.front());  // and it learns
}

TEST_CASE("cuda optimizers: SGD, Adam and AdamW steps on device parameters match the host", "[cuda][optim]") {
  auto run = [](auto pol, int which) {
    using P = decltype(pol);
    auto w = leaf<P>(values<2>({33, 17}, 40));
    auto b = leaf<P>(values<1>({17}, 41));
    auto unused = leaf<P>(values<1>({5}, 42));  // never gets a gradient: skipped, its state does not advance
    std::vector<nn::parameter_ref<float>> params = {nn::make_parameter_ref("w", w), nn::make_parameter_ref("b", b),
                                                    nn::make_parameter_ref("unused", unused)};
    CHECK(params[0].on_device == P::on_device);
    // the parameter carries its policy's table of backend functions, chosen at compile time (no run-time registry)
    REQUIRE(params[0].ops == &nn::parameter_ops_of<float, P>);
    REQUIRE(params[0].ops->on_device == P::on_device);
    auto step_all = [&](auto& opt) {
      for (int s = 0; s < 5; ++s) {
        w.mutable_grad() = ts::to<P>(values<2>({33, 17}, 50 + s));
        b.mutable_grad() = ts::to<P>(values<1>({17}, 60 + s));
        opt.step();
      }
      std::map<std::string, htensor<1>> state;
      opt.for_each_state([&](const std::string& name, auto& t) { state[name] = ts::to<ts::cpu>(t); });
      return state;
    };
    std::map<std::string, htensor<1>> state;
    if (which == 0) {
      ts::optim::SGD<float> opt(params, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
      state = step_all(opt);
    } else if (which == 1) {
      ts::optim::SGD<float> opt(params, {.lr = 0.1, .momentum = 0.8, .dampening = 0.1});
      state = step_all(opt);
    } else if (which == 2) {
      ts::optim::SGD<float> opt(params, {.lr = 0.1, .weight_decay = 0.01});
      state = step_all(opt);
    } else if (which == 3) {
      ts::optim::Adam<float> opt(params, {.lr = 0.01, .weight_decay = 0.1});
      state = step_all(opt);
    } else {
      ts::optim::AdamW<float> opt(params, {.lr = 0.01});
      state = step_all(opt);
    }
    return std::make_tuple(ts::to<ts::cpu>(w.value()), ts::to<ts::cpu>(b.value()), ts::to<ts::cpu>(unused.value()), state);
  };
  for (int which = 0; which < 5; ++which) {
    INFO("optimizer " << which);
    const auto h = run(host_policy{}, which);
    const auto d = run(ts::cuda{}, which);
    require_close(std::get<0>(h), std::get<0>(d), "w", 1e-6);
    require_close(std::get<1>(h), std::get<1>(d), "b", 1e-6);
    require_close(std::get<2>(h), std::get<2>(d), "unused", 0);
    const auto& hs = std::get<3>(h);
    const auto& ds = std::get<3>(d);
    REQUIRE(hs.size() == ds.size());
    for (const auto& [name, t] : hs) {
      REQUIRE(ds.count(name) == 1);
      require_close(t, ds.at(name), "state " + name, 1e-6);
    }
  }
}

TEST_CASE("cuda optimizers: device state saved through for_each_state loads into a fresh optimizer", "[cuda][optim]") {
  auto w = leaf<ts::cuda>(values<2>({9, 11}, 70));
  std::vector<nn::parameter_ref<float>> params = {nn::make_parameter_ref("w", w)};
  ts::optim::Adam<float> a(params, {.lr = 0.01});
  for (int s = 0; s < 3; ++s) {
    w.mutable_grad() = ts::to<ts::cuda>(values<2>({9, 11}, 71 + s));
    a.step();
  }
  std::map<std::string, htensor<1>> saved;
  a.for_each_state([&](const std::string& name, auto& t) { saved[name] = t; });
  const auto w_saved = ts::to<ts::cpu>(w.value());

  auto w2 = leaf<ts::cuda>(w_saved);
  std::vector<nn::parameter_ref<float>> params2 = {nn::make_parameter_ref("w", w2)};
  ts::optim::Adam<float> b(params2, {.lr = 0.01});
  b.for_each_state([&](const std::string& name, auto& t) { t = saved.at(name); });  // load: copied to the device after
  w.mutable_grad() = ts::to<ts::cuda>(values<2>({9, 11}, 80));
  w2.mutable_grad() = ts::to<ts::cuda>(values<2>({9, 11}, 80));
  a.step();
  b.step();
  require_close(ts::to<ts::cpu>(w.value()), ts::to<ts::cpu>(w2.value()), "continued step", 0);
  CHECK(b.steps() == 4);
}
