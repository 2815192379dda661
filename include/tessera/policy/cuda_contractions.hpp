// The cuda policy's epilogue plans (library_plan<cuda>): the contractions themselves run through backend<cuda>
// like every policy's (execute() in policy/planner.hpp); an elementwise tree around a product is matched at compile time:
// relu(matmul(a, b) + bias), matmul(a, b) + bias and relu(matmul(a, b)) run as cuBLASLt's epilogue; relu(conv2d(x, w) + bias) and its sub-forms as cuDNN's fused
// bias and activation; any other tree runs as one elementwise kernel reading the product from the destination
// (no intermediate tensor). Compiled only by nvcc (policy/planner.hpp includes it there).
#pragma once
#if defined(__CUDACC__)
#include <type_traits>

#include "tessera/expr/conv.hpp"
#include "tessera/expr/matmul.hpp"
#include "tessera/expr/pool.hpp"
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/plan_support.hpp"

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

}  // namespace tessera::detail

namespace tessera {

template <>
struct library_plan<cuda> {
  static constexpr bool available = true;

  /// An elementwise tree around one contraction: a library epilogue where the tree matches one, else the
  /// contraction into dst and one elementwise kernel that reads it there. False when the tree does not fit dst.
  template <class DV, class E>
  static bool epilogue(const DV& dst, const E& e) {
    using namespace detail;
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
            execute(prod, dst, epi, bias);
          } else {
            execute(prod, dst, bias, L::relu);
          }
          return true;
        }
      }
    }
    bool done = false;
    e.for_each_contraction([&](const auto& node) {
      const auto& d = dst.dims();
      if (node.expr_dims() != d || reads_overlap(dst, e, false) || contraction_overlaps(dst, node)) return;
      execute(node, dst);
      node.fuse_target = dst.data();
      node.fuse_strides = dst.strides();
      try {
        // reads the product where it was written, element for element
        using EE = std::remove_cvref_t<E>;
        backend<cuda>::template elementwise<T, EE::packable, EE::max_lane_size, DV::rank>(
            dst.data(), dst.dims(), dst.strides(), e.template evaluator<DV::rank>(dst.dims()));
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

}  // namespace tessera
#endif  // __CUDACC__
