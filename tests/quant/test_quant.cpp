// Quantization: quantize / dequantize nodes, quantization parameters, observers, int8 products and convolutions
// with their fused epilogues, and the NHWC max-pool, against plain loops.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <tessera/quant/observer.hpp>
#include <tessera/quant/qconv.hpp>
#include <tessera/tessera.hpp>

#include "test_support.hpp"

namespace ts = tessera;
namespace q = tessera::quant;
using ts::dyn;
using ts::index_t;

namespace {
template <class T>
using Mat = ts::Tensor<T, ts::Shape<dyn, dyn>>;
using Vec = ts::Tensor<float, ts::Shape<dyn>>;

/// The reference quantizer, written out as PyTorch's quantize_val: x times 1 / scale rounded half to even, plus the
/// zero point, clamped.
template <class Q>
Q ref_quantize(float x, q::qparams qp) {
  float v = std::nearbyint(x * (1.0f / qp.scale)) + float(qp.zero_point);
  v = std::clamp(v, float(std::numeric_limits<Q>::min()), float(std::numeric_limits<Q>::max()));
  return Q(v);
}

template <class T>
void fill_random(T* p, index_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  for (index_t i = 0; i < n; ++i) p[i] = T(d(rng));
}
}  // namespace

TEST_CASE("affine and symmetric parameters hold zero exactly and cover the range", "[quant]") {
  const auto a = q::affine_qparams<std::uint8_t>(-1.0f, 3.0f);
  CHECK(a.scale == Approx(4.0f / 255));
  CHECK(a.zero_point == 64);  // round(0 - (-1) / (4/255)) = round(63.75)
  const auto b = q::affine_qparams<std::uint8_t>(0.5f, 2.0f);  // widened to [0, 2]: zero point 0
  CHECK(b.zero_point == 0);
  CHECK(b.scale == Approx(2.0f / 255));
  const auto c = q::affine_qparams<std::int8_t>(-2.0f, -1.0f);  // widened to [-2, 0]
  CHECK(c.zero_point == 127);
  CHECK(q::symmetric_qparams(2.54f).scale == Approx(0.02f));
  CHECK_THROWS_WITH(q::affine_qparams(1.0f, 0.0f), Catch::Contains("empty"));
}

TEST_CASE("quantize then dequantize is within half a step inside the range and clamps outside", "[quant]") {
  std::mt19937 rng(1);
  for (index_t n : {1, 7, 33, 65, 127}) {
    Mat<float> x(3, n);
    fill_random(x.data(), x.size(), rng, -3.0f, 5.0f);
    x(0, 0) = std::numeric_limits<float>::quiet_NaN();
    const auto qp = q::affine_qparams<std::uint8_t>(-2.0f, 4.0f);
    Mat<std::uint8_t> qx(3, n);
    qx = q::quantize(x, qp);
    Mat<float> back(3, n);
    back = q::dequantize(qx, qp);
    for (index_t i = 0; i < x.size(); ++i) {
      const float v = x.data()[i];
      if (std::isnan(v)) {
        CHECK(qx.data()[i] == 0);  // NaN goes to the low end
        continue;
      }
      INFO("x " << v);
      CHECK(qx.data()[i] == ref_quantize<std::uint8_t>(v, qp));
      const float lo = qp.scale * (0 - qp.zero_point), hi = qp.scale * (255 - qp.zero_point);
      const float clamped = std::clamp(v, lo, hi);
      CHECK(std::fabs(back.data()[i] - clamped) <= qp.scale / 2 * 1.0001f);
    }
    // int8, symmetric
    const auto qs = q::symmetric_qparams(3.0f);
    Mat<std::int8_t> sx(3, n);
    sx = q::quantize<std::int8_t>(x, qs);
    for (index_t i = 1; i < x.size(); ++i) CHECK(sx.data()[i] == ref_quantize<std::int8_t>(x.data()[i], qs));
  }
}

TEST_CASE("per-channel scales broadcast, and quantize fuses into the expression around it", "[quant]") {
  Mat<float> x(4, 7);
  std::mt19937 rng(2);
  fill_random(x.data(), x.size(), rng, -1.0f, 1.0f);
  Vec scale(7), zp(7);
  for (index_t j = 0; j < 7; ++j) scale.data()[j] = 0.01f * float(j + 1), zp.data()[j] = float(j);
  Mat<std::uint8_t> qx(4, 7);
  ts::stats::reset();
  qx = q::quantize(ts::relu(x * 2.0f), scale, zp);  // one pass: the float expression is never stored
  if (ts::stats::enabled) CHECK(ts::stats::read().passes == 1);
  for (index_t i = 0; i < 4; ++i)
    for (index_t j = 0; j < 7; ++j)
      CHECK(qx(i, j) == ref_quantize<std::uint8_t>(std::max(0.0f, x(i, j) * 2.0f), {scale.data()[j], std::int32_t(j)}));
}

TEST_CASE("observers choose ranges from calibration batches", "[quant][observer]") {
  std::vector<float> a{-1, 0.5f, 2}, b{-3, 1, 0.25f};
  q::minmax_observer mm;
  mm.observe(a.data(), 3);
  mm.observe(b.data(), 3);
  CHECK(mm.lo == -3.0f);
  CHECK(mm.hi == 2.0f);
  CHECK(mm.params() == q::affine_qparams(-3.0f, 2.0f));

  q::moving_average_observer ma;
  ma.momentum = 0.5f;
  ma.observe(a.data(), 3);
  ma.observe(b.data(), 3);
  CHECK(ma.lo == Approx(-2.0f));  // -1 + 0.5 * (-3 - -1)
  CHECK(ma.hi == Approx(1.5f));   // 2 + 0.5 * (1 - 2)

  // the histogram keeps 99.9 % of the values: one outlier among 100000 is clipped
  std::vector<float> v(100000);
  std::mt19937 rng(3);
  fill_random(v.data(), index_t(v.size()), rng, 0.0f, 1.0f);
  v[5] = 1000.0f;
  q::histogram_observer h;
  h.keep = 0.999;
  h.observe(v.data(), index_t(v.size()) / 2);
  h.observe(v.data() + v.size() / 2, index_t(v.size()) / 2);
  const auto [lo, hi] = h.range();
  CHECK(lo == 0.0f);
  CHECK(hi < 2.0f);  // min-max would give 1000
  CHECK(hi > 0.9f);
  q::minmax_observer none;
  CHECK_THROWS(none.params());
}

TEST_CASE("int8 weights: per-channel symmetric quantization within half a step", "[quant]") {
  const index_t K = 33, N = 7;
  std::vector<float> w(std::size_t(N * K));
  std::mt19937 rng(4);
  fill_random(w.data(), N * K, rng, -1.0f, 1.0f);
  for (index_t k = 0; k < K; ++k) w[std::size_t(3 * K + k)] *= 0.01f;  // a small output channel keeps its precision
  const q::qweight qw(w.data(), K, N, 1, K);  // [N, K] read as its transpose
  for (index_t k = 0; k < K; ++k)
    for (index_t j = 0; j < N; ++j) CHECK(std::fabs(qw.real(k, j) - w[std::size_t(j * K + k)]) <= qw.scale[std::size_t(j)] / 2 * 1.0001f);
  CHECK(qw.scale[3] < qw.scale[2] / 50);
}

TEST_CASE("int8 product with dequantize, bias, ReLU and requantize as its epilogue matches loops", "[quant]") {
  std::mt19937 rng(5);
  std::vector<std::array<index_t, 3>> shapes;
  for (index_t M : {1, 7, 33, 65, 127})
    for (index_t K : {1, 33, 127})
      for (index_t N : {1, 7, 65}) shapes.push_back({M, K, N});
  shapes.push_back({333, 1100, 150});  // large enough for both threads to take rows on every path
  for (const auto& [M, K, N] : shapes) {
        INFO("M " << M << " K " << K << " N " << N);
        std::vector<float> w(std::size_t(N * K));
        fill_random(w.data(), N * K, rng, -1.0f, 1.0f);
        auto qw = std::make_shared<const q::qweight>(w.data(), K, N, 1, K);
        Mat<std::uint8_t> x(M, K);
        for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::uint8_t(rng());
        const q::qparams qx{0.02f, 120}, qy{0.05f, 3};
        Vec bias(N);
        fill_random(bias.data(), N, rng, -1.0f, 1.0f);
        const q::product_dequant dq(*qw, qx);
        Mat<std::uint8_t> y(M, N);
        Mat<float> yf(M, N);
        ts::stats::reset();
        y = q::quantize(ts::relu(q::dequantize(q::matmul(x, qw, qx), dq) + bias), qy);
        if (ts::stats::enabled) CHECK(ts::stats::read().passes == 1);  // the GEMM; the rest is its epilogue
        yf = q::dequantize(q::matmul(x, qw, qx), dq) + bias;
        for (index_t i = 0; i < M; ++i)
          for (index_t j = 0; j < N; ++j) {
            std::int64_t acc = 0;
            for (index_t k = 0; k < K; ++k) acc += std::int64_t(x(i, k) - qx.zero_point) * qw->values[std::size_t(k * N + j)];
            const float real = float(acc) * qx.scale * qw->scale[std::size_t(j)] + bias.data()[j];
            CHECK(yf(i, j) == Approx(real).margin(1e-4));
            const auto want = ref_quantize<std::uint8_t>(std::max(real, 0.0f), qy);
            CHECK(std::abs(int(y(i, j)) - int(want)) <= 1);  // float rounding at a .5 boundary may differ by one step
          }
      }
}

TEST_CASE("int8 product reads strided views and names both shapes when they do not fit", "[quant]") {
  const index_t M = 9, K = 13, N = 5;
  std::vector<float> w(std::size_t(N * K), 0.5f);
  auto qw = std::make_shared<const q::qweight>(w.data(), K, N, 1, K);
  Mat<std::uint8_t> xt(K, M);  // x = its transpose: a view with column stride M
  for (index_t i = 0; i < xt.size(); ++i) xt.data()[i] = std::uint8_t(i % 200);
  Mat<std::int32_t> acc(M, N);
  acc = q::matmul(ts::transpose(xt), qw, {1.0f, 0});
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      std::int32_t s = 0;
      for (index_t k = 0; k < K; ++k) s += std::int32_t(xt(k, i)) * qw->values[std::size_t(k * N + j)];
      CHECK(acc(i, j) == s);
    }
  Mat<std::uint8_t> bad(M, K + 1);
  CHECK_THROWS_WITH(acc = q::matmul(bad, qw, {1.0f, 0}), Catch::Contains("[9, 14]") && Catch::Contains("[13, 5]"));
}

TEST_CASE("int8 NHWC convolution with fused requantization matches loops", "[quant][conv]") {
  std::mt19937 rng(6);
  struct geometry {
    index_t N, H, W, C, K, R;
    ts::conv2d_options o;
  };
  for (const auto& g : {geometry{2, 7, 9, 3, 5, 3, {.padding = 1}}, geometry{1, 8, 8, 32, 33, 3, {.stride = 2, .padding = 1}},
                        geometry{3, 5, 5, 1, 7, 3, {}}, geometry{1, 9, 7, 4, 2, 3, {.padding = 2, .dilation = 2}},
                        geometry{2, 6, 5, 8, 9, 3, {.padding = 1}}, geometry{3, 14, 14, 32, 64, 3, {.padding = 1}},
                        geometry{2, 28, 28, 1, 32, 3, {.padding = 1}}, geometry{1, 5, 6, 40, 3, 3, {.stride = 2, .padding = 2, .dilation = 2}}}) {
    std::vector<float> w(std::size_t(g.K * g.C * g.R * g.R));
    fill_random(w.data(), index_t(w.size()), rng, -1.0f, 1.0f);
    const q::qconv_weight qw(w.data(), g.K, g.C, g.R, g.R);
    ts::Tensor<std::uint8_t, ts::Shape<dyn, dyn, dyn, dyn>> x(g.N, g.H, g.W, g.C);
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::uint8_t(rng());
    const q::qparams qx{0.03f, 77}, qy{0.1f, 0};
    Vec bias(g.K);
    fill_random(bias.data(), g.K, rng, -1.0f, 1.0f);
    const auto dq = q::conv_dequant(qw, qx);
    const index_t OH = ts::detail::conv_extent(g.H, g.R, g.o.stride.h, g.o.padding.h, g.o.dilation.h);
    const index_t OW = ts::detail::conv_extent(g.W, g.R, g.o.stride.w, g.o.padding.w, g.o.dilation.w);
    Mat<std::uint8_t> y(g.N * OH * OW, g.K);
    y = q::quantize(ts::relu(q::dequantize(q::conv2d_nhwc(x, qw, qx, g.o), dq) + bias), qy);
    for (index_t n = 0; n < g.N; ++n)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow)
          for (index_t k = 0; k < g.K; ++k) {
            double real = 0;  // in real numbers: padding is 0
            for (index_t c = 0; c < g.C; ++c)
              for (index_t kh = 0; kh < g.R; ++kh)
                for (index_t kw = 0; kw < g.R; ++kw) {
                  const index_t ih = oh * g.o.stride.h - g.o.padding.h + kh * g.o.dilation.h;
                  const index_t iw = ow * g.o.stride.w - g.o.padding.w + kw * g.o.dilation.w;
                  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                  const double xv = qx.scale * (double(x(n, ih, iw, c)) - qx.zero_point);
                  const index_t t = (kh * g.R + kw) * g.C + c;
                  real += xv * qw.w->real(t, k);
                }
            real += bias.data()[k];
            const auto want = ref_quantize<std::uint8_t>(float(std::max(real, 0.0)), qy);
            INFO("n " << n << " oh " << oh << " ow " << ow << " k " << k);
            CHECK(std::abs(int(y((n * OH + oh) * OW + ow, k)) - int(want)) <= 1);
          }
    // with the 2 x 2 max-pool computed window by window: exactly the pool of the unpooled result (the tree is
    // monotonic per channel, so pooling the accumulators first changes nothing)
    if (OH < 2 || OW < 2) continue;
    const index_t PH = OH / 2, PW = OW / 2;
    Mat<std::uint8_t> yp(g.N * PH * PW, g.K);
    yp = q::quantize(ts::relu(q::dequantize(q::conv2d_maxpool2_nhwc(x, qw, qx, g.o), dq) + bias), qy);
    for (index_t n = 0; n < g.N; ++n)
      for (index_t ph = 0; ph < PH; ++ph)
        for (index_t pw = 0; pw < PW; ++pw)
          for (index_t k = 0; k < g.K; ++k) {
            int m = 0;
            for (index_t dh = 0; dh < 2; ++dh)
              for (index_t dw = 0; dw < 2; ++dw) m = std::max(m, int(y((n * OH + 2 * ph + dh) * OW + 2 * pw + dw, k)));
            INFO("n " << n << " ph " << ph << " pw " << pw << " k " << k);
            CHECK(int(yp((n * PH + ph) * PW + pw, k)) == m);
          }
  }
}

TEST_CASE("NHWC 2x2 max-pool of uint8 matches loops", "[quant]") {
  ts::Tensor<std::uint8_t, ts::Shape<dyn, dyn, dyn, dyn>> x(2, 7, 9, 33), y;
  std::mt19937 rng(7);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::uint8_t(rng());
  q::max_pool2x2_nhwc(x, y);
  REQUIRE(y.dims() == ts::dims_t<4>{2, 3, 4, 33});
  for (index_t n = 0; n < 2; ++n)
    for (index_t h = 0; h < 3; ++h)
      for (index_t w = 0; w < 4; ++w)
        for (index_t c = 0; c < 33; ++c) {
          int m = 0;
          for (int dh = 0; dh < 2; ++dh)
            for (int dw = 0; dw < 2; ++dw) m = std::max(m, int(x(n, 2 * h + dh, 2 * w + dw, c)));
          CHECK(int(y(n, h, w, c)) == m);
        }
}
