// The SimpleCNN (issue 4's main job) at batch 64, 2 threads: one training step (forward, cross-entropy, backward,
// SGD with momentum) and one inference batch, on fixed pseudo-random images. items/s counts images. The epoch
// and the PyTorch peer are measured by bench/simplecnn_report.sh on the real data.
#include <benchmark/benchmark.h>

#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;

using SimpleCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>;

namespace {
struct batch {
  ts::Tensor<float, ts::Shape<dyn, 1, 28, 28>, ts::cpu_threads> x;
  ts::Tensor<int, ts::Shape<dyn>, ts::cpu_threads> y;
  explicit batch(ts::index_t n) : x(n), y(n) {
    ts::Rng rng(1);
    for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = rng.uniform();
    for (ts::index_t i = 0; i < n; ++i) y(i) = int(rng.below(10));
  }
};

void BM_simplecnn_train_step(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(2);
  SimpleCNN net(0);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.01, .momentum = 0.9});
  batch b(64);
  for (auto _ : st) {
    opt.zero_grad();
    auto loss = ad::cross_entropy(net.forward(b.x), b.y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.value().data());
  }
  st.SetItemsProcessed(int64_t(st.iterations()) * 64);
}

void BM_simplecnn_inference(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(2);
  SimpleCNN net(0);
  net.eval();
  batch b(st.range(0));
  for (auto _ : st) {
    auto logits = net.predict(b.x);
    benchmark::DoNotOptimize(logits.data());
  }
  st.SetItemsProcessed(int64_t(st.iterations()) * st.range(0));
}
}  // namespace

BENCHMARK(BM_simplecnn_train_step)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_simplecnn_inference)->Arg(64)->Arg(500)->UseRealTime()->Unit(benchmark::kMillisecond);
