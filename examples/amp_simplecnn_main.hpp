// The mixed-precision training program shared by amp_simplecnn.cpp (the SimpleCNN on cpu_threads) and
// amp_simplecnn.cu (the same program with the model on the cuda policy): the including file defines `Policy` first,
// then includes this file, which holds main(). See amp_simplecnn.cpp for what the program does and what it prints.
//
// On the cuda policy (compiled by nvcc only) the batches are copied to the device by the model's forward, amp::autocast
// runs the Linear layers through cuBLASLt's bf16 GEMM with fp32 accumulation and keeps the convolutions in fp32 (no
// bf16 convolution on CUDA yet: amp/autocast.hpp), and without a CUDA device the program prints why and exits 77.
// Its result line names BM_amp_simplecnn_cuda/batch:64 and ends in bf16_path=cublaslt_linear; the host's is unchanged
// (BM_amp_simplecnn/threads:<n>, bf16_native and the CPU's bf16 path). The cuda build is not yet run on a GPU.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <tessera/amp/autocast.hpp>
#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/optim/optim.hpp>

#include "example_support.hpp"
#include "simple_cnn.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;

using SimpleCNN = example::simple_cnn<Policy>;

namespace {
/// Accuracy over the test set in batches of 500, in bf16 (autocast) or fp32; the logits come back to the host.
double accuracy(SimpleCNN& net, const ts::idx_dataset& d, bool bf16) {
  double secs = 0;
  net.eval();
  const double a = example::accuracy(d.images.dims()[0], d.labels, secs, [&](ts::index_t first, ts::index_t last) {
    ts::amp::autocast scope(bf16);
    return ts::to<ts::cpu_threads>(net.predict(ts::to<Policy>(ts::slice<0>(d.images, first, last))));  // (host: a copy)
  });
  net.train();
  return a;
}
}  // namespace

int main(int argc, char** argv) {
#if defined(__CUDACC__)
  if (Policy::on_device && example::no_device("amp_simplecnn")) return 77;
#endif
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 3;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  if (epochs < 1 || threads < 1) {
    std::fprintf(stderr, "usage: %s [epochs = 3] [threads = 2]\n",
                 Policy::on_device ? "amp_simplecnn_cuda" : "amp_simplecnn");
    return 2;
  }
  ts::cpu_threads::set_num_threads(threads);
  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train, ts::fashion_mnist_normalization);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test, ts::fashion_mnist_normalization);
  const std::string path(Policy::on_device ? std::string_view("cublaslt_linear")
                                           : ts::bf16_isa_name(ts::bf16_isa_active()));
  if (Policy::on_device)
    std::printf("Fashion-MNIST: %lld training and %lld test images; batch 64, on the cuda device (bf16: cuBLASLt for "
                "the Linear layers, the convolutions in fp32); %d host thread(s)\n",
                (long long)train.size(), (long long)test.size(), threads);
  else
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
    // (loss.item() copies the loss to the host: on the cuda policy it waits for the step, so the epoch times are whole)
    const auto [s32, n32] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
      auto loss = ad::cross_entropy(fp32.forward(x), y);
      opt32.zero_grad();
      loss.backward();
      opt32.step();
      return double(loss.item());
    });
    const auto [s16, n16] = example::train_epoch(loader, e, "images", [&](const auto& x, const auto& y) {
      ad::Var<float, 0, Policy> loss;
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
  if (Policy::on_device)
    std::printf("result BM_amp_simplecnn_cuda/batch:64 fp32_accuracy=%.2f bf16_accuracy=%.2f "
                "bf16_fp32_eval_accuracy=%.2f fp32_epoch_s=%.3f bf16_epoch_s=%.3f speedup=%.3f bf16_path=%s\n",
                100 * acc32, 100 * acc16, 100 * acc16f, t32 / epochs, t16 / epochs, t32 / t16, path.c_str());
  else
    std::printf("result BM_amp_simplecnn/threads:%d fp32_accuracy=%.2f bf16_accuracy=%.2f bf16_fp32_eval_accuracy=%.2f "
                "fp32_epoch_s=%.2f bf16_epoch_s=%.2f speedup=%.3f bf16_native=%d bf16_path=%s\n",
                threads, 100 * acc32, 100 * acc16, 100 * acc16f, t32 / epochs, t16 / epochs, t32 / t16,
                int(ts::bf16_isa_active() >= ts::bf16_isa::avx512_bf16), path.c_str());
}
