// expect: layer_has_no_int8_version<tessera::nn::Residual<
// Residual blocks have no int8 version yet: converting a model with one is refused at compile time, and the error
// names the Residual layer (with its branches).
#include <tessera/nn/composition.hpp>
#include <tessera/quant/model.hpp>

namespace nn = tessera::nn;
using tessera::dyn;

using Net = nn::Sequential<tessera::Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3>, nn::ReLU,
                           nn::Residual<nn::Conv2d<4, 4, 3, {.padding = 1}>>, nn::Flatten, nn::Linear<144, 2>>;

int main() {
  Net net;
  tessera::Tensor<float, tessera::Shape<dyn, 1, 8, 8>> x(4);
  auto q = tessera::quant::quantize(net, x);
  (void)q;
}
