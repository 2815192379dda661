// expect: this layer has no int8 version yet
// A model with a layer that int8 conversion does not cover (AvgPool2d) is refused at compile time, in words.
#include <tessera/quant/model.hpp>

namespace nn = tessera::nn;
using tessera::dyn;

using Net = nn::Sequential<tessera::Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3>, nn::AvgPool2d<2>, nn::ReLU, nn::Flatten,
                           nn::Linear<36, 2>>;

int main() {
  Net net;
  tessera::Tensor<float, tessera::Shape<dyn, 1, 8, 8>> x(4);
  auto q = tessera::quant::quantize(net, x);
  (void)q;
}
