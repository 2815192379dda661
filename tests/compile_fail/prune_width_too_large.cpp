// expect: width_out_of_range<1, tessera::nn::Linear<20, 16>, 17, 16>
// A new width above the layer's original one is a compile error naming the position, the layer, the width and the
// original.
#include <tessera/prune/shrink.hpp>

namespace nn = tessera::nn;
using tessera::dyn;
using Net = nn::Sequential<tessera::Shape<dyn, 4, 5>, nn::Flatten, nn::Linear<20, 16>, nn::ReLU, nn::Linear<16, 3>>;

int main() {
  tessera::prune::with_widths_t<Net, 17> small(0);
  return int(small.num_parameters() == 0);
}
