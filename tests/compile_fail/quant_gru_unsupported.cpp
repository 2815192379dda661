// expect: GRU, RNN and the cells have none
// An int8 model with a GRU (no int8 version; only the unidirectional LSTM has one) is refused at compile time, in
// words.
#include <tessera/quant/model.hpp>

namespace nn = tessera::nn;
using tessera::dyn;

using Net = nn::Sequential<tessera::Shape<dyn, 5, 3>, nn::GRU<3, 4, tessera::gru_options{.batch_first = true}>, nn::LastStep,
                           nn::Linear<4, 2>>;

int main() {
  Net net;
  tessera::Tensor<float, tessera::Shape<dyn, 5, 3>> x(4);
  auto q = tessera::quant::quantize(net, x);
  (void)q;
}
