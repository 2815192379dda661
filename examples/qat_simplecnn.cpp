// Quantization-aware training of the SimpleCNN on Fashion-MNIST (quant/qat.hpp): trains the float model as
// examples/fashion_mnist.cpp does (batch 64, SGD momentum 0.9, lr 0.05 halved each epoch, standardised pixels), measures
// its test accuracy and the post-training int8 model's (quant::quantize, calibrated on the first 1000 training images),
// then fine-tunes one epoch with fake quantization (lr 0.05 / 2^epochs, observers frozen after half of the epoch,
// BatchNorm statistics frozen: the SimpleCNN has none), converts it to the int8 model type and measures that; last, how
// many test images get bit-identical logits from the QAT model's forward and from the int8 model it converted to.
//   qat_simplecnn [epochs = 3] [threads = 2]
// Prints one machine-readable line at the end:
//   result BM_qat_simplecnn/threads:<n> float_accuracy=<%> ptq_accuracy=<%> qat_accuracy=<%> qat_epoch_s=<s>
// The data comes from Debian's dataset-fashion-mnist (or $TESSERA_FASHION_MNIST_DIR).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <algorithm>

#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/quant/qat.hpp>
#include <tessera/tessera.hpp>

#include "example_support.hpp"
#include "simple_cnn.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;

using SimpleCNN = example::simple_cnn_layers;

namespace {
using example::seconds_since;

/// Accuracy of a model (float, QAT or int8: anything with predict) over the test set, in batches of 500.
template <class Net>
double accuracy(Net& net, const ts::idx_dataset& d, double& secs) {
  return example::accuracy(d.images.dims()[0], d.labels, secs, [&](ts::index_t a, ts::index_t b) {
    return net.predict(ts::to<ts::cpu_threads>(ts::slice<0>(d.images, a, b)));
  });
}
}  // namespace

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 3;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  if (epochs < 0 || threads < 1) {
    std::fprintf(stderr, "usage: qat_simplecnn [epochs = 3] [threads = 2]\n");
    return 2;
  }
  ts::cpu_threads::set_num_threads(threads);
  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train, ts::fashion_mnist_normalization);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test, ts::fashion_mnist_normalization);
  std::printf("Fashion-MNIST: %lld training and %lld test images; batch 64, %d thread(s)\n", (long long)train.size(),
              (long long)test.size(), threads);
  ts::Tensor<float, ts::Shape<dyn, 1, 28, 28>> calibration(ts::slice<0>(train.images, 0, 1000));

  SimpleCNN net(/*seed=*/0);
  ts::DataLoader loader(std::move(train.images), std::move(train.labels), {.batch_size = 64, .shuffle = true, .seed = 0});
  {
    ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
    for (int e = 0; e < epochs; ++e) {
      opt.set_lr(0.05 / double(1 << e));
      net.train();
      const auto [secs, seen] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
        auto loss = ad::cross_entropy(net.forward(x), y);
        opt.zero_grad();
        loss.backward();
        opt.step();
        return double(loss.item());
      });
      std::printf("float epoch %d: %.1f s (%.0f images/s)\n", e + 1, secs, double(seen) / secs);
    }
  }
  net.eval();
  double float_s = 0, ptq_s = 0, qat_s = 0, fq_s = 0;
  const double float_acc = accuracy(net, test, float_s);
  auto ptq = ts::quant::quantize(net, calibration);
  const double ptq_acc = accuracy(ptq, test, ptq_s);
  std::printf("float: test accuracy %.2f%%   post-training int8 (calibrated on %lld images): %.2f%%\n", 100 * float_acc,
              (long long)calibration.dims()[0], 100 * ptq_acc);

  // one epoch of quantization-aware fine-tuning
  ts::quant::qat_model<SimpleCNN> qat(net);
  qat.freeze_bn_stats();  // (the SimpleCNN has no BatchNorm; a model with one keeps its running statistics)
  const double lr = 0.05 / double(1 << epochs);
  ts::optim::SGD<float> opt(qat.parameters(), {.lr = lr, .momentum = 0.9});
  const ts::index_t batches = loader.size(), freeze_at = batches / 2;
  ts::index_t step = 0;
  qat.train();
  const auto [qat_epoch_s, seen] = example::train_epoch(loader, epochs, "images", [&](const auto& x, const auto& y) {
    if (step++ == freeze_at) qat.freeze_observers();
    auto loss = ad::cross_entropy(qat.forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    return double(loss.item());
  });
  std::printf("QAT epoch (lr %g, observers frozen after %lld of %lld batches): %.1f s (%.0f images/s)\n", lr,
              (long long)freeze_at, (long long)batches, qat_epoch_s, double(seen) / qat_epoch_s);
  qat.eval();
  const auto t0 = std::chrono::steady_clock::now();
  auto q8 = qat.convert();
  const double convert_s = seconds_since(t0);
  const double qat_acc = accuracy(q8, test, qat_s);
  const double fq_acc = accuracy(qat, test, fq_s);
  net.eval();
  double tuned_s = 0;
  const double tuned_float_acc = accuracy(net, test, tuned_s);

  // the QAT model's forward against the int8 model's logits, image by image
  // (and the fine-tuned float model's predicted classes against the int8 model's)
  ts::index_t identical = 0, class_differs = 0;
  for (ts::index_t a = 0; a < test.size(); a += 500) {
    const ts::index_t b = std::min<ts::index_t>(a + 500, test.size());
    const auto x = ts::to<ts::cpu_threads>(ts::slice<0>(test.images, a, b));
    const auto l1 = qat.predict(x);
    const auto l2 = q8.predict(x);
    const auto lf = net.predict(x);
    const auto c2 = ts::eval(ts::argmax<1>(l2));
    const auto cf = ts::eval(ts::argmax<1>(lf));
    for (ts::index_t i = 0; i < b - a; ++i) {
      bool same = true;
      for (ts::index_t j = 0; j < 10; ++j) same = same && l1(i, j) == l2(i, j);
      identical += same;
      class_differs += c2(i) != cf(i);
    }
  }
  std::printf("QAT int8 (converted in %.3f s, kernels: %s): test accuracy %.2f%%  (its fake-quantized float forward: %.2f%%; "
              "the fine-tuned weights without fake quantization: %.2f%%)\n",
              convert_s, std::string(ts::int8_isa_name(ts::int8_isa_active())).c_str(), 100 * qat_acc, 100 * fq_acc,
              100 * tuned_float_acc);
  std::printf("  logits of the QAT forward and the int8 model bit-identical for %lld of %lld test images; the int8 and the "
              "fine-tuned float model predict different classes for %lld\n", (long long)identical, (long long)test.size(),
              (long long)class_differs);
  std::printf("  int8 after QAT %.2f%% vs post-training int8 %.2f%% (%+.2f points) vs float %.2f%% (%+.2f points)\n",
              100 * qat_acc, 100 * ptq_acc, 100 * (qat_acc - ptq_acc), 100 * float_acc, 100 * (qat_acc - float_acc));
  std::printf("result BM_qat_simplecnn/threads:%d float_accuracy=%.2f ptq_accuracy=%.2f qat_accuracy=%.2f qat_epoch_s=%.2f\n",
              threads, 100 * float_acc, 100 * ptq_acc, 100 * qat_acc, qat_epoch_s);
}
