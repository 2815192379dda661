// expect: static_shapes_differ<tessera::op::assign, tessera::Shape<4, 3>, tessera::Shape<5, 3> >
// A 4x3 expression cannot be stored in a tensor whose static shape is 5x3.
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<float, tessera::Shape<4, 3>> a;
  tessera::Tensor<float, tessera::Shape<5, 3>> c = a * 2.0f;
  (void)c;
}
