// ad::lstm, 2 layers, T = 100, B = 64, I = 128, H = 256, float, 2 threads: the forward pass (under no_grad) and
// forward + backward. FLOP/s counts the GEMMs of the forward pass, 2*T*B*4H*(I+H) + 2*T*B*4H*(H+H) (for forward +
// backward the same count times 3: two more GEMMs of each size). One cell step (ad::lstm_cell, B = 64, I = 128,
// H = 256, from a given (h, c)): forward, and forward + backward; FLOP/s counts 2*B*4H*(I+H) (times 3 with backward).
#include <benchmark/benchmark.h>

#include <tessera/autodiff/rnn_ops.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::index_t;

namespace {
constexpr index_t T = 100, B = 64, I = 128, H = 256, L = 2;
using P = ts::cpu_threads;

struct setup {
  std::vector<ad::lstm_layer_params<float, P>> layers;
  ad::Var<float, 3, P> x;
  setup() {
    ts::Rng rng(1);
    const float bound = 1.0f / 16.0f;
    auto fill = [&](auto& t) {
      for (index_t i = 0; i < t.size(); ++i) t.data()[i] = rng.uniform(-bound, bound);
    };
    for (index_t l = 0; l < L; ++l) {
      ts::Tensor<float, ts::dyn_shape_t<2>, P> wi(4 * H, l == 0 ? I : H), wh(4 * H, H);
      ts::Tensor<float, ts::dyn_shape_t<1>, P> bi(4 * H), bh(4 * H);
      fill(wi), fill(wh), fill(bi), fill(bh);
      layers.push_back({ad::Var<float, 2, P>(wi, true), ad::Var<float, 2, P>(wh, true), ad::Var<float, 1, P>(bi, true),
                        ad::Var<float, 1, P>(bh, true)});
    }
    ts::Tensor<float, ts::dyn_shape_t<3>, P> xv(B, T, I);
    for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = rng.uniform(-1.0f, 1.0f);
    x = ad::Var<float, 3, P>(xv, false);
  }
};

constexpr double forward_flops = 2.0 * T * B * 4 * H * (I + H) + 2.0 * T * B * 4 * H * (H + H);

void BM_lstm_forward(benchmark::State& st) {
  P::set_num_threads(2);
  setup s;
  const ts::lstm_options o{.num_layers = int(L), .batch_first = true};
  for (auto _ : st) {
    ad::no_grad ng;
    auto r = ad::lstm(s.x, s.layers, o);
    benchmark::DoNotOptimize(r.output.value().data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(forward_flops * double(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_lstm_forward_backward(benchmark::State& st) {
  P::set_num_threads(2);
  setup s;
  const ts::lstm_options o{.num_layers = int(L), .batch_first = true};
  for (auto _ : st) {
    for (auto& p : s.layers) p.weight_ih.zero_grad(), p.weight_hh.zero_grad(), p.bias_ih.zero_grad(), p.bias_hh.zero_grad();
    auto r = ad::lstm(s.x, s.layers, o);
    auto loss = ad::sum(r.output);
    loss.backward();
    benchmark::DoNotOptimize(s.layers[0].weight_ih.grad().data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(3.0 * forward_flops * double(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_lstm_cell_step(benchmark::State& st) {
  P::set_num_threads(2);
  setup s;
  auto& p = s.layers[0];
  ts::Tensor<float, ts::dyn_shape_t<2>, P> xv(B, I), hv(B, H), cv(B, H);
  ts::Rng rng(2);
  for (auto* t : {&xv, &hv, &cv})
    for (index_t i = 0; i < t->size(); ++i) t->data()[i] = rng.uniform(-1.0f, 1.0f);
  const bool backward = st.range(0) != 0;
  ad::Var<float, 2, P> x(xv, backward), h(hv, backward), c(cv, backward);
  for (auto _ : st) {
    if (backward) {
      for (auto* v : {&x, &h, &c}) v->zero_grad();
      p.weight_ih.zero_grad(), p.weight_hh.zero_grad(), p.bias_ih.zero_grad(), p.bias_hh.zero_grad();
      auto r = ad::lstm_cell(x, h, c, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh);
      auto loss = ad::sum(r.h) + ad::sum(r.c);
      loss.backward();
      benchmark::DoNotOptimize(p.weight_hh.grad().data());
    } else {
      ad::no_grad ng;
      auto r = ad::lstm_cell(x, h, c, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh);
      benchmark::DoNotOptimize(r.h.value().data());
    }
  }
  st.counters["FLOP/s"] =
      benchmark::Counter((backward ? 3.0 : 1.0) * 2.0 * B * 4 * H * (I + H) * double(st.iterations()), benchmark::Counter::kIsRate);
}
}  // namespace

BENCHMARK(BM_lstm_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_lstm_forward_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_lstm_cell_step)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();
