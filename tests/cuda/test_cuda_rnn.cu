// The LSTM on the cuda policy against the same operation on cpu_threads (whose values and gradients test_rnn checks
// against loops and finite differences): output, h_n, c_n and the gradients of the input, the initial state and every
// parameter, at odd sizes, batch-first and time-major, one and two layers, with and without an initial state, with
// dropout between layers (the same seed draws the same mask on both policies), in float and double; the last-step
// selection; and a row-LSTM Sequential trained 10 Adam steps on both policies (the same loss trajectory).
// Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <string>
#include <tessera/autodiff/rnn_ops.hpp>
#include <tessera/nn/recurrent.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dims_t;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {

/// Deterministic values in [-1, 1), varied by salt.
template <class T, int R>
ts::Tensor<T, ts::dyn_shape_t<R>> values(const dims_t<R>& d, int salt) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(double((i * 7919 + salt * 104729 + 17) % 1000) / 500.0 - 1.0);
  return t;
}

using cuda_test::require_close;

struct lstm_case {
  index_t B, T, I, H;
  int layers;
  bool batch_first, initial_state;
  double dropout;
};

template <class T>
struct lstm_run {
  ts::Tensor<T, ts::dyn_shape_t<3>> out, hn, cn, gx, gh0, gc0;
  std::vector<ts::Tensor<T, ts::dyn_shape_t<2>>> gw;
  std::vector<ts::Tensor<T, ts::dyn_shape_t<1>>> gb;
};

/// lstm on policy P; loss = sum(out * c1) + sum(h_n * c2) + sum(c_n * c3).
template <class T, class P>
lstm_run<T> run_lstm(const lstm_case& k) {
  using V3 = ad::Var<T, 3, P>;
  const dims_t<3> xd = k.batch_first ? dims_t<3>{k.B, k.T, k.I} : dims_t<3>{k.T, k.B, k.I};
  V3 x(ts::to<P>(values<T, 3>(xd, 1)), true), h0, c0;
  if (k.initial_state) {
    h0 = V3(ts::to<P>(values<T, 3>({k.layers, k.B, k.H}, 2)), true);
    c0 = V3(ts::to<P>(values<T, 3>({k.layers, k.B, k.H}, 3)), true);
  }
  std::vector<ad::lstm_layer_params<T, P>> layers;
  for (int l = 0; l < k.layers; ++l) {
    const index_t in = l == 0 ? k.I : k.H;
    auto scaled = [&](auto t) {  // weights around 1/sqrt(H), as nn::LSTM initialises them
      for (index_t i = 0; i < t.size(); ++i) t.data()[i] *= T(0.6);
      return t;
    };
    ad::lstm_layer_params<T, P> p;
    p.weight_ih = ad::Var<T, 2, P>(ts::to<P>(scaled(values<T, 2>({4 * k.H, in}, 10 + l))), true);
    p.weight_hh = ad::Var<T, 2, P>(ts::to<P>(scaled(values<T, 2>({4 * k.H, k.H}, 20 + l))), true);
    p.bias_ih = ad::Var<T, 1, P>(ts::to<P>(values<T, 1>({4 * k.H}, 30 + l)), true);
    p.bias_hh = ad::Var<T, 1, P>(ts::to<P>(values<T, 1>({4 * k.H}, 40 + l)), true);
    layers.push_back(p);
  }
  ts::Rng rng(5);
  const ts::lstm_options o{.num_layers = k.layers, .dropout = k.dropout, .batch_first = k.batch_first};
  auto r = ad::lstm(x, layers, o, h0, c0, &rng, k.dropout > 0);
  auto c1 = V3(ts::to<P>(values<T, 3>(r.output.dims(), 51)), false);
  auto c2 = V3(ts::to<P>(values<T, 3>(r.h_n.dims(), 52)), false);
  auto c3 = V3(ts::to<P>(values<T, 3>(r.c_n.dims(), 53)), false);
  auto loss = ad::sum(r.output * c1) + ad::sum(r.h_n * c2) + ad::sum(r.c_n * c3);
  loss.backward();
  lstm_run<T> res;
  res.out = ts::to<ts::cpu>(r.output.value());
  res.hn = ts::to<ts::cpu>(r.h_n.value());
  res.cn = ts::to<ts::cpu>(r.c_n.value());
  res.gx = ts::to<ts::cpu>(x.grad());
  if (k.initial_state) res.gh0 = ts::to<ts::cpu>(h0.grad()), res.gc0 = ts::to<ts::cpu>(c0.grad());
  for (auto& p : layers) {
    res.gw.push_back(ts::to<ts::cpu>(p.weight_ih.grad()));
    res.gw.push_back(ts::to<ts::cpu>(p.weight_hh.grad()));
    res.gb.push_back(ts::to<ts::cpu>(p.bias_ih.grad()));
    res.gb.push_back(ts::to<ts::cpu>(p.bias_hh.grad()));
  }
  return res;
}

template <class T>
void check_lstm(const lstm_case& k, double rel) {
  const std::string name = std::string(sizeof(T) == 4 ? "float" : "double") + " lstm B=" + std::to_string(k.B) +
                           " T=" + std::to_string(k.T) + " I=" + std::to_string(k.I) + " H=" + std::to_string(k.H) +
                           " layers=" + std::to_string(k.layers) + (k.batch_first ? " batch-first" : " time-major") +
                           (k.initial_state ? " h0/c0" : "") + (k.dropout > 0 ? " dropout" : "");
  const auto h = run_lstm<T, ts::cpu_threads>(k);
  const auto d = run_lstm<T, ts::cuda>(k);
  require_close(h.out, d.out, name + ": output", rel);
  require_close(h.hn, d.hn, name + ": h_n", rel);
  require_close(h.cn, d.cn, name + ": c_n", rel);
  require_close(h.gx, d.gx, name + ": gradient of x", rel);
  if (k.initial_state) {
    require_close(h.gh0, d.gh0, name + ": gradient of h0", rel);
    require_close(h.gc0, d.gc0, name + ": gradient of c0", rel);
  }
  for (std::size_t i = 0; i < h.gw.size(); ++i) require_close(h.gw[i], d.gw[i], name + ": weight gradient " + std::to_string(i), rel);
  for (std::size_t i = 0; i < h.gb.size(); ++i) require_close(h.gb[i], d.gb[i], name + ": bias gradient " + std::to_string(i), rel);
}

}  // namespace

TEST_CASE("cuda lstm: values and gradients match the host at odd sizes", "[cuda][rnn]") {
  for (const auto& k : {lstm_case{1, 1, 1, 1, 1, true, false, 0.0}, lstm_case{7, 5, 3, 33, 2, true, false, 0.0},
                        lstm_case{7, 5, 3, 33, 2, false, true, 0.0}, lstm_case{33, 7, 65, 7, 1, true, true, 0.0},
                        lstm_case{5, 9, 4, 65, 2, true, true, 0.3}, lstm_case{2, 127, 3, 5, 2, false, false, 0.0}}) {
    check_lstm<float>(k, 2e-4);
    check_lstm<double>(k, 1e-9);
  }
}

TEST_CASE("cuda lstm: the last step and its gradient", "[cuda][rnn]") {
  auto run = [](auto pol) {
    using P = decltype(pol);
    ad::Var<float, 3, P> y(ts::to<P>(values<float, 3>({7, 5, 33}, 4)), true);
    auto last = ad::select_last_step(y);
    auto loss = ad::sum(last * ad::Var<float, 2, P>(ts::to<P>(values<float, 2>({7, 33}, 6)), false));
    loss.backward();
    return std::make_pair(ts::to<ts::cpu>(last.value()), ts::to<ts::cpu>(y.grad()));
  };
  const auto h = run(ts::cpu_threads{});
  const auto d = run(ts::cuda{});
  require_close(h.first, d.first, "last step", 1e-6);
  require_close(h.second, d.second, "last step: gradient", 1e-6);
}

namespace {
using RowLSTM = nn::Sequential<Shape<dyn, 6, 5>,
    nn::LSTM<5, 17, ts::lstm_options{.num_layers = 2, .dropout = 0.2, .batch_first = true}>, nn::LastStep, nn::Linear<17, 4>>;

template <class P>
std::vector<double> train_rows(int steps) {
  typename RowLSTM::template on<P> net(/*seed=*/3);
  ts::optim::Adam<float> opt(net.parameters(), {.lr = 1e-2});
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    ts::Tensor<int, Shape<dyn>> yb(16);
    for (index_t i = 0; i < 16; ++i) yb(i) = int((i * 7 + s) % 4);
    opt.zero_grad();
    auto loss = ad::cross_entropy(net.forward(ts::Tensor<float, Shape<dyn, 6, 5>>(values<float, 3>({16, 6, 5}, 100 + s))), yb);
    loss.backward();
    opt.step();
    losses.push_back(double(ts::to<ts::cpu>(loss.value())()));
  }
  return losses;
}
}  // namespace

TEST_CASE("cuda lstm: a row-LSTM Sequential with dropout trains 10 Adam steps as on the host", "[cuda][rnn][nn]") {
  const auto h = train_rows<ts::cpu_threads>(10);
  const auto d = train_rows<ts::cuda>(10);
  REQUIRE(h.size() == d.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    INFO("step " << i << ": host loss " << h[i] << ", device loss " << d[i]);
    REQUIRE(d[i] == Approx(h[i]).epsilon(2e-3));
  }
  CHECK(d.back() < d.front());
}
