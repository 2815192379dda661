// The tessera side of tests/interop/torch_models.py (safetensors weights between tessera and PyTorch): the SimpleCNN
// of examples/fashion_mnist_main.hpp and the row LSTM of examples/fashion_mnist_lstm_main.hpp (their types copied
// here), loading PyTorch's weights and computing logits, or training the SimpleCNN and writing its weights.
//   interop_models cnn_logits W.safetensors X.npy OUT.npy          X [n, 1, 28, 28] float32 -> logits [n, 10]
//   interop_models lstm_logits W.safetensors X.npy OUT.npy [named]  X [n, 28, 28]; named: lstm./fc. names
//   interop_models cnn_train TRAIN_X.npy TRAIN_Y.npy TEST_X.npy OUT.safetensors LOGITS.npy EPOCHS
// Exit code 0, or 1 after printing what failed.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "tessera/interop/npy.hpp"
#include "tessera/interop/safetensors.hpp"
#include "tessera/nn/recurrent.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/optim/optim.hpp"
#include "tessera/tessera.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
using ts::dyn;

using Policy = ts::cpu_threads;
using SimpleCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>::on<Policy>;
using RowLSTM = nn::Sequential<ts::Shape<dyn, 28, 28>,
    nn::LSTM<28, 128, ts::lstm_options{.num_layers = 2, .dropout = 0.2, .batch_first = true}>, nn::LastStep,
    nn::Linear<128, 10>>::on<Policy>;

namespace {
int cnn_logits(const char* weights, const char* inputs, const char* out) {
  SimpleCNN net(/*seed=*/123);
  const std::size_t n = ts::load_safetensors(weights, net);
  net.eval();
  const auto x = ts::load_npy<float, ts::Shape<dyn, 1, 28, 28>>(inputs);
  ts::save_npy(out, ts::to<ts::cpu>(net.predict(x)));
  std::printf("SimpleCNN: %zu tensors loaded, logits of %lld images written\n", n, (long long)x.dims()[0]);
  return 0;
}

int lstm_logits(const char* weights, const char* inputs, const char* out, bool named) {
  RowLSTM net(/*seed=*/123);
  ts::safetensors_options o;
  if (named) o.rename = ts::rename_prefixes({{"0.", "lstm."}, {"2.", "fc."}});  // a module with attributes lstm and fc
  const std::size_t n = ts::load_safetensors(weights, net, o);
  net.eval();  // no dropout between the layers
  const auto x = ts::load_npy<float, ts::Shape<dyn, 28, 28>>(inputs);
  ts::save_npy(out, ts::to<ts::cpu>(net.predict(x)));
  std::printf("row LSTM: %zu tensors loaded%s, logits of %lld sequences written\n", n, named ? " (renamed)" : "",
              (long long)x.dims()[0]);
  return 0;
}

int cnn_train(const char* train_x, const char* train_y, const char* test_x, const char* out, const char* logits, int epochs) {
  const auto x = ts::load_npy<float, ts::Shape<dyn, 1, 28, 28>>(train_x);
  const auto y = ts::load_npy<std::int32_t, ts::Shape<dyn>>(train_y);
  const auto tx = ts::load_npy<float, ts::Shape<dyn, 1, 28, 28>>(test_x);
  SimpleCNN net(/*seed=*/0);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.02, .momentum = 0.9});
  const ts::index_t n = x.dims()[0], batch = 32;
  for (int e = 0; e < epochs; ++e) {
    net.train();
    double total = 0;
    for (ts::index_t a = 0; a < n; a += batch) {
      const ts::index_t b = std::min(n, a + batch);
      ts::Tensor<float, ts::Shape<dyn, 1, 28, 28>, Policy> xb(ts::to<Policy>(ts::slice<0>(x, a, b)));
      ts::Tensor<std::int32_t, ts::Shape<dyn>, Policy> yb(ts::to<Policy>(ts::slice<0>(y, a, b)));
      opt.zero_grad();
      auto loss = ts::ad::cross_entropy(net.forward(xb), yb);
      total += double(loss.value()()) * double(b - a);
      loss.backward();
      opt.step();
    }
    std::printf("epoch %d: mean loss %.4f\n", e + 1, total / double(n));
  }
  ts::save_safetensors(out, net, {{"trained_by", "tessera"}, {"epochs", std::to_string(epochs)}});
  net.eval();
  ts::save_npy(logits, ts::to<ts::cpu>(net.predict(tx)));
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  ts::cpu_threads::set_num_threads(2);
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "cnn_logits" && argc == 5) return cnn_logits(argv[2], argv[3], argv[4]);
    if (mode == "lstm_logits" && (argc == 5 || argc == 6))
      return lstm_logits(argv[2], argv[3], argv[4], argc == 6 && std::string(argv[5]) == "named");
    if (mode == "cnn_train" && argc == 8) return cnn_train(argv[2], argv[3], argv[4], argv[5], argv[6], std::atoi(argv[7]));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "interop_models %s: %s\n", mode.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: interop_models cnn_logits|lstm_logits|cnn_train ... (see the source)\n");
  return 2;
}
