// Assignment: the one place where an expression becomes work. Checks shapes, makes aliasing safe,
// then hands the tree to the policy's kernel (elementwise loop, or the node's own kernel for reductions).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "tessera/core/tensor.hpp"
#include "tessera/kernels/cpu/elementwise.hpp"

namespace tessera::detail {

/// Implemented by policy/cuda.hpp, which nvcc compiles.
template <class P>
struct device_kernels;
/// Matmul, conv2d and pooling on a device policy: policy/cuda_contractions.hpp.
template <class P>
struct device_contractions;

template <class V>
std::pair<const char*, const char*> byte_range(const V& v) {
  using E = std::remove_const_t<typename V::element_type>;
  const char* base = reinterpret_cast<const char*>(v.data());
  index_t lo = 0, hi = 0;
  for (int i = 0; i < V::rank; ++i) {
    if (v.dims()[i] == 0) return {base, base};
    const index_t span = (v.dims()[i] - 1) * v.strides()[i];
    (span < 0 ? lo : hi) += span;
  }
  return {base + lo * index_t(sizeof(E)), base + (hi + 1) * index_t(sizeof(E))};
}

/// Does reading `e` while writing `dst` risk reading an element already overwritten?
/// Safe when a leaf is disjoint from dst, or reads exactly the element being written at each position.
template <class DV, class E>
bool reads_overlap(const DV& dst, const E& e, bool element_for_element_ok = true) {
  // named, not a structured binding: the lambda below captures them (clang 14 rejects captured bindings)
  const auto drange = byte_range(dst);
  const auto dlo = drange.first, dhi = drange.second;
  if (dlo == dhi) return false;
  bool overlap = false;
  e.for_each_leaf([&](const auto& leaf) {
    const auto [lo, hi] = byte_range(leaf);
    if (hi <= dlo || lo >= dhi || lo == hi) return;
    using LE = std::remove_const_t<typename std::remove_cvref_t<decltype(leaf)>::element_type>;
    using DE = std::remove_const_t<typename DV::element_type>;
    bool same = element_for_element_ok && sizeof(LE) == sizeof(DE) && static_cast<const void*>(leaf.data()) == static_cast<const void*>(dst.data());
    if constexpr (std::remove_cvref_t<decltype(leaf)>::rank <= DV::rank) {
      if (same) {
        auto s = aligned_strides<DV::rank>(leaf.dims(), leaf.strides(), dst.dims());
        for (int i = 0; i < DV::rank; ++i)
          if (dst.dims()[i] != 1 && s[i] != dst.strides()[i]) same = false;
      }
    } else {
      same = false;  // a reduction's source: any overlap is unsafe
    }
    if (!same) overlap = true;
  });
  return overlap;
}

template <class E>
concept Reduction = requires { requires std::remove_cvref_t<E>::is_reduction; };
template <class E>
concept Contraction = requires { requires std::remove_cvref_t<E>::is_contraction; };

/// Does any operand of a contraction overlap the destination? (A product reads whole rows and columns.)
template <class DV, class E>
bool contraction_overlaps(const DV& dst, const E& e) {
  bool overlap = false;
  e.for_each_operand([&](const auto& v) { overlap = overlap || reads_overlap(dst, v, false); });
  return overlap;
}

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
  if constexpr (S::rank != 4 || P::on_device) {
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
        node.run_into(dst, nchw_tree_epilogue<T, decltype(ev), EE::packable, EE::max_lane_size>{ev, dst.data(), s[0], s[1], d[3], flat});
        done = true;
      }
    });
    return done;
  }
}

/// Try to run `e` (an elementwise tree around one matmul) as the GEMM's epilogue; false if it does not fit.
template <class T, class S, class P, class E>
bool assign_with_epilogue(const View<T, S, P>& dst, const E& e) {
  if constexpr (P::on_device) {
    if constexpr (requires { device_contractions<P>::enabled; }) return device_contractions<P>::epilogue(dst, e);
    else return false;
  } else if constexpr (S::rank == 4) {
    return assign_with_nchw_epilogue(dst, e);
  } else if constexpr (S::rank != 2 || P::on_device) {
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
        node.run_into(dst, tree_epilogue<T, decltype(ev), EE::packable, EE::max_lane_size>{ev, dst.data(), dst.strides()[0]});
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
        node.run_into(none, local_tree_epilogue<T, NT, decltype(ev), EE::packable, EE::max_lane_size>{ev, &marker, dst.data(),
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
    e.reduce_into(dst);
  } else if constexpr (Contraction<E>) {
    e.run_into(dst);
  } else if constexpr (P::on_device) {
    static_assert(requires { device_kernels<P>::enabled; },
                  "tessera: the cuda policy runs kernels: compile this file with nvcc (a .cu file) so that "
                  "tessera/policy/cuda.hpp is included");
    device_kernels<P>::elementwise(dst, e);
  } else {
    auto ev = e.template evaluator<R>(dst.dims());
    auto plan = make_plan<R>(dst.dims(), dst.strides(), ev);
    using EE = std::remove_cvref_t<E>;
    cpu_elementwise<T, EE::packable, EE::max_lane_size>(dst.data(), plan, ev, P::num_threads());
  }
}

}  // namespace tessera::detail

namespace tessera {

/// Evaluate an expression into a new tensor of its own shape, element type and policy.
template <class E>
  requires Expression<E>
auto eval(const E& e) {
  using D = std::remove_cvref_t<E>;
  return Tensor<typename D::value_type, typename D::shape_type, typename D::policy>(e);
}

}  // namespace tessera
