// max_pool2d 2x2 stride 2 on the SimpleCNN's activations (64 x 32 x 28 x 28 and 64 x 64 x 14 x 14), against a
// plain OpenMP loop written for this one case in the same binary. Bytes: the input read once, the output written once.
#include <benchmark/benchmark.h>

#include <tessera/tessera.hpp>

namespace ts = tessera;
using T4 = ts::Tensor<float, ts::Shape<ts::dyn, ts::dyn, ts::dyn, ts::dyn>, ts::cpu_threads>;

namespace {
void counters(benchmark::State& st, const T4& x, const T4& y) {
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(4 * (x.size() + y.size())));
}

void BM_tessera_max_pool2d(benchmark::State& st) {
  ts::cpu_threads::set_num_threads(2);
  const ts::index_t c = st.range(0), hw = st.range(1);
  T4 x(64, c, hw, hw), y(64, c, hw / 2, hw / 2);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 7919) % 1000) * 1e-3f;
  for (auto _ : st) {
    y = ts::max_pool2d<2>(x);
    benchmark::DoNotOptimize(y.data());
  }
  counters(st, x, y);
}

void BM_plain_loop_max_pool2d(benchmark::State& st) {
  const ts::index_t c = st.range(0), hw = st.range(1), o = hw / 2;
  T4 x(64, c, hw, hw), y(64, c, o, o);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 7919) % 1000) * 1e-3f;
  const float* in = x.data();
  float* out = y.data();
  const ts::index_t planes = 64 * c;
  for (auto _ : st) {
#pragma omp parallel for num_threads(2) schedule(static)
    for (ts::index_t p = 0; p < planes; ++p)
      for (ts::index_t i = 0; i < o; ++i)
        for (ts::index_t j = 0; j < o; ++j) {
          const float* r0 = in + (p * hw + 2 * i) * hw + 2 * j;
          const float* r1 = r0 + hw;
          out[(p * o + i) * o + j] = std::max(std::max(r0[0], r0[1]), std::max(r1[0], r1[1]));
        }
    benchmark::DoNotOptimize(out);
  }
  counters(st, x, y);
}
}  // namespace

BENCHMARK(BM_tessera_max_pool2d)->Args({32, 28})->Args({64, 14})->ArgNames({"c", "hw"})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_plain_loop_max_pool2d)->Args({32, 28})->Args({64, 14})->ArgNames({"c", "hw"})->UseRealTime()->Unit(benchmark::kMicrosecond);
