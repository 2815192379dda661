// Contractions on the cuda policy: matmul through cuBLASLt (kernels/cuda/gemm.hpp), conv2d through cuDNN
// (kernels/cuda/conv.hpp, when cudnn.h is found), pooling through tessera's own kernels. An elementwise tree
// around a product is matched at compile time: relu(matmul(a, b) + bias), matmul(a, b) + bias and
// relu(matmul(a, b)) run as cuBLASLt's epilogue; relu(conv2d(x, w) + bias) and its sub-forms as cuDNN's fused
// bias and activation; any other tree runs as one elementwise kernel reading the product from the destination
// (no intermediate tensor). Compiled only by nvcc (policy/cuda.hpp includes it). Link CUDA::cublasLt and cuDNN.
#pragma once
#if defined(__CUDACC__)
#include <type_traits>

#include "tessera/expr/conv.hpp"
#include "tessera/expr/matmul.hpp"
#include "tessera/expr/pool.hpp"
#include "tessera/kernels/cuda/gemm.hpp"
#include "tessera/kernels/cuda/pool.hpp"
#if __has_include(<cudnn.h>)
#include "tessera/kernels/cuda/conv.hpp"
#define TESSERA_HAVE_CUDNN 1
#endif

namespace tessera::detail {

template <class T>
struct is_matmul_node : std::false_type {};
template <class A, class B>
struct is_matmul_node<matmul_node<A, B>> : std::true_type {};
template <class T>
struct is_conv_node : std::false_type {};
template <class X, class W, bool S, conv2d_options O>
struct is_conv_node<conv2d_node<X, W, S, O>> : std::true_type {};

/// The parts of `tree` that a library epilogue can take: the product, a bias operand (or none) and a ReLU flag.
template <class E>
struct library_epilogue {
  static constexpr bool matches = false;
};
template <class C, class L>
struct library_epilogue<map_node<op::add, C, L>> {  // product + bias
  static constexpr bool matches = (is_matmul_node<C>::value || is_conv_node<C>::value) && requires(const L& l) { l.data(); };
  static constexpr bool relu = false;
  static const C& product(const map_node<op::add, C, L>& e) { return std::get<0>(e.children); }
  static const L* bias(const map_node<op::add, C, L>& e) { return &std::get<1>(e.children); }
};
template <class C>
struct library_epilogue<map_node<op::relu, C>> {  // relu(product)
  static constexpr bool matches = is_matmul_node<C>::value || is_conv_node<C>::value;
  static constexpr bool relu = true;
  static const C& product(const map_node<op::relu, C>& e) { return std::get<0>(e.children); }
  static const void* bias(const map_node<op::relu, C>&) { return nullptr; }
};
template <class C, class L>
struct library_epilogue<map_node<op::relu, map_node<op::add, C, L>>> {  // relu(product + bias)
  using inner = library_epilogue<map_node<op::add, C, L>>;
  static constexpr bool matches = inner::matches;
  static constexpr bool relu = true;
  static const C& product(const map_node<op::relu, map_node<op::add, C, L>>& e) { return inner::product(std::get<0>(e.children)); }
  static const L* bias(const map_node<op::relu, map_node<op::add, C, L>>& e) { return inner::bias(std::get<0>(e.children)); }
};

template <>
struct device_contractions<cuda> {
  static constexpr bool enabled = true;

  /// dst = node, whichever contraction it is.
  template <class Node, class DV>
  static void run(const Node& nd, const DV& dst) {
    if constexpr (is_matmul_node<Node>::value) matmul(nd, dst);
    else if constexpr (is_conv_node<Node>::value) conv2d(nd, dst);
    else pool<Node::is_max>(nd, dst, Node::kernel, Node::stride, Node::padding);
  }

  /// dst = epilogue(a * b [+ bias]) for a matmul node; bias (length n, contiguous) or null.
  template <class Node, class DV>
  static void matmul(const Node& nd, const DV& dst, gemm_epilogue epi = gemm_epilogue::none,
                     const typename Node::value_type* bias = nullptr) {
    using T = typename Node::value_type;
    using MS = typename Node::MS;
    constexpr int rank = Node::rank, nb = Node::nb;
    using A = std::remove_cvref_t<decltype(nd.a)>;
    using B = std::remove_cvref_t<decltype(nd.b)>;
    const auto& ds = dst.strides();
    if constexpr (!MS::vec) {
      if (ds[rank - 1] != 1 && nd.n_ > 1) {  // cuBLASLt writes rows: go through a contiguous temporary
        Tensor<T, typename Node::shape_type, cuda> t(nd.expr_dims());
        matmul(nd, t.view(), epi, bias);
        DV d = dst;
        d = t.cview();
        return;
      }
    }
    const index_t ldc = MS::vec ? ds[rank - 1] : ds[rank - 2];
    const index_t a_rs = nd.a.strides()[A::rank - 2], a_cs = nd.a.strides()[A::rank - 1];
    const index_t b_rs = nd.b.strides()[MS::vec ? 0 : B::rank - 2], b_cs = MS::vec ? 1 : nd.b.strides()[B::rank - 1];
    cudaStream_t s = cuda_detail::stream();
    stats::count_pass();
    stats::count_launch();
    if constexpr (nb == 0) {
      cuda_gemm<T>(s, nd.m_, nd.n_, nd.k_, nd.a.data(), a_rs, a_cs, nd.b.data(), b_rs, b_cs, dst.data(), ldc, epi, bias);
    } else {
      dims_t<MS::bra> ba{}, sa{};
      dims_t<MS::brb> bb{}, sb{};
      for (int i = 0; i < MS::bra; ++i) { ba[i] = nd.a.dims()[i]; sa[i] = nd.a.strides()[i]; }
      for (int i = 0; i < MS::brb; ++i) { bb[i] = nd.b.dims()[i]; sb[i] = nd.b.strides()[i]; }
      const auto as = aligned_strides<nb>(ba, sa, nd.batch_);
      const auto bs = aligned_strides<nb>(bb, sb, nd.batch_);
      if constexpr (nb == 1) {  // one strided-batched call
        cuda_gemm<T>(s, nd.m_, nd.n_, nd.k_, nd.a.data(), a_rs, a_cs, nd.b.data(), b_rs, b_cs, dst.data(), ldc, epi, bias,
                     nd.batch_[0], as[0], bs[0], ds[0]);
      } else {
        const index_t batches = product(nd.batch_);
        for (index_t q = 0; q < batches; ++q) {
          index_t idx[nb];
          unflatten(q, idx, nd.batch_.data(), nb);
          index_t oa = 0, ob = 0, oc = 0;
          for (int i = 0; i < nb; ++i) { oa += idx[i] * as[i]; ob += idx[i] * bs[i]; oc += idx[i] * ds[i]; }
          cuda_gemm<T>(s, nd.m_, nd.n_, nd.k_, nd.a.data() + oa, a_rs, a_cs, nd.b.data() + ob, b_rs, b_cs, dst.data() + oc, ldc,
                       epi, bias);
        }
      }
    }
  }

  /// dst = [relu](conv2d(x, w) [+ bias]) for a conv2d node (cuDNN; operands made contiguous first).
  template <class Node, class DV>
  static void conv2d(const Node& nd, const DV& dst, const typename Node::value_type* bias = nullptr, bool relu = false) {
#if defined(TESSERA_HAVE_CUDNN)
    using T = typename Node::value_type;
    const auto& g = nd.geometry();
    auto contiguous = [](const auto& v) {
      const auto c = contiguous_strides(v.dims());
      return v.strides() == c;
    };
    if (!contiguous(dst)) {
      Tensor<T, dyn_shape_t<4>, cuda> t(nd.expr_dims());
      conv2d(nd, t.view(), bias, relu);
      DV d = dst;
      d = t.cview();
      return;
    }
    const T* x = nd.x.data();
    const T* w = nd.w.data();
    Tensor<T, dyn_shape_t<4>, cuda> xc, wc;
    if (!contiguous(nd.x)) {
      xc = Tensor<T, dyn_shape_t<4>, cuda>(nd.x);
      x = xc.data();
    }
    if (!contiguous(nd.w)) {
      wc = Tensor<T, dyn_shape_t<4>, cuda>(nd.w);
      w = wc.data();
    }
    stats::count_pass();
    stats::count_launch();
    cuda_conv2d<T>(cuda_detail::stream(), x, g.N, g.C, g.H, g.W, w, g.K, g.R, g.S, int(g.stride), int(g.pad), int(g.dilation),
                   int(g.groups), bias, relu, dst.data());
#else
    (void)nd;
    (void)dst;
    (void)bias;
    (void)relu;
    throw device_error("tessera: conv2d on the cuda policy needs cuDNN (cudnn.h was not found when this file was compiled)");
#endif
  }

  /// dst = max/avg pool of the node's source (any input strides; dst made contiguous).
  template <bool Max, class Node, class DV>
  static void pool(const Node& nd, const DV& dst, int K, int S, int P) {
    using T = typename Node::value_type;
    if (dst.strides() != contiguous_strides(dst.dims())) {
      Tensor<T, dyn_shape_t<4>, cuda> t(nd.expr_dims());
      pool<Max>(nd, t.view(), K, S, P);
      DV d = dst;
      d = t.cview();
      return;
    }
    const auto& d = nd.src.dims();
    const auto& xs = nd.src.strides();
    stats::count_pass();
    stats::count_launch();
    if constexpr (Max) cuda_max_pool2d<T>(cuda_detail::stream(), nd.src.data(), d[0], d[1], d[2], d[3], xs[0], xs[1], xs[2], xs[3], K, S, P, dst.data());
    else cuda_avg_pool2d<T>(cuda_detail::stream(), nd.src.data(), d[0], d[1], d[2], d[3], xs[0], xs[1], xs[2], xs[3], K, S, P, dst.data());
  }

  /// An elementwise tree around one contraction: a library epilogue where the tree matches one, else the
  /// contraction into dst and one elementwise kernel that reads it there. False when the tree does not fit dst.
  template <class DV, class E>
  static bool epilogue(const DV& dst, const E& e) {
    using L = library_epilogue<std::remove_cvref_t<E>>;
    using T = typename DV::value_type;
    if constexpr (L::matches) {
      const auto& prod = L::product(e);
      using C = std::remove_cvref_t<decltype(prod)>;
      if (prod.expr_dims() == dst.dims() && !contraction_overlaps(dst, prod)) {
        const T* bias = nullptr;
        bool bias_ok = true;
        if constexpr (!std::is_same_v<decltype(L::bias(e)), const void*>) {
          const auto* b = L::bias(e);
          using BL = std::remove_cvref_t<decltype(*b)>;
          // the bias must be one value per output column (matmul) or channel (conv2d), contiguous
          const index_t want = is_matmul_node<C>::value ? prod.expr_dims()[C::rank - 1] : prod.expr_dims()[1];
          bias_ok = b->size() == want && b->strides()[BL::rank - 1] == 1 && reads_overlap(dst, *b, false) == false;
          if constexpr (is_conv_node<C>::value) bias_ok = bias_ok && (BL::rank == 1 || (BL::rank == 3 && b->dims()[1] == 1 && b->dims()[2] == 1));
          else bias_ok = bias_ok && (BL::rank == 1 || (BL::rank == 2 && b->dims()[0] == 1));
          bias = b->data();
        }
        if (bias_ok) {
          if constexpr (is_matmul_node<C>::value) {
            const gemm_epilogue epi = bias ? (L::relu ? gemm_epilogue::bias_relu : gemm_epilogue::bias)
                                           : (L::relu ? gemm_epilogue::relu : gemm_epilogue::none);
            matmul(prod, dst, epi, bias);
          } else {
            conv2d(prod, dst, bias, L::relu);
          }
          return true;
        }
      }
    }
    bool done = false;
    e.for_each_contraction([&](const auto& node) {
      const auto& d = dst.dims();
      if (node.expr_dims() != d || reads_overlap(dst, e, false) || contraction_overlaps(dst, node)) return;
      node.run_into(dst);
      node.fuse_target = dst.data();
      node.fuse_strides = dst.strides();
      try {
        device_kernels<cuda>::elementwise(dst, e);  // reads the product where it was written, element for element
      } catch (...) {
        node.fuse_target = nullptr;
        throw;
      }
      node.fuse_target = nullptr;
      done = true;
    });
    return done;
  }
};

}  // namespace tessera::detail
#endif  // __CUDACC__
