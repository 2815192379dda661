// BatchNorm2d and BatchNorm1d in int8 models (quant::int8_batch_norm): the layer's arithmetic against a plain-loop
// simulation (dequantize, the per-channel affine map of the running statistics, PyTorch's rounding, clamp), at odd
// channel counts; a CNN with batch norm after a convolution and after a Linear against its float model; a
// BatchNorm1d on a sequence refused at conversion.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <stdexcept>
#include <tuple>
#include <type_traits>

#include <tessera/quant/model.hpp>
#include <tessera/tessera.hpp>

#include "quant_model_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace q = tessera::quant;
using ts::dyn;
using ts::index_t;

namespace {
using BnCNN = nn::Sequential<ts::Shape<dyn, 2, 8, 6>, nn::Conv2d<2, 7, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<7>,
                             nn::ReLU, nn::MaxPool2d<2>, nn::Flatten, nn::Linear<7 * 4 * 3, 33>, nn::BatchNorm1d<33>, nn::ReLU,
                             nn::Linear<33, 3>>;

using quant_test::images;
using quant_test::quantize_ref;

/// Batch norm layers with statistics and affine parameters far from the identity.
template <class State>
void set_statistics(State& bn, int salt) {
  const index_t C = bn.running_mean.size();
  for (index_t c = 0; c < C; ++c) {
    bn.running_mean.data()[c] = 0.3f * float((c * 7 + salt) % 5) - 0.6f;
    bn.running_var.data()[c] = 0.5f + 0.25f * float((c * 3 + salt) % 7);
    bn.weight.mutable_value().data()[c] = 0.6f + 0.2f * float((c + salt) % 4);
    bn.bias.mutable_value().data()[c] = 0.1f * float((c * 5 + salt) % 9) - 0.4f;
  }
}

}  // namespace

TEST_CASE("an int8 BatchNorm2d is the per-channel affine map of its running statistics, requantized", "[quant][batchnorm]") {
  BnCNN net(5);
  set_statistics(net.layer<1>(), 1);
  set_statistics(net.layer<6>(), 2);
  net.eval();
  auto qnet = q::quantize(net, images(64, 1), {.observer = q::observer_kind::minmax});
  using Conv = nn::Conv2d<2, 7, 3, ts::conv2d_options{.padding = 1}>;
  STATIC_REQUIRE(std::is_same_v<decltype(qnet)::layer_types,
                                std::tuple<q::int8_conv2d<Conv, false, false>, q::int8_batch_norm<nn::BatchNorm2d<7>>, q::int8_relu,
                                           q::int8_max_pool2d, q::int8_flatten, q::int8_linear<nn::Linear<84, 33>, false>,
                                           q::int8_batch_norm<nn::BatchNorm1d<33>>, q::int8_relu, q::int8_linear<nn::Linear<33, 3>, false>>>);
  const auto& qbn = qnet.layer<1>();
  const auto& bn = net.layer<1>();
  {
    const index_t C = 7;
    // an NHWC activation [3, 5, 1, 7] (15 rows: vector tails) with every uint8 value somewhere
    q::detail::qact x;
    x.t = q::detail::act4(3, 5, 1, C);
    for (index_t i = 0; i < x.t.size(); ++i) x.t.data()[i] = std::uint8_t((i * 37 + 11) % 256);
    x.qp = {0.043f, 97};
    const auto in = x.t;
    const q::qparams in_qp = x.qp;
    qbn.run(x);
    REQUIRE(x.qp.scale == qbn.out.scale);
    REQUIRE(x.qp.zero_point == qbn.out.zero_point);
    for (index_t i = 0; i < in.size(); ++i) {
      const index_t c = i % C;
      const double a = double(bn.weight.value().data()[c]) / std::sqrt(double(bn.running_var.data()[c]) + 1e-5);
      const double b = double(bn.bias.value().data()[c]) - a * double(bn.running_mean.data()[c]);
      const float v = float(a) * ((float(in.data()[i]) - float(in_qp.zero_point)) * in_qp.scale) + float(b);
      INFO("element " << i << " channel " << c);
      REQUIRE(std::abs(int(x.t.data()[i]) - quantize_ref(v, qbn.out)) <= 1);  // float rounding of a*x+b: one step at most
    }
  }
}

TEST_CASE("a CNN with batch norm after its convolution and its Linear agrees with its float model", "[quant][batchnorm]") {
  BnCNN net(11);
  set_statistics(net.layer<1>(), 3);
  set_statistics(net.layer<6>(), 4);
  net.eval();
  auto qnet = q::quantize(net, images(256, 3));
  const auto x = images(200, 4);
  const auto lf = net.predict(x);
  const auto lq = qnet.predict(x);
  const auto [err, mag, agree] = quant_test::compare_logits(lf, lq);
  INFO("max |float - int8| " << err << " of logits up to " << mag);
  CHECK(err < 0.05 * mag);
  CHECK(agree >= 190);
}

TEST_CASE("an int8 BatchNorm1d on a sequence is refused at conversion", "[quant][batchnorm]") {
  using Seq = nn::Sequential<ts::Shape<dyn, 4, 5>, nn::LSTM<5, 6, ts::lstm_options{.batch_first = true}>, nn::BatchNorm1d<4>,
                             nn::LastStep, nn::Linear<6, 2>>;
  Seq net(1);
  net.eval();
  ts::Tensor<float, ts::Shape<dyn, 4, 5>> x(8);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 7) / 7.0f;
  CHECK_THROWS_WITH(q::quantize(net, x), Catch::Contains("BatchNorm1d takes features"));
}
