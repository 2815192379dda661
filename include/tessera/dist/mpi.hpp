// The MPI engine (host memory) and dist::context, what a distributed program starts with:
//
//   int main(int argc, char** argv) {
//     tessera::dist::context ctx(argc, argv);        // MPI_Init_thread; rank and world size from mpirun
//     if (ctx.is_root()) std::printf("%d ranks\n", ctx.world_size());
//     ctx.group().all_reduce(t);                      // dist::process_group over MPI_COMM_WORLD (a duplicate of it)
//   }                                                 // ~context: pending work drained, MPI_Finalize
//
// How it runs. Every operation of a group goes to one communication thread per group, which calls MPI's blocking
// collectives (MPI_Allreduce, MPI_Bcast, ...; OpenMPI's blocking algorithms move data more than twice as fast as its
// non-blocking ones, measured in docs/distributed.md) in the order the operations were started, and posts sends
// and receives as MPI_Isend / MPI_Irecv, which progress during the collectives and complete on their own. The
// blocking forms wait for their operation like the asynchronous ones: the caller sleeps while the thread works, so
// a rank's compute thread and its communication overlap (data_parallel's buckets during backward) and every wait
// has the group's timeout. A wait that times out throws dist::timeout_error naming the operation, its size and the
// rank; the group is then broken (later operations throw at once) and ~context ends the job with MPI_Abort, since
// MPI cannot be finalized with a call still inside it. A rank that dies is reported by mpirun, which ends the
// others.
//
// Options (context_options): timeout (default 10 minutes), yield_when_idle (default on: sets OpenMPI's
// mpi_yield_when_idle unless the environment sets it, so that a rank's communication thread spinning in MPI yields
// the core to compute threads; what matters where ranks share cores, as on a 2-core machine).
#pragma once
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tessera/data/loader.hpp"
#include "tessera/dist/process_group.hpp"

namespace tessera::dist {

struct context_options {
  /// How long any wait on an operation waits before it throws dist::timeout_error.
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
  /// Set OMPI_MCA_mpi_yield_when_idle=1 before MPI_Init (unless the environment sets it).
  bool yield_when_idle = true;
};

namespace detail {
inline void check_mpi(int rc, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw error("tessera::dist (mpi): " + what + " failed: " + std::string(msg, std::size_t(len)));
}

// bfloat16 reductions: MPI has no bfloat16, so its elements travel as 16-bit words and reduce in float.
template <int Kind>
void bf16_reduce(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const bfloat16*>(in);
  auto* b = static_cast<bfloat16*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = float(a[i]), y = float(b[i]);
    if constexpr (Kind == 0) b[i] = bfloat16(x + y);
    else if constexpr (Kind == 1) b[i] = (x > y || x != x) ? a[i] : b[i];  // NaN propagates, as torch.max
    else b[i] = (x < y || x != x) ? a[i] : b[i];
  }
}

inline MPI_Datatype mpi_type(dtype t) {
  switch (t) {
    case dtype::f32: return MPI_FLOAT;
    case dtype::f64: return MPI_DOUBLE;
    case dtype::bf16: return MPI_UINT16_T;
    case dtype::i8: return MPI_INT8_T;
    case dtype::u8: return MPI_UINT8_T;
    case dtype::i32: return MPI_INT32_T;
    case dtype::i64: return MPI_INT64_T;
    case dtype::boolean: return MPI_C_BOOL;
  }
  return MPI_DATATYPE_NULL;
}

/// An operation's completion, signalled by the communication thread.
struct mpi_work final : work_state {
  explicit mpi_work(std::string what) : what(std::move(what)) {}
  void wait(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> l(m);
    if (!cv.wait_for(l, timeout, [&] { return finished; })) {
      if (on_timeout) on_timeout();
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", double(timeout.count()) / 1000);
      throw timeout_error("tessera::dist (mpi): " + what + " did not complete within " + secs +
                          " s: a peer rank died, stopped, or called a different collective; the group is unusable now");
    }
    if (err) std::rethrow_exception(err);
  }
  bool done() const override {
    std::lock_guard<std::mutex> l(m);
    return finished;
  }
  void finish(std::exception_ptr e = nullptr) {
    {
      std::lock_guard<std::mutex> l(m);
      err = std::move(e);
      finished = true;
    }
    cv.notify_all();
  }
  std::string what;
  std::function<void()> on_timeout;
  mutable std::mutex m;
  std::condition_variable cv;
  bool finished = false;
  std::exception_ptr err;
};
}  // namespace detail

/// A process group over an MPI communicator (a duplicate of MPI_COMM_WORLD for the context's group).
class mpi_group final : public process_group {
 public:
  mpi_group(MPI_Comm parent, std::chrono::milliseconds timeout) : timeout_(timeout) {
    detail::check_mpi(MPI_Comm_dup(parent, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Op_create(&detail::bf16_reduce<0>, 1, &bf16_sum_);
    MPI_Op_create(&detail::bf16_reduce<1>, 1, &bf16_max_);
    MPI_Op_create(&detail::bf16_reduce<2>, 1, &bf16_min_);
    thread_ = std::thread([this] { run(); });
  }
  mpi_group(const mpi_group&) = delete;
  mpi_group& operator=(const mpi_group&) = delete;
  ~mpi_group() override {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
    }
    cv_.notify_all();
    if (broken_) thread_.detach();  // inside MPI for good: the context aborts the job
    else thread_.join();
    if (!broken_) {
      MPI_Op_free(&bf16_sum_);
      MPI_Op_free(&bf16_max_);
      MPI_Op_free(&bf16_min_);
      MPI_Comm_free(&comm_);
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool on_device() const override { return false; }
  const char* engine() const override { return "mpi"; }
  std::chrono::milliseconds timeout() const override { return timeout_; }
  /// Has an operation timed out (the communication thread may be inside MPI for good)?
  bool broken() const { return broken_; }
  MPI_Comm comm() const { return comm_; }

  work all_reduce_raw(void* buf, std::size_t n, dtype t, reduce_op op, bool blocking) override {
    if (op == reduce_op::avg && !is_floating(t))
      throw error(std::string("tessera::dist: all_reduce: avg needs a floating element type, got ") + name_of(t));
    const MPI_Op mop = mpi_op(t, op);
    const double scale = 1.0 / size_;
    return submit(describe("all_reduce", op, n, t), blocking, [=, this] {
      detail::check_mpi(MPI_Allreduce(MPI_IN_PLACE, buf, count(n), detail::mpi_type(t), mop, comm_), "MPI_Allreduce");
      if (op == reduce_op::avg) scale_in_place(buf, n, t, scale);
    });
  }
  work broadcast_raw(void* buf, std::size_t n, dtype t, int root, bool blocking) override {
    return submit(describe("broadcast", n, t) + " from rank " + std::to_string(root), blocking, [=, this] {
      detail::check_mpi(MPI_Bcast(buf, count(n), detail::mpi_type(t), root, comm_), "MPI_Bcast");
    });
  }
  work all_gather_raw(const void* in, void* out, std::size_t n, dtype t, bool blocking) override {
    return submit(describe("all_gather", n, t), blocking, [=, this] {
      detail::check_mpi(MPI_Allgather(in, count(n), detail::mpi_type(t), out, count(n), detail::mpi_type(t), comm_),
                        "MPI_Allgather");
    });
  }
  work reduce_scatter_raw(const void* in, void* out, std::size_t n, dtype t, reduce_op op, bool blocking) override {
    if (op == reduce_op::avg && !is_floating(t))
      throw error(std::string("tessera::dist: reduce_scatter: avg needs a floating element type, got ") + name_of(t));
    const MPI_Op mop = mpi_op(t, op);
    const double scale = 1.0 / size_;
    return submit(describe("reduce_scatter", op, n, t), blocking, [=, this] {
      detail::check_mpi(MPI_Reduce_scatter_block(in, out, count(n), detail::mpi_type(t), mop, comm_),
                        "MPI_Reduce_scatter_block");
      if (op == reduce_op::avg) scale_in_place(out, n, t, scale);
    });
  }
  work send_raw(const void* buf, std::size_t n, dtype t, int dst, int tag, bool blocking) override {
    return submit_p2p(describe("send", n, t) + " to rank " + std::to_string(dst) + " (tag " + std::to_string(tag) + ")",
                      blocking, [=, this](MPI_Request* r) {
                        detail::check_mpi(MPI_Isend(buf, count(n), detail::mpi_type(t), dst, tag, comm_, r), "MPI_Isend");
                      });
  }
  work recv_raw(void* buf, std::size_t n, dtype t, int src, int tag, bool blocking) override {
    return submit_p2p(describe("recv", n, t) + " from rank " + std::to_string(src) + " (tag " + std::to_string(tag) + ")",
                      blocking, [=, this](MPI_Request* r) {
                        detail::check_mpi(MPI_Irecv(buf, count(n), detail::mpi_type(t), src, tag, comm_, r), "MPI_Irecv");
                      });
  }
  work barrier_raw(bool blocking) override {
    return submit("barrier on rank " + std::to_string(rank_), blocking,
                  [this] { detail::check_mpi(MPI_Barrier(comm_), "MPI_Barrier"); });
  }

 private:
  struct task {
    std::shared_ptr<detail::mpi_work> w;
    std::function<void()> collective;                  // blocking MPI call, or empty
    std::function<void(MPI_Request*)> post;            // posts a request (point to point)
  };

  std::string describe(const char* what, std::size_t n, dtype t) const {
    return std::string(what) + " of " + std::to_string(n) + " " + name_of(t) + " on rank " + std::to_string(rank_) +
           " of " + std::to_string(size_);
  }
  std::string describe(const char* what, reduce_op op, std::size_t n, dtype t) const {
    return std::string(what) + " (" + name_of(op) + ") of " + std::to_string(n) + " " + name_of(t) + " on rank " +
           std::to_string(rank_) + " of " + std::to_string(size_);
  }
  static int count(std::size_t n) {
    if (n > std::size_t(std::numeric_limits<int>::max()))
      throw error("tessera::dist (mpi): " + std::to_string(n) + " elements in one call exceed MPI's int count");
    return int(n);
  }
  MPI_Op mpi_op(dtype t, reduce_op op) const {
    if (t == dtype::boolean) return op == reduce_op::min ? MPI_LAND : MPI_LOR;
    if (t == dtype::bf16) return op == reduce_op::max ? bf16_max_ : op == reduce_op::min ? bf16_min_ : bf16_sum_;
    return op == reduce_op::max ? MPI_MAX : op == reduce_op::min ? MPI_MIN : MPI_SUM;
  }
  static void scale_in_place(void* buf, std::size_t n, dtype t, double s) {
    if (t == dtype::f32) {
      auto* p = static_cast<float*>(buf);
      for (std::size_t i = 0; i < n; ++i) p[i] *= float(s);
    } else if (t == dtype::f64) {
      auto* p = static_cast<double*>(buf);
      for (std::size_t i = 0; i < n; ++i) p[i] *= s;
    } else if (t == dtype::bf16) {
      auto* p = static_cast<bfloat16*>(buf);
      for (std::size_t i = 0; i < n; ++i) p[i] = bfloat16(float(p[i]) * float(s));
    }
  }

  work enqueue(task tk, bool blocking) {
    if (broken_)
      throw error("tessera::dist (mpi): " + tk.w->what + ": the group is unusable after an earlier operation timed out");
    tk.w->on_timeout = [this] { broken_ = true; };
    work h(tk.w, timeout_);
    {
      std::lock_guard<std::mutex> l(m_);
      queue_.push_back(std::move(tk));
    }
    cv_.notify_one();
    if (blocking) h.wait();
    return h;
  }
  work submit(std::string what, bool blocking, std::function<void()> f) {
    return enqueue(task{std::make_shared<detail::mpi_work>(std::move(what)), std::move(f), {}}, blocking);
  }
  work submit_p2p(std::string what, bool blocking, std::function<void(MPI_Request*)> f) {
    return enqueue(task{std::make_shared<detail::mpi_work>(std::move(what)), {}, std::move(f)}, blocking);
  }

  /// The communication thread: collectives one by one, point-to-point requests posted and tested in between.
  void run() {
    std::vector<MPI_Request> reqs;
    std::vector<std::shared_ptr<detail::mpi_work>> pending;
    for (;;) {
      task tk;
      {
        std::unique_lock<std::mutex> l(m_);
        if (reqs.empty()) cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty() && reqs.empty() && stop_) return;
        if (!queue_.empty()) {
          tk = std::move(queue_.front());
          queue_.pop_front();
        }
      }
      if (tk.w) {
        try {
          if (tk.collective) {
            tk.collective();
            tk.w->finish();
          } else {
            MPI_Request r = MPI_REQUEST_NULL;
            tk.post(&r);
            reqs.push_back(r);
            pending.push_back(std::move(tk.w));
          }
        } catch (...) {
          tk.w->finish(std::current_exception());
        }
      }
      // test the posted requests; with nothing else queued, back off briefly so as not to spin a core
      for (std::size_t i = 0; i < reqs.size();) {
        int flag = 0;
        MPI_Status st;
        const int rc = MPI_Test(&reqs[i], &flag, &st);
        if (rc != MPI_SUCCESS || flag) {
          std::exception_ptr e;
          try {
            detail::check_mpi(rc, pending[i]->what);
          } catch (...) {
            e = std::current_exception();
          }
          pending[i]->finish(e);
          reqs.erase(reqs.begin() + std::ptrdiff_t(i));
          pending.erase(pending.begin() + std::ptrdiff_t(i));
        } else {
          ++i;
        }
      }
      if (!reqs.empty()) {
        std::unique_lock<std::mutex> l(m_);
        if (queue_.empty()) cv_.wait_for(l, std::chrono::microseconds(20));
      }
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::chrono::milliseconds timeout_;
  MPI_Op bf16_sum_ = MPI_OP_NULL, bf16_max_ = MPI_OP_NULL, bf16_min_ = MPI_OP_NULL;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<task> queue_;
  bool stop_ = false;
  std::atomic<bool> broken_{false};
  std::thread thread_;
};

/// The distributed run of one process: MPI initialised (if it is not already), this rank's place in the world,
/// and its host process group.
class context {
 public:
  context(int& argc, char**& argv, context_options opt = {}) { init(&argc, &argv, opt); }
  explicit context(context_options opt = {}) { init(nullptr, nullptr, opt); }
  context(const context&) = delete;
  context& operator=(const context&) = delete;
  ~context() {
    const bool broken = group_ && group_->broken();
    group_.reset();
    if (broken) {
      std::fprintf(stderr, "tessera::dist: rank %d: an operation timed out; ending the job (MPI_Abort)\n", rank_);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && !finalized) MPI_Finalize();
  }

  int rank() const { return rank_; }
  int world_size() const { return size_; }
  /// Is this rank 0 (the one that prints and writes checkpoints)?
  bool is_root() const { return rank_ == 0; }
  /// This rank's share of a data set, for DataLoader's options: {.shard = ctx.shard()}.
  tessera::data_shard shard() const { return {rank_, size_}; }
  /// The group of every rank, over host memory.
  mpi_group& group() { return *group_; }
  /// MPI's thread support level as granted (MPI_THREAD_SERIALIZED or more is needed).
  int thread_level() const { return thread_level_; }
  /// Ends every rank of the job now (MPI_Abort), after printing `why` on this one.
  [[noreturn]] void abort(const std::string& why, int code = 1) {
    std::fprintf(stderr, "tessera::dist: rank %d: %s\n", rank_, why.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::abort();
  }

 private:
  void init(int* argc, char*** argv, const context_options& opt) {
    if (opt.yield_when_idle) setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      detail::check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_), "MPI_Init_thread");
      owns_mpi_ = true;
    } else {
      MPI_Query_thread(&thread_level_);
    }
    if (thread_level_ < MPI_THREAD_SERIALIZED)
      throw error("tessera::dist: MPI granted thread level " + std::to_string(thread_level_) +
                  "; tessera's communication thread needs MPI_THREAD_SERIALIZED or more (initialise MPI with "
                  "MPI_Init_thread, or let dist::context do it)");
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    group_ = std::make_unique<mpi_group>(MPI_COMM_WORLD, opt.timeout);
  }

  int rank_ = 0, size_ = 1, thread_level_ = 0;
  bool owns_mpi_ = false;
  std::unique_ptr<mpi_group> group_;
};

}  // namespace tessera::dist
