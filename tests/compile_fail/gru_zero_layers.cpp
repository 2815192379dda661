// expect: tessera::nn::GRU: at least one layer
// A GRU with no layers is a compile error naming the layer and the option.
#include <tessera/nn/recurrent.hpp>

namespace nn = tessera::nn;

int main() {
  tessera::Rng rng(0);
  nn::GRU<3, 4, tessera::gru_options{.num_layers = 0}>::state<float, tessera::cpu> gru(rng);
  (void)gru;
}
