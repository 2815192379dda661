// nn::MultiheadAttention, self-attention, batch 32, sequence 128, width 256, 8 heads, float, cpu_threads (2 threads):
// the forward pass (under no_grad) and forward + backward (loss = sum of the output, gradients of the input and every
// parameter). The peer is ../shared/peers/attention_torch.py (PyTorch's nn.MultiheadAttention, batch_first,
// need_weights=False). FLOP/s counts the forward's products: the projections 2*N*T*E*3E and 2*N*T*E*E, and the
// attention's 2 * 2*N*T*T*E (scores and values); forward + backward the same count times 3 (two products per
// product, plus the recomputed scores, which are not counted).
// Also ad::scaled_dot_product_attention alone on [32, 8, 128, 32] and a TransformerEncoderLayer<256, 8, 1024>.
#include <benchmark/benchmark.h>

#include <tessera/nn/transformer.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::index_t;

namespace {
constexpr index_t N = 32, T = 128, E = 256, H = 8, FF = 1024;
using P = ts::cpu_threads;

constexpr double mha_flops = 2.0 * N * T * E * 3 * E + 2.0 * N * T * E * E + 2.0 * 2.0 * N * T * T * E;

ad::Var<float, 3, P> input(bool grad) {
  ts::Tensor<float, ts::dyn_shape_t<3>, P> x(N, T, E);
  ts::Rng rng(1);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(rng.normal_double());
  return ad::Var<float, 3, P>(std::move(x), grad);
}

void BM_mha_forward(benchmark::State& st) {
  P::set_num_threads(2);
  ts::Rng rng(0);
  nn::MultiheadAttention<E, H>::state<float, P> mha(rng);
  auto x = input(false);
  for (auto _ : st) {
    ad::no_grad ng;
    auto y = mha.forward(x, x, x);
    benchmark::DoNotOptimize(y.value().data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(mha_flops * double(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_mha_forward_backward(benchmark::State& st) {
  P::set_num_threads(2);
  ts::Rng rng(0);
  nn::MultiheadAttention<E, H>::state<float, P> mha(rng);
  auto x = input(true);
  for (auto _ : st) {
    x.zero_grad();
    mha.for_each_parameter("", [](const std::string&, auto& p) { p.zero_grad(); });
    auto y = mha.forward(x, x, x);
    ad::sum(y).backward();
    benchmark::DoNotOptimize(mha.in_proj_weight.grad().data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(3.0 * mha_flops * double(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_sdpa(benchmark::State& st) {
  P::set_num_threads(2);
  const bool backward = st.range(0) != 0;
  auto make = [&](int salt) {
    ts::Tensor<float, ts::dyn_shape_t<4>, P> t(N, H, T, E / H);
    ts::Rng rng(static_cast<std::uint64_t>(salt));
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = float(rng.normal_double());
    return ad::Var<float, 4, P>(std::move(t), backward);
  };
  auto q = make(1), k = make(2), v = make(3);
  for (auto _ : st) {
    if (backward) {
      q.zero_grad(), k.zero_grad(), v.zero_grad();
      ad::sum(ad::scaled_dot_product_attention(q, k, v)).backward();
      benchmark::DoNotOptimize(q.grad().data());
    } else {
      auto y = ad::scaled_dot_product_attention(q, k, v);
      benchmark::DoNotOptimize(y.value().data());
    }
  }
  const double flops = 2.0 * 2.0 * N * T * T * E * (backward ? 3.0 : 1.0);
  st.counters["FLOP/s"] = benchmark::Counter(flops * double(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_encoder_layer_forward_backward(benchmark::State& st) {
  P::set_num_threads(2);
  ts::Rng rng(0);
  nn::TransformerEncoderLayer<E, H, FF, ts::transformer_options{.dropout = 0.0}>::state<float, P> layer(rng);
  auto x = input(true);
  nn::context ctx{.training = true};
  for (auto _ : st) {
    x.zero_grad();
    layer.for_each_parameter("", [](const std::string&, auto& p) { p.zero_grad(); });
    ad::sum(layer.forward(x, ctx)).backward();
    benchmark::DoNotOptimize(layer.linear1.weight.grad().data());
  }
  const double flops = 3.0 * (mha_flops + 2.0 * 2.0 * N * T * E * FF);
  st.counters["FLOP/s"] = benchmark::Counter(flops * double(st.iterations()), benchmark::Counter::kIsRate);
}
}  // namespace

BENCHMARK(BM_mha_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_mha_forward_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_sdpa)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_encoder_layer_forward_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
