// The NCCL engine: a dist::process_group that moves cuda device memory (tensors of the cuda policy) between ranks,
// one GPU each. Made from a host group (MPI) that hands the NCCL id around, then used like any process group:
//
//   tessera::dist::context ctx(argc, argv);                          // dist/mpi.hpp (host memory)
//   auto g = tessera::dist::nccl_group::from(ctx.group(), local_gpu); // rank 0's ncclUniqueId broadcast over MPI
//   g->all_reduce(grad);                                             // grad: a Tensor<float, ..., cuda>
//   dist::work w = g->all_gather_async(out, in);  ...  w.wait();
//   g->group_start(); g->send_async(a, next); g->recv_async(b, prev); g->group_end();   // a ring exchange
//
// How it runs. The group owns an NCCL communicator and its own non-blocking CUDA stream. Each operation makes that
// stream wait for an event recorded on tessera's stream (kernels/cuda/memory.hpp: every tessera kernel and copy
// runs there), so the operation reads what the kernels queued before it wrote; it then queues the NCCL call
// (ncclAllReduce with ncclSum/ncclAvg/ncclMax/ncclMin, ncclBroadcast in place, ncclAllGather, ncclReduceScatter,
// ncclSend/ncclRecv; barrier: a one-element all_reduce) and records an event after it. wait() polls that event
// (yielding the core), checks ncclCommGetAsyncError while it polls (an NCCL error is a dist::error with
// ncclGetErrorString and ncclGetLastError), and after `timeout` aborts the communicator (ncclCommAbort) and throws
// dist::timeout_error naming the operation: the group is then broken and every later call throws at once. Once
// complete, tessera's stream is made to wait for the event, so kernels queued after wait() see the result. The
// compute between an _async call and its wait() overlaps the transfer; the operands may not be touched until then.
// Operations complete in the order they were started (one stream).
//
// Types: float, double, bfloat16 (ncclBfloat16: each step of NCCL's reduction rounds to bfloat16, where the MPI engine
// sums in float), int8, uint8, int32, int64, bool (as uint8: sum and max are or, min is and; avg refuses it). avg, on
// floating types only, is ncclAvg. Point to point: NCCL has no tags (a tag >= 0 is accepted and ignored); the messages
// between two ranks match in the order they were sent. A send and a receive that depend on each other (a ring, or a
// rank sending to itself) must be between group_start() and group_end(), which queues them as one NCCL group; their
// works complete at group_end(), and blocking operations are refused inside a group. Host memory is refused with a
// dist::error (the typed operations check the tensor's policy, the raw ones the pointer), except the scalar of
// all_reduce_value, which goes through a small device buffer.
//
// Construction (ncclCommInitRank) blocks until every rank joined, without the group's timeout (NCCL's own
// bootstrap timeout applies). The destructor waits up to `timeout` for queued work, then ncclCommDestroy (or
// ncclCommAbort if the work did not finish or the group is broken); works still held keep the communicator alive.
//
// Verified: compiled by nvcc 13.0 against NCCL 2.28; test_dist_nccl checks every operation on a one-rank
// communicator against host references. NOT verified: no GPU has run it (the test skipped, exit 77), and nothing
// has run with more than one rank. Compiled only by nvcc; needs NCCL (CMake target tessera_nccl).
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tessera/dist/process_group.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera::dist {

namespace nccl_detail {
inline void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw error("tessera::dist (nccl): " + what + ": " + cudaGetErrorString(e));
}
inline std::string nccl_message(ncclResult_t r, ncclComm_t comm) {
  std::string m = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last && *last) m += std::string(" (") + last + ")";
  return m;
}
inline void check_nccl(ncclResult_t r, const std::string& what, ncclComm_t comm = nullptr) {
  if (r != ncclSuccess) throw error("tessera::dist (nccl): " + what + " failed: " + nccl_message(r, comm));
}
inline ncclDataType_t type_of(dtype t) {  // in dtype's order: f32, f64, bf16, i8, u8, i32, i64, boolean (as uint8)
  static_assert(int(dtype::boolean) == 7 && int(reduce_op::min) == 3,
                "tessera::dist: nccl.hpp's tables of types and operations follow dtype's and reduce_op's order");
  constexpr ncclDataType_t types[] = {ncclFloat32, ncclFloat64, ncclBfloat16, ncclInt8,
                                      ncclUint8,   ncclInt32,   ncclInt64,    ncclUint8};
  return types[int(t)];
}
inline ncclRedOp_t op_of(dtype t, reduce_op op, const char* what) {
  if (op == reduce_op::avg && !is_floating(t))
    throw error(std::string("tessera::dist: ") + what + ": avg needs a floating element type, got " + name_of(t));
  if (t == dtype::boolean) return op == reduce_op::min ? ncclMin : ncclMax;  // and / or on 0 and 1
  constexpr ncclRedOp_t ops[] = {ncclSum, ncclAvg, ncclMax, ncclMin};  // reduce_op's order
  return ops[int(op)];
}
/// The calling thread's current device set to `d` for a scope.
struct device_scope {
  int prev = -1, dev;
  explicit device_scope(int d) : dev(d) {
    check_cuda(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != dev) check_cuda(cudaSetDevice(dev), "cudaSetDevice(" + std::to_string(dev) + ")");
  }
  ~device_scope() {
    if (prev >= 0 && prev != dev) cudaSetDevice(prev);
  }
  device_scope(const device_scope&) = delete;
  device_scope& operator=(const device_scope&) = delete;
};

/// The communicator, its stream and whether it was aborted; shared by the group and the works it returned.
struct comm_state {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;  ///< recorded on tessera's stream before each operation
  void* scratch = nullptr;      ///< 64 bytes of device memory: all_reduce_value's scalar, the barrier's element
  int device = 0, rank = 0;
  std::chrono::milliseconds timeout{0};
  std::atomic<bool> aborted{false};
  std::mutex m;
  std::string why;  ///< why it was aborted

  void abort(const std::string& reason) {
    std::lock_guard lk(m);
    if (aborted.exchange(true)) return;
    why = reason;
    if (comm) ncclCommAbort(comm);
  }
  void throw_if_broken(const std::string& what) {
    if (!aborted) return;
    std::lock_guard lk(m);
    throw error("tessera::dist (nccl): " + what + " on rank " + std::to_string(rank) +
                ": the communicator was aborted earlier (" + why + ")");
  }
  ~comm_state() {
    if (!comm && !stream && !ready && !scratch) return;
    int prev = -1;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    if (comm && !aborted) {
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      while (cudaStreamQuery(stream) == cudaErrorNotReady && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      if (cudaStreamQuery(stream) == cudaSuccess) ncclCommDestroy(comm);
      else ncclCommAbort(comm);
    }
    if (stream) cudaStreamDestroy(stream);
    if (ready) cudaEventDestroy(ready);
    if (scratch) cudaFree(scratch);
    if (prev >= 0) cudaSetDevice(prev);
  }
};

/// One queued operation: the event recorded after it on the group's stream.
struct op_state final : work_state {
  std::shared_ptr<comm_state> c;
  cudaEvent_t done_event = nullptr;
  std::string what;
  bool recorded = false;  ///< false while it waits for group_end()

  op_state(std::shared_ptr<comm_state> cs, std::string w) : c(std::move(cs)), what(std::move(w)) {
    check_cuda(cudaEventCreateWithFlags(&done_event, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~op_state() override {
    if (done_event) cudaEventDestroy(done_event);
  }
  bool done() const override { return recorded && cudaEventQuery(done_event) != cudaErrorNotReady; }
  void wait(std::chrono::milliseconds timeout) override {
    if (!recorded)
      throw error("tessera::dist (nccl): wait on " + what + " before group_end() queued it: call group_end() first");
    device_scope on(c->device);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const std::string where = what + " on rank " + std::to_string(c->rank);
    for (long polls = 0;; ++polls) {
      c->throw_if_broken(what);
      const cudaError_t e = cudaEventQuery(done_event);
      if (e == cudaSuccess) break;
      ncclResult_t async = ncclSuccess;
      std::string msg;
      if (e != cudaErrorNotReady) msg = where + ": " + cudaGetErrorString(e);
      else if (ncclCommGetAsyncError(c->comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
        msg = where + ": " + nccl_message(async, c->comm);
      if (!msg.empty()) {
        c->abort(msg);
        throw error("tessera::dist (nccl): " + msg);
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        msg = where + " did not complete within " + std::to_string(timeout.count()) + " ms";
        c->abort(msg);
        throw timeout_error("tessera::dist (nccl): " + msg + "; the communicator is aborted");
      }
      if (polls < 2000) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    check_cuda(cudaStreamWaitEvent(cuda_detail::stream(), done_event, 0), "cudaStreamWaitEvent");
  }
};
}  // namespace nccl_detail

class nccl_group final : public process_group {
 public:
  /// Joins the communicator `id` as `rank` of `size` on GPU `device` (ncclCommInitRank; blocks until all joined).
  nccl_group(int rank, int size, ncclUniqueId id, int device, std::chrono::milliseconds timeout)
      : c_(std::make_shared<nccl_detail::comm_state>()), size_(size) {
    using namespace nccl_detail;
    if (size < 1 || rank < 0 || rank >= size)
      throw error("tessera::dist (nccl): rank " + std::to_string(rank) + " is not in [0, " + std::to_string(size) +
                  ")");
    if (timeout.count() <= 0) throw error("tessera::dist (nccl): the timeout must be positive");
    int devices = 0;
    check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    if (device < 0 || device >= devices)
      throw error("tessera::dist (nccl): device " + std::to_string(device) + " is not in [0, " +
                  std::to_string(devices) + ")");
    c_->device = device;
    c_->rank = rank;
    c_->timeout = timeout;
    device_scope on(device);
    check_cuda(cudaStreamCreateWithFlags(&c_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check_cuda(cudaEventCreateWithFlags(&c_->ready, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaMalloc(&c_->scratch, scratch_bytes), "cudaMalloc");
    check_cuda(cudaMemset(c_->scratch, 0, scratch_bytes), "cudaMemset");
    ncclComm_t comm = nullptr;  // (kept only once it is made: a failed init leaves nothing to destroy)
    check_nccl(ncclCommInitRank(&comm, size, id, rank),
               "ncclCommInitRank(rank " + std::to_string(rank) + " of " + std::to_string(size) + ")");
    c_->comm = comm;
  }
  /// Every rank of the host group `host` (e.g. MPI's) calls it: rank 0 makes the id (ncclGetUniqueId) and
  /// broadcasts its bytes through `host`; the NCCL group has the same ranks and timeout, on GPU `device`.
  static std::unique_ptr<nccl_group> from(process_group& host, int device) {
    if (host.on_device())
      throw error(std::string("tessera::dist (nccl): from() needs a host group to share the id, got the ") +
                  host.engine() + " group");
    unsigned char buf[1 + sizeof(ncclUniqueId)] = {};  // buf[0]: 1 when rank 0 made the id
    if (host.rank() == 0) {
      ncclUniqueId id{};
      if (ncclGetUniqueId(&id) == ncclSuccess) {
        buf[0] = 1;
        std::memcpy(buf + 1, &id, sizeof id);
      }
    }
    host.broadcast_raw(buf, sizeof buf, dtype::u8, 0, true).wait();
    if (buf[0] != 1) throw error("tessera::dist (nccl): ncclGetUniqueId failed on rank 0");
    ncclUniqueId id{};
    std::memcpy(&id, buf + 1, sizeof id);
    return std::make_unique<nccl_group>(host.rank(), host.size(), id, device, host.timeout());
  }
  ~nccl_group() override {
    if (in_group_) ncclGroupEnd();
  }
  nccl_group(const nccl_group&) = delete;
  nccl_group& operator=(const nccl_group&) = delete;

  int rank() const override { return c_->rank; }
  int size() const override { return size_; }
  bool on_device() const override { return true; }
  const char* engine() const override { return "nccl"; }
  std::chrono::milliseconds timeout() const override { return c_->timeout; }
  int device() const { return c_->device; }
  ncclComm_t comm() const { return c_->comm; }
  cudaStream_t stream() const { return c_->stream; }

  /// The operations until group_end() form one NCCL group (ncclGroupStart / ncclGroupEnd).
  void group_start() {
    if (in_group_) throw error("tessera::dist (nccl): group_start() inside a group");
    nccl_detail::check_nccl(ncclGroupStart(), "ncclGroupStart");
    in_group_ = true;
  }
  void group_end() {
    if (!in_group_) throw error("tessera::dist (nccl): group_end() without group_start()");
    in_group_ = false;
    nccl_detail::device_scope on(c_->device);
    auto ops = std::move(pending_);
    pending_.clear();
    if (const ncclResult_t r = ncclGroupEnd(); r != ncclSuccess) {  // nothing was queued: their works must fail
      const std::string msg =
          "ncclGroupEnd on rank " + std::to_string(c_->rank) + ": " + nccl_detail::nccl_message(r, c_->comm);
      c_->abort(msg);
      throw error("tessera::dist (nccl): " + msg);
    }
    for (auto& op : ops) {
      nccl_detail::check_cuda(cudaEventRecord(op->done_event, c_->stream), "cudaEventRecord");
      op->recorded = true;
    }
  }

  // Each queues one NCCL call: fn(comm, stream, NCCL type) through launch().
  work all_reduce_raw(void* buf, std::size_t n, dtype t, reduce_op op, bool blocking) override {
    using namespace nccl_detail;
    const ncclRedOp_t rop = op_of(t, op, "all_reduce");
    const std::string what = std::string("all_reduce ") + name_of(op);
    const std::size_t bytes = n * size_of(t);
    if (n && blocking && !in_group_ && bytes <= scratch_bytes && !is_device(buf)) {  // all_reduce_value's scalar
      device_scope on(c_->device);
      check_cuda(cudaMemcpyAsync(c_->scratch, buf, bytes, cudaMemcpyHostToDevice, c_->stream), "copy in");
      launch(what, n, t, true, [&](auto cm, auto s, auto ty) {
        return ncclAllReduce(c_->scratch, c_->scratch, n, ty, rop, cm, s);
      });
      check_cuda(cudaMemcpyAsync(buf, c_->scratch, bytes, cudaMemcpyDeviceToHost, c_->stream), "copy out");
      check_cuda(cudaStreamSynchronize(c_->stream), "cudaStreamSynchronize");
      return {};
    }
    require_device(buf, n, "all_reduce");
    return launch(what, n, t, blocking,
                  [&](auto cm, auto s, auto ty) { return ncclAllReduce(buf, buf, n, ty, rop, cm, s); });
  }
  work broadcast_raw(void* buf, std::size_t n, dtype t, int root, bool blocking) override {
    require_device(buf, n, "broadcast");
    return launch("broadcast from " + std::to_string(root), n, t, blocking,
                  [&](auto cm, auto s, auto ty) { return ncclBroadcast(buf, buf, n, ty, root, cm, s); });
  }
  work all_gather_raw(const void* in, void* out, std::size_t n, dtype t, bool blocking) override {
    require_device(in, n, "all_gather");
    require_device(out, n, "all_gather");
    return launch("all_gather", n, t, blocking,
                  [&](auto cm, auto s, auto ty) { return ncclAllGather(in, out, n, ty, cm, s); });
  }
  work reduce_scatter_raw(const void* in, void* out, std::size_t n, dtype t, reduce_op op, bool blocking) override {
    const ncclRedOp_t rop = nccl_detail::op_of(t, op, "reduce_scatter");
    require_device(in, n, "reduce_scatter");
    require_device(out, n, "reduce_scatter");
    return launch(std::string("reduce_scatter ") + name_of(op), n, t, blocking,
                  [&](auto cm, auto s, auto ty) { return ncclReduceScatter(in, out, n, ty, rop, cm, s); });
  }
  work send_raw(const void* buf, std::size_t n, dtype t, int dst, int, bool blocking) override {
    require_device(buf, n, "send");
    return launch("send to " + std::to_string(dst), n, t, blocking,
                  [&](auto cm, auto s, auto ty) { return ncclSend(buf, n, ty, dst, cm, s); });
  }
  work recv_raw(void* buf, std::size_t n, dtype t, int src, int, bool blocking) override {
    require_device(buf, n, "recv");
    return launch("recv from " + std::to_string(src), n, t, blocking,
                  [&](auto cm, auto s, auto ty) { return ncclRecv(buf, n, ty, src, cm, s); });
  }
  work barrier_raw(bool blocking) override {
    void* p = c_->scratch;
    return launch("barrier", 1, dtype::f32, blocking,
                  [&](auto cm, auto s, auto ty) { return ncclAllReduce(p, p, 1, ty, ncclSum, cm, s); });
  }

 private:
  static constexpr std::size_t scratch_bytes = 64;

  bool is_device(const void* p) const {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      cudaGetLastError();  // (older runtimes: an unregistered host pointer is an error; clear it)
      return false;
    }
    return (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) && a.device == c_->device;
  }
  void require_device(const void* p, std::size_t n, const char* what) const {
    if (n && !is_device(p))
      throw error(std::string("tessera::dist (nccl): ") + what + ": the operand is not device memory of GPU " +
                  std::to_string(c_->device) + "; the nccl group moves cuda device memory");
  }
  /// Queues call(comm, stream, NCCL type) after tessera's queued work; its work completes with the event after it.
  template <class F>
  work launch(const std::string& op, std::size_t n, dtype t, bool blocking, F&& call) {
    using namespace nccl_detail;
    const std::string what = op + " of " + std::to_string(n) + " " + name_of(t);
    c_->throw_if_broken(what);
    if (blocking && in_group_)
      throw error("tessera::dist (nccl): " + what +
                  ": a blocking operation inside group_start()/group_end() (use the _async form)");
    if (n == 0) return {};
    device_scope on(c_->device);
    check_cuda(cudaEventRecord(c_->ready, cuda_detail::stream()), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(c_->stream, c_->ready, 0), "cudaStreamWaitEvent");
    auto st = std::make_shared<op_state>(c_, what);
    check_nccl(call(c_->comm, c_->stream, type_of(t)), what, c_->comm);
    if (in_group_) {
      pending_.push_back(st);
      return work(st, c_->timeout);
    }
    check_cuda(cudaEventRecord(st->done_event, c_->stream), "cudaEventRecord");
    st->recorded = true;
    if (!blocking) return work(st, c_->timeout);
    st->wait(c_->timeout);
    return {};
  }

  std::shared_ptr<nccl_detail::comm_state> c_;
  int size_;
  bool in_group_ = false;
  std::vector<std::shared_ptr<nccl_detail::op_state>> pending_;
};

}  // namespace tessera::dist
#endif  // __CUDACC__
