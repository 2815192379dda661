// Square int8 GEMM (uint8 x int8 -> int32): tessera's kernel on each instruction path this machine has, with B
// packed on every call (as oneDNN's dnnl_gemm_u8s8s32 takes it) and prepacked (weights), against oneDNN's
// u8s8s32 GEMM in the same binary when oneDNN is found; n = 64 .. 4096, 1 and 2 threads. Counter: OP/s (2 n^3).
// BM_tessera_gemm_u8s8s32_u7: the avx2_u7 path (A <= 127) against avx2 at n = 256 .. 2048, 2 threads.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include <tessera/kernels/cpu/gemm_s8.hpp>

#if defined(TESSERA_HAVE_DNNL)
#include <dnnl.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ts = tessera;

namespace {

struct operands {
  std::vector<std::uint8_t> a;
  std::vector<std::int8_t> b;
  std::vector<std::int32_t> c;
  explicit operands(int n) : a(std::size_t(n) * n), b(std::size_t(n) * n), c(std::size_t(n) * n) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = std::uint8_t(i * 2654435761u >> 24);
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::int8_t(i * 40503u >> 8);
  }
};

void ops(benchmark::State& st) {
  const double n = double(st.range(0));
  st.counters["OP/s"] = benchmark::Counter(2 * n * n * n * double(st.iterations()), benchmark::Counter::kIsRate);
}

/// range(2): 0 packs B on every call, 1 uses B packed once; range(3): the instruction path.
void BM_tessera_gemm_u8s8s32(benchmark::State& st) {
  const int n = int(st.range(0)), threads = int(st.range(1));
  const bool prepacked = st.range(2) != 0;
  const auto isa = ts::int8_isa(st.range(3));
  if (int(isa) > int(ts::int8_isa_supported())) {
    st.SkipWithError("this path is not available on this CPU");
    return;
  }
  ts::set_int8_isa_limit(isa);
  operands o(n);
  const ts::detail::mat_ref<std::int8_t> b{o.b.data(), n, 1};
  const ts::packed_b_s8 pb(b, n, n, threads);
  for (auto _ : st) {
    if (prepacked) ts::detail::cpu_gemm_s8(n, n, n, o.a.data(), n, pb, o.c.data(), n, false, threads);
    else ts::detail::cpu_gemm_s8(n, n, n, o.a.data(), n, b, o.c.data(), n, false, threads);
    benchmark::DoNotOptimize(o.c.data());
  }
  ts::set_int8_isa_limit(ts::int8_isa::amx);
  st.SetLabel(std::string(ts::int8_isa_name(isa)) + (prepacked ? " prepacked" : ""));
  ops(st);
}

#if defined(TESSERA_HAVE_DNNL)
void BM_onednn_gemm_u8s8s32(benchmark::State& st) {
  const int n = int(st.range(0));
#if defined(_OPENMP)
  omp_set_num_threads(int(st.range(1)));
#endif
  operands o(n);
  const std::int32_t co = 0;
  for (auto _ : st) {
    // oneDNN's GEMM API is row-major: the same operands as ours
    dnnl_gemm_u8s8s32('N', 'N', 'F', n, n, n, 1.f, o.a.data(), n, 0, o.b.data(), n, 0, 0.f, o.c.data(), n, &co);
    benchmark::DoNotOptimize(o.c.data());
  }
  ops(st);
}
#endif

void sizes(benchmark::internal::Benchmark* b, bool with_paths) {
  for (int t : {1, 2})
    for (int n : {64, 128, 256, 512, 1024, 2048, 4096}) {
      if (!with_paths) {
        b->Args({n, t});
        continue;
      }
      for (int pre : {0, 1}) b->Args({n, t, pre, int(ts::int8_isa::amx)});
      if (n == 1024 || n == 2048)
        for (int isa : {int(ts::int8_isa::avx512_vnni), int(ts::int8_isa::avx2)}) b->Args({n, t, 0, isa});
    }
  b->ArgNames(with_paths ? std::vector<std::string>{"n", "threads", "prepacked", "isa"} : std::vector<std::string>{"n", "threads"});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

/// Skinny products with B prepacked (an int8 Linear at batch M): M x K times K x N on the best path, 1 and 2 threads
/// (the thread-count rule: 2 threads never slower than 1).
void BM_tessera_gemm_u8s8s32_skinny(benchmark::State& st) {
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2)), threads = int(st.range(3));
  std::vector<std::uint8_t> a(std::size_t(M) * K, 3);
  std::vector<std::int8_t> b(std::size_t(K) * N);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::int8_t(i * 40503u >> 8);
  std::vector<std::int32_t> c(std::size_t(M) * N);
  const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, K, N, threads);
  for (auto _ : st) {
    ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, pb, c.data(), N, false, threads);
    benchmark::DoNotOptimize(c.data());
  }
  st.SetLabel(std::string(ts::int8_isa_name(ts::int8_isa_active())));
  st.counters["OP/s"] = benchmark::Counter(2.0 * M * double(N) * K * double(st.iterations()), benchmark::Counter::kIsRate);
}

/// The avx2_u7 path (vpmaddubsw, exact for A <= 127: 7-bit activations) against the avx2 path on the same A (values
/// in [0, 127]), B prepacked, 2 threads: range(2) 0 = avx2 (the limit), 1 = avx2_u7 stated (int8_a_below_128, as the
/// reduce_range layers call it), 2 = avx2_u7 with the check of A, 3 = avx2_u7 stated with B packed on every call (as
/// oneDNN's dnnl_gemm_u8s8s32 takes it). Skipped where the CPU's best path is another.
void BM_tessera_gemm_u8s8s32_u7(benchmark::State& st) {
  const int n = int(st.range(0)), threads = int(st.range(1)), mode = int(st.range(2));
  if (ts::int8_isa_supported() != ts::int8_isa::avx2_u7) {
    st.SkipWithError("the avx2_u7 path is this CPU's best only on AVX2 CPUs without AVX512-VNNI");
    return;
  }
  ts::set_int8_isa_limit(mode == 0 ? ts::int8_isa::avx2 : ts::int8_isa::avx2_u7);
  operands o(n);
  for (auto& x : o.a) x &= 127;
  const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{o.b.data(), n, 1}, n, n, threads);
  const ts::int8_a_below_128 stated(mode == 1 || mode == 3);
  const ts::detail::mat_ref<std::int8_t> b{o.b.data(), n, 1};
  for (auto _ : st) {
    if (mode == 3) ts::detail::cpu_gemm_s8(n, n, n, o.a.data(), n, b, o.c.data(), n, false, threads);
    else ts::detail::cpu_gemm_s8(n, n, n, o.a.data(), n, pb, o.c.data(), n, false, threads);
    benchmark::DoNotOptimize(o.c.data());
  }
  ts::set_int8_isa_limit(ts::int8_isa::amx);
  st.SetLabel(mode == 0 ? "avx2 prepacked" : mode == 1 ? "avx2_u7 stated prepacked" : mode == 2 ? "avx2_u7 checked prepacked" : "avx2_u7 stated");
  ops(st);
}

BENCHMARK(BM_tessera_gemm_u8s8s32)->Apply([](auto* b) { sizes(b, true); });
BENCHMARK(BM_tessera_gemm_u8s8s32_u7)->Apply([](auto* b) {
  for (int n : {256, 512, 1024, 2048})
    for (int mode : {0, 1, 2, 3}) b->Args({n, 2, mode});
  b->ArgNames({"n", "threads", "mode"})->UseRealTime()->Unit(benchmark::kMicrosecond);
});
BENCHMARK(BM_tessera_gemm_u8s8s32_skinny)->Apply([](auto* b) {
  for (long m : {1L, 4L, 8L, 16L, 64L})
    for (long kn : {128L, 512L, 1024L})
      for (long t : {1L, 2L}) b->Args({m, kn, kn, t});
  b->ArgNames({"M", "K", "N", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
});
#if defined(TESSERA_HAVE_DNNL)
BENCHMARK(BM_onednn_gemm_u8s8s32)->Apply([](auto* b) { sizes(b, false); });
#endif

// The int8 path this process's kernels take by default (the CPU's best, capped by TESSERA_INT8_ISA), in the output's
// context as "int8_path": bench/compare's Machine table names it.
static const bool int8_path_in_context [[maybe_unused]] =
    (benchmark::AddCustomContext("int8_path", std::string(ts::int8_isa_name(ts::int8_isa_active()))), true);
