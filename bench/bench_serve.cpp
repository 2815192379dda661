// Serving the int8 SimpleCNN (quantized after calibrating on 256 pseudo-random images: the speed does not depend on
// the weights' values), three ways in one binary (issue 20's batcher goals compare them in the same run); items/s
// counts images:
//   BM_serve_offline_batch64     the model alone at batch 64, OpenMP's default team: the ceiling
//   BM_serve_batcher_clients64   64 client threads, each sending its own single image through a serve::batcher
//                                (max_batch_size 64, max_wait 1 ms, one worker with OpenMP's default team) and waiting
//                                for its row before sending the next: a closed loop, at most 64 requests in flight
//   BM_serve_direct_clients64    the same 64 clients without a batcher, each calling predict on its own image at batch 1,
//                                all at the same time, each predict with a team of one thread. That is the fair
//                                baseline: 64 callers already share the cores among 64 threads, and a team of two per
//                                call (OpenMP's default here) would put 128 threads on them; _team2 measures that
//                                default too
//   BM_serve_offline_batch1_thread1   the model alone at batch 1 on one thread: what each direct client runs
//   BM_serve_batcher_clients64_options   the batcher with other max_batch_size / workers / threads_per_worker
// One iteration is one round: every client sends `requests` images one after the other; the client threads live for
// the whole benchmark and sleep on a condition variable between rounds. Counters: p50_us, p99_us (the latency a client
// sees, submit to row or the predict call; exact, over every request of the run), cores_busy (the process's CPU time
// over the wall time), and for the batcher mean_batch, predict_us (one predict of a batch) and gap_us (from the end of
// one predict to the start of the next: handing out 64 rows, the clients' next requests arriving).
// docs/serving.md has the figures and the command.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <sys/resource.h>
#include <cstdlib>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <tessera/nn/sequential.hpp>
#include <tessera/quant/model.hpp>
#include <tessera/serve/batcher.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
using ts::dyn;

using SimpleCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>;
using Images = ts::Tensor<float, ts::Shape<dyn, 1, 28, 28>, ts::cpu_threads>;

namespace {
constexpr int clients = 64, requests = 8;

Images images(ts::index_t n, std::uint64_t seed) {
  Images x(n);
  ts::Rng rng(seed);
  for (ts::index_t i = 0; i < x.size(); ++i) x.data()[i] = rng.uniform();
  return x;
}

const ts::quant::int8_model_t<SimpleCNN>& model() {
  static const auto q = [] {
    SimpleCNN net(0);
    net.eval();
    return ts::quant::quantize(net, images(256, 7));
  }();
  return q;
}

/// Image c of the clients' 64, as one sample [1, 28, 28] and as a batch of one [1, 1, 28, 28].
const Images& client_images() {
  static const Images x = images(clients, 11);
  return x;
}

/// `n` threads that run body(client) once per round; run_round() returns when all have finished.
class client_pool {
 public:
  client_pool(int n, std::function<void(int)> body, int omp_threads) : body_(std::move(body)) {
    for (int c = 0; c < n; ++c)
      threads_.emplace_back([this, c, omp_threads] {
#if defined(_OPENMP)
        if (omp_threads > 0) omp_set_num_threads(omp_threads);
#endif
        for (std::uint64_t seen = 0;;) {
          {
            std::unique_lock<std::mutex> lk(m_);
            go_.wait(lk, [&] { return round_ != seen || quit_; });
            if (quit_) return;
            seen = round_;
          }
          body_(c);
          std::lock_guard<std::mutex> lk(m_);
          if (--running_ == 0) done_.notify_one();
        }
      });
  }
  void run_round() {
    std::unique_lock<std::mutex> lk(m_);
    running_ = int(threads_.size());
    ++round_;
    go_.notify_all();
    done_.wait(lk, [&] { return running_ == 0; });
  }
  ~client_pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
    }
    go_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  std::function<void(int)> body_;
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable go_, done_;
  std::uint64_t round_ = 0;
  int running_ = 0;
  bool quit_ = false;
};

/// Per-client latencies (microseconds), merged into exact percentiles at the end.
struct latencies {
  std::vector<std::vector<double>> per_client = std::vector<std::vector<double>>(clients);
  void report(benchmark::State& st) {
    std::vector<double> all;
    for (auto& v : per_client) all.insert(all.end(), v.begin(), v.end());
    if (all.empty()) return;
    std::sort(all.begin(), all.end());
    auto at = [&](double p) { return all[std::min(all.size() - 1, std::size_t(p * double(all.size())))]; };
    st.counters["p50_us"] = at(0.50);
    st.counters["p99_us"] = at(0.99);
  }
};
using clock_type = std::chrono::steady_clock;
double process_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double us_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t).count();
}

void BM_serve_offline_batch64(benchmark::State& st) {
  const auto& q = model();
  const Images x = images(64, 3);
  for (auto _ : st) {
    auto logits = q.predict(x);
    benchmark::DoNotOptimize(logits.data());
  }
  st.SetItemsProcessed(int64_t(st.iterations()) * 64);
}

/// The int8 model, timing its predict calls and the gaps between them (the batcher's own time per batch: handing
/// out the rows, the clients' next requests arriving, forming the next batch).
struct timed_model {
  using Q = ts::quant::int8_model_t<SimpleCNN>;
  using input_shape = Q::input_shape;
  const Q* q;
  double in_predict = 0, gaps = 0;
  long calls = 0;
  std::chrono::steady_clock::time_point last{};
  std::mutex m;  // several workers call predict at once
  auto predict(const Images& x) {
    const auto t0 = std::chrono::steady_clock::now();
    auto y = q->predict(x);
    const auto t1 = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lk(m);
    if (calls) gaps += std::chrono::duration<double, std::micro>(t0 - last).count();  // one worker: the gap
    last = t1;
    in_predict += std::chrono::duration<double, std::micro>(t1 - t0).count();
    ++calls;
    return y;
  }
};
/// The batcher with max_batch_size, workers and threads_per_worker (0: OpenMP's default team).
void batcher_clients(benchmark::State& st, ts::index_t max_batch, int workers, int threads_per_worker) {
  timed_model q{&model()};
  ts::serve::batcher b(q, {.max_batch_size = max_batch, .max_wait = std::chrono::microseconds(1000), .workers = workers,
                           .threads_per_worker = threads_per_worker});
  using B = decltype(b);
  std::vector<B::input_type> samples;
  for (int c = 0; c < clients; ++c) {
    B::input_type s;
    std::copy(client_images().data() + c * 784, client_images().data() + (c + 1) * 784, s.data());
    samples.push_back(std::move(s));
  }
  latencies lat;
  client_pool pool(clients, [&](int c) {
    for (int r = 0; r < requests; ++r) {
      const auto t0 = clock_type::now();
      auto row = b.submit(samples[std::size_t(c)]).get();
      lat.per_client[std::size_t(c)].push_back(us_since(t0));
      benchmark::DoNotOptimize(row.data());
    }
  }, 0);
  pool.run_round();  // warm-up: threads started, first batches run
  for (auto& v : lat.per_client) v.clear();
  b.reset_stats();
  q.in_predict = q.gaps = 0;
  q.calls = 0;
  const double c0 = process_cpu_s();
  const auto w0 = clock_type::now();
  for (auto _ : st) pool.run_round();
  st.counters["cores_busy"] = (process_cpu_s() - c0) / (us_since(w0) * 1e-6);
  st.SetItemsProcessed(int64_t(st.iterations()) * clients * requests);
  lat.report(st);
  st.counters["mean_batch"] = b.stats().mean_batch_size;
  st.counters["predict_us"] = q.in_predict / double(q.calls);
  if (workers == 1) st.counters["gap_us"] = q.gaps / double(q.calls - 1);
}

void BM_serve_batcher_clients64(benchmark::State& st) { batcher_clients(st, 64, 1, 0); }
/// Other settings: range(0) max_batch_size, range(1) workers, range(2) threads_per_worker.
void BM_serve_batcher_clients64_options(benchmark::State& st) {
  batcher_clients(st, st.range(0), int(st.range(1)), int(st.range(2)));
}

/// The model alone at batch 1 on one thread: what each direct client runs.
void BM_serve_offline_batch1_thread1(benchmark::State& st) {
  const auto& q = model();
  const Images x = images(1, 3);
  ts::cpu_threads::set_num_threads(1);
  for (auto _ : st) {
    auto logits = q.predict(x);
    benchmark::DoNotOptimize(logits.data());
  }
  ts::cpu_threads::set_num_threads(0);
  st.SetItemsProcessed(int64_t(st.iterations()));
}

void direct_clients(benchmark::State& st, int omp_threads) {
  const auto& q = model();
  std::vector<Images> ones;
  for (int c = 0; c < clients; ++c) {
    Images one(1);
    std::copy(client_images().data() + c * 784, client_images().data() + (c + 1) * 784, one.data());
    ones.push_back(std::move(one));
  }
  latencies lat;
  client_pool pool(clients, [&](int c) {
    for (int r = 0; r < requests; ++r) {
      const auto t0 = clock_type::now();
      auto logits = q.predict(ones[std::size_t(c)]);
      lat.per_client[std::size_t(c)].push_back(us_since(t0));
      benchmark::DoNotOptimize(logits.data());
    }
  }, omp_threads);
  pool.run_round();
  for (auto& v : lat.per_client) v.clear();
  const double c0 = process_cpu_s();
  const auto w0 = clock_type::now();
  for (auto _ : st) pool.run_round();
  st.counters["cores_busy"] = (process_cpu_s() - c0) / (us_since(w0) * 1e-6);
  st.SetItemsProcessed(int64_t(st.iterations()) * clients * requests);
  lat.report(st);
}
void BM_serve_direct_clients64(benchmark::State& st) { direct_clients(st, 1); }
void BM_serve_direct_clients64_team2(benchmark::State& st) { direct_clients(st, 2); }
}  // namespace

BENCHMARK(BM_serve_offline_batch64)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_serve_batcher_clients64)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_serve_direct_clients64)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_serve_direct_clients64_team2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_serve_batcher_clients64_options)
    ->Args({32, 1, 0})
    ->Args({32, 2, 1})
    ->Args({64, 2, 1})
    ->ArgNames({"max_batch", "workers", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_serve_offline_batch1_thread1)->UseRealTime()->Unit(benchmark::kMicrosecond);
