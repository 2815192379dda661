// cuda_nn_ops: the nn part of backend<cuda> (see kernels/cuda/backend.hpp): the kernels of the layer operations of
// autodiff/nn_ops.hpp on the device, with the same names and argument lists as host_nn_ops (kernels/cpu/nn.hpp):
//   activation_backward     dz = g * act'(y) and the bias gradient in one kernel (a block per channel)
//   conv2d_backward_weight / _data   cuDNN's backward filter / data / bias, accumulating through cuDNN's beta
//   max_pool2d_backward / avg_pool2d_backward (kernels/cuda/pool.hpp), max_pool2x2_relu_backward,
//   adaptive_avg_pool2d / _backward (kernels/cuda/adaptive_pool.hpp)
//   softmax_rows / softmax_rows_backward: one warp per row; cross_entropy / cross_entropy_backward: one warp per row
//     for the log-sum-exp and the row's loss, one block for the mean
//   dropout_mask            drawn on the host by draw_dropout_mask (kernels/backend.hpp: the same mask for a seed
//                           under every policy), then copied over
//   batch_norm_stats / _apply / _backward: a block per channel, sums in double
//   add_reduced             a broadcast gradient folded back: a block (or a thread) per gradient element
// Every kernel runs on tessera's stream (cuda_detail::stream()). Reductions use fixed-order trees (no atomics): a
// step's result is the same every time it runs. Compiled only by nvcc.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/adaptive_pool.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/memory.hpp"
#include "tessera/kernels/cuda/pool.hpp"
#if __has_include(<cudnn.h>)
#include "tessera/kernels/cuda/conv.hpp"
#endif

namespace tessera::detail {

namespace cuda_nn {

inline constexpr int block = 256;  // every kernel below runs 256-thread blocks (block_sum depends on it)

using cuda_kernels::dexp;
template <class T>
__device__ __forceinline__ T dlog(T v) {
  if constexpr (std::is_same_v<T, float>) return ::logf(v);
  else return ::log(v);
}

/// The sum of v over the block (256 threads, all of which must call it); every thread gets the result.
template <class A>
__device__ A block_sum(A v, A* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = block / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const A r = sh[0];
  __syncthreads();
  return r;
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A>
__device__ __forceinline__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) {
    const A w = __shfl_xor_sync(0xffffffffu, v, o);
    v = v < w ? w : v;
  }
  return v;
}

/// g * act'(y) from the activation's output y (as detail::activation_derivative on the host).
template <activation A, class T>
__device__ __forceinline__ T act_grad(T g, T y) {
  if constexpr (A == activation::relu) return y <= T(0) ? T(0) : g;  // threshold_backward: NaN y passes g
  else if constexpr (A == activation::tanh) return g * (T(1) - y * y);
  else if constexpr (A == activation::sigmoid) return g * y * (T(1) - y);
  else return g;
}

/// dz = g * act'(y), elementwise (no bias gradient wanted).
template <activation A, class T>
__global__ void act_backward_kernel(const T* g, const T* y, T* dz, index_t n) {
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) dz[i] = act_grad<A>(g[i], y[i]);
}

/// Over [outer, C, inner]: dz = g * act'(y) (when dz is not null; may be g itself) and db[c] (+)= the sum of the
/// channel's dz. A block per channel; with A == none and dz null it is the channel sum of g (a bias gradient).
template <activation A, class T>
__global__ void act_backward_channel_kernel(const T* g, const T* y, T* dz, T* db, index_t outer, index_t C, index_t inner,
                                            bool accumulate) {
  __shared__ T sh[block];
  const index_t per = outer * inner;
  for (index_t c = blockIdx.x; c < C; c += gridDim.x) {
    T s = T(0);
    for (index_t m = threadIdx.x; m < per; m += blockDim.x) {
      const index_t o = m / inner, i = m - o * inner;
      const index_t k = (o * C + c) * inner + i;
      const T d = act_grad<A>(g[k], y ? y[k] : T(0));
      if (dz) dz[k] = d;
      s += d;
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) db[c] = accumulate ? db[c] + s : s;
  }
}

/// A row's maximum m and ls = log(sum(exp(z - m))), kept apart: log-softmax is (z - m) - ls, rounding at the size
/// of the result rather than of the largest logit (as the host and PyTorch).
template <class T>
struct row_lse {
  T m, ls, s;  ///< s = sum(exp(z - m)), for softmax as exp(z - m) / s
};
/// The log-sum-exp of one row, computed by one warp (every lane gets it).
template <class T>
__device__ row_lse<T> warp_row_lse(const T* zr, index_t C, int lane) {
  T m = -std::numeric_limits<T>::infinity();
  for (index_t j = lane; j < C; j += 32) m = m < zr[j] ? zr[j] : m;
  m = warp_max(m);
  T s = T(0);
  for (index_t j = lane; j < C; j += 32) s += dexp(zr[j] - m);
  s = warp_sum(s);
  return {m, dlog(s), s};
}

/// y = log_softmax(z) (Log) or softmax(z) along rows of z [B, C]: one warp per row.
template <class T, bool Log>
__global__ void softmax_rows_kernel(const T* z, T* y, index_t B, index_t C) {
  const int lane = int(threadIdx.x & 31u);
  const index_t warps = (index_t(gridDim.x) * blockDim.x) / 32;
  for (index_t r = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < B; r += warps) {
    const T* zr = z + r * C;
    const row_lse<T> l = warp_row_lse(zr, C, lane);
    for (index_t j = lane; j < C; j += 32) {
      const T d = zr[j] - l.m;
      y[r * C + j] = Log ? d - l.ls : dexp(d) / l.s;
    }
  }
}

/// gz (+)= the gradient through log_softmax (g - exp(y) sum(g)) or softmax (y (g - sum(g y))): one warp per row.
template <class T, bool Log>
__global__ void softmax_rows_backward_kernel(const T* g, const T* y, T* gz, index_t B, index_t C, bool accumulate) {
  const int lane = int(threadIdx.x & 31u);
  const index_t warps = (index_t(gridDim.x) * blockDim.x) / 32;
  for (index_t r = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < B; r += warps) {
    const T* gr = g + r * C;
    const T* yr = y + r * C;
    T s = T(0);
    for (index_t j = lane; j < C; j += 32) s += Log ? gr[j] : gr[j] * yr[j];
    s = warp_sum(s);
    for (index_t j = lane; j < C; j += 32) {
      const T d = Log ? gr[j] - dexp(yr[j]) * s : yr[j] * (gr[j] - s);
      T& o = gz[r * C + j];
      o = accumulate ? o + d : d;
    }
  }
}

/// Per row of z [B, C]: lse[r] = m, lse[B + r] = ls (see row_lse) and loss[r] = ls - (z[r][label[r]] - m) (one warp per row).
template <class T>
__global__ void cross_entropy_rows_kernel(const T* z, const index_t* labels, T* lse, T* loss, index_t B, index_t C) {
  const int lane = int(threadIdx.x & 31u);
  const index_t warps = (index_t(gridDim.x) * blockDim.x) / 32;
  for (index_t r = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < B; r += warps) {
    const row_lse<T> l = warp_row_lse(z + r * C, C, lane);
    if (lane == 0) {
      lse[r] = l.m;
      lse[B + r] = l.ls;
      loss[r] = l.ls - (z[r * C + labels[r]] - l.m);
    }
  }
}

/// out[0] = sum(v[0 .. n)) / n: one block.
template <class T>
__global__ void mean_kernel(const T* v, index_t n, T* out) {
  __shared__ T sh[block];
  T s = T(0);
  for (index_t i = threadIdx.x; i < n; i += blockDim.x) s += v[i];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) out[0] = s / T(n);
}

/// gz (+)= g / B * (softmax(z) - one_hot(label)), g a device scalar.
template <class T>
__global__ void cross_entropy_backward_kernel(const T* z, const T* lse, const index_t* labels, const T* g, T* gz,
                                              index_t B, index_t C, bool accumulate) {
  const T scale = g[0] / T(B);
  const index_t n = B * C, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const index_t r = i / C, j = i - r * C;
    const T d = scale * (dexp((z[i] - lse[r]) - lse[B + r]) - (j == labels[r] ? T(1) : T(0)));
    gz[i] = accumulate ? gz[i] + d : d;
  }
}

/// Per channel of x [N, C, HW]: the statistics to normalise with (the batch's in training, the running ones
/// otherwise), as mean[c] and invstd[c]; in training the running statistics are updated (unbiased variance).
template <class T>
__global__ void batch_norm_stats_kernel(const T* x, index_t N, index_t C, index_t HW, bool training, double momentum,
                                        double eps, T* running_mean, T* running_var, T* mean, T* invstd) {
  __shared__ double sh[block];
  const index_t M = N * HW;
  for (index_t c = blockIdx.x; c < C; c += gridDim.x) {
    T m, v;
    if (training && M > 0) {  // (an empty batch: the running statistics stay, and normalise nothing)
      double s = 0, s2 = 0;
      for (index_t k = threadIdx.x; k < M; k += blockDim.x) {
        const index_t n = k / HW, i = k - n * HW;
        const double t = x[(n * C + c) * HW + i];
        s += t;
        s2 += t * t;
      }
      s = block_sum(s, sh);
      s2 = block_sum(s2, sh);
      const double mu = s / double(M), var = ::fmax(0.0, s2 / double(M) - mu * mu);
      m = T(mu);
      v = T(var);
      if (threadIdx.x == 0) {
        running_mean[c] = T((1 - momentum) * running_mean[c] + momentum * mu);
        running_var[c] = T((1 - momentum) * running_var[c] + momentum * (M > 1 ? var * double(M) / double(M - 1) : var));
      }
    } else {
      m = running_mean[c];
      v = running_var[c];
    }
    if (threadIdx.x == 0) {
      mean[c] = m;
      invstd[c] = T(1.0 / ::sqrt(double(v) + eps));
    }
  }
}

/// y = gamma * (x - mean) * invstd + beta per channel, as a * x + b (the host's arithmetic).
template <class T>
__global__ void batch_norm_apply_kernel(const T* x, const T* gamma, const T* beta, const T* mean, const T* invstd, T* y,
                                        index_t total, index_t C, index_t HW) {
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t c = (i / HW) % C;
    const T a = gamma[c] * invstd[c];
    const T b = beta[c] - a * mean[c];
    y[i] = a * x[i] + b;
  }
}

/// Batch norm's backward, a block per channel: sum(g) and sum(g * xhat) in double, the gamma and beta gradients,
/// then dx for the channel's elements. Null outputs are skipped; each is added to when its flag says so.
template <class T>
__global__ void batch_norm_backward_kernel(const T* x, const T* g, const T* gamma, const T* mean, const T* invstd, T* dg,
                                           T* dbeta, T* dx, index_t N, index_t C, index_t HW, bool training, bool acc_g,
                                           bool acc_b, bool acc_x) {
  __shared__ double sh[block];
  const index_t M = N * HW;
  for (index_t c = blockIdx.x; c < C; c += gridDim.x) {
    const T mu = mean[c], is = invstd[c], gam = gamma[c];
    double sg = 0, sgx = 0;
    for (index_t k = threadIdx.x; k < M; k += blockDim.x) {
      const index_t n = k / HW, i = k - n * HW;
      const index_t q = (n * C + c) * HW + i;
      sg += g[q];
      sgx += double(g[q]) * double((x[q] - mu) * is);
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    if (threadIdx.x == 0) {
      if (dg) dg[c] = (acc_g ? dg[c] : T(0)) + T(sgx);
      if (dbeta) dbeta[c] = (acc_b ? dbeta[c] : T(0)) + T(sg);
    }
    if (dx) {
      const T mg = T(sg / double(M)), mgx = T(sgx / double(M));
      for (index_t k = threadIdx.x; k < M; k += blockDim.x) {
        const index_t n = k / HW, i = k - n * HW;
        const index_t q = (n * C + c) * HW + i;
        const T v = training ? gam * is * (g[q] - mg - (x[q] - mu) * is * mgx) : gam * is * g[q];
        dx[q] = acc_x ? dx[q] + v : v;
      }
    }
  }
}

/// How a broadcast gradient t (rank RT, contiguous) folds onto grad: the dims grad keeps (its elements, row-major)
/// and the dims it was broadcast along (summed), each with t's stride.
template <int RT>
struct fold_plan {
  static constexpr int cap = RT > 0 ? RT : 1;
  index_t kept_ext[cap], kept_ts[cap], red_ext[cap], red_ts[cap];
  int nk = 0, nr = 0;
  index_t kept_count = 1, reduced_count = 1;
};

template <int RT>
__device__ __forceinline__ index_t fold_offset(index_t q, const index_t* ext, const index_t* ts, int n) {
  index_t off = 0;
  for (int k = n - 1; k >= 0; --k) {
    const index_t e = ext[k];
    off += (q % e) * ts[k];
    q /= e;
  }
  return off;
}

/// grad[o] += the sum of t over the broadcast positions of element o: a block per element (long sums).
template <class T, int RT>
__global__ void fold_block_kernel(T* grad, const T* t, fold_plan<RT> p) {
  __shared__ T sh[block];
  for (index_t o = blockIdx.x; o < p.kept_count; o += gridDim.x) {
    const index_t base = fold_offset<RT>(o, p.kept_ext, p.kept_ts, p.nk);
    T s = T(0);
    for (index_t m = threadIdx.x; m < p.reduced_count; m += blockDim.x) s += t[base + fold_offset<RT>(m, p.red_ext, p.red_ts, p.nr)];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) grad[o] += s;
  }
}
/// The same with a thread per element (short sums over many elements).
template <class T, int RT>
__global__ void fold_thread_kernel(T* grad, const T* t, fold_plan<RT> p) {
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t o = index_t(blockIdx.x) * blockDim.x + threadIdx.x; o < p.kept_count; o += step) {
    const index_t base = fold_offset<RT>(o, p.kept_ext, p.kept_ts, p.nk);
    T s = T(0);
    for (index_t m = 0; m < p.reduced_count; ++m) s += t[base + fold_offset<RT>(m, p.red_ext, p.red_ts, p.nr)];
    grad[o] += s;
  }
}


/// Blocks for a kernel with one block per item (channels, gradient elements), at least one.
inline unsigned blocks_for_items(index_t items) {
  return unsigned(items < 1 ? 1 : (items < 65535 ? items : 65535));
}
/// Blocks for one warp per row.
inline unsigned blocks_for_rows(index_t rows) { return tessera::cuda_kernels::grid_for(rows * 32, block); }

inline cudaStream_t stream() { return tessera::cuda_detail::stream(); }

/// A device buffer of n elements of T, freed at the end of its scope (cudaFree waits for the queued work reading it).
template <class T>
struct scratch {
  T* p;
  explicit scratch(index_t n) : p(n > 0 ? memory<cuda>::allocate<T>(std::size_t(n)) : nullptr) {}
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() {
    if (p) memory<cuda>::deallocate(p);
  }
};

#if __has_include(<cudnn.h>)
inline constexpr bool have_cudnn = true;
#else
inline constexpr bool have_cudnn = false;
#endif

inline void require_cudnn(const char* who) {
  if (!have_cudnn)
    throw device_error(std::string("tessera: ") + who +
                       " on the cuda policy needs cuDNN (cudnn.h was not found when this file was compiled)");
}

}  // namespace cuda_nn

/// The nn part of backend<cuda>.
struct cuda_nn_ops {
  /// dz = g * act'(y) over [outer, C, inner] and, when db is not null, db[c] (+)= the channel sums of dz, in one
  /// kernel. Returns whether dz was written (no activation: dz is g and is left alone; db is still computed).
  template <class T>
  static bool activation_backward(const T* g, const T* y, T* dz, T* db, bool acc_b, index_t outer, index_t C, index_t inner,
                                  activation act) {
    namespace k = cuda_nn;
    const index_t n = outer * C * inner;
    auto run = [&](auto A) {
      constexpr activation a = decltype(A)::value;
      if (db) {
        if (C == 0) return;
        k::act_backward_channel_kernel<a, T><<<k::blocks_for_items(C), k::block, 0, k::stream()>>>(
            g, a == activation::none ? nullptr : y, a == activation::none ? nullptr : dz, db, outer, C, inner, acc_b);
      } else {
        if (a == activation::none || n == 0) return;
        k::act_backward_kernel<a, T><<<tessera::cuda_kernels::grid_for(n, k::block), k::block, 0, k::stream()>>>(g, y, dz, n);
      }
      tessera::cuda_kernels::check_launch("tessera: autodiff: activation backward kernel launch");
    };
    switch (act) {
      case activation::none: run(std::integral_constant<activation, activation::none>{}); return false;
      case activation::relu: run(std::integral_constant<activation, activation::relu>{}); break;
      case activation::tanh: run(std::integral_constant<activation, activation::tanh>{}); break;
      case activation::sigmoid: run(std::integral_constant<activation, activation::sigmoid>{}); break;
    }
    return true;
  }

  /// dw (+)= the convolution's weight gradient from dz and x, db (+)= its bias gradient (cuDNN); either may be null.
  template <class T>
  static void conv2d_backward_weight(const conv_geometry& geo, const T* x, const T* dz, T* dw, bool acc_w, T* db, bool acc_b) {
    cuda_nn::require_cudnn("ad::conv2d");
#if __has_include(<cudnn.h>)
    cudaStream_t s = cuda_nn::stream();
    if (db) tessera::cuda_conv2d_backward_bias<T>(s, dz, geo.N, geo.K, geo.OH, geo.OW, db, acc_b);
    if (dw)
      tessera::cuda_conv2d_backward_filter<T>(s, x, geo.N, geo.C, geo.H, geo.W, dz, geo.K, geo.R, geo.S, geo.stride, geo.pad,
                                              geo.dilation, int(geo.groups), dw, acc_w);
#else
    (void)geo, (void)x, (void)dz, (void)dw, (void)acc_w, (void)db, (void)acc_b;
#endif
  }
  /// dx (+)= the convolution's input gradient from dz and the weights w (cuDNN).
  template <class T>
  static void conv2d_backward_data(const conv_geometry& geo, const T* dz, const T* w, T* dx, bool acc_x) {
    cuda_nn::require_cudnn("ad::conv2d");
#if __has_include(<cudnn.h>)
    tessera::cuda_conv2d_backward_data<T>(cuda_nn::stream(), dz, geo.N, geo.C, geo.H, geo.W, w, geo.K, geo.R, geo.S,
                                          geo.stride, geo.pad, geo.dilation, int(geo.groups), dx, acc_x);
#else
    (void)geo, (void)dz, (void)w, (void)dx, (void)acc_x;
#endif
  }

  /// dx (+)= the gradient of max pooling over x: each output's gradient to its window's winner (recomputed from x).
  template <class T>
  static void max_pool2d_backward(const pool2d_geometry& pg, const T* x, const T* g, T* dx, bool acc) {
    tessera::cuda_max_pool2d_backward<T>(cuda_nn::stream(), x, pg.N, pg.C, pg.H, pg.W, pg.C * pg.H * pg.W, pg.H * pg.W, pg.W, 1,
                                         options_of(pg), g, dx, nullptr, acc);
  }
  /// dx (+)= the gradient of average pooling (x unused).
  template <class T>
  static void avg_pool2d_backward(const pool2d_geometry& pg, const T*, const T* g, T* dx, bool acc) {
    tessera::cuda_avg_pool2d_backward<T>(cuda_nn::stream(), pg.N, pg.C, pg.H, pg.W, options_of(pg), g, dx, acc);
  }
  /// The pooling options a geometry describes.
  static pool2d_options options_of(const pool2d_geometry& pg) {
    return {.kernel = pg.K, .stride = pg.S, .padding = pg.pad, .dilation = pg.dil, .ceil_mode = pg.ceil_mode,
            .count_include_pad = pg.count_include_pad};
  }
  /// y [N, C, OH, OW] (contiguous) = the adaptive average pooling of x [N, C, H, W] (strides xs).
  template <class T>
  static void adaptive_avg_pool2d(const pool2d_geometry& pg, const T* x, const index_t* xs, T* y) {
    tessera::cuda_adaptive_avg_pool2d<T>(cuda_nn::stream(), x, pg.N, pg.C, pg.H, pg.W, xs[0], xs[1], xs[2], xs[3], pg.OH, pg.OW, y);
  }
  /// dx (+)= the gradient of adaptive average pooling.
  template <class T>
  static void adaptive_avg_pool2d_backward(const pool2d_geometry& pg, const T* g, T* dx, bool acc) {
    tessera::cuda_adaptive_avg_pool2d_backward<T>(cuda_nn::stream(), g, pg.N, pg.C, pg.H, pg.W, pg.OH, pg.OW, dx, acc);
  }
  /// The backward of max_pool2d<2>(y) with y = relu(z): the pooled gradient routed to each window's winner, then
  /// ReLU's mask (a winner of value <= 0 passed nothing back) and db (+)= the channel sums, in place in one kernel.
  template <class T>
  static void max_pool2x2_relu_backward(const pool2d_geometry& pg, const T* y, const T* g, T* dz, T* db, bool acc_b) {
    const pool2d_geometry p2{pg.N, pg.C, pg.H, pg.W, pg.OH, pg.OW, 2, 2, 0};
    max_pool2d_backward<T>(p2, y, g, dz, false);
    activation_backward<T>(dz, y, dz, db, acc_b, pg.N, pg.C, pg.H * pg.W, activation::relu);
  }

  /// y = log_softmax (Log) or softmax of each row of z [B, C]: one warp per row.
  template <bool Log, class T>
  static void softmax_rows(const T* z, T* y, index_t B, index_t C) {
    namespace k = cuda_nn;
    if (B == 0 || C == 0) return;
    k::softmax_rows_kernel<T, Log><<<k::blocks_for_rows(B), k::block, 0, k::stream()>>>(z, y, B, C);
    tessera::cuda_kernels::check_launch("tessera: softmax kernel launch");
  }
  /// gz (+)= the gradient through log_softmax or softmax, y the forward's output: one warp per row.
  template <bool Log, class T>
  static void softmax_rows_backward(const T* g, const T* y, T* gz, index_t B, index_t C, bool acc) {
    namespace k = cuda_nn;
    if (B == 0 || C == 0) return;
    k::softmax_rows_backward_kernel<T, Log><<<k::blocks_for_rows(B), k::block, 0, k::stream()>>>(g, y, gz, B, C, acc);
    tessera::cuda_kernels::check_launch("tessera: softmax backward kernel launch");
  }

  /// loss[0] = the mean over the rows of z [B, C] of -log(softmax(z)[label]) (labels on the device, checked); lse
  /// keeps each row's maximum (lse[0, B)) and log-sum (lse[B, 2B)) for the backward.
  template <class T>
  static void cross_entropy(const T* z, const index_t* labels, T* lse, T* loss, index_t B, index_t C) {
    namespace k = cuda_nn;
    cudaStream_t s = k::stream();
    k::scratch<T> rows(B);
    if (B > 0) {
      k::cross_entropy_rows_kernel<T><<<k::blocks_for_rows(B), k::block, 0, s>>>(z, labels, lse, rows.p, B, C);
      tessera::cuda_kernels::check_launch("tessera: cross_entropy kernel launch");
    }
    k::mean_kernel<T><<<1, k::block, 0, s>>>(rows.p, B, loss);  // B = 0: 0 / 0, as the host
    tessera::cuda_kernels::check_launch("tessera: cross_entropy mean kernel launch");
  }
  /// gz (+)= g[0] / B * (softmax(z) - one_hot(label)), g a device scalar.
  template <class T>
  static void cross_entropy_backward(const T* z, const T* lse, const index_t* labels, const T* g, T* gz, index_t B, index_t C,
                                     bool acc) {
    namespace k = cuda_nn;
    if (B * C == 0) return;
    k::cross_entropy_backward_kernel<T><<<tessera::cuda_kernels::grid_for(B * C, k::block), k::block, 0, k::stream()>>>(
        z, lse, labels, g, gz, B, C, acc);
    tessera::cuda_kernels::check_launch("tessera: cross_entropy backward kernel launch");
  }

  /// An inverted-dropout mask for n elements: drawn on the host from rng in element order (draw_dropout_mask, as
  /// every policy), then copied to m.
  template <class T>
  static void dropout_mask(T* m, index_t n, double p, Rng& rng) {
    std::vector<T> host(static_cast<std::size_t>(n));
    detail::draw_dropout_mask(host.data(), n, p, rng);
    if (n > 0) memory<cuda>::copy_to_device(m, host.data(), std::size_t(n));
  }

  /// Per channel of x [N, C, HW]: mean[c] and invstd[c] to normalise with (the batch's in training, running ones
  /// otherwise); in training the running statistics are updated on the device. A block per channel.
  template <class T>
  static void batch_norm_stats(const T* x, index_t N, index_t C, index_t HW, bool training, double momentum, double eps,
                               T* running_mean, T* running_var, T* mean, T* invstd) {
    namespace k = cuda_nn;
    if (C == 0) return;
    k::batch_norm_stats_kernel<T><<<k::blocks_for_items(C), k::block, 0, k::stream()>>>(x, N, C, HW, training, momentum, eps,
                                                                                          running_mean, running_var, mean, invstd);
    tessera::cuda_kernels::check_launch("tessera: batch_norm2d statistics kernel launch");
  }
  /// y = gamma * (x - mean) * invstd + beta per channel, as a * x + b.
  template <class T>
  static void batch_norm_apply(const T* x, const T* gamma, const T* beta, const T* mean, const T* invstd, T* y, index_t N,
                               index_t C, index_t HW) {
    namespace k = cuda_nn;
    const index_t total = N * C * HW;
    if (total == 0) return;
    k::batch_norm_apply_kernel<T><<<tessera::cuda_kernels::grid_for(total, k::block), k::block, 0, k::stream()>>>(
        x, gamma, beta, mean, invstd, y, total, C, HW);
    tessera::cuda_kernels::check_launch("tessera: batch_norm2d kernel launch");
  }
  /// Batch norm's backward, a block per channel (null outputs skipped; each added to when its flag says so).
  template <class T>
  static void batch_norm_backward(const T* x, const T* g, const T* gamma, const T* mean, const T* invstd, T* dg, T* dbeta, T* dx,
                                  index_t N, index_t C, index_t HW, bool training, bool acc_g, bool acc_b, bool acc_x) {
    namespace k = cuda_nn;
    if (C == 0 || (!dg && !dbeta && !dx)) return;
    k::batch_norm_backward_kernel<T><<<k::blocks_for_items(C), k::block, 0, k::stream()>>>(
        x, g, gamma, mean, invstd, dg, dbeta, dx, N, C, HW, training, acc_g, acc_b, acc_x);
    tessera::cuda_kernels::check_launch("tessera: batch_norm2d backward kernel launch");
  }

  /// grad (dims gd) += t (dims td, contiguous) summed down to grad's shape (t's dims broadcast from grad's, aligned
  /// right): a block per gradient element for long sums, a thread per element for short ones over many.
  template <class T, std::size_t R, std::size_t RT>
  static void add_reduced(T* g, const std::array<index_t, R>& gd, const T* src, const std::array<index_t, RT>& td) {
    static_assert(R <= RT);
    namespace k = cuda_nn;
    constexpr int r = int(R), rt = int(RT);
    index_t gn = 1, tn = 1;
    for (int i = 0; i < r; ++i) gn *= gd[std::size_t(i)];
    for (int i = 0; i < rt; ++i) tn *= td[std::size_t(i)];
    if (gn == 0 || tn == 0) return;
    const auto ts = tessera::contiguous_strides(td);
    k::fold_plan<rt> p;
    for (int i = 0; i < rt; ++i) {
      const bool kept = i >= rt - r && gd[std::size_t(i - (rt - r))] == td[std::size_t(i)];
      if (kept) {
        p.kept_ext[p.nk] = td[std::size_t(i)];
        p.kept_ts[p.nk++] = ts[std::size_t(i)];
        p.kept_count *= td[std::size_t(i)];
      } else {
        p.red_ext[p.nr] = td[std::size_t(i)];
        p.red_ts[p.nr++] = ts[std::size_t(i)];
        p.reduced_count *= td[std::size_t(i)];
      }
    }
    if (p.kept_count != gn)
      throw shape_error("tessera: autodiff: a gradient " + tessera::detail::format_dims(td) + " does not fold onto " +
                        tessera::detail::format_dims(gd));
    if (p.reduced_count >= 64 || p.kept_count < 4096) {
      k::fold_block_kernel<T, rt><<<k::blocks_for_items(p.kept_count), k::block, 0, k::stream()>>>(g, src, p);
    } else {
      k::fold_thread_kernel<T, rt>
          <<<tessera::cuda_kernels::grid_for(p.kept_count, k::block), k::block, 0, k::stream()>>>(g, src, p);
    }
    tessera::cuda_kernels::check_launch("tessera: autodiff: broadcast gradient kernel launch");
  }
};

}  // namespace tessera::detail
#endif  // __CUDACC__
