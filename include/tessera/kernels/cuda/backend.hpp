// backend<cuda>: the device's side of the vocabulary of kernels/backend.hpp (compiled only by nvcc). Every kernel
// runs on the stream of kernels/cuda/memory.hpp; a function returns once its work is queued (copies to and from
// the host wait for it). Its parts live beside their kernels:
//   here                   memory, elementwise, reduce, gemm (cuBLASLt, kernels/cuda/gemm.hpp), bf16 GEMM and
//                          conversion (kernels/cuda/gemm_bf16.hpp), conv2d (cuDNN,
//                          kernels/cuda/conv.hpp, when cudnn.h is found) and pooling forward
//   kernels/cuda/nn.hpp    cuda_nn_ops: the layer operations' kernels
//   kernels/cuda/rnn.hpp   cuda_rnn_ops: the LSTM step
//   kernels/cuda/optim.hpp cuda_optim_ops: the optimizer updates
//   kernels/cuda/norm.hpp  cuda_norm_ops: layer normalisation; kernels/cuda/attention.hpp cuda_attention_ops
//   kernels/cuda/embedding.hpp cuda_embedding_ops: the embedding lookup and its gradient
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include "tessera/core/eval.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#if __has_include(<cudnn.h>)
#include "tessera/kernels/cuda/conv.hpp"
#define TESSERA_HAVE_CUDNN 1
#endif
#include "tessera/kernels/cuda/elementwise.hpp"
#include "tessera/kernels/cuda/embedding.hpp"
#include "tessera/kernels/cuda/gemm.hpp"
#include "tessera/kernels/cuda/gemm_bf16.hpp"
#include "tessera/kernels/cuda/memory.hpp"
#include "tessera/kernels/cuda/nn.hpp"
#include "tessera/kernels/cuda/optim.hpp"
#include "tessera/kernels/cuda/pool.hpp"
#include "tessera/kernels/cuda/rnn.hpp"
#include "tessera/kernels/cuda/norm.hpp"
#include "tessera/kernels/cuda/attention.hpp"

namespace tessera {

template <>
struct backend<cuda> : detail::cuda_nn_ops, detail::cuda_rnn_ops, detail::cuda_optim_ops, detail::cuda_embedding_ops,
                       detail::cuda_norm_ops, detail::cuda_attention_ops {
  using policy = cuda;
  static constexpr bool on_device = true;
  /// No block epilogues: the planner hands epilogues to the libraries (policy/cuda_contractions.hpp) or runs a
  /// second kernel.
  static constexpr bool block_epilogues = false;
  static int threads() { return 1; }
  static cudaStream_t stream() { return cuda_detail::stream(); }

  // ---- memory ----
  template <class T>
  static T* allocate(index_t n) { return memory<cuda>::template allocate<T>(std::size_t(n)); }
  template <class T>
  static void deallocate(T* p) { memory<cuda>::deallocate(p); }
  template <class T>
  static void copy(T* dst, const T* src, index_t n) { if (n > 0) memory<cuda>::copy_device_to_device(dst, src, std::size_t(n)); }
  template <class T>
  static void to_host(T* dst, const T* src, index_t n) { if (n > 0) memory<cuda>::copy_to_host(dst, src, std::size_t(n)); }
  template <class T>
  static void from_host(T* dst, const T* src, index_t n) { if (n > 0) memory<cuda>::copy_to_device(dst, src, std::size_t(n)); }
  template <class T>
  static void zero(T* p, index_t n) {
    if (n > 0)
      cuda_kernels::check_cuda(cudaMemsetAsync(p, 0, std::size_t(n) * sizeof(T), stream()), "cudaMemsetAsync");
  }

  // ---- elementwise and reductions (kernels/cuda/elementwise.hpp) ----
  /// dst (dims, strides) = ev: one kernel launch.
  template <class T, bool Packable, std::size_t MaxLane, int R, class Ev>
  static void elementwise(T* dst, const dims_t<R>& dims, const dims_t<R>& strides, Ev ev) {
    auto plan = detail::make_plan<R>(dims, strides, ev);
    const index_t total = plan.total();
    if (total == 0) return;
    stats::count_pass();
    stats::count_launch();
    detail::elementwise_kernel<<<detail::grid_for(total, 256), 256, 0, stream()>>>(dst, plan, ev);
    cuda_detail::check(cudaGetLastError(), "elementwise kernel launch");
  }
  /// The host's reduce (kernels/cpu/backend.hpp): a block per output element, the scale applied in the kernel.
  template <class Op, class A, bool Packable, std::size_t MaxLane, int RS, class Ev>
  static void reduce(A* out, const dims_t<RS>& sd, const dims_t<RS>& os, Ev ev, const index_t*, const index_t*,
                     int, bool scaled, A scale) {
    auto plan = detail::make_plan<RS>(sd, os, ev);
    index_t kept = 1, reduced = 1;
    for (int d = 0; d < plan.nd; ++d) (plan.dst_s[d] == 0 ? reduced : kept) *= plan.dims[d];
    stats::count_pass();
    stats::count_launch();
    const unsigned blocks = unsigned(kept < 65535 ? (kept > 0 ? kept : 1) : 65535);
    detail::reduce_kernel<Op, A><<<blocks, 256, 0, stream()>>>(out, plan, ev, kept, reduced, scaled, scale);
    cuda_detail::check(cudaGetLastError(), "reduce kernel launch");
  }
  template <class T, int R>
  static void argmax(const T*, const dims_t<R>&, int, bool, std::int64_t*, const dims_t<R>&) {
    static_assert(sizeof(T) == 0, "tessera: argmax on the cuda policy is not implemented yet; use to<cpu>(x)");
  }

  // ---- gemm ----
  /// C (+)= A B through cuBLASLt (operands whose strides cuBLASLt cannot take are packed first); with a library
  /// epilogue (bias per column of C, ReLU, GELU: kernels/cuda/gemm.hpp) when given.
  template <class T>
  static void gemm(const detail::gemm_desc<T>& d, gemm_epilogue epi = gemm_epilogue::none, const T* bias = nullptr) {
    stats::count_pass();
    stats::count_launch();
    cuda_gemm<T>(stream(), d.M, d.N, d.K, d.a.p, d.a.rs, d.a.cs, d.b.p, d.b.rs, d.b.cs, d.c, d.ldc, epi, bias, 1, 0, 0, 0,
                 d.accumulate);
  }
  /// Block epilogues are the host's: the planner hands the device library epilogues or a second kernel instead.
  template <class T, class Epi>
    requires(!std::is_same_v<Epi, gemm_epilogue>)
  static void gemm(const detail::gemm_desc<T>& d, const Epi&) {
    static_assert(!Epi::active, "tessera: block epilogues run on the host backend only");
    gemm(d);
  }
  /// One strided-batched call when there is one batch dim, else a call per product.
  template <class T>
  static void gemm_batched(const detail::gemm_desc<T>& d, const detail::gemm_batch& b, gemm_epilogue epi = gemm_epilogue::none,
                           const T* bias = nullptr) {
    stats::count_pass();
    stats::count_launch();
    if (b.nb == 1) {
      cuda_gemm<T>(stream(), d.M, d.N, d.K, d.a.p, d.a.rs, d.a.cs, d.b.p, d.b.rs, d.b.cs, d.c, d.ldc, epi, bias, b.dims[0],
                   b.a[0], b.b[0], b.c[0], d.accumulate);
      return;
    }
    for (index_t q = 0, n = b.count(); q < n; ++q) {
      index_t oa, ob, oc;
      b.offsets(q, oa, ob, oc);
      cuda_gemm<T>(stream(), d.M, d.N, d.K, d.a.p + oa, d.a.rs, d.a.cs, d.b.p + ob, d.b.rs, d.b.cs, d.c + oc, d.ldc, epi, bias, 1,
                   0, 0, 0, d.accumulate);
    }
  }

  // ---- bf16 GEMM (kernels/cuda/gemm_bf16.hpp: cuBLASLt, bf16 A and B, fp32 accumulation and C) ----
  /// C (fp32, row stride ldc) (+)= A B with A (M x K) and B (K x N) bfloat16 read through strides: the host's
  /// signature (kernels/cpu/backend.hpp). No block epilogue here (block_epilogues = false).
  template <class Epi = detail::no_epilogue>
  static void gemm_bf16(index_t M, index_t N, index_t K, detail::mat_ref<bfloat16> a, detail::mat_ref<bfloat16> b, float* c,
                        index_t ldc, bool accumulate, const Epi& = {}) {
    static_assert(!Epi::active,
                  "tessera: backend<cuda>::gemm_bf16 takes no block epilogue: the CUDA backend has block_epilogues = "
                  "false, so callers apply the bias or activation in a separate pass after the product");
    stats::count_pass();
    stats::count_launch();
    cuda_gemm_bf16(stream(), M, N, K, a, b, c, ldc, accumulate);
  }
  /// dst[i] = bfloat16(src[i]) (round to nearest even, NaN kept a NaN: bit for bit the host's conversion).
  static void to_bf16(const float* src, bfloat16* dst, index_t n) {
    stats::count_pass();
    stats::count_launch();
    cuda_to_bf16(stream(), src, dst, n);
  }

  // ---- convolution and pooling forward ----
  /// cuDNN writes whole contiguous outputs.
  static bool conv2d_writes(const detail::conv_geometry& g, const dims_t<4>& ys) {
    return ys == contiguous_strides(dims_t<4>{g.N, g.K, g.OH, g.OW});
  }
  /// y = [relu](conv2d(x, w) [+ bias]) through cuDNN (x and w copied to contiguous buffers first when strided).
  template <class T>
  static void conv2d(const detail::conv_geometry& g, const T* x, const index_t* xs, const T* w, const index_t* ws, T* y,
                     index_t, index_t, const T* bias = nullptr, bool relu = false) {
#if defined(TESSERA_HAVE_CUDNN)
    const contiguous_copy<T> xc(x, {g.N, g.C, g.H, g.W}, xs), wc(w, {g.K, g.C / g.groups, g.R, g.S}, ws);
    stats::count_pass();
    stats::count_launch();
    cuda_conv2d<T>(stream(), xc.data, g.N, g.C, g.H, g.W, wc.data, g.K, g.R, g.S, g.stride, g.pad, g.dilation, int(g.groups),
                   bias, relu, y);
#else
    (void)g, (void)x, (void)xs, (void)w, (void)ws, (void)y, (void)bias, (void)relu;
    throw device_error("tessera: conv2d on the cuda policy needs cuDNN (cudnn.h was not found when this file was compiled)");
#endif
  }
  template <class T, class Epi>
    requires(!std::is_pointer_v<Epi>)
  static void conv2d(const detail::conv_geometry& g, const T* x, const index_t* xs, const T* w, const index_t* ws, T* y,
                     index_t ys0, index_t ys1, const Epi&) {
    static_assert(!Epi::active, "tessera: block epilogues run on the host backend only");
    conv2d<T>(g, x, xs, w, ws, y, ys0, ys1);
  }
  /// Pooling writes contiguous outputs.
  static bool pool2d_writes(const dims_t<4>& yd, const dims_t<4>& ys) { return ys == contiguous_strides(yd); }
  template <bool Max, pool2d_options O, class T, class Epi = detail::no_epilogue>
  static void pool2d(const T* x, const dims_t<4>& d, const dims_t<4>& xs, T* y, const dims_t<4>&, const dims_t<4>&,
                     const Epi& = {}) {
    static_assert(!Epi::active, "tessera: block epilogues run on the host backend only");
    stats::count_pass();
    stats::count_launch();
    if constexpr (Max) cuda_max_pool2d<T>(stream(), x, d[0], d[1], d[2], d[3], xs[0], xs[1], xs[2], xs[3], O, y);
    else cuda_avg_pool2d<T>(stream(), x, d[0], d[1], d[2], d[3], xs[0], xs[1], xs[2], xs[3], O, y);
  }

 private:
  /// A rank-4 operand as a contiguous device buffer: the operand itself when it is contiguous, else a copy.
  template <class T>
  struct contiguous_copy {
    const T* data;
    T* owned = nullptr;
    contiguous_copy(const T* p, const dims_t<4>& d, const index_t* s) : data(p) {
      const dims_t<4> st{s[0], s[1], s[2], s[3]};
      if (st == contiguous_strides(d)) return;
      owned = allocate<T>(product(d));
      elementwise<T, false, sizeof(T), 4>(owned, d, contiguous_strides(d), detail::make_leaf_eval<T, 4>(p, d, st, d));
      data = owned;
    }
    contiguous_copy(const contiguous_copy&) = delete;
    ~contiguous_copy() { deallocate(owned); }
  };
};

}  // namespace tessera
#endif  // __CUDACC__
