// Mixed-precision training of the SimpleCNN on Fashion-MNIST (amp/autocast.hpp) beside fp32 training of the same model:
// both start from the same weights, see the same batches in the same order (batch 64, SGD momentum 0.9, lr 0.05 halved
// each epoch, standardised pixels, as examples/fashion_mnist.cpp), and their epochs alternate (fp32 epoch e, then bf16
// epoch e) so both epoch times come from the same run on the same machine state. The bf16 model's forward and loss
// run inside an amp::autocast scope (its convolutions and Linear layers in bf16 with fp32 accumulation, the rest and
// the optimizer in fp32); it is evaluated both in bf16 (under autocast) and in fp32.
//   amp_simplecnn [epochs = 3] [threads = 2]
// Prints one machine-readable line at the end (epoch times: the mean over the epochs):
//   result BM_amp_simplecnn/threads:<n> fp32_accuracy=<%> bf16_accuracy=<%> bf16_fp32_eval_accuracy=<%>
//          fp32_epoch_s=<s> bf16_epoch_s=<s> speedup=<fp32 time / bf16 time> bf16_native=<0|1> bf16_path=<path>
// bf16_path: the bf16 GEMM path this CPU took (bf16_isa_active: amx_bf16, avx512_bf16, or avx2 = fp32 arithmetic on
// widened operands); bf16_native: 1 where the CPU multiplies bf16 itself (avx512_bf16 or amx_bf16). The data comes from Debian's dataset-fashion-mnist (or $TESSERA_FASHION_MNIST_DIR).
#include <cstdio>
#include <cstdlib>
#include <string>

#include <tessera/amp/autocast.hpp>
#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/optim/optim.hpp>

#include "example_support.hpp"
#include "simple_cnn.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;

using SimpleCNN = example::simple_cnn_layers;

namespace {
/// Accuracy over the test set in batches of 500, in bf16 (autocast) or fp32.
double accuracy(SimpleCNN& net, const ts::idx_dataset& d, bool bf16) {
  double secs = 0;
  net.eval();
  const double a = example::accuracy(d.images.dims()[0], d.labels, secs, [&](ts::index_t first, ts::index_t last) {
    ts::amp::autocast scope(bf16);
    return net.predict(ts::to<ts::cpu_threads>(ts::slice<0>(d.images, first, last)));
  });
  net.train();
  return a;
}
}  // namespace

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 3;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  if (epochs < 1 || threads < 1) {
    std::fprintf(stderr, "usage: amp_simplecnn [epochs = 3] [threads = 2]\n");
    return 2;
  }
  ts::cpu_threads::set_num_threads(threads);
  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train, ts::fashion_mnist_normalization);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test, ts::fashion_mnist_normalization);
  const std::string path(ts::bf16_isa_name(ts::bf16_isa_active()));
  std::printf("Fashion-MNIST: %lld training and %lld test images; batch 64, %d thread(s); bf16 GEMM path: %s\n",
              (long long)train.size(), (long long)test.size(), threads, path.c_str());

  SimpleCNN fp32(/*seed=*/0), bf16(/*seed=*/0);
  ts::DataLoader loader(std::move(train.images), std::move(train.labels), {.batch_size = 64, .shuffle = true, .seed = 0});
  ts::optim::SGD<float> opt32(fp32.parameters(), {.lr = 0.05, .momentum = 0.9});
  ts::optim::SGD<float> opt16(bf16.parameters(), {.lr = 0.05, .momentum = 0.9});
  double t32 = 0, t16 = 0;
  for (int e = 0; e < epochs; ++e) {
    opt32.set_lr(0.05 / double(1 << e));
    opt16.set_lr(0.05 / double(1 << e));
    const auto [s32, n32] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
      auto loss = ad::cross_entropy(fp32.forward(x), y);
      opt32.zero_grad();
      loss.backward();
      opt32.step();
      return double(loss.item());
    });
    const auto [s16, n16] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
      ad::Var<float, 0, ts::cpu_threads> loss;
      {
        ts::amp::autocast scope;  // the forward and the loss; backward and step outside, as with torch.autocast
        loss = ad::cross_entropy(bf16.forward(x), y);
      }
      opt16.zero_grad();
      loss.backward();
      opt16.step();
      return double(loss.item());
    });
    t32 += s32;
    t16 += s16;
    std::printf("epoch %d: fp32 %.1f s (%.0f images/s), bf16 %.1f s (%.0f images/s): bf16 %.2fx fp32's speed\n", e + 1, s32,
                double(n32) / s32, s16, double(n16) / s16, s32 / s16);
  }
  const double acc32 = accuracy(fp32, test, false), acc16 = accuracy(bf16, test, true), acc16f = accuracy(bf16, test, false);
  std::printf("test accuracy after %d epochs: fp32 %.2f%%, bf16 mixed precision %.2f%% (%+.2f points; the same weights "
              "evaluated in fp32: %.2f%%)\n",
              epochs, 100 * acc32, 100 * acc16, 100 * (acc16 - acc32), 100 * acc16f);
  std::printf("result BM_amp_simplecnn/threads:%d fp32_accuracy=%.2f bf16_accuracy=%.2f bf16_fp32_eval_accuracy=%.2f "
              "fp32_epoch_s=%.2f bf16_epoch_s=%.2f speedup=%.3f bf16_native=%d bf16_path=%s\n",
              threads, 100 * acc32, 100 * acc16, 100 * acc16f, t32 / epochs, t16 / epochs, t32 / t16,
              int(ts::bf16_isa_active() >= ts::bf16_isa::avx512_bf16), path.c_str());
}
