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

/// What the convolution's row gather reads, by value: byte stores may alias anything reached through a pointer,
/// and the compiler would reload each of these after every one.
struct s8_gather {
  const std::uint8_t* xp;
  const std::uint8_t* xend;  ///< one past the input's last byte (no read goes beyond it)
  index_t nstride, H, W, C, OH, OW, M, Kt, Kp, KH, KW, st, pd, dl;
  std::uint8_t pv;
  bool pooled;  ///< rows in 2 x 2 window order: row 4 w + q is pixel q of window w (for a max-pool of the result)
};

/// Rows [16 g, 16 g + 16) of the convolution's implicit [pixels, taps] matrix into the int8 GEMM's group layout
/// (row i's tap k at out[(k / 64) * 1024 + i * 64 + k % 64]).
inline void s8_gather_group(const s8_gather p, index_t g, std::uint8_t* out) {
  const auto [xp, xend, nstride, H, W, C, OH, OW, M, Kt, Kp, KH, KW, st, pd, dl, pv, pooled] = p;
  constexpr index_t MG = tessera::detail::s8_mg, KQ = tessera::detail::s8_kq;
  auto at = [&](index_t i, index_t k) { return out + (k / KQ) * (MG * KQ) + i * KQ + k % KQ; };
  // len bytes of row i at k, split where they cross a 64-byte chunk of the layout
  auto put = [&](index_t i, index_t k, const std::uint8_t* src, index_t len) {
    while (len > 0) {
      const index_t n = std::min(len, KQ - k % KQ);
      std::memcpy(at(i, k), src, std::size_t(n));
      k += n, src += n, len -= n;
    }
  };
  auto fill = [&](index_t i, index_t k, std::uint8_t v, index_t len) {
    while (len > 0) {
      const index_t n = std::min(len, KQ - k % KQ);
      std::memset(at(i, k), v, std::size_t(n));
      k += n, len -= n;
    }
  };
  const bool one_chunk = Kp == KQ;    // each row one 64-byte line (a first layer: C * KH * KW <= 64)
  const bool blocks32 = C % 32 == 0;  // taps of whole 32-byte blocks, never across a 64-byte chunk
  const index_t run = KW * C;         // an interior pixel's taps of one kernel row: one run of bytes (dilation 1)
  if (one_chunk) std::memset(out, 0, std::size_t(MG * KQ));
  // the group's first pixel, then stepping (divisions per row would cost more than the copies)
  const index_t PH = OH / 2, PW = OW / 2;
  index_t n = 0, oh = 0, ow = 0, ph = 0, pw = 0, q = 0;
  const index_t r0 = g * MG;
  if (pooled) {
    const index_t wi = r0 / 4;
    n = wi / (PH * PW), ph = (wi % (PH * PW)) / PW, pw = wi % PW, q = r0 % 4;
  } else {
    n = r0 / (OH * OW), oh = (r0 % (OH * OW)) / OW, ow = r0 % OW;
  }
  for (index_t i = 0; i < MG; ++i) {
    if (r0 + i >= M) {
      if (!one_chunk) fill(i, 0, 0, Kp);
      continue;
    }
    if (pooled) oh = 2 * ph + q / 2, ow = 2 * pw + q % 2;
    const std::uint8_t* img = xp + n * nstride;
    const index_t ih0 = oh * st - pd, iw0 = ow * st - pd;
    if (dl == 1 && ih0 >= 0 && ih0 + KH <= H && iw0 >= 0 && iw0 + KW <= W) {  // inside the image: no bounds to test
      const std::uint8_t* src = img + (ih0 * W + iw0) * C;
      if (one_chunk) {
        std::uint8_t* dst = out + i * KQ;
        if (run <= 8 && src + (KH - 1) * W * C + 8 <= xend) {
          // 8 bytes a kernel row: each store runs past its row into the next one's bytes, which that row's store
          // then overwrites; the last one's overrun lands in K's padding, zeroed again after
          for (index_t kh = 0; kh < KH; ++kh, src += W * C, dst += run) std::memcpy(dst, src, 8);
          std::memset(out + i * KQ + Kt, 0, std::size_t(std::min<index_t>(8, KQ - Kt)));
        } else {
          for (index_t kh = 0; kh < KH; ++kh, src += W * C, dst += run)
            for (index_t b = 0; b < run; ++b) dst[b] = src[b];
        }
      } else if (blocks32) {
        for (index_t kh = 0; kh < KH; ++kh, src += W * C)
          for (index_t b = 0; b < run; b += 32) std::memcpy(at(i, kh * run + b), src + b, 32);
        fill(i, Kt, 0, Kp - Kt);
      } else {
        for (index_t kh = 0; kh < KH; ++kh, src += W * C) put(i, kh * run, src, run);
        fill(i, Kt, 0, Kp - Kt);
      }
    } else {  // at the border: tap by tap, the padding reads the zero point
      for (index_t kh = 0; kh < KH; ++kh)
        for (index_t kw = 0; kw < KW; ++kw) {
          const index_t ih = ih0 + kh * dl, iw = iw0 + kw * dl, k = (kh * KW + kw) * C;
          if (ih >= 0 && ih < H && iw >= 0 && iw < W) put(i, k, img + (ih * W + iw) * C, C);
          else fill(i, k, pv, C);
        }
      if (!one_chunk) fill(i, Kt, 0, Kp - Kt);
    }
    if (pooled) {
      if (++q == 4) {
        q = 0;
        if (++pw == PW) {
          pw = 0;
          if (++ph == PH) ph = 0, ++n;
        }
      }
    } else if (++ow == OW) {
      ow = 0;
      if (++oh == OH) oh = 0, ++n;
    }
  }
}

/// The epilogue of a convolution computed in window order: each finished block of accumulators (in the GEMM
/// thread's own buffer: the unpooled values never reach memory) is max-pooled four rows by four into the
/// destination (the pooled accumulator), then the outer epilogue runs on the pooled block. Pooling the int32
/// accumulators first is exact: dequantization (scale > 0), the bias and ReLU are one monotonic map per channel.
template <class Epi>
struct pool4_epilogue {
  static constexpr bool active = true;
  static constexpr bool local_c = true;
  std::int32_t* dst;
  index_t ldd;
  const Epi* epi;
  void local(const std::int32_t* cb, index_t ldc, index_t i0, index_t j0, index_t rows, index_t cols) const {
    // the outer epilogue takes blocks from a buffer too: the pooled rows go to one of this thread's, else to dst
    thread_local std::vector<std::int32_t> pooled;
    constexpr bool outer_local = tessera::detail::s8_local_epilogue<Epi>;
    if constexpr (outer_local) pooled.resize(std::size_t(rows / 4 * ldc));
    std::int32_t* out = outer_local ? pooled.data() : dst + (i0 / 4) * ldd + j0;
    const index_t ldo = outer_local ? ldc : ldd;
    for (index_t w = 0; w < rows / 4; ++w) {
      const std::int32_t* a = cb + 4 * w * ldc;
      std::int32_t* o = out + w * ldo;
      for (index_t j = 0; j < cols; ++j) o[j] = std::max(std::max(a[j], a[ldc + j]), std::max(a[2 * ldc + j], a[3 * ldc + j]));
    }
    if constexpr (outer_local) epi->local(out, ldo, i0 / 4, j0, rows / 4, cols);
    else if constexpr (Epi::active) (*epi)(i0 / 4, j0, rows / 4, cols);
  }
};

/// The int32 accumulator of an int8 convolution of an NHWC uint8 view X [N, H, W, C] (padding reads X's zero
/// point, which stands for 0), as a [N*OH*OW, K] matrix.
template <class X>
struct s8_conv_node : tessera::detail::contraction_node_base<s8_conv_node<X>, std::int32_t, Shape<dyn, dyn>, typename X::policy> {
  using value_type = std::int32_t;
  using shape_type = Shape<dyn, dyn>;
  using policy = typename X::policy;
  static constexpr int rank = 2;
  static constexpr bool epilogue_ok = true;
  static constexpr bool local_epilogue_ok = true;  ///< hands its blocks to a local_c epilogue (see assign)
  static_assert(std::is_same_v<std::remove_const_t<typename X::element_type>, std::uint8_t>,
                "tessera::quant::conv2d_nhwc: the input holds uint8 values (quantize it first)");

  X x;
  qconv_weight w;
  conv2d_options o;
  std::uint8_t pad_value;
  index_t OH = 0, OW = 0;
  bool pool2 = false;  ///< the result is max-pooled 2 x 2 (stride 2): [N*(OH/2)*(OW/2), K]
  bool reduced = false;  ///< x's quantization is 7-bit (values and zero point <= 127): the GEMM may take avx2_u7
  tessera::dims_t<2> dims_;

  s8_conv_node(X x_, qconv_weight w_, conv2d_options o_, qparams qx, bool pool2_ = false)
      : x(std::move(x_)), w(std::move(w_)), o(o_), pool2(pool2_), reduced(qx.reduced) {
    const auto& d = x.dims();
    if (o.groups != 1) throw std::invalid_argument("tessera::quant::conv2d_nhwc: groups are not supported yet");
    if (o.stride.h != o.stride.w || o.padding.h != o.padding.w || o.dilation.h != o.dilation.w)
      throw std::invalid_argument("tessera::quant::conv2d_nhwc: the int8 convolution takes the same stride, padding and "
                                  "dilation on both axes (per-axis values are not supported yet)");
    if (d[3] != w.C)
      throw shape_error("tessera::quant::conv2d_nhwc: the input " + tessera::detail::format_dims(d) + " (NHWC) has " +
                        std::to_string(d[3]) + " channels, the weights [" + std::to_string(w.K) + ", " + std::to_string(w.C) +
                        ", " + std::to_string(w.KH) + ", " + std::to_string(w.KW) + "] take " + std::to_string(w.C));
    OH = tessera::detail::conv_extent(d[1], w.KH, o.stride.h, o.padding.h, o.dilation.h);
    OW = tessera::detail::conv_extent(d[2], w.KW, o.stride.w, o.padding.w, o.dilation.w);
    if (OH <= 0 || OW <= 0)
      throw shape_error("tessera::quant::conv2d_nhwc: the input " + tessera::detail::format_dims(d) + " is smaller than the " +
                        std::to_string(w.KH) + " x " + std::to_string(w.KW) + " kernel");
    pad_value = std::uint8_t(std::clamp(qx.zero_point, 0, 255));
    if (pool2 && (OH < 2 || OW < 2))
      throw shape_error("tessera::quant::conv2d_nhwc: a " + std::to_string(OH) + " x " + std::to_string(OW) +
                        " output is too small for a 2 x 2 max-pool");
    dims_ = {pool2 ? d[0] * (OH / 2) * (OW / 2) : d[0] * OH * OW, w.K};
  }
  const tessera::dims_t<2>& expr_dims() const { return dims_; }
  template <class F>
  void for_each_operand(F&& f) const { f(x); }
};

/// dst = the node's int32 accumulator (policy/planner.hpp executes contraction nodes through this overload); `epi`
/// runs on each finished block (pooled first when the node pools).
template <class X, class DV, class Epi = tessera::detail::no_epilogue>
void execute(const s8_conv_node<X>& nd, const DV& dst, const Epi& epi = {}) {
  using P = typename DV::policy;
  const auto& d = nd.x.dims();
  const auto& s = nd.x.strides();
  if (s[3] != 1 || s[2] != d[3] || s[1] != d[2] * d[3]) {  // the gather reads whole pixels: make X contiguous
    Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, P> xc(nd.x);
    execute(s8_conv_node<decltype(xc.cview())>(xc.cview(), nd.w, nd.o, {1.0f, nd.pad_value, nd.reduced}, nd.pool2), dst, epi);
    return;
  }
  if (dst.strides()[1] != 1 && nd.w.K > 1) {
    Tensor<std::int32_t, typename s8_conv_node<X>::shape_type, P> t(nd);
    DV dd = dst;
    dd = t.cview();
    return;
  }
  const index_t H = d[1], W = d[2], C = d[3], Kt = nd.w.KH * nd.w.KW * C, Kp = nd.w.w->packed.Kp;
  const index_t M = nd.pool2 ? 4 * nd.dims_[0] : nd.dims_[0];  // pooled: the GEMM computes the windows' pixels only
  const s8_gather g0{nd.x.data(), nd.x.data() + d[0] * s[0], s[0], H, W, C, nd.OH, nd.OW, M, Kt, Kp, nd.w.KH, nd.w.KW,
                     nd.o.stride.h, nd.o.padding.h, nd.o.dilation.h, nd.pad_value, nd.pool2};  // square: checked by the node
  auto gather = [g0](index_t g, std::uint8_t* out) { s8_gather_group(g0, g, out); };
  const int8_a_below_128 a7(nd.reduced);  // (the padding is the zero point, <= 127 too)
  if (!nd.pool2) {
    backend<P>::gemm_s8_rows(M, nd.w.K, Kt, gather, false, nd.w.w->packed, dst.data(), dst.strides()[0], false, epi);
    return;
  }
  // blocks of C hold whole windows (they start at multiples of 16 rows): pool each as it is finished
  const pool4_epilogue<Epi> pe{dst.data(), dst.strides()[0], &epi};
  backend<P>::gemm_s8_rows(M, nd.w.K, Kt, gather, false, nd.w.w->packed, nullptr, 0, false, pe);
}
}  // namespace detail

/// The int32 accumulator of conv2d(x, w) on an NHWC uint8 input quantized with qx: a [N*OH*OW, K] matrix (the
/// NHWC output's pixels by channels). Options as tessera::conv2d's (stride, padding, dilation, the same on both axes;
/// groups 1).
template <class X>
auto conv2d_nhwc(X&& x, const qconv_weight& w, qparams qx, conv2d_options o = {}) {
  auto ex = tessera::detail::contraction_operand(std::forward<X>(x));
  static_assert(decltype(ex)::rank == 4, "tessera::quant::conv2d_nhwc: the input is [N, H, W, C]");
  return detail::s8_conv_node<decltype(ex)>(std::move(ex), w, o, qx);
}

/// The same followed by a 2 x 2, stride 2 max-pool: a [N*(OH/2)*(OW/2), K] matrix. The pixels are computed window by
/// window and each block pooled while in cache, so a surrounding dequantize / bias / ReLU / requantize tree runs on
/// a quarter of the values (exact: it is monotonic per channel) and no separate pooling pass remains.
template <class X>
auto conv2d_maxpool2_nhwc(X&& x, const qconv_weight& w, qparams qx, conv2d_options o = {}) {
  auto ex = tessera::detail::contraction_operand(std::forward<X>(x));
  static_assert(decltype(ex)::rank == 4, "tessera::quant::conv2d_maxpool2_nhwc: the input is [N, H, W, C]");
  return detail::s8_conv_node<decltype(ex)>(std::move(ex), w, o, qx, true);
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
      index_t c = 0;
#if TESSERA_SIMD
      using V = simd::vec<std::uint8_t, 16>;
      for (; c + 16 <= C; c += 16) {
        V p, q2, u, v;
        std::memcpy(&p, a0 + c, 16), std::memcpy(&q2, a0 + C + c, 16), std::memcpy(&u, b0 + c, 16), std::memcpy(&v, b0 + C + c, 16);
        p = p > q2 ? p : q2;
        u = u > v ? u : v;
        p = p > u ? p : u;
        std::memcpy(out + ow * C + c, &p, 16);
      }
#endif
      for (; c < C; ++c) out[ow * C + c] = std::max(std::max(a0[c], a0[C + c]), std::max(b0[c], b0[C + c]));
    }
  }
}

}  // namespace tessera::quant
