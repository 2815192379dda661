// The Fashion-MNIST training program shared by fashion_mnist.cpp (the model on cpu_threads) and fashion_mnist.cu (the
// same model on the cuda policy): the including file defines `Policy` first, then includes this file, which holds
// main(). See fashion_mnist.cpp for what the program does.
//
// --logdir DIR (anywhere among the arguments) also monitors the run (tessera/monitor): a TensorBoard event file in DIR
// with, per training step, train/loss, train/accuracy (of the batch), train/lr, train/images_per_s and train/step_s;
// per epoch test/accuracy, train/epoch_loss, train/epoch_s, histograms of every parameter and its gradient
// (weights/<name>, grads/<name>), the first convolution's filters as one image (filters/<name>) and the first 8
// misclassified test images (misclassified/<k>) with their labels (text: misclassified); the same scalars go to
// DIR/steps.csv and DIR/epochs.csv. Every point is at the global step (batches trained so far).
#pragma once
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/io/checkpoint.hpp>
#include <tessera/io/save.hpp>
#include <tessera/monitor/csv_writer.hpp>
#include <tessera/monitor/summary_writer.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>

#include "example_support.hpp"
#include "simple_cnn.hpp"
#if !defined(__CUDACC__)
#include <tessera/quant/model.hpp>
#endif

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;

using SimpleCNN = example::simple_cnn<Policy>;

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

/// The run's monitoring (--logdir): TensorBoard summaries and CSV logs of the same scalars.
struct run_monitor {
  ts::monitor::summary_writer tb;
  ts::monitor::csv_writer steps, epochs;
  std::int64_t step = 0;  ///< batches trained so far
  explicit run_monitor(const std::string& dir)
      : tb(dir), steps(std::filesystem::path(dir) / "steps.csv"), epochs(std::filesystem::path(dir) / "epochs.csv") {}
};

constexpr std::array<const char*, 10> fashion_mnist_classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/// Per epoch: parameter and gradient histograms, the first convolution's filters, and the first 8 misclassified test
/// images (pixels restored from the standardised ones) with their labels.
template <class Net>
void monitor_epoch(run_monitor& m, Net& net, const ts::idx_dataset& test) {
  m.tb.add_histograms(net, m.step);
  bool filters_done = false;
  net.for_each_parameter([&](const std::string& name, auto& v) {
    if constexpr (std::tuple_size_v<std::remove_cvref_t<decltype(v.dims())>> == 4)
      if (!std::exchange(filters_done, true))
        m.tb.add_images_grid("filters/" + name, v, m.step,
                             {.padding = 2, .scale = 6, .normalize_each = true, .pad_value = 128});
  });
  if constexpr (requires { net.eval(); }) net.eval();
  std::string table = "| k | test image | label | predicted |\n|---|---|---|---|\n";
  int found = 0;
  for (ts::index_t a = 0; a < test.size() && found < 8; a += 500) {
    const ts::index_t b = std::min<ts::index_t>(a + 500, test.size());
    auto logits = on_host(net.predict(ts::to<Policy>(ts::slice<0>(test.images, a, b))));
    auto pred = ts::eval(ts::argmax<1>(logits));
    for (ts::index_t j = 0; j < b - a && found < 8; ++j) {
      const int want = int(test.labels(a + j)), got = int(pred(j));
      if (want == got) continue;
      const auto& norm = ts::fashion_mnist_normalization;
      ts::Tensor<float, ts::Shape<1, 28, 28>> img;
      for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) img(0, y, x) = test.images(a + j, 0, y, x) * norm.stddev + norm.mean;
      m.tb.add_image("misclassified/" + std::to_string(found), img, m.step);
      table += "| " + std::to_string(found) + " | " + std::to_string(a + j) + " | " + fashion_mnist_classes[want] +
               " | " + fashion_mnist_classes[got] + " |\n";
      ++found;
    }
  }
  m.tb.add_text("misclassified", table, m.step);
  m.tb.flush();
}
}  // namespace

int main(int argc, char** argv) {
#if defined(__CUDACC__)
  if (Policy::on_device && example::no_device("fashion_mnist")) return 77;
#endif
  // [epochs = 3] [threads = 2] [checkpoint = simplecnn.ckpt], and --logdir DIR anywhere
  std::vector<std::string> args;
  std::string logdir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--logdir" || a.rfind("--logdir=", 0) == 0) {
      if (a == "--logdir" && i + 1 >= argc) {
        std::fprintf(stderr, "--logdir needs a directory\n");
        return 2;
      }
      logdir = a == "--logdir" ? argv[++i] : a.substr(9);
    } else {
      args.push_back(a);
    }
  }
  const int epochs = args.size() > 0 ? std::atoi(args[0].c_str()) : 3;
  const int threads = args.size() > 1 ? std::atoi(args[1].c_str()) : 2;
  const std::string ckpt = args.size() > 2 ? args[2] : "simplecnn.ckpt";
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
  std::optional<run_monitor> mon;
  if (!logdir.empty()) {
    mon.emplace(logdir);
    std::printf("monitoring: %s (CSV: steps.csv, epochs.csv); to watch it: tensorboard --logdir %s\n",
                mon->tb.path().c_str(), logdir.c_str());
  }

  for (int e = 0; e < epochs; ++e) {
    const double lr = 0.05 / double(1 << e);
    opt.set_lr(lr);  // step decay: halved every epoch
    net.train();
    double epoch_loss = 0;
    const auto [train_s, seen] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
      const auto t0 = std::chrono::steady_clock::now();
      opt.zero_grad();
      auto logits = net.forward(x);
      auto loss = ad::cross_entropy(logits, y);
      loss.backward();
      opt.step();
      const double l = double(on_host(loss.value())());  // on the cuda policy: a copy that waits for the step
      epoch_loss += l;
      if (mon) {
        const double dt = seconds_since(t0);
        const auto pred = ts::eval(ts::argmax<1>(on_host(logits.value())));
        const auto& labels = on_host(y);
        const ts::index_t n = x.dims()[0];
        ts::index_t correct = 0;
        for (ts::index_t j = 0; j < n; ++j) correct += pred(j) == labels(j);
        const double acc = double(correct) / double(n), ips = double(n) / dt;
        ++mon->step;
        mon->tb.add_scalar("train/loss", l, mon->step);
        mon->tb.add_scalar("train/accuracy", acc, mon->step);
        mon->tb.add_scalar("train/lr", lr, mon->step);
        mon->tb.add_scalar("train/images_per_s", ips, mon->step);
        mon->tb.add_scalar("train/step_s", dt, mon->step);
        mon->steps.write_row({{"epoch", e + 1}, {"step", mon->step}, {"loss", l}, {"accuracy", acc}, {"lr", lr},
                              {"images_per_s", ips}, {"step_s", dt}});
      }
      return l;
    });
    double infer_s = 0;
    const double acc = accuracy(net, test, infer_s);
    std::printf("epoch %d: train %.1f s (%.0f images/s)  test accuracy %.2f%%  (inference over %lld images: %.2f s)\n", e + 1,
                train_s, double(seen) / train_s, 100 * acc, (long long)test.size(), infer_s);
    if (mon) {
      const double mean_loss = epoch_loss / double(loader.size());
      mon->tb.add_scalar("test/accuracy", acc, mon->step);
      mon->tb.add_scalar("train/epoch_loss", mean_loss, mon->step);
      mon->tb.add_scalar("train/epoch_s", train_s, mon->step);
      mon->epochs.write_row({{"epoch", e + 1}, {"step", mon->step}, {"train_loss", mean_loss}, {"test_accuracy", acc},
                             {"lr", lr}, {"train_s", train_s}, {"images_per_s", double(seen) / train_s}});
      monitor_epoch(*mon, net, test);
    }
  }
  if (mon) mon->tb.close();

  // checkpoint: parameters, buffers and optimizer state in one call, written atomically; then loaded into a model and
  // an optimizer built from another seed, every name and shape checked (device tensors go through the host)
  ts::save(ckpt, net, opt);
  SimpleCNN restored(/*seed=*/123);
  ts::optim::SGD<float> restored_opt(restored.parameters(), {.lr = 0.05, .momentum = 0.9});
  ts::load(ckpt, restored, restored_opt);
  const ts::checkpoint_reader r(ckpt);
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
