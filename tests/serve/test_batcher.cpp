// serve::batcher (serve/batcher.hpp): no lost and no crossed requests under 64 client threads, max_batch_size and
// max_wait honoured, exceptions reaching every future of their batch, back-pressure and rejection, clean shutdown with
// requests in flight (drain, cancel and the destructor, a few hundred times), and a real float model and its int8
// conversion giving each request the row the model gives that sample alone.
// The stress tests use echo_model, whose output row encodes its input (the sample's id, a weighted sum of all its
// elements, the batch size and the batch's number), so that a request given another's row, a sample copied wrong or
// a batch too large is seen; every expectation is computed here with plain loops.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <tessera/nn/sequential.hpp>
#include <tessera/quant/model.hpp>
#include <tessera/serve/batcher.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace sv = tessera::serve;
using ts::dyn;
using ts::index_t;
using namespace std::chrono_literals;

namespace {

constexpr index_t C = 3, W = 5, E = C * W;  // an odd sample [3, 5]

struct model_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Row i of predict: {id of sample i, sum_k x_k (k + 1), batch size, batch number}. Records each batch's ids; throws
/// model_failure for a batch holding a sample whose id is in `poison`; waits at `gate` while it is closed.
struct echo_model {
  using input_shape = ts::Shape<dyn, C, W>;
  std::mutex m;
  std::vector<std::vector<int>> batches;  // ids per batch, in the order predict was called
  std::set<int> poison;
  std::chrono::microseconds delay{0};
  bool gate_open = true;
  int entered = 0;
  std::condition_variable cv;

  ts::Tensor<float, ts::Shape<dyn, 4>, ts::cpu_threads> predict(
      const ts::Tensor<float, ts::Shape<dyn, C, W>, ts::cpu_threads>& x) {
    const index_t n = x.dims()[0];
    std::vector<int> ids;
    bool bad = false;
    int number;
    {
      std::unique_lock<std::mutex> lk(m);
      ++entered;
      cv.notify_all();
      cv.wait(lk, [&] { return gate_open; });
      for (index_t i = 0; i < n; ++i) {
        ids.push_back(int(x.data()[i * E] / 16));
        bad = bad || poison.count(ids.back());
      }
      number = int(batches.size());
      batches.push_back(ids);
    }
    if (delay.count()) std::this_thread::sleep_for(delay);
    if (bad) throw model_failure("poisoned batch " + std::to_string(number));
    ts::Tensor<float, ts::Shape<dyn, 4>, ts::cpu_threads> y(n);
    for (index_t i = 0; i < n; ++i) {
      double s = 0;
      for (index_t k = 0; k < E; ++k) s += double(x.data()[i * E + k]) * double(k + 1);
      y(i, 0) = float(ids[std::size_t(i)]);
      y(i, 1) = float(s);
      y(i, 2) = float(n);
      y(i, 3) = float(number);
    }
    return y;
  }
  void open() {
    std::lock_guard<std::mutex> lk(m);
    gate_open = true;
    cv.notify_all();
  }
  void wait_entered(int k) {
    std::unique_lock<std::mutex> lk(m);
    cv.wait(lk, [&] { return entered >= k; });
  }
};

using echo_batcher = sv::batcher<echo_model>;

/// The sample of request `id`: element k = 16 id + k (exact in float).
echo_batcher::input_type sample(int id) {
  echo_batcher::input_type x;
  for (index_t k = 0; k < E; ++k) x.data()[k] = float(16 * id + int(k));
  return x;
}
/// The weighted sum echo_model reports for request `id`, from the formula.
float expected_sum(int id) {
  double s = 0;
  for (index_t k = 0; k < E; ++k) s += double(16 * id + int(k)) * double(k + 1);
  return float(s);
}
void check_row(const echo_batcher::output_type& r, int id, index_t max_batch) {
  REQUIRE(r.dims()[0] == 4);
  REQUIRE(r(0) == float(id));
  REQUIRE(r(1) == expected_sum(id));
  REQUIRE(r(2) >= 1);
  REQUIRE(r(2) <= float(max_batch));
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE("batcher: 64 clients, every future gets its own row, none lost, max_batch_size honoured", "[serve]") {
  for (int workers : {1, 3}) {
    CAPTURE(workers);
    echo_model model;
    constexpr int clients = 64, per_client = 150;
    constexpr index_t max_batch = 7;
    std::vector<std::vector<std::pair<int, std::future<echo_batcher::output_type>>>> futures(clients);
    {
      echo_batcher b(model, {.max_batch_size = max_batch, .max_wait = 300us, .workers = workers});
      std::vector<std::thread> threads;
      for (int c = 0; c < clients; ++c)
        threads.emplace_back([&, c] {
          for (int j = 0; j < per_client; ++j) {
            const int id = c * per_client + j;
            if (j % 2) futures[std::size_t(c)].emplace_back(id, b.submit(sample(id)));  // moved in
            else {
              const auto x = sample(id);
              futures[std::size_t(c)].emplace_back(id, b.submit(x));  // copied
            }
            if (j % 16 == 15) futures[std::size_t(c)].back().second.wait();  // some clients wait, some pile up
          }
        });
      for (auto& t : threads) t.join();
      for (auto& fc : futures)
        for (auto& [id, f] : fc) {
          REQUIRE(f.wait_for(30s) == std::future_status::ready);
          check_row(f.get(), id, max_batch);
        }
      const auto s = b.stats();
      CHECK(s.accepted == std::uint64_t(clients * per_client));
      CHECK(s.completed == std::uint64_t(clients * per_client));
      CHECK(s.failed == 0);
      CHECK(s.largest_batch <= std::size_t(max_batch));
      CHECK(s.batches == model.batches.size());
      CHECK(s.mean_batch_size == Approx(double(clients * per_client) / double(model.batches.size())));
      CHECK(s.latency_p50_us > 0);
      CHECK(s.latency_p99_us >= s.latency_p50_us);
      CHECK(s.latency_max_us >= s.latency_p99_us * 0.97);
    }
    // Every request ran in exactly one batch, no batch above max_batch_size.
    std::vector<int> seen(clients * per_client, 0);
    for (const auto& ids : model.batches) {
      REQUIRE(ids.size() >= 1);
      REQUIRE(ids.size() <= std::size_t(max_batch));
      for (int id : ids) ++seen[std::size_t(id)];
    }
    for (int id = 0; id < clients * per_client; ++id) REQUIRE(seen[std::size_t(id)] == 1);
  }
}

TEST_CASE("batcher: a batch starts when full or when its oldest request has waited max_wait", "[serve]") {
  echo_model model;
  SECTION("a lone request completes after about max_wait, not never") {
    echo_batcher b(model, {.max_batch_size = 8, .max_wait = 40ms});
    const auto t0 = std::chrono::steady_clock::now();
    auto f = b.submit(sample(5));
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    const double ms = ms_since(t0);
    CHECK(ms >= 39.5);
    CHECK(ms < 1040);  // generous: the machine is shared
    const auto r = f.get();
    check_row(r, 5, 8);
    CHECK(r(2) == 1);
    CHECK(b.stats().latency_max_us >= 39500);
  }
  SECTION("max_wait 0: at once") {
    echo_batcher b(model, {.max_batch_size = 8, .max_wait = 0us});
    auto f = b.submit(sample(6));
    REQUIRE(f.wait_for(5s) == std::future_status::ready);
    check_row(f.get(), 6, 8);
  }
  SECTION("a full batch does not wait for max_wait") {
    echo_batcher b(model, {.max_batch_size = 4, .max_wait = 60s});
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::future<echo_batcher::output_type>> fs;
    for (int id = 0; id < 4; ++id) fs.push_back(b.submit(sample(id)));
    for (int id = 0; id < 4; ++id) {
      REQUIRE(fs[std::size_t(id)].wait_for(10s) == std::future_status::ready);
      const auto r = fs[std::size_t(id)].get();
      check_row(r, id, 4);
      CHECK(r(2) == 4);  // one batch of four
    }
    CHECK(ms_since(t0) < 10000);
    // A fifth request alone waits for its max_wait; stop() runs it at once.
    auto f5 = b.submit(sample(9));
    CHECK(f5.wait_for(50ms) == std::future_status::timeout);
    b.stop();
    REQUIRE(f5.wait_for(0s) == std::future_status::ready);
    check_row(f5.get(), 9, 4);
  }
}

TEST_CASE("batcher: the model's exception reaches every future of its batch and no other", "[serve]") {
  echo_model model;
  constexpr int clients = 16, per_client = 40;
  for (int id = 5; id < clients * per_client; id += 37) model.poison.insert(id);
  std::vector<std::future<echo_batcher::output_type>> fs(clients * per_client);
  {
    echo_batcher b(model, {.max_batch_size = 5, .max_wait = 200us});
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c)
      threads.emplace_back([&, c] {
        for (int j = 0; j < per_client; ++j) fs[std::size_t(c * per_client + j)] = b.submit(sample(c * per_client + j));
      });
    for (auto& t : threads) t.join();
    for (auto& f : fs) REQUIRE(f.wait_for(30s) == std::future_status::ready);
    const auto s = b.stats();
    std::uint64_t poisoned_requests = 0;
    for (const auto& ids : model.batches) {
      bool bad = false;
      for (int id : ids) bad = bad || model.poison.count(id);
      if (bad) poisoned_requests += ids.size();
    }
    CHECK(s.failed == poisoned_requests);
    CHECK(s.completed + s.failed == std::uint64_t(clients * per_client));
  }
  std::map<int, bool> batch_failed;  // id -> did its batch throw
  for (const auto& ids : model.batches) {
    bool bad = false;
    for (int id : ids) bad = bad || model.poison.count(id);
    for (int id : ids) batch_failed[id] = bad;
  }
  REQUIRE(batch_failed.size() == fs.size());
  int threw = 0;
  for (int id = 0; id < clients * per_client; ++id) {
    CAPTURE(id);
    if (batch_failed[id]) {
      ++threw;
      CHECK_THROWS_AS(fs[std::size_t(id)].get(), model_failure);
    } else {
      check_row(fs[std::size_t(id)].get(), id, 5);
    }
  }
  CHECK(threw >= int(model.poison.size()));
}

TEST_CASE("batcher: a full queue blocks the submit (back-pressure) or rejects it", "[serve]") {
  for (auto full : {sv::when_full::block, sv::when_full::reject}) {
    echo_model model;
    model.gate_open = false;
    echo_batcher b(model, {.max_batch_size = 2, .max_wait = 0us, .queue_capacity = 4, .full = full});
    std::vector<std::future<echo_batcher::output_type>> fs;
    fs.push_back(b.submit(sample(0)));
    model.wait_entered(1);  // the worker holds request 0 inside predict
    for (int id = 1; id <= 4; ++id) fs.push_back(b.submit(sample(id)));  // the queue is now full
    CHECK(b.stats().waiting == 4);
    if (full == sv::when_full::reject) {
      CHECK_THROWS_AS(b.submit(sample(5)), sv::queue_full);
      CHECK(b.stats().rejected == 1);
      model.open();
    } else {
      std::atomic<bool> returned{false};
      std::future<echo_batcher::output_type> f5;
      std::thread t([&] {
        f5 = b.submit(sample(5));
        returned = true;
      });
      std::this_thread::sleep_for(100ms);
      CHECK_FALSE(returned.load());
      model.open();
      t.join();
      CHECK(returned.load());
      fs.push_back(std::move(f5));
    }
    for (std::size_t id = 0; id < fs.size(); ++id) {
      REQUIRE(fs[id].wait_for(10s) == std::future_status::ready);
      check_row(fs[id].get(), int(id), 2);
    }
  }
}

TEST_CASE("batcher: stop(cancel) fails the waiting requests and wakes a blocked submit", "[serve]") {
  echo_model model;
  model.gate_open = false;
  echo_batcher b(model, {.max_batch_size = 2, .max_wait = 0us, .queue_capacity = 3});
  auto f0 = b.submit(sample(0));
  model.wait_entered(1);
  std::vector<std::future<echo_batcher::output_type>> waiting;
  for (int id = 1; id <= 3; ++id) waiting.push_back(b.submit(sample(id)));
  std::atomic<int> blocked_outcome{0};  // 1: batcher_stopped
  std::thread blocked([&] {
    try {
      b.submit(sample(4));
    } catch (const sv::batcher_stopped&) {
      blocked_outcome = 1;
    }
  });
  std::this_thread::sleep_for(30ms);
  std::thread stopper([&] { b.stop(sv::stop_mode::cancel); });  // waits for the running batch
  blocked.join();  // woken by stop, before the gate opens
  CHECK(blocked_outcome.load() == 1);
  for (auto& f : waiting) {
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    CHECK_THROWS_AS(f.get(), sv::batcher_stopped);
  }
  CHECK(f0.wait_for(0s) == std::future_status::timeout);  // still in predict
  model.open();
  stopper.join();
  REQUIRE(f0.wait_for(0s) == std::future_status::ready);
  check_row(f0.get(), 0, 2);
  CHECK(b.stopped());
  CHECK_THROWS_AS(b.submit(sample(7)), sv::batcher_stopped);
  const auto s = b.stats();
  CHECK(s.completed == 1);
  CHECK(s.failed == 3);
}

TEST_CASE("batcher: shutdown with requests in flight, 300 times: no hang, no lost future", "[serve]") {
  for (int round = 0; round < 300; ++round) {
    CAPTURE(round);
    const int kind = round % 3;  // 0 stop(drain), 1 stop(cancel), 2 destructor
    echo_model model;
    model.delay = std::chrono::microseconds(round % 5 * 20);
    constexpr int clients = 4, per_client = 40;
    std::vector<std::vector<std::pair<int, std::future<echo_batcher::output_type>>>> fs(clients);
    std::atomic<int> refused{0};
    {
      echo_batcher b(model, {.max_batch_size = 3 + round % 4, .max_wait = std::chrono::microseconds(round % 7 * 50),
                             .workers = 1 + round % 2, .queue_capacity = 16});
      std::vector<std::thread> threads;
      for (int c = 0; c < clients; ++c)
        threads.emplace_back([&, c] {
          for (int j = 0; j < per_client; ++j) {
            const int id = c * per_client + j;
            try {
              fs[std::size_t(c)].emplace_back(id, b.submit(sample(id)));
            } catch (const sv::batcher_stopped&) {
              ++refused;
              return;
            }
          }
        });
      std::this_thread::sleep_for(std::chrono::microseconds(round % 11 * 40));
      if (kind == 0) b.stop(sv::stop_mode::drain);
      if (kind == 1) b.stop(sv::stop_mode::cancel);
      if (kind != 2) {
        for (auto& t : threads) t.join();
        CHECK_THROWS_AS(b.submit(sample(0)), sv::batcher_stopped);
      } else {
        for (auto& t : threads) t.join();  // every submit done; the destructor finds requests waiting
      }
    }  // the destructor: stop(drain)
    int total = 0;
    for (auto& fc : fs)
      for (auto& [id, f] : fc) {
        ++total;
        REQUIRE(f.wait_for(0s) == std::future_status::ready);  // stop and the destructor return only when done
        if (kind == 1) {
          try {
            check_row(f.get(), id, 6);
          } catch (const sv::batcher_stopped&) {
          }
        } else {
          check_row(f.get(), id, 6);
        }
      }
    if (kind == 2) REQUIRE(total == clients * per_client);
    std::size_t ran = 0;
    for (const auto& ids : model.batches) ran += ids.size();
    if (kind != 1) REQUIRE(ran == std::size_t(total));
  }
}

TEST_CASE("batcher: bad options, bad requests, a model in training mode", "[serve]") {
  echo_model model;
  auto make = [&](sv::batcher_options o) { echo_batcher b(model, o); };
  CHECK_THROWS_WITH(make({.max_batch_size = 0}), Catch::Contains("max_batch_size must be at least 1, not 0"));
  CHECK_THROWS_WITH(make({.max_wait = -1us}), Catch::Contains("max_wait must not be negative"));
  CHECK_THROWS_WITH(make({.workers = 0}), Catch::Contains("workers must be at least 1"));
  CHECK_THROWS_WITH(make({.threads_per_worker = -2}), Catch::Contains("threads_per_worker"));
  CHECK_THROWS_WITH(make(sv::batcher_options{.max_batch_size = 8, .queue_capacity = 7}),
                    Catch::Contains("queue_capacity (7)") && Catch::Contains("max_batch_size (8)"));
  CHECK_THROWS_AS(make({.max_batch_size = 0}), std::invalid_argument);

  // A model with a dynamic sample extent: the batcher is given the extents; another shape names both.
  struct dyn_model {
    using input_shape = ts::Shape<dyn, dyn>;
    ts::Tensor<float, ts::Shape<dyn, 1>, ts::cpu_threads> predict(const ts::Tensor<float, ts::Shape<dyn, dyn>, ts::cpu_threads>& x) {
      ts::Tensor<float, ts::Shape<dyn, 1>, ts::cpu_threads> y(x.dims()[0]);
      for (index_t i = 0; i < x.dims()[0]; ++i) {
        y(i, 0) = 0;
        for (index_t k = 0; k < x.dims()[1]; ++k) y(i, 0) += x(i, k);
      }
      return y;
    }
  } dm;
  sv::batcher<dyn_model> b(dm, ts::dims_t<1>{3}, {.max_wait = 0us});
  ts::Tensor<float, ts::Shape<dyn>, ts::cpu_threads> good(3), bad(4);
  good(0) = 1, good(1) = 2, good(2) = 4;
  bad = 1.0f;
  CHECK_THROWS_WITH(b.submit(bad), Catch::Contains("[4]") && Catch::Contains("[3]"));
  auto f = b.submit(good);
  CHECK(f.get()(0) == 7.0f);
  CHECK(b.stats().accepted == 1);

  using Tiny = nn::Sequential<ts::Shape<dyn, 6>, nn::Linear<6, 3>>;
  Tiny net(1);
  net.train();
  CHECK_THROWS_WITH(sv::batcher<Tiny>(net), Catch::Contains("training mode"));
  net.eval();
  sv::batcher<Tiny> ok(net);
  CHECK(ok.options().max_batch_size == 64);
}

TEST_CASE("batcher: a float model and its int8 conversion give each request the row of that sample alone", "[serve]") {
  using Net = nn::Sequential<ts::Shape<dyn, 1, 9, 9>, nn::Conv2d<1, 4, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                             nn::Flatten, nn::Linear<4 * 4 * 4, 5>>;
  Net net(3);
  net.eval();
  constexpr index_t n = 300;
  ts::Tensor<float, ts::Shape<dyn, 1, 9, 9>, ts::cpu_threads> images(n);
  std::uint32_t s = 7;
  for (index_t i = 0; i < images.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    images.data()[i] = float(s >> 8) / float(1 << 24) * 3.0f - 1.0f;
  }
  const auto qnet = ts::quant::quantize(net, images);
  // The references: each image alone (batch 1).
  std::vector<std::vector<float>> ref_f(n), ref_q(n);
  for (index_t i = 0; i < n; ++i) {
    ts::Tensor<float, ts::Shape<dyn, 1, 9, 9>, ts::cpu_threads> one(1);
    std::copy(images.data() + i * 81, images.data() + (i + 1) * 81, one.data());
    const auto lf = net.predict(one);
    const auto lq = qnet.predict(one);
    ref_f[std::size_t(i)].assign(lf.data(), lf.data() + 5);
    ref_q[std::size_t(i)].assign(lq.data(), lq.data() + 5);
  }
  auto run = [&](auto& model, const std::vector<std::vector<float>>& ref, float tol, sv::batcher_options opt) {
    sv::batcher b(model, opt);
    using B = decltype(b);
    std::vector<std::future<typename B::output_type>> fs(n);
    std::vector<std::thread> threads;
    constexpr int clients = 12;
    for (int c = 0; c < clients; ++c)
      threads.emplace_back([&, c] {
        for (index_t i = c; i < n; i += clients) {
          typename B::input_type x;
          std::copy(images.data() + i * 81, images.data() + (i + 1) * 81, x.data());
          fs[std::size_t(i)] = b.submit(std::move(x));
        }
      });
    for (auto& t : threads) t.join();
    for (index_t i = 0; i < n; ++i) {
      const auto row = fs[std::size_t(i)].get();
      REQUIRE(row.dims()[0] == 5);
      for (index_t j = 0; j < 5; ++j) {
        CAPTURE(i, j);
        REQUIRE(std::fabs(row(j) - ref[std::size_t(i)][std::size_t(j)]) <=
                tol * (1.0f + std::fabs(ref[std::size_t(i)][std::size_t(j)])));
      }
    }
    CHECK(b.stats().largest_batch <= std::size_t(opt.max_batch_size));
    CHECK(b.stats().largest_batch > 1);
  };
  SECTION("float, one worker") { run(net, ref_f, 1e-5f, {.max_batch_size = 33, .max_wait = 2ms}); }
  SECTION("float, two workers of one thread each") {
    run(net, ref_f, 1e-5f, {.max_batch_size = 16, .max_wait = 2ms, .workers = 2, .threads_per_worker = 1});
  }
  SECTION("int8: exactly the batch-1 logits") { run(qnet, ref_q, 0.0f, {.max_batch_size = 64, .max_wait = 2ms}); }
  SECTION("int8, two workers") {
    run(qnet, ref_q, 0.0f, {.max_batch_size = 20, .max_wait = 2ms, .workers = 2, .threads_per_worker = 1});
  }
}
