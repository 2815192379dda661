// Throughput of the float transcendental functions (tanh, sigmoid, exp, log, erf, gelu), 1 thread, in-cache sizes
// (1K / 8K / 64K floats): tessera's fused assignment `out = ts::fn(x)`, the bare packet loop over math::fn (the
// polynomial alone, no expression machinery), and Eigen Tensor's packet math (`o = x.fn()`, default device) as
// the peer. Counter: elements/s. Inputs cover each function's useful range (tanh, sigmoid in [-6, 6]; exp in
// [-20, 20]; log in (0, 100]; erf, gelu in [-4, 4]). Run: build/bench/bench_math --benchmark_filter=...
#include <benchmark/benchmark.h>

#include <vector>

#include <tessera/tessera.hpp>
#if TESSERA_HAVE_EIGEN
#include <unsupported/Eigen/CXX11/Tensor>
#endif

namespace ts = tessera;
using Vec = ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu_threads>;

namespace {
enum fn_id { f_tanh, f_sigmoid, f_exp, f_log, f_erf, f_gelu };

void fill_range(float* p, long n, fn_id f) {
  float lo = -6.f, hi = 6.f;
  if (f == f_exp) lo = -20.f, hi = 20.f;
  if (f == f_log) lo = 1e-3f, hi = 100.f;
  if (f == f_erf || f == f_gelu) lo = -4.f, hi = 4.f;
  for (long i = 0; i < n; ++i) p[i] = lo + (hi - lo) * float((i * 2654435761u) % 100003) / 100003.f;
}

void set_counters(benchmark::State& st) {
  st.counters["elements/s"] = benchmark::Counter(double(st.iterations()) * double(st.range(0)),
                                                 benchmark::Counter::kIsRate);
}

template <fn_id F>
void BM_tessera(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(1);
  const ts::index_t n = st.range(0);
  Vec x(n), out(n);
  fill_range(x.data(), n, F);
  for (auto _ : st) {
    if constexpr (F == f_tanh) out = ts::tanh(x);
    else if constexpr (F == f_sigmoid) out = ts::sigmoid(x);
    else if constexpr (F == f_exp) out = ts::exp(x);
    else if constexpr (F == f_log) out = ts::log(x);
    else out = ts::gelu(x);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(st);
}

// The polynomial alone: load a packet, math::fn, store; the scalar tail (none at these sizes) is the same code.
template <fn_id F>
void BM_packet(benchmark::State& st) {
  constexpr int L = ts::simd::lanes_for<sizeof(float)>;
  using V = ts::simd::vec<float, L>;
  const long n = st.range(0);
  std::vector<float> x(n), out(n);
  fill_range(x.data(), n, F);
  for (auto _ : st) {
    for (long i = 0; i < n; i += L) {
      const V v = ts::simd::load<float, L>(x.data() + i);
      V r;
      if constexpr (F == f_tanh) r = ts::math::tanh(v);
      else if constexpr (F == f_sigmoid) r = ts::math::sigmoid(v);
      else if constexpr (F == f_exp) r = ts::math::exp(v);
      else if constexpr (F == f_log) r = ts::math::log(v);
      else if constexpr (F == f_erf) r = ts::math::erf(v);
      else r = ts::op::gelu::apply(v);
      ts::simd::store<float, L>(out.data() + i, r);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(st);
}

#if TESSERA_HAVE_EIGEN
template <fn_id F>
void BM_eigen(benchmark::State& st) {
  const long n = st.range(0);
  Eigen::Tensor<float, 1> x(n), o(n);
  fill_range(x.data(), n, F);
  for (auto _ : st) {
    if constexpr (F == f_tanh) o = x.tanh();
    else if constexpr (F == f_sigmoid) o = x.sigmoid();
    else if constexpr (F == f_exp) o = x.exp();
    else if constexpr (F == f_log) o = x.log();
    else if constexpr (F == f_erf) o = x.erf();
    else o = x * 0.5f * (1.f + (x * 0.70710678f).erf());
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  set_counters(st);
}
#endif

void sizes(benchmark::internal::Benchmark* b) {
  for (long n : {1L << 10, 1L << 13, 1L << 16}) b->Arg(n);
  b->ArgName("n")->Unit(benchmark::kNanosecond);
}
}  // namespace

#define TS_BENCH_FN(F) BENCHMARK(BM_packet<F>)->Name("BM_packet_" #F)->Apply(sizes);
#define TS_BENCH_ASSIGN(F) BENCHMARK(BM_tessera<F>)->Name("BM_tessera_" #F)->Apply(sizes);
TS_BENCH_ASSIGN(f_tanh)
TS_BENCH_ASSIGN(f_sigmoid)
TS_BENCH_ASSIGN(f_exp)
TS_BENCH_ASSIGN(f_log)
TS_BENCH_ASSIGN(f_gelu)
TS_BENCH_FN(f_tanh)
TS_BENCH_FN(f_sigmoid)
TS_BENCH_FN(f_exp)
TS_BENCH_FN(f_log)
TS_BENCH_FN(f_erf)
TS_BENCH_FN(f_gelu)
#if TESSERA_HAVE_EIGEN
#define TS_BENCH_EIGEN(F) BENCHMARK(BM_eigen<F>)->Name("BM_eigen_" #F)->Apply(sizes);
TS_BENCH_EIGEN(f_tanh)
TS_BENCH_EIGEN(f_sigmoid)
TS_BENCH_EIGEN(f_exp)
TS_BENCH_EIGEN(f_log)
TS_BENCH_EIGEN(f_erf)
TS_BENCH_EIGEN(f_gelu)
#endif
BENCHMARK_MAIN();
