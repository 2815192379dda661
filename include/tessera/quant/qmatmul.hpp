// int8 products as expression nodes: quant::matmul(x, w) with x a uint8 / int8 matrix (activations, quantized with
// a scale and zero point) and w a quant::qweight (int8 weights, symmetric, one scale per output column or one for
// all, packed once for the int8 GEMM). The node's value is the int32 accumulator sum_k x(i,k) * w(k,j);
// quant::dequantize(node) turns it into reals with x's zero point taken out, and any elementwise tree around it
// (bias, activation, requantization) runs as the GEMM's epilogue, block by block.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tessera/expr/matmul.hpp"
#include "tessera/expr/node.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#include "tessera/policy/planner.hpp"
#include "tessera/quant/quantize.hpp"

namespace tessera::quant {

/// int8 weights W [K x N] of products x W, symmetric: w(k, j) ~ scale[j] * q(k, j), q in [-127, 127].
struct qweight {
  index_t K = 0, N = 0;
  std::vector<std::int8_t> values;  ///< q, row-major K x N
  std::vector<float> scale;         ///< per output column (N entries; all equal when quantized per tensor)
  packed_b_s8 packed;               ///< values packed for the CPU kernel

  qweight() = default;
  /// Quantizes the K x N matrix read at w(k, j) = w[k * rs + j * cs] (a Linear's [Out, In] weight is its
  /// transpose: rs = 1, cs = In).
  qweight(const float* w, index_t K_, index_t N_, index_t rs, index_t cs, bool per_channel = true) : K(K_), N(N_) {
    values.resize(std::size_t(K * N));
    scale.assign(std::size_t(N), 1.0f);
    float all = 0;
    std::vector<float> colmax(std::size_t(N), 0.0f);
    for (index_t k = 0; k < K; ++k)
      for (index_t j = 0; j < N; ++j) {
        const float v = std::fabs(w[k * rs + j * cs]);
        if (!std::isfinite(v)) throw std::invalid_argument("tessera::quant::qweight: a weight is not finite");
        colmax[std::size_t(j)] = std::max(colmax[std::size_t(j)], v);
        all = std::max(all, v);
      }
    for (index_t j = 0; j < N; ++j) scale[std::size_t(j)] = symmetric_qparams(per_channel ? colmax[std::size_t(j)] : all).scale;
    std::vector<float> inv(static_cast<std::size_t>(N));  // multiplied by 1 / scale as PyTorch's quantize_per_channel (not divided)
    for (index_t j = 0; j < N; ++j) inv[std::size_t(j)] = 1.0f / scale[std::size_t(j)];
    for (index_t k = 0; k < K; ++k)
      for (index_t j = 0; j < N; ++j) {
        const float q = std::nearbyint(w[k * rs + j * cs] * inv[std::size_t(j)]);
        values[std::size_t(k * N + j)] = std::int8_t(std::clamp(q, -127.0f, 127.0f));
      }
    packed.pack(tessera::detail::mat_ref<std::int8_t>{values.data(), N, 1}, K, N);
  }
  /// The real value a weight stands for.
  float real(index_t k, index_t j) const { return scale[std::size_t(j)] * float(values[std::size_t(k * N + j)]); }
};

namespace detail {
using tessera::detail::contraction_node_base;


/// The int32 product of an int8 matrix view A [M, K] and packed int8 weights.
template <class A>
struct s8_matmul_node
    : contraction_node_base<s8_matmul_node<A>, std::int32_t, Shape<dyn, dyn>, typename A::policy> {
  using value_type = std::int32_t;
  using shape_type = Shape<dyn, dyn>;
  using policy = typename A::policy;
  static constexpr int rank = 2;
  static constexpr bool epilogue_ok = true;
  static constexpr bool local_epilogue_ok = true;  ///< hands its blocks to a local_c epilogue (see assign)
  static_assert(!policy::on_device, "tessera::quant::matmul runs on the CPU (the CUDA int8 path is not written yet)");

  A a;
  std::shared_ptr<const qweight> w;
  qparams aq;  ///< A's quantization (its zero point is taken out by dequantize)
  dims_t<2> dims_;

  s8_matmul_node(A a_, std::shared_ptr<const qweight> w_, qparams aq_) : a(std::move(a_)), w(std::move(w_)), aq(aq_) {
    const auto& d = a.dims();
    if (d[1] != w->K)
      throw shape_error("tessera::quant::matmul: shapes " + tessera::detail::format_dims(d) + " and [" + std::to_string(w->K) +
                        ", " + std::to_string(w->N) + "] do not fit (the columns of the left must equal the rows of the right)");
    dims_ = {d[0], w->N};
  }
  const dims_t<2>& expr_dims() const { return dims_; }
  template <class F>
  void for_each_operand(F&& f) const { f(a); }
};

/// dst = the node's int32 product (policy/planner.hpp executes contraction nodes through this overload); `epi` runs
/// on each finished block.
template <class A, class DV, class Epi = tessera::detail::no_epilogue>
void execute(const s8_matmul_node<A>& nd, const DV& dst, const Epi& epi = {}) {
  using P = typename DV::policy;
  using TA = std::remove_const_t<typename A::element_type>;
  using Node = s8_matmul_node<A>;
  const index_t M = nd.dims_[0], K = nd.w->K;
  // a reduced (7-bit) uint8 A holds values <= 127 only: the GEMM may take avx2_u7 without checking A
  const int8_a_below_128 a7(std::is_same_v<TA, std::uint8_t> && nd.aq.reduced);
  if (dst.strides()[1] != 1 && nd.w->N > 1) {  // the GEMM writes rows: go through a contiguous temporary
    Tensor<std::int32_t, typename Node::shape_type, P> t(nd);
    DV d = dst;
    d = t.cview();
    return;
  }
  if (nd.a.strides()[1] != 1 && K > 1) {  // the kernel reads rows of A: a strided view is copied first
    Tensor<TA, typename Node::shape_type, P> ac(nd.a);
    backend<P>::gemm_s8(M, nd.w->N, K, ac.data(), K, nd.w->packed, dst.data(), dst.strides()[0], false, epi);
    return;
  }
  backend<P>::gemm_s8(M, nd.w->N, K, nd.a.data(), nd.a.strides()[0], nd.w->packed, dst.data(), dst.strides()[0], false, epi);
}
}  // namespace detail

/// The int32 accumulator of x * w (x: uint8 or int8 [M, K] quantized with qx).
template <tessera::detail::TensorLike X>
auto matmul(X&& x, std::shared_ptr<const qweight> w, qparams qx) {
  auto ex = tessera::detail::contraction_operand(std::forward<X>(x));
  using EX = decltype(ex);
  using TA = typename EX::value_type;
  static_assert(EX::rank == 2, "tessera::quant::matmul: the left operand is a matrix [M, K]");
  static_assert(std::is_same_v<TA, std::uint8_t> || std::is_same_v<TA, std::int8_t>,
                "tessera::quant::matmul: the left operand holds uint8 or int8 values (quantize it first)");
  return detail::s8_matmul_node<EX>(std::move(ex), std::move(w), qx);
}

/// Per-column dequantization constants of an int8 product: real(i, j) = (acc(i, j) - offset[j]) * scale[j] with
/// scale[j] = s_x * s_w[j] and offset[j] = z_x * sum_k q_w(k, j).
struct product_dequant {
  Tensor<float, Shape<dyn>> scale, offset;
  product_dequant() = default;
  product_dequant(const qweight& w, qparams qx) : scale(w.N), offset(w.N) {
    for (index_t j = 0; j < w.N; ++j) {
      scale.data()[j] = qx.scale * w.scale[std::size_t(j)];
      offset.data()[j] = float(qx.zero_point) * float(w.packed.col_sums[std::size_t(j)]);
    }
  }
};

/// The reals an int8 product (or convolution) stands for: (acc - z_x * colsum(q_w)) * s_x * s_w, per column; `dq` holds the
/// constants (make it once per layer: product_dequant(w, qx)).
template <tessera::detail::TensorLike X>
  requires std::is_same_v<typename std::remove_cvref_t<X>::value_type, std::int32_t>
auto dequantize(X&& acc, const product_dequant& dq) {
  using PX = typename std::remove_cvref_t<X>::policy;  // the constants are host memory: read them under X's policy
  return dequantize(std::forward<X>(acc), View<const float, Shape<dyn>, PX>(dq.scale.data(), dq.scale.dims(), dq.scale.strides()),
                    View<const float, Shape<dyn>, PX>(dq.offset.data(), dq.offset.dims(), dq.offset.strides()));
}

}  // namespace tessera::quant
