// data_parallel: every rank trains its own copy of a model on its share of the data, and the gradients are
// averaged over the ranks during backward, as PyTorch's DistributedDataParallel does it:
//
//   tessera::dist::context ctx(argc, argv);
//   SimpleCNN net(/*seed=*/0);
//   tessera::dist::data_parallel ddp(net, ctx);             // checks and synchronises the model, hooks its gradients
//   ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
//   ts::DataLoader loader(x, y, {.batch_size = 32, .shuffle = true, .seed = 0, .shard = ctx.shard()});
//   for (auto& [xb, yb] : loader) { opt.zero_grad(); ad::cross_entropy(net.forward(xb), yb).backward(); opt.step(); }
//
// The training loop is unchanged: backward() itself leaves every rank with the same, averaged gradients.
//
// At construction (collectives: every rank constructs its data_parallel at the same point):
//   - the ranks' models are compared: every parameter's and buffer's name, shape and element type; a difference
//     throws dist::error on every rank, naming the first differing entry and both ranks' versions of it (no hang:
//     the descriptions travel with all_gather, which every rank joins whatever its model);
//   - rank 0's parameters and buffers are broadcast to the others;
//   - the parameters are grouped into buckets in reverse order of registration (for a Sequential, the order in
//     which backward produces their gradients): the first bucket is closed once it holds first_bucket_cap_mb
//     (default 1 MiB: communication starts early), the others at bucket_cap_mb (default 25 MiB), as PyTorch.
// During backward: a parameter's hook (autodiff/var.hpp: grad_ready) copies its gradient into its bucket as soon
// as it is complete; a bucket whose gradients are all in starts its asynchronous all-reduce (average) at once, on
// the group's communication thread, while the walk goes on through the earlier layers. Buckets start in index
// order on every rank (a bucket complete early waits for the ones before it), so that the ranks' collectives
// match. When the walk ends (a callback queued with ad::queue_backward_callback) the buckets not started yet (a
// parameter the forward did not use contributes zeros) start, every bucket is waited for and its averaged
// gradients are copied back. last_step() says when each bucket started against the end of the walk.
//
// Options (data_parallel_options): bucket_cap_mb, first_bucket_cap_mb; overlap (default on; off: every bucket
// starts after the walk, for measuring what overlap buys); broadcast_buffers (default on: after every synchronised
// backward, rank 0's buffers — BatchNorm's running statistics — go to every rank, as PyTorch's broadcast_buffers
// does at each forward); sync_batch_norm (default off: each rank normalises with its own batch's statistics, as
// PyTorch's BatchNorm under DDP; on: the model's BatchNorm layers reduce their statistics over the ranks,
// PyTorch's SyncBatchNorm, through the model's set_batch_norm_reducer).
// no_sync(): a guard under which backward() leaves gradients local (gradient accumulation); the first backward
// after it averages everything accumulated.
// Memory: host models with the MPI group move gradients in place in host buckets; a cuda model with a host group
// stages its gradients through host buckets; a cuda model with a device group (dist/nccl.hpp) keeps its buckets on
// the device.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/dist/process_group.hpp"
#include "tessera/nn/parameter.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera::dist {

struct data_parallel_options {
  double bucket_cap_mb = 25;       ///< MiB per bucket (the last one may hold less)
  double first_bucket_cap_mb = 1;  ///< MiB of the first bucket (the last layers' gradients)
  bool overlap = true;             ///< start each bucket's all-reduce during backward
  bool broadcast_buffers = true;   ///< rank 0's buffers to every rank after each synchronised backward
  bool sync_batch_norm = false;    ///< BatchNorm statistics over all ranks (SyncBatchNorm)
};

/// When each bucket of the last synchronised backward started and finished (seconds from the first gradient).
struct data_parallel_step {
  std::vector<double> started;      ///< per bucket
  std::vector<int> leaves_left;     ///< per bucket: parameters whose gradient was not complete yet when it started
  std::vector<double> finished;     ///< per bucket: when its wait returned
  double walk_ended = 0;            ///< when backward's walk ended (its end-of-walk callback began)
};

template <class Model>
class data_parallel {
 public:
  using value_type = typename Model::value_type;
  using T = value_type;

  struct bucket_info {
    std::vector<std::string> names;  ///< its parameters, in the order they are packed
    std::size_t bytes = 0;
  };

  data_parallel(Model& model, process_group& group, data_parallel_options opt = {})
      : model_(model), g_(group), opt_(opt), params_(model.parameters()) {
    if (opt_.bucket_cap_mb <= 0 || opt_.first_bucket_cap_mb <= 0)
      throw std::invalid_argument("tessera::dist::data_parallel: bucket caps must be positive, got " +
                                  std::to_string(opt_.first_bucket_cap_mb) + " and " + std::to_string(opt_.bucket_cap_mb) + " MiB");
    for (const auto& p : params_)
      if (!p.on_device && g_.on_device())
        throw error("tessera::dist::data_parallel: the parameter '" + p.name + "' is in host memory but the " +
                    g_.engine() + " group moves device memory: use the context's host group");
    check_same_model();
    broadcast_from_root();
    make_buckets();
    if (opt_.sync_batch_norm) {
      if constexpr (requires { model.set_batch_norm_reducer(std::function<void(double*, index_t)>{}); })
        model_.set_batch_norm_reducer([this](double* v, index_t n) {
          g_.all_reduce_raw(v, std::size_t(n), dtype::f64, reduce_op::sum, true).wait();
        });
      else
        throw error("tessera::dist::data_parallel: sync_batch_norm needs a model with set_batch_norm_reducer (an nn::Sequential)");
    }
    for (std::size_t i = 0; i < params_.size(); ++i) params_[i].set_grad_ready([this, i] { on_ready(i); });
  }
  template <class Context>
    requires requires(Context& c) { c.group(); }
  data_parallel(Model& model, Context& ctx, data_parallel_options opt = {}) : data_parallel(model, ctx.group(), opt) {}

  data_parallel(const data_parallel&) = delete;
  data_parallel& operator=(const data_parallel&) = delete;
  ~data_parallel() {
    for (auto& p : params_) p.set_grad_ready({});
    if (opt_.sync_batch_norm) {
      if constexpr (requires { model_.set_batch_norm_reducer(std::function<void(double*, index_t)>{}); })
        model_.set_batch_norm_reducer({});
    }
    // a bucket still in flight (a walk that threw after starting it) is waited for: the communication thread
    // writes into its buffer; one that cannot finish (a timed-out group) keeps its buffer alive for good
    bool abandoned = false;
    for (auto& b : buckets_) {
      try {
        b.handle.wait();
      } catch (...) {
        abandoned = true;
      }
    }
    if (abandoned) {
      for (auto& b : buckets_) new std::vector<T>(std::move(b.host));  // NOLINT: deliberately leaked
      for (auto& d : device_free_) (void)d.release();
    }
  }

  Model& module() { return model_; }
  process_group& group() { return g_; }
  const data_parallel_options& options() const { return opt_; }
  const std::vector<bucket_info>& buckets() const { return info_; }
  const data_parallel_step& last_step() const { return last_; }

  /// While the guard lives, backward() leaves the gradients local (accumulation).
  class no_sync_guard {
   public:
    explicit no_sync_guard(data_parallel& d) : d_(&d), prev_(d.sync_) { d.sync_ = false; }
    no_sync_guard(no_sync_guard&& o) noexcept : d_(o.d_), prev_(o.prev_) { o.d_ = nullptr; }
    no_sync_guard(const no_sync_guard&) = delete;
    no_sync_guard& operator=(const no_sync_guard&) = delete;
    no_sync_guard& operator=(no_sync_guard&&) = delete;
    ~no_sync_guard() {
      if (d_) d_->sync_ = prev_;
    }

   private:
    data_parallel* d_;
    bool prev_;
  };
  [[nodiscard]] no_sync_guard no_sync() { return no_sync_guard(*this); }

 private:
  struct bucket {
    std::vector<std::size_t> params;  // indices into params_
    std::vector<std::size_t> offset;  // element offset of each in the buffer
    std::size_t elements = 0;
    std::vector<T> host;              // the buffer when the group moves host memory
    T* device = nullptr;              // the buffer when it moves device memory
    int pending = 0;
    bool launched = false;
    work handle;
    T* data() { return device ? device : host.data(); }
  };

  // ---- construction ----
  template <class Tensor_>
  static std::string describe_tensor(const char* kind, const std::string& name, const Tensor_& t) {
    return std::string(kind) + " '" + name + "' " + tessera::detail::format_dims(t.dims()) + " " +
           type_name<typename Tensor_::value_type>();
  }
  std::vector<std::string> describe_model() {
    std::vector<std::string> d;
    model_.for_each_parameter([&](const std::string& name, auto& v) { d.push_back(describe_tensor("parameter", name, v.value())); });
    model_.for_each_buffer([&](const std::string& name, auto& t) { d.push_back(describe_tensor("buffer", name, t)); });
    return d;
  }
  void check_same_model() {
    const auto mine = describe_model();
    std::string flat;
    for (const auto& s : mine) flat += s + '\n';
    const int n = g_.size();
    // every rank's length, then every rank's description padded to the longest
    Tensor<std::int64_t, Shape<dyn>> len(1), lens(n);
    len(0) = std::int64_t(flat.size());
    g_.all_gather(lens, len);
    std::int64_t longest = 0;
    for (int r = 0; r < n; ++r) longest = std::max(longest, lens(r));
    Tensor<std::uint8_t, Shape<dyn>> text(static_cast<index_t>(longest)), all(static_cast<index_t>(longest) * n);
    text = std::uint8_t(0);
    std::copy(flat.begin(), flat.end(), text.data());
    if (longest > 0) g_.all_gather(all, text);
    auto lines_of = [&](int r) {
      std::vector<std::string> out;
      std::string cur;
      for (std::int64_t i = 0; i < lens(r); ++i) {
        const char c = char(all(index_t(r * longest + i)));
        if (c == '\n') out.push_back(std::move(cur)), cur.clear();
        else cur += c;
      }
      return out;
    };
    const auto root = lines_of(0);
    for (int r = 1; r < n; ++r) {
      const auto other = lines_of(r);
      for (std::size_t k = 0; k < std::max(root.size(), other.size()); ++k) {
        const std::string a = k < root.size() ? root[k] : "nothing (its model has " + std::to_string(root.size()) + " entries)";
        const std::string b = k < other.size() ? other[k] : "nothing (its model has " + std::to_string(other.size()) + " entries)";
        if (a != b)
          throw error("tessera::dist::data_parallel: rank " + std::to_string(r) + " holds a different model from rank 0: entry " +
                      std::to_string(k) + " is " + a + " on rank 0 but " + b + " on rank " + std::to_string(r) +
                      " (every rank must build the same model type)");
      }
    }
  }
  /// Rank 0's values of `n` elements at `p` (memory of the parameter's policy) on every rank.
  template <class U>
  void broadcast_elements(U* p, index_t n, bool on_device, const nn::parameter_ops<U>* ops) {
    if (n == 0) return;
    if (on_device == g_.on_device()) {
      g_.broadcast_raw(p, std::size_t(n), dtype_of<U>(), 0, true).wait();
    } else {  // a device tensor over a host group: through the host
      std::vector<U> h(static_cast<std::size_t>(n));
      ops->to_host(h.data(), p, n);
      g_.broadcast_raw(h.data(), std::size_t(n), dtype_of<U>(), 0, true).wait();
      ops->from_host(p, h.data(), n);
    }
  }
  void broadcast_from_root() {
    for (auto& p : params_) broadcast_elements(p.value(), p.size, p.on_device, p.ops);
    broadcast_buffers();
  }
  void broadcast_buffers() {
    model_.for_each_buffer([&](const std::string&, auto& t) {
      using P = typename std::remove_cvref_t<decltype(t)>::policy;
      if (t.size() == 0) return;
      if (P::on_device == g_.on_device()) {
        g_.broadcast(t, 0);
      } else {
        auto h = tessera::to<cpu>(t);
        g_.broadcast(h, 0);
        t = tessera::to<P>(h);
      }
    });
  }
  void make_buckets() {
    const double first_cap = opt_.first_bucket_cap_mb * 1048576.0, cap = opt_.bucket_cap_mb * 1048576.0;
    bucket cur;
    for (std::size_t k = params_.size(); k-- > 0;) {
      cur.offset.push_back(cur.elements);
      cur.params.push_back(k);
      cur.elements += std::size_t(params_[k].size);
      if (double(cur.elements * sizeof(T)) >= (buckets_.empty() ? first_cap : cap)) buckets_.push_back(std::move(cur)), cur = bucket{};
    }
    if (!cur.params.empty()) buckets_.push_back(std::move(cur));
    where_.resize(params_.size());
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      auto& bk = buckets_[b];
      bucket_info info;
      for (std::size_t j = 0; j < bk.params.size(); ++j) {
        where_[bk.params[j]] = {b, bk.offset[j]};
        info.names.push_back(params_[bk.params[j]].name);
      }
      info.bytes = bk.elements * sizeof(T);
      info_.push_back(std::move(info));
      if (g_.on_device()) {
        const auto* ops = params_[bk.params[0]].ops;
        bk.device = ops->allocate(index_t(bk.elements));
        device_free_.emplace_back(bk.device, [ops](T* p) { ops->deallocate(p); });
      } else {
        bk.host.resize(bk.elements);
      }
    }
  }

  // ---- during backward ----
  using clock = std::chrono::steady_clock;
  double since_start() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }

  void begin_walk() {
    in_walk_ = true;
    t0_ = clock::now();
    left_ = int(params_.size());
    next_ = 0;
    last_ = data_parallel_step{};
    last_.started.assign(buckets_.size(), -1);
    last_.leaves_left.assign(buckets_.size(), 0);
    last_.finished.assign(buckets_.size(), -1);
    for (auto& b : buckets_) {
      b.pending = int(b.params.size());
      b.launched = false;
    }
    ready_.assign(params_.size(), false);
    ad::queue_backward_callback([this] { end_walk(); });
  }
  /// Copies parameter i's gradient (zeros if it has none) into its bucket.
  void pack(std::size_t i) {
    auto& p = params_[i];
    auto& b = buckets_[where_[i].first];
    T* dst = b.data() + where_[i].second;
    const T* g = p.grad();
    if (!g) {
      g = p.ensure_grad();  // zero-filled: a parameter this walk did not reach
    }
    if (p.on_device == g_.on_device()) p.ops->copy(dst, g, p.size);
    else p.ops->to_host(dst, g, p.size);
  }
  void unpack(std::size_t i) {
    auto& p = params_[i];
    auto& b = buckets_[where_[i].first];
    const T* src = b.data() + where_[i].second;
    T* g = p.ensure_grad();
    if (p.on_device == g_.on_device()) p.ops->copy(g, src, p.size);
    else p.ops->from_host(g, src, p.size);
  }
  void on_ready(std::size_t i) {
    if (!sync_) return;
    if (!in_walk_) begin_walk();
    if (ready_[i]) return;
    ready_[i] = true;
    --left_;
    pack(i);
    --buckets_[where_[i].first].pending;
    if (opt_.overlap) launch_ready();
  }
  void launch(std::size_t b) {
    auto& bk = buckets_[b];
    bk.launched = true;
    last_.started[b] = since_start();
    last_.leaves_left[b] = left_;
    bk.handle = g_.all_reduce_raw(bk.data(), bk.elements, dtype_of<T>(), reduce_op::avg, false);
  }
  void launch_ready() {
    while (next_ < buckets_.size() && buckets_[next_].pending == 0) launch(next_++);
  }
  void end_walk() {
    in_walk_ = false;
    last_.walk_ended = since_start();
    // parameters the walk did not reach, then every bucket not started yet, in order
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (!ready_[i]) {
        ready_[i] = true;
        pack(i);
        --buckets_[where_[i].first].pending;
      }
    while (next_ < buckets_.size()) launch(next_++);
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      buckets_[b].handle.wait();
      last_.finished[b] = since_start();
      for (std::size_t i : buckets_[b].params) unpack(i);
    }
    if (opt_.broadcast_buffers) broadcast_buffers();
  }

  Model& model_;
  process_group& g_;
  data_parallel_options opt_;
  std::vector<nn::parameter_ref<T>> params_;
  std::vector<bucket> buckets_;
  std::vector<bucket_info> info_;
  std::vector<std::pair<std::size_t, std::size_t>> where_;  // parameter -> (bucket, offset)
  std::vector<std::unique_ptr<T, std::function<void(T*)>>> device_free_;
  std::vector<bool> ready_;
  bool sync_ = true;
  bool in_walk_ = false;
  int left_ = 0;
  std::size_t next_ = 0;
  clock::time_point t0_{};
  data_parallel_step last_;
};

template <class Model, class Group>
data_parallel(Model&, Group&, data_parallel_options = {}) -> data_parallel<Model>;

}  // namespace tessera::dist
