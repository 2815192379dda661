// The bf16 convolution kernels (kernels/cpu/conv_bf16.hpp) against the fp32 ones (kernels/cpu/conv.hpp) on the
// SimpleCNN's two convolutions at batch 64 (1 -> 32 channels on 28 x 28, 32 -> 64 on 14 x 14; 3 x 3, padding 1):
// forward, input gradient and weight gradient, 1 and 2 threads. FLOP/s counts 2*N*K*OH*OW*C*R*S for each of the
// three. The bf16 ones read bf16 x, w and dy and write fp32; the fp32 ones are the kernels the fp32 model runs
// (cpu_conv2d's direct 3 x 3 stencil for the first layer, its implicit GEMM for the second). The label names the
// bf16 GEMM's path and the route: on the avx2 path the forward and the weight gradient may widen their operands and
// run conv.hpp's fp32 kernels (route 0, conv_bf16_widens) unless route 1 asks for im2col + the bf16 GEMM (what every
// other path runs).
// Also the conversion fp32 -> bf16 of the second layer's input (what an autocast adds per call).
//   bench_conv_bf16 --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include <tessera/kernels/cpu/conv.hpp>
#include <tessera/kernels/cpu/conv_bf16.hpp>

namespace ts = tessera;
using ts::bfloat16;
using ts::index_t;

namespace {

/// One layer's operands in both precisions (the bf16 ones rounded from the fp32 ones).
struct layer {
  ts::detail::conv_geometry g;
  std::vector<float> x, w, dy, y, dx, dw;
  std::vector<bfloat16> xb, wb, dyb;
  layer(index_t n, index_t c, index_t k, index_t hw)
      : g{n, c, hw, hw, k, 3, 3, hw, hw, ts::hw{1}, ts::hw{1}, ts::hw{1}, 1},
        x(std::size_t(n * c * hw * hw)), w(std::size_t(k * c * 9)), dy(std::size_t(n * k * hw * hw)), y(dy.size()),
        dx(x.size()), dw(w.size()) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = float((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float((i * 104729) % 1000) * 1e-4f - 0.05f;
    for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = float((i * 15485863) % 1000) * 1e-3f - 0.5f;
    auto round = [](const std::vector<float>& v) {
      std::vector<bfloat16> b(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) b[i] = bfloat16(v[i]);
      return b;
    };
    xb = round(x);
    wb = round(w);
    dyb = round(dy);
  }
  double flops() const { return 2.0 * double(g.N * g.K * g.OH * g.OW) * double(g.C * g.R * g.S); }
};

layer& get(const benchmark::State& st) {  // one per shape, built once
  static layer l1(64, 1, 32, 28), l2(64, 32, 64, 14);
  return st.range(0) == 1 ? l1 : l2;
}

/// bf16: name the path and the route; widening: a kernel that may widen its operands (weight: the weight gradient).
void finish(benchmark::State& st, const layer& l, bool bf16, bool widening = false, bool weight = false) {
  st.counters["FLOP/s"] = benchmark::Counter(l.flops() * double(st.iterations()), benchmark::Counter::kIsRate);
  if (bf16)
    st.SetLabel("bf16 path " + std::string(ts::bf16_isa_name(ts::bf16_isa_active())) +
                (widening && ts::detail::conv_bf16_widens(l.g, weight) ? ", widened to fp32 + conv.hpp" : ", im2col + bf16 GEMM"));
  ts::detail::conv_bf16_route_setting().store(0);
}
/// The route of the avx2 path from the benchmark's third argument (0: automatic, 1: im2col + the bf16 GEMM).
void route(const benchmark::State& st) { ts::detail::conv_bf16_route_setting().store(int(st.range(2))); }

const index_t* cstrides(const ts::detail::conv_geometry& g, index_t* s, index_t c) {
  s[3] = 1, s[2] = g.W, s[1] = g.H * g.W, s[0] = c * g.H * g.W;
  return s;
}

void BM_conv_fwd_fp32(benchmark::State& st) {
  auto& l = get(st);
  const int nt = int(st.range(1));
  index_t xs[4], ws[4] = {l.g.C * 9, 9, 3, 1};
  cstrides(l.g, xs, l.g.C);
  for (auto _ : st) {
    ts::detail::cpu_conv2d<float>(l.g, l.x.data(), xs, l.w.data(), ws, l.y.data(), l.g.K * l.g.OH * l.g.OW, l.g.OH * l.g.OW, nt);
    benchmark::ClobberMemory();
  }
  finish(st, l, false);
}
void BM_conv_fwd_bf16(benchmark::State& st) {
  auto& l = get(st);
  const int nt = int(st.range(1));
  route(st);
  for (auto _ : st) {
    ts::detail::cpu_conv2d_bf16(l.g, l.xb.data(), l.wb.data(), l.y.data(), nt);
    benchmark::ClobberMemory();
  }
  finish(st, l, true, true);
}
void BM_conv_bwd_data_fp32(benchmark::State& st) {
  auto& l = get(st);
  const int nt = int(st.range(1));
  for (auto _ : st) {
    ts::detail::cpu_conv2d_backward_data<float>(l.g, l.dy.data(), l.w.data(), l.dx.data(), nt);
    benchmark::ClobberMemory();
  }
  finish(st, l, false);
}
void BM_conv_bwd_data_bf16(benchmark::State& st) {
  auto& l = get(st);
  const int nt = int(st.range(1));
  route(st);
  for (auto _ : st) {
    ts::detail::cpu_conv2d_bf16_backward_data(l.g, l.dyb.data(), l.wb.data(), l.dx.data(), false, nt);
    benchmark::ClobberMemory();
  }
  finish(st, l, true);
}
void BM_conv_bwd_weight_fp32(benchmark::State& st) {
  auto& l = get(st);
  const int nt = int(st.range(1));
  for (auto _ : st) {
    ts::detail::cpu_conv2d_backward_weight<float>(l.g, l.x.data(), l.dy.data(), l.dw.data(), nullptr, false, nt);
    benchmark::ClobberMemory();
  }
  finish(st, l, false);
}
void BM_conv_bwd_weight_bf16(benchmark::State& st) {
  auto& l = get(st);
  const int nt = int(st.range(1));
  route(st);
  for (auto _ : st) {
    ts::detail::cpu_conv2d_bf16_backward_weight(l.g, l.xb.data(), l.dyb.data(), l.dw.data(), false, nt);
    benchmark::ClobberMemory();
  }
  finish(st, l, true, true, true);
}
/// fp32 -> bf16 of the second layer's input (64 x 32 x 14 x 14 = 401408 floats); bytes/s counts what it reads and writes.
void BM_to_bf16(benchmark::State& st) {
  auto& l = get(st);
  std::vector<bfloat16> out(l.x.size());
  const int nt = int(st.range(1));
  for (auto _ : st) {
    ts::detail::cpu_to_bf16(l.x.data(), out.data(), index_t(l.x.size()), nt);
    benchmark::ClobberMemory();
  }
  st.counters["bytes/s"] = benchmark::Counter(6.0 * double(l.x.size()) * double(st.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace

// args: layer (1: 1 -> 32 on 28 x 28, 2: 32 -> 64 on 14 x 14), threads
#define TS_CONV_BF16_ARGS ->Args({1, 1, 0})->Args({1, 2, 0})->Args({2, 1, 0})->Args({2, 2, 0})->ArgNames({"layer", "threads", "route"})->UseRealTime()->Unit(benchmark::kMicrosecond)
// the same and, for the kernels that widen on the avx2 path, route 1: im2col + the bf16 GEMM
#define TS_CONV_BF16_ROUTES TS_CONV_BF16_ARGS->Args({1, 1, 1})->Args({1, 2, 1})->Args({2, 1, 1})->Args({2, 2, 1})
BENCHMARK(BM_conv_fwd_fp32) TS_CONV_BF16_ARGS;
BENCHMARK(BM_conv_fwd_bf16) TS_CONV_BF16_ROUTES;
BENCHMARK(BM_conv_bwd_data_fp32) TS_CONV_BF16_ARGS;
BENCHMARK(BM_conv_bwd_data_bf16) TS_CONV_BF16_ARGS;
BENCHMARK(BM_conv_bwd_weight_fp32) TS_CONV_BF16_ARGS;
BENCHMARK(BM_conv_bwd_weight_bf16) TS_CONV_BF16_ROUTES;
BENCHMARK(BM_to_bf16)->Args({2, 1})->Args({2, 2})->ArgNames({"layer", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
