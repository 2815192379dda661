// backend<cpu> and backend<cpu_threads>: the host's side of the vocabulary of kernels/backend.hpp. One struct for
// both host policies (P::num_threads() is the only difference); its parts live beside their kernels:
//   here                 memory, elementwise, reduce, argmax, gemm, conv2d and pooling forward, int8 GEMM, bf16 GEMM
//                        and bf16 convolution
//   kernels/cpu/nn.hpp   host_nn_ops<P>: the layer operations' kernels (activation backward, conv2d gradients, ...)
//   kernels/cpu/rnn.hpp  host_rnn_ops<P>: the LSTM step
//   kernels/cpu/optim.hpp host_optim_ops<P>: the optimizer updates
//   kernels/cpu/embedding.hpp host_embedding_ops<P>: the embedding lookup and its gradient
//   kernels/cpu/norm.hpp host_norm_ops<P>: layer normalisation; kernels/cpu/attention.hpp host_attention_ops<P>
#pragma once
#include <algorithm>
#include <cstring>

#include "tessera/core/eval.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/elementwise.hpp"
#include "tessera/kernels/cpu/embedding.hpp"
#include "tessera/kernels/cpu/conv.hpp"
#include "tessera/kernels/cpu/gemm.hpp"
#include "tessera/kernels/cpu/gemm_bf16.hpp"
#include "tessera/kernels/cpu/conv_bf16.hpp"
#include "tessera/kernels/cpu/gemm_s8.hpp"
#include "tessera/kernels/cpu/pool.hpp"
#include "tessera/kernels/cpu/reduce.hpp"
#include "tessera/kernels/cpu/nn.hpp"
#include "tessera/kernels/cpu/optim.hpp"
#include "tessera/kernels/cpu/rnn.hpp"
#include "tessera/kernels/cpu/norm.hpp"
#include "tessera/kernels/cpu/attention.hpp"

namespace tessera {

namespace detail {
/// Reads a leaf and multiplies it by a constant (a mean's 1/count over its own output).
template <class A, class Leaf>
struct scaled_eval {
  Leaf l;
  A s;
  TS_INLINE A scalar(index_t j) const { return l.scalar(j) * s; }
#if TESSERA_SIMD
  template <int N, bool C>
  TS_INLINE auto packet(index_t j) const { return l.template packet<N, C>(j) * simd::broadcast<A, N>(&s); }
#endif
  TS_INLINE void prefetch(index_t j) const { l.prefetch(j); }
  TS_INLINE void set_row(const index_t* i, int n) { l.set_row(i, n); }
  template <class F>
  void visit(F&& f) { l.visit(f); }
};
}  // namespace detail

template <class P>
  requires is_host_policy_v<P>
struct backend<P> : detail::host_nn_ops<P>, detail::host_rnn_ops<P>, detail::host_optim_ops<P>, detail::host_embedding_ops<P>,
                   detail::host_norm_ops<P>, detail::host_attention_ops<P> {
  using policy = P;
  static constexpr bool on_device = false;
  /// Kernels call a functor on each finished block (the planner fuses elementwise trees that way).
  static constexpr bool block_epilogues = true;
  /// Threads a kernel of this backend may use.
  static int threads() { return P::num_threads(); }

  // ---- memory ----
  template <class T>
  static T* allocate(index_t n) { return memory<P>::template allocate<T>(std::size_t(n)); }
  template <class T>
  static void deallocate(T* p) { memory<P>::deallocate(p); }
  template <class T>
  static void copy(T* dst, const T* src, index_t n) { if (n > 0) std::memcpy(dst, src, std::size_t(n) * sizeof(T)); }
  template <class T>
  static void to_host(T* dst, const T* src, index_t n) { copy(dst, src, n); }
  template <class T>
  static void from_host(T* dst, const T* src, index_t n) { copy(dst, src, n); }
  template <class T>
  static void zero(T* p, index_t n) { if (n > 0) std::fill(p, p + n, T(0)); }

  // ---- elementwise and reductions ----
  /// dst (dims, strides) = ev, an evaluator aligned to dims (core/eval.hpp). Packable: every node of the tree has a
  /// SIMD form; MaxLane: the widest element in it (sets the lane count).
  template <class T, bool Packable, std::size_t MaxLane, int R, class Ev>
  static void elementwise(T* dst, const dims_t<R>& dims, const dims_t<R>& strides, Ev ev) {
    const auto plan = detail::make_plan<R>(dims, strides, ev);
    detail::cpu_elementwise<T, Packable, MaxLane>(dst, plan, ev, &P::num_threads);
  }
  /// Several evaluators over one flat range of n elements in one pass (the gradients of a fused expression):
  /// evaluator k (of K, each over rank-1 dims {n}, every leaf contiguous) is added into dests[dest_of[k]] (-1: not
  /// wanted), a destination starting from its own contents where accumulate[d], else from zero.
  static constexpr bool multi_output = true;
  template <class T, std::size_t MaxLane, int K, class Evs>
  static void elementwise_multi(index_t n, const Evs& evs, const int* dest_of, T* const* dests, const bool* accumulate, int ndest) {
    detail::cpu_elementwise_multi<T, MaxLane, K>(n, evs, dest_of, dests, accumulate, ndest, &P::num_threads);
  }
  /// out = Op-reduction of ev (planned over the source dims sd) into out, whose strides aligned to the source are
  /// os (0 along reduced axes); odims/ostrides/orank: out's own layout. scaled: then out *= scale (a mean).
  template <class Op, class A, bool Packable, std::size_t MaxLane, int RS, class Ev>
  static void reduce(A* out, const dims_t<RS>& sd, const dims_t<RS>& os, Ev ev, const index_t* odims,
                     const index_t* ostrides, int orank, bool scaled, A scale) {
    detail::cpu_reduce<Op, A, Packable, MaxLane, RS>(out, sd, os, ev, odims, ostrides, orank, P::num_threads());
    if (!scaled) return;
    constexpr int R = RS > 0 ? RS : 1;  // out is walked as a tensor of the source's rank (1 along reduced axes)
    dims_t<R> d{}, s{};
    for (int i = 0; i < R; ++i) d[i] = 1;
    for (int i = 0; i < orank; ++i) {
      d[R - orank + i] = odims[i];
      s[R - orank + i] = ostrides[i];
    }
    const auto leaf = detail::make_leaf_eval<A, R>(out, d, s, d);
    detail::scaled_eval<A, std::remove_const_t<decltype(leaf)>> ev2{leaf, scale};
    elementwise<A, simd::packable_v<A>, sizeof(A), R>(out, d, s, ev2);
  }
  /// argmax along axis ax of a contiguous source (all: over the flattened source, into out[0]); os: out's strides
  /// aligned to the source (0 along ax).
  template <class T, int R>
  static void argmax(const T* src, const dims_t<R>& sd, int ax, bool all, std::int64_t* out, const dims_t<R>& os) {
    detail::cpu_argmax<T, R>(src, sd, ax, all, out, os, P::num_threads());
  }

  // ---- gemm ----
  /// C (+)= A B.
  template <class T>
  static void gemm(const detail::gemm_desc<T>& d) {
    detail::cpu_gemm<T>(d.M, d.N, d.K, d.a, d.b, d.c, d.ldc, d.accumulate, P::num_threads());
  }
  /// The same with a block epilogue: epi(i0, j0, rows, cols) on each finished tile of C (kernels/cpu/gemm.hpp).
  template <class T, class Epi>
  static void gemm(const detail::gemm_desc<T>& d, const Epi& epi) {
    detail::cpu_gemm<T>(d.M, d.N, d.K, d.a, d.b, d.c, d.ldc, d.accumulate, P::num_threads(), epi);
  }
  /// The products of a batch (d's pointers are product 0's): many small products run one per thread.
  template <class T>
  static void gemm_batched(const detail::gemm_desc<T>& d, const detail::gemm_batch& b) {
    const index_t batches = b.count();
    const bool small = 2.0 * double(d.M) * double(d.N) * double(d.K) < 2e6;
    const int outer = small && batches > 1 ? P::num_threads() : 1;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(outer) schedule(static) if (outer > 1)
#endif
    for (index_t q = 0; q < batches; ++q) {
      index_t oa, ob, oc;
      b.offsets(q, oa, ob, oc);
      detail::cpu_gemm<T>(d.M, d.N, d.K, {d.a.p + oa, d.a.rs, d.a.cs}, {d.b.p + ob, d.b.rs, d.b.cs}, d.c + oc, d.ldc,
                          d.accumulate, outer > 1 ? 1 : P::num_threads());
    }
  }

  // ---- int8 GEMM (kernels/cpu/gemm_s8.hpp: AMX, AVX-512 VNNI, AVX2 or plain loops, chosen at run time) ----
  /// C (+)= A B: A M x K uint8 or int8 (row stride lda), B packed int8 weights, C int32 (row stride ldc); epi on each
  /// finished block (one that declares local_c receives the block in a buffer of the thread's own instead).
  template <class TA, class Epi = detail::no_epilogue>
  static void gemm_s8(index_t M, index_t N, index_t K, const TA* a, index_t lda, const packed_b_s8& b, std::int32_t* c,
                      index_t ldc, bool accumulate, const Epi& epi = {}) {
    detail::cpu_gemm_s8(M, N, K, a, lda, b, c, ldc, accumulate, P::num_threads(), epi);
  }
  /// The same with A's rows produced group by group by pack_group(g, out) (a convolution gathers its taps there).
  template <class PackGroup, class Epi = detail::no_epilogue>
  static void gemm_s8_rows(index_t M, index_t N, index_t K, const PackGroup& pack_group, bool a_signed,
                           const packed_b_s8& b, std::int32_t* c, index_t ldc, bool accumulate, const Epi& epi = {}) {
    detail::cpu_gemm_s8_rows(M, N, K, pack_group, a_signed, b, c, ldc, accumulate, P::num_threads(), epi);
  }

  // ---- bf16 GEMM (kernels/cpu/gemm_bf16.hpp: AVX512-BF16, fp32 after widening, or plain loops, chosen at run time) ----
  /// C (fp32, row stride ldc) (+)= A B with A (M x K) and B (K x N) bfloat16 read through strides, accumulated in fp32;
  /// epi(i0, j0, rows, cols) on each finished tile of C.
  template <class Epi = detail::no_epilogue>
  static void gemm_bf16(index_t M, index_t N, index_t K, detail::mat_ref<bfloat16> a, detail::mat_ref<bfloat16> b, float* c,
                        index_t ldc, bool accumulate, const Epi& epi = {}) {
    detail::cpu_gemm_bf16(M, N, K, a, b, c, ldc, accumulate, P::num_threads(), epi);
  }
  /// dst[i] = src[i] rounded to bfloat16 (to nearest even, NaN kept a NaN: bfloat16(float)), i < n
  /// (kernels/cpu/conv_bf16.hpp, as the three below).
  static void to_bf16(const float* src, bfloat16* dst, index_t n) { detail::cpu_to_bf16(src, dst, n, P::num_threads()); }
  /// y [N, K, OH, OW] (fp32) = conv2d(x [N, C, H, W], w [K, C/groups, R, S]) with bf16 operands, fp32 accumulation, all
  /// contiguous; epi(n, k0, krows, p0, pcols) on each finished block of y (as conv2d's).
  template <class Epi = detail::no_epilogue>
  static void conv2d_bf16(const detail::conv_geometry& g, const bfloat16* x, const bfloat16* w, float* y, const Epi& epi = {}) {
    detail::cpu_conv2d_bf16(g, x, w, y, P::num_threads(), epi);
  }
  /// dx (fp32) = (accumulate: +=) the gradient of conv2d_bf16's input for dy and w (bf16).
  static void conv2d_bf16_backward_data(const detail::conv_geometry& g, const bfloat16* dy, const bfloat16* w, float* dx,
                                        bool accumulate) {
    detail::cpu_conv2d_bf16_backward_data(g, dy, w, dx, accumulate, P::num_threads());
  }
  /// dw (fp32) = (accumulate: +=) the gradient of conv2d_bf16's weights for x and dy (bf16), summed over the images.
  static void conv2d_bf16_backward_weight(const detail::conv_geometry& g, const bfloat16* x, const bfloat16* dy, float* dw,
                                          bool accumulate) {
    detail::cpu_conv2d_bf16_backward_weight(g, x, dy, dw, accumulate, P::num_threads());
  }

  // ---- convolution and pooling forward ----
  /// Can conv2d write y with these strides? (Its (h, w) planes must be contiguous.)
  static bool conv2d_writes(const detail::conv_geometry& g, const dims_t<4>& ys) {
    return (ys[3] == 1 || g.OW == 1) && (ys[2] == g.OW || g.OH == 1);
  }
  /// y = conv2d(x, w) (x and w through strides; y's planes contiguous: element (n, k, p) at y[n*ys0 + k*ys1 + p]);
  /// epi(n, k0, krows, p0, pcols) on each finished block (kernels/cpu/conv.hpp).
  template <class T, class Epi = detail::no_epilogue>
  static void conv2d(const detail::conv_geometry& g, const T* x, const index_t* xs, const T* w, const index_t* ws, T* y,
                     index_t ys0, index_t ys1, const Epi& epi = {}) {
    detail::cpu_conv2d<T>(g, x, xs, w, ws, y, ys0, ys1, P::num_threads(), epi);
  }
  static bool pool2d_writes(const dims_t<4>&, const dims_t<4>&) { return true; }
  /// y [N, C, OH, OW] = max (Max) or average of the windows O (pool2d_options) of x [N, C, H, W]; any strides;
  /// epi(n, c, 1, 0, OH*OW) on each finished plane.
  template <bool Max, pool2d_options O, class T, class Epi = detail::no_epilogue>
  static void pool2d(const T* x, const dims_t<4>& xd, const dims_t<4>& xs, T* y, const dims_t<4>& yd, const dims_t<4>& ys,
                     const Epi& epi = {}) {
    detail::cpu_pool2d<Max, O>(x, xd, xs, y, yd[2], yd[3], ys, P::num_threads(), epi);
  }
};

}  // namespace tessera
