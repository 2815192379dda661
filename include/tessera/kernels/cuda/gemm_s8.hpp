// cuda_gemm_s8: the int8 GEMM on the device, C = A (uint8 or int8, M x K) * B (int8, K x N) with int32 sums, and
// the epilogue in the same kernel (cuBLASLt has no epilogue for int8): store the int32 sums, dequantize to float
// (+ bias, ReLU), or dequantize, add the bias, apply ReLU and requantize to uint8 — one pass, no int32 matrix.
// Compiled only by nvcc.
//
// The kernel uses __dp4a (sm_61 and later): each thread owns a 4 x 4 block of a 64 x 64 tile of C; a block of
// 256 threads stages 32 k of A and B in shared memory as int32 quads (four consecutive k of a row of A, of a column
// of B). Operands are first packed into quads on the device: A per call ([M][K/4], uint8 turned into int8 by
// flipping the top bit, which the column sums of B correct: sum (a - 128) b + 128 sum b), B once
// (cuda_packed_b_s8 holds the quads [K/4][N] and the column sums). K is padded to a multiple of 4 with zeros.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "tessera/kernels/cuda/common.hpp"

namespace tessera::cuda_kernels {

namespace s8_detail {
constexpr int BM = 64, BN = 64, BQ = 8;  // tile rows, columns, k quads (32 k)

template <class TA>
__global__ void pack_a_kernel(const TA* a, index_t lda, index_t M, index_t K, index_t Kq, std::int32_t* out) {
  const index_t total = M * Kq;
  for (index_t t = index_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += index_t(gridDim.x) * blockDim.x) {
    const index_t i = t / Kq, q = t % Kq;
    std::uint32_t v = 0;
    for (int r = 0; r < 4; ++r) {
      const index_t k = 4 * q + r;
      std::uint8_t byte = 0;
      if (k < K) {
        byte = static_cast<std::uint8_t>(a[i * lda + k]);
        if constexpr (std::is_same_v<TA, std::uint8_t>) byte ^= 0x80;  // u8 -> s8 (a - 128)
      }
      v |= std::uint32_t(byte) << (8 * r);
    }
    out[t] = std::int32_t(v);
  }
}

__global__ void pack_b_kernel(const std::int8_t* b, index_t rs, index_t cs, index_t K, index_t N, index_t Kq, std::int32_t* out,
                              std::int32_t* colsum) {
  for (index_t j = index_t(blockIdx.x) * blockDim.x + threadIdx.x; j < N; j += index_t(gridDim.x) * blockDim.x) {
    std::int32_t s = 0;
    for (index_t q = 0; q < Kq; ++q) {
      std::uint32_t v = 0;
      for (int r = 0; r < 4; ++r) {
        const index_t k = 4 * q + r;
        const std::int8_t x = k < K ? b[k * rs + j * cs] : std::int8_t(0);
        s += x;
        v |= std::uint32_t(std::uint8_t(x)) << (8 * r);
      }
      out[q * N + j] = std::int32_t(v);
    }
    colsum[j] = s;
  }
}

template <class Epi>
__global__ void __launch_bounds__(256) gemm_kernel(const std::int32_t* __restrict__ a, const std::int32_t* __restrict__ b,
                                                   const std::int32_t* __restrict__ colsum, bool a_unsigned, index_t M, index_t N,
                                                   index_t Kq, Epi epi) {
  __shared__ std::int32_t As[BQ][BM];
  __shared__ std::int32_t Bs[BQ][BN];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const index_t i0 = index_t(blockIdx.y) * BM, j0 = index_t(blockIdx.x) * BN;
  int acc[4][4] = {};
  for (index_t q0 = 0; q0 < Kq; q0 += BQ) {
    for (int t = threadIdx.x; t < BQ * BM; t += 256) {  // 512 quads of A and of B per stage
      const int q = t / BM, r = t % BM;
      const index_t gi = i0 + r, gq = q0 + q, gj = j0 + r;
      As[q][r] = (gi < M && gq < Kq) ? a[gi * Kq + gq] : 0;
      Bs[q][r] = (gj < N && gq < Kq) ? b[gq * N + gj] : 0;
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < BQ; ++q) {
      int av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) av[r] = As[q][ty + 16 * r], bv[r] = Bs[q][tx + 16 * r];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = __dp4a(av[r], bv[c], acc[r][c]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const index_t i = i0 + ty + 16 * r, j = j0 + tx + 16 * c;
      if (i < M && j < N) epi(i, j, acc[r][c] + (a_unsigned ? 128 * colsum[j] : 0));
    }
}

/// A device buffer reused between calls (grown as needed; one per thread).
struct scratch_i32 {
  std::int32_t* p = nullptr;
  std::size_t n = 0;
  std::int32_t* grow(std::size_t want) {
    if (want > n) {
      if (p) cudaFree(p);
      check_cuda(cudaMalloc(&p, want * sizeof(std::int32_t)), "cudaMalloc (int8 GEMM scratch)");
      n = want;
    }
    return p;
  }
  ~scratch_i32() {
    if (p) cudaFree(p);
  }
};
}  // namespace s8_detail

/// int8 weights packed on the device: B (K x N, element (k, j) at b[k * rs + j * cs], a device pointer) as int32
/// quads [K/4][N], with the column sums.
struct cuda_packed_b_s8 {
  index_t K = 0, N = 0, Kq = 0;
  std::int32_t* quads = nullptr;
  std::int32_t* colsum = nullptr;
  cuda_packed_b_s8(cudaStream_t s, const std::int8_t* b, index_t K_, index_t N_, index_t rs, index_t cs) : K(K_), N(N_), Kq((K_ + 3) / 4) {
    check_cuda(cudaMalloc(&quads, std::size_t(std::max<index_t>(1, Kq * N)) * sizeof(std::int32_t)), "cudaMalloc (packed B)");
    check_cuda(cudaMalloc(&colsum, std::size_t(std::max<index_t>(1, N)) * sizeof(std::int32_t)), "cudaMalloc (column sums)");
    if (N > 0) s8_detail::pack_b_kernel<<<grid_for(N, 128), 128, 0, s>>>(b, rs, cs, K, N, Kq, quads, colsum);
    check_launch("tessera int8 pack_b_kernel");
  }
  cuda_packed_b_s8(const cuda_packed_b_s8&) = delete;
  cuda_packed_b_s8& operator=(const cuda_packed_b_s8&) = delete;
  ~cuda_packed_b_s8() {
    cudaFree(quads);
    cudaFree(colsum);
  }
};

/// Epilogues (device functors called as epi(i, j, sum) with the exact int32 sum of row i and column j).
struct s8_store_int32 {  ///< C[i * ldc + j] = sum
  std::int32_t* c;
  index_t ldc;
  __device__ void operator()(index_t i, index_t j, std::int32_t v) const { c[i * ldc + j] = v; }
};
struct s8_dequant_f32 {  ///< y = (sum - offset[j]) * scale[j] (+ bias[j]) (ReLU) as float
  float* y;
  index_t ldy;
  const float* scale;
  const float* offset;
  const float* bias;  ///< may be null
  bool relu;
  __device__ float real(index_t j, std::int32_t v) const {
    float r = (float(v) - offset[j]) * scale[j] + (bias ? bias[j] : 0.0f);
    return relu ? fmaxf(r, 0.0f) : r;
  }
  __device__ void operator()(index_t i, index_t j, std::int32_t v) const { y[i * ldy + j] = real(j, v); }
};
struct s8_requant_u8 {  ///< the same, then requantized as PyTorch: clamp(rint(r * (1 / out_scale)) + out_zero_point) as uint8
  s8_dequant_f32 d;
  std::uint8_t* q;
  index_t ldq;
  float inv_out_scale, out_zero_point;
  __device__ void operator()(index_t i, index_t j, std::int32_t v) const {
    const float x = fminf(fmaxf(rintf(d.real(j, v) * inv_out_scale) + out_zero_point, 0.0f), 255.0f);
    q[i * ldq + j] = std::uint8_t(x);
  }
};

/// C = A * B on the device (A: uint8 or int8 rows, unit column stride, row stride lda, a device pointer), each result
/// handed to `epi` in the kernel.
template <class TA, class Epi>
void cuda_gemm_s8(cudaStream_t s, index_t M, index_t N, index_t K, const TA* a, index_t lda, const cuda_packed_b_s8& b, const Epi& epi) {
  static_assert(std::is_same_v<TA, std::uint8_t> || std::is_same_v<TA, std::int8_t>, "cuda_gemm_s8: A is uint8 or int8");
  if (b.K != K || b.N != N)
    throw shape_error("tessera: cuda_gemm_s8: packed B is " + std::to_string(b.K) + " x " + std::to_string(b.N) +
                      ", the product needs " + std::to_string(K) + " x " + std::to_string(N));
  if (M == 0 || N == 0) return;
  thread_local s8_detail::scratch_i32 pa;
  std::int32_t* ap = pa.grow(std::size_t(M * std::max<index_t>(1, b.Kq)));
  s8_detail::pack_a_kernel<TA><<<grid_for(M * b.Kq), 256, 0, s>>>(a, lda, M, K, b.Kq, ap);
  check_launch("tessera int8 pack_a_kernel");
  const dim3 grid(unsigned((N + s8_detail::BN - 1) / s8_detail::BN), unsigned((M + s8_detail::BM - 1) / s8_detail::BM));
  s8_detail::gemm_kernel<Epi><<<grid, 256, 0, s>>>(ap, b.quads, b.colsum, std::is_same_v<TA, std::uint8_t>, M, N, b.Kq, epi);
  check_launch("tessera int8 gemm_kernel");
}

}  // namespace tessera::cuda_kernels
#endif
