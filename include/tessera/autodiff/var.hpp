// Reverse-mode automatic differentiation: Var<T, R, P> is a tensor of rank R that remembers how it was made.
// Each operation on Vars runs its (fused) forward kernel at once and, when gradients are wanted, records a node
// whose backward function turns the gradient of its output into gradients of its inputs, again with fused
// kernels. backward() on a scalar walks the recorded graph in reverse topological order; leaves that require
// gradients (parameters) accumulate them in grad() until zero_grad(). Inside a no_grad scope nothing is recorded.
// Two hooks serve data-parallel training (dist/data_parallel.hpp), as PyTorch's post-accumulate-grad hooks and
// Engine::queue_callback do: a leaf's grad_ready function runs during the walk as soon as the last operation that
// uses the leaf has added its gradient, and functions queued with queue_backward_callback() run once the walk ends.
#pragma once
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "tessera/autodiff/anomaly.hpp"
#include "tessera/expr/elementwise.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/policy/planner.hpp"
#include "tessera/core/policy.hpp"

namespace tessera::ad {

/// Is the current thread recording operations for backward()?
inline bool& grad_mode() {
  thread_local bool on = true;
  return on;
}

/// While alive, operations on this thread record nothing (inference, optimizer steps, evaluation).
class no_grad {
 public:
  no_grad() : prev_(grad_mode()) { grad_mode() = false; }
  ~no_grad() { grad_mode() = prev_; }
  no_grad(const no_grad&) = delete;
  no_grad& operator=(const no_grad&) = delete;

 private:
  bool prev_;
};

namespace detail {
/// The functions queue_backward_callback() queued during the current walk of this thread.
inline std::vector<std::function<void()>>& backward_callbacks() {
  thread_local std::vector<std::function<void()>> q;
  return q;
}

struct node_base {
  std::vector<std::shared_ptr<node_base>> inputs;  ///< the nodes this one was computed from (kept alive for backward)
  std::function<void()> backward_fn;               ///< adds this node's gradient into its inputs' gradients
  bool requires_grad = false;
  bool is_leaf = true;
  bool freed = false;  ///< backward() ran through this node and released what its backward needed
  std::string (*op_name)() = nullptr;  ///< the operation that made this node (for anomaly messages)
  std::string layer;                   ///< the model layer it ran in (recorded in anomaly mode only)
  /// A leaf's hook: called by backward() once this leaf's gradient is complete for the walk (every operation of
  /// the graph that uses it has run its backward).
  std::function<void()> grad_ready;
  int pending_uses = 0;  ///< backward(): the uses of this hooked leaf whose backward has not run yet
  virtual ~node_base() = default;
  virtual void drop_grad() = 0;
  /// "NaN", "Inf" or "": what the value / the gradient holds (anomaly mode; copies device data to the host).
  virtual const char* value_anomaly() const = 0;
  virtual const char* grad_anomaly() const = 0;
  virtual std::string shape() const = 0;
};

template <class T, int R, class P>
struct var_node final : node_base {
  using tensor = Tensor<T, dyn_shape_t<R>, P>;
  tensor value;
  tensor grad;
  bool has_grad = false;
  explicit var_node(tensor v) : value(std::move(v)) {}
  /// The gradient buffer, zero-filled on first use.
  tensor& grad_buffer() {
    if (!has_grad) {
      grad = tensor(value.dims());
      grad = T(0);
      has_grad = true;
    }
    return grad;
  }
  void drop_grad() override {
    grad = tensor();
    has_grad = false;
  }
  const char* value_anomaly() const override { return anomaly_of(value); }
  const char* grad_anomaly() const override { return has_grad ? anomaly_of(grad) : ""; }
  std::string shape() const override { return tessera::detail::format_dims(value.dims()); }
  static const char* anomaly_of(const tensor& t) {
    if constexpr (P::on_device) {
      const auto h = t.to_vector();
      return non_finite_kind(h.data(), index_t(h.size()));
    } else {
      return non_finite_kind(t.data(), t.size());
    }
  }
};

/// Anomaly mode: throws if `out` (just computed by the operation that records `Back`) is not finite, saying
/// whether an input already was (a leaf: data or a parameter) or the operation made it so.
template <class Back>
void check_forward_anomaly(const node_base& out, const std::vector<std::shared_ptr<node_base>>& inputs) {
  const char* kind = out.value_anomaly();
  if (!*kind) return;
  std::string why;
  for (std::size_t k = 0; k < inputs.size() && why.empty(); ++k) {
    const char* ik = inputs[k]->value_anomaly();
    if (*ik) why = "its input " + std::to_string(k) + " " + inputs[k]->shape() + " already held " + ik;
  }
  if (why.empty()) why = "its inputs were finite";
  throw anomaly_error("tessera: anomaly: the forward of " + op_name_of<Back>() + anomaly_where(anomaly_layer()) +
                      " produced " + kind + " in its result " + out.shape() + "; " + why);
}
inline void check_backward_anomaly(const node_base& nd) {
  for (std::size_t i = 0; i != nd.inputs.size(); ++i) {
    const char* kind = nd.inputs[i]->requires_grad ? nd.inputs[i]->grad_anomaly() : "";
    if (*kind)
      throw anomaly_error("tessera: anomaly: the backward of " + (nd.op_name ? nd.op_name() : std::string("an operation")) +
                          anomaly_where(nd.layer) + " produced " + kind + " in the gradient of its input " +
                          std::to_string(i) + " " + nd.inputs[i]->shape());
  }
}
}  // namespace detail

template <class T, int R, class P = cpu>
class Var {
 public:
  using value_type = T;
  using policy = P;
  using tensor = Tensor<T, dyn_shape_t<R>, P>;
  using node_type = detail::var_node<T, R, P>;
  static constexpr int rank = R;

  Var() = default;
  /// A leaf holding `value`; with requires_grad its gradient is accumulated by backward().
  explicit Var(tensor value, bool requires_grad = false) : n_(std::make_shared<node_type>(std::move(value))) {
    n_->requires_grad = requires_grad;
  }
  template <class S>
  explicit Var(const Tensor<T, S, P>& value, bool requires_grad = false)
      : Var(tensor(value), requires_grad) {}

  Var(const Var& o) : n_(o.ensure()) {}
  Var(Var&& o) : n_(o.lazy_ ? o.ensure() : std::move(o.n_)) {}
  Var& operator=(const Var& o) {
    n_ = o.ensure();
    return *this;
  }
  Var& operator=(Var&& o) {
    n_ = o.lazy_ ? o.ensure() : std::move(o.n_);
    return *this;
  }
  ~Var() = default;

  bool defined() const { return bool(n_) || lazy_; }
  const tensor& value() const { return node().value; }
  /// The value, for in-place updates that must not be recorded (optimizer steps, initialisation).
  tensor& mutable_value() { return node().value; }
  const dims_t<R>& dims() const { return value().dims(); }
  index_t size() const { return value().size(); }
  /// The value's single element (a loss: `loss.item()`), copied to the host; a Var of more than one element is a
  /// shape_error naming its shape.
  T item() const { return value().item(); }
  bool requires_grad() const { return node().requires_grad; }
  void set_requires_grad(bool on) {
    if (!node().is_leaf) throw std::logic_error("tessera: set_requires_grad: only leaves (not results of operations) can change it");
    node().requires_grad = on;
  }
  bool has_grad() const { return node().has_grad; }
  /// The accumulated gradient (zeros when backward() has not reached this Var yet).
  const tensor& grad() const { return node().grad_buffer(); }
  tensor& mutable_grad() { return node().grad_buffer(); }
  void zero_grad() {
    if (node().has_grad) node().grad = T(0);
  }
  /// The same value, cut from the graph (no gradient flows through it).
  Var detach() const { return Var(value(), false); }

  /// Gradients of this scalar with respect to every Var it was computed from that requires them.
  void backward() const {
    ensure();
    static_assert(R == 0, "tessera: backward() without a seed needs a scalar (rank 0); pass the output's gradient: backward(seed)");
    tensor one{};
    one = T(1);
    backward(one);
  }
  /// Backward with `seed` as the gradient of this Var (same shape).
  void backward(const tensor& seed) const;

  // ---- for operation implementers ----
  node_type& node() const {
    if (!ensure()) throw std::logic_error("tessera: use of an empty Var");
    return *n_;
  }
  const std::shared_ptr<node_type>& ptr() const { return ensure(); }

  /// A result of an operation: records `backward`, called as backward(grad) or backward(grad, value) once this
  /// node's gradient is complete, when gradients are on and any input requires them.
  template <class... In, class Back>
  static Var make(tensor value, Back&& backward, const In&... inputs) {
    const bool need = grad_mode() && (inputs.requires_grad() || ...);
    return make_from(std::move(value), std::forward<Back>(backward), {inputs.ptr()...}, need);
  }
  /// make() with the inputs as a list (the fused expressions of autodiff/fused.hpp): `any_requires_grad` says whether
  /// one of them requires gradients.
  template <class Back>
  static Var make_from(tensor value, Back&& backward, std::vector<std::shared_ptr<detail::node_base>> inputs, bool any_requires_grad) {
    Var out(std::move(value), false);
    const bool anomaly = detect_anomaly_enabled();
    if (anomaly) detail::check_forward_anomaly<std::remove_cvref_t<Back>>(out.node(), inputs);
    if (grad_mode() && any_requires_grad) {
      auto& nd = out.node();
      nd.requires_grad = true;
      nd.is_leaf = false;
      nd.op_name = &detail::op_name_of<std::remove_cvref_t<Back>>;
      if (anomaly) nd.layer = detail::anomaly_layer();
      nd.inputs = std::move(inputs);
      nd.backward_fn = [self = out.n_.get(), b = std::forward<Back>(backward)]() {
        if constexpr (std::is_invocable_v<Back&, tensor&, const tensor&>) b(self->grad_buffer(), self->value);
        else b(self->grad_buffer());
      };
    }
    return out;
  }

 protected:
  /// An expression not evaluated yet (autodiff/fused.hpp): `materialize` makes its node on first use.
  using materialize_fn = void (*)(const Var*);
  struct lazy_t {};
  static constexpr lazy_t lazy{};
  Var(lazy_t, materialize_fn materialize) : lazy_(materialize) {}
  const std::shared_ptr<node_type>& ensure() const {
    if (!n_ && lazy_) lazy_(this);
    return n_;
  }
  mutable std::shared_ptr<node_type> n_;

 private:
  materialize_fn lazy_ = nullptr;
};

template <class T, int R, class P>
void Var<T, R, P>::backward(const tensor& seed) const {
  if (!requires_grad()) throw std::logic_error("tessera: backward(): this Var does not depend on anything that requires gradients");
  if (seed.dims() != dims())
    throw shape_error("tessera: backward: the seed " + tessera::detail::format_dims(seed.dims()) + " does not match the output " +
                      tessera::detail::format_dims(dims()));
  // reverse topological order of the recorded nodes reachable from here (owning pointers: clearing a node's
  // inputs below may drop the last other reference to an interior node still waiting its turn)
  std::vector<std::shared_ptr<detail::node_base>> order;
  std::unordered_set<detail::node_base*> seen;
  std::vector<std::pair<std::shared_ptr<detail::node_base>, std::size_t>> stack;
  std::unordered_set<detail::node_base*> hooked;  // leaves with a grad_ready hook (kept alive by the nodes' inputs)
  stack.emplace_back(n_, 0);
  seen.insert(n_.get());
  while (!stack.empty()) {
    auto& top = stack.back();
    if (top.first->freed)  // as PyTorch without retain_graph: the graph's buffers are gone, its gradients would be lost
      throw std::logic_error(
          "tessera: backward(): this graph was already used by an earlier backward(), which freed it; compute the "
          "forward pass again (a result used by two losses: add the losses and call backward() once)");
    if (top.second < top.first->inputs.size()) {
      std::shared_ptr<detail::node_base> in = top.first->inputs[top.second++];
      if (in->requires_grad && !in->is_leaf && seen.insert(in.get()).second) stack.emplace_back(std::move(in), 0);
      else if (in->is_leaf && in->requires_grad && in->grad_ready) {  // count the uses of a hooked leaf
        if (hooked.insert(in.get()).second) in->pending_uses = 1;
        else ++in->pending_uses;
      }
    } else {
      order.push_back(std::move(top.first));
      stack.pop_back();
    }
  }
  struct drop_callbacks_on_throw {  // a walk that throws runs none of its queued callbacks
    int uncaught = std::uncaught_exceptions();
    ~drop_callbacks_on_throw() {
      if (std::uncaught_exceptions() > uncaught) detail::backward_callbacks().clear();
    }
  } guard;
  auto& root = node().grad_buffer();
  root = root + seed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    detail::node_base* nd = it->get();
    if (nd->backward_fn) nd->backward_fn();
    if (detect_anomaly_enabled()) detail::check_backward_anomaly(*nd);
    if (!hooked.empty())
      for (const auto& in : nd->inputs)
        if (in->is_leaf && in->grad_ready && hooked.count(in.get()) && --in->pending_uses == 0) in->grad_ready();
    // the graph is used once: free what backward needed, and the interior gradients
    nd->backward_fn = nullptr;
    nd->inputs.clear();
    nd->freed = !nd->is_leaf;  // a leaf keeps nothing to free: backward() from it again only accumulates
    if (nd != static_cast<detail::node_base*>(n_.get())) nd->drop_grad();
  }
  // the walk is over: the queued callbacks (moved out first: one may queue another for the next walk)
  auto callbacks = std::move(detail::backward_callbacks());
  detail::backward_callbacks().clear();
  for (auto& f : callbacks) f();
}

/// Runs `f` once the backward() walk now in progress on this thread has ended (after every gradient was added),
/// in the order queued; outside a walk, at the end of the next one. An exception from `f` leaves backward().
inline void queue_backward_callback(std::function<void()> f) { detail::backward_callbacks().push_back(std::move(f)); }

/// A leaf that requires gradients (a parameter or an input to differentiate with respect to).
template <class T, class S, class P>
auto parameter(const Tensor<T, S, P>& value) {
  return Var<T, S::rank, P>(value, true);
}
/// A leaf that does not require gradients (data).
template <class T, class S, class P>
auto constant(const Tensor<T, S, P>& value) {
  return Var<T, S::rank, P>(value, false);
}
/// A leaf that does not require gradients, under policy P2 (copied when the tensor's policy differs): data read on
/// cpu meeting a model on cpu_threads, `ad::constant<ts::cpu_threads>(targets)`. Any pair of policies (a device copy
/// needs nvcc).
template <Policy P2, class T, class S, class P>
Var<T, S::rank, P2> constant(const Tensor<T, S, P>& value) {
  if constexpr (std::is_same_v<P, P2>) return Var<T, S::rank, P2>(value, false);
  else return Var<T, S::rank, P2>(typename Var<T, S::rank, P2>::tensor(value.to_vector(), value.dims()), false);
}

}  // namespace tessera::ad
