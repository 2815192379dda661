// expect: self-attention in a model needs kdim = vdim = embed_dim
// A MultiheadAttention with kdim / vdim other than embed_dim used as a model's layer (self-attention on one input)
// is a compile error in words; its forward(query, key, value) by hand takes the other widths.
#include <tessera/nn/attention.hpp>

namespace nn = tessera::nn;

int main() {
  tessera::Rng rng(0);
  nn::MultiheadAttention<8, 2, tessera::mha_options{.kdim = 4}>::state<float, tessera::cpu> mha(rng);
  tessera::ad::Var<float, 3> x(tessera::Tensor<float, tessera::dyn_shape_t<3>>(tessera::dims_t<3>{1, 2, 8}), false);
  nn::context ctx;
  auto y = mha.forward(x, ctx);
  (void)y;
}
