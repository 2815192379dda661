// int8 inference against float inference on the same models, in the same binary: the SimpleCNN (batch 1 to 500)
// and the row-LSTM (Fashion-MNIST read row by row, batch 500), each converted with quant::quantize after calibrating
// on 500 pseudo-random inputs (the speed does not depend on the weights' values). 1 and 2 threads; items/s counts
// images. The accuracy of the int8 models on the real data is printed by examples/fashion_mnist(_lstm).
// BM_quant_simplecnn_reduce_range: the SimpleCNN's int8 model with 7-bit activations (reduce_range) against full range.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>

#include <tessera/nn/recurrent.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/quant/model.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace q = tessera::quant;
using ts::dyn;

using SimpleCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>;
using RowLSTM = nn::Sequential<ts::Shape<dyn, 28, 28>,
    nn::LSTM<28, 128, ts::lstm_options{.num_layers = 2, .dropout = 0.2, .batch_first = true}>, nn::LastStep,
    nn::Linear<128, 10>>;

namespace {
template <class S>
ts::Tensor<float, S, ts::cpu_threads> inputs(ts::index_t n) {
  ts::Tensor<float, S, ts::cpu_threads> x(n);
  ts::Rng rng(1);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = rng.uniform() * 2.0f - 0.5f;
  return x;
}

/// range(0): batch, range(1): threads, range(2): 1 for the int8 model.
template <class Model, class S>
void BM_inference(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  Model net(0);
  net.eval();
  const auto calibration = inputs<S>(500);
  const auto qnet = q::quantize(net, calibration);
  const auto x = inputs<S>(st.range(0));
  for (auto _ : st) {
    if (st.range(2)) {
      auto logits = qnet.predict(x);
      benchmark::DoNotOptimize(logits.data());
    } else {
      auto logits = net.predict(x);
      benchmark::DoNotOptimize(logits.data());
    }
  }
  st.SetItemsProcessed(int64_t(st.iterations()) * st.range(0));
  st.SetLabel(st.range(2) ? std::string("int8 ") + std::string(ts::int8_isa_name(ts::int8_isa_active())) : "float");
}

void BM_quant_simplecnn_inference(benchmark::State& st) { BM_inference<SimpleCNN, ts::Shape<dyn, 1, 28, 28>>(st); }

/// The SimpleCNN's int8 model calibrated with reduce_range (7-bit activations: the int8 GEMM's avx2_u7 path on AVX2
/// CPUs without AVX512-VNNI) against full range, same weights and inputs; range(2): 0 full range, 1 reduce_range,
/// 2 reduce_range with the int8 path capped at avx2 (7-bit activations without vpmaddubsw).
void BM_quant_simplecnn_reduce_range(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(int(st.range(1)));
  SimpleCNN net(0);
  net.eval();
  const auto calibration = inputs<ts::Shape<dyn, 1, 28, 28>>(500);
  const auto qnet = q::quantize(net, calibration, {.reduce_range = st.range(2) != 0});
  const auto x = inputs<ts::Shape<dyn, 1, 28, 28>>(st.range(0));
  if (st.range(2) == 2) ts::set_int8_isa_limit(std::min(ts::int8_isa_supported(), ts::int8_isa::avx2));
  for (auto _ : st) {
    auto logits = qnet.predict(x);
    benchmark::DoNotOptimize(logits.data());
  }
  st.SetLabel(std::string(st.range(2) ? "int8 reduce_range " : "int8 full range ") + std::string(ts::int8_isa_name(ts::int8_isa_active())));
  ts::set_int8_isa_limit(ts::int8_isa::amx);
  st.SetItemsProcessed(int64_t(st.iterations()) * st.range(0));
}
void BM_quant_row_lstm_inference(benchmark::State& st) { BM_inference<RowLSTM, ts::Shape<dyn, 28, 28>>(st); }
}  // namespace

BENCHMARK(BM_quant_simplecnn_inference)
    ->ArgsProduct({{1, 16, 64, 256, 500}, {1, 2}, {0, 1}})
    ->ArgNames({"batch", "threads", "int8"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quant_simplecnn_reduce_range)
    ->ArgsProduct({{1, 64, 500}, {2}, {0, 1, 2}})
    ->ArgNames({"batch", "threads", "reduce_range"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quant_row_lstm_inference)
    ->ArgsProduct({{64, 500}, {1, 2}, {0, 1}})
    ->ArgNames({"batch", "threads", "int8"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
