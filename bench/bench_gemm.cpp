// Square SGEMM/DGEMM: tessera's matmul against OpenBLAS and Eigen in the same binary (when they are found),
// n = 64 .. 4096, 1 and 2 threads. Counter: FLOP/s (2 n^3 per product).
#include <benchmark/benchmark.h>

#include <tessera/tessera.hpp>

#if defined(TESSERA_HAVE_EIGEN)
#include <Eigen/Dense>
#endif
#if defined(TESSERA_HAVE_OPENBLAS)
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
#endif

namespace ts = tessera;

namespace {
template <class T>
using Mat = ts::Tensor<T, ts::Shape<ts::dyn, ts::dyn>, ts::cpu_threads>;

template <class T>
void fill(Mat<T>& m, int seed) {
  for (ts::index_t i = 0; i < m.size(); ++i) m.data()[i] = T((i * 2654435761u + seed) % 1000) * T(1e-3) - T(0.5);
}

void flops(benchmark::State& st) {
  const double n = double(st.range(0));
  st.counters["FLOP/s"] = benchmark::Counter(2 * n * n * n * double(st.iterations()), benchmark::Counter::kIsRate);
}

template <class T>
void BM_tessera_gemm(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  const ts::index_t n = st.range(0);
  Mat<T> a(n, n), b(n, n), c(n, n);
  fill(a, 1), fill(b, 2);
  for (auto _ : st) {
    c = ts::matmul(a, b);
    benchmark::DoNotOptimize(c.data());
  }
  flops(st);
}

#if defined(TESSERA_HAVE_OPENBLAS)
void BM_openblas_sgemm(benchmark::State& st) {
  openblas_set_num_threads(int(st.range(1)));
  const int n = int(st.range(0));
  Mat<float> a(n, n), b(n, n), c(n, n);
  fill(a, 1), fill(b, 2);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  flops(st);
}
#endif

#if defined(TESSERA_HAVE_EIGEN)
void BM_eigen_sgemm(benchmark::State& st) {
  Eigen::setNbThreads(int(st.range(1)));
  const int n = int(st.range(0));
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  flops(st);
}
#endif

// Linear layer 256 x 1024 -> 1024: the bare product, the product with bias + ReLU as its epilogue, and the same
// with the product written to memory first and the elementwise part as a second pass.
enum class linear_mode { bare, fused, unfused };
template <linear_mode Mode>
void BM_linear(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(0)));
  Mat<float> x(256, 1024), w(1024, 1024), y(256, 1024), t(256, 1024);
  ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu_threads> bias(1024);
  fill(x, 1), fill(w, 2);
  bias = 0.1f;
  for (auto _ : st) {
    if constexpr (Mode == linear_mode::bare) y = ts::matmul(x, w);
    else if constexpr (Mode == linear_mode::fused) y = ts::relu(ts::matmul(x, w) + bias);
    else {
      t = ts::matmul(x, w);
      y = ts::relu(t + bias);
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * 256 * 1024 * 1024 * double(st.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_linear<linear_mode::bare>)->Name("BM_linear_bare")->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_linear<linear_mode::fused>)->Name("BM_linear_bias_relu_fused")->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_linear<linear_mode::unfused>)->Name("BM_linear_bias_relu_unfused")->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);

void sizes(benchmark::internal::Benchmark* b) {
  for (long n : {64L, 128L, 256L, 512L, 1024L, 2048L, 4096L})
    for (long t : {1L, 2L}) b->Args({n, t});
  b->ArgNames({"n", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
}
}  // namespace

// Skinny and small products (a Linear at batch M: x[M x K] * W^T with W [N x K], and row-major B), 1 and 2 threads:
// the thread-count rule says 2 threads are never slower than 1 (compare threads:1 with threads:2 of the same shape).
template <bool TransposedB>
void BM_tessera_sgemm_skinny(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(3)));
  const ts::index_t M = st.range(0), K = st.range(1), N = st.range(2);
  Mat<float> x(M, K), c(M, N), w(TransposedB ? N : K, TransposedB ? K : N);
  fill(x, 1), fill(w, 2);
  for (auto _ : st) {
    if constexpr (TransposedB) c = ts::matmul(x, ts::transpose(w));
    else c = ts::matmul(x, w);
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * double(M) * double(N) * double(K) * double(st.iterations()), benchmark::Counter::kIsRate);
}
void skinny_sizes(benchmark::internal::Benchmark* b) {
  for (long m : {1L, 4L, 8L, 16L, 64L})
    for (long kn : {128L, 512L, 1024L})
      for (long t : {1L, 2L}) b->Args({m, kn, kn, t});
  b->ArgNames({"M", "K", "N", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_tessera_sgemm_skinny<true>)->Name("BM_tessera_sgemm_linear")->Apply(skinny_sizes);
BENCHMARK(BM_tessera_sgemm_skinny<false>)->Name("BM_tessera_sgemm_skinny")->Apply(skinny_sizes);

BENCHMARK(BM_tessera_gemm<float>)->Name("BM_tessera_sgemm")->Apply(sizes);
BENCHMARK(BM_tessera_gemm<double>)->Name("BM_tessera_dgemm")->Apply(sizes);
#if defined(TESSERA_HAVE_OPENBLAS)
BENCHMARK(BM_openblas_sgemm)->Apply(sizes);
#endif
#if defined(TESSERA_HAVE_EIGEN)
BENCHMARK(BM_eigen_sgemm)->Apply(sizes);
#endif
