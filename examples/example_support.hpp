// What the training examples share: a timer, one training epoch with a progress bar (tessera/monitor/progress.hpp),
// and test accuracy in batches of 500. (Compiled by g++ and, through fashion_mnist.cu, by nvcc.)
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include <tessera/monitor/progress.hpp>
#include <tessera/tessera.hpp>

namespace example {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The loss, or a clear stop when it is NaN or Inf (training on would only spread it through every weight).
inline double require_finite_loss(double loss, int epoch, tessera::index_t batch) {
  if (!std::isfinite(loss)) {
    std::fprintf(stderr, "\nepoch %d, batch %lld: the loss is %s; stopping. Run again with TESSERA_DETECT_ANOMALY=1 to "
                 "find the operation and layer that first produced it.\n", epoch + 1, (long long)batch + 1,
                 std::isnan(loss) ? "NaN" : "infinite");
    std::exit(2);
  }
  return loss;
}

/// One epoch of `loader`: step(x, y) runs a training step on a batch and returns its loss. Progress goes to stdout
/// through tessera::monitor::progress_bar: on a terminal one line redrawn twice a second, elsewhere (a log) a line
/// every 50 batches; each shows items/s, the mean loss since the previous line and the ETA. Returns the seconds taken
/// and the items seen.
template <class Loader, class Step>
std::pair<double, tessera::index_t> train_epoch(Loader& loader, int epoch, const char* items, Step&& step) {
  const auto t0 = std::chrono::steady_clock::now();
  tessera::monitor::progress_bar bar(std::int64_t(loader.size()),
                                     {.description = "epoch " + std::to_string(epoch + 1), .unit = "batches",
                                      .item_unit = items, .file = stdout, .min_interval_s = 0.5, .every_n = 50,
                                      .mean_metrics = true});
  tessera::index_t b = 0, seen = 0;
  for (auto& [x, y] : loader.epoch(std::uint64_t(epoch))) {
    const double loss = require_finite_loss(step(x, y), epoch, b++);
    seen += x.dims()[0];
    bar.update(1, {{"loss", loss}}, std::int64_t(x.dims()[0]));
  }
  bar.close();
  return {seconds_since(t0), seen};
}

/// The share of n test items whose argmax of logits(first, last) (the host logits of items [first, last)) is their
/// label, in batches of 500; secs is the time it took.
template <class Labels, class Logits>
double accuracy(tessera::index_t n, const Labels& labels, double& secs, Logits&& logits) {
  const auto t0 = std::chrono::steady_clock::now();
  tessera::index_t correct = 0;
  for (tessera::index_t i = 0; i < n; i += 500) {
    const tessera::index_t m = std::min<tessera::index_t>(500, n - i);
    auto pred = tessera::eval(tessera::argmax<1>(logits(i, i + m)));
    for (tessera::index_t j = 0; j < m; ++j) correct += pred(j) == labels(i + j);
  }
  secs = seconds_since(t0);
  return double(correct) / double(n);
}

/// The closing comparison of a float model and its int8 model over the test set.
inline void print_int8_comparison(double float_acc, double int8_acc, double float_s, double int8_s, const char* items) {
  std::printf("  test accuracy  float %.2f%%  int8 %.2f%%  (drop %.2f points)\n", 100 * float_acc, 100 * int8_acc,
              100 * (float_acc - int8_acc));
  std::printf("  inference over the 10k test %s  float %.3f s  int8 %.3f s  (%.2fx faster)\n", items, float_s, int8_s,
              float_s / int8_s);
}

#if defined(__CUDACC__)
/// The CUDA build of a training example without a device: prints why and returns true (the caller exits 77).
inline bool no_device(const char* cpu_build) {
  if (tessera::cuda_runtime::available()) return false;
  std::printf("no CUDA device: %s (this build trains on the GPU; %s is the CPU build)\n",
              tessera::cuda_runtime::unavailable_reason().c_str(), cpu_build);
  return true;
}
#endif

}  // namespace example
