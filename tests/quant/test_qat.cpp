// Quantization-aware training (quant/fake_quant.hpp, quant/fold.hpp, quant/qat.hpp): fake quantization per tensor and
// per channel against plain loops (round half to even, clamping, zero points), the straight-through gradient against
// finite differences of the clamp it stands for (inside the range) and zero outside; the moving-average observers by
// hand; the switches (observers, BatchNorm statistics, fake quantization); a QAT model's forward in evaluation against
// the int8 model it converts to, bit for bit, for a SimpleCNN-shaped model and a Conv2d + BatchNorm2d + ReLU one; the
// BatchNorm folding against the unfolded model; training with fake quantization lowering the loss.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <tessera/optim/optim.hpp>
#include <tessera/quant/qat.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
namespace q = tessera::quant;
using ts::dyn;
using ts::index_t;

namespace {

/// Round half to even written out (not std::nearbyint): the reference's own rounding.
float round_half_even(float v) {
  const double f = std::floor(double(v)), d = double(v) - f;
  if (d > 0.5) return float(f + 1);
  if (d < 0.5) return float(f);
  return std::fmod(f, 2.0) == 0.0 ? float(f) : float(f + 1);
}
/// PyTorch's fake_quantize_per_tensor_affine of one value (with the reciprocal of the scale in float).
float fq_ref(float x, float scale, int zp, int qmin, int qmax) {
  const float inv = 1.0f / scale;
  float q = round_half_even(x * inv) + float(zp);
  q = std::min(std::max(q, float(qmin)), float(qmax));
  return (q - float(zp)) * scale;
}
bool inside_ref(float x, float scale, int zp, int qmin, int qmax) {
  const float r = round_half_even(x * (1.0f / scale)) + float(zp);
  return r >= float(qmin) && r <= float(qmax);
}

std::uint32_t lcg(std::uint32_t& s) { return s = s * 1664525u + 1013904223u; }
template <class X>
void fill(X& x, float lo, float hi, std::uint32_t seed) {
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = lo + (hi - lo) * float(lcg(seed) >> 8) / float(1 << 24);
}

// A SimpleCNN-shaped model, small and odd: every product has at most 54 taps, so its integer sums are exact in float.
using SmallCNN = nn::Sequential<ts::Shape<dyn, 1, 13, 11>, nn::Conv2d<1, 4, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                                nn::MaxPool2d<2>, nn::Conv2d<4, 6, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                                nn::Flatten, nn::Linear<6 * 3 * 2, 17>, nn::ReLU, nn::Linear<17, 5>>;
using BnCNN = nn::Sequential<ts::Shape<dyn, 2, 9, 7>, nn::Conv2d<2, 5, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<5>,
                             nn::ReLU, nn::MaxPool2d<2>, nn::Flatten, nn::Linear<5 * 4 * 3, 3>>;

template <class Q, class X>
void train_steps(Q& qat, const X& x, int steps, double lr = 0.02) {
  ts::optim::SGD<float> opt(qat.parameters(), {.lr = lr, .momentum = 0.9});
  ts::Tensor<int, ts::Shape<dyn>> labels(x.dims()[0]);
  for (index_t i = 0; i < labels.size(); ++i) labels.data()[i] = int(i % 3);
  qat.train();
  for (int s = 0; s < steps; ++s) {
    auto loss = ad::cross_entropy(qat.forward(x), labels);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
}

}  // namespace

TEST_CASE("fake_quantize per tensor: PyTorch's rounding, clamping and straight-through gradient", "[quant][qat]") {
  ts::Tensor<float, ts::Shape<dyn, dyn>> x(7, 13);
  fill(x, -3.0f, 4.0f, 7);
  const q::qparams qp{0.0625f, 37};  // range [-37, 218] * 0.0625 = [-2.3125, 13.625]: low values clamp
  for (int i = 0; i < 9; ++i) x.data()[i] = (float(i) - 4.0f + 0.5f) * 0.0625f;  // exact ties: half to even
  x.data()[10] = -2.3125f - 0.4f * 0.0625f;  // rounds onto qmin: inside (PyTorch's mask)
  x.data()[11] = -2.3125f - 0.6f * 0.0625f;  // rounds below qmin: outside
  x.data()[12] = std::nanf("");
  ad::Var<float, 2, ts::cpu> xv(x, true);
  auto y = q::fake_quantize(xv, qp);
  ts::Tensor<float, ts::Shape<dyn, dyn>> c(7, 13);
  fill(c, -1.0f, 1.0f, 11);
  ad::sum(y * ad::constant(c)).backward();
  for (index_t i = 0; i < x.size(); ++i) {
    const float v = x.data()[i];
    if (std::isnan(v)) {
      CHECK(y.value().data()[i] == (0.0f - 37.0f) * 0.0625f);  // NaN to the low end
      CHECK(xv.grad().data()[i] == 0.0f);
      continue;
    }
    INFO("element " << i << " x = " << v);
    CHECK(y.value().data()[i] == fq_ref(v, qp.scale, qp.zero_point, 0, 255));
    CHECK(xv.grad().data()[i] == (inside_ref(v, qp.scale, qp.zero_point, 0, 255) ? c.data()[i] : 0.0f));
  }
  CHECK(xv.grad().data()[10] == c.data()[10]);
  CHECK(xv.grad().data()[11] == 0.0f);
  // the ties went to even: 0.5 -> 0, 1.5 -> 2, -0.5 -> 0, -1.5 -> -2 (in steps of the scale)
  CHECK(y.value().data()[4] == 0.0f);
  CHECK(y.value().data()[5] == 2 * 0.0625f);
  CHECK(y.value().data()[3] == 0.0f);
  CHECK(y.value().data()[2] == -2 * 0.0625f);
}

TEST_CASE("fake_quantize's gradient is the clamp's: finite differences inside the range, zero outside", "[quant][qat]") {
  const q::qparams qp{0.1f, 20};  // [-2.0, 23.5]
  const float lo = -20 * 0.1f, hi = 235 * 0.1f;
  ts::Tensor<float, ts::Shape<dyn>> x(31);
  fill(x, -6.0f, 28.0f, 3);
  ad::Var<float, 1, ts::cpu> xv(x, true);
  ts::Tensor<float, ts::Shape<dyn>> c(31);
  fill(c, -2.0f, 2.0f, 5);
  ad::sum(q::fake_quantize(xv, qp) * ad::constant(c)).backward();
  for (index_t i = 0; i < x.size(); ++i) {
    const double h = 1e-3, v = x.data()[i];
    if (std::fabs(v - lo) < 0.1 || std::fabs(v - hi) < 0.1) continue;  // the surrogate's kinks
    auto clampd = [&](double t) { return std::min(std::max(t, double(lo)), double(hi)); };
    const double fd = c.data()[i] * (clampd(v + h) - clampd(v - h)) / (2 * h);
    INFO("x = " << v);
    CHECK(xv.grad().data()[i] == Approx(fd).margin(1e-4));
    if (v < lo - 0.1 || v > hi + 0.1) CHECK(xv.grad().data()[i] == 0.0f);
  }
}

TEST_CASE("fake_quantize_per_channel: symmetric int8 per output channel, as the int8 weights", "[quant][qat]") {
  ts::Tensor<float, ts::Shape<dyn, dyn, dyn, dyn>> w(5, 3, 3, 3);
  fill(w, -1.0f, 1.0f, 9);
  for (index_t i = 0; i < 27; ++i) w.data()[27 + i] *= 0.01f;  // a channel with a small range
  w.data()[2 * 27] = 0;
  const auto scales = q::per_channel_symmetric_scales(w);
  REQUIRE(scales.size() == 5);
  for (index_t k = 0; k < 5; ++k) {
    float m = 0;
    for (index_t i = 0; i < 27; ++i) m = std::max(m, std::fabs(w.data()[k * 27 + i]));
    CHECK(scales[std::size_t(k)] == m / 127.0f);
  }
  // the same as the int8 model's weights (quant::qweight, a [K=27, N=5] matrix read transposed)
  const q::qweight qw(w.data(), 27, 5, 1, 27, true);
  for (index_t k = 0; k < 5; ++k) CHECK(qw.scale[std::size_t(k)] == scales[std::size_t(k)]);
  std::vector<float> smaller = scales;
  smaller[1] *= 0.5f;  // channel 1 clamps
  ad::Var<float, 4, ts::cpu> wv(w, true);
  auto y = q::fake_quantize_per_channel(wv, smaller);
  ad::sum(y).backward();
  int clamped = 0;
  for (index_t k = 0; k < 5; ++k)
    for (index_t i = 0; i < 27; ++i) {
      const float v = w.data()[k * 27 + i], s = smaller[std::size_t(k)];
      CHECK(y.value().data()[k * 27 + i] == fq_ref(v, s, 0, -127, 127));
      const bool in = inside_ref(v, s, 0, -127, 127);
      clamped += !in;
      CHECK(wv.grad().data()[k * 27 + i] == (in ? 1.0f : 0.0f));
      if (k != 1) CHECK(y.value().data()[k * 27 + i] == s * float(qw.values[std::size_t(i * 5 + k)]));
    }
  CHECK(clamped > 0);
  CHECK_THROWS_AS(q::fake_quantize_per_channel(wv, std::vector<float>(4, 0.1f)), ts::shape_error);
}

TEST_CASE("qat_model: moving-average observers by hand; freezing them", "[quant][qat]") {
  SmallCNN net(3);
  q::qat_model<SmallCNN> qat(net);
  std::vector<ts::Tensor<float, ts::Shape<dyn, 1, 13, 11>>> batches;
  const float spans[3][2] = {{-1.0f, 2.0f}, {-0.5f, 3.0f}, {-2.0f, 1.0f}};
  for (int b = 0; b < 3; ++b) {
    batches.emplace_back(5);
    fill(batches.back(), spans[b][0], spans[b][1], 100u + unsigned(b));
  }
  auto minmax = [](const auto& t) {
    return std::pair<float, float>(*std::min_element(t.data(), t.data() + t.size()), *std::max_element(t.data(), t.data() + t.size()));
  };
  qat.train();
  float lo = 0, hi = 0;
  for (int b = 0; b < 3; ++b) {
    (void)qat.forward(batches[std::size_t(b)]);
    const auto [a, z] = minmax(batches[std::size_t(b)]);
    if (b == 0) lo = a, hi = z;
    else lo = lo + 0.01f * (a - lo), hi = hi + 0.01f * (z - hi);
    CHECK(qat.observer(0).lo == lo);
    CHECK(qat.observer(0).hi == hi);
  }
  CHECK(q::qat_model<SmallCNN>::is_observed(2));   // after the first Conv2d + ReLU (before its pool)
  CHECK(q::qat_model<SmallCNN>::is_observed(5));
  CHECK(q::qat_model<SmallCNN>::is_observed(9));   // after Linear + ReLU
  CHECK(!q::qat_model<SmallCNN>::is_observed(10)); // the logits stay float
  CHECK(!q::qat_model<SmallCNN>::is_observed(3));
  const float hi2 = qat.observer(2).hi;
  CHECK(hi2 > 0);
  qat.freeze_observers();
  (void)qat.forward(batches[1]);
  CHECK(qat.observer(0).lo == lo);
  CHECK(qat.observer(0).hi == hi);
  CHECK(qat.observer(2).hi == hi2);
  qat.freeze_observers(false);
  qat.eval();  // evaluation does not observe either
  (void)qat.forward(batches[1]);
  CHECK(qat.observer(0).hi == hi);
  qat.train();
  (void)qat.forward(batches[1]);
  CHECK(qat.observer(0).hi != hi);
}

TEST_CASE("qat_model: forward in evaluation is the converted int8 model's predict, bit for bit", "[quant][qat]") {
  ts::cpu_threads::set_num_threads(2);
  SmallCNN net(5);
  q::qat_model<SmallCNN> qat(net);
  ts::Tensor<float, ts::Shape<dyn, 1, 13, 11>> x(9);
  fill(x, -0.8f, 2.2f, 21);  // the input's zero point is not 0
  train_steps(qat, x, 6);
  qat.freeze_observers();
  train_steps(qat, x, 2);  // weights move on, ranges stay
  qat.eval();
  ts::Tensor<float, ts::Shape<dyn, 1, 13, 11>> t(7);
  fill(t, -1.0f, 2.5f, 33);  // some values outside the observed range
  const auto fq = qat.predict(t);
  const auto q8 = qat.convert();
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(q8)>, q::int8_model_t<SmallCNN>>);
  CHECK(q8.input_qparams().zero_point != 0);
  const auto lq = q8.predict(t);
  REQUIRE(lq.dims() == fq.dims());
  int differ = 0;
  for (index_t i = 0; i < fq.size(); ++i) differ += fq.data()[i] != lq.data()[i];
  CHECK(differ == 0);
  // and it is not the float model's
  const auto lf = net.predict(t);
  double d = 0;
  for (index_t i = 0; i < fq.size(); ++i) d = std::max(d, double(std::fabs(fq.data()[i] - lf.data()[i])));
  CHECK(d > 1e-4);
  // with fake quantization off, the float model's forward
  qat.disable_fake_quant();
  const auto off = qat.predict(t);
  for (index_t i = 0; i < fq.size(); ++i) CHECK(off.data()[i] == Approx(lf.data()[i]).margin(1e-5));
}

TEST_CASE("qat_model with Conv2d + BatchNorm2d + ReLU: folding, frozen statistics, the int8 model bit for bit", "[quant][qat]") {
  BnCNN net(8);
  q::qat_model<BnCNN> qat(net);
  ts::Tensor<float, ts::Shape<dyn, 2, 9, 7>> x(11);
  fill(x, -1.0f, 1.5f, 41);
  auto& bn = net.layer<1>();
  const std::vector<float> rm0 = bn.running_mean.to_vector();
  train_steps(qat, x, 5);  // live statistics: the running ones move
  const std::vector<float> rm1 = bn.running_mean.to_vector();
  CHECK(rm1 != rm0);
  qat.freeze_bn_stats();
  train_steps(qat, x, 2);
  CHECK(bn.running_mean.to_vector() == rm1);
  // folding: the folded float model equals the model in evaluation
  net.eval();
  auto folded = q::fold(net);
  static_assert(std::is_same_v<q::folded_model_t<BnCNN>,
                               nn::basic_sequential<float, ts::cpu_threads, ts::Shape<dyn, 2, 9, 7>,
                                                    nn::Conv2d<2, 5, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                                                    nn::Flatten, nn::Linear<5 * 4 * 3, 3>>>);
  const auto a = net.predict(x);
  const auto b = folded.predict(x);
  double mag = 0;
  for (index_t i = 0; i < a.size(); ++i) mag = std::max(mag, double(std::fabs(a.data()[i])));
  for (index_t i = 0; i < a.size(); ++i) CHECK(b.data()[i] == Approx(a.data()[i]).margin(2e-6 * std::max(1.0, mag)));
  // with fake quantization off, the QAT model in evaluation is the folded model
  qat.eval();
  qat.disable_fake_quant();
  const auto off = qat.predict(x);
  for (index_t i = 0; i < a.size(); ++i) CHECK(off.data()[i] == Approx(a.data()[i]).margin(2e-6 * std::max(1.0, mag)));
  qat.enable_fake_quant();
  const auto fq = qat.predict(x);
  const auto q8 = q::convert(qat);
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(q8)>, q::int8_model_t<q::folded_model_t<BnCNN>>>);
  const auto lq = q8.predict(x);
  int differ = 0;
  for (index_t i = 0; i < fq.size(); ++i) differ += fq.data()[i] != lq.data()[i];
  CHECK(differ == 0);
}

TEST_CASE("qat_model: training with fake quantization lowers the loss; gradients reach every parameter", "[quant][qat]") {
  BnCNN net(12);
  q::qat_model<BnCNN> qat(net);
  ts::Tensor<float, ts::Shape<dyn, 2, 9, 7>> x(12);
  fill(x, -1.0f, 1.0f, 77);
  ts::Tensor<int, ts::Shape<dyn>> labels(12);
  for (index_t i = 0; i < 12; ++i) labels.data()[i] = int(i % 3);
  qat.train();
  auto loss0 = ad::cross_entropy(qat.forward(x), labels);
  net.zero_grad();
  loss0.backward();
  net.for_each_parameter([](const std::string& name, auto& v) {
    double s = 0;
    for (index_t i = 0; i < v.size(); ++i) s += std::fabs(v.grad().data()[i]);
    INFO(name);
    CHECK(s > 0);
  });
  train_steps(qat, x, 30, 0.05);
  const double l1 = ad::cross_entropy(qat.forward(x), labels).item();
  CHECK(l1 < 0.7 * loss0.item());
}

TEST_CASE("qat_model::convert before any forward is refused", "[quant][qat]") {
  SmallCNN net(1);
  q::qat_model<SmallCNN> qat(net);
  CHECK_THROWS_AS(qat.convert(), std::logic_error);
}

TEST_CASE("the folding operations' and the integer epilogue's gradients against finite differences", "[quant][qat]") {
  // h(w, b, gamma, beta) = sum(c1 * unscale(conv(x, w * sf(gamma)) , sf, b)) + sum(c2 * fold_bias(b, beta, sf, rm))
  //                        + sum(c3 * dequant_bias_act(conv(x, w), s, b))
  ts::Tensor<float, ts::Shape<dyn, dyn, dyn, dyn>> x(2, 3, 5, 4), w(5, 3, 3, 3), c1(2, 5, 3, 2), c3(2, 5, 3, 2);
  ts::Tensor<float, ts::Shape<dyn>> b(5), gamma(5), beta(5), rm(5), rv(5), c2(5);
  fill(x, -1.0f, 1.0f, 1);
  fill(w, -0.5f, 0.5f, 2);
  fill(c1, -1.0f, 1.0f, 3);
  fill(c3, -1.0f, 1.0f, 4);
  fill(b, -0.3f, 0.3f, 5);
  fill(gamma, 0.5f, 1.5f, 6);
  fill(beta, -0.2f, 0.2f, 7);
  fill(rm, -0.1f, 0.1f, 8);
  fill(rv, 0.5f, 2.0f, 9);
  fill(c2, -1.0f, 1.0f, 10);
  const std::vector<float> s = {0.7f, 1.3f, 0.9f, 1.1f, 0.6f};
  auto h = [&](ad::Var<float, 4, ts::cpu>& wv, ad::Var<float, 1, ts::cpu>& bv, ad::Var<float, 1, ts::cpu>& gv,
               ad::Var<float, 1, ts::cpu>& betav) {
    const ad::Var<float, 1, ts::cpu> none;
    const auto sf = q::fold_scale(gv, rv);
    const auto xv = ad::constant(x);
    auto y1 = q::unscale_channels(ad::conv2d(xv, q::scale_channels(wv, sf), none), sf, bv);
    auto y2 = q::fold_bias(bv, betav, sf, rm);
    auto y3 = q::detail::dequant_bias_act(ad::conv2d(xv, wv, none), s, bv, false);
    return ad::sum(y1 * ad::constant(c1)) + ad::sum(y2 * ad::constant(c2)) + ad::sum(y3 * ad::constant(c3));
  };
  ad::Var<float, 4, ts::cpu> wv(w, true);
  ad::Var<float, 1, ts::cpu> bv(b, true), gv(gamma, true), betav(beta, true);
  h(wv, bv, gv, betav).backward();
  auto check = [&](auto& t, const auto& grad, const char* name) {
    for (index_t i = 0; i < t.size(); i += 1 + t.size() / 9) {
      const float keep = t.data()[i], step = 1e-2f;
      t.data()[i] = keep + step;
      ad::Var<float, 4, ts::cpu> w1(w, false);
      ad::Var<float, 1, ts::cpu> b1(b, false), g1(gamma, false), e1(beta, false);
      const double up = h(w1, b1, g1, e1).item();
      t.data()[i] = keep - step;
      ad::Var<float, 4, ts::cpu> w2(w, false);
      ad::Var<float, 1, ts::cpu> b2(b, false), g2(gamma, false), e2(beta, false);
      const double down = h(w2, b2, g2, e2).item();
      t.data()[i] = keep;
      INFO(name << "[" << i << "]");
      CHECK(grad.data()[i] == Approx((up - down) / (2 * step)).epsilon(2e-2).margin(2e-3));
    }
  };
  check(w, wv.grad(), "w");
  check(b, bv.grad(), "b");
  check(gamma, gv.grad(), "gamma");
  check(beta, betav.grad(), "beta");
}
