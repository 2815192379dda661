// expect: with_widths_t: give one width per prunable layer
// prune::with_widths_t with fewer widths than prunable layers (the SimpleCNN has three: two Conv2d and the first
// Linear) is a compile error saying so.
#include <tessera/prune/shrink.hpp>

namespace nn = tessera::nn;
using tessera::dyn;
using Net = nn::Sequential<tessera::Shape<dyn, 1, 28, 28>, nn::Conv2d<1, 32, 3, tessera::conv2d_options{.padding = 1}>, nn::ReLU,
                           nn::MaxPool2d<2>, nn::Conv2d<32, 64, 3, tessera::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>;

int main() {
  tessera::prune::with_widths_t<Net, 16, 32> small(0);
  return int(small.num_parameters() == 0);
}
