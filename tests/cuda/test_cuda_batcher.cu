// serve::batcher (serve/batcher.hpp) in front of an nn::Sequential on the cuda policy: the batcher gathers host
// requests into a host batch, the model's predict copies it to the device, and the batcher copies the logits back and
// hands each request its row. Checked here: 48 client threads submitting single samples (every request a different
// input; one worker and two), each future's row equal to that sample's logits computed on the host (an MLP: plain
// loops over the weights; a small CNN, when cuDNN is compiled in: the host model of the same type with the same
// weights, batch 1), within 1e-4 relative (cuBLASLt / cuDNN in full fp32 against the host's order of summation); no
// lost or crossed request (rows of distinct inputs differ by far more than the tolerance, checked here); stats()
// consistent (accepted == completed, no failure, max_batch_size honoured); and stop with requests in flight: drain,
// cancel and the destructor, with a batch held inside predict so that requests are certainly waiting. The device
// models get their weights copied from a host model built from another seed, so a copy that did not happen shows.
// Without a GPU: prints why and exits 77 (skipped). Compiled by nvcc; not yet run on a GPU (its logic was run on the
// host with the cuda policy replaced by cpu, where it passes).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <tessera/nn/sequential.hpp>
#include <tessera/serve/batcher.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace sv = tessera::serve;
using ts::dyn;
using ts::index_t;
using namespace std::chrono_literals;

namespace {

constexpr index_t In = 21, Hid = 17, Out = 5;  // odd sizes
using MLP = nn::Sequential<ts::Shape<dyn, In>, nn::Linear<In, Hid>, nn::ReLU, nn::Linear<Hid, Out>>;

/// The input of request `id`: n values in [-1.5, 1.5) from a generator seeded by id (every request differs).
std::vector<float> sample_values(int id, index_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  std::uint32_t s = 2654435761u * std::uint32_t(id + 1);
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = float(s >> 8) / float(1 << 24) * 3.0f - 1.5f;
  }
  return v;
}

/// Every parameter of the host model `from`, copied into the device model `to` (the same type on the cuda policy).
template <class HostNet, class DevNet>
void copy_weights(HostNet& from, DevNet& to) {
  std::map<std::string, std::vector<float>> w;
  from.for_each_parameter([&](const std::string& name, auto& v) {
    const auto& t = v.value();
    w[name].assign(t.data(), t.data() + t.size());
  });
  std::size_t copied = 0;
  to.for_each_parameter([&](const std::string& name, auto& v) {
    auto h = ts::to<ts::cpu_threads>(v.value());
    const auto it = w.find(name);
    REQUIRE(it != w.end());
    REQUIRE(it->second.size() == std::size_t(h.size()));
    std::copy(it->second.begin(), it->second.end(), h.data());
    v.mutable_value() = ts::to<ts::cuda>(h);
    ++copied;
  });
  REQUIRE(copied == w.size());
}

/// The MLP's logits of one sample from its host weights, with plain loops (double accumulation).
std::vector<float> mlp_reference(MLP& host, const std::vector<float>& x) {
  std::map<std::string, std::vector<float>> w;
  host.for_each_parameter([&](const std::string& name, auto& v) {
    const auto& t = v.value();
    w[name].assign(t.data(), t.data() + t.size());
  });
  const auto &w1 = w.at("0.weight"), &b1 = w.at("0.bias"), &w2 = w.at("2.weight"), &b2 = w.at("2.bias");
  std::vector<double> h(static_cast<std::size_t>(Hid));
  for (index_t j = 0; j < Hid; ++j) {
    double s = b1[std::size_t(j)];
    for (index_t k = 0; k < In; ++k) s += double(w1[std::size_t(j * In + k)]) * double(x[std::size_t(k)]);
    h[std::size_t(j)] = std::max(s, 0.0);
  }
  std::vector<float> y(static_cast<std::size_t>(Out));
  for (index_t o = 0; o < Out; ++o) {
    double s = b2[std::size_t(o)];
    for (index_t j = 0; j < Hid; ++j) s += double(w2[std::size_t(o * Hid + j)]) * h[std::size_t(j)];
    y[std::size_t(o)] = float(s);
  }
  return y;
}

constexpr float tol = 1e-4f;
bool close(float got, float want) { return std::fabs(got - want) <= tol * (1.0f + std::fabs(want)); }

/// The references must tell every request apart: any two rows differ somewhere by far more than the tolerance, so a
/// request handed another's row cannot pass.
void require_distinct(const std::vector<std::vector<float>>& ref) {
  float worst = 1e30f;  // the smallest (largest difference over a row) / (the tolerance at that row), over all pairs
  std::size_t wa = 0, wb = 0;
  for (std::size_t a = 0; a < ref.size(); ++a)
    for (std::size_t b = a + 1; b < ref.size(); ++b) {
      float d = 0;
      for (std::size_t j = 0; j < ref[a].size(); ++j)
        d = std::max(d, std::fabs(ref[a][j] - ref[b][j]) / (tol * (1.0f + std::fabs(ref[a][j]))));
      if (d < worst) worst = d, wa = a, wb = b;
    }
  INFO("requests " << wa << " and " << wb << " differ by only " << worst << " tolerances");
  REQUIRE(worst > 50);
}

/// `clients` threads submit requests 0..n-1 (client c: c, c + clients, ...), each a single sample; then every future
/// must hold its own reference row, and the stats must add up.
template <class Net>
void serve_and_check(Net& dev, const std::vector<std::vector<float>>& inputs,
                     const std::vector<std::vector<float>>& ref, int clients, sv::batcher_options opt) {
  const int n = int(inputs.size());
  sv::batcher b(dev, opt);
  using B = decltype(b);
  std::vector<std::future<typename B::output_type>> fs(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      for (int i = c; i < n; i += clients) {
        typename B::input_type x;
        std::copy(inputs[std::size_t(i)].begin(), inputs[std::size_t(i)].end(), x.data());
        fs[std::size_t(i)] = b.submit(std::move(x));
      }
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < n; ++i) {
    REQUIRE(fs[std::size_t(i)].wait_for(30s) == std::future_status::ready);
    const auto row = fs[std::size_t(i)].get();
    REQUIRE(row.dims()[0] == Out);
    for (index_t j = 0; j < Out; ++j) {
      CAPTURE(i, j, row(j), ref[std::size_t(i)][std::size_t(j)]);
      REQUIRE(close(row(j), ref[std::size_t(i)][std::size_t(j)]));
    }
  }
  b.stop();
  const auto s = b.stats();
  CHECK(s.accepted == std::uint64_t(n));
  CHECK(s.completed == std::uint64_t(n));
  CHECK(s.failed == 0);
  CHECK(s.rejected == 0);
  CHECK(s.waiting == 0);
  CHECK(s.largest_batch <= std::size_t(opt.max_batch_size));
  CHECK(s.batches >= std::uint64_t((n + opt.max_batch_size - 1) / opt.max_batch_size));
  CHECK(s.mean_batch_size * double(s.batches) == Approx(double(n)));
}

/// The MLP on the cuda policy with a batch held inside predict until open(): wraps the device model (its policy,
/// input shape and predict), so that the batcher takes the same path as for the model itself.
struct gated_mlp {
  using policy = ts::cuda;
  using input_shape = MLP::input_shape;
  MLP::on<ts::cuda>& net;
  std::mutex m;
  std::condition_variable cv;
  bool gate_open = false;
  std::vector<index_t> batch_sizes;

  explicit gated_mlp(MLP::on<ts::cuda>& dev) : net(dev) {}
  auto predict(const ts::Tensor<float, input_shape, ts::cpu_threads>& x) {
    {
      std::unique_lock<std::mutex> lk(m);
      batch_sizes.push_back(x.dims()[0]);
      cv.notify_all();
      cv.wait(lk, [&] { return gate_open; });
    }
    return net.predict(x);
  }
  void open() {
    std::lock_guard<std::mutex> lk(m);
    gate_open = true;
    cv.notify_all();
  }
  void wait_entered() {
    std::unique_lock<std::mutex> lk(m);
    cv.wait(lk, [&] { return !batch_sizes.empty(); });
  }
};

}  // namespace

TEST_CASE("cuda batcher: 48 clients, an MLP on the device, every future gets its own sample's row", "[cuda][serve]") {
  MLP host(/*seed=*/5);
  MLP::on<ts::cuda> dev(/*seed=*/77);  // other weights until copied
  copy_weights(host, dev);
  host.eval();
  dev.eval();
  constexpr int n = 1200;
  std::vector<std::vector<float>> inputs(n), ref(n);
  for (int i = 0; i < n; ++i) {
    inputs[std::size_t(i)] = sample_values(i, In);
    ref[std::size_t(i)] = mlp_reference(host, inputs[std::size_t(i)]);
  }
  require_distinct(ref);
  SECTION("one worker, batches of at most 32") {
    serve_and_check(dev, inputs, ref, 48, {.max_batch_size = 32, .max_wait = 2ms});
  }
  SECTION("two workers, batches of at most 13") {
    serve_and_check(dev, inputs, ref, 48, {.max_batch_size = 13, .max_wait = 1ms, .workers = 2});
  }
  SECTION("no waiting (max_wait 0): batches of whatever is queued") {
    serve_and_check(dev, inputs, ref, 16, {.max_batch_size = 64, .max_wait = 0us});
  }
}

#if defined(TESSERA_HAVE_CUDNN)
TEST_CASE("cuda batcher: a small CNN on the device (cuDNN) matches the host model sample by sample", "[cuda][serve]") {
  using CNN = nn::Sequential<ts::Shape<dyn, 1, 9, 9>, nn::Conv2d<1, 4, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                             nn::MaxPool2d<2>, nn::Flatten, nn::Linear<4 * 4 * 4, Out>>;
  CNN host(/*seed=*/3);
  CNN::on<ts::cuda> dev(/*seed=*/33);
  copy_weights(host, dev);
  host.eval();
  dev.eval();
  constexpr int n = 640;
  std::vector<std::vector<float>> inputs(n), ref(n);
  for (int i = 0; i < n; ++i) {
    inputs[std::size_t(i)] = sample_values(i, 81);
    ts::Tensor<float, ts::Shape<dyn, 1, 9, 9>, ts::cpu_threads> one(1);
    std::copy(inputs[std::size_t(i)].begin(), inputs[std::size_t(i)].end(), one.data());
    const auto y = host.predict(one);  // the host model alone, batch 1
    ref[std::size_t(i)].assign(y.data(), y.data() + Out);
  }
  require_distinct(ref);
  SECTION("one worker") { serve_and_check(dev, inputs, ref, 32, {.max_batch_size = 24, .max_wait = 2ms}); }
  SECTION("two workers") {
    serve_and_check(dev, inputs, ref, 32, {.max_batch_size = 9, .max_wait = 1ms, .workers = 2});
  }
}
#endif

TEST_CASE("cuda batcher: stop with requests in flight (drain, cancel, destructor) loses no future", "[cuda][serve]") {
  MLP host(/*seed=*/9);
  MLP::on<ts::cuda> dev(/*seed=*/90);
  copy_weights(host, dev);
  host.eval();
  dev.eval();
  constexpr int clients = 16, per_client = 5, n = 1 + clients * per_client;
  std::vector<std::vector<float>> inputs(n), ref(n);
  for (int i = 0; i < n; ++i) {
    inputs[std::size_t(i)] = sample_values(1000 + i, In);
    ref[std::size_t(i)] = mlp_reference(host, inputs[std::size_t(i)]);
  }
  using B = sv::batcher<gated_mlp>;
  auto check_row = [&](const B::output_type& row, int i) {
    REQUIRE(row.dims()[0] == Out);
    for (index_t j = 0; j < Out; ++j) {
      CAPTURE(i, j, row(j), ref[std::size_t(i)][std::size_t(j)]);
      REQUIRE(close(row(j), ref[std::size_t(i)][std::size_t(j)]));
    }
  };
  for (int kind = 0; kind < 3; ++kind) {  // 0 stop(drain), 1 stop(cancel), 2 the destructor
    CAPTURE(kind);
    gated_mlp model(dev);
    std::vector<std::future<B::output_type>> fs(static_cast<std::size_t>(n));
    std::uint64_t accepted = 0, completed = 0, failed = 0;
    std::thread opener;
    {
      B b(model, {.max_batch_size = 4, .max_wait = 0us});
      auto submit = [&](int i) {
        B::input_type x;
        std::copy(inputs[std::size_t(i)].begin(), inputs[std::size_t(i)].end(), x.data());
        fs[std::size_t(i)] = b.submit(std::move(x));
      };
      submit(0);
      model.wait_entered();  // request 0's batch is held in predict: the others wait in the queue
      std::vector<std::thread> threads;
      for (int c = 0; c < clients; ++c)
        threads.emplace_back([&, c] {
          for (int j = 0; j < per_client; ++j) submit(1 + c * per_client + j);
        });
      for (auto& t : threads) t.join();
      CHECK(b.stats().waiting == std::size_t(n - 1));
      if (kind == 2) {
        accepted = b.stats().accepted;
        completed = accepted;  // (counted from the futures below: the batcher is gone by then)
        opener = std::thread([&] {
          std::this_thread::sleep_for(20ms);
          model.open();
        });
      } else {
        std::thread stopper([&] { b.stop(kind == 0 ? sv::stop_mode::drain : sv::stop_mode::cancel); });
        while (!b.stopped()) std::this_thread::sleep_for(1ms);
        B::input_type late;
        CHECK_THROWS_AS(b.submit(late), sv::batcher_stopped);
        if (kind == 1)  // cancelled before the held batch finishes: the waiting requests fail at once
          for (int i = 1; i < n; ++i) REQUIRE(fs[std::size_t(i)].wait_for(10s) == std::future_status::ready);
        CHECK(fs[0].wait_for(0s) == std::future_status::timeout);  // still held in predict
        model.open();
        stopper.join();
        const auto s = b.stats();
        accepted = s.accepted, completed = s.completed, failed = s.failed;
      }
    }  // the destructor: stop(drain), which for kind 2 waits for the gate to open and every request to run
    if (opener.joinable()) opener.join();
    REQUIRE(accepted == std::uint64_t(n));
    REQUIRE(completed + failed == accepted);
    int got_rows = 0;
    for (int i = 0; i < n; ++i) {
      REQUIRE(fs[std::size_t(i)].wait_for(0s) == std::future_status::ready);  // stop and the destructor wait
      if (kind == 1 && i > 0) {
        CHECK_THROWS_AS(fs[std::size_t(i)].get(), sv::batcher_stopped);
      } else {
        check_row(fs[std::size_t(i)].get(), i);
        ++got_rows;
      }
    }
    CHECK(completed == std::uint64_t(got_rows));
    CHECK(model.batch_sizes.front() == 1);
  }
}
