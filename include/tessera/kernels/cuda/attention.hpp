// cuda_attention_ops: the attention part of backend<cuda> (kernels/cuda/backend.hpp), with the same names and
// argument lists as host_attention_ops (kernels/cpu/attention.hpp) and the same results to rounding:
//   attention_forward    a thread per (batch, head, query row): the row's maximum and sum over the keys, then the
//                        output as the weighted sum of the values, and the row's log-sum-exp (NaN when every key
//                        is masked, as the host)
//   attention_backward   a thread per query row for rowsum(dO O) and dQ; a thread per key row for dK and dV, each
//                        recomputing its scores from the log-sum-exp (no T x S matrix, no atomics)
// The float mask is added to the scores and the attention-weight dropout decided per element by the counter-based
// hash of kernels/attention_dropout.hpp, as on the host: the same masks for a seed on every policy.
// Simple and correct rather than fast (no shared-memory tiling). Every kernel runs on tessera's stream. nvcc only.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "tessera/kernels/attention_dropout.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera::detail {

namespace cuda_attn {

inline constexpr int block = 128;

template <class T>
__device__ __forceinline__ T dlog(T v) {
  if constexpr (std::is_same_v<T, float>) return ::logf(v);
  else return ::log(v);
}

template <class T>
__device__ __forceinline__ bool masked(const attention_desc<T>& d, index_t b, index_t h, index_t t, index_t s) {
  if (d.causal && s > t) return true;
  if (d.mask && d.mask[b * d.mask_bs + h * d.mask_hs + t * d.S + s]) return true;
  if (d.key_padding && d.key_padding[b * d.S + s]) return true;
  return false;
}

/// The scaled score of query t and key s plus the float mask (-inf when masked).
template <class T>
__device__ __forceinline__ T score(const attention_desc<T>& d, index_t b, index_t h, index_t t, index_t s) {
  if (masked(d, b, h, t, s)) return -std::numeric_limits<T>::infinity();
  const T* q = d.q + b * d.qs[0] + h * d.qs[1] + t * d.qs[2];
  const T* k = d.k + b * d.ks[0] + h * d.ks[1] + s * d.ks[2];
  T a = 0;
  for (index_t c = 0; c < d.D; ++c) a += q[c] * k[c];
  a *= d.scale;
  if (d.mask_add) a += d.mask_add[b * d.mask_bs + h * d.mask_hs + t * d.S + s];
  return a;
}

/// The dropout factor of weight (t, s): 1 without dropout, else d.dropout_scale when kept and 0 when dropped.
template <class T>
__device__ __forceinline__ T keep_factor(const attention_desc<T>& d, index_t b, index_t h, index_t t, index_t s) {
  if (!d.dropout) return T(1);
  return attention_dropout_keep(attention_dropout_row(d.dropout_seed, b, h, t), s, d.dropout_threshold) ? d.dropout_scale : T(0);
}

template <class T>
__global__ void forward_kernel(attention_desc<T> d) {
  const index_t rows = d.B * d.H * d.Tq;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows; i += index_t(gridDim.x) * blockDim.x) {
    const index_t t = i % d.Tq, bh = i / d.Tq, h = bh % d.H, b = bh / d.H;
    T m = -std::numeric_limits<T>::infinity();
    for (index_t s = 0; s < d.S; ++s) {
      const T x = score(d, b, h, t, s);
      m = x > m ? x : m;  // a NaN score is skipped here and reaches the output through exp, as on the host
    }
    T* o = d.o + b * d.os[0] + h * d.os[1] + t * d.os[2];
    for (index_t c = 0; c < d.Dv; ++c) o[c] = T(0);
    T l = 0;
    if (m != -std::numeric_limits<T>::infinity())
      for (index_t s = 0; s < d.S; ++s) {
        const T p = tessera::cuda_kernels::dexp(score(d, b, h, t, s) - m);
        if (p == T(0)) continue;
        l += p;  // the softmax's sum: before dropout
        const T pz = p * keep_factor(d, b, h, t, s);
        const T* v = d.v + b * d.vs[0] + h * d.vs[1] + s * d.vs[2];
        for (index_t c = 0; c < d.Dv; ++c) o[c] += pz * v[c];
      }
    if (l == T(0)) {  // every key masked: NaN, as PyTorch's softmax over -inf
      for (index_t c = 0; c < d.Dv; ++c) o[c] = std::numeric_limits<T>::quiet_NaN();
      d.lse[i] = std::numeric_limits<T>::quiet_NaN();
      continue;
    }
    for (index_t c = 0; c < d.Dv; ++c) o[c] /= l;
    d.lse[i] = m + dlog(l);
  }
}

/// P(t, s) from the log-sum-exp (NaN for a row whose keys are all masked), dP(t, s) = dO_t . V_s and the dropout
/// factor z (O = (P o Z) V, so dV takes P z and the softmax's backward dP z).
template <class T>
__device__ __forceinline__ void prob(const attention_desc<T>& d, index_t b, index_t h, index_t t, index_t s, T& p, T& dp, T& z) {
  z = keep_factor(d, b, h, t, s);
  const T lse = d.lse[(b * d.H + h) * d.Tq + t];
  p = tessera::cuda_kernels::dexp(score(d, b, h, t, s) - lse);
  const T* g = d.dout + b * d.os[0] + h * d.os[1] + t * d.os[2];
  const T* v = d.v + b * d.vs[0] + h * d.vs[1] + s * d.vs[2];
  dp = 0;
  for (index_t c = 0; c < d.Dv; ++c) dp += g[c] * v[c];
}

/// rowsum(dO * O) per query row into di, and dQ (when wanted).
template <class T>
__global__ void backward_q_kernel(attention_desc<T> d, T* di) {
  const index_t rows = d.B * d.H * d.Tq;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows; i += index_t(gridDim.x) * blockDim.x) {
    const index_t t = i % d.Tq, bh = i / d.Tq, h = bh % d.H, b = bh / d.H;
    const T* g = d.dout + b * d.os[0] + h * d.os[1] + t * d.os[2];
    const T* o = d.o + b * d.os[0] + h * d.os[1] + t * d.os[2];
    T s0 = 0;
    for (index_t c = 0; c < d.Dv; ++c) s0 += g[c] * o[c];
    di[i] = s0;
    if (!d.dq) continue;
    T* dq = d.dq + b * d.qs[0] + h * d.qs[1] + t * d.qs[2];
    if (!d.acc_q)
      for (index_t c = 0; c < d.D; ++c) dq[c] = T(0);
    for (index_t s = 0; s < d.S; ++s) {
      T p, dp, z;
      prob(d, b, h, t, s, p, dp, z);
      const T ds = p * (z * dp - s0) * d.scale;
      const T* k = d.k + b * d.ks[0] + h * d.ks[1] + s * d.ks[2];
      for (index_t c = 0; c < d.D; ++c) dq[c] += ds * k[c];
    }
  }
}

/// dK and dV per key row.
template <class T>
__global__ void backward_kv_kernel(attention_desc<T> d, const T* di) {
  const index_t rows = d.B * d.H * d.S;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows; i += index_t(gridDim.x) * blockDim.x) {
    const index_t s = i % d.S, bh = i / d.S, h = bh % d.H, b = bh / d.H;
    T* dk = d.dk ? d.dk + b * d.ks[0] + h * d.ks[1] + s * d.ks[2] : nullptr;
    T* dv = d.dv ? d.dv + b * d.vs[0] + h * d.vs[1] + s * d.vs[2] : nullptr;
    if (dk && !d.acc_k)
      for (index_t c = 0; c < d.D; ++c) dk[c] = T(0);
    if (dv && !d.acc_v)
      for (index_t c = 0; c < d.Dv; ++c) dv[c] = T(0);
    for (index_t t = 0; t < d.Tq; ++t) {
      T p, dp, z;
      prob(d, b, h, t, s, p, dp, z);
      if (dv) {
        const T* g = d.dout + b * d.os[0] + h * d.os[1] + t * d.os[2];
        for (index_t c = 0; c < d.Dv; ++c) dv[c] += p * z * g[c];
      }
      if (dk) {
        const T ds = p * (z * dp - di[(b * d.H + h) * d.Tq + t]) * d.scale;
        const T* q = d.q + b * d.qs[0] + h * d.qs[1] + t * d.qs[2];
        for (index_t c = 0; c < d.D; ++c) dk[c] += ds * q[c];
      }
    }
  }
}

}  // namespace cuda_attn

struct cuda_attention_ops {
  template <class T>
  static void attention_forward(const attention_desc<T>& d) {
    namespace k = cuda_attn;
    const index_t rows = d.B * d.H * d.Tq;
    if (rows == 0) return;
    k::forward_kernel<T><<<tessera::cuda_kernels::grid_for(rows, k::block), k::block, 0, tessera::cuda_detail::stream()>>>(d);
    tessera::cuda_kernels::check_launch("tessera: attention kernel launch");
  }
  template <class T>
  static void attention_backward(const attention_desc<T>& d) {
    namespace k = cuda_attn;
    cudaStream_t st = tessera::cuda_detail::stream();
    const index_t qrows = d.B * d.H * d.Tq, krows = d.B * d.H * d.S;
    T* di = qrows > 0 ? memory<cuda>::allocate<T>(std::size_t(qrows)) : nullptr;
    if (qrows > 0) {
      k::backward_q_kernel<T><<<tessera::cuda_kernels::grid_for(qrows, k::block), k::block, 0, st>>>(d, di);
      tessera::cuda_kernels::check_launch("tessera: attention backward kernel launch");
    }
    if (krows > 0 && (d.dk || d.dv)) {
      k::backward_kv_kernel<T><<<tessera::cuda_kernels::grid_for(krows, k::block), k::block, 0, st>>>(d, di);
      tessera::cuda_kernels::check_launch("tessera: attention backward kernel launch");
    }
    if (di) memory<cuda>::deallocate(di);  // cudaFree waits for the kernels reading it
  }
};

}  // namespace tessera::detail
#endif  // __CUDACC__
