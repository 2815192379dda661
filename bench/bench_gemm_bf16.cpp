// Square bf16 GEMM (bf16 x bf16 -> fp32, kernels/cpu/gemm_bf16.hpp) against our fp32 GEMM (kernels/cpu/gemm.hpp, the
// same sizes in float) and, when oneDNN is found, oneDNN's bf16 matmul primitive (bf16 x bf16 -> f32) in the same
// binary; n = 256, 1024, 2048, 1 and 2 threads; and a Linear's product (batch 1, 16, 64 x 1024 x W^T [1024, 1024])
// in bf16 and fp32. Counter: FLOP/s (2 n^3 per product). The label of each bf16 run and
// the context field bf16_isa name the path taken (TESSERA_BF16_ISA caps it); oneDNN's label is its implementation.
// Issue 20's goal, on a CPU with AVX512-BF16 and no AMX: BM_tessera_gemm_bf16 >= 1.8x BM_tessera_sgemm_ref and
// >= 0.9x BM_onednn_gemm_bf16 at n 1024 and 2048, 2 threads.
#include <benchmark/benchmark.h>

#include <string>
#include <unordered_map>
#include <vector>

#include <tessera/kernels/cpu/gemm.hpp>
#include <tessera/kernels/cpu/gemm_bf16.hpp>

#if defined(TESSERA_HAVE_DNNL)
#include <dnnl.hpp>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ts = tessera;

namespace {

float value(std::size_t i, unsigned salt) { return float((i * 2654435761u + salt) % 1000) * 1e-3f - 0.5f; }

void flops(benchmark::State& st) {
  const double n = double(st.range(0));
  st.counters["FLOP/s"] = benchmark::Counter(2 * n * n * n * double(st.iterations()), benchmark::Counter::kIsRate);
}

const bool context_added = [] {
  benchmark::AddCustomContext("bf16_isa", std::string(ts::bf16_isa_name(ts::detail::bf16_isa_for(1024, 1024, 1024))) +
                                              " (CPU offers " + std::string(ts::bf16_isa_name(ts::bf16_isa_supported())) + ")");
  return true;
}();

void BM_tessera_gemm_bf16(benchmark::State& st) {
  const ts::index_t n = st.range(0);
  const int threads = int(st.range(1));
  std::vector<ts::bfloat16> a(std::size_t(n * n)), b(a.size());
  std::vector<float> c(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = value(i, 1), b[i] = value(i, 2);
  for (auto _ : st) {
    ts::detail::cpu_gemm_bf16(n, n, n, {a.data(), n, 1}, {b.data(), n, 1}, c.data(), n, false, threads);
    benchmark::DoNotOptimize(c.data());
  }
  st.SetLabel(std::string(ts::bf16_isa_name(ts::detail::bf16_isa_for(n, n, n))));
  flops(st);
}

/// The same with B read as the transpose of a row-major W [n, n] (a Linear's weight).
void BM_tessera_gemm_bf16_wt(benchmark::State& st) {
  const ts::index_t n = st.range(0);
  const int threads = int(st.range(1));
  std::vector<ts::bfloat16> a(std::size_t(n * n)), w(a.size());
  std::vector<float> c(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = value(i, 1), w[i] = value(i, 2);
  for (auto _ : st) {
    ts::detail::cpu_gemm_bf16(n, n, n, {a.data(), n, 1}, {w.data(), 1, n}, c.data(), n, false, threads);
    benchmark::DoNotOptimize(c.data());
  }
  st.SetLabel(std::string(ts::bf16_isa_name(ts::detail::bf16_isa_for(n, n, n))));
  flops(st);
}

/// Our fp32 GEMM on the same sizes (the reference the bf16 goal is measured against).
void BM_tessera_sgemm_ref(benchmark::State& st) {
  const ts::index_t n = st.range(0);
  const int threads = int(st.range(1));
  std::vector<float> a(std::size_t(n * n)), b(a.size()), c(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = value(i, 1), b[i] = value(i, 2);
  for (auto _ : st) {
    ts::detail::cpu_gemm<float>(n, n, n, {a.data(), n, 1}, {b.data(), n, 1}, c.data(), n, false, threads);
    benchmark::DoNotOptimize(c.data());
  }
  flops(st);
}

/// A Linear's product at batch M: [M, 1024] x W^T, W [1024, 1024] row-major (as nn::Linear stores it); the bf16 GEMM
/// (the skinny path up to 16 rows) against our fp32 GEMM on the same values (bf16: true).
template <bool Bf16>
void BM_linear(benchmark::State& st) {
  const ts::index_t M = st.range(0), N = 1024, K = 1024;
  const int threads = int(st.range(1));
  std::vector<ts::bfloat16> a(std::size_t(M * K)), w(std::size_t(N * K));
  std::vector<float> af(a.size()), wf(w.size()), c(std::size_t(M * N));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = af[i] = value(i, 1);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = wf[i] = value(i, 2);
  for (auto _ : st) {
    if constexpr (Bf16) ts::detail::cpu_gemm_bf16(M, N, K, {a.data(), K, 1}, {w.data(), 1, K}, c.data(), N, false, threads);
    else ts::detail::cpu_gemm<float>(M, N, K, {af.data(), K, 1}, {wf.data(), 1, K}, c.data(), N, false, threads);
    benchmark::DoNotOptimize(c.data());
  }
  if constexpr (Bf16) st.SetLabel(std::string(ts::bf16_isa_name(ts::detail::bf16_isa_for(M, N, K))));
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * double(M) * double(N) * double(K) * double(st.iterations()),
                                             benchmark::Counter::kIsRate);
}

#if defined(TESSERA_HAVE_DNNL)
/// oneDNN's matmul primitive, src and weights bf16, dst f32, all row-major (Debian's oneDNN runs on OpenMP).
void BM_onednn_gemm_bf16(benchmark::State& st) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  omp_set_num_threads(int(st.range(1)));
  const dnnl::memory::dim n = st.range(0);
  std::vector<ts::bfloat16> a(std::size_t(n * n)), b(a.size());
  std::vector<float> c(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = value(i, 1), b[i] = value(i, 2);
  try {
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream s(eng);
    const dnnl::memory::desc ad({n, n}, dt::bf16, tag::ab), bd({n, n}, dt::bf16, tag::ab), cd({n, n}, dt::f32, tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), eng);
    dnnl::memory am(ad, eng, a.data()), bm(bd, eng, b.data()), cm(cd, eng, c.data());
    const dnnl::matmul mm(pd);
    const std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    mm.execute(s, args);  // warm-up (oneDNN JITs its kernels)
    s.wait();
    for (auto _ : st) {
      mm.execute(s, args);
      s.wait();
      benchmark::DoNotOptimize(c.data());
    }
    st.SetLabel(pd.impl_info_str());
  } catch (const dnnl::error& e) {
    st.SkipWithError(("oneDNN bf16 matmul: " + std::string(e.what())).c_str());
    return;
  }
  flops(st);
}
#endif

void sizes(benchmark::internal::Benchmark* b) {
  for (long n : {256L, 1024L, 2048L})
    for (long t : {1L, 2L}) b->Args({n, t});
  b->ArgNames({"n", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_tessera_gemm_bf16)->Apply(sizes);
BENCHMARK(BM_tessera_gemm_bf16_wt)->Apply(sizes);
BENCHMARK(BM_tessera_sgemm_ref)->Apply(sizes);
BENCHMARK(BM_linear<true>)->Name("BM_tessera_linear_bf16")->ArgsProduct({{1, 16, 64}, {1, 2}})->ArgNames({"batch", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_linear<false>)->Name("BM_tessera_linear_sgemm_ref")->ArgsProduct({{1, 16, 64}, {1, 2}})->ArgNames({"batch", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
#if defined(TESSERA_HAVE_DNNL)
BENCHMARK(BM_onednn_gemm_bf16)->Apply(sizes);
#endif
