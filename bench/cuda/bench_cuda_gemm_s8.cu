// GPU int8 GEMM: tessera's cuda_gemm_s8 (dp4a kernel, int32 sums stored, or requantized to uint8 in the kernel)
// against cuBLASLt's int8 GEMM called directly (CUDA_R_8I x CUDA_R_8I -> CUDA_R_32I, CUBLAS_COMPUTE_32I, the "TN"
// layout it requires: weights [N, K] row-major, activations [M, K] row-major, C [M, N] row-major). Square n = 1024
// ... 8192. Time on the GPU with CUDA events over `reps` calls; TOP/s = 2 n^3 / time. Skipped without a GPU.
#include <benchmark/benchmark.h>
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "cuda_bench_support.hpp"

#include <cstdint>
#include <string>
#include <tessera/kernels/cuda/gemm_s8.hpp>

namespace ts = tessera;
namespace ck = tessera::cuda_kernels;
using ts::index_t;

namespace {
using cuda_bench::check;
using cuda_bench::have_device;
void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS) throw ts::device_error(std::string(what) + ": " + cublasLtGetStatusName(e));
}

__global__ void fill_bytes(std::int8_t* p, index_t n, unsigned seed) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    p[i] = std::int8_t((unsigned(i) * 2654435761u ^ seed) >> 24);
}

struct operands {
  index_t n;
  std::int8_t *a = nullptr, *w = nullptr;
  std::int32_t* c = nullptr;
  explicit operands(index_t n_) : n(n_) {
    check(cudaMalloc(&a, std::size_t(n * n)), "cudaMalloc");
    check(cudaMalloc(&w, std::size_t(n * n)), "cudaMalloc");
    check(cudaMalloc(&c, std::size_t(n * n) * 4), "cudaMalloc");
    fill_bytes<<<1024, 256>>>(a, n * n, 1u);
    fill_bytes<<<1024, 256>>>(w, n * n, 2u);
    check(cudaDeviceSynchronize(), "fill");
  }
  ~operands() {
    cudaFree(a);
    cudaFree(w);
    cudaFree(c);
  }
};

template <class F>
void time_gpu(benchmark::State& st, index_t n, F&& call) {
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event");
  check(cudaEventCreate(&e1), "event");
  call();  // warm-up (plans, packing scratch)
  check(cudaDeviceSynchronize(), "warm-up");
  const int reps = 10;
  for (auto _ : st) {
    cudaEventRecord(e0);
    for (int r = 0; r < reps; ++r) call();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    st.SetIterationTime(double(ms) / 1e3 / reps);
  }
  st.counters["OP/s"] = benchmark::Counter(2.0 * double(n) * double(n) * double(n), benchmark::Counter::kIsIterationInvariantRate);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

/// range(1): 0 stores int32 sums, 1 requantizes to uint8 in the kernel.
void BM_tessera_cuda_gemm_s8(benchmark::State& st) {
  if (!have_device()) return st.SkipWithError("no CUDA device");
  const index_t n = st.range(0);
  operands o(n);
  ck::cuda_packed_b_s8 pb(nullptr, o.w, n, n, 1, n);  // weights [N, K] read as B = W^T
  float *scale, *offset;
  std::uint8_t* q;
  check(cudaMalloc(&scale, std::size_t(n) * 4), "cudaMalloc");
  check(cudaMalloc(&offset, std::size_t(n) * 4), "cudaMalloc");
  check(cudaMalloc(&q, std::size_t(n * n)), "cudaMalloc");
  check(cudaMemset(scale, 0, std::size_t(n) * 4), "memset");
  check(cudaMemset(offset, 0, std::size_t(n) * 4), "memset");
  const ck::s8_dequant_f32 d{nullptr, 0, scale, offset, nullptr, true};
  if (st.range(1)) time_gpu(st, n, [&] { ck::cuda_gemm_s8(nullptr, n, n, n, o.a, n, pb, ck::s8_requant_u8{d, q, n, 10.0f, 0.0f}); });
  else time_gpu(st, n, [&] { ck::cuda_gemm_s8(nullptr, n, n, n, o.a, n, pb, ck::s8_store_int32{o.c, n}); });
  st.SetLabel(st.range(1) ? "requantized to uint8 in the kernel" : "int32 sums");
  cudaFree(scale);
  cudaFree(offset);
  cudaFree(q);
}

void BM_cublaslt_gemm_s8(benchmark::State& st) {
  if (!have_device()) return st.SkipWithError("no CUDA device");
  const index_t n = st.range(0);
  operands o(n);
  cublasLtHandle_t h;
  check(cublasLtCreate(&h), "cublasLtCreate");
  cublasLtMatmulDesc_t desc;
  check(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32I, CUDA_R_32I), "desc");
  const cublasOperation_t tr = CUBLAS_OP_T, nt = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &tr, sizeof(tr)), "transa");
  check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof(nt)), "transb");
  // column-major: C^T [n x n] = W (slot A, stored [K x N] col-major = our [N, K] row-major, op T) x X^T (slot B)
  cublasLtMatrixLayout_t la, lb, lc;
  check(cublasLtMatrixLayoutCreate(&la, CUDA_R_8I, n, n, n), "layout A");
  check(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8I, n, n, n), "layout B");
  check(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32I, n, n, n), "layout C");
  cublasLtMatmulPreference_t pref;
  check(cublasLtMatmulPreferenceCreate(&pref), "pref");
  const std::size_t ws_bytes = std::size_t(32) << 20;
  void* ws;
  check(cudaMalloc(&ws, ws_bytes), "cudaMalloc workspace");
  check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)), "ws");
  cublasLtMatmulHeuristicResult_t algo{};
  int found = 0;
  check(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, lc, lc, pref, 1, &algo, &found), "heuristic");
  if (found == 0) return st.SkipWithError("cuBLASLt offers no int8 algorithm for this shape");
  const std::int32_t alpha = 1, beta = 0;
  time_gpu(st, n, [&] {
    check(cublasLtMatmul(h, desc, &alpha, o.w, la, o.a, lb, &beta, o.c, lc, o.c, lc, &algo.algo, ws, ws_bytes, nullptr), "matmul");
  });
  cudaFree(ws);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(h);
}
}  // namespace

BENCHMARK(BM_tessera_cuda_gemm_s8)->ArgsProduct({{1024, 2048, 4096, 8192}, {0, 1}})->ArgNames({"n", "requant"})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_cublaslt_gemm_s8)->Arg(1024)->Arg(2048)->Arg(4096)->Arg(8192)->ArgName("n")->UseManualTime()->Unit(benchmark::kMicrosecond);
