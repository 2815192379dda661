// expect: to_dlpack: pass std::move
// Exporting an lvalue tensor would leave it without its buffer (or the export dangling): refused, saying what to pass.
#include <tessera/interop/dlpack.hpp>

int main() {
  tessera::Tensor<float, tessera::Shape<2, 3>> t;
  DLManagedTensor* m = tessera::to_dlpack(t);
  m->deleter(m);
}
