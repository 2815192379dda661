// expect: compiled by nvcc
// The cuda policy's memory and kernels exist only in translation units compiled by nvcc.
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<float, tessera::Shape<4>, tessera::cuda> a;
  (void)a;
}
