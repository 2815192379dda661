// expect: shapes_cannot_be_broadcast<tessera::op::add, tessera::Shape<4, 3>, tessera::Shape<5, 3> ?>
#include <tessera/tessera.hpp>
int main() { tessera::Tensor<float, tessera::Shape<4, 3>> a; tessera::Tensor<float, tessera::Shape<5, 3>> b; auto c = a + b; (void)c; }
