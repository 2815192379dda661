// The row-LSTM Fashion-MNIST program shared by fashion_mnist_lstm.cpp (the model on cpu_threads) and
// fashion_mnist_lstm.cu (the same model on the cuda policy): the including file defines `Policy` first, then includes
// this file, which holds main(). See fashion_mnist_lstm.cpp for what the program does.
#pragma once
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/nn/recurrent.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>

#include "example_support.hpp"
#if !defined(__CUDACC__)
#include <tessera/quant/model.hpp>
#endif

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;

using RowLSTM = nn::Sequential<ts::Shape<dyn, 28, 28>,
    nn::LSTM<28, 128, ts::lstm_options{.num_layers = 2, .dropout = 0.2, .batch_first = true}>, nn::LastStep,
    nn::Linear<128, 10>>::on<Policy>;
using Rows = ts::Tensor<float, ts::Shape<dyn, 28, 28>, ts::cpu_threads>;

namespace {
/// Images [n, 1, 28, 28] as sequences [n, 28, 28]: row r of an image is time step r.
template <class X>
Rows as_rows(const X& images) {
  const ts::index_t n = images.dims()[0];
  return ts::to<ts::cpu_threads>(ts::reshape<ts::Shape<dyn, 28, 28>>(images, {n, 28, 28}));
}
/// Accuracy of `net` (the float model or its int8 model) over the test sequences, in batches of 500.
template <class Net, class Labels>
double accuracy(Net& net, const Rows& rows, const Labels& labels, double& secs) {
  if constexpr (requires { net.eval(); }) net.eval();
  return example::accuracy(rows.dims()[0], labels, secs,
                           [&](ts::index_t a, ts::index_t b) {
                             auto logits = net.predict(ts::to<Policy>(Rows(ts::slice<0>(rows, a, b))));
                             return ts::to<ts::cpu>(logits);  // (a copy on the host either way)
                           });
}
}  // namespace

int main(int argc, char** argv) {
#if defined(__CUDACC__)
  if (Policy::on_device && example::no_device("fashion_mnist_lstm")) return 77;
#endif
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 3;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  ts::cpu_threads::set_num_threads(threads);
  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test);
  const Rows test_rows = as_rows(test.images);
  [[maybe_unused]] const Rows calibration = as_rows(ts::slice<0>(train.images, 0, 1000));

  RowLSTM net(/*seed=*/0);
  ts::optim::Adam<float> opt(net.parameters(), {.lr = 2e-3});
  if (Policy::on_device) std::printf("row LSTM: %lld parameters; batch 64, on the cuda device\n", (long long)net.num_parameters());
  else std::printf("row LSTM: %lld parameters; batch 64, %d thread(s)\n", (long long)net.num_parameters(), threads);
  ts::DataLoader loader(std::move(train.images), std::move(train.labels), {.batch_size = 64, .shuffle = true, .seed = 0});
  for (int e = 0; e < epochs; ++e) {
    net.train();
    const auto [train_s, seen] = example::train_epoch(loader, e, "sequences", [&](const auto& x, const auto& y) {
      opt.zero_grad();
      auto loss = ad::cross_entropy(net.forward(ts::to<Policy>(as_rows(x))), y);
      loss.backward();
      opt.step();
      return double(ts::to<ts::cpu>(loss.value())());  // on the cuda policy: a copy that waits for the step
    });
    double infer_s = 0;
    const double acc = accuracy(net, test_rows, test.labels, infer_s);
    std::printf("epoch %d: train %.1f s  test accuracy %.2f%%  (inference over %lld sequences: %.2f s)\n", e + 1, train_s,
                100.0 * acc, (long long)test_rows.dims()[0], infer_s);
  }

#if !defined(__CUDACC__)
  // int8 weights, activations quantized dynamically: converted after calibrating on 1000 training sequences
  double float_s = 0, int8_s = 0;
  const double float_acc = accuracy(net, test_rows, test.labels, float_s);
  auto qnet = ts::quant::quantize(net, calibration);
  const double int8_acc = accuracy(qnet, test_rows, test.labels, int8_s);
  std::printf("int8 weights, dynamically quantized activations (kernels: %s)\n",
              std::string(ts::int8_isa_name(ts::int8_isa_active())).c_str());
  example::print_int8_comparison(float_acc, int8_acc, float_s, int8_s, "sequences");
#else
  std::printf("(int8 inference runs on the CPU: the CPU build, fashion_mnist_lstm, converts the model)\n");
#endif
}
