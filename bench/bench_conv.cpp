// conv2d + bias + ReLU on the SimpleCNN's layers at batch 64 (1 -> 32 channels on 28 x 28, 32 -> 64 on 14 x 14;
// 3 x 3, padding 1), 2 threads: the fused expression (bias and ReLU as the convolution's epilogue), the bare
// convolution, and convolution-then-elementwise (two passes). FLOP/s counts the convolution's 2*N*K*OH*OW*C*R*S.
// The PyTorch peer runs in bench/conv_report.sh, next to this binary.
#include <benchmark/benchmark.h>

#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using T4 = ts::Tensor<float, ts::Shape<dyn, dyn, dyn, dyn>, ts::cpu_threads>;

namespace {
struct layer {
  T4 x, w, b, y;
  layer(ts::index_t n, ts::index_t c, ts::index_t k, ts::index_t hw) : x(n, c, hw, hw), w(k, c, 3, 3), b(1, k, 1, 1), y(n, k, hw, hw) {
    for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (ts::index_t i = 0; i < w.size(); ++i) w.data()[i] = float((i * 104729) % 1000) * 1e-4f - 0.05f;
    for (ts::index_t i = 0; i < b.size(); ++i) b.data()[i] = float(i % 7) * 0.01f;
  }
  auto bias() const { return ts::reshape<ts::Shape<dyn, 1, 1>>(b, {b.size(), 1, 1}); }
};

void flops(benchmark::State& st, const layer& l) {
  const double f = 2.0 * double(l.y.size()) * double(l.w.size() / l.w.dims()[0]);
  st.counters["FLOP/s"] = benchmark::Counter(f * double(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_conv_bias_relu_fused(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(2);
  layer l(st.range(0), st.range(1), st.range(2), st.range(3));
  for (auto _ : st) {
    l.y = ts::relu(ts::conv2d(l.x, l.w, {.padding = 1}) + l.bias());
    benchmark::DoNotOptimize(l.y.data());
  }
  flops(st, l);
}

void BM_conv_bare(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(2);
  layer l(st.range(0), st.range(1), st.range(2), st.range(3));
  for (auto _ : st) {
    l.y = ts::conv2d(l.x, l.w, {.padding = 1});
    benchmark::DoNotOptimize(l.y.data());
  }
  flops(st, l);
}

void BM_conv_then_bias_relu(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(2);
  layer l(st.range(0), st.range(1), st.range(2), st.range(3));
  for (auto _ : st) {
    l.y = ts::conv2d(l.x, l.w, {.padding = 1});
    l.y = ts::relu(l.y + l.bias());
    benchmark::DoNotOptimize(l.y.data());
  }
  flops(st, l);
}
}  // namespace

#define TS_CONV_ARGS ->Args({64, 1, 32, 28})->Args({64, 32, 64, 14})->ArgNames({"n", "c", "k", "hw"})->UseRealTime()->Unit(benchmark::kMicrosecond)
BENCHMARK(BM_conv_bias_relu_fused) TS_CONV_ARGS;
BENCHMARK(BM_conv_bare) TS_CONV_ARGS;
BENCHMARK(BM_conv_then_bias_relu) TS_CONV_ARGS;
