// Elementwise benchmarks: the fused chain against the same chain materialising every intermediate
// (what an eager library does) and against Eigen Tensor; an arithmetic chain; a triad loop as the
// bandwidth reference. Bytes counted: every array read once and the result written once.
// Every destination is written once before the timed loop, so that the figures are those of the pass and not of
// the kernel's first touch of fresh pages (at 256M floats Google Benchmark times one or two iterations, and the
// first one faulted the 1 GiB output in: docs/performance-notes.md, "The large-array bandwidth anomaly"); the
// counter faults_per_iter says how many page faults each timed iteration took. BM_arith_fresh assigns into a new
// tensor every iteration: that first touch, which the block cache and huge pages (core/policy.hpp) make cheap.
#include <sys/resource.h>

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

// Minor page faults of this process so far.
long minor_faults() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return r.ru_minflt;
}

// Bytes (arrays read and written once each), elements, and page faults per iteration since `faults0`.
void set_counters(benchmark::State& st, int arrays, long faults0) {
  const double n = double(st.range(0));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(arrays * 4 * n));
  st.counters["elements"] = n;
  st.counters["faults_per_iter"] = double(minor_faults() - faults0) / double(st.iterations() ? st.iterations() : 1);
}

void BM_chain_fused(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Vec x(n), y(n), z(n), out(n);
  fill(x, 1.f), fill(y, 2.f), fill(z, 3.f), fill(out, 0.f);
  const long f0 = minor_faults();
  for (auto _ : st) {
    out = ts::tanh(x * y + 0.5f * z) * ts::sigmoid(x - z);
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, 4, f0);
}

// Every intermediate written to a fresh tensor, as eager execution does (same kernels, same threads).
void BM_chain_eager(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Vec x(n), y(n), z(n), out(n);
  fill(x, 1.f), fill(y, 2.f), fill(z, 3.f), fill(out, 0.f);
  const long f0 = minor_faults();
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
  set_counters(st, 4, f0);
}

void BM_chain_eigen(benchmark::State& st) {
  const long n = st.range(0);
  Eigen::Tensor<float, 1> x(n), y(n), z(n), o(n);
  x.setRandom(), y.setRandom(), z.setRandom(), o.setZero();
  Eigen::ThreadPool pool(int(st.range(1)));
  Eigen::ThreadPoolDevice dev(&pool, int(st.range(1)));
  const long f0 = minor_faults();
  for (auto _ : st) {
    o.device(dev) = ((x * y + 0.5f * z).tanh()) * (x - z).sigmoid();
    benchmark::DoNotOptimize(o.data());
  }
  set_counters(st, 4, f0);
}

void BM_arith_fused(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Vec x(n), y(n), z(n), out(n);
  fill(x, 1.f), fill(y, 2.f), fill(z, 3.f), fill(out, 0.f);
  const long f0 = minor_faults();
  for (auto _ : st) {
    out = 1.5f * x + 2.5f * y + 3.5f * z;
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, 4, f0);
}

void BM_arith_eigen(benchmark::State& st) {
  const long n = st.range(0);
  Eigen::Tensor<float, 1> x(n), y(n), z(n), o(n);
  x.setRandom(), y.setRandom(), z.setRandom(), o.setZero();
  Eigen::ThreadPool pool(int(st.range(1)));
  Eigen::ThreadPoolDevice dev(&pool, int(st.range(1)));
  const long f0 = minor_faults();
  for (auto _ : st) {
    o.device(dev) = x * 1.5f + y * 2.5f + z * 3.5f;
    benchmark::DoNotOptimize(o.data());
  }
  set_counters(st, 4, f0);
}

// The arithmetic chain into a new tensor each iteration (`Vec out = ...`): the pass plus the first touch of its
// destination, which comes from the block cache when the previous iteration's result fits there (up to 1 GiB).
void BM_arith_fresh(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Vec x(n), y(n), z(n);
  fill(x, 1.f), fill(y, 2.f), fill(z, 3.f);
  const long f0 = minor_faults();
  for (auto _ : st) {
    Vec out = 1.5f * x + 2.5f * y + 3.5f * z;
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, 4, f0);
}

// The bandwidth reference: c = a + 1.5 b, a plain OpenMP loop (3 arrays).
void BM_triad(benchmark::State& st) {
  const ts::index_t n = st.range(0);
  const int nt = int(st.range(1));
  Vec a(n), b(n), c(n);
  fill(a, 1.f), fill(b, 2.f), fill(c, 0.f);
  float *pa = a.data(), *pb = b.data(), *pc = c.data();
  const long f0 = minor_faults();
  for (auto _ : st) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (ts::index_t i = 0; i < n; ++i) pc[i] = pa[i] + 1.5f * pb[i];
    benchmark::DoNotOptimize(pc);
  }
  set_counters(st, 3, f0);
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
BENCHMARK(BM_arith_fresh)->Apply(sizes);
BENCHMARK(BM_triad)->Apply(sizes);
BENCHMARK_MAIN();
