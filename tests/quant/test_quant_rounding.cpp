// Quantization's rounding, value for value against PyTorch 1.13's formulas written out as plain loops:
//   quantize_per_tensor (quantize_val, fbgemm::Quantize<T, LEGACY = false>):
//       q = clamp(zero_point + nearbyint(x * (1.0f / scale)), qmin, qmax)       (round half to even, in float)
//   dequantize_val: (float(q) - zero_point) * scale; requantize_val = quantize_val(dequantize_val(q))
//   observers' zero point (_calculate_qparams): quant_min - round(min / scale), clamped
// Rounding after adding the zero point (round(x / s + zp)) differs at every .5 tie when the zero point is odd, and
// wherever x / s + zp is not exact in float; these cases are what the tests sweep.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <tessera/quant/qmatmul.hpp>
#include <tessera/quant/quantize.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace q = tessera::quant;
using ts::dyn;
using ts::index_t;

namespace {
using Vec = ts::Tensor<float, ts::Shape<dyn>>;

/// PyTorch's quantize_val: the zero point is added after rounding x * (1 / scale).
template <class Q>
int torch_quantize(float x, float scale, std::int32_t zp) {
  const float inv_scale = 1.0f / scale;
  long long v = (long long)zp + (long long)std::nearbyint(x * inv_scale);
  v = std::max<long long>(v, std::numeric_limits<Q>::min());
  v = std::min<long long>(v, std::numeric_limits<Q>::max());
  return int(v);
}
/// The other order, round(x * (1 / scale) + zp): only to show that a sweep contains cases telling the two apart.
template <class Q>
int add_then_round(float x, float scale, std::int32_t zp) {
  const float v = std::nearbyint(x * (1.0f / scale) + float(zp));
  return int(std::clamp(v, float(std::numeric_limits<Q>::min()), float(std::numeric_limits<Q>::max())));
}
/// PyTorch's dequantize_val.
float torch_dequantize(int q, float scale, std::int32_t zp) { return (float(q) - float(zp)) * scale; }

/// Every .5 tie k + 0.5 (k from -300 to 299) times the scale, through quantize() (packets and the scalar tail),
/// against the reference; returns how many ties the other order would have got wrong.
template <class Q>
int check_ties(float scale, std::int32_t zp) {
  std::vector<float> xs;
  for (int k = -300; k < 300; ++k) xs.push_back((float(k) + 0.5f) * scale);
  Vec x(index_t(xs.size()));
  std::copy(xs.begin(), xs.end(), x.data());
  ts::Tensor<Q, ts::Shape<dyn>> qx(x.size());
  qx = q::quantize<Q>(x, q::qparams{scale, zp});
  int differ = 0;
  for (index_t i = 0; i < x.size(); ++i) {
    const float v = x.data()[i];
    INFO("x " << v << " scale " << scale << " zero point " << zp);
    CHECK(int(qx.data()[i]) == torch_quantize<Q>(v, scale, zp));
    differ += add_then_round<Q>(v, scale, zp) != torch_quantize<Q>(v, scale, zp);
  }
  return differ;
}
}  // namespace

TEST_CASE("quantize rounds x * (1 / scale) half to even before adding the zero point, at every tie", "[quant][rounding]") {
  // scales whose multiples of k + 0.5 are exact ties, and ones (0.1, 0.3, 0.0213) whose ties are inexact
  for (float scale : {1.0f, 0.5f, 0.25f, 0.1f, 0.3f, 0.0213f}) {
    for (std::int32_t zp : {0, 1, 3, 64, 127, 128, 200, 255}) {
      const int differ = check_ties<std::uint8_t>(scale, zp);
      if (zp % 2 == 1 && (scale == 1.0f || scale == 0.5f)) CHECK(differ > 0);  // odd zero point: the orders differ
    }
    for (std::int32_t zp : {-128, -7, -1, 0, 1, 5, 64, 127}) {
      const int differ = check_ties<std::int8_t>(scale, zp);
      if (zp % 2 != 0 && (scale == 1.0f || scale == 0.25f)) CHECK(differ > 0);
    }
  }
}

TEST_CASE("per-channel quantize (scale and zero point tensors) rounds in PyTorch's order", "[quant][rounding]") {
  const index_t R = 40, C = 6;
  ts::Tensor<float, ts::Shape<dyn, dyn>> x(R, C);
  Vec scale(C), zp(C);
  const float scales[C] = {1.0f, 0.5f, 0.1f, 0.25f, 0.3f, 2.0f};
  const std::int32_t zps[C] = {1, 3, 0, -5, 7, 2};
  for (index_t j = 0; j < C; ++j) scale.data()[j] = scales[j], zp.data()[j] = float(zps[j]);
  for (index_t i = 0; i < R; ++i)
    for (index_t j = 0; j < C; ++j) x(i, j) = (float(i) - 20.5f) * scales[j];
  ts::Tensor<std::int8_t, ts::Shape<dyn, dyn>> qx(R, C);
  qx = q::quantize<std::int8_t>(x, scale, zp);
  for (index_t i = 0; i < R; ++i)
    for (index_t j = 0; j < C; ++j) {
      INFO("row " << i << " channel " << j << " x " << x(i, j));
      CHECK(int(qx(i, j)) == torch_quantize<std::int8_t>(x(i, j), scales[j], zps[j]));
    }
}

TEST_CASE("requantize is PyTorch's requantize_val (dequantize, then quantize) at every input value", "[quant][rounding]") {
  // every uint8 / int8 input, between scales whose ratio makes ties, and ones that make near-ties (where
  // real * (1 / scale) + zp is not exact in float, so that even zero points are affected too)
  struct pair_t {
    q::qparams from, to;
  };
  const std::vector<pair_t> pairs{
      {{0.5f, 3}, {1.0f, 4}},      {{0.5f, 3}, {1.0f, 5}},        {{0.25f, 128}, {0.75f, 130}}, {{0.1f, 7}, {0.2f, 10}},
      {{0.1f, 7}, {0.3f, 64}},     {{0.02f, 100}, {0.06f, 128}},  {{0.3f, 0}, {0.2f, 2}},       {{0.011f, 37}, {0.033f, 120}},
      {{0.007f, 1}, {0.021f, 254}}, {{0.05f, 255}, {0.15f, 0}}};
  int differ_even = 0;
  for (const auto& [from, to] : pairs) {
    ts::Tensor<std::uint8_t, ts::Shape<dyn>> src(256);
    for (int v = 0; v < 256; ++v) src.data()[v] = std::uint8_t(v);
    ts::Tensor<std::uint8_t, ts::Shape<dyn>> u8(256);
    u8 = q::requantize<std::uint8_t>(src, from, to);
    ts::Tensor<std::int32_t, ts::Shape<dyn>> acc(256);  // an int32 accumulator as the source
    for (int v = 0; v < 256; ++v) acc.data()[v] = 3 * v - 400;
    ts::Tensor<std::int8_t, ts::Shape<dyn>> s8(256);
    s8 = q::requantize<std::int8_t>(acc, from, q::qparams{to.scale, to.zero_point - 128});
    for (int v = 0; v < 256; ++v) {
      INFO("from (" << from.scale << ", " << from.zero_point << ") to (" << to.scale << ", " << to.zero_point << "), q " << v);
      const float real = torch_dequantize(v, from.scale, from.zero_point);
      CHECK(int(u8.data()[v]) == torch_quantize<std::uint8_t>(real, to.scale, to.zero_point));
      if (to.zero_point % 2 == 0) differ_even += add_then_round<std::uint8_t>(real, to.scale, to.zero_point) != torch_quantize<std::uint8_t>(real, to.scale, to.zero_point);
      const float real32 = torch_dequantize(3 * v - 400, from.scale, from.zero_point);
      CHECK(int(s8.data()[v]) == torch_quantize<std::int8_t>(real32, to.scale, to.zero_point - 128));
    }
  }
  CHECK(differ_even > 0);  // even target zero points too: near-ties that adding the zero point first turns into ties
}

TEST_CASE("affine parameters: the zero point is qmin - round(min / scale), as PyTorch's observers", "[quant][rounding]") {
  // ranges whose min / scale lands on or next to a .5 tie: qmin - min / scale is then inexact in float
  int differ = 0;
  for (int j = 0; j < 120; ++j)
    for (int ulps = -3; ulps <= 3; ++ulps) {
      const float s = 0.01f + 0.0007f * float(j % 7);
      float lo = -(float(j) + 0.5f) * s;
      for (int u = 0; u < std::abs(ulps); ++u) lo = std::nextafter(lo, ulps > 0 ? 0.0f : -1.0f);
      const float hi = lo + 255.0f * s;
      const float scale = (std::max(hi, 0.0f) - std::min(lo, 0.0f)) / 255.0f;  // PyTorch's scale (range widened to hold 0)
      for (int sgn = 0; sgn < 2; ++sgn) {
        const float qmin = sgn ? -128.0f : 0.0f, qmax = sgn ? 127.0f : 255.0f;
        const float t = std::min(lo, 0.0f) / scale;
        const float want = std::clamp(qmin - std::nearbyint(t), qmin, qmax);
        const auto got = sgn ? q::affine_qparams<std::int8_t>(lo, hi) : q::affine_qparams<std::uint8_t>(lo, hi);
        INFO("range [" << lo << ", " << hi << "], " << (sgn ? "int8" : "uint8"));
        CHECK(got.scale == scale);
        CHECK(got.zero_point == std::int32_t(want));
        differ += std::clamp(std::nearbyint(qmin - t), qmin, qmax) != want;
      }
    }
  CHECK(differ > 0);  // the sweep holds ranges where rounding after subtracting from qmin differs
}

TEST_CASE("int8 weights are quantized as quantize_per_channel does: nearbyint(w * (1 / scale))", "[quant][rounding]") {
  // per column j a weight 127 * s_j (so the scale is s_j) and the others at and a few ulps beside the ties
  // (m + 0.5) * s_j, where w * (1 / scale) and w / scale round differently now and then
  const index_t N = 8, K = 1 + 254 * 5;
  std::vector<float> w(std::size_t(K * N));
  for (index_t j = 0; j < N; ++j) {
    const float s = 0.013f * float(j + 1);
    w[std::size_t(j)] = 127.0f * s;
    for (index_t k = 1; k < K; ++k) {
      const int m = int((k - 1) / 5) - 127, u = int((k - 1) % 5) - 2;
      float v = (float(m) + 0.5f) * s;
      for (int t = 0; t < std::abs(u); ++t) v = std::nextafter(v, u > 0 ? 1e9f : -1e9f);
      w[std::size_t(k * N + j)] = v;
    }
  }
  const q::qweight qw(w.data(), K, N, N, 1);
  int differ = 0;
  for (index_t k = 0; k < K; ++k)
    for (index_t j = 0; j < N; ++j) {
      const float s = qw.scale[std::size_t(j)], v = w[std::size_t(k * N + j)];
      const int want = std::clamp(torch_quantize<std::int8_t>(v, s, 0), -127, 127);
      INFO("k " << k << " column " << j << " w " << v);
      CHECK(int(qw.values[std::size_t(k * N + j)]) == want);
      differ += std::clamp(int(std::nearbyint(v / s)), -127, 127) != want;
    }
  CHECK(differ > 0);  // the sweep holds weights where dividing by the scale rounds differently
}
