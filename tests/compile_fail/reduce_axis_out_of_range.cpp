// expect: axis_out_of_range<tessera::op::sum, 2, tessera::Shape<-1, 3> >
// A rank-2 tensor has axes -2 .. 1.
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<float, tessera::Shape<tessera::dyn, 3>> a(4);
  auto s = tessera::sum<2>(a);
  (void)s;
}
