// Affine quantization: real = scale * (q - zero_point). quantize, dequantize and requantize are elementwise
// expression nodes, so they fuse with what is around them, and around an int8 product they run as its epilogue:
//   y = quant::quantize<std::uint8_t>(relu(quant::dequantize(quant::matmul(x, w)) + bias), out_qp)
// is one GEMM whose blocks are dequantized, biased, rectified and requantized while still in cache.
// Scales and zero points are scalars (per tensor) or tensors that broadcast (per channel).
// Reduced range (PyTorch's reduce_range): affine_qparams<Q>(lo, hi, true) spends 128 levels instead of 256 (uint8
// [0, 127], int8 [-64, 63]) and marks the qparams `reduced`; quantize(x, qp) then clamps to that range, so uint8
// activations stay <= 127 and the int8 GEMM takes its exact vpmaddubsw path on AVX2 CPUs (kernels/cpu/gemm_s8.hpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "tessera/expr/elementwise.hpp"

namespace tessera::quant {

/// real = scale * (q - zero_point)
struct qparams {
  float scale = 1.0f;
  std::int32_t zero_point = 0;
  /// 7-bit range: quantized values lie in [0, 127] (uint8) or [-64, 63] (int8), PyTorch's reduce_range
  bool reduced = false;
  friend bool operator==(const qparams&, const qparams&) = default;
};

/// The smallest and largest stored values of a quantized type.
template <class Q>
inline constexpr float qmin_v = float(std::numeric_limits<Q>::min());
template <class Q>
inline constexpr float qmax_v = float(std::numeric_limits<Q>::max());

/// The smallest and largest stored values of Q in the reduced (7-bit) range.
template <class Q>
inline constexpr float qmin_reduced_v = std::is_signed_v<Q> ? -64.0f : 0.0f;
template <class Q>
inline constexpr float qmax_reduced_v = std::is_signed_v<Q> ? 63.0f : 127.0f;

/// Affine parameters covering [lo, hi] (widened to hold 0, so that zero padding and ReLU's zero are exact); with
/// reduce_range, over the 7-bit range as PyTorch's observers with reduce_range=True (quint8: quant_min 0, quant_max
/// 127; scale (hi - lo) / 127, zero point 0 - round(lo / scale) clamped to [0, 127]).
template <class Q = std::uint8_t>
qparams affine_qparams(float lo, float hi, bool reduce_range = false) {
  static_assert(std::is_same_v<Q, std::uint8_t> || std::is_same_v<Q, std::int8_t>, "tessera::quant: uint8 or int8");
  if (!(lo <= hi) || !std::isfinite(lo) || !std::isfinite(hi))
    throw std::invalid_argument("tessera::quant::affine_qparams: the range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                "] is empty or not finite (was any value observed?)");
  lo = std::min(lo, 0.0f), hi = std::max(hi, 0.0f);
  const float span = hi - lo;
  const float qlo = reduce_range ? qmin_reduced_v<Q> : qmin_v<Q>, qhi = reduce_range ? qmax_reduced_v<Q> : qmax_v<Q>;
  const float scale = span > 0 ? span / (qhi - qlo) : 1.0f;
  // PyTorch's observers: quant_min - round(min / scale), rounded before the subtraction (which may be inexact)
  const float zp = qlo - std::nearbyint(lo / scale);
  return {scale, std::int32_t(std::clamp(zp, qlo, qhi)), reduce_range};
}

/// Symmetric int8 parameters for values in [-absmax, absmax] (weights): zero point 0, q in [-127, 127].
inline qparams symmetric_qparams(float absmax) {
  if (!(absmax >= 0) || !std::isfinite(absmax))
    throw std::invalid_argument("tessera::quant::symmetric_qparams: the bound " + std::to_string(absmax) + " is not finite");
  return {absmax > 0 ? absmax / 127.0f : 1.0f, 0};
}

namespace op {

/// round-half-even of x already clamped to a small range (|x| < 2^22): the same bits in packets and scalars
template <class V>
TS_INLINE V round_small(V x) {
  if constexpr (detail::is_scalar_v<V>) return std::nearbyint(x);
  else return (x + 12582912.0f) - 12582912.0f;  // 1.5 * 2^23
}

/// q = clamp(round(x * (1/scale)) + zero_point) as Q; operands (x, 1/scale, zero_point), all float, the zero point an
/// integer. PyTorch's order (quantize_val, fbgemm's Quantize): the zero point is added after rounding, which differs
/// from round(x / scale + zero_point) at ties. Clamping to [qmin - zp, qmax - zp] before rounding is the same as
/// clamping after (the bounds are integers) and keeps round_small's argument small.
template <class Q>
struct quantize {
  static constexpr const char* name = "quantize";
  template <class T>
  static constexpr bool accepts = std::is_same_v<T, float>;
  template <class...>
  using result = Q;
  template <class V>
  static TS_HD TS_INLINE auto apply(V x, V inv_scale, V zp) {
    return to_q(x * inv_scale, zp, V{} + qmin_v<Q>, V{} + qmax_v<Q>);
  }
  /// clamp(round(y) + zp, qlo, qhi) as Q (y = x / scale already; qlo, qhi integers inside Q's range)
  template <class V>
  static TS_HD TS_INLINE auto to_q(V y, V zp, V qlo, V qhi) {
    const V lo = qlo - zp, hi = qhi - zp;
    y = y >= lo ? y : lo;  // written so that NaN goes to the low end
    y = y <= hi ? y : hi;
    y = round_small(y) + zp;
    if constexpr (detail::is_scalar_v<V>) return static_cast<Q>(static_cast<std::int32_t>(y));
    else {
#if TESSERA_SIMD
      constexpr int N = int(sizeof(V) / sizeof(float));
      return __builtin_convertvector(__builtin_convertvector(y, simd::vec<std::int32_t, N>), simd::vec<Q, N>);
#else
      return y;
#endif
    }
  }
};

/// quantize with a range of its own: operands (y = x * (1/scale), zero_point, qhi), all float; the stored values are
/// clamped to [qlo, qhi] with qlo = 0 for uint8 and -(qhi + 1) for int8 (qhi 255 / 127: Q's range; 127 / 63: the
/// reduced one). The same arithmetic as quantize (x * (1/scale) is the same product).
template <class Q>
struct quantize_range {
  static constexpr const char* name = "quantize";
  template <class T>
  static constexpr bool accepts = std::is_same_v<T, float>;
  template <class...>
  using result = Q;
  template <class V>
  static TS_HD TS_INLINE auto apply(V y, V zp, V qhi) {
    if constexpr (std::is_signed_v<Q>) return quantize<Q>::to_q(y, zp, -(qhi + 1.0f), qhi);
    else return quantize<Q>::to_q(y, zp, V{} + 0.0f, qhi);
  }
};

/// real = (q - zero_point) * scale; operands (q of any integer type, scale, zero_point), the last two float.
struct dequantize {
  static constexpr const char* name = "dequantize";
  template <class T>
  static constexpr bool accepts = std::is_integral_v<T> && !std::is_same_v<T, bool>;
  template <class...>
  using result = float;
  template <class VQ, class V>
  static TS_HD TS_INLINE V apply(VQ q, V scale, V zp) {
    if constexpr (detail::is_scalar_v<VQ>) return (float(q) - zp) * scale;
    else {
#if TESSERA_SIMD
      return (__builtin_convertvector(q, V) - zp) * scale;
#else
      return q;
#endif
    }
  }
};

}  // namespace op

namespace detail {
using tessera::detail::as_expr;
using tessera::detail::make_map;

/// A scale or zero point operand: a float scalar, or a tensor / expression of floats (per channel, broadcast).
template <class X>
auto param_expr(X&& x) {
  if constexpr (tessera::detail::is_scalar_v<X>) return tessera::detail::scalar_node<float>{float(x)};
  else {
    auto e = as_expr(std::forward<X>(x));
    static_assert(std::is_same_v<typename decltype(e)::value_type, float>,
                  "tessera::quant: per-channel scales and zero points are float tensors");
    return e;
  }
}
}  // namespace detail

/// x (float) to Q with scale and zero point (scalars, or float tensors broadcast against x: per channel).
template <class Q = std::uint8_t, tessera::detail::TensorLike X, class S, class Z>
auto quantize(X&& x, S&& scale, Z&& zero_point) {
  static_assert(std::is_same_v<Q, std::uint8_t> || std::is_same_v<Q, std::int8_t>, "tessera::quant::quantize: to uint8 or int8");
  auto ex = detail::as_expr(std::forward<X>(x));
  (void)error::element_type_not_supported<op::quantize<Q>, typename decltype(ex)::value_type>::ok;
  auto inv = [&] {
    if constexpr (tessera::detail::is_scalar_v<S>) return tessera::detail::scalar_node<float>{1.0f / float(scale)};
    else return tessera::detail::make_binary<tessera::op::div>(1.0f, detail::param_expr(std::forward<S>(scale)));
  }();
  return detail::make_map<op::quantize<Q>>(std::move(ex), std::move(inv), detail::param_expr(std::forward<Z>(zero_point)));
}
/// The same with qp's scale and zero point, into qp's range (Q's, or the reduced one when qp.reduced).
template <class Q = std::uint8_t, tessera::detail::TensorLike X>
auto quantize(X&& x, const qparams& qp) {
  static_assert(std::is_same_v<Q, std::uint8_t> || std::is_same_v<Q, std::int8_t>, "tessera::quant::quantize: to uint8 or int8");
  auto ex = detail::as_expr(std::forward<X>(x));
  (void)error::element_type_not_supported<op::quantize<Q>, typename decltype(ex)::value_type>::ok;
  using sc = tessera::detail::scalar_node<float>;
  return detail::make_map<op::quantize_range<Q>>(tessera::detail::make_binary<tessera::op::mul>(std::move(ex), sc{1.0f / qp.scale}),
                                                 sc{float(qp.zero_point)}, sc{qp.reduced ? qmax_reduced_v<Q> : qmax_v<Q>});
}

/// q (any integer type) to float: (q - zero_point) * scale; scalars or float tensors broadcast against q.
template <tessera::detail::TensorLike X, class S, class Z>
auto dequantize(X&& q, S&& scale, Z&& zero_point) {
  auto eq = detail::as_expr(std::forward<X>(q));
  (void)error::element_type_not_supported<op::dequantize, typename decltype(eq)::value_type>::ok;
  return detail::make_map<op::dequantize>(std::move(eq), detail::param_expr(std::forward<S>(scale)),
                                          detail::param_expr(std::forward<Z>(zero_point)));
}
template <tessera::detail::TensorLike X>
auto dequantize(X&& q, const qparams& qp) {
  return dequantize(std::forward<X>(q), qp.scale, float(qp.zero_point));
}

/// From one quantization to another (an int32 accumulator or a quantized tensor) in one pass.
template <class Q = std::uint8_t, tessera::detail::TensorLike X>
auto requantize(X&& q, const qparams& from, const qparams& to) {
  return quantize<Q>(dequantize(std::forward<X>(q), from), to);
}

}  // namespace tessera::quant
