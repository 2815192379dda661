// Square SGEMM with oneDNN's dnnl_sgemm (row-major, as tessera's matmul), n = 64 .. 4096, 1 and 2 threads: the
// oneDNN peer of bench_gemm, with the same names of arguments and the same counter (FLOP/s, 2 n^3 per product).
// Built only with oneDNN (TESSERA_HAVE_DNNL, Debian's libdnnl-dev); otherwise it registers nothing.
#include <benchmark/benchmark.h>

#if defined(TESSERA_HAVE_DNNL)
#include <dnnl.h>
#include <omp.h>

#include <vector>

namespace {
void BM_onednn_sgemm(benchmark::State& st) {
  omp_set_num_threads(int(st.range(1)));  // Debian's oneDNN runs on OpenMP (libgomp, as this binary)
  const int n = int(st.range(0));
  std::vector<float> a(std::size_t(n) * n), b(a.size()), c(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = float((i * 2654435761u + 1) % 1000) * 1e-3f - 0.5f;
    b[i] = float((i * 2654435761u + 2) % 1000) * 1e-3f - 0.5f;
  }
  dnnl_sgemm('N', 'N', n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);  // warm-up: oneDNN JITs its kernels
  for (auto _ : st) {
    if (dnnl_sgemm('N', 'N', n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n) != dnnl_success) {
      st.SkipWithError("dnnl_sgemm failed");
      break;
    }
    benchmark::DoNotOptimize(c.data());
  }
  const double f = 2.0 * n * double(n) * n;
  st.counters["FLOP/s"] = benchmark::Counter(f * double(st.iterations()), benchmark::Counter::kIsRate);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (long n : {64L, 128L, 256L, 512L, 1024L, 2048L, 4096L})
    for (long t : {1L, 2L}) b->Args({n, t});
  b->ArgNames({"n", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
}
}  // namespace

BENCHMARK(BM_onednn_sgemm)->Apply(sizes);
#endif
