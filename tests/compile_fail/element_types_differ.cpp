// expect: element_types_differ<tessera::op::add, float, double>
// Adding a float tensor to a double tensor must be rejected with both element types named.
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<float, tessera::Shape<4>> a;
  tessera::Tensor<double, tessera::Shape<4>> b;
  auto c = a + b;
  (void)c;
}
