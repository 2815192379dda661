// The SimpleCNN (issue 4's main job) on fixed pseudo-random images, 1 and 2 threads: one training step at batch 64
// (forward, cross-entropy, backward, SGD with momentum) and one inference batch at batch 1 to 256 (and 500, the
// example's test batch). items/s counts images. The epoch on the real data and the PyTorch peers (the same batch
// sweep in bench/torch_peers.py) are run by bench/compare.
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
  ts::cpu_threads::set_num_threads(int(st.range(0)));
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
  ts::cpu_threads::set_num_threads(int(st.range(1)));
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

BENCHMARK(BM_simplecnn_train_step)->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_simplecnn_inference)
    ->ArgsProduct({{1, 2, 4, 8, 16, 32, 64, 128, 256, 500}, {1, 2}})
    ->ArgNames({"batch", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
