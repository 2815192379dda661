// The LSTM on the GPU (nvcc; built when TESSERA_ENABLE_CUDA and Google Benchmark are available): ad::lstm on the cuda
// policy, 2 layers, T = 100, B = 64, I = 128, H = 256, float, batch-first — bench_lstm's shape — forward (under
// no_grad) and forward + backward. Per step one cuBLASLt GEMM and one fused pointwise kernel (autodiff/lstm_ops.hpp, kernels/cuda/rnn.hpp).
// The peer is PyTorch's nn.LSTM on the same GPU (cuDNN), run by bench/torch_peers.py's cuda_lstm workload.
// Time is wall time per call with the stream synchronised at the end of each (the work is queued asynchronously);
// FLOP/s counts the forward GEMMs, 2*T*B*4H*(I+H) + 2*T*B*4H*(H+H) (times 3 for forward + backward), as bench_lstm.
// Without a GPU every benchmark reports "no CUDA device" and is skipped.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include "cuda_bench_support.hpp"

#include <tessera/autodiff/rnn_ops.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::index_t;

namespace {
constexpr index_t T = 100, B = 64, I = 128, H = 256, L = 2;
using P = ts::cuda;
constexpr double forward_flops = 2.0 * T * B * 4 * H * (I + H) + 2.0 * T * B * 4 * H * (H + H);

struct setup {
  std::vector<ad::lstm_layer_params<float, P>> layers;
  ad::Var<float, 3, P> x;
  setup() {
    ts::Rng rng(1);
    const float bound = 1.0f / 16.0f;
    auto host = [&](auto... d) {
      constexpr int R = int(sizeof...(d));
      ts::Tensor<float, ts::dyn_shape_t<R>> t(ts::dims_t<R>{index_t(d)...});
      for (index_t i = 0; i < t.size(); ++i) t.data()[i] = rng.uniform(-bound, bound);
      return ts::to<P>(t);
    };
    for (index_t l = 0; l < L; ++l)
      layers.push_back({ad::Var<float, 2, P>(host(4 * H, l == 0 ? I : H), true), ad::Var<float, 2, P>(host(4 * H, H), true),
                        ad::Var<float, 1, P>(host(4 * H), true), ad::Var<float, 1, P>(host(4 * H), true)});
    x = ad::Var<float, 3, P>(host(B, T, I), false);
  }
};

void sync() { cuda_bench::check(cudaStreamSynchronize(ts::cuda_detail::stream()), "cudaStreamSynchronize"); }

void BM_cuda_lstm_forward(benchmark::State& st) {
  if (!cuda_bench::have_device()) return st.SkipWithError("no CUDA device");
  setup s;
  const ts::lstm_options o{.num_layers = int(L), .batch_first = true};
  for (int warm = 0; warm < 2; ++warm) {  // plans and the block cache
    ad::no_grad ng;
    auto r = ad::lstm(s.x, s.layers, o);
  }
  sync();
  for (auto _ : st) {
    ad::no_grad ng;
    auto r = ad::lstm(s.x, s.layers, o);
    sync();
  }
  st.counters["FLOP/s"] = benchmark::Counter(forward_flops * double(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_cuda_lstm_forward_backward(benchmark::State& st) {
  if (!cuda_bench::have_device()) return st.SkipWithError("no CUDA device");
  setup s;
  const ts::lstm_options o{.num_layers = int(L), .batch_first = true};
  auto step = [&] {
    for (auto& p : s.layers) p.weight_ih.zero_grad(), p.weight_hh.zero_grad(), p.bias_ih.zero_grad(), p.bias_hh.zero_grad();
    auto r = ad::lstm(s.x, s.layers, o);
    auto loss = ad::sum(r.output);
    loss.backward();
  };
  for (int warm = 0; warm < 2; ++warm) step();
  sync();
  for (auto _ : st) {
    step();
    sync();
  }
  st.counters["FLOP/s"] = benchmark::Counter(3.0 * forward_flops * double(st.iterations()), benchmark::Counter::kIsRate);
}
}  // namespace

BENCHMARK(BM_cuda_lstm_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cuda_lstm_forward_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
