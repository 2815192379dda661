// Post-training quantization of model types: the int8 model of a small CNN against a plain-loop simulation of the
// same int8 arithmetic (quantized input, int8 weights per channel, int32 sums, requantization), and against the
// float model; models with a ReLU alone between Flatten and Linear against the float model and float loops.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include <tessera/quant/model.hpp>
#include <tessera/tessera.hpp>

#include "quant_model_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace q = tessera::quant;
using ts::dyn;
using ts::index_t;

namespace {
using TinyCNN = nn::Sequential<ts::Shape<dyn, 2, 8, 6>, nn::Conv2d<2, 5, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                               nn::MaxPool2d<2>, nn::Flatten, nn::Linear<5 * 4 * 3, 7>, nn::ReLU, nn::Dropout<0.5>,
                               nn::Linear<7, 3>>;

using quant_test::images;
using quant_test::quantize_ref;
}  // namespace

TEST_CASE("the int8 model of a small CNN computes what its int8 arithmetic says, written out in loops", "[quant][model]") {
  TinyCNN net(7);
  const auto calib = images(64, 1);
  auto qnet = q::quantize(net, calib, {.observer = q::observer_kind::minmax});
  static_assert(std::is_same_v<decltype(qnet), q::int8_model_t<TinyCNN>>);
  const auto x = images(5, 2);
  const auto logits = qnet.predict(x);
  REQUIRE(logits.dims() == ts::dims_t<2>{5, 3});

  // the int8 layers, one per group of the 8 float layers: conv (+ ReLU, + pool) for layers 0-2, flatten (3),
  // linear (+ ReLU) for 4-5, dropout (6), linear to float (7)
  using Conv = nn::Conv2d<2, 5, 3, ts::conv2d_options{.padding = 1}>;
  STATIC_REQUIRE(std::is_same_v<decltype(qnet)::layer_types,
                                std::tuple<q::int8_conv2d<Conv, /*Relu*/ true, /*Pooled*/ true>, q::int8_flatten,
                                           q::int8_linear<nn::Linear<5 * 4 * 3, 7>, /*Relu*/ true>,
                                           q::int8_dropout<nn::Dropout<0.5>>,
                                           q::int8_linear<nn::Linear<7, 3>, /*Relu*/ false>>>);
  const auto& qconv = qnet.layer<0>();
  const auto& qlin1 = qnet.layer<2>();
  const auto& qlin2 = qnet.layer<4>();
  CHECK(qlin2.to_float);

  const q::qparams qin = qnet.input_qparams();
  const auto& w1 = net.layer<0>().weight.value();  // [5, 2, 3, 3]
  const auto& b1 = net.layer<0>().bias.value();
  const auto& cw = *qconv.cw.w;  // its int8 weights: rows (kh, kw, c), one scale per output channel
  for (index_t n = 0; n < 5; ++n) {
    // input: quantized
    int xi[2][8][6];
    for (int c = 0; c < 2; ++c)
      for (int h = 0; h < 8; ++h)
        for (int w = 0; w < 6; ++w) xi[c][h][w] = quantize_ref(x(n, c, h, w), qin);
    // conv 3x3 pad 1 in int32 (padding is the zero point), dequantize, bias, ReLU, requantize, then the 2x2 max-pool
    int pooled[5][4][3];
    for (int k = 0; k < 5; ++k)
      for (int ph = 0; ph < 4; ++ph)
        for (int pw = 0; pw < 3; ++pw) {
          int m = 0;
          for (int dh = 0; dh < 2; ++dh)
            for (int dw = 0; dw < 2; ++dw) {
              const int oh = 2 * ph + dh, ow = 2 * pw + dw;
              std::int64_t acc = 0;
              for (int c = 0; c < 2; ++c)
                for (int kh = 0; kh < 3; ++kh)
                  for (int kw = 0; kw < 3; ++kw) {
                    const int ih = oh - 1 + kh, iw = ow - 1 + kw;
                    const int v = (ih >= 0 && ih < 8 && iw >= 0 && iw < 6) ? xi[c][ih][iw] : qin.zero_point;
                    acc += std::int64_t(v - qin.zero_point) * cw.values[std::size_t(((kh * 3 + kw) * 2 + c) * 5 + k)];
                  }
              const float real = float(acc) * qin.scale * cw.scale[std::size_t(k)] + b1(k);
              m = std::max(m, quantize_ref(std::max(real, 0.0f), qconv.out));
            }
          pooled[k][ph][pw] = m;
        }
    // the int8 weights of the conv are the float weights within half a step
    for (int k = 0; k < 5; ++k)
      for (int c = 0; c < 2; ++c)
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw)
            CHECK(std::fabs(cw.real((kh * 3 + kw) * 2 + c, k) - w1(k, c, kh, kw)) <= cw.scale[std::size_t(k)] * 0.5001f);
    // flatten in PyTorch's (c, h, w) order, Linear 60 -> 7 (+ ReLU, requantized), Linear 7 -> 3 (float)
    const auto& l1 = *qlin1.lw;  // rows in NHWC order (h, w, c)
    const auto& bl1 = net.layer<4>().bias.value();
    int hidden[7];
    for (int o = 0; o < 7; ++o) {
      std::int64_t acc = 0;
      for (int c = 0; c < 5; ++c)
        for (int h = 0; h < 4; ++h)
          for (int w = 0; w < 3; ++w) {
            const int f_nhwc = (h * 3 + w) * 5 + c;
            acc += std::int64_t(pooled[c][h][w] - qconv.out.zero_point) * l1.values[std::size_t(f_nhwc * 7 + o)];
            // the permuted int8 weight stands for the float weight at PyTorch's flatten position c * 12 + h * 3 + w
            CHECK(std::fabs(l1.real(f_nhwc, o) - net.layer<4>().weight.value()(o, c * 12 + h * 3 + w)) <=
                  l1.scale[std::size_t(o)] * 0.5001f);
          }
      const float real = float(acc) * qconv.out.scale * l1.scale[std::size_t(o)] + bl1(o);
      hidden[o] = quantize_ref(std::max(real, 0.0f), qlin1.out);
    }
    const auto& l2 = *qlin2.lw;
    const auto& bl2 = net.layer<7>().bias.value();
    for (int o = 0; o < 3; ++o) {
      std::int64_t acc = 0;
      for (int f = 0; f < 7; ++f) acc += std::int64_t(hidden[f] - qlin1.out.zero_point) * l2.values[std::size_t(f * 3 + o)];
      const float want = float(acc) * qlin1.out.scale * l2.scale[std::size_t(o)] + bl2(o);
      INFO("image " << n << " logit " << o);
      // one requantization step of difference upstream (float rounding at .5) moves a logit by about one weight step
      CHECK(logits(n, o) == Approx(want).margin(0.05));
    }
  }
}

TEST_CASE("the int8 model agrees with the float model", "[quant][model]") {
  TinyCNN net(11);
  net.eval();
  const auto calib = images(256, 3);
  for (auto kind : {q::observer_kind::minmax, q::observer_kind::histogram}) {
    auto qnet = q::quantize(net, calib, {.observer = kind});
    const auto x = images(200, 4);
    const auto lf = net.predict(x);
    const auto lq = qnet.predict(x);
    const auto [err, mag, agree] = quant_test::compare_logits(lf, lq);
    INFO("observer " << int(kind) << ": max |float - int8| " << err << " of logits up to " << mag);
    CHECK(err < 0.05 * mag);
    CHECK(agree >= 190);
  }
}

namespace {
/// n images [n, 1, 8, 8] with values uniform in [0, 1), from a seeded linear congruential generator.
ts::Tensor<float, ts::Shape<dyn, 1, 8, 8>> unit_images(index_t n, std::uint32_t seed) {
  ts::Tensor<float, ts::Shape<dyn, 1, 8, 8>> x(n);
  std::uint32_t s = seed;
  for (index_t i = 0; i < x.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    x.data()[i] = float(s >> 8) / float(1 << 24);
  }
  return x;
}

/// The float logits [n][10] of Conv2d<1, 4, 3, padding 1> [+ ReLU], MaxPool2d<2>, Flatten, (Dropout,) ReLU,
/// Linear<64, 10>, written out in loops: the flatten in PyTorch's (c, h, w) order. `conv` and `linear` are the float
/// layers' states.
template <class Conv, class Lin>
std::vector<std::vector<float>> flatten_relu_linear_reference(const Conv& conv, const Lin& linear, bool conv_relu,
                                                              const ts::Tensor<float, ts::Shape<dyn, 1, 8, 8>>& x) {
  const auto& wc = conv.weight.value();  // [4, 1, 3, 3]
  const auto& bc = conv.bias.value();
  const auto& wl = linear.weight.value();  // [10, 64]
  const auto& bl = linear.bias.value();
  std::vector<std::vector<float>> out;
  for (index_t n = 0; n < x.dims()[0]; ++n) {
    float y[4][8][8];
    for (int k = 0; k < 4; ++k)
      for (int h = 0; h < 8; ++h)
        for (int w = 0; w < 8; ++w) {
          float acc = bc(k);
          for (int kh = 0; kh < 3; ++kh)
            for (int kw = 0; kw < 3; ++kw) {
              const int ih = h - 1 + kh, iw = w - 1 + kw;
              if (ih >= 0 && ih < 8 && iw >= 0 && iw < 8) acc += wc(k, 0, kh, kw) * x(n, 0, ih, iw);
            }
          y[k][h][w] = conv_relu ? std::max(acc, 0.0f) : acc;
        }
    float flat[64];  // max-pool 2x2, flattened at c * 16 + h * 4 + w, then the ReLU on its own
    for (int k = 0; k < 4; ++k)
      for (int h = 0; h < 4; ++h)
        for (int w = 0; w < 4; ++w) {
          const float m = std::max(std::max(y[k][2 * h][2 * w], y[k][2 * h][2 * w + 1]),
                                   std::max(y[k][2 * h + 1][2 * w], y[k][2 * h + 1][2 * w + 1]));
          flat[k * 16 + h * 4 + w] = std::max(m, 0.0f);
        }
    std::vector<float> logits(10);
    for (int o = 0; o < 10; ++o) {
      float acc = bl(o);
      for (int f = 0; f < 64; ++f) acc += wl(o, f) * flat[f];
      logits[std::size_t(o)] = acc;
    }
    out.push_back(logits);
  }
  return out;
}

/// Quantizes `net` (calibrated on 48 images in [0, 1)) and checks its int8 logits on 20 other images against the
/// float model's predict and against the loops above. Lin: the position of the Linear.
template <std::size_t Lin, class Net>
void check_flatten_relu_linear(Net& net, bool conv_relu) {
  net.eval();
  const auto calib = unit_images(48, 5);
  const auto x = unit_images(20, 6);
  auto qnet = q::quantize(net, calib, {.observer = q::observer_kind::minmax});
  const auto lq = qnet.predict(x);
  const auto lf = net.predict(x);
  const auto ref = flatten_relu_linear_reference(net.template layer<0>(), net.template layer<Lin>(), conv_relu, x);
  REQUIRE(lq.dims() == ts::dims_t<2>{20, 10});
  REQUIRE(lf.dims() == ts::dims_t<2>{20, 10});
  // the step of the logits' own 8-bit quantization over the calibrated range (as a minmax observer would set it)
  const auto lc = net.predict(calib);
  float lo = 0, hi = 0;
  for (index_t i = 0; i < lc.size(); ++i) lo = std::min(lo, lc.data()[i]), hi = std::max(hi, lc.data()[i]);
  const float out_scale = q::affine_qparams(lo, hi).scale;
  double err = 0, mag = 0;
  for (index_t n = 0; n < 20; ++n)
    for (index_t o = 0; o < 10; ++o) {
      const float want = ref[std::size_t(n)][std::size_t(o)];
      INFO("image " << n << " logit " << o << "; the logits' 8-bit step " << out_scale);
      CHECK(lf(n, o) == Approx(want).margin(1e-5));  // the float model is the loops
      // the int8 model within 3 steps of the logits' own 8-bit quantization (see the test case)
      CHECK(lq(n, o) == Approx(lf(n, o)).margin(3 * out_scale));
      CHECK(lq(n, o) == Approx(want).margin(3 * out_scale));
      err = std::max(err, double(std::fabs(lq(n, o) - want)));
      mag = std::max(mag, double(std::fabs(want)));
    }
  INFO("max |int8 - float| " << err << " on logits up to " << mag << ", the logits' 8-bit step " << out_scale);
  CHECK(err < 3 * out_scale);
}
}  // namespace

// Guards the Linear's weight columns after a Flatten with a ReLU (or a Dropout and a ReLU) on its own between them:
// the int8 activations are NHWC, so the int8 Linear must read the float weight columns PyTorch's flatten put in
// (c, h, w) order at their (h, w, c) positions. The conversion once forgot the Flatten at such a ReLU and kept the
// columns unpermuted: the int8 logits were silently wrong (max error about 0.46 on logits of about 0.43).
// Tolerance: 3 steps of an 8-bit quantization of the logits' calibrated range. The int8 model rounds the input
// (half a step of 1/255), the weights (half a step per output channel) and the 64 pooled activations (half a step
// each) before the Linear; these roundings, of either sign, sum to about one such step (0.7 to 1.5 steps measured
// on the three models below), where columns read in the wrong order moved them by 80 to 190 steps.
TEST_CASE("the int8 model of Flatten, a ReLU alone (and Dropout), then Linear reads the weights in NHWC order",
          "[quant][model]") {
  SECTION("Conv2d, ReLU, MaxPool2d, Flatten, ReLU, Linear") {
    nn::Sequential<ts::Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                   nn::MaxPool2d<2>, nn::Flatten, nn::ReLU, nn::Linear<4 * 4 * 4, 10>>
        net(21);
    check_flatten_relu_linear<5>(net, true);
  }
  SECTION("Conv2d, ReLU, MaxPool2d, Flatten, Dropout, ReLU, Linear") {
    nn::Sequential<ts::Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                   nn::MaxPool2d<2>, nn::Flatten, nn::Dropout<0.5>, nn::ReLU, nn::Linear<4 * 4 * 4, 10>>
        net(22);
    check_flatten_relu_linear<6>(net, true);
  }
  SECTION("Conv2d, MaxPool2d, Flatten, ReLU, Linear: the ReLU alone clamps the pooled values") {
    nn::Sequential<ts::Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3, ts::conv2d_options{.padding = 1}>, nn::MaxPool2d<2>,
                   nn::Flatten, nn::ReLU, nn::Linear<4 * 4 * 4, 10>>
        net(23);
    check_flatten_relu_linear<4>(net, false);
  }
}

TEST_CASE("int8 models check their input shape and their calibration data", "[quant][model]") {
  TinyCNN net(1);
  auto qnet = q::quantize(net, images(8, 1));
  ts::Tensor<float, ts::Shape<dyn, dyn, dyn, dyn>> bad(2, 2, 7, 6);
  CHECK_THROWS_WITH(qnet.predict(bad), Catch::Contains("[2, 2, 7, 6]") && Catch::Contains("8"));
  CHECK_THROWS_WITH(q::quantize(net, images(0, 1)), Catch::Contains("no calibration images"));
}

namespace {
float sigmoid_ref(float x) { return 1.0f / (1.0f + std::exp(-x)); }

/// The int8 LSTM's arithmetic in loops: per layer, x quantized with its own range, int32 sums with the int8 weights,
/// dequantized plus both biases; per step h quantized with its own range likewise; gates and cell update in float.
std::vector<float> qlstm_reference(const q::qlstm& m, std::vector<float> x, index_t T, index_t B) {
  for (const auto& l : m.layers) {
    const index_t H = l.H, G = 4 * H, in = l.in;
    auto dyn_q = [](const float* p, index_t n) {
      float lo = p[0], hi = p[0];
      for (index_t i = 0; i < n; ++i) lo = std::min(lo, p[i]), hi = std::max(hi, p[i]);
      return q::affine_qparams(lo, hi);
    };
    auto quantize_mul = [](float v, q::qparams qp) { return quantize_ref(v, qp); };
    auto product = [&](const float* a, index_t rows, index_t K, const q::qweight& w, std::vector<float>& out, bool add) {
      const q::qparams qa = dyn_q(a, rows * K);
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < G; ++j) {
          std::int64_t acc = 0;
          for (index_t k = 0; k < K; ++k)
            acc += std::int64_t(quantize_mul(a[r * K + k], qa) - qa.zero_point) * w.values[std::size_t(k * G + j)];
          const float v = float(acc) * qa.scale * w.scale[std::size_t(j)];
          out[std::size_t(r * G + j)] = add ? out[std::size_t(r * G + j)] + v : v + l.bias(j);
        }
    };
    std::vector<float> gates(std::size_t(T * B * G)), y(std::size_t(T * B * H)), c(std::size_t(B * H));
    product(x.data(), T * B, in, *l.w_ih, gates, false);
    for (index_t t = 0; t < T; ++t) {
      std::vector<float> g(gates.begin() + t * B * G, gates.begin() + (t + 1) * B * G);
      if (t > 0) product(y.data() + (t - 1) * B * H, B, H, *l.w_hh, g, true);
      for (index_t b = 0; b < B; ++b)
        for (index_t j = 0; j < H; ++j) {
          const float* gb = g.data() + b * G;
          const float i = sigmoid_ref(gb[j]), f = sigmoid_ref(gb[H + j]), gg = std::tanh(gb[2 * H + j]), o = sigmoid_ref(gb[3 * H + j]);
          float& cc = c[std::size_t(b * H + j)];
          cc = (t > 0 ? f * cc : 0.0f) + i * gg;
          y[std::size_t((t * B + b) * H + j)] = o * std::tanh(cc);
        }
    }
    x = std::move(y);
  }
  return x;
}
}  // namespace

TEST_CASE("the int8 LSTM at odd sizes, its batch split between threads and blocks of rows", "[quant][lstm]") {
  // B = 150: with two threads, rows [0, 64) and [64, 150), the second in blocks of 64 and 22; G = 132 gate columns
  using Rnn = nn::Sequential<ts::Shape<dyn, 5, 7>, nn::LSTM<7, 33, ts::lstm_options{.num_layers = 2}>>;
  const index_t T = 5;
  for (index_t B : {1, 7, 150}) {
    const q::qlstm m(Rnn(11).layer<0>().layers);
    ts::Tensor<float, ts::Shape<dyn, dyn>, ts::cpu_threads> x(T * B, 7), y;
    std::vector<float> xs(std::size_t(x.size()));
    for (index_t i = 0; i < x.size(); ++i) xs[std::size_t(i)] = x.data()[i] = std::cos(0.11f * float(i)) * 1.5f - 0.2f;
    m.run_time_major(x, T, B, y);
    const auto want = qlstm_reference(m, xs, T, B);
    REQUIRE(y.dims() == ts::dims_t<2>{T * B, 33});
    for (index_t i = 0; i < y.size(); ++i) CHECK(y.data()[i] == Approx(want[std::size_t(i)]).margin(2e-3));
  }
  // the input must be T steps of B rows of the layer's width
  const q::qlstm m(Rnn(11).layer<0>().layers);
  ts::Tensor<float, ts::Shape<dyn, dyn>, ts::cpu_threads> bad(10, 7), wide(10, 8), y;
  CHECK_THROWS_AS(m.run_time_major(bad, 3, 4, y), ts::shape_error);
  CHECK_THROWS_AS(m.run_time_major(wide, 5, 2, y), ts::shape_error);
}

TEST_CASE("the int8 LSTM computes its int8 arithmetic and stays close to the float LSTM", "[quant][lstm]") {
  using Net = nn::Sequential<ts::Shape<dyn, 4, 5>, nn::LSTM<5, 7, ts::lstm_options{.num_layers = 2, .batch_first = true}>,
                             nn::LastStep, nn::Linear<7, 3>>;
  Net net(3);
  net.eval();
  const index_t B = 3, T = 4;
  ts::Tensor<float, ts::Shape<dyn, 4, 5>> x(B);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.37f * float(i)) * 2.0f;
  const q::qlstm m(net.layer<0>().layers);
  // time-major input
  std::vector<float> xt(std::size_t(T * B * 5));
  ts::Tensor<float, ts::Shape<dyn, dyn>, ts::cpu_threads> xtm(T * B, 5);
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t k = 0; k < 5; ++k) xt[std::size_t((t * B + b) * 5 + k)] = xtm(t * B + b, k) = x(b, t, k);
  ts::Tensor<float, ts::Shape<dyn, dyn>, ts::cpu_threads> y;
  m.run_time_major(xtm, T, B, y);
  const auto want = qlstm_reference(m, xt, T, B);
  REQUIRE(y.dims() == ts::dims_t<2>{T * B, 7});
  for (index_t i = 0; i < y.size(); ++i) CHECK(y.data()[i] == Approx(want[std::size_t(i)]).margin(2e-3));
  // the whole model: close to the float model's logits
  auto qnet = q::quantize(net, x);
  const auto lq = qnet.predict(x);
  const auto lf = net.predict(x);
  for (index_t b = 0; b < B; ++b)
    for (index_t j = 0; j < 3; ++j) CHECK(lq(b, j) == Approx(lf(b, j)).margin(0.02));
}
