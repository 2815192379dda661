// expect: In instantiation of 'struct tessera::dist::pipeline_check::cuts_not_increasing<5, 3>'
// Pipeline cuts must increase: cuts<5, 3> stops the build, and the first error names the cut (3) after the one
// before it (5).
#include <tessera/dist/pipeline.hpp>
namespace nn = tessera::nn;
namespace dist = tessera::dist;
using tessera::dyn;
using Net = nn::Sequential<tessera::Shape<dyn, 1, 28, 28>, nn::Conv2d<1, 8, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Flatten, nn::Linear<8 * 14 * 14, 32>, nn::ReLU, nn::Linear<32, 10>>;
int main() {
  return int(dist::pipeline<Net, dist::cuts<5, 3>>::stages);
}
