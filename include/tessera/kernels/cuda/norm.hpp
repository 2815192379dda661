// cuda_norm_ops: the layer-normalisation part of backend<cuda> (kernels/cuda/backend.hpp), with the same names and
// argument lists as host_norm_ops (kernels/cpu/norm.hpp):
//   layer_norm_forward    a block per row: mean and biased variance (sums in double, fixed-order tree), then y
//   layer_norm_backward   a block per row for dx; a thread per column summing dw and db over the rows in order
// Every kernel runs on tessera's stream. Compiled only by nvcc.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <cmath>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera::detail {

namespace cuda_norm {

inline constexpr int block = 256;

/// The sum of v over the block (every thread gets it); sh holds block doubles.
__device__ inline double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = block / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

template <class T>
__global__ void forward_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, index_t rows, index_t cols, double eps) {
  __shared__ double sh[block];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    double s = 0;
    for (index_t c = threadIdx.x; c < cols; c += block) s += double(xr[c]);
    const double mu = block_sum(s, sh) / double(cols);
    double v = 0;
    for (index_t c = threadIdx.x; c < cols; c += block) v += (double(xr[c]) - mu) * (double(xr[c]) - mu);
    const double rs = 1.0 / ::sqrt(block_sum(v, sh) / double(cols) + eps);
    if (threadIdx.x == 0) mean[r] = T(mu), rstd[r] = T(rs);
    for (index_t c = threadIdx.x; c < cols; c += block) {
      T o = (xr[c] - T(mu)) * T(rs);
      if (w) o *= w[c];
      if (b) o += b[c];
      y[r * cols + c] = o;
    }
  }
}

template <class T>
__global__ void backward_dx_kernel(const T* x, const T* g, const T* w, const T* mean, const T* rstd, T* dx, bool acc, index_t rows,
                                   index_t cols) {
  __shared__ double sh[block];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    const T* gr = g + r * cols;
    const T m = mean[r], is = rstd[r];
    double s1 = 0, s2 = 0;
    for (index_t c = threadIdx.x; c < cols; c += block) {
      const T gw = w ? gr[c] * w[c] : gr[c];
      s1 += double(gw);
      s2 += double(gw * (xr[c] - m) * is);
    }
    const T a = T(block_sum(s1, sh) / double(cols)), bq = T(block_sum(s2, sh) / double(cols));
    for (index_t c = threadIdx.x; c < cols; c += block) {
      const T gw = w ? gr[c] * w[c] : gr[c];
      const T d = is * (gw - a - (xr[c] - m) * is * bq);
      dx[r * cols + c] = acc ? dx[r * cols + c] + d : d;
    }
  }
}

template <class T>
__global__ void backward_params_kernel(const T* x, const T* g, const T* mean, const T* rstd, T* dw, bool acc_w, T* db, bool acc_b,
                                       index_t rows, index_t cols) {
  for (index_t c = index_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += index_t(gridDim.x) * blockDim.x) {
    T sw = 0, sb = 0;
    for (index_t r = 0; r < rows; ++r) {
      sw += g[r * cols + c] * (x[r * cols + c] - mean[r]) * rstd[r];
      sb += g[r * cols + c];
    }
    if (dw) dw[c] = acc_w ? dw[c] + sw : sw;
    if (db) db[c] = acc_b ? db[c] + sb : sb;
  }
}

inline unsigned row_blocks(index_t rows) { return unsigned(rows < 65535 ? (rows < 1 ? 1 : rows) : 65535); }

}  // namespace cuda_norm

struct cuda_norm_ops {
  template <class T>
  static void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, index_t rows, index_t cols, double eps) {
    namespace k = cuda_norm;
    if (rows == 0 || cols == 0) return;
    k::forward_kernel<T><<<k::row_blocks(rows), k::block, 0, tessera::cuda_detail::stream()>>>(x, w, b, y, mean, rstd, rows, cols, eps);
    tessera::cuda_kernels::check_launch("tessera: layer_norm kernel launch");
  }
  template <class T>
  static void layer_norm_backward(const T* x, const T* g, const T* w, const T* mean, const T* rstd, T* dx, bool acc_x, T* dw,
                                  bool acc_w, T* db, bool acc_b, index_t rows, index_t cols) {
    namespace k = cuda_norm;
    if (cols == 0) return;
    cudaStream_t s = tessera::cuda_detail::stream();
    if (dx && rows > 0) {
      k::backward_dx_kernel<T><<<k::row_blocks(rows), k::block, 0, s>>>(x, g, w, mean, rstd, dx, acc_x, rows, cols);
      tessera::cuda_kernels::check_launch("tessera: layer_norm backward kernel launch");
    }
    if (dw || db) {
      k::backward_params_kernel<T><<<tessera::cuda_kernels::grid_for(cols), k::block, 0, s>>>(x, g, mean, rstd, dw, acc_w, db, acc_b,
                                                                                             rows, cols);
      tessera::cuda_kernels::check_launch("tessera: layer_norm parameter-gradient kernel launch");
    }
  }
};

}  // namespace tessera::detail
#endif  // __CUDACC__
