// tessera quickstart: tensors with a dynamic batch extent, one fused elementwise expression, a reduction.
#include <cstdio>
#include <tessera/tessera.hpp>

using tessera::dyn;
using tessera::Shape;
using tessera::Tensor;

template <class T>
void print(const char* name, const T& t) {
  std::printf("%s (%lld x %lld):\n", name, (long long)t.dims()[0], (long long)t.dims()[1]);
  for (tessera::index_t i = 0; i < t.dims()[0]; ++i) {
    std::printf("  [");
    for (tessera::index_t j = 0; j < t.dims()[1]; ++j) std::printf(" %8.5f", double(t(i, j)));
    std::printf(" ]\n");
  }
}

int main() {
  // Four rows of three: the row count is chosen at run time, the column count is part of the type.
  Tensor<float, Shape<dyn, 3>> x(4), y(4);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) {
      x(i, j) = 0.25f * float(i) - 0.5f;
      y(i, j) = 0.5f * float(j) - 0.25f * float(i);
    }
  print("x", x);
  print("y", y);

  // The whole right-hand side is one lazy expression, evaluated in a single pass with no temporaries.
  Tensor<float, Shape<dyn, 3>> z = tanh(x * y + 0.5f) * sigmoid(x - y);
  print("z = tanh(x*y + 0.5) * sigmoid(x - y)", z);

  // Sum over axis 1 (the columns): one value per row.
  Tensor<float, Shape<dyn>> row_sums = tessera::sum<1>(z);
  std::printf("sum<1>(z):\n  [");
  for (tessera::index_t i = 0; i < row_sums.dims()[0]; ++i) std::printf(" %8.5f", double(row_sums(i)));
  std::printf(" ]\n");
  return 0;
}
