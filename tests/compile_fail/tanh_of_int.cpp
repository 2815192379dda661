// expect: element_type_not_supported<tessera::op::tanh, int>
// tanh is defined on floating-point tensors only.
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<int, tessera::Shape<4>> a;
  auto c = tessera::tanh(a);
  (void)c;
}
