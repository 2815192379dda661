// max_pool2d and avg_pool2d on the device, forward and backward: tessera's own CUDA kernels at the level of raw
// pointers. Compiled only by nvcc (like every kernels/cuda header); no library needed.
//
//   x: N x C x H x W with any strides (xs_n, xs_c, xs_h, xs_w, in elements); y and dy: N x C x OH x OW and dx:
//   N x C x H x W, contiguous NCHW. The windows are a pool2d_options (kernels/backend.hpp): kernel, stride (0: the
//   kernel), padding and dilation (max only) per axis, with kernel >= 1, stride >= 0, dilation >= 1 and
//   0 <= pad <= kernel / 2; ceil_mode and count_include_pad as PyTorch. OH and OW: pool_out_extent. The older
//   entry points take square int kernel, stride and padding (floor mode, padding counted).
//   max: padded cells never win; ties go to the first cell in row-major window order (as tessera's host pooling:
//        a later cell replaces the running maximum only when strictly greater, or when it is NaN). A NaN cell makes
//        the window NaN and receives its gradient (the last NaN of the window, as PyTorch's `v > max || isnan(v)`).
//   avg: the divisor is the window's cells inside the padded input (count_include_pad, PyTorch's default) or inside
//        the input alone.
//   Backward: max sends each dy to its window's winning cell, avg spreads dy / divisor over the window's real cells.
//   Both are gathers (one thread per dx element summing the windows that cover it, in a fixed order): no atomics,
//   deterministic. The max backward either recomputes each window's winner from x, or reads the winners the
//   forward stored in `argmax` (index h * W + w within the plane).
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"

namespace tessera {

/// Output extent of a square pooling window along one axis (floor mode).
constexpr index_t pool2d_out_extent(index_t in, int kernel, int stride, int pad) {
  return (in + 2 * index_t(pad) - kernel) / stride + 1;
}

namespace cuda_kernels {
namespace pool_detail {

struct pool_geometry {
  index_t N, C, H, W, OH, OW;
  index_t xs_n, xs_c, xs_h, xs_w;
  int kh, kw, sh, sw, ph, pw, dh, dw;
  bool count_include_pad;
};

inline pool_geometry make_geometry(const char* fn, index_t N, index_t C, index_t H, index_t W, index_t xs_n, index_t xs_c,
                                   index_t xs_h, index_t xs_w, const pool2d_options& o) {
  auto fail = [fn](const std::string& why) { throw shape_error(std::string("tessera: ") + fn + ": " + why); };
  auto pair = [](hw v) { return std::to_string(v.h) + "x" + std::to_string(v.w); };
  if (N < 0 || C < 0 || H < 0 || W < 0) fail("negative extent");
  if (!o.valid())
    fail("needs kernel >= 1, stride >= 0 (0: the kernel), 0 <= padding <= kernel / 2 and dilation >= 1 (kernel " +
         pair(o.kernel) + ", stride " + pair(o.stride) + ", padding " + pair(o.padding) + ", dilation " + pair(o.dilation) + ")");
  const hw st = o.step();
  const index_t eh = index_t(o.dilation.h) * (o.kernel.h - 1) + 1, ew = index_t(o.dilation.w) * (o.kernel.w - 1) + 1;
  if (H + 2 * index_t(o.padding.h) < eh || W + 2 * index_t(o.padding.w) < ew)
    fail("the input " + std::to_string(H) + "x" + std::to_string(W) + " is smaller than the " + std::to_string(eh) + "x" +
         std::to_string(ew) + " window (padding " + pair(o.padding) + ")");
  return {N, C, H, W,
          tessera::detail::pool_out_extent(H, o.kernel.h, st.h, o.padding.h, o.dilation.h, o.ceil_mode),
          tessera::detail::pool_out_extent(W, o.kernel.w, st.w, o.padding.w, o.dilation.w, o.ceil_mode),
          xs_n, xs_c, xs_h, xs_w, o.kernel.h, o.kernel.w, st.h, st.w, o.padding.h, o.padding.w, o.dilation.h, o.dilation.w,
          o.count_include_pad};
}

template <class T>
__device__ __forceinline__ T lowest() {
  if constexpr (std::numeric_limits<T>::has_infinity) return -std::numeric_limits<T>::infinity();
  else return std::numeric_limits<T>::lowest();
}

/// The winner of window (oh, ow) of plane `in`: its value and index h * W + w.
template <class T>
__device__ __forceinline__ T window_max(const T* in, const pool_geometry& g, index_t oh, index_t ow, std::int32_t& arg) {
  const index_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  T acc = lowest<T>();
  arg = -1;
  for (int kh = 0; kh < g.kh; ++kh) {
    const index_t h = h0 + index_t(kh) * g.dh;
    if (h < 0 || h >= g.H) continue;
    for (int kw = 0; kw < g.kw; ++kw) {
      const index_t w = w0 + index_t(kw) * g.dw;
      if (w < 0 || w >= g.W) continue;
      const T v = in[h * g.xs_h + w * g.xs_w];
      const std::int32_t idx = std::int32_t(h * g.W + w);
      if (arg < 0) arg = idx;  // the first real cell wins unless a later one is greater (all -inf: it stays)
      if (acc < v || v != v) {  // NaN wins (and a NaN acc is never replaced by a number)
        acc = v;
        arg = idx;
      }
    }
  }
  return acc;
}

/// An average window's divisor (PyTorch's rule: the padded input bounds the window; without count_include_pad only
/// the input's cells count).
__device__ __forceinline__ index_t avg_divisor(const pool_geometry& g, index_t oh, index_t ow) {
  const index_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  index_t h1 = h0 + g.kh, w1 = w0 + g.kw;
  if (h1 > g.H + g.ph) h1 = g.H + g.ph;
  if (w1 > g.W + g.pw) w1 = g.W + g.pw;
  if (g.count_include_pad) return (h1 - h0) * (w1 - w0);
  const index_t a = h0 < 0 ? 0 : h0, b = w0 < 0 ? 0 : w0, c = h1 > g.H ? g.H : h1, d = w1 > g.W ? g.W : w1;
  return (c - a) * (d - b);
}

template <class T>
__global__ void max_pool_kernel(const T* x, pool_geometry g, T* y, std::int32_t* argmax) {
  const index_t total = g.N * g.C * g.OH * g.OW, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t ow = i % g.OW, oh = (i / g.OW) % g.OH, c = (i / (g.OW * g.OH)) % g.C, n = i / (g.OW * g.OH * g.C);
    std::int32_t arg;
    y[i] = window_max(x + n * g.xs_n + c * g.xs_c, g, oh, ow, arg);
    if (argmax) argmax[i] = arg;
  }
}

template <class T>
__global__ void avg_pool_kernel(const T* x, pool_geometry g, T* y) {
  const index_t total = g.N * g.C * g.OH * g.OW, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t ow = i % g.OW, oh = (i / g.OW) % g.OH, c = (i / (g.OW * g.OH)) % g.C, n = i / (g.OW * g.OH * g.C);
    const T* in = x + n * g.xs_n + c * g.xs_c;
    const index_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    T acc = T(0);
    for (int kh = 0; kh < g.kh; ++kh) {
      const index_t h = h0 + kh;
      if (h < 0 || h >= g.H) continue;
      for (int kw = 0; kw < g.kw; ++kw) {
        const index_t w = w0 + kw;
        if (w >= 0 && w < g.W) acc += in[h * g.xs_h + w * g.xs_w];
      }
    }
    const index_t cells = avg_divisor(g, oh, ow);
    y[i] = cells > 0 ? acc / T(cells) : T(0);
  }
}

/// The output rows (or columns) whose windows (span k, dilated) can cover input row h: [lo, hi], empty when lo > hi.
__device__ __forceinline__ void covering(index_t h, index_t k, int s, int p, index_t out, index_t& lo, index_t& hi) {
  // window oh spans rows oh*s - p .. oh*s - p + k - 1, i.e. covers h iff h + p - k + 1 <= oh*s <= h + p
  const index_t a = h + p - k + 1;
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = (h + p) / s;
  if (hi > out - 1) hi = out - 1;
}

/// dx[n][c][h][w] (contiguous) = (accumulate ? dx : 0) + the dy of every window whose winner is (h, w).
template <class T>
__global__ void max_pool_backward_kernel(const T* x, pool_geometry g, const T* dy, const std::int32_t* argmax, T* dx,
                                         bool accumulate) {
  const index_t total = g.N * g.C * g.H * g.W, step = index_t(gridDim.x) * blockDim.x;
  const index_t eh = index_t(g.dh) * (g.kh - 1) + 1, ew = index_t(g.dw) * (g.kw - 1) + 1;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t w = i % g.W, h = (i / g.W) % g.H, plane = i / (g.W * g.H);
    const index_t n = plane / g.C, c = plane % g.C;
    const std::int32_t me = std::int32_t(h * g.W + w);
    index_t oh0, oh1, ow0, ow1;
    covering(h, eh, g.sh, g.ph, g.OH, oh0, oh1);
    covering(w, ew, g.sw, g.pw, g.OW, ow0, ow1);
    const T* dyp = dy + plane * g.OH * g.OW;
    const std::int32_t* ap = argmax ? argmax + plane * g.OH * g.OW : nullptr;
    const T* in = x ? x + n * g.xs_n + c * g.xs_c : nullptr;
    T acc = T(0);
    for (index_t oh = oh0; oh <= oh1; ++oh)
      for (index_t ow = ow0; ow <= ow1; ++ow) {
        std::int32_t win;
        if (ap) win = ap[oh * g.OW + ow];
        else window_max(in, g, oh, ow, win);
        if (win == me) acc += dyp[oh * g.OW + ow];
      }
    dx[i] = accumulate ? dx[i] + acc : acc;
  }
}

template <class T>
__global__ void avg_pool_backward_kernel(pool_geometry g, const T* dy, T* dx, bool accumulate) {
  const index_t total = g.N * g.C * g.H * g.W, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t w = i % g.W, h = (i / g.W) % g.H, plane = i / (g.W * g.H);
    index_t oh0, oh1, ow0, ow1;
    covering(h, g.kh, g.sh, g.ph, g.OH, oh0, oh1);
    covering(w, g.kw, g.sw, g.pw, g.OW, ow0, ow1);
    const T* dyp = dy + plane * g.OH * g.OW;
    T acc = T(0);
    for (index_t oh = oh0; oh <= oh1; ++oh)
      for (index_t ow = ow0; ow <= ow1; ++ow) {
        const index_t cells = avg_divisor(g, oh, ow);
        if (cells > 0) acc += dyp[oh * g.OW + ow] / T(cells);
      }
    dx[i] = accumulate ? dx[i] + acc : acc;
  }
}

}  // namespace pool_detail
}  // namespace cuda_kernels

/// y (N x C x OH x OW, contiguous) = max over each window (pool2d_options o) of x; argmax (nullable, same shape as y)
/// receives each winner's index h * W + w within its plane, for cuda_max_pool2d_backward. Asynchronous on s.
template <class T>
void cuda_max_pool2d(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n, index_t xs_c,
                     index_t xs_h, index_t xs_w, const pool2d_options& o, T* y, std::int32_t* argmax = nullptr) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, "tessera: cuda_max_pool2d needs a numeric type");
  namespace pd = cuda_kernels::pool_detail;
  const auto g = pd::make_geometry("cuda_max_pool2d", N, C, H, W, xs_n, xs_c, xs_h, xs_w, o);
  if (H * W > index_t(0x7fffffff)) throw shape_error("tessera: cuda_max_pool2d: a plane beyond 2^31 - 1 elements");
  const index_t total = N * C * g.OH * g.OW;
  if (total == 0) return;
  pd::max_pool_kernel<T><<<cuda_kernels::grid_for(total), 256, 0, s>>>(x, g, y, argmax);
  cuda_kernels::check_launch("cuda_max_pool2d: kernel launch");
}
/// The same with square kernel x kernel windows, stride and padding (floor mode).
template <class T>
void cuda_max_pool2d(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n, index_t xs_c,
                     index_t xs_h, index_t xs_w, int kernel, int stride, int pad, T* y, std::int32_t* argmax = nullptr) {
  if (stride < 1) throw shape_error("tessera: cuda_max_pool2d: needs stride >= 1 (stride " + std::to_string(stride) + ")");
  cuda_max_pool2d<T>(s, x, N, C, H, W, xs_n, xs_c, xs_h, xs_w, pool2d_options{.kernel = kernel, .stride = stride, .padding = pad}, y,
                     argmax);
}

/// y (N x C x OH x OW, contiguous) = mean over each window (pool2d_options o, no dilation) of x.
template <class T>
void cuda_avg_pool2d(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n, index_t xs_c,
                     index_t xs_h, index_t xs_w, const pool2d_options& o, T* y) {
  static_assert(std::is_floating_point_v<T>, "tessera: cuda_avg_pool2d needs a floating-point type");
  namespace pd = cuda_kernels::pool_detail;
  if (o.dilation != hw{1}) throw std::invalid_argument("tessera: cuda_avg_pool2d: average pooling has no dilation");
  const auto g = pd::make_geometry("cuda_avg_pool2d", N, C, H, W, xs_n, xs_c, xs_h, xs_w, o);
  const index_t total = N * C * g.OH * g.OW;
  if (total == 0) return;
  pd::avg_pool_kernel<T><<<cuda_kernels::grid_for(total), 256, 0, s>>>(x, g, y);
  cuda_kernels::check_launch("cuda_avg_pool2d: kernel launch");
}
/// The same with square kernel x kernel windows, stride and padding counted as zeros (floor mode).
template <class T>
void cuda_avg_pool2d(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n, index_t xs_c,
                     index_t xs_h, index_t xs_w, int kernel, int stride, int pad, T* y) {
  if (stride < 1) throw shape_error("tessera: cuda_avg_pool2d: needs stride >= 1 (stride " + std::to_string(stride) + ")");
  cuda_avg_pool2d<T>(s, x, N, C, H, W, xs_n, xs_c, xs_h, xs_w, pool2d_options{.kernel = kernel, .stride = stride, .padding = pad}, y);
}

/// dx (N x C x H x W, contiguous) = gradient of max pooling from dy (N x C x OH x OW, contiguous): each dy goes to
/// its window's winner. Winners come from `argmax` (as written by cuda_max_pool2d) when given, else they are
/// recomputed from x (strides xs_*; x may be null when argmax is given). Added to dx when `accumulate`.
template <class T>
void cuda_max_pool2d_backward(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n,
                              index_t xs_c, index_t xs_h, index_t xs_w, const pool2d_options& o, const T* dy, T* dx,
                              const std::int32_t* argmax = nullptr, bool accumulate = false) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, "tessera: cuda_max_pool2d needs a numeric type");
  namespace pd = cuda_kernels::pool_detail;
  const auto g = pd::make_geometry("cuda_max_pool2d_backward", N, C, H, W, xs_n, xs_c, xs_h, xs_w, o);
  if (!x && !argmax) throw std::invalid_argument("tessera: cuda_max_pool2d_backward: needs x or argmax");
  if (H * W > index_t(0x7fffffff)) throw shape_error("tessera: cuda_max_pool2d_backward: a plane beyond 2^31 - 1 elements");
  const index_t total = N * C * H * W;
  if (total == 0) return;
  pd::max_pool_backward_kernel<T><<<cuda_kernels::grid_for(total), 256, 0, s>>>(x, g, dy, argmax, dx, accumulate);
  cuda_kernels::check_launch("cuda_max_pool2d_backward: kernel launch");
}
template <class T>
void cuda_max_pool2d_backward(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, index_t xs_n,
                              index_t xs_c, index_t xs_h, index_t xs_w, int kernel, int stride, int pad, const T* dy, T* dx,
                              const std::int32_t* argmax = nullptr, bool accumulate = false) {
  if (stride < 1) throw shape_error("tessera: cuda_max_pool2d_backward: needs stride >= 1 (stride " + std::to_string(stride) + ")");
  cuda_max_pool2d_backward<T>(s, x, N, C, H, W, xs_n, xs_c, xs_h, xs_w,
                              pool2d_options{.kernel = kernel, .stride = stride, .padding = pad}, dy, dx, argmax, accumulate);
}

/// dx (N x C x H x W, contiguous) = gradient of average pooling from dy (N x C x OH x OW, contiguous): each dy
/// spread as dy / divisor over the real cells of its window. Added to dx when `accumulate`.
template <class T>
void cuda_avg_pool2d_backward(cudaStream_t s, index_t N, index_t C, index_t H, index_t W, const pool2d_options& o, const T* dy,
                              T* dx, bool accumulate = false) {
  static_assert(std::is_floating_point_v<T>, "tessera: cuda_avg_pool2d needs a floating-point type");
  namespace pd = cuda_kernels::pool_detail;
  if (o.dilation != hw{1}) throw std::invalid_argument("tessera: cuda_avg_pool2d_backward: average pooling has no dilation");
  const auto g = pd::make_geometry("cuda_avg_pool2d_backward", N, C, H, W, C * H * W, H * W, W, 1, o);
  const index_t total = N * C * H * W;
  if (total == 0) return;
  pd::avg_pool_backward_kernel<T><<<cuda_kernels::grid_for(total), 256, 0, s>>>(g, dy, dx, accumulate);
  cuda_kernels::check_launch("cuda_avg_pool2d_backward: kernel launch");
}
template <class T>
void cuda_avg_pool2d_backward(cudaStream_t s, index_t N, index_t C, index_t H, index_t W, int kernel, int stride, int pad,
                              const T* dy, T* dx, bool accumulate = false) {
  if (stride < 1) throw shape_error("tessera: cuda_avg_pool2d_backward: needs stride >= 1 (stride " + std::to_string(stride) + ")");
  cuda_avg_pool2d_backward<T>(s, N, C, H, W, pool2d_options{.kernel = kernel, .stride = stride, .padding = pad}, dy, dx, accumulate);
}

}  // namespace tessera
#endif  // __CUDACC__
