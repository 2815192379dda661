// expect: In instantiation of 'struct tessera::nn::error::layer_does_not_fit<7, tessera::nn::Linear<1024, 128(, true)?>, tessera::Shape<-1, 3136>, tessera::Shape<-1, 1024> ?>'
// SimpleCNN with Linear<1024, 128> after the Flatten that produces 64*7*7 = 3136 features: it does not compile,
// and the first error names the layer's position (7), the layer, the shape it gets and the shape it expects.
#include <tessera/nn/sequential.hpp>
namespace nn = tessera::nn;
using tessera::dyn;
using Bad = nn::Sequential<tessera::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<1024, 128>, nn::ReLU, nn::Linear<128, 10>>;
int main() {
  Bad net(0);
  (void)net;
}
