// The device's elementwise and reduction kernels: one thread an element of a fused expression's evaluator (passed
// by value: pointers and strides only), one block an output element of a reduction. backend<cuda>::elementwise
// and ::reduce launch them. Compiled only by nvcc.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include "tessera/kernels/loop.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera {

namespace detail {

/// One thread an element (grid-stride). nd == 1 plans (most expressions, after coalescing) skip index arithmetic.
template <class T, int R, class Ev>
__global__ void elementwise_kernel(T* dst, loop_plan<R> p, Ev ev) {
  const index_t n = p.dims[p.nd - 1], total = p.total(), ds = p.dst_s[p.nd - 1];
  const index_t step = index_t(gridDim.x) * blockDim.x;
  if (p.nd == 1) {
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) dst[i * ds] = static_cast<T>(ev.scalar(i));
    return;
  }
  index_t idx[loop_plan<R>::cap];
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t j = i % n;
    unflatten(i / n, idx, p.dims, p.nd - 1);
    Ev e = ev;
    e.set_row(idx, p.nd - 1);
    T* out = dst;
    for (int d = 0; d + 1 < p.nd; ++d) out += idx[d] * p.dst_s[d];
    out[j * ds] = static_cast<T>(e.scalar(j));
  }
}

/// One block an output element; its threads stride over the reduced elements, then reduce in shared memory.
template <class Op, class A, int R, class Ev>
__global__ void reduce_kernel(A* out, loop_plan<R> p, Ev ev, index_t kept_count, index_t reduced_count, bool scale, A factor) {
  __shared__ A part[256];
  int kd[loop_plan<R>::cap], rd[loop_plan<R>::cap], nk = 0, nr = 0;
  for (int d = 0; d < p.nd; ++d) {
    if (p.dst_s[d] == 0) rd[nr++] = d;
    else kd[nk++] = d;
  }
  for (index_t o = blockIdx.x; o < kept_count; o += gridDim.x) {
    index_t idx[loop_plan<R>::cap] = {};
    index_t rem = o;
    A* dst = out;
    for (int k = nk - 1; k >= 0; --k) {
      idx[kd[k]] = rem % p.dims[kd[k]];
      rem /= p.dims[kd[k]];
      dst += idx[kd[k]] * p.dst_s[kd[k]];
    }
    A acc = Op::template identity<A>();
    for (index_t m = threadIdx.x; m < reduced_count; m += blockDim.x) {
      index_t r = m;
      for (int k = nr - 1; k >= 0; --k) {
        idx[rd[k]] = r % p.dims[rd[k]];
        r /= p.dims[rd[k]];
      }
      Ev e = ev;
      e.set_row(idx, p.nd - 1);
      acc = Op::combine(acc, static_cast<A>(e.scalar(idx[p.nd - 1])));
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
      if (threadIdx.x < s) part[threadIdx.x] = Op::combine(part[threadIdx.x], part[threadIdx.x + s]);
      __syncthreads();
    }
    if (threadIdx.x == 0) *dst = scale ? A(part[0] * factor) : part[0];
    __syncthreads();
  }
}

inline unsigned grid_for(index_t total, int block) {
  index_t blocks = (total + block - 1) / block, cap = index_t(cuda_detail::sm_count()) * 32;
  return unsigned(blocks < cap ? (blocks > 0 ? blocks : 1) : cap);
}

}  // namespace detail
}  // namespace tessera
#endif  // __CUDACC__
