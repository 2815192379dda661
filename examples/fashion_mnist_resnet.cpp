// Trains a small ResNet on Fashion-MNIST: a stem (3x3 convolution 1 -> 32, BatchNorm2d, ReLU, 2x2 max-pool to 14x14),
// three stages of residual basic blocks (32 channels at 14x14; 64 at 7x7 after a stride-2 block with a 1x1
// projection shortcut; 64 again), global average pooling over the 7x7 map and a Linear to the 10 classes.
// Training: cross-entropy with label smoothing 0.1; SGD with momentum 0.9 and weight decay 5e-4 on a one-cycle
// schedule set at every step (the learning rate rises on a half cosine from lr/25 to lr = 0.1 over the first 20 % of
// the steps of all epochs, then falls on one to lr/2.5e5: PyTorch's OneCycleLR with pct_start=0.2,
// cycle_momentum=False and its other defaults); batch 64 by default, standardised pixels. After each epoch it prints
// the epoch's time, its mean loss and the test accuracy. bench/torch_resnet.py is the same net, batch, loss,
// optimizer and schedule in PyTorch.
//   fashion_mnist_resnet [--epochs 5] [--threads 2] [--batch 64] [--train-images 60000] [--test-images 10000]
//                        [--lr 0.1] [--weight-decay 5e-4] [--label-smoothing 0.1]
// The data comes from Debian's dataset-fashion-mnist (or $TESSERA_FASHION_MNIST_DIR).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tessera/autodiff/loss_ops.hpp>
#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/nn/composition.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>

#include "example_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;

/// A basic block at C channels: two 3x3 convolutions with batch norm, the input added back, then ReLU.
template <int C>
using BasicBlock = nn::Residual<nn::Seq<nn::Conv2d<C, C, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<C>, nn::ReLU,
                                        nn::Conv2d<C, C, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<C>>>;
/// A block from C to 2C channels at half the resolution: the first convolution has stride 2, the shortcut is a 1x1
/// stride-2 convolution with batch norm.
template <int C>
using DownBlock = nn::Residual<nn::Seq<nn::Conv2d<C, 2 * C, 3, ts::conv2d_options{.stride = 2, .padding = 1}>, nn::BatchNorm2d<2 * C>,
                                       nn::ReLU, nn::Conv2d<2 * C, 2 * C, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<2 * C>>,
                               nn::Seq<nn::Conv2d<C, 2 * C, 1, ts::conv2d_options{.stride = 2}>, nn::BatchNorm2d<2 * C>>>;

// (the global average pool is AvgPool2d<7> over the final 7x7 map: the same as an adaptive pool to 1x1 here)
using ResNet = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, ts::conv2d_options{.padding = 1}>, nn::BatchNorm2d<32>, nn::ReLU, nn::MaxPool2d<2>,  // 32 x 14 x 14
    BasicBlock<32>,                                                                                          // 32 x 14 x 14
    DownBlock<32>,                                                                                           // 64 x 7 x 7
    BasicBlock<64>,                                                                                          // 64 x 7 x 7
    nn::AvgPool2d<7>, nn::Flatten, nn::Linear<64, 10>>;
static_assert(std::is_same_v<ResNet::output_shape, ts::Shape<dyn, 10>>);

namespace {
struct options {
  int epochs = 5;
  int threads = 2;
  ts::index_t batch = 64;
  ts::index_t train_images = 60000;
  ts::index_t test_images = 10000;
  double lr = 0.1;
  double weight_decay = 5e-4;
  double label_smoothing = 0.1;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    auto number = [&](const char* name) {
      if (!v) {
        std::fprintf(stderr, "fashion_mnist_resnet: %s needs a value\n", name);
        std::exit(1);
      }
      ++i;
      return std::atoll(v);
    };
    auto real = [&](const char* name) {
      if (!v) {
        std::fprintf(stderr, "fashion_mnist_resnet: %s needs a value\n", name);
        std::exit(1);
      }
      ++i;
      return std::atof(v);
    };
    if (!std::strcmp(a, "--epochs")) o.epochs = int(number(a));
    else if (!std::strcmp(a, "--threads")) o.threads = int(number(a));
    else if (!std::strcmp(a, "--batch")) o.batch = number(a);
    else if (!std::strcmp(a, "--train-images")) o.train_images = number(a);
    else if (!std::strcmp(a, "--test-images")) o.test_images = number(a);
    else if (!std::strcmp(a, "--lr")) o.lr = real(a);
    else if (!std::strcmp(a, "--weight-decay")) o.weight_decay = real(a);
    else if (!std::strcmp(a, "--label-smoothing")) o.label_smoothing = real(a);
    else {
      std::fprintf(stderr, "usage: fashion_mnist_resnet [--epochs 5] [--threads 2] [--batch 64] [--train-images 60000] "
                           "[--test-images 10000] [--lr 0.1] [--weight-decay 5e-4] [--label-smoothing 0.1]\n");
      std::exit(a && (!std::strcmp(a, "--help") || !std::strcmp(a, "-h")) ? 0 : 1);
    }
  }
  if (o.epochs < 0 || o.threads < 1 || o.batch < 1 || o.train_images < 1 || o.test_images < 1 || !(o.lr > 0) ||
      !(o.weight_decay >= 0) || !(o.label_smoothing >= 0 && o.label_smoothing <= 1)) {
    std::fprintf(stderr, "fashion_mnist_resnet: epochs >= 0, threads, batch and image counts >= 1, lr > 0, weight decay >= 0, label smoothing in [0, 1]\n");
    std::exit(1);
  }
  return o;
}
}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  ts::cpu_threads::set_num_threads(o.threads);

  // pixels scaled to [0, 1], then standardised with the training set's mean and standard deviation
  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train, ts::fashion_mnist_normalization);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test, ts::fashion_mnist_normalization);
  const ts::index_t n_train = std::min(o.train_images, train.size()), n_test = std::min(o.test_images, test.size());
  ts::idx_images_t train_x(ts::slice<0>(train.images, 0, n_train));
  ts::idx_labels_t train_y(ts::slice<0>(train.labels, 0, n_train));
  std::printf("Fashion-MNIST: %lld training and %lld test images; batch %lld, %d thread(s)\n", (long long)n_train,
              (long long)n_test, (long long)o.batch, o.threads);

  ResNet net(/*seed=*/0);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = o.lr, .momentum = 0.9, .weight_decay = o.weight_decay});
  ts::DataLoader loader(std::move(train_x), std::move(train_y), {.batch_size = o.batch, .shuffle = true, .seed = 0});
  std::printf("ResNet: %lld parameters\n", (long long)net.num_parameters());

  // one cycle over all steps (OneCycleLR, anneal_strategy 'cos'): lr/25 up to lr over the first 20 %, then down to lr/25/1e4
  const double total = double(o.epochs) * double(loader.size()), warm = 0.2 * total;
  auto lr_at = [&](double step) {
    const double pi = 3.14159265358979323846;
    auto cos_from_to = [&](double a, double b, double t) { return b + (a - b) * 0.5 * (1 + std::cos(pi * t)); };
    return step < warm ? cos_from_to(o.lr / 25, o.lr, step / warm) : cos_from_to(o.lr, o.lr / 25 / 1e4, (step - warm) / (total - warm));
  };
  double step_no = 0;
  for (int e = 0; e < o.epochs; ++e) {
    net.train();
    double loss_sum = 0;
    ts::index_t batches = 0;
    const auto [train_s, seen] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
      opt.set_lr(lr_at(step_no++));
      opt.zero_grad();
      auto loss = ad::cross_entropy(net.forward(x), y, {.label_smoothing = o.label_smoothing});
      loss.backward();
      opt.step();
      const double l = double(loss.value()());
      loss_sum += l;
      ++batches;
      return l;
    });
    net.eval();
    double infer_s = 0;
    const double acc = example::accuracy(n_test, test.labels, infer_s, [&](ts::index_t a, ts::index_t b) {
      return net.predict(ts::to<ts::cpu_threads>(ts::slice<0>(test.images, a, b)));
    });
    std::printf("epoch %d: train %.1f s (%.0f images/s)  mean loss %.4f  test accuracy %.2f%%  (inference over %lld images: %.2f s)\n",
                e + 1, train_s, double(seen) / train_s, loss_sum / double(batches > 0 ? batches : 1), 100 * acc,
                (long long)n_test, infer_s);
  }
}
