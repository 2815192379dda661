// The cuda policy: device memory, one stream, and one kernel per fused expression.
// Compiled only by nvcc (tessera.hpp includes it when __CUDACC__ is defined). Kernels receive the
// evaluator by value: pointers and strides only, a few hundred bytes even for long chains.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <string>

#include "tessera/core/stats.hpp"
#include "tessera/kernels/cuda/memory.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/kernels/cpu/loop.hpp"
#include "tessera/policy/planner.hpp"

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

template <>
struct device_kernels<cuda> {
  static constexpr bool enabled = true;

  template <class DV, class E>
  static void elementwise(const DV& dst, const E& e) {
    constexpr int R = DV::rank;
    auto ev = e.template evaluator<R>(dst.dims());
    auto plan = make_plan<R>(dst.dims(), dst.strides(), ev);
    const index_t total = plan.total();
    if (total == 0) return;
    stats::count_pass();
    stats::count_launch();
    elementwise_kernel<<<grid_for(total, 256), 256, 0, cuda_detail::stream()>>>(dst.data(), plan, ev);
    cuda_detail::check(cudaGetLastError(), "elementwise kernel launch");
  }

  template <class DV, class Node>
  static void reduce(const DV& dst, const Node& node) {
    using A = typename Node::value_type;
    using Op = typename Node::op_type;
    static_assert(!std::is_same_v<Op, op::argmax>, "tessera: argmax on the cuda policy is not implemented yet; use to<cpu>(x)");
    constexpr int RS = Node::source_rank;
    const auto sd = node.source().expr_dims();
    auto ev = node.source().template evaluator<RS>(sd);
    auto plan = make_plan<RS>(sd, node.out_strides_in_source(dst), ev);
    index_t kept = 1, reduced = 1;
    for (int d = 0; d < plan.nd; ++d) (plan.dst_s[d] == 0 ? reduced : kept) *= plan.dims[d];
    stats::count_pass();
    stats::count_launch();
    const unsigned blocks = unsigned(kept < 65535 ? (kept > 0 ? kept : 1) : 65535);
    constexpr bool is_mean = std::is_same_v<Op, op::mean>;
    A factor = A(1);
    if constexpr (is_mean) factor = reduced ? A(1) / A(reduced) : A(NAN);
    reduce_kernel<Op, A><<<blocks, 256, 0, cuda_detail::stream()>>>(dst.data(), plan, ev, kept, reduced, is_mean, factor);
    cuda_detail::check(cudaGetLastError(), "reduce kernel launch");
  }
};

}  // namespace detail
}  // namespace tessera
#include "tessera/policy/cuda_contractions.hpp"
#endif  // __CUDACC__
