// expect: residual_branches_differ<tessera::Shape<-1, 8, 4, 4>, tessera::Shape<-1, 4, 7, 7> ?>
// A residual block whose main branch halves the map and doubles the channels while the shortcut is the identity:
// the sum cannot be formed, and the first error names both branches' output shapes (main first).
#include <tessera/nn/composition.hpp>
#include <tessera/nn/sequential.hpp>
namespace nn = tessera::nn;
using tessera::dyn;
using Bad = nn::Sequential<tessera::Shape<dyn, 4, 7, 7>,
    nn::Residual<nn::Seq<nn::Conv2d<4, 8, 3, {.stride = 2, .padding = 1}>, nn::BatchNorm2d<8>>>>;
int main() {
  Bad net(0);
  (void)net;
}
