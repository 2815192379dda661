// Dynamic batching for serving: single requests from many threads, grouped into batches, run through a model's
// predict, each request's future completed with its own row of the result.
//
//   auto qnet = tessera::quant::quantize(net, calibration);          // or a float nn::Sequential in eval mode
//   tessera::serve::batcher b(qnet, {.max_batch_size = 64, .max_wait = std::chrono::microseconds(1000)});
//   // any number of threads:
//   tessera::Tensor<float, tessera::Shape<1, 28, 28>, tessera::cpu_threads> image;  // the input shape minus the batch
//   std::future<...> f = b.submit(std::move(image));                 // or b.submit(image): copied
//   auto logits = f.get();                                           // Tensor<float, Shape<dyn>> here: one row [10]
//   b.stop();                                                        // or the destructor: runs what was accepted
//
// The model is any type with an `input_shape` (Shape<dyn, ...>: the batch axis first) and a
// `predict(const Tensor<InputT, input_shape, P>&)` returning a tensor whose first extent is the batch: nn::Sequential
// (float, host policies; in eval mode: a model in training mode is refused, since dropout would draw from one
// generator and batch normalisation would mix the requests of a batch) and quant::int8_model_t (quant/model.hpp).
// The batcher keeps a reference: the model must outlive it. A model on the cuda policy gets the batch copied by its
// predict and its logits copied back to the host (compiled by nvcc only; not yet run on a GPU).
//
// Guarantees:
//  * Every accepted request (submit returned a future) is completed exactly once: with its own row, with the
//    exception its batch's predict threw (the same exception for every request of that batch; catch it by const
//    reference), or, after stop(stop_mode::cancel), with serve::batcher_stopped. No future is left without a value.
//  * Requests are taken in arrival order; a batch holds at most max_batch_size of them. A worker starts a batch as
//    soon as max_batch_size requests wait, or when the oldest waiting request has waited max_wait, or at stop().
//    (A request can wait longer when every worker is busy running a batch.)
//  * Rows never cross: the i-th request of a batch gets row i of the model's result, copied into its own tensor.
//  * Back-pressure: at most queue_capacity requests wait (not counting batches being run). A submit to a full queue
//    blocks until there is room (when_full::block, the default) or throws serve::queue_full (when_full::reject).
//  * stop(stop_mode::drain) (the default, and the destructor's) refuses new requests and returns once every accepted
//    one is complete; stop(stop_mode::cancel) completes the batches already running and fails the waiting requests
//    with batcher_stopped. A submit after stop, or one blocked on a full queue when stop is called, throws
//    batcher_stopped (that request was not accepted). stop() may be called from any thread and more than once (a
//    later cancel upgrades an earlier drain); never from inside the model's predict (it waits for the workers).
//  * Bad input is an exception from submit, before anything is queued: a sample whose extents differ from the
//    model's input shape minus the batch axis is a shape_error naming both.
//
// Threads: `workers` threads (default 1) each take a batch and call the model's predict, which runs its own OpenMP
// team (cpu_threads) inside that worker: one worker with the default team uses every core for each batch, the
// usual best on a small machine. With several workers, predict runs concurrently on one model (safe for int8 models
// and for nn::Sequential in eval mode; any other model must allow it) and each worker's team is threads_per_worker
// threads (omp_set_num_threads in that worker; cpu_threads::set_num_threads, when called, overrides it): keep
// workers x threads_per_worker at most the cores, or the teams fight for them.
//
// stats(): requests accepted, completed, failed and rejected, batches run, the mean and largest batch, and the
// latency of completed requests (submit called to the batch's results being handed out: mean, max, and p50/p99 from
// a histogram of 16 buckets per octave, so within 2.2 % of the exact percentile). A request is counted before its
// future is made ready. reset_stats() starts counting again.
#pragma once
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/expr/node.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera::serve {

/// submit after stop() (or blocked on a full queue when stop() was called), and the requests stop(cancel) fails.
class batcher_stopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// submit to a full queue under when_full::reject.
class queue_full : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class when_full { block, reject };
enum class stop_mode { drain, cancel };

struct batcher_options {
  index_t max_batch_size = 64;                 ///< requests per batch at most (>= 1)
  std::chrono::microseconds max_wait{1000};    ///< how long the oldest waiting request waits for a fuller batch (>= 0)
  int workers = 1;                             ///< threads running batches (>= 1)
  std::size_t queue_capacity = 4096;           ///< waiting requests at most (>= max_batch_size)
  when_full full = when_full::block;           ///< a submit to a full queue blocks (back-pressure) or throws queue_full
  int threads_per_worker = 0;                  ///< OpenMP threads of predict in each worker; 0: OpenMP's default
};

struct batcher_stats {
  std::uint64_t accepted = 0;   ///< submits that returned a future
  std::uint64_t completed = 0;  ///< futures given their row
  std::uint64_t failed = 0;     ///< futures given an exception (the model's, or batcher_stopped from stop(cancel))
  std::uint64_t rejected = 0;   ///< submits that threw queue_full
  std::uint64_t batches = 0;    ///< batches run (predict called)
  std::size_t largest_batch = 0;
  double mean_batch_size = 0;
  std::size_t waiting = 0;      ///< requests in the queue now
  double latency_mean_us = 0, latency_max_us = 0;  ///< completed requests: submit called -> future ready
  double latency_p50_us = 0, latency_p99_us = 0;   ///< from the histogram (within 2.2 %)
};

namespace detail {
template <class S>
struct drop_batch;
template <extent_t E0, extent_t... E>
struct drop_batch<Shape<E0, E...>> {
  using type = Shape<E...>;
};
template <class S>
using drop_batch_t = typename drop_batch<S>::type;

/// The policy of the batch handed to predict: the model's own if it is a host policy, else cpu_threads (predict moves
/// it to the device).
template <class M>
auto batch_policy_of() {
  if constexpr (requires { typename M::policy; }) {
    if constexpr (!M::policy::on_device) return static_cast<typename M::policy*>(nullptr);
    else return static_cast<cpu_threads*>(nullptr);
  } else {
    return static_cast<cpu_threads*>(nullptr);
  }
}

/// Latencies in microseconds: 16 buckets per octave from 1 us to 2^40 us; percentiles are a bucket's geometric middle.
class latency_histogram {
 public:
  void add(double us) {
    const int b = us <= 1.0 ? 0 : std::min(int(std::log2(us) * per_octave), buckets - 1);
    ++count_[std::size_t(b)];
    ++n_;
    sum_ += us;
    max_ = std::max(max_, us);
  }
  double percentile(double p) const {
    if (n_ == 0) return 0;
    const auto rank = std::uint64_t(std::ceil(p * double(n_)));
    std::uint64_t seen = 0;
    for (int b = 0; b < buckets; ++b) {
      seen += count_[std::size_t(b)];
      if (seen >= std::max<std::uint64_t>(rank, 1)) return std::min(max_, std::exp2((b + 0.5) / per_octave));
    }
    return max_;
  }
  double mean() const { return n_ ? sum_ / double(n_) : 0; }
  double max() const { return max_; }

 private:
  static constexpr int per_octave = 16, buckets = 16 * 40;
  std::array<std::uint64_t, std::size_t(buckets)> count_{};
  std::uint64_t n_ = 0;
  double sum_ = 0, max_ = 0;
};
}  // namespace detail

/// A dynamic batcher in front of `Model` (see the top of this file). InputT: the element type of the samples.
template <class Model, class InputT = float>
class batcher {
  using model_t = std::remove_const_t<Model>;
  static_assert(requires { typename model_t::input_shape; },
                "tessera::serve::batcher: the model needs an input_shape (Shape<dyn, ...>, the batch axis first), as "
                "nn::Sequential and the int8 models have");

 public:
  using batch_shape = typename model_t::input_shape;
  static_assert(batch_shape::rank >= 1 && batch_shape::extents[0] == dyn,
                "tessera::serve::batcher: the model's input shape must start with a dynamic batch axis");
  using sample_shape = detail::drop_batch_t<batch_shape>;
  static constexpr int sample_rank = sample_shape::rank;
  using batch_policy = std::remove_pointer_t<decltype(detail::batch_policy_of<model_t>())>;
  using batch_type = Tensor<InputT, batch_shape, batch_policy>;
  /// One request: the model's input shape without the batch axis.
  using input_type = Tensor<InputT, sample_shape, cpu_threads>;
  using model_output = std::remove_cvref_t<decltype(std::declval<Model&>().predict(std::declval<const batch_type&>()))>;
  static_assert(tessera::detail::is_tensor_v<model_output> && model_output::shape_type::rank >= 1,
                "tessera::serve::batcher: the model's predict must return a tensor whose first axis is the batch");
  /// One request's result: its row of predict's result, on the host.
  using output_type = Tensor<typename model_output::value_type, detail::drop_batch_t<typename model_output::shape_type>,
                             cpu_threads>;

  /// A batcher for a model whose input shape is static apart from the batch axis.
  explicit batcher(Model& model, batcher_options opt = {})
    requires(sample_shape::is_static)
      : batcher(model, static_sample_dims(), opt) {}
  /// A batcher whose samples have the extents `sample_dims` (needed where the model's input shape has other
  /// dynamic extents; every sample must have these).
  batcher(Model& model, const dims_t<sample_rank>& sample_dims, batcher_options opt = {})
      : model_(&model), opt_(opt), sample_dims_(sample_dims) {
    check_options(opt_);
    check_static_extents<sample_shape>(sample_dims_, "tessera::serve::batcher's sample");
    if constexpr (requires { model.is_training(); })
      if (model.is_training())
        throw std::invalid_argument("tessera::serve::batcher: the model is in training mode (dropout would draw from "
                                    "one generator in several threads and batch normalisation would mix the requests "
                                    "of a batch); call model.eval() first");
    sample_size_ = 1;
    for (index_t d : sample_dims_) sample_size_ *= d;
    try {
      for (int w = 0; w < opt_.workers; ++w) workers_.emplace_back([this] { work(); });
    } catch (...) {
      stop(stop_mode::cancel);
      throw;
    }
  }
  batcher(const batcher&) = delete;
  batcher& operator=(const batcher&) = delete;
  /// stop(stop_mode::drain): every accepted request is completed before the batcher goes.
  ~batcher() { stop(stop_mode::drain); }

  /// Queues one sample (moved in) and returns the future of its row.
  std::future<output_type> submit(input_type&& sample) {
    check_sample(sample.dims());
    return enqueue(std::move(sample));
  }
  /// Queues a copy of one sample (a host tensor of the model's input shape minus the batch axis).
  template <class S, class P>
  std::future<output_type> submit(const Tensor<InputT, S, P>& sample) {
    static_assert(!P::on_device, "tessera::serve::batcher: requests are host tensors; copy it with tessera::to<cpu>(t)");
    static_assert(S::rank == sample_rank,
                  "tessera::serve::batcher: a request is one sample: the model's input shape without the batch axis");
    check_sample(sample.dims());
    input_type x(sample_dims_);
    std::copy(sample.data(), sample.data() + sample_size_, x.data());
    return enqueue(std::move(x));
  }
  template <class T, class S, class P>
    requires(!std::is_same_v<T, InputT>)
  std::future<output_type> submit(const Tensor<T, S, P>&) {
    static_assert(std::is_same_v<T, InputT>, "tessera::serve::batcher: the request's element type differs from the "
                                             "batcher's InputT (float unless given); convert it first");
    return {};
  }

  /// Refuses new requests; drain: returns when every accepted request is complete; cancel: fails the waiting ones
  /// with batcher_stopped and returns when the running batches are complete. Idempotent, from any thread.
  void stop(stop_mode mode = stop_mode::drain) {
    std::deque<request> cancelled;
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
      if (mode == stop_mode::cancel) cancelled.swap(queue_);
    }
    work_cv_.notify_all();
    space_cv_.notify_all();
    if (!cancelled.empty()) {
      const auto e = std::make_exception_ptr(
          batcher_stopped("tessera::serve::batcher: stopped (stop_mode::cancel) before this request's batch ran"));
      {
        std::lock_guard<std::mutex> lk(stats_mu_);
        failed_ += cancelled.size();
      }
      for (auto& r : cancelled) r.done.set_exception(e);
    }
    std::lock_guard<std::mutex> lk(join_mu_);
    for (auto& t : workers_)
      if (t.joinable()) t.join();
  }
  bool stopped() const {
    std::lock_guard<std::mutex> lk(mu_);
    return stopping_;
  }

  batcher_stats stats() const {
    batcher_stats s;
    {
      std::lock_guard<std::mutex> lk(mu_);
      s.accepted = accepted_;
      s.rejected = rejected_;
      s.waiting = queue_.size();
    }
    std::lock_guard<std::mutex> lk(stats_mu_);
    s.completed = completed_;
    s.failed = failed_;
    s.batches = batches_;
    s.largest_batch = largest_;
    s.mean_batch_size = batches_ ? double(batched_) / double(batches_) : 0.0;
    s.latency_mean_us = latency_.mean();
    s.latency_max_us = latency_.max();
    s.latency_p50_us = latency_.percentile(0.50);
    s.latency_p99_us = latency_.percentile(0.99);
    return s;
  }
  /// Zeroes every count and the latency histogram (the queue is left as it is).
  void reset_stats() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      accepted_ = rejected_ = 0;
    }
    std::lock_guard<std::mutex> lk(stats_mu_);
    completed_ = failed_ = batches_ = batched_ = 0;
    largest_ = 0;
    latency_ = {};
  }
  const batcher_options& options() const { return opt_; }
  const dims_t<sample_rank>& sample_dims() const { return sample_dims_; }

 private:
  using clock = std::chrono::steady_clock;
  struct request {
    input_type x;
    std::promise<output_type> done;
    clock::time_point submitted, queued;
  };

  static dims_t<sample_rank> static_sample_dims() {
    dims_t<sample_rank> d{};
    for (int i = 0; i < sample_rank; ++i) d[std::size_t(i)] = sample_shape::extents[std::size_t(i)];
    return d;
  }
  static void check_options(const batcher_options& o) {
    auto bad = [](const std::string& what) { throw std::invalid_argument("tessera::serve::batcher: " + what); };
    if (o.max_batch_size < 1) bad("max_batch_size must be at least 1, not " + std::to_string(o.max_batch_size));
    if (o.max_wait.count() < 0) bad("max_wait must not be negative, not " + std::to_string(o.max_wait.count()) + " us");
    if (o.workers < 1) bad("workers must be at least 1, not " + std::to_string(o.workers));
    if (o.threads_per_worker < 0) bad("threads_per_worker must be 0 (OpenMP's default) or more, not " +
                                      std::to_string(o.threads_per_worker));
    if (o.queue_capacity < std::size_t(o.max_batch_size))
      bad("queue_capacity (" + std::to_string(o.queue_capacity) + ") must be at least max_batch_size (" +
          std::to_string(o.max_batch_size) + "), or no batch could fill");
  }
  void check_sample(const dims_t<sample_rank>& d) const {
    if (d != sample_dims_)
      throw shape_error("tessera::serve::batcher: a request of shape " + tessera::detail::format_dims(d) +
                        " does not fit the model's input shape without the batch axis " +
                        tessera::detail::format_dims(sample_dims_));
  }

  std::future<output_type> enqueue(input_type&& x) {
    request r{std::move(x), {}, clock::now(), {}};
    auto f = r.done.get_future();
    bool wake = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (stopping_) throw batcher_stopped("tessera::serve::batcher: submit after stop()");
      if (queue_.size() >= opt_.queue_capacity) {
        if (opt_.full == when_full::reject) {
          ++rejected_;
          throw queue_full("tessera::serve::batcher: the queue is full (" + std::to_string(opt_.queue_capacity) +
                           " requests waiting; when_full::reject)");
        }
        ++blocked_;
        space_cv_.wait(lk, [&] { return queue_.size() < opt_.queue_capacity || stopping_; });
        --blocked_;
        if (stopping_) throw batcher_stopped("tessera::serve::batcher: stopped while this submit waited for room");
      }
      r.queued = clock::now();
      queue_.push_back(std::move(r));
      ++accepted_;
      // A worker waits for the first request (queue empty before) or for a full batch: wake it only then.
      wake = queue_.size() == 1 || queue_.size() == std::size_t(opt_.max_batch_size);
    }
    if (wake) work_cv_.notify_all();
    return f;
  }

  void work() {
#if defined(_OPENMP)
    if (opt_.threads_per_worker > 0) omp_set_num_threads(opt_.threads_per_worker);
#endif
    const auto max = std::size_t(opt_.max_batch_size);
    std::vector<request> batch;
    batch.reserve(max);
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        work_cv_.wait(lk, [&] { return !queue_.empty() || stopping_; });
        if (queue_.empty()) return;  // stopping, nothing left
        if (!stopping_ && queue_.size() < max) {
          const auto deadline = queue_.front().queued + opt_.max_wait;
          work_cv_.wait_until(lk, deadline, [&] { return queue_.size() >= max || stopping_ || queue_.empty(); });
          if (queue_.empty()) continue;  // another worker took them, or stop(cancel)
        }
        const std::size_t n = std::min(queue_.size(), max);
        for (std::size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        if (!queue_.empty()) work_cv_.notify_one();  // the rest is another worker's
        if (blocked_ > 0) space_cv_.notify_all();
      }
      run(batch);
      batch.clear();
    }
  }

  /// Runs one batch; never throws (a failure goes to every future of the batch). The counts and latencies are
  /// recorded before any future is made ready, so stats() counts every request whose future a client has seen ready.
  void run(std::vector<request>& batch) noexcept {
    const std::size_t n = batch.size();
    std::vector<output_type> rows;
    std::exception_ptr error;
    try {
      dims_t<batch_shape::rank> bd{};
      bd[0] = index_t(n);
      for (int i = 0; i < sample_rank; ++i) bd[std::size_t(i) + 1] = sample_dims_[std::size_t(i)];
      batch_type x(bd);
      for (std::size_t i = 0; i < n; ++i)
        std::copy(batch[i].x.data(), batch[i].x.data() + sample_size_, x.data() + index_t(i) * sample_size_);
      rows.reserve(n);
      auto y = model_->predict(x);
      if constexpr (model_output::policy::on_device) split_rows(tessera::to<cpu_threads>(y), n, rows);
      else split_rows(y, n, rows);
    } catch (...) {
      error = std::current_exception();
    }
    {
      const auto now = clock::now();
      std::lock_guard<std::mutex> lk(stats_mu_);
      ++batches_;
      batched_ += n;
      largest_ = std::max(largest_, n);
      if (error) {
        failed_ += n;
      } else {
        completed_ += n;
        for (const auto& r : batch) latency_.add(std::chrono::duration<double, std::micro>(now - r.submitted).count());
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (error) batch[i].done.set_exception(error);
      else batch[i].done.set_value(std::move(rows[i]));
    }
  }

  /// Row i of y (a tensor [n, ...], row-major) into rows[i], each its own tensor.
  template <class Y>
  static void split_rows(const Y& y, std::size_t n, std::vector<output_type>& rows) {
    constexpr int R = Y::shape_type::rank;
    const auto yd = y.dims();
    if (yd[0] != index_t(n))
      throw std::logic_error("tessera::serve::batcher: the model's predict returned " + tessera::detail::format_dims(yd) +
                             " for a batch of " + std::to_string(n) + " (its first extent must be the batch)");
    dims_t<R - 1> rd{};
    index_t row = 1;
    for (int i = 1; i < R; ++i) row *= (rd[std::size_t(i) - 1] = yd[std::size_t(i)]);
    for (std::size_t i = 0; i < n; ++i) {
      rows.emplace_back(rd);
      std::copy(y.data() + index_t(i) * row, y.data() + index_t(i + 1) * row, rows.back().data());
    }
  }

  Model* model_;
  const batcher_options opt_;
  const dims_t<sample_rank> sample_dims_;
  index_t sample_size_ = 1;

  mutable std::mutex mu_;  // the queue, stopping_, accepted_, rejected_, blocked_
  std::condition_variable work_cv_, space_cv_;
  std::deque<request> queue_;
  bool stopping_ = false;
  std::uint64_t accepted_ = 0, rejected_ = 0;
  std::size_t blocked_ = 0;

  mutable std::mutex stats_mu_;
  std::uint64_t completed_ = 0, failed_ = 0, batches_ = 0, batched_ = 0;
  std::size_t largest_ = 0;
  detail::latency_histogram latency_;

  std::mutex join_mu_;
  std::vector<std::thread> workers_;
};

}  // namespace tessera::serve
