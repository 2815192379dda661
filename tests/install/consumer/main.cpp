// Built by the install_consumer and subdirectory_consumer tests: tessera used as a downstream project would.
#include <cmath>
#include <cstdio>
#include <tessera/tessera.hpp>

int main() {
  tessera::Tensor<float, tessera::Shape<tessera::dyn, 3>> x(4), y(4);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) {
      x(i, j) = 0.1f * float(i) + 0.05f * float(j);
      y(i, j) = 1.0f - 0.2f * float(j);
    }
  tessera::Tensor<float, tessera::Shape<tessera::dyn, 3>> z = tessera::tanh(x * y + 0.5f);

  const float want = std::tanh((0.1f * 2 + 0.05f * 1) * (1.0f - 0.2f * 1) + 0.5f);
  const float got = z(2, 1);
  if (z.dims()[0] != 4 || std::fabs(got - want) > 1e-5f) {
    std::printf("tessera consumer: FAILED: z(2, 1) = %.7f, want %.7f\n", double(got), double(want));
    return 1;
  }
  std::printf("tessera consumer: ok, z(2, 1) = %.6f\n", double(got));
  return 0;
}
