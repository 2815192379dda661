// Compile-cost benchmark: a user's typical small LSTM program (scripts/compile_stats.sh measures it). Sequences of
// random vectors read by a two-layer LSTM, its last step classified by a Linear layer; Adam, a few steps, the loss
// printed at each. What it exercises at compile time: the LSTM layer forward and backward through time, LastStep,
// Linear, cross entropy, the optimizer.
//   g++ -std=c++20 -O2 -march=native -fopenmp -Iinclude bench/compile/lstm.cpp -o lstm && ./lstm
#include <cstdio>

#include <tessera/nn/recurrent.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
using ts::dyn;

using Net = nn::Sequential<ts::Shape<dyn, 12, 16>, nn::LSTM<16, 32, ts::lstm_options{.num_layers = 2, .batch_first = true}>,
                           nn::LastStep, nn::Linear<32, 5>>::on<ts::cpu_threads>;

int main() {
  Net net(/*seed=*/0);
  ts::optim::Adam<float> opt(net.parameters(), {.lr = 2e-3});
  ts::Rng rng(1);
  ts::Tensor<float, ts::Shape<dyn, 12, 16>, ts::cpu_threads> x(8);
  ts::Tensor<int, ts::Shape<dyn>> y(8);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = rng.normal();
  for (ts::index_t i = 0; i < y.size(); ++i) y.data()[i] = int(rng.below(5));
  net.train();
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    auto loss = ts::ad::cross_entropy(net.forward(x), y);
    loss.backward();
    opt.step();
    std::printf("step %d: loss %.4f\n", step, double(loss.value()()));
  }
  return 0;
}
