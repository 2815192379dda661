// cuda_gemm_bf16 and cuda_to_bf16: the device side of the bf16 GEMM (issue 20 part 3; the host side is
// kernels/cpu/gemm_bf16.hpp, docs/bf16.md), at the level of raw pointers and strides. Compiled only by nvcc (like
// every kernels/cuda header); link CUDA::cublasLt. backend<cuda>::gemm_bf16 and ::to_bf16 (kernels/cuda/backend.hpp)
// call these on tessera's stream.
//
//   C[M x N] (fp32) = A[M x K] (bfloat16) · B[K x N] (bfloat16)  (accumulate: C +=)       products and sums in fp32
//
//   cuda_gemm_bf16(stream, M, N, K, detail::mat_ref<bfloat16>{a, lda, 1},      // A row-major
//                                   detail::mat_ref<bfloat16>{w, 1, ldw},      // B = W^T, W [N, K] row-major
//                  c, ldc, accumulate);                                        // C row-major, row stride ldc
//   cuda_to_bf16(stream, src, dst, n);                                         // fp32 -> bf16, as bfloat16(float)
//
// Operands (device pointers): element (i, j) of A or B at p[i * rs + j * cs], as the host's mat_ref. They are mapped
// to cuBLASLt exactly as cuda_gemm maps fp32 ones (kernels/cuda/gemm.hpp: row-major C is the column-major C^T =
// B^T A^T; each operand enters as op N or T depending on which of its strides is 1, with no copy). An operand with
// no unit stride (every other column, a broadcast, a negative stride) is first COPIED into a dense row-major
// temporary (stream-ordered cudaMallocAsync, freed after the product) — accepted, not refused, as the fp32 GEMM.
// cuBLASLt gets A and B as CUDA_R_16BF, C = D as CUDA_R_32F, compute CUBLAS_COMPUTE_32F with fp32 alpha = 1 and
// beta = 0 (C is not read: it may hold anything) or 1 (accumulate). K = 0 writes zeros into C (leaves it when
// accumulating). No epilogue: backend<cuda> has block_epilogues = false; callers apply bias or activation in a
// separate pass. Plans (descriptor, layouts, the heuristic's algorithm) are cached with the fp32 GEMM's, in its
// process-wide state (same handle, same 32 MiB workspace per stream, same mutex), under keys of their own.
//
// cuda_to_bf16 rounds each float to nearest even, keeps NaN a NaN with its sign and payload's top bits and the quiet
// bit set (`(u >> 16) | 0x40`), and overflows to infinity: bit for bit the host's bfloat16(float)
// (core/types.hpp), whose code it runs. Not __float2bfloat16_rn: that returns the canonical NaN 0x7fff for every NaN
// (cuda_bf16.hpp; sm_80's cvt.rn.bf16.f32 does the same), so a negative NaN would lose its sign against the host.
//
// Numerics: a product of two bf16 values is exact in fp32; the only rounding is in cuBLASLt's fp32 accumulation,
// in its own order (tensor cores). NaN and infinity propagate.
// Errors: negative extents, ldc < N, extents beyond 2^31 - 1: shape_error naming the shapes of A, B and C; a CUDA
// or cuBLASLt failure (no algorithm for the problem included): device_error, as cuda_gemm.
//
// UNVERIFIED ON A DEVICE: written and compiled (nvcc 13.0, sm_90) on a machine without a GPU; tests/cuda/
// test_cuda_bf16.cu checks it against host loops and SKIPS there. Run it (scripts/gpu_check.sh) on a GPU machine.
#pragma once
#if defined(__CUDACC__)
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "tessera/core/error.hpp"
#include "tessera/core/types.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/gemm.hpp"

namespace tessera {
namespace cuda_kernels {
namespace bf16_detail {

/// Marks bf16 plans in gemm_detail's cache (the fp32 GEMM's keys hold sizeof(T), 4 or 8, in the same slot).
inline constexpr std::int64_t plan_tag = 2;

/// Descriptor (compute 32F, scale 32F, no epilogue), layouts (A, B bf16; C = D fp32) and the heuristic's first
/// algorithm. Throws device_error when the heuristic has none (nothing leaked).
inline gemm_detail::plan make_plan(cublasLtHandle_t h, const gemm_detail::problem& pr) {
  namespace gd = gemm_detail;
  gd::plan p;
  struct guard_t {
    gd::plan* p;
    bool keep = false;
    ~guard_t() {
      if (!keep) gd::destroy(*p);
    }
  } guard{&p};
  gd::check_cublas(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate (bf16)");
  const std::int32_t opx = pr.x.op, opy = pr.y.op;
  gd::check_cublas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opx, sizeof(opx)),
                   "cublasLtMatmulDescSetAttribute(TRANSA)");
  gd::check_cublas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opy, sizeof(opy)),
                   "cublasLtMatmulDescSetAttribute(TRANSB)");
  p.x = gd::make_layout(CUDA_R_16BF, pr.x.rows, pr.x.cols, pr.x.ld, 1, 0);
  p.y = gd::make_layout(CUDA_R_16BF, pr.y.rows, pr.y.cols, pr.y.ld, 1, 0);
  p.d = gd::make_layout(CUDA_R_32F, std::uint64_t(pr.N), std::uint64_t(pr.M), pr.ldc, 1, 0);

  cublasLtMatmulPreference_t pref = nullptr;
  gd::check_cublas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  struct pref_guard_t {
    cublasLtMatmulPreference_t p;
    ~pref_guard_t() { cublasLtMatmulPreferenceDestroy(p); }
  } pref_guard{pref};
  const std::uint64_t ws = gd::workspace_bytes;
  gd::check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                   "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
  // The defaults assume 256-byte aligned pointers; a view at an offset would get an algorithm that may not run.
  const std::uint32_t al[4] = {pr.align_x, pr.align_y, pr.align_c, pr.align_c};
  const cublasLtMatmulPreferenceAttributes_t al_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    gd::check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, al_attr[i], &al[i], sizeof(al[i])),
                     "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)");

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.x, p.y, p.d, p.d, pref, 1, &result, &found);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && (found == 0 || result.state != CUBLAS_STATUS_SUCCESS)))
    throw device_error("tessera: cublasLt: cublasLtMatmulAlgoGetHeuristic found no algorithm for the bf16 product of A " +
                       std::to_string(pr.M) + " x " + std::to_string(pr.K) + " by B " + std::to_string(pr.K) + " x " +
                       std::to_string(pr.N) + " into fp32 C (ldc " + std::to_string(pr.ldc) + ")");
  gd::check_cublas(st, "cublasLtMatmulAlgoGetHeuristic (bf16)");
  p.algo = result.algo;
  guard.keep = true;
  return p;
}

inline const gemm_detail::plan& plan_for(gemm_detail::state& st, cublasLtHandle_t h, int device, const gemm_detail::problem& pr) {
  const gemm_detail::plan_key key = {device,       plan_tag,     pr.M,        pr.N,      pr.K,
                                     1,            pr.x.op,      pr.x.ld,     pr.y.op,   pr.y.ld,
                                     pr.ldc,       0,            0,           0,         std::int64_t(CUBLASLT_EPILOGUE_DEFAULT),
                                     pr.align_x,   pr.align_y,   pr.align_c,  0,         std::int64_t(pr.x.rows),
                                     std::int64_t(pr.y.rows),    0};
  auto it = st.plans.find(key);
  if (it != st.plans.end()) return it->second;
  return st.plans.emplace(key, make_plan(h, pr)).first->second;
}

/// dst[i] = bfloat16(src[i]): four at a time (a 16-byte load, an 8-byte store) when both pointers allow it.
__global__ void to_bf16_kernel(const float* __restrict__ src, bfloat16* __restrict__ dst, index_t n, bool vec4) {
  const index_t step = index_t(gridDim.x) * blockDim.x;
  index_t first = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  index_t done = 0;
  if (vec4) {
    const index_t quads = n / 4;
    const auto* s4 = reinterpret_cast<const float4*>(src);
    auto* d4 = reinterpret_cast<uint2*>(dst);
    for (index_t q = first; q < quads; q += step) {
      const float4 v = s4[q];
      const bfloat16 b0(v.x), b1(v.y), b2(v.z), b3(v.w);
      d4[q] = make_uint2(unsigned(b0.bits) | (unsigned(b1.bits) << 16), unsigned(b2.bits) | (unsigned(b3.bits) << 16));
    }
    done = quads * 4;
  }
  for (index_t i = done + first; i < n; i += step) dst[i] = bfloat16(src[i]);
}

}  // namespace bf16_detail
}  // namespace cuda_kernels

/// C (fp32, row-major, row stride ldc) = A B, or C += A B (accumulate), on stream s (asynchronous; see the top of
/// this file). A (M x K) and B (K x N) bfloat16 through strides; device pointers.
inline void cuda_gemm_bf16(cudaStream_t s, index_t M, index_t N, index_t K, detail::mat_ref<bfloat16> a,
                           detail::mat_ref<bfloat16> b, float* c, index_t ldc, bool accumulate) {
  namespace gd = cuda_kernels::gemm_detail;
  using cuda_kernels::check_launch;
  using cuda_kernels::fits_int;
  using cuda_kernels::grid_for;
  auto shapes = [&] {
    return "A " + std::to_string(M) + " x " + std::to_string(K) + ", B " + std::to_string(K) + " x " + std::to_string(N) +
           ", C " + std::to_string(M) + " x " + std::to_string(N) + " (ldc " + std::to_string(ldc) + ")";
  };
  if (M < 0 || N < 0 || K < 0) throw shape_error("tessera: cuda_gemm_bf16: negative extent: " + shapes());
  if (M > 1 && ldc < N) throw shape_error("tessera: cuda_gemm_bf16: ldc is smaller than N: " + shapes());
  if (!fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(ldc))
    throw shape_error("tessera: cuda_gemm_bf16: extents beyond 2^31 - 1 are not supported by cuBLASLt: " + shapes());
  if (M == 0 || N == 0) return;
  if (ldc < N) ldc = N;  // one row: its leading dimension is never used

  if (K == 0) {  // an empty sum: C = 0, or C += 0
    if (accumulate) return;
    gd::epilogue_kernel<float><<<grid_for(M * N), 256, 0, s>>>(c, 1, M, N, ldc, 0, nullptr, 0, true);
    check_launch("cuda_gemm_bf16: zero kernel launch");
    return;
  }

  gd::problem pr{};
  pr.M = M;
  pr.N = N;
  pr.K = K;
  pr.batch = 1;
  pr.ldc = ldc;
  gd::scratch mem_a(s), mem_b(s);
  const bfloat16* X = b.p;  // cuBLASLt's A slot: B^T (N x K)
  const bfloat16* Y = a.p;  // cuBLASLt's B slot: A^T (K x M)
  index_t unused_bs = 0;
  if (!gd::describe_transposed(K, N, b.rs, b.cs, pr.x)) {
    X = gd::pack(mem_b, s, b.p, 1, K, N, b.rs, b.cs, 0, unused_bs);
    gd::describe_transposed(K, N, N, 1, pr.x);
  }
  if (!gd::describe_transposed(M, K, a.rs, a.cs, pr.y)) {
    Y = gd::pack(mem_a, s, a.p, 1, M, K, a.rs, a.cs, 0, unused_bs);
    gd::describe_transposed(M, K, K, 1, pr.y);
  }
  pr.align_x = cuda_kernels::pointer_alignment(X);
  pr.align_y = cuda_kernels::pointer_alignment(Y);
  pr.align_c = cuda_kernels::pointer_alignment(c);

  auto& st = gd::global();
  std::lock_guard<std::mutex> lock(st.mutex);
  const int device = cuda_kernels::current_device();
  cublasLtHandle_t h = gd::handle_for(st, device);
  void* ws = gd::workspace_for(st, device, s);
  const gd::plan& p = cuda_kernels::bf16_detail::plan_for(st, h, device, pr);
  // beta = 0: C is not read, it may hold anything (NaN included); beta = 1 (accumulate): C += A B in place
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  gd::check_cublas(cublasLtMatmul(h, p.desc, &alpha, X, p.x, Y, p.y, &beta, c, p.d, c, p.d, &p.algo, ws, gd::workspace_bytes, s),
                   "cublasLtMatmul (bf16)");
}

/// dst[i] = bfloat16(src[i]) for i < n on stream s (device pointers; asynchronous): round to nearest even, NaN kept
/// a NaN as core/types.hpp does it (bit for bit the host's conversion).
inline void cuda_to_bf16(cudaStream_t s, const float* src, bfloat16* dst, index_t n) {
  if (n < 0) throw shape_error("tessera: cuda_to_bf16: negative length " + std::to_string(n));
  if (n == 0) return;
  const bool vec4 = reinterpret_cast<std::uintptr_t>(src) % 16 == 0 && reinterpret_cast<std::uintptr_t>(dst) % 8 == 0;
  cuda_kernels::bf16_detail::to_bf16_kernel<<<cuda_kernels::grid_for(vec4 ? (n + 3) / 4 : n), 256, 0, s>>>(src, dst, n, vec4);
  cuda_kernels::check_launch("cuda_to_bf16: kernel launch");
}

}  // namespace tessera
#endif  // __CUDACC__
