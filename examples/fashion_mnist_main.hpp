// The Fashion-MNIST training program shared by fashion_mnist.cpp (the model on cpu_threads) and fashion_mnist.cu (the
// same model on the cuda policy): the including file defines `Policy` first, then includes this file, which holds
// main(). See fashion_mnist.cpp for what the program does.
#pragma once
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/io/checkpoint.hpp>
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

// (conv2d_options spelled out: nvcc does not parse a bare designated initializer as a template argument)
using SimpleCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>::on<Policy>;

namespace {
using example::seconds_since;

/// The tensor itself when it is on the host, else a host copy of it.
template <class X>
decltype(auto) on_host(const X& t) {
  if constexpr (X::policy::on_device) return ts::to<ts::cpu>(t);
  else return (t);
}

/// Accuracy of `net` (the float model, or its int8 model) over a dataset, in batches of 500 (inference: no graph is
/// recorded).
template <class Net>
double accuracy(Net& net, const ts::idx_dataset& d, double& secs) {
  if constexpr (requires { net.eval(); }) net.eval();
  return example::accuracy(d.images.dims()[0], d.labels, secs, [&](ts::index_t a, ts::index_t b) {
    const auto logits = net.predict(ts::to<Policy>(ts::slice<0>(d.images, a, b)));
    auto host = on_host(logits);  // (a copy on the host either way)
    return host;
  });
}
}  // namespace

int main(int argc, char** argv) {
#if defined(__CUDACC__)
  if (Policy::on_device && example::no_device("fashion_mnist")) return 77;
#endif
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 3;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const std::string ckpt = argc > 3 ? argv[3] : "simplecnn.ckpt";
  ts::cpu_threads::set_num_threads(threads);

  // pixels scaled to [0, 1], then standardised with the training set's mean and standard deviation
  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train, ts::fashion_mnist_normalization);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test, ts::fashion_mnist_normalization);
  if (Policy::on_device)
    std::printf("Fashion-MNIST: %lld training and %lld test images; batch 64, on the cuda device\n", (long long)train.size(),
                (long long)test.size());
  else
    std::printf("Fashion-MNIST: %lld training and %lld test images; batch 64, %d thread(s)\n", (long long)train.size(),
                (long long)test.size(), threads);

  // 1000 training images (the first, unshuffled) to calibrate the int8 model on at the end
  ts::Tensor<float, ts::Shape<dyn, 1, 28, 28>> calibration(ts::slice<0>(train.images, 0, 1000));

  SimpleCNN net(/*seed=*/0);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  ts::DataLoader loader(std::move(train.images), std::move(train.labels), {.batch_size = 64, .shuffle = true, .seed = 0});
  std::printf("SimpleCNN: %lld parameters\n", (long long)net.num_parameters());

  for (int e = 0; e < epochs; ++e) {
    opt.set_lr(0.05 / double(1 << e));  // step decay: halved every epoch
    net.train();
    const auto [train_s, seen] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
      opt.zero_grad();
      auto loss = ad::cross_entropy(net.forward(x), y);
      loss.backward();
      opt.step();
      return double(on_host(loss.value())());  // on the cuda policy: a copy that waits for the step
    });
    double infer_s = 0;
    const double acc = accuracy(net, test, infer_s);
    std::printf("\nepoch %d: train %.1f s (%.0f images/s)  test accuracy %.2f%%  (inference over %lld images: %.2f s)\n", e + 1,
                train_s, double(seen) / train_s, 100 * acc, (long long)test.size(), infer_s);
  }

  // checkpoint: parameters and optimizer state, written atomically; then read back and checked (device tensors are
  // copied to and from the host by the checkpoint; the optimizer hands out host copies of its device state)
  ts::checkpoint_writer w;
  net.for_each_parameter([&](const std::string& name, auto& v) { w.add(name, v.value()); });
  net.for_each_buffer([&](const std::string& name, auto& t) { w.add(name, t); });
  opt.for_each_state([&](const std::string& name, auto& t) { w.add("optimizer." + name, t); });
  w.write(ckpt);
  SimpleCNN restored(/*seed=*/123);
  ts::checkpoint_reader r(ckpt);
  restored.for_each_parameter([&](const std::string& name, auto& v) { r.read_into(name, v.mutable_value()); });
  double infer_s = 0;
  const double acc = accuracy(restored, test, infer_s);
  std::printf("checkpoint %s: %zu entries; the restored model scores %.2f%% (inference over the 10k test images: %.2f s)\n",
              ckpt.c_str(), r.names().size(), 100 * acc, infer_s);

#if !defined(__CUDACC__)
  // int8: calibrate on 1000 training images, convert the trained model type to its int8 model type, compare
  double float_s = 0, int8_s = 0;
  const double float_acc = accuracy(net, test, float_s);
  const auto t0 = std::chrono::steady_clock::now();
  auto qnet = ts::quant::quantize(net, calibration);
  const double convert_s = seconds_since(t0);
  const double int8_acc = accuracy(qnet, test, int8_s);
  std::printf("int8 (kernels: %s): calibrated on %lld images and converted in %.2f s\n",
              std::string(ts::int8_isa_name(ts::int8_isa_active())).c_str(), (long long)calibration.dims()[0], convert_s);
  example::print_int8_comparison(float_acc, int8_acc, float_s, int8_s, "images");
#endif
}
