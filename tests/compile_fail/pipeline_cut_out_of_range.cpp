// expect: In instantiation of 'struct tessera::dist::pipeline_check::cut_out_of_range<7, 7>'
// A pipeline cut at 7 of a model of 7 layers would leave its last stage without layers: the build stops, and the
// first error names the cut (7) and the number of layers (7). No MPI is needed to see it.
#include <tessera/dist/pipeline.hpp>
namespace nn = tessera::nn;
namespace dist = tessera::dist;
using tessera::dyn;
using Net = nn::Sequential<tessera::Shape<dyn, 1, 28, 28>, nn::Conv2d<1, 8, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Flatten, nn::Linear<8 * 14 * 14, 32>, nn::ReLU, nn::Linear<32, 10>>;
int main() {
  return int(dist::pipeline<Net, dist::cuts<3, 7>>::stages);
}
