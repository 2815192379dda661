// expect: .npy has no bfloat16 type
// numpy has no bfloat16: saving a bfloat16 tensor as .npy is refused at compile time, in words.
#include <tessera/interop/npy.hpp>

int main() {
  tessera::Tensor<tessera::bfloat16, tessera::Shape<4>> x;
  tessera::save_npy("x.npy", x);
}
