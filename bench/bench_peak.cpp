// The machine's measured single-precision peak: every thread runs independent chains of fused multiply-adds on
// full-width registers (AVX-512, else AVX2+FMA, else scalar), 1 and 2 threads. FLOP/s counts 2 per lane per FMA.
// bench/compare draws it above the GEMM curves: what no float GEMM on this machine can beat.
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <cstdint>

namespace {
constexpr int kChains = 16;  // independent accumulators: more than the FMA units times their latency

#if defined(__AVX512F__)
using vec = __m512;
constexpr int kLanes = 16;
inline vec splat(float x) { return _mm512_set1_ps(x); }
inline vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float sum(vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
using vec = __m256;
constexpr int kLanes = 8;
inline vec splat(float x) { return _mm256_set1_ps(x); }
inline vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float sum(vec v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
using vec = float;
constexpr int kLanes = 1;
inline vec splat(float x) { return x; }
inline vec fma(vec a, vec b, vec c) { return a * b + c; }
inline float sum(vec v) { return v; }
#endif

__attribute__((noinline)) float fma_chains(std::int64_t iters, float seed) {
  vec acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = splat(seed + float(k));
  const vec m = splat(0.999999f), a = splat(1e-7f);
  for (std::int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int k = 0; k < kChains; ++k) acc[k] = fma(acc[k], m, a);
  }
  float s = 0;
  for (int k = 0; k < kChains; ++k) s += sum(acc[k]);
  return s;
}

void BM_fma_peak(benchmark::State& st) {
  const int threads = int(st.range(0));
  constexpr std::int64_t iters = 1 << 20;
  float sink = 0;
  for (auto _ : st) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += fma_chains(iters, 1.0f);
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * kLanes * kChains * double(iters) * threads;
  st.counters["FLOP/s"] = benchmark::Counter(flops * double(st.iterations()), benchmark::Counter::kIsRate);
  st.counters["lanes"] = kLanes;
}
}  // namespace

BENCHMARK(BM_fma_peak)->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);
