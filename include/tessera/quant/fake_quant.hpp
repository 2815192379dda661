// Fake quantization for quantization-aware training: differentiable operations on ad::Vars whose forward rounds
// values to the grid an int8 model will use and turns them back into floats, and whose backward lets gradients
// through unchanged where the value fell inside the grid's range (the straight-through estimator) and stops them
// outside, as PyTorch's torch.fake_quantize_per_tensor_affine / torch.fake_quantize_per_channel_affine.
//
//   auto a = quant::fake_quantize(x, qp);                        // activations: affine uint8, per tensor
//   auto w = quant::fake_quantize_per_channel(weight, scales);   // weights: symmetric int8 [-127, 127], per output
//                                                                //   channel (axis 0), zero points 0
//   quant::per_channel_symmetric_scales(weight.value())          // the scales the int8 model's weights get (|max| / 127)
//
// What it guarantees: the forward is (clamp(round(x * (1 / scale)) + zero_point, qmin, qmax) - zero_point) * scale
// with round half to even and 1 / scale computed in float first: the order of quant::quantize and of the int8
// weights (quant/quantize.hpp, quant/qmatmul.hpp), so a fake-quantized value is exactly the real value of the
// integer the int8 model stores. NaN goes to the low end (as quant::quantize) and gets no gradient. The gradient is
// g where qmin <= round(x / scale) + zero_point <= qmax, else 0 (PyTorch's mask, rounding before the test).
// The observers that choose the scales are quant/observer.hpp's (moving_average_observer for activations).
// Host policies only (cpu, cpu_threads); quant/qat.hpp builds a model's fake-quantized forward from these.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/autodiff/ops.hpp"
#include "tessera/quant/quantize.hpp"

namespace tessera::quant {

namespace detail {

/// One element's quantization: q in [qmin, qmax] (NaN to qmin) and whether round(x * inv) + zp was inside.
struct fq_point {
  float q;
  bool inside;
};
inline fq_point fq_code(float x, float inv, float zp, float qmin, float qmax) {
  const float r = std::nearbyint(x * inv) + zp;  // rounding before the zero point, as quant::quantize
  if (!(r >= qmin)) return {qmin, false};        // also NaN
  if (r > qmax) return {qmax, false};
  return {r, true};
}

/// Threads for a loop over n elements under P.
template <class P>
int loop_threads(index_t n) {
  return n >= (index_t(1) << 15) ? P::num_threads() : 1;
}

template <class P>
void check_host_policy() {
  static_assert(!P::on_device, "tessera::quant: fake quantization runs on host policies (cpu, cpu_threads)");
}

}  // namespace detail

/// Per-channel symmetric int8 scales of weights [K, ...] (axis 0): max |w| / 127 per channel (1 for an all-zero one),
/// exactly the scales quant::qweight gives the int8 model's weights per output channel.
template <class T, class S, class P>
std::vector<float> per_channel_symmetric_scales(const Tensor<T, S, P>& w) {
  detail::check_host_policy<P>();
  const index_t K = w.dims()[0], inner = K ? w.size() / K : 0;
  std::vector<float> s(static_cast<std::size_t>(K));
  for (index_t k = 0; k < K; ++k) {
    float m = 0;
    for (index_t i = 0; i < inner; ++i) {
      const float v = std::fabs(w.data()[k * inner + i]);
      if (!std::isfinite(v)) throw std::invalid_argument("tessera::quant::per_channel_symmetric_scales: a weight is not finite");
      m = std::max(m, v);
    }
    s[std::size_t(k)] = symmetric_qparams(m).scale;
  }
  return s;
}

/// Per-tensor affine fake quantization of x with qp (uint8 range [0, 255] by default).
template <int R, class P>
ad::Var<float, R, P> fake_quantize(const ad::Var<float, R, P>& x, qparams qp, int qmin = 0, int qmax = 255) {
  detail::check_host_policy<P>();
  if (!(qp.scale > 0) || !std::isfinite(qp.scale))
    throw std::invalid_argument("tessera::quant::fake_quantize: the scale " + std::to_string(qp.scale) + " is not positive and finite");
  if (qmin >= qmax || qp.zero_point < qmin || qp.zero_point > qmax)
    throw std::invalid_argument("tessera::quant::fake_quantize: the zero point " + std::to_string(qp.zero_point) +
                                " is outside the range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "]");
  using V = ad::Var<float, R, P>;
  const index_t n = x.size();
  const float inv = 1.0f / qp.scale, zp = float(qp.zero_point), lo = float(qmin), hi = float(qmax), s = qp.scale;
  typename V::tensor y(x.dims());
  auto mask = std::make_shared<std::vector<std::uint8_t>>(std::size_t(n));
  const float* xp = x.value().data();
  float* yp = y.data();
  std::uint8_t* mp = mask->data();
  const int nt = detail::loop_threads<P>(n);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t i = 0; i < n; ++i) {
    const auto p = detail::fq_code(xp[i], inv, zp, lo, hi);
    yp[i] = (p.q - zp) * s;
    mp[i] = p.inside;
  }
  (void)nt;
  return V::make(std::move(y), [x, mask, n](const auto& g) {
    bool acc = false;
    float* dx = ad::detail::grad_of(x, acc);
    if (!dx) return;
    const float* gp = g.data();
    const std::uint8_t* m = mask->data();
    const int nt = detail::loop_threads<P>(n);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
    for (index_t i = 0; i < n; ++i) {
      const float v = m[i] ? gp[i] : 0.0f;
      dx[i] = acc ? dx[i] + v : v;
    }
    (void)nt;
  }, x);
}

/// Per-channel symmetric fake quantization of w [K, ...] along axis 0 with one scale per channel (zero points 0),
/// to [qmin, qmax] = [-127, 127] by default (the int8 model's weights).
template <int R, class P>
ad::Var<float, R, P> fake_quantize_per_channel(const ad::Var<float, R, P>& w, const std::vector<float>& scales, int qmin = -127,
                                               int qmax = 127) {
  detail::check_host_policy<P>();
  static_assert(R >= 1, "tessera::quant::fake_quantize_per_channel: the weights have a channel axis (axis 0)");
  const index_t K = w.dims()[0], n = w.size(), inner = K ? n / K : 0;
  if (index_t(scales.size()) != K)
    throw shape_error("tessera::quant::fake_quantize_per_channel: " + std::to_string(scales.size()) + " scales for the weights " +
                      tessera::detail::format_dims(w.dims()) + " (one per channel of axis 0: " + std::to_string(K) + ")");
  for (float s : scales)
    if (!(s > 0) || !std::isfinite(s))
      throw std::invalid_argument("tessera::quant::fake_quantize_per_channel: the scale " + std::to_string(s) + " is not positive and finite");
  if (qmin >= qmax || qmin > 0 || qmax < 0)
    throw std::invalid_argument("tessera::quant::fake_quantize_per_channel: the range [" + std::to_string(qmin) + ", " +
                                std::to_string(qmax) + "] does not hold the zero point 0");
  using V = ad::Var<float, R, P>;
  typename V::tensor y(w.dims());
  auto mask = std::make_shared<std::vector<std::uint8_t>>(std::size_t(n));
  const float* wp = w.value().data();
  for (index_t k = 0; k < K; ++k) {
    const float s = scales[std::size_t(k)], inv = 1.0f / s;
    for (index_t i = k * inner; i < (k + 1) * inner; ++i) {
      const auto p = detail::fq_code(wp[i], inv, 0.0f, float(qmin), float(qmax));
      y.data()[i] = p.q * s;
      (*mask)[std::size_t(i)] = p.inside;
    }
  }
  return V::make(std::move(y), [w, mask, n](const auto& g) {
    bool acc = false;
    float* dw = ad::detail::grad_of(w, acc);
    if (!dw) return;
    for (index_t i = 0; i < n; ++i) {
      const float v = (*mask)[std::size_t(i)] ? g.data()[i] : 0.0f;
      dw[i] = acc ? dw[i] + v : v;
    }
  }, w);
}

namespace detail {

// The integer form of a fake-quantized forward (quant/qat.hpp): a product of grid integers is exact in float while
// its sums stay below 2^24, so (x_int * w_int) * (s_x * s_w) + bias is computed with the int8 model's own roundings.

/// The integers q - zero_point of x, already fake-quantized with qp: round(x * (1 / scale)) (exact: x is on the grid);
/// the gradient is g / scale (the straight-through mask was applied by the fake quantization that made x).
template <int R, class P>
ad::Var<float, R, P> to_grid(const ad::Var<float, R, P>& x, qparams qp) {
  using V = ad::Var<float, R, P>;
  const index_t n = x.size();
  const float inv = 1.0f / qp.scale;
  typename V::tensor y(x.dims());
  const float* xp = x.value().data();
  float* yp = y.data();
  const int nt = loop_threads<P>(n);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t i = 0; i < n; ++i) yp[i] = std::nearbyint(xp[i] * inv);
  (void)nt;
  return V::make(std::move(y), [x, inv, n](const auto& g) {
    bool acc = false;
    float* dx = ad::detail::grad_of(x, acc);
    if (!dx) return;
    const float* gp = g.data();
    const int nt = loop_threads<P>(n);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
    for (index_t i = 0; i < n; ++i) dx[i] = acc ? dx[i] + gp[i] * inv : gp[i] * inv;
    (void)nt;
  }, x);
}

/// The int8 weight integers of w [K, ...]: clamp(round(w * (1 / scale_k)), -127, 127), as quant::qweight; the
/// gradient is g / scale_k inside the range, 0 outside (the straight-through estimator on the integer form).
template <int R, class P>
ad::Var<float, R, P> to_grid_per_channel(const ad::Var<float, R, P>& w, const std::vector<float>& scales) {
  using V = ad::Var<float, R, P>;
  const index_t K = w.dims()[0], n = w.size(), inner = K ? n / K : 0;
  typename V::tensor y(w.dims());
  auto gain = std::make_shared<std::vector<float>>(std::size_t(n));  // 1 / scale inside, 0 outside
  for (index_t k = 0; k < K; ++k) {
    const float inv = 1.0f / scales[std::size_t(k)];
    for (index_t i = k * inner; i < (k + 1) * inner; ++i) {
      const auto p = fq_code(w.value().data()[i], inv, 0.0f, -127.0f, 127.0f);
      y.data()[i] = p.q;
      (*gain)[std::size_t(i)] = p.inside ? inv : 0.0f;
    }
  }
  return V::make(std::move(y), [w, gain, n](const auto& g) {
    bool acc = false;
    float* dw = ad::detail::grad_of(w, acc);
    if (!dw) return;
    for (index_t i = 0; i < n; ++i) dw[i] = acc ? dw[i] + g.data()[i] * (*gain)[std::size_t(i)] : g.data()[i] * (*gain)[std::size_t(i)];
  }, w);
}

/// act(y0 * scale[c] + bias[c]) over y0 [N, C, ...] (channels on axis 1; bias may be an empty Var): the int8
/// layers' epilogue, dequantize (s_x * s_w per channel) + bias [+ ReLU], with the int8 epilogue's roundings.
/// Gradients: y0 gets g * mask * scale[c], bias the sums of g * mask.
template <int R, class P>
ad::Var<float, R, P> dequant_bias_act(const ad::Var<float, R, P>& y0, std::vector<float> scale, const ad::Var<float, 1, P>& bias,
                                      bool relu) {
  using V = ad::Var<float, R, P>;
  const auto d = y0.dims();
  const index_t N = d[0], C = d[1], inner = N * C ? y0.size() / (N * C) : 0;
  const bool has_b = bias.defined();
  typename V::tensor y(d);
  auto sc = std::make_shared<std::vector<float>>(std::move(scale));
  const float* bp = has_b ? bias.value().data() : nullptr;
  const float* xp = y0.value().data();
  float* yp = y.data();
  const int nt = loop_threads<P>(y0.size());
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t r = 0; r < N * C; ++r) {
    const index_t c = r % C;
    const float s = (*sc)[std::size_t(c)], b = bp ? bp[c] : 0.0f;
    for (index_t i = r * inner; i < (r + 1) * inner; ++i) {
      // two expressions, as the int8 epilogue's dequantize and add: a compiler that contracts across expressions
      // (GCC's default -ffp-contract=fast) makes one FMA of both, one that contracts within one (clang's) neither
      const float m = xp[i] * s;
      const float v = m + b;
      yp[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
  }
  (void)nt;
  auto back = [y0, bias, sc, relu, N, C, inner](const auto& g, const auto& out) {
    bool acc_x = false, acc_b = false;
    float* dx = ad::detail::grad_of(y0, acc_x);
    float* db = ad::detail::grad_of(bias, acc_b);
    std::vector<double> row_sum(std::size_t(N * C));  // per (image, channel), summed over the images after
    const float* gp = g.data();
    const float* op = out.data();
    const int nt = loop_threads<P>(N * C * inner);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
    for (index_t r = 0; r < N * C; ++r) {
      const float s = (*sc)[std::size_t(r % C)];
      double sum = 0;
      for (index_t i = r * inner; i < (r + 1) * inner; ++i) {
        const float gi = (!relu || op[i] > 0.0f) ? gp[i] : 0.0f;
        if (dx) dx[i] = acc_x ? dx[i] + gi * s : gi * s;
        sum += gi;
      }
      row_sum[std::size_t(r)] = sum;
    }
    (void)nt;
    if (!db) return;
    for (index_t c = 0; c < C; ++c) {
      double sum = 0;
      for (index_t nn = 0; nn < N; ++nn) sum += row_sum[std::size_t(nn * C + c)];
      db[c] = acc_b ? db[c] + float(sum) : float(sum);
    }
  };
  if (has_b) return V::make(std::move(y), std::move(back), y0, bias);
  return V::make(std::move(y), std::move(back), y0);
}

}  // namespace detail

}  // namespace tessera::quant
