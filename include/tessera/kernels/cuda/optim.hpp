// cuda_optim_ops: the optim part of backend<cuda> (see kernels/cuda/backend.hpp). Compiled only by nvcc. The SGD and
// Adam updates of host_optim_ops (kernels/cpu/optim.hpp), same names and arguments, one CUDA kernel per parameter on
// tessera's stream. Each is written with IEEE round-to-nearest operations that nvcc may not fuse into an FMA
// (__fmul_rn, __fadd_rn, ...): every element gets the arithmetic of the host loops exactly.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera::detail {

namespace cuda_optim_kernels {

/// IEEE operations rounded to nearest that nvcc never contracts into an FMA.
template <class T>
struct ieee;
template <>
struct ieee<float> {
  static __device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
  static __device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
  static __device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
  static __device__ __forceinline__ float sqrt(float a) { return __fsqrt_rn(a); }
};
template <>
struct ieee<double> {
  static __device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
  static __device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
  static __device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }
  static __device__ __forceinline__ double sqrt(double a) { return __dsqrt_rn(a); }
};

/// The host's sgd_plain_op / sgd_momentum_op, one element per thread.
template <class T>
__global__ void sgd_kernel(T* p, const T* g, T* buf, index_t n, sgd_args<T> a) {
  using F = ieee<T>;
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const T pi = p[i];
    T d = g[i];
    if (a.decay) d = F::add(d, F::mul(a.wd, pi));
    if (buf) {
      const T b = a.first ? d : F::add(F::mul(buf[i], a.momentum), F::mul(a.one_minus_dampening, d));
      buf[i] = b;
      d = a.nesterov ? F::add(d, F::mul(a.momentum, b)) : b;
    }
    p[i] = F::add(pi, F::mul(a.neg_lr, d));
  }
}

/// The host's adam_op, one element per thread.
template <class T>
__global__ void adam_kernel(T* p, const T* g, T* m, T* v, index_t n, adam_args<T> a) {
  using F = ieee<T>;
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    T pi = p[i], gi = g[i];
    if (a.decay == adam_decay::decoupled) pi = F::mul(pi, a.keep);
    if (a.decay == adam_decay::l2) gi = F::add(gi, F::mul(a.wd, pi));
    const T mi = F::add(F::mul(m[i], a.beta1), F::mul(a.one_minus_beta1, gi));
    const T vi = F::add(F::mul(v[i], a.beta2), F::mul(F::mul(a.one_minus_beta2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    const T denom = F::add(F::div(F::sqrt(vi), a.bias_correction2_sqrt), a.eps);
    p[i] = F::add(pi, F::div(F::mul(a.neg_step_size, mi), denom));
  }
}

}  // namespace cuda_optim_kernels

struct cuda_optim_ops {
  /// One SGD update of n elements (see sgd_args); buf: the momentum buffer, or null without momentum.
  template <class T>
  static void sgd_update(T* p, const T* g, T* buf, index_t n, const sgd_args<T>& a) {
    if (n <= 0) return;
    cuda_optim_kernels::sgd_kernel<T><<<cuda_kernels::grid_for(n), 256, 0, cuda_detail::stream()>>>(p, g, buf, n, a);
    cuda_kernels::check_launch("tessera: optimizer: SGD kernel launch");
  }
  /// One Adam / AdamW update of n elements (see adam_args).
  template <class T>
  static void adam_update(T* p, const T* g, T* m, T* v, index_t n, const adam_args<T>& a) {
    if (n <= 0) return;
    cuda_optim_kernels::adam_kernel<T><<<cuda_kernels::grid_for(n), 256, 0, cuda_detail::stream()>>>(p, g, m, v, n, a);
    cuda_kernels::check_launch("tessera: optimizer: Adam kernel launch");
  }
};

}  // namespace tessera::detail
#endif  // __CUDACC__
