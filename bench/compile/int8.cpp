// Compile-cost benchmark: a user's typical int8 conversion (scripts/compile_stats.sh measures it). A small CNN
// trained for a few SGD steps on random images, then converted to its int8 model (quant::quantize, calibrated on
// the same images); both models' logits are compared and the largest difference printed. What it exercises at
// compile time: Conv2d/ReLU/MaxPool2d/Linear forward and backward, the int8 conversion of every layer group, the
// int8 GEMM and convolution kernels.
//   g++ -std=c++20 -O2 -march=native -fopenmp -Iinclude bench/compile/int8.cpp -o int8 && ./int8
#include <algorithm>
#include <cmath>
#include <cstdio>

#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/quant/model.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
using ts::dyn;

using CNN = nn::Sequential<ts::Shape<dyn, 1, 16, 16>, nn::Conv2d<1, 8, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Conv2d<8, 16, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>, nn::Flatten,
                           nn::Linear<16 * 4 * 4, 32>, nn::ReLU, nn::Linear<32, 10>>;

int main() {
  CNN net(/*seed=*/0);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  ts::Rng rng(1);
  ts::Tensor<float, ts::Shape<dyn, 1, 16, 16>> x(32);
  ts::Tensor<int, ts::Shape<dyn>> y(32);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = rng.uniform();
  for (ts::index_t i = 0; i < y.size(); ++i) y.data()[i] = int(rng.below(10));
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    auto loss = ts::ad::cross_entropy(net.forward(x), y);
    loss.backward();
    opt.step();
    std::printf("step %d: loss %.4f\n", step, double(loss.value()()));
  }
  net.eval();
  auto qnet = ts::quant::quantize(net, x);
  auto logits = net.predict(x);
  auto qlogits = qnet.predict(x);
  float worst = 0;
  for (ts::index_t i = 0; i < logits.size(); ++i) worst = std::max(worst, std::abs(logits.data()[i] - qlogits.data()[i]));
  std::printf("int8 model: largest logit difference %.4f\n", double(worst));
  return 0;
}
