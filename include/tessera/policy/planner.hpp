// The planner: the one place where an expression becomes work, for every policy. planner<P>::assign(dst, e)
// checks extents, makes aliasing safe (a temporary where an operand overlaps the destination other than element
// for element), then plans: a reduction node runs the backend's reduce; a contraction node (matmul, conv2d,
// pooling, int8) is executed (below); an elementwise tree holding one contraction runs as its
// epilogue where the backend can (the host's block epilogues below: the tree evaluated on each finished block
// while it is in cache; the device's library epilogues: policy/cuda_contractions.hpp); any other tree is one
// elementwise kernel of backend<P>.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "tessera/core/tensor.hpp"
#include "tessera/expr/conv.hpp"
#include "tessera/expr/matmul.hpp"
#include "tessera/expr/pool.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#include "tessera/policy/plan_support.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda_contractions.hpp"
#endif

namespace tessera::detail {

// ---- contractions ----
// Contraction nodes (matmul, conv2d, pooling) become backend calls, once for every policy: the node describes
// (operands, extents, geometry); execute() lays out the descriptors and calls backend<P>. The trailing `epi...` is
// what the planner chose to run with the product: nothing, a block epilogue (a functor the host's kernels call on
// each finished block) or a library epilogue (the device's cuBLASLt / cuDNN bias and ReLU); each backend accepts
// the kinds it has. A destination the backend cannot write in place (conv2d_writes, pool2d_writes; a GEMM writes
// rows) goes through a contiguous temporary. Other contraction nodes (quant/) provide an execute() of their own,
// found by argument-dependent lookup.

/// dst = a * b (NumPy's matmul: batches broadcast, matrix-vector).
template <class A, class B, class DV, class... Epi>
void execute(const matmul_node<A, B>& nd, const DV& dst, const Epi&... epi) {
  using Node = matmul_node<A, B>;
  using T = typename Node::value_type;
  using MS = typename Node::MS;
  using BK = backend<typename DV::policy>;
  constexpr int rank = Node::rank, nb = Node::nb;
  const auto& ds = dst.strides();
  if constexpr (!MS::vec) {
    if (ds[rank - 1] != 1 && nd.n_ > 1) {  // the GEMM writes rows: go through a contiguous temporary
      Tensor<T, typename Node::shape_type, typename DV::policy> t(nd.expr_dims());
      execute(nd, t.view(), epi...);
      DV d = dst;
      d = t.cview();
      return;
    }
  }
  const index_t ldc = MS::vec ? ds[rank - 1] : ds[rank - 2];
  const mat_ref<T> am{nd.a.data(), nd.a.strides()[A::rank - 2], nd.a.strides()[A::rank - 1]};
  const mat_ref<T> bm{nd.b.data(), nd.b.strides()[MS::vec ? 0 : B::rank - 2], MS::vec ? 1 : nd.b.strides()[B::rank - 1]};
  const gemm_desc<T> d{nd.m_, nd.n_, nd.k_, am, bm, dst.data(), ldc};
  if constexpr (nb == 0) {
    BK::gemm(d, epi...);
  } else {
    static_assert(nb <= gemm_batch::cap, "tessera: matmul: more batch dimensions than gemm_batch holds");
    // batch strides of each operand aligned to the result's batch dims (0 where broadcast)
    dims_t<MS::bra> ba{}, sa{};
    dims_t<MS::brb> bb{}, sb{};
    for (int i = 0; i < MS::bra; ++i) { ba[i] = nd.a.dims()[i]; sa[i] = nd.a.strides()[i]; }
    for (int i = 0; i < MS::brb; ++i) { bb[i] = nd.b.dims()[i]; sb[i] = nd.b.strides()[i]; }
    const auto as = aligned_strides<nb>(ba, sa, nd.batch_);
    const auto bs = aligned_strides<nb>(bb, sb, nd.batch_);
    gemm_batch batch;
    batch.nb = nb;
    for (int i = 0; i < nb; ++i) {
      batch.dims[i] = nd.batch_[i];
      batch.a[i] = as[i];
      batch.b[i] = bs[i];
      batch.c[i] = ds[i];
    }
    BK::gemm_batched(d, batch, epi...);
  }
}

/// dst = conv2d(x, w).
template <class X, class W, bool S, conv2d_options O, class DV, class... Epi>
void execute(const conv2d_node<X, W, S, O>& nd, const DV& dst, const Epi&... epi) {
  using T = typename X::value_type;
  using BK = backend<typename DV::policy>;
  static_assert(std::is_floating_point_v<T>, "tessera: conv2d supports float and double");
  const auto& g = nd.geometry();
  const auto& ds = dst.strides();
  if (!BK::conv2d_writes(g, ds)) {
    Tensor<T, dyn_shape_t<4>, typename DV::policy> t(nd.expr_dims());
    execute(nd, t.view(), epi...);
    DV d = dst;
    d = t.cview();
    return;
  }
  BK::conv2d(g, nd.x.data(), nd.x.strides().data(), nd.w.data(), nd.w.strides().data(), dst.data(), ds[0], ds[1], epi...);
}

/// dst = max or average pool of the node's source.
template <class Op, class C, pool2d_options O, class DV, class... Epi>
void execute(const pool_node<Op, C, O>& nd, const DV& dst, const Epi&... epi) {
  using T = typename C::value_type;
  using BK = backend<typename DV::policy>;
  if (!BK::pool2d_writes(dst.dims(), dst.strides())) {
    Tensor<T, dyn_shape_t<4>, typename DV::policy> t(nd.expr_dims());
    execute(nd, t.view(), epi...);
    DV d = dst;
    d = t.cview();
    return;
  }
  BK::template pool2d<pool_node<Op, C, O>::is_max, O>(nd.src.data(), nd.src.dims(), nd.src.strides(), dst.data(), dst.dims(),
                                                      dst.strides(), epi...);
}

// ---- elementwise trees around a contraction (host block epilogues) ----


/// One row of an epilogue tree: columns [j0, j1) of the row `e` is set to, into `out`; plain vector loads when every
/// leaf reads its rows contiguously (`contig`), per-leaf loads otherwise, scalars when the tree is not packable.
template <class T, bool Packable, std::size_t MaxLane, class Ev>
TS_INLINE void epilogue_row(Ev& e, bool contig, T* out, index_t j0, index_t j1) {
#if TESSERA_SIMD
  if constexpr (Packable) {
    constexpr int N = simd::lanes_for<MaxLane>;
    if (contig) packet_row<T, N, true>(e, out, j0, j1, false);
    else packet_row<T, N, false>(e, out, j0, j1, false);
    return;
  }
#endif
  scalar_row<T>(e, out, 1, j0, j1);
}

/// Rows [i0, i0 + rows) x columns [j0, j0 + cols) of a rank-2 tree `e` into dst (row stride ld).
template <class T, bool Packable, std::size_t MaxLane, class Ev>
void epilogue_rows(Ev& e, bool contig, T* dst, index_t ld, index_t i0, index_t j0, index_t rows, index_t cols) {
  for (index_t i = i0; i < i0 + rows; ++i) {
    const index_t idx[1] = {i};
    e.set_row(idx, 1);
    epilogue_row<T, Packable, MaxLane>(e, contig, dst + i * ld, j0, j0 + cols);
  }
}

/// The elementwise tree around one matrix product, run on each tile of the product as the GEMM finishes it.
/// The product's leaf reads the destination itself (already holding the tile), so no intermediate exists.
template <class T, class Ev, bool Packable, std::size_t MaxLane>
struct tree_epilogue {
  static constexpr bool active = true;
  Ev ev;
  T* dst;
  index_t ld;
  bool contig;  ///< every leaf reads its rows contiguously (no broadcast along a row, no gather)
  tree_epilogue(const Ev& e, T* d, index_t l) : ev(e), dst(d), ld(l), contig(all_leaves_contiguous(e)) {}
  void operator()(index_t i0, index_t j0, index_t rows, index_t cols) const {
    Ev e = ev;
    epilogue_rows<T, Packable, MaxLane>(e, contig, dst, ld, i0, j0, rows, cols);
  }
};

/// The elementwise tree around one product that hands each finished block over in a buffer of the thread's own
/// (`local_c`): the product's leaf (built on `marker`) is re-pointed at the block, then the rows are evaluated.
template <class T, class NT, class Ev, bool Packable, std::size_t MaxLane>
struct local_tree_epilogue {
  static constexpr bool active = true;
  static constexpr bool local_c = true;
  Ev ev;
  const NT* marker;
  T* dst;
  index_t ld;
  bool contig;  ///< every leaf reads its rows contiguously (see tree_epilogue)
  local_tree_epilogue(const Ev& e, const NT* m, T* d, index_t l) : ev(e), marker(m), dst(d), ld(l), contig(all_leaves_contiguous(e)) {}
  void local(const NT* cb, index_t ldb, index_t i0, index_t j0, index_t rows, index_t cols) const {
    Ev e = ev;
    // element (i, j) of the product is at cb[(i - i0) * ldb + (j - j0)]: the leaf's base moves by -(i0 * ldb + j0)
    const auto base = reinterpret_cast<const NT*>(reinterpret_cast<std::uintptr_t>(cb) -
                                                  std::uintptr_t(i0 * ldb + j0) * sizeof(NT));
    e.visit([&](auto& leaf) {
      if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(leaf)>::value_type, NT>)
        if (leaf.base == marker) leaf.base = base;
    });
    epilogue_rows<T, Packable, MaxLane>(e, contig, dst, ld, i0, j0, rows, cols);
  }
  void operator()(index_t, index_t, index_t, index_t) const {}  // (blocks come through local)
};

/// The elementwise tree around one NCHW contraction (convolution, pooling), run on each finished block of
/// its output: images n, channels [k0, k0+krows), flattened (h, w) positions [p0, p0+pcols) of a destination
/// whose planes are contiguous. When every leaf walks the plane as one run (bias broadcast over it, or a
/// contiguous residual), a block's rows are whole plane spans; otherwise the tree is walked row by row.
template <class T, class Ev, bool Packable, std::size_t MaxLane>
struct nchw_tree_epilogue {
  static constexpr bool active = true;
  Ev ev;
  T* dst;
  index_t s0, s1, OW;
  bool flat_plane;
  bool contig;  ///< every leaf reads its rows contiguously (see tree_epilogue)
  nchw_tree_epilogue(const Ev& e, T* d, index_t a, index_t b, index_t ow, bool flat)
      : ev(e), dst(d), s0(a), s1(b), OW(ow), flat_plane(flat), contig(all_leaves_contiguous(e)) {}
  void run(Ev& e, const index_t* idx, int nouter, T* row, index_t j0, index_t j1) const {
    e.set_row(idx, nouter);
    epilogue_row<T, Packable, MaxLane>(e, contig, row, j0, j1);
  }
  void operator()(index_t n, index_t k0, index_t krows, index_t p0, index_t pcols) const {
    Ev e = ev;
    for (index_t k = k0; k < k0 + krows; ++k) {
      T* plane = dst + n * s0 + k * s1;
      if (flat_plane) {
        const index_t idx[2] = {n, k};
        run(e, idx, 2, plane, p0, p0 + pcols);
        continue;
      }
      for (index_t p = p0, end = p0 + pcols; p < end;) {
        const index_t h = p / OW, w0 = p - h * OW, w1 = std::min(OW, w0 + (end - p));
        const index_t idx[3] = {n, k, h};
        run(e, idx, 3, plane + h * OW, w0, w1);
        p += w1 - w0;
      }
    }
  }
};

template <class T, class S, class P, class E>
bool assign_with_nchw_epilogue(const View<T, S, P>& dst, const E& e) {
  if constexpr (S::rank != 4 || !backend<P>::block_epilogues) {
    return false;
  } else {
    bool done = false;
    e.for_each_contraction([&](const auto& node) {
      if constexpr (!requires { requires std::remove_cvref_t<decltype(node)>::nchw_epilogue_ok; }) return;
      else {
        const auto& d = dst.dims();
        const auto& s = dst.strides();
        if (node.expr_dims() != d || !(s[3] == 1 || d[3] == 1) || !(s[2] == d[3] || d[2] == 1)) return;
        if (reads_overlap(dst, e, false) || contraction_overlaps(dst, node)) return;
        node.fuse_target = dst.data();
        node.fuse_strides = s;
        node.fuse_strides[2] = d[3];  // unit extents may carry any stride: make the plane's layout explicit
        node.fuse_strides[3] = 1;
        auto ev = e.template evaluator<4>(d);
        node.fuse_target = nullptr;
        bool flat = true;  // does every leaf step through (h, w) as one run?
        ev.visit([&](auto& leaf) { flat = flat && (d[2] == 1 || leaf.s[2] == leaf.s[3] * d[3]); });
        using EE = std::remove_cvref_t<E>;
        execute(node, dst, nchw_tree_epilogue<T, decltype(ev), EE::packable, EE::max_lane_size>{ev, dst.data(), s[0], s[1], d[3], flat});
        done = true;
      }
    });
    return done;
  }
}

/// Try to run `e` (an elementwise tree around one matmul) as the GEMM's epilogue; false if it does not fit.
template <class T, class S, class P, class E>
bool assign_with_epilogue(const View<T, S, P>& dst, const E& e) {
  if constexpr (!backend<P>::block_epilogues) {
    if constexpr (requires { library_plan<P>::available; }) return library_plan<P>::epilogue(dst, e);
    else return false;
  } else if constexpr (S::rank == 4) {
    return assign_with_nchw_epilogue(dst, e);
  } else if constexpr (S::rank != 2) {
    return false;
  } else {
    bool done = false;
    e.for_each_contraction([&](const auto& node) {
      if constexpr (!requires { requires std::remove_cvref_t<decltype(node)>::epilogue_ok; }) return;
      else {
      if (node.expr_dims() != dst.dims() || dst.strides()[1] != 1) return;  // the product must fill dst exactly
      using EE = std::remove_cvref_t<E>;
      using NT = typename std::remove_cvref_t<decltype(node)>::value_type;
      // dst is written before it is read when the product lands there; when its blocks come from the thread's own
      // buffers instead, the tree may read dst element for element (y = y + dequantize(...): an accumulating epilogue)
      if (reads_overlap(dst, e, !std::is_same_v<NT, T>) || contraction_overlaps(dst, node)) return;
      if constexpr (std::is_same_v<NT, T>) {
        node.fuse_target = dst.data();
        node.fuse_strides = dst.strides();
        auto ev = e.template evaluator<2>(dst.dims());
        node.fuse_target = nullptr;
        execute(node, dst, tree_epilogue<T, decltype(ev), EE::packable, EE::max_lane_size>{ev, dst.data(), dst.strides()[0]});
      } else if constexpr (requires { requires std::remove_cvref_t<decltype(node)>::local_epilogue_ok; }) {
        // the product's own type is not dst's (int32 accumulators under a uint8 or float result) and its kernel hands
        // each finished block over in a buffer of the thread's own: the tree's leaf for the product is pointed at
        // that buffer, block by block, and the product never reaches memory
        static const NT marker{};
        const index_t ld = local_ld(dst.dims()[1]);
        node.fuse_target = &marker;
        node.fuse_strides = {ld, 1};
        auto ev = e.template evaluator<2>(dst.dims());
        node.fuse_target = nullptr;
        const View<NT, dyn_shape_t<2>, P> none(nullptr, dst.dims(), {ld, 1});
        execute(node, none, local_tree_epilogue<T, NT, decltype(ev), EE::packable, EE::max_lane_size>{ev, &marker, dst.data(),
                                                                                                    dst.strides()[0]});
      } else {
        return;  // a product of another type that cannot hand its blocks over: evaluated first, then the tree
      }
      done = true;
      }
    });
    return done;
  }
}

/// dst = a reduction node: the backend's reduce over the node's source (a mean scaled by 1 / count), or argmax
/// over a contiguous copy of the source.
template <class Node, class DV>
void run_reduction(const Node& node, const DV& dst) {
  using P = typename DV::policy;
  using Op = typename Node::op_type;
  using A = typename Node::value_type;
  using C = typename Node::source_type;
  constexpr int RS = Node::source_rank;
  const auto os = node.out_strides_in_source(dst);
  if constexpr (std::is_same_v<Op, op::argmax>) {
    const Tensor<typename C::value_type, typename C::shape_type, P> src(node.source());  // contiguous: plain loops
    constexpr bool all = Node::mask == (RS >= 32 ? ~0u : (1u << RS) - 1u) && RS != 1;
    static_assert(all || std::popcount(Node::mask) == 1, "tessera: argmax reduces one axis (or all of them)");
    backend<P>::template argmax<typename C::value_type, RS>(src.data(), src.dims(), all ? 0 : std::countr_zero(Node::mask), all, dst.data(), os);
  } else {
    const auto sd = node.source().expr_dims();
    index_t count = 1;
    for (int i = 0; i < RS; ++i)
      if ((Node::mask >> i) & 1u) count *= sd[i];
    constexpr bool mean = std::is_same_v<Op, op::mean>;
    A scale = A(1);
    if constexpr (mean) scale = count ? A(1) / A(count) : std::numeric_limits<A>::quiet_NaN();
    backend<P>::template reduce<Op, A, C::packable && simd::packable_v<A>, std::max(C::max_lane_size, sizeof(A)), RS>(
        dst.data(), sd, os, node.source().template evaluator<RS>(sd), dst.dims().data(), dst.strides().data(), Node::rank,
        mean, scale);
  }
}

template <class T, class S, class P, class E>
void assign(const View<T, S, P>& dst, const E& e) {
  constexpr int R = S::rank;
  const auto ed = e.expr_dims();
  if constexpr (std::remove_cvref_t<E>::rank > 0) {
    auto b = broadcast_dims(ed, dst.dims(), "assign");
    if (b != dst.dims())
      throw shape_error("tessera: assign: an expression of shape " + format_dims(ed) +
                        " cannot be written to a destination of shape " + format_dims(dst.dims()));
  }
  if (dst.size() == 0) return;
  for (int i = 0; i < R; ++i)
    if (dst.strides()[i] == 0 && dst.dims()[i] > 1)
      throw shape_error("tessera: assign: the destination " + format_dims(dst.dims()) +
                        " is a broadcast view (stride 0); it cannot be written");

  bool alias;
  // a reduction fills its destination with the identity before reading: any overlap goes through a temporary
  if constexpr (Reduction<E>) alias = reads_overlap(dst, e.source(), false);
  else if constexpr (Contraction<E>) alias = contraction_overlaps(dst, e);
  else alias = reads_overlap(dst, e);
  if (alias) {  // evaluate into a fresh tensor, then copy: two passes, always right
    Tensor<T, dyn_shape_t<R>, P> tmp(dst.dims());
    assign(tmp.view(), e);
    assign(dst, tmp.cview());
    return;
  }

  if constexpr (!Contraction<E> && std::remove_cvref_t<E>::contractions == 1) {
    if (dst.size() > 0 && assign_with_epilogue(dst, e)) return;
  }

  if constexpr (Reduction<E>) {
    run_reduction(e, dst);
  } else if constexpr (Contraction<E>) {
    execute(e, dst);
  } else {
    using EE = std::remove_cvref_t<E>;
    backend<P>::template elementwise<T, EE::packable, EE::max_lane_size, R>(dst.data(), dst.dims(), dst.strides(),
                                                                           e.template evaluator<R>(dst.dims()));
  }
}

}  // namespace tessera::detail

namespace tessera {

/// The planner of policy P (declared in core/tensor.hpp, where tensors and views send their assignments).
template <class P>
struct planner {
  static constexpr bool available = true;
  template <class DV, class E>
  static void assign(const DV& dst, const E& e) {
    static_assert(requires { backend<P>::on_device; },
                  "tessera: the cuda policy runs CUDA kernels: compile this file with nvcc (a .cu file)");
    detail::assign(dst, e);
  }
};

/// Evaluate an expression into a new tensor of its own shape, element type and policy.
template <class E>
  requires Expression<E>
auto eval(const E& e) {
  using D = std::remove_cvref_t<E>;
  return Tensor<typename D::value_type, typename D::shape_type, typename D::policy>(e);
}

}  // namespace tessera
