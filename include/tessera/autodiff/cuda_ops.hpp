// The differentiable operations of autodiff/ops.hpp and autodiff/nn_ops.hpp on the cuda policy: forward and backward
// as cuBLASLt / cuDNN calls and small kernels of tessera's own, all on tessera's stream (cuda_detail::stream()).
// Compiled only by nvcc: nn_ops.hpp includes this file at its end under __CUDACC__ (and ops.hpp includes nn_ops.hpp
// there), and each operation there dispatches here with `if constexpr (P::on_device)` through device_ops<cuda>.
//
//   linear           cuda_gemm with bias / ReLU as cuBLASLt's epilogue (tanh, sigmoid: one elementwise pass after);
//                    backward: dz = g * act'(y) and the bias gradient in one kernel (a block per feature), then
//                    dx = dz W and dW = dz^T x as two GEMMs that accumulate straight into the gradients (beta = 1).
//   conv2d           cuda_conv2d (cuDNN, bias + ReLU fused); backward: the same dz / bias kernel, then
//                    cuda_conv2d_backward_filter / _data accumulating (cuDNN's beta = 1); the bias through
//                    cuda_conv2d_backward_bias when no activation kernel runs.
//   conv2d_relu_maxpool2   the convolution with bias + ReLU, then cuda_max_pool2d keeping each window's winner;
//                    backward: cuda_max_pool2d_backward from the winners, ReLU's mask and the bias gradient in one
//                    kernel, then the convolution's two products.
//   max/avg_pool2d   cuda_max_pool2d (winners kept for the backward) / cuda_avg_pool2d and their backward kernels.
//   log_softmax, softmax   one warp per row (max, sum of exponentials, log-sum-exp), forward and backward.
//   cross_entropy    labels validated on the host (the same errors as the host) and copied to the device; one warp per
//                    row for the log-sum-exp and the row's loss, one block for the mean; backward one kernel.
//   dropout          the mask drawn on the host from the same Rng in the same order as every other policy (so a
//                    seed gives the same mask on the CPU and the GPU) and copied over; then generic expressions.
//   batch_norm2d     a block per channel: statistics in double (running ones updated on the device), the normalising
//                    pass, and the backward (sums in double, then dx) in one kernel per channel.
//   add_reduced      (ops.hpp: the gradient of a broadcast) a block per gradient element reducing in a fixed order.
// mse_loss, sum, mean, elementwise arithmetic, activations, matmul, reshape and transpose need nothing here: their
// generic expressions run as the cuda policy's kernels.
//
// Reductions use fixed-order trees (no atomics): a step's result is the same every time it runs.
// Temporaries are device tensors freed when the backward returns: cudaFree waits for the queued work that reads them.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/autodiff/nn_ops.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/gemm.hpp"
#include "tessera/kernels/cuda/pool.hpp"
#include "tessera/policy/cuda.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera::ad {

namespace cuda_ad {

using dev = tessera::cuda;
template <class T, int R>
using dtensor = Tensor<T, dyn_shape_t<R>, dev>;

inline cudaStream_t stream() { return tessera::cuda_detail::stream(); }

namespace kernels {

inline constexpr int block = 256;  // every kernel below runs 256-thread blocks (block_sum depends on it)

template <class T>
__device__ __forceinline__ T dexp(T v) {
  if constexpr (std::is_same_v<T, float>) return ::expf(v);
  else return ::exp(v);
}
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
__global__ void cross_entropy_rows_kernel(const T* z, const std::int32_t* labels, T* lse, T* loss, index_t B, index_t C) {
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
__global__ void cross_entropy_backward_kernel(const T* z, const T* lse, const std::int32_t* labels, const T* g, T* gz,
                                              index_t B, index_t C, bool accumulate) {
  const T scale = g[0] / T(B);
  const index_t n = B * C, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const index_t r = i / C, j = i - r * C;
    const T d = scale * (dexp((z[i] - lse[r]) - lse[B + r]) - (j == index_t(labels[r]) ? T(1) : T(0)));
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

}  // namespace kernels

/// Blocks for a kernel with one block per item (channels, gradient elements), at least one.
inline unsigned blocks_for_items(index_t items) {
  return unsigned(items < 1 ? 1 : (items < 65535 ? items : 65535));
}
/// Blocks for one warp per row.
inline unsigned blocks_for_rows(index_t rows) { return tessera::cuda_kernels::grid_for(rows * 32, kernels::block); }

/// grad += t summed down to grad's shape (t's dims broadcast from grad's, aligned right); both contiguous.
template <class G, class Src>
void add_reduced(G& grad, const Src& t) {
  using T = typename G::value_type;
  constexpr int R = G::rank, RT = Src::rank;
  static_assert(R <= RT);
  if (grad.size() == 0 || t.size() == 0) return;
  const auto& gd = grad.dims();
  const auto& td = t.dims();
  const auto ts = tessera::contiguous_strides(td);
  kernels::fold_plan<RT> p;
  for (int i = 0; i < RT; ++i) {
    const bool kept = i >= RT - R && gd[i - (RT - R)] == td[i];
    if (kept) {
      p.kept_ext[p.nk] = td[i];
      p.kept_ts[p.nk++] = ts[i];
      p.kept_count *= td[i];
    } else {
      p.red_ext[p.nr] = td[i];
      p.red_ts[p.nr++] = ts[i];
      p.reduced_count *= td[i];
    }
  }
  if (p.kept_count != grad.size())
    throw shape_error("tessera: autodiff: a gradient " + tessera::detail::format_dims(td) + " does not fold onto " +
                      tessera::detail::format_dims(gd));
  if (p.reduced_count >= 64 || p.kept_count < 4096) {
    kernels::fold_block_kernel<T, RT><<<blocks_for_items(p.kept_count), kernels::block, 0, stream()>>>(grad.data(), t.data(), p);
  } else {
    kernels::fold_thread_kernel<T, RT>
        <<<tessera::cuda_kernels::grid_for(p.kept_count, kernels::block), kernels::block, 0, stream()>>>(grad.data(), t.data(), p);
  }
  tessera::cuda_kernels::check_launch("tessera: autodiff: broadcast gradient kernel launch");
}

/// The gradient buffer of a Var that needs one (fresh: not zeroed, `accumulate` false), or null.
template <class V>
typename V::value_type* grad_of(const V& v, bool& accumulate) {
  accumulate = false;
  if (!v.defined() || !v.requires_grad()) return nullptr;
  return ad::detail::fresh_or_grad(v, accumulate).data();
}

/// dz = g * act'(y) over [outer, C, inner] and, when db is not null, db[c] (+)= the channel sums of dz, in one
/// kernel. Returns false when nothing was written to dz (no activation: dz is g; db is still computed).
template <class T>
bool activation_backward(const T* g, const T* y, T* dz, T* db, bool acc_b, index_t outer, index_t C, index_t inner,
                         activation act) {
  const index_t n = outer * C * inner;
  auto run = [&](auto A) {
    constexpr activation a = decltype(A)::value;
    if (db) {
      if (C == 0) return;
      kernels::act_backward_channel_kernel<a, T>
          <<<blocks_for_items(C), kernels::block, 0, stream()>>>(g, a == activation::none ? nullptr : y,
                                                                 a == activation::none ? nullptr : dz, db, outer, C, inner, acc_b);
    } else {
      if (a == activation::none || n == 0) return;
      kernels::act_backward_kernel<a, T><<<tessera::cuda_kernels::grid_for(n, kernels::block), kernels::block, 0, stream()>>>(g, y, dz, n);
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

/// y = act(y) in place for the activations no library epilogue takes (one elementwise kernel).
template <class Tn>
void activate_in_place(Tn& y, activation act) {
  if (act == activation::tanh) y = tessera::tanh(y);
  else if (act == activation::sigmoid) y = tessera::sigmoid(y);
}

// ---- linear ----

template <class T>
Var<T, 2, dev> linear(const Var<T, 2, dev>& x, const Var<T, 2, dev>& W, const Var<T, 1, dev>& b, activation act) {
  const auto& xd = x.dims();
  const auto& wd = W.dims();
  if (xd[1] != wd[1])
    throw shape_error("tessera: linear: input " + tessera::detail::format_dims(xd) + " does not fit weights " +
                      tessera::detail::format_dims(wd) + " (in_features must equal the input's last extent)");
  const bool has_b = b.defined();
  if (has_b && b.dims()[0] != wd[0])
    throw shape_error("tessera: linear: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                      tessera::detail::format_dims(wd));
  using V = Var<T, 2, dev>;
  const index_t B = xd[0], I = xd[1], O = wd[0];
  typename V::tensor y(B, O);
  const bool relu = act == activation::relu;
  const gemm_epilogue epi = has_b ? (relu ? gemm_epilogue::bias_relu : gemm_epilogue::bias)
                                  : (relu ? gemm_epilogue::relu : gemm_epilogue::none);
  // y (B x O) = x (B x I, rows of I) times W^T (I x O: W's row stride I is W^T's column stride)
  tessera::cuda_gemm<T>(stream(), B, O, I, x.value().data(), I, 1, W.value().data(), 1, I, y.data(), O, epi,
                        has_b ? b.value().data() : nullptr);
  activate_in_place(y, act);
  auto back = [x, W, b, act](const auto& g, const auto& out) {
    const index_t B = out.dims()[0], O = out.dims()[1], I = x.dims()[1];
    bool acc_b = false;
    T* db = grad_of(b, acc_b);
    typename V::tensor dz_buf;
    const T* dz = g.data();
    if (act != activation::none) dz_buf = typename V::tensor(B, O);
    if (activation_backward<T>(g.data(), out.data(), dz_buf.data(), db, acc_b, B, O, 1, act)) dz = dz_buf.data();
    cudaStream_t s = stream();
    bool acc;
    if (T* gx = grad_of(x, acc))  // dx (B x I) = dz (B x O) W (O x I)
      tessera::cuda_gemm<T>(s, B, I, O, dz, O, 1, W.value().data(), I, 1, gx, I, gemm_epilogue::none, nullptr, 1, 0, 0, 0, acc);
    if (T* gw = grad_of(W, acc))  // dW (O x I) = dz^T (O x B: dz's row stride O is its column stride) x (B x I)
      tessera::cuda_gemm<T>(s, O, I, B, dz, 1, O, x.value().data(), I, 1, gw, I, gemm_epilogue::none, nullptr, 1, 0, 0, 0, acc);
  };
  if (has_b) return V::make(std::move(y), back, x, W, b);
  return V::make(std::move(y), back, x, W);
}

// ---- convolution ----

#if defined(TESSERA_HAVE_CUDNN)
inline constexpr bool have_cudnn = true;
#else
inline constexpr bool have_cudnn = false;
#endif

inline void require_cudnn(const char* who) {
  if (!have_cudnn)
    throw device_error(std::string("tessera: ") + who +
                       " on the cuda policy needs cuDNN (cudnn.h was not found when this file was compiled)");
}

/// act(conv2d(x, w) + b) into a new device tensor: cuDNN with bias and ReLU fused; tanh / sigmoid one pass after.
template <class T>
dtensor<T, 4> conv2d_forward(const Var<T, 4, dev>& x, const Var<T, 4, dev>& w, const Var<T, 1, dev>& b, conv2d_options opt,
                             activation act, tessera::detail::conv_geometry& geo) {
  auto node = tessera::conv2d(x.value(), w.value(), opt);  // checks the shapes
  geo = node.geometry();
  if (b.defined() && b.dims()[0] != geo.K)
    throw shape_error("tessera: conv2d: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                      tessera::detail::format_dims(w.dims()));
  require_cudnn("ad::conv2d");
  dtensor<T, 4> y(geo.N, geo.K, geo.OH, geo.OW);
#if defined(TESSERA_HAVE_CUDNN)
  tessera::cuda_conv2d<T>(stream(), x.value().data(), geo.N, geo.C, geo.H, geo.W, w.value().data(), geo.K, geo.R, geo.S,
                          int(geo.stride), int(geo.pad), int(geo.dilation), int(geo.groups),
                          b.defined() ? b.value().data() : nullptr, act == activation::relu, y.data());
#endif
  activate_in_place(y, act);
  return y;
}

/// The convolution's products from dz (the gradient at its output, activation applied): db (unless null), dw, dx,
/// each accumulated into its Var's gradient when that holds one already.
template <class T>
void conv2d_backward_from_dz(const tessera::detail::conv_geometry& geo, const Var<T, 4, dev>& x, const Var<T, 4, dev>& w,
                             T* db, bool acc_b, const T* dz) {
  require_cudnn("ad::conv2d");
#if defined(TESSERA_HAVE_CUDNN)
  cudaStream_t s = stream();
  if (db) tessera::cuda_conv2d_backward_bias<T>(s, dz, geo.N, geo.K, geo.OH, geo.OW, db, acc_b);
  bool acc;
  if (T* dw = grad_of(w, acc))
    tessera::cuda_conv2d_backward_filter<T>(s, x.value().data(), geo.N, geo.C, geo.H, geo.W, dz, geo.K, geo.R, geo.S,
                                            int(geo.stride), int(geo.pad), int(geo.dilation), int(geo.groups), dw, acc);
  if (T* dx = grad_of(x, acc))
    tessera::cuda_conv2d_backward_data<T>(s, dz, geo.N, geo.C, geo.H, geo.W, w.value().data(), geo.K, geo.R, geo.S,
                                          int(geo.stride), int(geo.pad), int(geo.dilation), int(geo.groups), dx, acc);
#else
  (void)geo, (void)x, (void)w, (void)db, (void)acc_b, (void)dz;
#endif
}

template <class T>
Var<T, 4, dev> conv2d(const Var<T, 4, dev>& x, const Var<T, 4, dev>& w, const Var<T, 1, dev>& b, conv2d_options opt,
                      activation act) {
  using V = Var<T, 4, dev>;
  tessera::detail::conv_geometry geo;
  typename V::tensor y = conv2d_forward(x, w, b, opt, act, geo);
  auto back = [x, w, b, act, geo](const auto& g, const auto& out) {
    bool acc_b = false;
    T* db = grad_of(b, acc_b);
    const T* dz = g.data();
    typename V::tensor dz_buf;
    if (act != activation::none) {  // dz and the bias gradient in one kernel
      dz_buf = typename V::tensor(out.dims());
      activation_backward<T>(g.data(), out.data(), dz_buf.data(), db, acc_b, geo.N, geo.K, geo.OH * geo.OW, act);
      dz = dz_buf.data();
      db = nullptr;
    }
    conv2d_backward_from_dz(geo, x, w, db, acc_b, dz);
  };
  if (b.defined()) return V::make(std::move(y), back, x, w, b);
  return V::make(std::move(y), back, x, w);
}

template <class T>
Var<T, 4, dev> conv2d_relu_maxpool2(const Var<T, 4, dev>& x, const Var<T, 4, dev>& w, const Var<T, 1, dev>& b,
                                    conv2d_options opt) {
  using V = Var<T, 4, dev>;
  tessera::detail::conv_geometry geo;
  auto y = std::make_shared<typename V::tensor>(conv2d_forward(x, w, b, opt, activation::relu, geo));
  const index_t PH = tessera::pool2d_out_extent(geo.OH, 2, 2, 0), PW = tessera::pool2d_out_extent(geo.OW, 2, 2, 0);
  if (geo.OH < 2 || geo.OW < 2)
    throw shape_error("tessera: conv2d_relu_maxpool2: the convolution's output " + std::to_string(geo.OH) + "x" +
                      std::to_string(geo.OW) + " is smaller than the 2x2 window");
  typename V::tensor pooled(geo.N, geo.K, PH, PW);
  auto winners = std::make_shared<dtensor<std::int32_t, 4>>(geo.N, geo.K, PH, PW);
  const index_t plane = geo.OH * geo.OW;
  tessera::cuda_max_pool2d<T>(stream(), y->data(), geo.N, geo.K, geo.OH, geo.OW, geo.K * plane, plane, geo.OW, 1, 2, 2, 0,
                              pooled.data(), winners->data());
  auto back = [x, w, b, geo, y, winners](const auto& g, const auto&) {
    bool acc_b = false;
    T* db = grad_of(b, acc_b);
    typename V::tensor dz(y->dims());
    const index_t plane = geo.OH * geo.OW;
    tessera::cuda_max_pool2d_backward<T>(stream(), y->data(), geo.N, geo.K, geo.OH, geo.OW, geo.K * plane, plane, geo.OW, 1, 2,
                                         2, 0, g.data(), dz.data(), winners->data(), false);
    // ReLU's mask (a winner of value 0 passed nothing back) and the bias gradient, in place in one kernel
    activation_backward<T>(dz.data(), y->data(), dz.data(), db, acc_b, geo.N, geo.K, plane, activation::relu);
    conv2d_backward_from_dz(geo, x, w, static_cast<T*>(nullptr), false, dz.data());
  };
  if (b.defined()) return V::make(std::move(pooled), back, x, w, b);
  return V::make(std::move(pooled), back, x, w);
}

// ---- pooling ----

template <bool Max, int K, int S, int Pd, class T>
Var<T, 4, dev> pool(const Var<T, 4, dev>& x) {
  using V = Var<T, 4, dev>;
  dims_t<4> od;
  if constexpr (Max) od = tessera::max_pool2d<K, S, Pd>(x.value()).expr_dims();  // the node checks the shapes
  else od = tessera::avg_pool2d<K, S, Pd>(x.value()).expr_dims();
  const auto d = x.dims();
  typename V::tensor y(od);
  std::shared_ptr<dtensor<std::int32_t, 4>> winners;
  const T* xp = x.value().data();
  if constexpr (Max) {
    winners = std::make_shared<dtensor<std::int32_t, 4>>(od);
    tessera::cuda_max_pool2d<T>(stream(), xp, d[0], d[1], d[2], d[3], d[1] * d[2] * d[3], d[2] * d[3], d[3], 1, K, S, Pd, y.data(),
                                winners->data());
  } else {
    tessera::cuda_avg_pool2d<T>(stream(), xp, d[0], d[1], d[2], d[3], d[1] * d[2] * d[3], d[2] * d[3], d[3], 1, K, S, Pd, y.data());
  }
  return V::make(std::move(y), [x, winners](const auto& g, const auto&) {
    bool acc;
    T* gx = grad_of(x, acc);
    if (!gx) return;
    const auto d = x.dims();
    if constexpr (Max)
      tessera::cuda_max_pool2d_backward<T>(stream(), x.value().data(), d[0], d[1], d[2], d[3], d[1] * d[2] * d[3], d[2] * d[3], d[3],
                                           1, K, S, Pd, g.data(), gx, winners->data(), acc);
    else
      tessera::cuda_avg_pool2d_backward<T>(stream(), d[0], d[1], d[2], d[3], K, S, Pd, g.data(), gx, acc);
  }, x);
}

// ---- softmax family and losses ----

template <bool Log, class T>
Var<T, 2, dev> softmax_rows(const Var<T, 2, dev>& z) {
  using V = Var<T, 2, dev>;
  const index_t B = z.dims()[0], C = z.dims()[1];
  typename V::tensor y(B, C);
  if (B > 0 && C > 0) {
    kernels::softmax_rows_kernel<T, Log><<<blocks_for_rows(B), kernels::block, 0, stream()>>>(z.value().data(), y.data(), B, C);
    tessera::cuda_kernels::check_launch("tessera: softmax kernel launch");
  }
  return V::make(std::move(y), [z, B, C](const auto& g, const auto& out) {
    bool acc;
    T* gz = grad_of(z, acc);
    if (!gz || B == 0 || C == 0) return;
    kernels::softmax_rows_backward_kernel<T, Log><<<blocks_for_rows(B), kernels::block, 0, stream()>>>(g.data(), out.data(), gz, B, C, acc);
    tessera::cuda_kernels::check_launch("tessera: softmax backward kernel launch");
  }, z);
}

template <class T, class L, class SL, class PL>
Var<T, 0, dev> cross_entropy(const Var<T, 2, dev>& logits, const Tensor<L, SL, PL>& labels) {
  static_assert(!PL::on_device, "tessera: cross_entropy reads the labels on the host (they are checked, then copied to the device)");
  const index_t B = logits.dims()[0], C = logits.dims()[1];
  if (labels.dims()[0] != B)
    throw shape_error("tessera: cross_entropy: logits " + tessera::detail::format_dims(logits.dims()) + " and labels " +
                      tessera::detail::format_dims(labels.dims()) + " have different batch sizes");
  if (C > index_t(0x7fffffff)) throw shape_error("tessera: cross_entropy: more than 2^31 - 1 classes on the cuda policy");
  std::vector<std::int32_t> lab(static_cast<std::size_t>(B));
  for (index_t i = 0; i < B; ++i) {
    const index_t l = index_t(labels.data()[i]);
    if (l < 0 || l >= C)
      throw std::out_of_range("tessera: cross_entropy: label " + std::to_string(l) + " at row " + std::to_string(i) +
                              " is outside [0, " + std::to_string(C) + ")");
    lab[std::size_t(i)] = std::int32_t(l);
  }
  auto dlab = std::make_shared<dtensor<std::int32_t, 1>>(lab, dims_t<1>{B});
  auto lse = std::make_shared<dtensor<T, 1>>(2 * B);  // each row's maximum, then each row's log-sum
  using V = Var<T, 0, dev>;
  typename V::tensor y;
  {
    dtensor<T, 1> rows(B);
    cudaStream_t s = stream();
    if (B > 0) {
      kernels::cross_entropy_rows_kernel<T><<<blocks_for_rows(B), kernels::block, 0, s>>>(logits.value().data(), dlab->data(),
                                                                                         lse->data(), rows.data(), B, C);
      tessera::cuda_kernels::check_launch("tessera: cross_entropy kernel launch");
    }
    kernels::mean_kernel<T><<<1, kernels::block, 0, s>>>(rows.data(), B, y.data());  // B = 0: 0 / 0, as the host
    tessera::cuda_kernels::check_launch("tessera: cross_entropy mean kernel launch");
  }
  return V::make(std::move(y), [logits, lse, dlab, B, C](const auto& g, const auto&) {
    bool acc;
    T* gz = grad_of(logits, acc);
    if (!gz || B * C == 0) return;
    kernels::cross_entropy_backward_kernel<T><<<tessera::cuda_kernels::grid_for(B * C, kernels::block), kernels::block, 0, stream()>>>(
        logits.value().data(), lse->data(), dlab->data(), g.data(), gz, B, C, acc);
    tessera::cuda_kernels::check_launch("tessera: cross_entropy backward kernel launch");
  }, logits);
}

template <class T, int R>
Var<T, R, dev> dropout(const Var<T, R, dev>& x, double p, Rng& rng, bool training) {
  if (!training || p == 0.0) return x;
  if (p < 0.0 || p >= 1.0) throw std::invalid_argument("tessera: dropout: p must be in [0, 1)");
  using V = Var<T, R, dev>;
  Tensor<T, dyn_shape_t<R>> host(x.dims());  // drawn on the host, then copied
  ad::detail::draw_dropout_mask(host.data(), host.size(), p, rng);
  auto mask = std::make_shared<typename V::tensor>(tessera::to<dev>(host));
  return V::make(typename V::tensor(x.value() * *mask), [x, mask](const auto& g) { ad::detail::accumulate(x, g * *mask); }, x);
}

template <class T, class S1>
Var<T, 4, dev> batch_norm2d(const Var<T, 4, dev>& x, const Var<T, 1, dev>& gamma, const Var<T, 1, dev>& beta,
                            Tensor<T, S1, dev>& running_mean, Tensor<T, S1, dev>& running_var, bool training, double momentum,
                            double eps) {
  const auto d = x.dims();
  const index_t N = d[0], C = d[1], HW = d[2] * d[3];
  if (gamma.dims()[0] != C || beta.dims()[0] != C || running_mean.dims()[0] != C || running_var.dims()[0] != C)
    throw shape_error("tessera: batch_norm2d: input " + tessera::detail::format_dims(d) + " has " + std::to_string(C) +
                      " channels but the parameters have " + tessera::detail::format_dims(gamma.dims()));
  using V = Var<T, 4, dev>;
  auto mean_ = std::make_shared<dtensor<T, 1>>(C);
  auto invstd = std::make_shared<dtensor<T, 1>>(C);
  typename V::tensor y(d);
  cudaStream_t s = stream();
  if (C > 0) {
    kernels::batch_norm_stats_kernel<T><<<blocks_for_items(C), kernels::block, 0, s>>>(
        x.value().data(), N, C, HW, training, momentum, eps, running_mean.data(), running_var.data(), mean_->data(), invstd->data());
    tessera::cuda_kernels::check_launch("tessera: batch_norm2d statistics kernel launch");
  }
  if (y.size() > 0) {
    kernels::batch_norm_apply_kernel<T><<<tessera::cuda_kernels::grid_for(y.size(), kernels::block), kernels::block, 0, s>>>(
        x.value().data(), gamma.value().data(), beta.value().data(), mean_->data(), invstd->data(), y.data(), y.size(), C, HW);
    tessera::cuda_kernels::check_launch("tessera: batch_norm2d kernel launch");
  }
  return V::make(std::move(y), [x, gamma, beta, mean_, invstd, training, N, C, HW](const auto& g, const auto&) {
    bool acc_g, acc_b, acc_x;
    T* dg = grad_of(gamma, acc_g);
    T* dbeta = grad_of(beta, acc_b);
    T* dx = grad_of(x, acc_x);
    if (C == 0 || (!dg && !dbeta && !dx)) return;
    kernels::batch_norm_backward_kernel<T><<<blocks_for_items(C), kernels::block, 0, stream()>>>(
        x.value().data(), g.data(), gamma.value().data(), mean_->data(), invstd->data(), dg, dbeta, dx, N, C, HW, training, acc_g,
        acc_b, acc_x);
    tessera::cuda_kernels::check_launch("tessera: batch_norm2d backward kernel launch");
  }, x, gamma, beta);
}

}  // namespace cuda_ad

/// The cuda policy's implementations of the operations (see the top of this file); ops.hpp and nn_ops.hpp call
/// these from `if constexpr (P::on_device)`.
template <>
struct device_ops<tessera::cuda> {
  template <class G, class Src>
  static void add_reduced(G& grad, const Src& t) { cuda_ad::add_reduced(grad, t); }
  template <class... A>
  static auto linear(const A&... a) { return cuda_ad::linear(a...); }
  template <class... A>
  static auto conv2d(const A&... a) { return cuda_ad::conv2d(a...); }
  template <class... A>
  static auto conv2d_relu_maxpool2(const A&... a) { return cuda_ad::conv2d_relu_maxpool2(a...); }
  template <bool Max, int K, int S, int Pd, class X>
  static auto pool(const X& x) { return cuda_ad::pool<Max, K, S, Pd>(x); }
  template <class X>
  static auto log_softmax(const X& z) { return cuda_ad::softmax_rows<true>(z); }
  template <class X>
  static auto softmax(const X& z) { return cuda_ad::softmax_rows<false>(z); }
  template <class X, class L>
  static auto cross_entropy(const X& logits, const L& labels) { return cuda_ad::cross_entropy(logits, labels); }
  template <class X>
  static auto dropout(const X& x, double p, Rng& rng, bool training) { return cuda_ad::dropout(x, p, rng, training); }
  template <class X, class Gm, class Bt, class RS>
  static auto batch_norm2d(const X& x, const Gm& gamma, const Bt& beta, RS& running_mean, RS& running_var, bool training,
                           double momentum, double eps) {
    return cuda_ad::batch_norm2d(x, gamma, beta, running_mean, running_var, training, momentum, eps);
  }
};

}  // namespace tessera::ad
#endif  // __CUDACC__
