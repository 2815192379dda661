// expect: avg_pool2d has no dilation
// Average pooling with a dilation (PyTorch's AvgPool2d has none) is refused at compile time, in words.
#include <tessera/tessera.hpp>

int main() {
  tessera::Tensor<float, tessera::Shape<1, 1, 8, 8>> x;
  x = 1.0f;
  constexpr tessera::pool2d_options o{.kernel = 2, .dilation = 2};
  tessera::Tensor<float, tessera::Shape<1, 1, 3, 3>> y = tessera::avg_pool2d<o>(x);
  (void)y;
}
