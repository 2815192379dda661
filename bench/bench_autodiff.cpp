// Autodiff benchmarks: the free-form chain tanh(a*b + c) * sigmoid(a - c) on Vars, forward + backward, recorded
// whole (autodiff/fused.hpp: one pass forward, one pass backward) against the same chain evaluated op by op (every
// intermediate a Var of its own, as eager autodiff does: what tessera did before the fused expressions). PyTorch
// 1.13's eager autograd on the same chain is bench/torch_peers.py's autodiff_chain (bench/compare workload
// autodiff_chain). Bytes counted: forward 3 reads + 1 write, backward 4 reads (a, b, c, the seed) + 3 writes.
#include <benchmark/benchmark.h>

#include <cmath>
#include <tessera/autodiff/ops.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using Vec = ts::Tensor<float, ts::dyn_shape_t<1>, ts::cpu_threads>;
using V = ad::Var<float, 1, ts::cpu_threads>;

namespace {
Vec filled(ts::index_t n, float seed) {
  Vec v(n);
  for (ts::index_t i = 0; i < n; ++i) v.data()[i] = seed * float((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  return v;
}

template <bool Fused>
void BM_autodiff_chain(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  V a(filled(n, 1.f), true), b(filled(n, 2.f), true), c(filled(n, 3.f), true);
  Vec seed = filled(n, 0.5f);
  for (auto _ : st) {
    a.zero_grad(), b.zero_grad(), c.zero_grad();
    if constexpr (Fused) {
      V y = ad::tanh(a * b + c) * ad::sigmoid(a - c);
      y.backward(seed);
    } else {
      V t1 = a * b, t2 = t1 + c, t3 = ad::tanh(t2), t4 = a - c, t5 = ad::sigmoid(t4), y = t3 * t5;
      y.backward(seed);
    }
    benchmark::DoNotOptimize(a.grad().data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(11 * 4 * double(n)));
  st.counters["elements"] = double(n);
}
void BM_autodiff_chain_fused(benchmark::State& st) { BM_autodiff_chain<true>(st); }
void BM_autodiff_chain_eager(benchmark::State& st) { BM_autodiff_chain<false>(st); }

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
  for (long n : {1L << 16, 1L << 20, 1L << 24})
    for (long t : {1, 2}) b->Args({n, t});
}
}  // namespace

BENCHMARK(BM_autodiff_chain_fused)->Apply(sizes);
BENCHMARK(BM_autodiff_chain_eager)->Apply(sizes);
BENCHMARK_MAIN();
