// Elementwise benchmarks: the fused chain against the same chain materialising every intermediate
// (what an eager library does) and against Eigen Tensor; an arithmetic chain; a triad loop as the
// bandwidth reference. Bytes counted: every array read once and the result written once.
#include <benchmark/benchmark.h>

#define EIGEN_USE_THREADS
#include <unsupported/Eigen/CXX11/Tensor>

#include <tessera/tessera.hpp>

namespace ts = tessera;
using Vec = ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu_threads>;

namespace {
constexpr int kThreads = 2;

void fill(Vec& v, float seed) {
  for (ts::index_t i = 0; i < v.size(); ++i) v.data()[i] = seed * float((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
}

void set_counters(benchmark::State& st, int arrays) {
  const double n = double(st.range(0));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(arrays * 4 * n));
  st.counters["elements"] = n;
}

void BM_chain_fused(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Vec x(n), y(n), z(n), out(n);
  fill(x, 1.f), fill(y, 2.f), fill(z, 3.f);
  for (auto _ : st) {
    out = ts::tanh(x * y + 0.5f * z) * ts::sigmoid(x - z);
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, 4);
}

// Every intermediate written to a fresh tensor, as eager execution does (same kernels, same threads).
void BM_chain_eager(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Vec x(n), y(n), z(n), out(n);
  fill(x, 1.f), fill(y, 2.f), fill(z, 3.f);
  for (auto _ : st) {
    Vec t1 = x * y;
    Vec t2 = 0.5f * z;
    Vec t3 = t1 + t2;
    Vec t4 = ts::tanh(t3);
    Vec t5 = x - z;
    Vec t6 = ts::sigmoid(t5);
    out = t4 * t6;
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, 4);
}

void BM_chain_eigen(benchmark::State& st) {
  const long n = st.range(0);
  Eigen::Tensor<float, 1> x(n), y(n), z(n), o(n);
  x.setRandom(), y.setRandom(), z.setRandom();
  Eigen::ThreadPool pool(int(st.range(1)));
  Eigen::ThreadPoolDevice dev(&pool, int(st.range(1)));
  for (auto _ : st) {
    o.device(dev) = ((x * y + 0.5f * z).tanh()) * (x - z).sigmoid();
    benchmark::DoNotOptimize(o.data());
  }
  set_counters(st, 4);
}

void BM_arith_fused(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Vec x(n), y(n), z(n), out(n);
  fill(x, 1.f), fill(y, 2.f), fill(z, 3.f);
  for (auto _ : st) {
    out = 1.5f * x + 2.5f * y + 3.5f * z;
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, 4);
}

void BM_arith_eigen(benchmark::State& st) {
  const long n = st.range(0);
  Eigen::Tensor<float, 1> x(n), y(n), z(n), o(n);
  x.setRandom(), y.setRandom(), z.setRandom();
  Eigen::ThreadPool pool(int(st.range(1)));
  Eigen::ThreadPoolDevice dev(&pool, int(st.range(1)));
  for (auto _ : st) {
    o.device(dev) = x * 1.5f + y * 2.5f + z * 3.5f;
    benchmark::DoNotOptimize(o.data());
  }
  set_counters(st, 4);
}

// The bandwidth reference: c = a + 1.5 b, a plain OpenMP loop (3 arrays).
void BM_triad(benchmark::State& st) {
  const ts::index_t n = st.range(0);
  const int nt = int(st.range(1));
  Vec a(n), b(n), c(n);
  fill(a, 1.f), fill(b, 2.f);
  float *pa = a.data(), *pb = b.data(), *pc = c.data();
  for (auto _ : st) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (ts::index_t i = 0; i < n; ++i) pc[i] = pa[i] + 1.5f * pb[i];
    benchmark::DoNotOptimize(pc);
  }
  set_counters(st, 3);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (long n : {1L << 10, 1L << 13, 1L << 16, 1L << 19, 1L << 22, 1L << 24, 1L << 26, 1L << 28})  // 1K .. 256M floats
    for (long t : {1L, long(kThreads)}) b->Args({n, t});
  b->ArgNames({"n", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}
}  // namespace

BENCHMARK(BM_chain_fused)->Apply(sizes);
BENCHMARK(BM_chain_eager)->Apply(sizes);
BENCHMARK(BM_chain_eigen)->Apply(sizes);
BENCHMARK(BM_arith_fused)->Apply(sizes);
BENCHMARK(BM_arith_eigen)->Apply(sizes);
BENCHMARK(BM_triad)->Apply(sizes);
BENCHMARK_MAIN();
