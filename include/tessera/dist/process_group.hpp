// process_group: the one interface of tessera's collective engines. A process group is a set of `size()` ranks
// that run the same sequence of collectives; dist/mpi.hpp implements it over MPI for host memory, dist/nccl.hpp
// over NCCL for cuda device memory. Every operation has two forms:
//
//   g.all_reduce(t);                          // blocking: t holds the sum over the ranks when it returns
//   dist::work w = g.all_reduce_async(t);     // started (or queued) now; t may not be touched until w.wait()
//   ... compute ...
//   w.wait();                                 // throws dist::error (or dist::timeout_error) if it failed
//
//   all_reduce(t, op)          sum / avg / max / min of t over the ranks, in place (avg: floating types only)
//   broadcast(t, root)         root's t on every rank
//   all_gather(out, in)        out = the ranks' `in` one after the other (out holds size() * in.size() elements)
//   reduce_scatter(out, in)    out = block rank() of the reduction of `in` (in holds size() * out.size() elements)
//   send(t, dst, tag) / recv(t, src, tag)   point to point (tag >= 0)
//   barrier()
//
// Operands are tensors or views of every element type (float, double, bfloat16, int8, uint8, int32, int64, bool;
// bfloat16 reduces in float, bool reduces as or (sum, max) / and (min)) whose elements are contiguous: a strided
// view is refused with a dist::error naming its shape. A group takes host memory or device memory, as on_device()
// says; the other kind is refused. Every rank must call the same collectives in the same order (as in MPI): the
// engines match them by order, not by name. Asynchronous operations of one group complete in the order they were
// started.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"

namespace tessera::dist {

/// A collective or point-to-point call failed (a peer's error, mismatched sizes, an engine's message).
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// An operation did not complete within the group's timeout (a peer died or stopped calling collectives).
struct timeout_error : error {
  using error::error;
};

enum class reduce_op { sum, avg, max, min };

inline const char* name_of(reduce_op op) {
  switch (op) {
    case reduce_op::sum: return "sum";
    case reduce_op::avg: return "avg";
    case reduce_op::max: return "max";
    case reduce_op::min: return "min";
  }
  return "?";
}

/// The element types the engines move.
enum class dtype { f32, f64, bf16, i8, u8, i32, i64, boolean };

template <class T>
constexpr dtype dtype_of() {
  static_assert(is_element_v<T>, "tessera::dist: not an element type tessera's tensors hold");
  if constexpr (std::is_same_v<T, float>) return dtype::f32;
  else if constexpr (std::is_same_v<T, double>) return dtype::f64;
  else if constexpr (std::is_same_v<T, bfloat16>) return dtype::bf16;
  else if constexpr (std::is_same_v<T, std::int8_t>) return dtype::i8;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return dtype::u8;
  else if constexpr (std::is_same_v<T, std::int32_t>) return dtype::i32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return dtype::i64;
  else return dtype::boolean;
}

inline std::size_t size_of(dtype t) {
  switch (t) {
    case dtype::f32: case dtype::i32: return 4;
    case dtype::f64: case dtype::i64: return 8;
    case dtype::bf16: return 2;
    case dtype::i8: case dtype::u8: case dtype::boolean: return 1;
  }
  return 0;
}
inline const char* name_of(dtype t) {
  switch (t) {
    case dtype::f32: return "float";
    case dtype::f64: return "double";
    case dtype::bf16: return "bfloat16";
    case dtype::i8: return "int8";
    case dtype::u8: return "uint8";
    case dtype::i32: return "int32";
    case dtype::i64: return "int64";
    case dtype::boolean: return "bool";
  }
  return "?";
}
inline bool is_floating(dtype t) { return t == dtype::f32 || t == dtype::f64 || t == dtype::bf16; }

/// What an engine keeps of one operation until it completes.
struct work_state {
  virtual ~work_state() = default;
  /// Blocks until the operation completed or `timeout` passed; throws dist::timeout_error then, or the
  /// operation's own error.
  virtual void wait(std::chrono::milliseconds timeout) = 0;
  /// Has it completed (successfully or not)? Never blocks.
  virtual bool done() const = 0;
};

/// A handle on an asynchronous operation. wait() blocks until it completed and rethrows its error; a handle that
/// holds nothing (default-constructed) is complete.
class work {
 public:
  work() = default;
  work(std::shared_ptr<work_state> s, std::chrono::milliseconds timeout) : s_(std::move(s)), timeout_(timeout) {}
  void wait() {
    if (s_) {
      auto s = std::move(s_);
      s->wait(timeout_);
    }
  }
  bool done() const { return !s_ || s_->done(); }

 private:
  std::shared_ptr<work_state> s_;
  std::chrono::milliseconds timeout_{0};
};

namespace detail {
/// The elements of a tensor or a contiguous view as (pointer, count), or a dist::error naming the operand.
template <class X>
auto contiguous_span(X& x, const char* what) {
  using T = typename std::remove_cvref_t<X>::value_type;
  if constexpr (requires { x.is_contiguous(); })
    if (!x.is_contiguous())
      throw error(std::string("tessera::dist: ") + what + ": the view " + tessera::detail::format_dims(x.dims()) +
                  " is strided; collectives take contiguous elements (copy it into a Tensor first)");
  return std::pair<T*, std::size_t>(const_cast<T*>(x.data()), std::size_t(x.size()));
}
}  // namespace detail

/// The interface every engine implements (raw: pointers, counts, dtypes), and the typed operations on tensors.
class process_group {
 public:
  virtual ~process_group() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Does this group move cuda device memory (NCCL) rather than host memory (MPI)?
  virtual bool on_device() const = 0;
  /// The engine, e.g. "mpi" or "nccl".
  virtual const char* engine() const = 0;
  /// How long wait() waits before it throws dist::timeout_error.
  virtual std::chrono::milliseconds timeout() const = 0;

  // ---- raw operations (every engine): `blocking` asks to complete before returning ----
  virtual work all_reduce_raw(void* buf, std::size_t n, dtype t, reduce_op op, bool blocking) = 0;
  virtual work broadcast_raw(void* buf, std::size_t n, dtype t, int root, bool blocking) = 0;
  /// out: size() * n elements; in: n elements
  virtual work all_gather_raw(const void* in, void* out, std::size_t n, dtype t, bool blocking) = 0;
  /// in: size() * n elements; out: n elements
  virtual work reduce_scatter_raw(const void* in, void* out, std::size_t n, dtype t, reduce_op op, bool blocking) = 0;
  virtual work send_raw(const void* buf, std::size_t n, dtype t, int dst, int tag, bool blocking) = 0;
  virtual work recv_raw(void* buf, std::size_t n, dtype t, int src, int tag, bool blocking) = 0;
  virtual work barrier_raw(bool blocking) = 0;

  // ---- typed operations on tensors and contiguous views ----
  template <class X>
  work all_reduce_async(X&& x, reduce_op op = reduce_op::sum) {
    auto [p, n] = operand(x, "all_reduce");
    return all_reduce_raw(p, n, dtype_of<elem_t<X>>(), op, false);
  }
  template <class X>
  void all_reduce(X&& x, reduce_op op = reduce_op::sum) {
    auto [p, n] = operand(x, "all_reduce");
    all_reduce_raw(p, n, dtype_of<elem_t<X>>(), op, true).wait();
  }
  template <class X>
  work broadcast_async(X&& x, int root) {
    auto [p, n] = operand(x, "broadcast");
    check_rank(root, "broadcast", "root");
    return broadcast_raw(p, n, dtype_of<elem_t<X>>(), root, false);
  }
  template <class X>
  void broadcast(X&& x, int root) {
    auto [p, n] = operand(x, "broadcast");
    check_rank(root, "broadcast", "root");
    broadcast_raw(p, n, dtype_of<elem_t<X>>(), root, true).wait();
  }
  template <class Out, class In>
  work all_gather_async(Out&& out, const In& in) {
    return gather_like(out, in, false);
  }
  template <class Out, class In>
  void all_gather(Out&& out, const In& in) {
    gather_like(out, in, true).wait();
  }
  template <class Out, class In>
  work reduce_scatter_async(Out&& out, const In& in, reduce_op op = reduce_op::sum) {
    return scatter_like(out, in, op, false);
  }
  template <class Out, class In>
  void reduce_scatter(Out&& out, const In& in, reduce_op op = reduce_op::sum) {
    scatter_like(out, in, op, true).wait();
  }
  template <class X>
  work send_async(const X& x, int dst, int tag = 0) {
    auto [p, n] = operand(x, "send");
    check_rank(dst, "send", "destination");
    check_tag(tag, "send");
    return send_raw(p, n, dtype_of<elem_t<X>>(), dst, tag, false);
  }
  template <class X>
  void send(const X& x, int dst, int tag = 0) {
    send_async(x, dst, tag).wait();
  }
  template <class X>
  work recv_async(X&& x, int src, int tag = 0) {
    auto [p, n] = operand(x, "recv");
    check_rank(src, "recv", "source");
    check_tag(tag, "recv");
    return recv_raw(p, n, dtype_of<elem_t<X>>(), src, tag, false);
  }
  template <class X>
  void recv(X&& x, int src, int tag = 0) {
    recv_async(x, src, tag).wait();
  }
  work barrier_async() { return barrier_raw(false); }
  void barrier() { barrier_raw(true).wait(); }

  /// A scalar reduced over the ranks (metrics: loss sums, correct counts).
  template <class T>
    requires is_element_v<T>
  T all_reduce_value(T v, reduce_op op = reduce_op::sum) {
    all_reduce_raw(&v, 1, dtype_of<T>(), op, true).wait();
    return v;
  }

 protected:
  template <class X>
  using elem_t = typename std::remove_cvref_t<X>::value_type;

  template <class X>
  auto operand(X& x, const char* what) {
    using P = typename std::remove_cvref_t<X>::policy;
    if (P::on_device != on_device())
      throw error(std::string("tessera::dist: ") + what + " of a " + (P::on_device ? "device" : "host") + " tensor " +
                  tessera::detail::format_dims(x.dims()) + " on the " + engine() + " group, which moves " +
                  (on_device() ? "device" : "host") + " memory");
    return detail::contiguous_span(x, what);
  }
  void check_rank(int r, const char* what, const char* role) const {
    if (r < 0 || r >= size())
      throw error(std::string("tessera::dist: ") + what + ": the " + role + " rank " + std::to_string(r) +
                  " is not in [0, " + std::to_string(size()) + ")");
  }
  static void check_tag(int tag, const char* what) {
    if (tag < 0) throw error(std::string("tessera::dist: ") + what + ": tags are >= 0, got " + std::to_string(tag));
  }
  template <class Out, class In>
  work gather_like(Out& out, const In& in, bool blocking) {
    static_assert(std::is_same_v<elem_t<Out>, elem_t<In>>, "tessera::dist::all_gather: out and in hold different element types");
    auto [po, no] = operand(out, "all_gather");
    auto [pi, ni] = operand(in, "all_gather");
    if (no != ni * std::size_t(size()))
      throw error("tessera::dist: all_gather: out " + tessera::detail::format_dims(out.dims()) + " holds " + std::to_string(no) +
                  " elements; it needs size() * in.size() = " + std::to_string(size()) + " * " + std::to_string(ni) +
                  " (in " + tessera::detail::format_dims(in.dims()) + ")");
    return all_gather_raw(pi, po, ni, dtype_of<elem_t<In>>(), blocking);
  }
  template <class Out, class In>
  work scatter_like(Out& out, const In& in, reduce_op op, bool blocking) {
    static_assert(std::is_same_v<elem_t<Out>, elem_t<In>>, "tessera::dist::reduce_scatter: out and in hold different element types");
    auto [po, no] = operand(out, "reduce_scatter");
    auto [pi, ni] = operand(in, "reduce_scatter");
    if (ni != no * std::size_t(size()))
      throw error("tessera::dist: reduce_scatter: in " + tessera::detail::format_dims(in.dims()) + " holds " + std::to_string(ni) +
                  " elements; it needs size() * out.size() = " + std::to_string(size()) + " * " + std::to_string(no) +
                  " (out " + tessera::detail::format_dims(out.dims()) + ")");
    return reduce_scatter_raw(pi, po, no, dtype_of<elem_t<In>>(), op, blocking);
  }
};

}  // namespace tessera::dist
