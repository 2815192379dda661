// expect: the int8 Conv2d takes the same stride, padding and dilation on both axes
// An int8 model whose Conv2d has per-axis options (not supported by the int8 convolution yet) is refused at compile
// time, in words.
#include <tessera/quant/model.hpp>

namespace nn = tessera::nn;
using tessera::dyn;

using Net = nn::Sequential<tessera::Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3, tessera::conv2d_options{.padding = {1, 0}}>, nn::ReLU,
                           nn::Flatten, nn::Linear<192, 2>>;

int main() {
  Net net;
  tessera::Tensor<float, tessera::Shape<dyn, 1, 8, 8>> x(4);
  auto q = tessera::quant::quantize(net, x);
  (void)q;
}
