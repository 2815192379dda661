// An LSTM with int8 weights and activations quantized dynamically (dynamic quantization, as PyTorch's
// quantize_dynamic does for nn.LSTM): each layer's input sequence is quantized once (uint8, its own min and max) and
// multiplied by W_ih for all time steps in one int8 GEMM whose epilogue dequantizes and adds both biases; at each
// step h_{t-1} is quantized with its own range and multiplied by W_hh in an int8 GEMM whose epilogue dequantizes
// onto the step's input gates and runs the gate nonlinearities and the cell update (the float LSTM's own step pass,
// row by row) while the block is in cache, keeping the range of the new h.
// Weights are symmetric int8 per gate row (per output column of the GEMMs).
#pragma once
#include <algorithm>
#include <limits>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "tessera/autodiff/rnn_ops.hpp"
#include "tessera/quant/qmatmul.hpp"

namespace tessera::quant {

/// The smallest and largest finite value of x[0 .. n).
inline std::pair<float, float> minmax(const float* x, index_t n) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  index_t i = 0;
#if TESSERA_SIMD
  using V = simd::vec<float, 16>;
  V vlo = V{} + lo, vhi = V{} + hi;
  for (; i + 16 <= n; i += 16) {
    V v;
    std::memcpy(&v, x + i, sizeof(V));
    vlo = v < vlo ? v : vlo;  // NaN compares false: it is skipped
    vhi = v > vhi ? v : vhi;
  }
  for (int k = 0; k < 16; ++k) lo = std::min(lo, vlo[k]), hi = std::max(hi, vhi[k]);
#endif
  for (; i < n; ++i)
    if (std::isfinite(x[i])) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  return {lo, hi};
}

/// Affine uint8 parameters for the values x[0 .. n) (dynamic quantization).
inline qparams dynamic_qparams(const float* x, index_t n) {
  auto [lo, hi] = minmax(x, n);
  if (!(lo <= hi)) lo = hi = 0;  // empty or all NaN
  return affine_qparams<std::uint8_t>(lo, hi);
}

namespace detail {
/// The recurrent int8 GEMM's epilogue: each finished block of rows (every gate column: the GEMM splits rows) is
/// dequantized onto the step's input gates and run through the gate nonlinearities and the cell update at once, so
/// the step's gates are never stored; it also keeps the range of the h it writes, for the next step's quantization.
struct qlstm_step_epilogue {
  static constexpr bool active = true;
  static constexpr bool local_c = true;
  static constexpr bool wants_threads = true;  // the gate pass is most of the step's work
  const float* gx;      ///< this step's input gates [B, 4H] (both biases in)
  const float* scale;   ///< per gate column: s_h * s_w[j]
  const float* offset;  ///< per gate column: z_h * colsum(q_w)[j]
  float* c;             ///< [B, H]: c_{t-1} in, c_t out
  float* h;             ///< [B, H]: h_t out
  index_t H;
  std::mutex* m;
  float* lo;
  float* hi;
  void local(const std::int32_t* cb, index_t ldb, index_t i0, index_t, index_t rows, index_t) const {
    const index_t G = 4 * H;
    thread_local std::vector<float> g;
    g.resize(std::size_t(G));
    for (index_t r = 0; r < rows; ++r) {
      const index_t b = i0 + r;
      const std::int32_t* acc = cb + r * ldb;
      const float* x = gx + b * G;
      for (index_t j = 0; j < G; ++j) g[std::size_t(j)] = x[j] + (float(acc[j]) - offset[j]) * scale[j];
      ad::detail::lstm_step_forward<float>(g.data(), c + b * H, c + b * H, h + b * H, 1, H, 1);
    }
    const auto [a, z] = minmax(h + i0 * H, rows * H);
    std::lock_guard<std::mutex> lock(*m);
    *lo = std::min(*lo, a), *hi = std::max(*hi, z);
  }
  void operator()(index_t, index_t, index_t, index_t) const {}
};
}  // namespace detail

/// One LSTM layer's int8 weights: W_ih^T [in, 4H] and W_hh^T [H, 4H] (gates i, f, g, o), and b_ih + b_hh.
struct qlstm_layer {
  index_t in = 0, H = 0;
  std::shared_ptr<const qweight> w_ih, w_hh;
  Tensor<float, Shape<dyn>, cpu_threads> bias;
};

/// A stacked LSTM with int8 weights for inference (dropout between layers is the identity).
struct qlstm {
  std::vector<qlstm_layer> layers;

  /// From a float LSTM's layers (nn::LSTM's state.layers).
  template <class Params>
  explicit qlstm(const std::vector<Params>& fl) {
    for (const auto& p : fl) {
      qlstm_layer l;
      const auto& wi = p.weight_ih.value();
      const auto& wh = p.weight_hh.value();
      l.H = wh.dims()[1];
      l.in = wi.dims()[1];
      l.w_ih = std::make_shared<const qweight>(wi.data(), l.in, 4 * l.H, 1, l.in);  // [4H, in] read as its transpose
      l.w_hh = std::make_shared<const qweight>(wh.data(), l.H, 4 * l.H, 1, l.H);
      l.bias = Tensor<float, Shape<dyn>, cpu_threads>(4 * l.H);
      for (index_t j = 0; j < 4 * l.H; ++j) l.bias.data()[j] = p.bias_ih.value().data()[j] + p.bias_hh.value().data()[j];
      layers.push_back(std::move(l));
    }
  }

  /// y [T*B, H] (time-major: row t*B + b) from x [T*B, in] (time-major).
  void run_time_major(const Tensor<float, Shape<dyn, dyn>, cpu_threads>& x, index_t T, index_t B,
                      Tensor<float, Shape<dyn, dyn>, cpu_threads>& y) const {
    using Mat = Tensor<float, Shape<dyn, dyn>, cpu_threads>;
    using QMat = Tensor<std::uint8_t, Shape<dyn, dyn>, cpu_threads>;
    const int nt = cpu_threads::num_threads();
    Mat cur = x, gates, c;
    for (const auto& l : layers) {
      if (cur.dims()[1] != l.in)
        throw shape_error("tessera::quant::qlstm: the input " + tessera::detail::format_dims(cur.dims()) + " does not fit a layer taking " +
                          std::to_string(l.in) + " features");
      const index_t H = l.H, G = 4 * H;
      // the input projection of every step: one int8 GEMM, both biases in its epilogue
      const qparams qx = dynamic_qparams(cur.data(), cur.size());
      QMat xq(T * B, l.in);
      xq = quantize(cur, qx);
      gates = Mat(T * B, G);
      const product_dequant dx(*l.w_ih, qx);
      gates = dequantize(matmul(xq, l.w_ih, qx), dx) + l.bias;
      Mat out(T * B, H);
      c = Mat(B, H);
      QMat hq(B, H);
      std::mutex m;
      float lo = 0, hi = 0;  // the range of the last h written
      for (index_t t = 0; t < T; ++t) {
        float* ht = out.data() + t * B * H;
        if (t == 0) {  // from the zero state: the input gates alone
          ad::detail::lstm_step_forward<float>(gates.data(), nullptr, c.data(), ht, B, H, nt);
          std::tie(lo, hi) = minmax(ht, B * H);
          continue;
        }
        // h_{t-1} quantized with its own range, times W_hh^T in int8; the gate pass runs as the GEMM's epilogue
        const View<const float, Shape<dyn, dyn>, cpu_threads> h(ht - B * H, {B, H}, {H, 1});
        if (!(lo <= hi)) lo = hi = 0;
        const qparams qh = affine_qparams<std::uint8_t>(lo, hi);
        hq = quantize(h, qh);
        const product_dequant dh(*l.w_hh, qh);
        lo = std::numeric_limits<float>::infinity(), hi = -lo;
        const detail::qlstm_step_epilogue epi{gates.data() + t * B * G, dh.scale.data(), dh.offset.data(), c.data(), ht, H,
                                              &m, &lo, &hi};
        tessera::detail::cpu_gemm_s8(B, G, H, hq.data(), H, l.w_hh->packed, nullptr, 0, false, nt, epi);
      }
      cur = std::move(out);
    }
    y = std::move(cur);
  }
};

}  // namespace tessera::quant
