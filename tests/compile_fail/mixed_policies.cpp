// expect: mixes two policies
// Operands under different policies cannot meet in one expression.
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<float, tessera::Shape<4>, tessera::cpu> a;
  tessera::Tensor<float, tessera::Shape<4>, tessera::cpu_threads> b;
  auto c = a + b;
  (void)c;
}
