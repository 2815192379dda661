// int8 convolution and pooling on NHWC activations (channels innermost, the layout int8 inference libraries
// use): a convolution is then one GEMM, [N*OH*OW pixels, KH*KW*C taps] x [taps, K channels], whose rows the int8
// kernel gathers straight from the input into its packed panels (no column matrix), and whose result is the
// NHWC output seen as a [pixels, channels] matrix: bias (per channel) broadcasts along rows, and dequantize, ReLU
// and requantize run as the GEMM's epilogue exactly as for quant::matmul.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tessera/expr/conv.hpp"
#include "tessera/quant/qmatmul.hpp"

namespace tessera::quant {

/// Convolution weights [K out, C in, KH, KW] (PyTorch's layout) quantized per output channel, as the GEMM's B:
/// rows ordered (kh, kw, c) to match NHWC taps.
struct qconv_weight {
  index_t K = 0, C = 0, KH = 0, KW = 0;
  std::shared_ptr<const qweight> w;
  qconv_weight() = default;
  qconv_weight(const float* weight, index_t K_, index_t C_, index_t KH_, index_t KW_, bool per_channel = true)
      : K(K_), C(C_), KH(KH_), KW(KW_) {
    // B(t, k) with t = (kh * KW + kw) * C + c reads weight[k][c][kh][kw]
    std::vector<float> b(std::size_t(KH * KW * C * K));
    for (index_t k = 0; k < K; ++k)
      for (index_t c = 0; c < C; ++c)
        for (index_t kh = 0; kh < KH; ++kh)
          for (index_t kw = 0; kw < KW; ++kw)
            b[std::size_t(((kh * KW + kw) * C + c) * K + k)] = weight[((k * C + c) * KH + kh) * KW + kw];
    w = std::make_shared<const qweight>(b.data(), KH * KW * C, K, K, 1, per_channel);
  }
};

namespace detail {

/// The int32 accumulator of an int8 convolution of an NHWC uint8 view X [N, H, W, C] (padding reads X's zero
/// point, which stands for 0), as a [N*OH*OW, K] matrix.
template <class X>
struct s8_conv_node : tessera::detail::contraction_node_base<s8_conv_node<X>, std::int32_t, Shape<dyn, dyn>, typename X::policy> {
  using value_type = std::int32_t;
  using shape_type = Shape<dyn, dyn>;
  using policy = typename X::policy;
  static constexpr int rank = 2;
  static constexpr bool epilogue_ok = true;
  static_assert(std::is_same_v<std::remove_const_t<typename X::element_type>, std::uint8_t>,
                "tessera::quant::conv2d_nhwc: the input holds uint8 values (quantize it first)");

  X x;
  qconv_weight w;
  conv2d_options o;
  std::uint8_t pad_value;
  index_t OH = 0, OW = 0;
  tessera::dims_t<2> dims_;

  s8_conv_node(X x_, qconv_weight w_, conv2d_options o_, qparams qx) : x(std::move(x_)), w(std::move(w_)), o(o_) {
    const auto& d = x.dims();
    if (o.groups != 1) throw std::invalid_argument("tessera::quant::conv2d_nhwc: groups are not supported yet");
    if (d[3] != w.C)
      throw shape_error("tessera::quant::conv2d_nhwc: the input " + tessera::detail::format_dims(d) + " (NHWC) has " +
                        std::to_string(d[3]) + " channels, the weights [" + std::to_string(w.K) + ", " + std::to_string(w.C) +
                        ", " + std::to_string(w.KH) + ", " + std::to_string(w.KW) + "] take " + std::to_string(w.C));
    OH = tessera::detail::conv_extent(d[1], w.KH, o.stride, o.padding, o.dilation);
    OW = tessera::detail::conv_extent(d[2], w.KW, o.stride, o.padding, o.dilation);
    if (OH <= 0 || OW <= 0)
      throw shape_error("tessera::quant::conv2d_nhwc: the input " + tessera::detail::format_dims(d) + " is smaller than the " +
                        std::to_string(w.KH) + " x " + std::to_string(w.KW) + " kernel");
    pad_value = std::uint8_t(std::clamp(qx.zero_point, 0, 255));
    dims_ = {d[0] * OH * OW, w.K};
  }
  const tessera::dims_t<2>& expr_dims() const { return dims_; }
  template <class F>
  void for_each_operand(F&& f) const { f(x); }

  template <class DV, class Epi>
  void run_on_host(const DV& dst, const Epi& epi) const {
    using P = typename DV::policy;
    const auto& d = x.dims();
    const auto& s = x.strides();
    if (s[3] != 1 || s[2] != d[3] || s[1] != d[2] * d[3]) {  // the gather reads whole pixels: make X contiguous
      Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, P> xc(x);
      s8_conv_node<decltype(xc.cview())>(xc.cview(), w, o, {1.0f, pad_value}).run_on_host(dst, epi);
      return;
    }
    if (dst.strides()[1] != 1 && w.K > 1) {
      Tensor<std::int32_t, shape_type, P> t(*this);
      DV dd = dst;
      dd = t.cview();
      return;
    }
    const index_t H = d[1], W = d[2], C = d[3], M = dims_[0], Kt = w.KH * w.KW * C, Kp = w.w->packed.Kp;
    const std::uint8_t* xp = x.data();
    const index_t nstride = s[0];
    const index_t plane = OH * OW;
    auto gather = [&](index_t g, std::uint8_t* out) {
      thread_local std::vector<std::uint8_t> row;
      row.resize(std::size_t(Kp));
      for (index_t i = 0; i < tessera::detail::s8_mg; ++i) {
        const index_t r = g * tessera::detail::s8_mg + i;
        if (r < M) {
          const index_t n = r / plane, oh = (r % plane) / OW, ow = r % OW;
          std::uint8_t* t = row.data();
          for (index_t kh = 0; kh < w.KH; ++kh) {
            const index_t ih = oh * o.stride - o.padding + kh * o.dilation;
            for (index_t kw = 0; kw < w.KW; ++kw, t += C) {
              const index_t iw = ow * o.stride - o.padding + kw * o.dilation;
              if (ih >= 0 && ih < H && iw >= 0 && iw < W) std::memcpy(t, xp + n * nstride + (ih * W + iw) * C, std::size_t(C));
              else std::memset(t, pad_value, std::size_t(C));
            }
          }
          std::memset(row.data() + Kt, 0, std::size_t(Kp - Kt));
        } else {
          std::memset(row.data(), 0, std::size_t(Kp));
        }
        for (index_t c = 0; c < Kp; c += tessera::detail::s8_kq)
          std::memcpy(out + c * tessera::detail::s8_mg + i * tessera::detail::s8_kq, row.data() + c, std::size_t(tessera::detail::s8_kq));
      }
    };
    tessera::detail::cpu_gemm_s8_rows(M, w.K, Kt, gather, false, w.w->packed, dst.data(), dst.strides()[0], false,
                                      P::num_threads(), epi);
  }
};
}  // namespace detail

/// The int32 accumulator of conv2d(x, w) on an NHWC uint8 input quantized with qx: a [N*OH*OW, K] matrix (the
/// NHWC output's pixels by channels). Options as tessera::conv2d's (stride, padding, dilation; groups 1).
template <class X>
auto conv2d_nhwc(X&& x, const qconv_weight& w, qparams qx, conv2d_options o = {}) {
  auto ex = tessera::detail::contraction_operand(std::forward<X>(x));
  static_assert(decltype(ex)::rank == 4, "tessera::quant::conv2d_nhwc: the input is [N, H, W, C]");
  return detail::s8_conv_node<decltype(ex)>(std::move(ex), w, o, qx);
}

/// Dequantization constants of an int8 convolution (see product_dequant).
inline product_dequant conv_dequant(const qconv_weight& w, qparams qx) { return product_dequant(*w.w, qx); }

/// 2 x 2, stride 2 max-pool of an NHWC uint8 tensor [N, H, W, C] into [N, H/2, W/2, C] (quantized values keep
/// their order, so the pool runs on them directly and keeps their scale and zero point).
template <class P>
void max_pool2x2_nhwc(const Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, P>& x, Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, P>& y) {
  const auto d = x.dims();
  const index_t N = d[0], H = d[1], W = d[2], C = d[3], OH = H / 2, OW = W / 2;
  if (y.dims() != tessera::dims_t<4>{N, OH, OW, C}) y = Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, P>(N, OH, OW, C);
  const std::uint8_t* xp = x.data();
  std::uint8_t* yp = y.data();
  const index_t rows = N * OH;
  const int nt = rows * OW * C > (1 << 16) ? P::num_threads() : 1;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t r = 0; r < rows; ++r) {
    const index_t n = r / OH, oh = r % OH;
    const std::uint8_t* a = xp + ((n * H + 2 * oh) * W) * C;
    const std::uint8_t* b = a + W * C;
    std::uint8_t* out = yp + r * OW * C;
    for (index_t ow = 0; ow < OW; ++ow) {
      const std::uint8_t *a0 = a + 2 * ow * C, *b0 = b + 2 * ow * C;
      for (index_t c = 0; c < C; ++c)
        out[ow * C + c] = std::max(std::max(a0[c], a0[C + c]), std::max(b0[c], b0[C + c]));
    }
  }
}

}  // namespace tessera::quant
