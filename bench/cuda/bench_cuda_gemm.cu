// GPU GEMM benchmarks (nvcc; built when TESSERA_ENABLE_CUDA and Google Benchmark are available):
//   * square SGEMM n = 1024 ... 8192: tessera::cuda_gemm (cuBLASLt, cached plan) against cublasSgemm called
//     directly (row-major through the C^T = B^T A^T trick). Both in full FP32: cuda_gemm asks for
//     CUBLAS_COMPUTE_32F, and the cuBLAS handle keeps CUBLAS_DEFAULT_MATH (TF32 is opt-in there).
//   * Linear layers y = relu(x W^T + b) (W stored out x in, as PyTorch does, so B is a transposed view):
//     the bias + ReLU fused into the GEMM through cuBLASLt's epilogue, against the plain GEMM followed by a
//     separate bias + ReLU kernel.
// Time is measured on the GPU with CUDA events around `reps` back-to-back calls (UseManualTime, time per call);
// TFLOP/s = 2 M N K / time. Without a GPU every benchmark reports "no CUDA device" and is skipped.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda_bench_support.hpp"

#include <cstdio>
#include <string>
#include <tessera/kernels/cuda/gemm.hpp>

namespace ts = tessera;
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

/// The separate epilogue of the unfused Linear: y[i][j] = max(y[i][j] + b[j], 0).
__global__ void bias_relu_kernel(float* y, index_t M, index_t N, const float* b) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < M * N; i += index_t(gridDim.x) * blockDim.x) {
    const float v = y[i] + b[i % N];
    y[i] = v > 0.0f ? v : 0.0f;
  }
}

struct device_buffer {
  float* p = nullptr;
  explicit device_buffer(index_t n, unsigned seed) {
    check(cudaMalloc(&p, std::size_t(n) * sizeof(float)), "cudaMalloc");
    fill_kernel<<<1024, 256>>>(p, n, seed);
    check(cudaGetLastError(), "fill kernel");
    check(cudaDeviceSynchronize(), "fill kernel");  // the legacy stream does not order the non-blocking one
  }
  ~device_buffer() { cudaFree(p); }
};

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

/// Runs `call` reps times per iteration between two events; reports GPU time per call and TFLOP/s.
template <class F>
void timed(benchmark::State& state, double flops, F&& call) {
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
  if (state.iterations() > 0) state.counters["TFLOP/s"] = flops * double(state.iterations()) / total / 1e12;
}

void BM_sgemm_tessera(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t n = state.range(0);
  device_buffer a(n * n, 1), b(n * n, 2), c(n * n, 3);
  timed(state, 2.0 * double(n) * double(n) * double(n),
        [&] { ts::cuda_gemm<float>(ctx().stream, n, n, n, a.p, n, 1, b.p, n, 1, c.p, n); });
}

void BM_sgemm_cublas(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t n = state.range(0);
  device_buffer a(n * n, 1), b(n * n, 2), c(n * n, 3);
  const float one = 1.0f, zero = 0.0f;
  const int ni = int(n);
  timed(state, 2.0 * double(n) * double(n) * double(n), [&] {
    // row-major C = A B is column-major C^T = B^T A^T
    check(cublasSgemm(ctx().blas, CUBLAS_OP_N, CUBLAS_OP_N, ni, ni, ni, &one, b.p, ni, a.p, ni, &zero, c.p, ni),
          "cublasSgemm");
  });
}

/// Linear M x K -> N: x (M x K), W (N x K, PyTorch's layout: B = W^T has rs = 1, cs = K), b (N).
void BM_linear_bias_relu_fused(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t M = state.range(0), K = state.range(1), N = state.range(2);
  device_buffer x(M * K, 4), w(N * K, 5), b(N, 6), y(M * N, 7);
  timed(state, 2.0 * double(M) * double(N) * double(K), [&] {
    ts::cuda_gemm<float>(ctx().stream, M, N, K, x.p, K, 1, w.p, 1, K, y.p, N, ts::gemm_epilogue::bias_relu, b.p);
  });
}

void BM_linear_bias_relu_separate(benchmark::State& state) {
  if (!have_device()) return state.SkipWithError("no CUDA device");
  const index_t M = state.range(0), K = state.range(1), N = state.range(2);
  device_buffer x(M * K, 4), w(N * K, 5), b(N, 6), y(M * N, 7);
  const index_t blocks = (M * N + 255) / 256;
  timed(state, 2.0 * double(M) * double(N) * double(K), [&] {
    ts::cuda_gemm<float>(ctx().stream, M, N, K, x.p, K, 1, w.p, 1, K, y.p, N);
    bias_relu_kernel<<<unsigned(blocks < 65535 ? blocks : 65535), 256, 0, ctx().stream>>>(y.p, M, N, b.p);
  });
}

}  // namespace

BENCHMARK(BM_sgemm_tessera)->RangeMultiplier(2)->Range(1024, 8192)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_sgemm_cublas)->RangeMultiplier(2)->Range(1024, 8192)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_linear_bias_relu_fused)
    ->Args({256, 1024, 1024})
    ->Args({1024, 4096, 4096})
    ->Args({4096, 4096, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_linear_bias_relu_separate)
    ->Args({256, 1024, 1024})
    ->Args({1024, 4096, 4096})
    ->Args({4096, 4096, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
