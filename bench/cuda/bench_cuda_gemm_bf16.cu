// GPU bf16 GEMM benchmarks (nvcc; built when TESSERA_ENABLE_CUDA and Google Benchmark are available), square
// n = 1024, 2048, 4096, C fp32 row-major:
//   * BM_gemm_bf16      tessera::cuda_gemm_bf16 (kernels/cuda/gemm_bf16.hpp: cuBLASLt, A and B CUDA_R_16BF, C
//                       CUDA_R_32F, CUBLAS_COMPUTE_32F), B row-major;  BM_gemm_bf16_wt the same with B = W^T (a
//                       Linear's [N, K] weight read in place)
//   * BM_gemm_bf16_cublas cublasGemmEx with the same types and compute type called directly (what the wrapper costs)
//   * BM_sgemm_tessera  tessera::cuda_gemm<float> (full FP32, CUBLAS_COMPUTE_32F): the baseline bf16 is compared with
//   * BM_to_bf16        cuda_to_bf16 over n * n floats (GB/s: 6 bytes moved per element)
// Time on the GPU with CUDA events around `reps` back-to-back calls (UseManualTime, time per call); TFLOP/s =
// 2 n^3 / time. Without a GPU every benchmark reports "no CUDA device" and is skipped. Written and compiled on a
// machine without a GPU: no figures yet (scripts/gpu_check.sh runs it on a GPU machine).
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda_bench_support.hpp"

#include <string>
#include <tessera/kernels/cuda/gemm.hpp>
#include <tessera/kernels/cuda/gemm_bf16.hpp>

namespace ts = tessera;
using ts::bfloat16;
using ts::index_t;

namespace {

using cuda_bench::check;
using cuda_bench::have_device;

void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS) throw ts::device_error(std::string(what) + ": " + cublasGetStatusString(e));
}

__global__ void fill_kernel(float* p, index_t n, unsigned seed) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    unsigned x = unsigned(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    p[i] = float(x & 0xffff) / 32768.0f - 1.0f;
  }
}

struct context {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  context() {
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cublasCreate(&blas), "cublasCreate");
    check(cublasSetStream(blas, stream), "cublasSetStream");
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
  }
};
context& ctx() {
  static context* c = new context;  // never destroyed: the CUDA runtime may be gone at exit
  return *c;
}

/// n floats in [-1, 1) on the device, and (bf16) their bf16 roundings.
struct operand {
  float* f = nullptr;
  bfloat16* b = nullptr;
  operand(index_t n, unsigned seed, bool bf16) {
    check(cudaMalloc(&f, std::size_t(n) * sizeof(float)), "cudaMalloc");
    fill_kernel<<<1024, 256, 0, ctx().stream>>>(f, n, seed);
    check(cudaGetLastError(), "fill kernel");
    if (bf16) {
      check(cudaMalloc(&b, std::size_t(n) * sizeof(bfloat16)), "cudaMalloc");
      ts::cuda_to_bf16(ctx().stream, f, b, n);
    }
    check(cudaStreamSynchronize(ctx().stream), "fill");
  }
  operand(const operand&) = delete;
  ~operand() {
    cudaFree(f);
    cudaFree(b);
  }
};

/// Runs `call` reps times per iteration between two events; reports GPU time per call and `work` per second.
template <class F>
void timed(benchmark::State& state, double flops, const char* counter, double work, F&& call) {
  auto& c = ctx();
  call();  // plan / heuristic / workspace, and a warm GPU clock
  check(cudaStreamSynchronize(c.stream), "warm-up");
  const int reps = flops < 1e9 ? 20 : (flops < 1e11 ? 5 : 1);
  double total = 0;
  for (auto _ : state) {
    check(cudaEventRecord(c.start, c.stream), "cudaEventRecord");
    for (int r = 0; r < reps; ++r) call();
    check(cudaEventRecord(c.stop, c.stream), "cudaEventRecord");
    check(cudaEventSynchronize(c.stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, c.start, c.stop), "cudaEventElapsedTime");
    const double per_call = double(ms) / 1e3 / reps;
    state.SetIterationTime(per_call);
    total += per_call;
  }
  if (state.iterations() > 0) state.counters[counter] = work * double(state.iterations()) / total;
}

double gemm_flops(index_t n) { return 2.0 * double(n) * double(n) * double(n); }

void BM_gemm_bf16(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t n = state.range(0);
  operand a(n * n, 1, true), b(n * n, 2, true), c(n * n, 3, false);
  timed(state, gemm_flops(n), "TFLOP/s", gemm_flops(n) / 1e12,
        [&] { ts::cuda_gemm_bf16(ctx().stream, n, n, n, {a.b, n, 1}, {b.b, n, 1}, c.f, n, false); });
}

void BM_gemm_bf16_wt(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t n = state.range(0);
  operand a(n * n, 1, true), w(n * n, 2, true), c(n * n, 3, false);
  timed(state, gemm_flops(n), "TFLOP/s", gemm_flops(n) / 1e12,
        [&] { ts::cuda_gemm_bf16(ctx().stream, n, n, n, {a.b, n, 1}, {w.b, 1, n}, c.f, n, false); });
}

void BM_gemm_bf16_cublas(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t n = state.range(0);
  operand a(n * n, 1, true), b(n * n, 2, true), c(n * n, 3, false);
  const float one = 1.0f, zero = 0.0f;
  const int ni = int(n);
  timed(state, gemm_flops(n), "TFLOP/s", gemm_flops(n) / 1e12, [&] {
    // row-major C = A B is column-major C^T = B^T A^T
    check(cublasGemmEx(ctx().blas, CUBLAS_OP_N, CUBLAS_OP_N, ni, ni, ni, &one, b.b, CUDA_R_16BF, ni, a.b, CUDA_R_16BF, ni,
                       &zero, c.f, CUDA_R_32F, ni, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
  });
}

void BM_sgemm_tessera(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t n = state.range(0);
  operand a(n * n, 1, false), b(n * n, 2, false), c(n * n, 3, false);
  timed(state, gemm_flops(n), "TFLOP/s", gemm_flops(n) / 1e12,
        [&] { ts::cuda_gemm<float>(ctx().stream, n, n, n, a.f, n, 1, b.f, n, 1, c.f, n); });
}

void BM_to_bf16(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t n = state.range(0), count = n * n;
  operand a(count, 1, true);
  timed(state, double(count), "GB/s", 6.0 * double(count) / 1e9, [&] { ts::cuda_to_bf16(ctx().stream, a.f, a.b, count); });
}

}  // namespace

BENCHMARK(BM_gemm_bf16)->Arg(1024)->Arg(2048)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_gemm_bf16_wt)->Arg(1024)->Arg(2048)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_gemm_bf16_cublas)->Arg(1024)->Arg(2048)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_sgemm_tessera)->Arg(1024)->Arg(2048)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_to_bf16)->Arg(1024)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
