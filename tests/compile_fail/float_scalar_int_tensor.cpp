// expect: floating-point scalar meets an integer tensor
// 0.5 * an int32 tensor would silently truncate the scalar: rejected.
#include <cstdint>
#include <tessera/tessera.hpp>
int main() {
  tessera::Tensor<std::int32_t, tessera::Shape<4>> a;
  auto c = a * 0.5;
  (void)c;
}
