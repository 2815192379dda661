// An int8 model refuses a Linear applied per step to a sequence [B, T, F] (the float nn::Linear takes any leading
// axes; the int8 Linear takes [B, F] only) with a message saying so, instead of returning time-major rows; the same
// model with LastStep before the Linear converts and runs.
#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>
#include <string>
#include <tessera/quant/model.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace q = tessera::quant;
using ts::dyn;

TEST_CASE("an int8 Linear on a sequence throws; after LastStep it runs", "[quant][linear]") {
  ts::Tensor<float, ts::Shape<dyn, 4, 5>> x(3);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.37f * float(i)) * 2.0f;
  using PerStep = nn::Sequential<ts::Shape<dyn, 4, 5>, nn::LSTM<5, 7>, nn::Linear<7, 3>>;
  PerStep per_step(3);
  per_step.eval();
  CHECK(per_step.predict(x).dims() == ts::dims_t<3>{3, 4, 3});  // the float model: one output per step
  auto qs = q::quantize(per_step, x);
  std::string msg;
  try {
    qs.predict(x);
  } catch (const std::invalid_argument& e) {
    msg = e.what();
  }
  CHECK(msg.find("LastStep") != std::string::npos);
  using Last = nn::Sequential<ts::Shape<dyn, 4, 5>, nn::LSTM<5, 7>, nn::LastStep, nn::Linear<7, 3>>;
  Last last(3);
  last.eval();
  auto ql = q::quantize(last, x);
  CHECK(ql.predict(x).dims() == ts::dims_t<2>{3, 3});
}
