// expect: matmul_inner_extents_differ<tessera::Shape<4, 5 ?>, tessera::Shape<6, 3 ?> ?>
// A 4x5 matrix times a 6x3 one: the inner extents differ, so it does not compile.
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<float, tessera::Shape<4, 5>> a;
  tessera::Tensor<float, tessera::Shape<6, 3>> b;
  auto c = tessera::matmul(a, b);
  (void)c;
}
