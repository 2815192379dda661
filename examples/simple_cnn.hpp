// The SimpleCNN of the Fashion-MNIST examples (fashion_mnist, prune_simplecnn, qat_simplecnn): two 3x3 convolutions
// (1 -> 32 -> 64 channels, padding 1) each with ReLU and a 2x2 max-pool, then Linear 3136 -> 128, ReLU, Linear 128 -> 10,
// as bench/torch_simplecnn.py builds it in PyTorch. simple_cnn<P> is that model on policy P (float).
// (conv2d_options spelled out: nvcc does not parse a bare designated initializer as a template argument)
#pragma once
#include <tessera/nn/sequential.hpp>

namespace example {

using simple_cnn_layers = tessera::nn::Sequential<tessera::Shape<tessera::dyn, 1, 28, 28>,
    tessera::nn::Conv2d<1, 32, 3, tessera::conv2d_options{.padding = 1}>, tessera::nn::ReLU, tessera::nn::MaxPool2d<2>,
    tessera::nn::Conv2d<32, 64, 3, tessera::conv2d_options{.padding = 1}>, tessera::nn::ReLU, tessera::nn::MaxPool2d<2>,
    tessera::nn::Flatten, tessera::nn::Linear<64 * 7 * 7, 128>, tessera::nn::ReLU, tessera::nn::Linear<128, 10>>;

template <class P>
using simple_cnn = typename simple_cnn_layers::template on<P>;

}  // namespace example
