// Structured pruning of the SimpleCNN on Fashion-MNIST (tessera/prune): trains the model as fashion_mnist does (batch 64,
// SGD with momentum 0.9, lr 0.05 halved every epoch), measures its test accuracy and its inference time over the 10k
// test images (batches of 500, best of 3), then prunes half of each convolution's channels and of the first Linear's
// neurons by their L1 norm (prune::prune_channels), shrinks the model to prune::with_widths_t<SimpleCNN, 16, 32, 64>
// (convolutions 1->16 and 16->32, Linear 1568->64), fine-tunes the small model one epoch and measures the same again;
// finally the small model converted to int8.
//   prune_simplecnn [epochs = 3] [threads = 2] [fine-tuning lr = 0.01]
// Last line, for bench/compare (accuracies in percent, times in seconds):
//   result BM_prune_structured/threads:2 unpruned_accuracy=.. pruned_accuracy=.. unpruned_inference_s=..
//          pruned_inference_s=.. speedup=..
// The data comes from Debian's dataset-fashion-mnist (or $TESSERA_FASHION_MNIST_DIR).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/prune/mask.hpp>
#include <tessera/prune/shrink.hpp>
#include <tessera/quant/model.hpp>
#include <tessera/tessera.hpp>

#include "example_support.hpp"
#include "simple_cnn.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
namespace prune = tessera::prune;
using ts::dyn;

using SimpleCNN = example::simple_cnn<ts::cpu_threads>;
using PrunedCNN = prune::with_widths_t<SimpleCNN, 16, 32, 64>;

namespace {
/// Test accuracy of `net` and the best of `runs` inference times over the test set (batches of 500).
template <class Net>
double accuracy(Net& net, const ts::idx_dataset& d, double& best_s, int runs = 3) {
  if constexpr (requires { net.eval(); }) net.eval();
  double acc = 0;
  best_s = 1e30;
  for (int r = 0; r < runs; ++r) {
    double s = 0;
    acc = example::accuracy(d.images.dims()[0], d.labels, s, [&](ts::index_t a, ts::index_t b) {
      return net.predict(ts::to<ts::cpu_threads>(ts::slice<0>(d.images, a, b)));
    });
    best_s = std::min(best_s, s);
  }
  return acc;
}

/// One epoch of SGD on `net` at learning rate lr.
template <class Net, class Loader>
void train_epoch(Net& net, ts::optim::SGD<float>& opt, Loader& loader, int epoch, double lr) {
  opt.set_lr(lr);
  net.train();
  const auto [secs, seen] = example::train_epoch(loader, epoch, "images", [&](const auto& x, const auto& y) {
    opt.zero_grad();
    auto loss = ad::cross_entropy(net.forward(x), y);
    loss.backward();
    opt.step();
    return double(loss.value()());
  });
  std::printf("  epoch %d: %.1f s (%.0f images/s), lr %.4f\n", epoch + 1, secs, double(seen) / secs, lr);
}
}  // namespace

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 3;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const double tune_lr = argc > 3 ? std::atof(argv[3]) : 0.01;
  ts::cpu_threads::set_num_threads(threads);

  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train, ts::fashion_mnist_normalization);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test, ts::fashion_mnist_normalization);
  ts::Tensor<float, ts::Shape<dyn, 1, 28, 28>> calibration(ts::slice<0>(train.images, 0, 1000));
  std::printf("Fashion-MNIST: %lld training and %lld test images; batch 64, %d thread(s)\n", (long long)train.size(),
              (long long)test.size(), threads);
  ts::DataLoader loader(std::move(train.images), std::move(train.labels), {.batch_size = 64, .shuffle = true, .seed = 0});

  SimpleCNN net(/*seed=*/0);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  std::printf("SimpleCNN: %lld parameters; training %d epoch(s)\n", (long long)net.num_parameters(), epochs);
  for (int e = 0; e < epochs; ++e) train_epoch(net, opt, loader, e, 0.05 / double(1 << e));
  double unpruned_s = 0;
  const double unpruned_acc = accuracy(net, test, unpruned_s);
  std::printf("unpruned: test accuracy %.2f%%, inference over the 10k test images %.3f s (best of 3)\n", 100 * unpruned_acc,
              unpruned_s);

  // half of each prunable layer's channels by L1 norm (weights, biases); the model shrunk to the kept channels
  prune::pruning<float> p;
  prune::prune_channels(p, net, 0.5, /*n=*/1);
  std::fputs(p.report(net).str().c_str(), stdout);
  double masked_s = 0;
  const double masked_acc = accuracy(net, test, masked_s, 1);
  PrunedCNN small = prune::shrink<PrunedCNN>(net, p);
  double small0_s = 0;
  const double small0_acc = accuracy(small, test, small0_s, 1);
  std::printf("pruned (half the channels by L1 norm), before fine-tuning: masked model %.2f%%, shrunk model %.2f%% (%lld "
              "parameters)\n", 100 * masked_acc, 100 * small0_acc, (long long)small.num_parameters());

  // one epoch of fine-tuning of the small model
  ts::optim::SGD<float> tune(small.parameters(), {.lr = tune_lr, .momentum = 0.9});
  std::printf("fine-tuning the shrunk model one epoch, lr %.4f\n", tune_lr);
  train_epoch(small, tune, loader, epochs, tune_lr);
  double pruned_s = 0;
  const double pruned_acc = accuracy(small, test, pruned_s);
  double again_s = 0;
  accuracy(net, test, again_s);  // the big model again (masked: the same work as unpruned), same conditions as the small
  const double speedup = unpruned_s / pruned_s;
  std::printf("pruned and fine-tuned: test accuracy %.2f%% (unpruned %.2f%%, %+.2f points), inference %.3f s (unpruned %.3f "
              "s, again now %.3f s): %.2fx faster\n", 100 * pruned_acc, 100 * unpruned_acc, 100 * (pruned_acc - unpruned_acc),
              pruned_s, unpruned_s, again_s, speedup);

  auto q = ts::quant::quantize(small, calibration);
  double int8_s = 0;
  const double int8_acc = accuracy(q, test, int8_s);
  std::printf("the pruned model in int8: test accuracy %.2f%%, inference %.3f s (%.2fx faster than the unpruned float model)\n",
              100 * int8_acc, int8_s, unpruned_s / int8_s);

  std::printf("result BM_prune_structured/threads:%d unpruned_accuracy=%.2f pruned_accuracy=%.2f unpruned_inference_s=%.4f "
              "pruned_inference_s=%.4f speedup=%.3f\n", threads, 100 * unpruned_acc, 100 * pruned_acc, unpruned_s, pruned_s,
              speedup);
}
