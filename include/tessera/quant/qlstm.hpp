// An LSTM with int8 weights and activations quantized dynamically (dynamic quantization, as PyTorch's
// quantize_dynamic does for nn.LSTM): each layer's input sequence is quantized with its own min and max (uint8), and
// at each step h_{t-1} with its own. A step is one pass over the batch: each thread takes blocks of rows, quantizes
// them while packing them for the int8 GEMM, multiplies x_t by W_ih and h_{t-1} by W_hh into int32 buffers of its
// own, dequantizes both onto the bias and runs the gate nonlinearities and the cell update (the float LSTM's own
// step pass) while the block is in cache, keeping the range of the new h. No gate, and no quantized copy of an
// activation, is ever stored.
// Weights are symmetric int8 per gate row (per output column of the GEMMs).
#pragma once
#include <algorithm>
#include <limits>
#include <memory>
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

/// Affine uint8 parameters for a range from minmax (an empty or all-NaN one, lo > hi, counts as [0, 0]).
inline qparams range_qparams(float lo, float hi) {
  if (!(lo <= hi)) lo = hi = 0;
  return affine_qparams<std::uint8_t>(lo, hi);
}

/// Affine uint8 parameters for the values x[0 .. n) (dynamic quantization).
inline qparams dynamic_qparams(const float* x, index_t n) {
  const auto [lo, hi] = minmax(x, n);
  return range_qparams(lo, hi);
}

namespace detail {
/// Quantizes rows [16 g, 16 g + 16) of the float matrix a (M x K, row stride lda) to uint8 (x * (1 / scale) rounded, plus
/// the zero point, clamped: op::quantize's arithmetic, so the values equal those of quantize()) straight into the int8 GEMM's
/// packed group layout (s8_pack_a_group's); rows past M and K's padding are zero.
inline void pack_quantized_group(const float* a, index_t lda, index_t M, index_t K, index_t Kp, index_t g, float inv_scale, float zp,
                                 std::uint8_t* out) {
  using Q = op::quantize<std::uint8_t>;
  tessera::detail::s8_pack_group_rows(M, K, Kp, g, out, [&](index_t r, index_t kc, index_t n, std::uint8_t* o) {
    const float* src = a + r * lda + kc;
    index_t k = 0;
#if TESSERA_SIMD
    constexpr int N = simd::lanes_for<sizeof(float)>;  // the target's vector width
    using V = simd::vec<float, N>;
    for (; k + N <= n; k += N) {
      V v;
      std::memcpy(&v, src + k, sizeof(V));
      const auto q = Q::apply(v, V{} + inv_scale, V{} + zp);
      std::memcpy(o + k, &q, N);
    }
#endif
    for (; k < n; ++k) o[k] = Q::apply(src[k], inv_scale, zp);
  });
}

/// C (M x N int32, row stride N) = quantize(a; qp) * B on the calling thread, a being M x K floats (row stride lda)
/// quantized while packed.
inline void s8_product_of_floats(const float* a, index_t lda, index_t M, index_t K, const qparams& qp, const packed_b_s8& b,
                                 std::int32_t* c) {
  const float inv = 1.0f / qp.scale, zp = float(qp.zero_point);
  tessera::detail::cpu_gemm_s8_rows(
      M, b.N, K, [&](index_t g, std::uint8_t* out) { pack_quantized_group(a, lda, M, K, b.Kp, g, inv, zp, out); }, false, b, c, b.N,
      false, 1);
}
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
  ///
  /// One step is one pass over the batch, split between the threads by rows: for each block of rows the thread
  /// quantizes x_t's rows (the layer's range) and h_{t-1}'s rows (h_{t-1}'s range) while packing them, runs both int8
  /// products into buffers of its own, dequantizes both onto the bias and runs the gate nonlinearities and the cell
  /// update, keeping the range of the h it writes. Neither the gates nor a quantized copy of any activation is stored.
  void run_time_major(const Tensor<float, Shape<dyn, dyn>, cpu_threads>& x, index_t T, index_t B,
                      Tensor<float, Shape<dyn, dyn>, cpu_threads>& y) const {
    using Mat = Tensor<float, Shape<dyn, dyn>, cpu_threads>;
    if (x.dims()[0] != T * B)
      throw shape_error("tessera::quant::qlstm: the input " + tessera::detail::format_dims(x.dims()) + " is not " + std::to_string(T) +
                        " steps of a batch of " + std::to_string(B));
    Mat cur = x;
    // the range of the layer's input; the next layer's is the union of the ranges of the steps' h
    float in_lo, in_hi;
    std::tie(in_lo, in_hi) = minmax(cur.data(), cur.size());
    for (const auto& l : layers) {
      if (cur.dims()[1] != l.in)
        throw shape_error("tessera::quant::qlstm: the input " + tessera::detail::format_dims(cur.dims()) + " does not fit a layer taking " +
                          std::to_string(l.in) + " features");
      const qparams qx = range_qparams(in_lo, in_hi);
      Mat out(T * B, l.H), c(B, l.H);
      std::tie(in_lo, in_hi) = run_layer(l, cur.data(), qx, T, B, out.data(), c.data());
      cur = std::move(out);
    }
    y = std::move(cur);
  }

 private:
  static constexpr index_t rows_per_block = 64;  ///< rows a thread takes at a time: their int32 sums stay in L2

  /// One layer over the sequence x (T*B x in, quantized with qx) into out (T*B x H), c [B, H] the cell state;
  /// returns the range of out.
  static std::pair<float, float> run_layer(const qlstm_layer& l, const float* x, const qparams& qx, index_t T, index_t B, float* out,
                                           float* c) {
    const index_t H = l.H, G = 4 * H, in = l.in;
    const auto& wx = *l.w_ih;
    const auto& wh = *l.w_hh;
    // per gate column: value = base + acc_x * sx + acc_h * sh, the zero points' column sums folded into base
    const auto gn = static_cast<std::size_t>(G);
    std::vector<float> sx(gn), sh(gn), base(gn);
    for (index_t j = 0; j < G; ++j) sx[std::size_t(j)] = qx.scale * wx.scale[std::size_t(j)];
    const int nt = B >= 32 ? cpu_threads::num_threads() : 1;
    float seq_lo = std::numeric_limits<float>::infinity(), seq_hi = -seq_lo;
    float lo = 0, hi = 0;  // the range of h_{t-1}
    for (index_t t = 0; t < T; ++t) {
      const qparams qh = range_qparams(lo, hi);
      for (index_t j = 0; j < G; ++j) {
        const std::size_t u = std::size_t(j);
        sh[u] = qh.scale * wh.scale[u];
        base[u] = l.bias.data()[j] - float(qx.zero_point) * float(wx.packed.col_sums[u]) * sx[u];
        if (t > 0) base[u] -= float(qh.zero_point) * float(wh.packed.col_sums[u]) * sh[u];
      }
      const float* xt = x + t * B * in;
      const float* hp = t > 0 ? out + (t - 1) * B * H : nullptr;
      float* ht = out + t * B * H;
      std::vector<float> tlo(static_cast<std::size_t>(nt), std::numeric_limits<float>::infinity()),
          thi(static_cast<std::size_t>(nt), -std::numeric_limits<float>::infinity());
      auto work = [&](int tid, int n) {
        // rows split in multiples of 32 (the AMX block's height)
        const index_t blocks = (B + 31) / 32, r0 = std::min(B, 32 * (blocks * tid / n)), r1 = std::min(B, 32 * (blocks * (tid + 1) / n));
        thread_local std::vector<std::int32_t> ax, ah;
        thread_local std::vector<float> g;
        ax.resize(std::size_t(rows_per_block * G)), ah.resize(std::size_t(rows_per_block * G)), g.resize(std::size_t(G));
        float a = std::numeric_limits<float>::infinity(), z = -a;
        for (index_t i0 = r0; i0 < r1; i0 += rows_per_block) {
          const index_t rows = std::min(rows_per_block, r1 - i0);
          detail::s8_product_of_floats(xt + i0 * in, in, rows, in, qx, wx.packed, ax.data());
          if (hp) detail::s8_product_of_floats(hp + i0 * H, H, rows, H, qh, wh.packed, ah.data());
          for (index_t r = 0; r < rows; ++r) {
            const std::int32_t* px = ax.data() + r * G;
            const std::int32_t* ph = ah.data() + r * G;
            if (hp)
              for (index_t j = 0; j < G; ++j) g[std::size_t(j)] = base[std::size_t(j)] + float(px[j]) * sx[std::size_t(j)] + float(ph[j]) * sh[std::size_t(j)];
            else
              for (index_t j = 0; j < G; ++j) g[std::size_t(j)] = base[std::size_t(j)] + float(px[j]) * sx[std::size_t(j)];
            const index_t b = i0 + r;
            ad::detail::lstm_row_forward<float>(g.data(), hp ? c + b * H : nullptr, c + b * H, ht + b * H, H);
          }
          const auto [u, v] = minmax(ht + i0 * H, rows * H);
          a = std::min(a, u), z = std::max(z, v);
        }
        tlo[std::size_t(tid)] = a, thi[std::size_t(tid)] = z;
      };
#if defined(_OPENMP)
      if (nt > 1) {
#pragma omp parallel num_threads(nt)
        work(omp_get_thread_num(), omp_get_num_threads());
      } else
#endif
        work(0, 1);
      lo = *std::min_element(tlo.begin(), tlo.end()), hi = *std::max_element(thi.begin(), thi.end());
      seq_lo = std::min(seq_lo, lo), seq_hi = std::max(seq_hi, hi);
    }
    return {seq_lo, seq_hi};
  }
};

}  // namespace tessera::quant
