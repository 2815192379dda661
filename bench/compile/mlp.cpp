// Compile-cost benchmark: a user's typical small MLP program (scripts/compile_stats.sh measures it). A two-hidden-
// layer MLP on random data, Adam, a few steps, the loss printed at each. What it exercises at compile time: the
// Sequential model type, Linear/ReLU forward and backward (GEMM with epilogues), cross entropy, the optimizer.
//   g++ -std=c++20 -O2 -march=native -fopenmp -Iinclude bench/compile/mlp.cpp -o mlp && ./mlp
#include <cstdio>

#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
using ts::dyn;

using MLP = nn::Sequential<ts::Shape<dyn, 64>, nn::Linear<64, 128>, nn::ReLU, nn::Linear<128, 64>, nn::ReLU,
                           nn::Linear<64, 10>>::on<ts::cpu_threads>;

int main() {
  MLP net(/*seed=*/0);
  ts::optim::Adam<float> opt(net.parameters(), {.lr = 1e-3});
  ts::Rng rng(1);
  ts::Tensor<float, ts::Shape<dyn, 64>, ts::cpu_threads> x(32);
  ts::Tensor<int, ts::Shape<dyn>> y(32);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = rng.normal();
  for (ts::index_t i = 0; i < y.size(); ++i) y.data()[i] = int(rng.below(10));
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    auto loss = ts::ad::cross_entropy(net.forward(x), y);
    loss.backward();
    opt.step();
    std::printf("step %d: loss %.4f\n", step, double(loss.value()()));
  }
  return 0;
}
