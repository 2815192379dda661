// Adaptive average pooling on the device (PyTorch's AdaptiveAvgPool2d), forward and backward, at the level of raw
// pointers; compiled only by nvcc. Output cell (i, j) averages input rows [floor(i*H/OH), ceil((i+1)*H/OH)) and
// columns [floor(j*W/OW), ceil((j+1)*W/OW)). x is read through strides; y, dy and dx are contiguous NCHW. The
// backward is a gather (one thread per dx element over the few windows that cover it): no atomics, deterministic.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"

namespace tessera {
namespace cuda_kernels::adaptive_detail {

__device__ __forceinline__ index_t start(index_t i, index_t in, index_t out) { return i * in / out; }
__device__ __forceinline__ index_t end(index_t i, index_t in, index_t out) { return ((i + 1) * in + out - 1) / out; }

template <class T>
__global__ void forward_kernel(const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n, index_t xs_c, index_t xs_h,
                               index_t xs_w, index_t OH, index_t OW, T* y) {
  const index_t total = N * C * OH * OW, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t ow = i % OW, oh = (i / OW) % OH, c = (i / (OW * OH)) % C, n = i / (OW * OH * C);
    const T* in = x + n * xs_n + c * xs_c;
    const index_t h0 = start(oh, H, OH), h1 = end(oh, H, OH), w0 = start(ow, W, OW), w1 = end(ow, W, OW);
    T acc = T(0);
    for (index_t h = h0; h < h1; ++h)
      for (index_t w = w0; w < w1; ++w) acc += in[h * xs_h + w * xs_w];
    y[i] = acc / T((h1 - h0) * (w1 - w0));
  }
}

template <class T>
__global__ void backward_kernel(const T* dy, index_t N, index_t C, index_t H, index_t W, index_t OH, index_t OW, T* dx,
                                bool accumulate) {
  const index_t total = N * C * H * W, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t w = i % W, h = (i / W) % H, plane = i / (W * H);
    const T* g = dy + plane * OH * OW;
    // the windows covering row h lie within (h*OH/H - 1, (h+1)*OH/H]: test each there
    index_t oh0 = h * OH / H - 1, oh1 = (h + 1) * OH / H + 1, ow0 = w * OW / W - 1, ow1 = (w + 1) * OW / W + 1;
    if (oh0 < 0) oh0 = 0;
    if (ow0 < 0) ow0 = 0;
    if (oh1 > OH - 1) oh1 = OH - 1;
    if (ow1 > OW - 1) ow1 = OW - 1;
    T acc = T(0);
    for (index_t oh = oh0; oh <= oh1; ++oh) {
      const index_t h0 = start(oh, H, OH), h1 = end(oh, H, OH);
      if (h < h0 || h >= h1) continue;
      for (index_t ow = ow0; ow <= ow1; ++ow) {
        const index_t w0 = start(ow, W, OW), w1 = end(ow, W, OW);
        if (w >= w0 && w < w1) acc += g[oh * OW + ow] / T((h1 - h0) * (w1 - w0));
      }
    }
    dx[i] = accumulate ? dx[i] + acc : acc;
  }
}

}  // namespace cuda_kernels::adaptive_detail

/// y (N x C x OH x OW, contiguous) = the adaptive average pooling of x (N x C x H x W, strides xs). Asynchronous on s.
template <class T>
void cuda_adaptive_avg_pool2d(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n, index_t xs_c,
                              index_t xs_h, index_t xs_w, index_t OH, index_t OW, T* y) {
  static_assert(std::is_floating_point_v<T>, "tessera: cuda_adaptive_avg_pool2d needs a floating-point type");
  if (OH < 1 || OW < 1 || H < 1 || W < 1)
    throw shape_error("tessera: cuda_adaptive_avg_pool2d: the input " + std::to_string(H) + "x" + std::to_string(W) +
                      " and the output " + std::to_string(OH) + "x" + std::to_string(OW) + " must not be empty");
  const index_t total = N * C * OH * OW;
  if (total == 0) return;
  cuda_kernels::adaptive_detail::forward_kernel<T><<<cuda_kernels::grid_for(total), 256, 0, s>>>(x, N, C, H, W, xs_n, xs_c, xs_h,
                                                                                                 xs_w, OH, OW, y);
  cuda_kernels::check_launch("cuda_adaptive_avg_pool2d: kernel launch");
}

/// dx (N x C x H x W, contiguous; added to when accumulate) = the gradient of adaptive average pooling from dy.
template <class T>
void cuda_adaptive_avg_pool2d_backward(cudaStream_t s, const T* dy, index_t N, index_t C, index_t H, index_t W, index_t OH,
                                       index_t OW, T* dx, bool accumulate = false) {
  static_assert(std::is_floating_point_v<T>, "tessera: cuda_adaptive_avg_pool2d needs a floating-point type");
  const index_t total = N * C * H * W;
  if (total == 0 || OH < 1 || OW < 1) return;
  cuda_kernels::adaptive_detail::backward_kernel<T><<<cuda_kernels::grid_for(total), 256, 0, s>>>(dy, N, C, H, W, OH, OW, dx,
                                                                                                  accumulate);
  cuda_kernels::check_launch("cuda_adaptive_avg_pool2d_backward: kernel launch");
}

}  // namespace tessera
#endif  // __CUDACC__
