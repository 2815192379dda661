// Optimizers over type-erased parameters (nn::parameter_ref<T>: host memory, or device memory on the cuda policy) with
// PyTorch's update rules (torch.optim, 1.13): SGD (momentum, dampening, Nesterov, L2 weight decay), Adam (L2 weight
// decay added to the gradient) and AdamW (decoupled weight decay).
//
//   std::vector<nn::parameter_ref<float>> params = {nn::make_parameter_ref("0.weight", w), ...};
//   optim::AdamW<float> opt(params, {.lr = 1e-3});   // or SGD<float>(params, {.lr = 0.1, .momentum = 0.9})
//   for (...) { opt.zero_grad(); loss.backward(); opt.step(); }
//
// step() skips parameters whose grad() is nullptr (no gradient has been produced yet), as PyTorch skips those whose
// .grad is None; their state does not advance. State tensors (host, rank 1, one element per parameter element)
// are visited by for_each_state(f), f(const std::string& name, Tensor<T, Shape<dyn>>& t), under these names:
//   "step"                     number of step() calls (one element)
//   "<param>.step"             number of updates this parameter received (one element): PyTorch's per-parameter
//                              state["step"], which drives Adam's bias correction and SGD's first momentum step
//   "<param>.momentum_buffer"  SGD with momentum != 0
//   "<param>.exp_avg", "<param>.exp_avg_sq"   Adam, AdamW
// State is allocated lazily (at a parameter's first update), and for_each_state allocates whatever is missing
// (zeros, step 0), so a fresh optimizer can be loaded from a checkpoint:
//   checkpoint_writer w; w.add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.");
//   checkpoint_reader r(path); r.read_all([&](auto&& f) { fresh.for_each_state(f); }, "optim.");
// Step counts are stored as T (as PyTorch stores them in a float tensor): exact up to 2^24 steps for float.
//
// The updates are backend<P> functions (sgd_update, adam_update: kernels/cpu/optim.hpp, kernels/cuda/optim.hpp) of
// the parameter's policy, reached through parameter_ref::ops (nn/parameter.hpp: a table make_parameter_ref chose at
// compile time). Host parameters keep their state in host tensors. Device parameters (the cuda policy) keep their
// state buffers in device memory and the step counts on the host; for_each_state still hands out host tensors: each
// device buffer is copied into a host tensor before f sees it and copied back after (so checkpoints save and load it
// as for a host parameter; both copies wait for the device).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "tessera/config.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/nn/parameter.hpp"

namespace tessera::optim {

/// The type of every optimizer state tensor: rank 1, host.
template <class T>
using state_tensor = Tensor<T, Shape<dyn>>;

/// torch.optim.SGD's options. lr has no default (as in PyTorch): sgd_options{.lr = 0.1, .momentum = 0.9}.
struct sgd_options {
  double lr = std::numeric_limits<double>::quiet_NaN();
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// torch.optim.Adam's options (weight decay is L2: added to the gradient).
struct adam_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

/// torch.optim.AdamW's options (decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step).
struct adamw_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

namespace detail {

using tessera::detail::adam_args;
using tessera::detail::adam_decay;
using tessera::detail::sgd_args;

inline std::string format_double(double x) {
  std::ostringstream os;
  os.precision(17);
  os << x;
  return os.str();
}

/// std::invalid_argument "tessera: <who>: option <option> = <value> is invalid: <requirement>" unless ok.
inline void require_option(bool ok, const char* who, const char* option, double value, const char* requirement) {
  if (!ok)
    throw std::invalid_argument(std::string("tessera: ") + who + ": option " + option + " = " + format_double(value) +
                                " is invalid: " + requirement);
}

inline void check_lr(const char* who, double lr) {
  if (std::isnan(lr))
    throw std::invalid_argument(std::string("tessera: ") + who +
                                ": option lr is not set (or NaN): give a learning rate, e.g. {.lr = 0.01}");
  require_option(lr >= 0.0 && std::isfinite(lr), who, "lr", lr, "the learning rate must be finite and >= 0");
}

inline void check_finite(const char* who, const char* option, double value) {
  require_option(std::isfinite(value), who, option, value, "it must be a finite number");
}

template <class T>
void check_parameters(const char* who, const std::vector<nn::parameter_ref<T>>& params) {
  if (params.empty())
    throw std::invalid_argument(std::string("tessera: ") + who + ": the parameter list is empty");
  std::unordered_set<std::string> names;
  std::unordered_set<const T*> storage;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const std::string where = std::string("tessera: ") + who + ": parameter #" + std::to_string(i) + " ('" + p.name + "')";
    if (p.name.empty())
      throw std::invalid_argument(where + " has an empty name (state tensors are named after their parameter)");
    if (!p.value || !p.grad || !p.zero_grad || !p.ops)
      throw std::invalid_argument(where + " is not bound to a tensor (make it with nn::make_parameter_ref)");
    index_t n = 1;
    for (index_t d : p.dims) n *= d;
    if (p.size < 0 || n != p.size)
      throw std::invalid_argument(where + " has size " + std::to_string(p.size) + " but its dims hold " +
                                  std::to_string(n) + " elements");
    if (!names.insert(p.name).second)
      throw std::invalid_argument(where + ": the name appears more than once in the list (state names would clash)");
    if (p.size > 0) {
      const T* v = p.value();
      if (v == nullptr) throw std::invalid_argument(where + " has no storage (value() returned nullptr)");
      if (!storage.insert(v).second)
        throw std::invalid_argument(where + " is the same tensor as an earlier parameter of the list");
    }
  }
}

}  // namespace detail

/// What the optimizers share: the parameter list, the learning rate, zero_grad, and the step counters and
/// per-parameter state tensors that for_each_state visits.
template <class T>
class optimizer {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tessera::optim: optimizers work on float or double parameters");

 public:
  using value_type = T;
  using param_type = nn::parameter_ref<T>;

  const std::vector<param_type>& params() const { return params_; }

  /// Zero every parameter's gradient (parameter_ref::zero_grad).
  void zero_grad() {
    for (auto& p : params_) p.zero_grad();
  }

  double lr() const { return lr_; }
  /// A new learning rate (schedules); must be finite and >= 0.
  void set_lr(double lr) {
    detail::check_lr(who_, lr);
    lr_ = lr;
  }

  /// How many times step() has run (restored by loading the "step" state tensor).
  std::int64_t steps() const { return std::int64_t(step_.data()[0]); }

  /// f(const std::string& name, state_tensor<T>& t) for every state tensor (allocating missing ones, zeroed):
  /// "step", then per parameter "<param>.step" and "<param>.<buffer>" (see the top of this file).
  template <class F>
  void for_each_state(F&& f) {
    const std::string step_name = "step";
    f(step_name, step_);
    if (buffer_names_.empty()) return;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      slot& s = ensure_slot(i);
      const std::string step_i = params_[i].name + ".step";
      f(step_i, s.step);
      for (std::size_t k = 0; k < buffer_names_.size(); ++k) {
        const std::string name = params_[i].name + "." + buffer_names_[k];
        const auto& ops = *params_[i].ops;
        if (!ops.on_device) {
          f(name, s.buffers[k]);
          continue;
        }
        // a device buffer: f sees a host copy, which is copied back afterwards (f may have loaded it)
        const index_t n = params_[i].size;
        state_tensor<T> h(n);
        ops.to_host(h.data(), s.device_buffers[k].get(), n);
        f(name, h);
        if (h.size() != n)
          throw std::invalid_argument(std::string("tessera: ") + who_ + ": for_each_state: state " + name + " was resized");
        ops.from_host(s.device_buffers[k].get(), h.data(), n);
      }
    }
  }

 protected:
  /// Per-parameter state: its update count and its buffers (each with the parameter's number of elements).
  struct slot {
    state_tensor<T> step;
    std::vector<state_tensor<T>> buffers;
    std::vector<std::shared_ptr<T>> device_buffers;  ///< instead of buffers, for a device parameter
    bool allocated = false;
  };

  optimizer(std::vector<param_type> params, const char* who, double lr, std::vector<std::string> buffer_names)
      : who_(who), params_(std::move(params)), buffer_names_(std::move(buffer_names)) {
    detail::check_lr(who_, lr);
    detail::check_parameters(who_, params_);
    lr_ = lr;
    step_ = state_tensor<T>(index_t(1));
    step_.data()[0] = T(0);
    slots_.resize(params_.size());
  }

  slot& ensure_slot(std::size_t i) {
    slot& s = slots_[i];
    if (!s.allocated) {
      s.step = state_tensor<T>(index_t(1));
      s.step.data()[0] = T(0);
      s.buffers.clear();
      s.device_buffers.clear();
      const auto& ops = *params_[i].ops;
      for (std::size_t k = 0; k < buffer_names_.size(); ++k) {
        if (ops.on_device) {
          const index_t n = params_[i].size;
          s.device_buffers.emplace_back(ops.allocate(n), ops.deallocate);
          ops.zero(s.device_buffers.back().get(), n);
          continue;
        }
        state_tensor<T> b(params_[i].size);
        std::fill_n(b.data(), std::size_t(params_[i].size), T(0));
        s.buffers.push_back(std::move(b));
      }
      s.allocated = true;
    }
    return s;
  }

  /// Buffer k of parameter i's state (host or device memory, as the parameter's).
  T* state_buffer(std::size_t i, std::size_t k) {
    slot& s = slots_[i];
    return params_[i].ops->on_device ? s.device_buffers[k].get() : s.buffers[k].data();
  }

  /// Count one step() call.
  void count_step() { step_.data()[0] += T(1); }

  const char* who_;
  std::vector<param_type> params_;
  std::vector<std::string> buffer_names_;
  std::vector<slot> slots_;
  state_tensor<T> step_;
  double lr_ = 0.0;
};

/// torch.optim.SGD: g = grad + weight_decay * p; with momentum, buf = g at a parameter's first update, then
/// buf = momentum * buf + (1 - dampening) * g, and g = nesterov ? g + momentum * buf : buf; p -= lr * g.
template <class T>
class SGD : public optimizer<T> {
  using base = optimizer<T>;

 public:
  using param_type = typename base::param_type;

  SGD(std::vector<param_type> params, const sgd_options& options)
      : base(std::move(params), "SGD", options.lr,
             options.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{}),
        opt_(options) {
    detail::check_finite("SGD", "momentum", options.momentum);
    detail::require_option(options.momentum >= 0.0, "SGD", "momentum", options.momentum, "it must be >= 0");
    detail::check_finite("SGD", "dampening", options.dampening);
    detail::check_finite("SGD", "weight_decay", options.weight_decay);
    detail::require_option(options.weight_decay >= 0.0, "SGD", "weight_decay", options.weight_decay, "it must be >= 0");
    if (options.nesterov && (options.momentum <= 0.0 || options.dampening != 0.0))
      throw std::invalid_argument("tessera: SGD: option nesterov = true requires momentum > 0 and dampening = 0 (got momentum = " +
                                  detail::format_double(options.momentum) + ", dampening = " +
                                  detail::format_double(options.dampening) + ")");
  }

  /// The options, with the current learning rate and momentum.
  sgd_options options() const {
    sgd_options o = opt_;
    o.lr = this->lr_;
    return o;
  }

  double momentum() const { return opt_.momentum; }
  /// A new momentum (OneCycleLR cycles it), finite and >= 0. The momentum buffers exist only for an optimizer
  /// built with momentum > 0: setting a nonzero momentum on one built without is a std::invalid_argument. Setting 0
  /// makes step() plain SGD while the buffers keep their values (nesterov needs momentum > 0).
  void set_momentum(double m) {
    detail::check_finite("SGD", "momentum", m);
    detail::require_option(m >= 0.0, "SGD", "momentum", m, "it must be >= 0");
    if (m != 0.0 && opt_.momentum == 0.0 && this->buffer_names_.empty())
      throw std::invalid_argument("tessera: SGD: set_momentum(" + detail::format_double(m) +
                                  "): this optimizer was built with momentum = 0 and has no momentum buffers; build it "
                                  "with the momentum it should start from");
    if (m == 0.0 && opt_.nesterov)
      throw std::invalid_argument("tessera: SGD: set_momentum(0): nesterov = true requires momentum > 0");
    opt_.momentum = m;
  }

  /// One update of every parameter that has a gradient.
  void step() {
    const T neg_lr = T(-this->lr_), wd = T(opt_.weight_decay), mom = T(opt_.momentum);
    const T omd = T(1.0 - opt_.dampening);
    const bool decay = opt_.weight_decay != 0.0;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      auto& prm = this->params_[i];
      const T* g = prm.grad();
      if (g == nullptr) continue;
      detail::sgd_args<T> a{neg_lr, wd, mom, omd, decay, false, opt_.nesterov};
      if (opt_.momentum == 0.0) {
        prm.ops->sgd_update(prm.value(), g, nullptr, prm.size, a);
        continue;
      }
      auto& s = this->ensure_slot(i);
      a.first = s.step.data()[0] == T(0);
      prm.ops->sgd_update(prm.value(), g, this->state_buffer(i, 0), prm.size, a);
      s.step.data()[0] += T(1);
    }
    this->count_step();
  }

 private:
  sgd_options opt_;
};

namespace detail {

/// Adam and AdamW: the same step, with L2 (Decoupled = false) or decoupled (true) weight decay.
template <class T, bool Decoupled>
class adam_base : public optimizer<T> {
  using base = optimizer<T>;

 public:
  using param_type = typename base::param_type;

  /// One update of every parameter that has a gradient. Bias correction uses the parameter's own step count t:
  /// step_size = lr / (1 - beta1^t), denominator sqrt(v) / sqrt(1 - beta2^t) + eps (PyTorch's arithmetic).
  void step() {
    const double lr = this->lr_;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      auto& prm = this->params_[i];
      const T* g = prm.grad();
      if (g == nullptr) continue;
      auto& s = this->ensure_slot(i);
      s.step.data()[0] += T(1);
      const double t = double(s.step.data()[0]);
      const double bias_correction1 = 1.0 - std::pow(beta1_, t);
      const double bias_correction2 = 1.0 - std::pow(beta2_, t);
      const T b1 = T(beta1_), omb1 = T(1.0 - beta1_), b2 = T(beta2_), omb2 = T(1.0 - beta2_);
      const T nss = T(-(lr / bias_correction1)), bc2 = T(std::sqrt(bias_correction2)), eps = T(eps_), wd = T(wd_);
      const T keep = T(1.0 - lr * wd_);
      const adam_decay decay = wd_ == 0.0 ? adam_decay::none : Decoupled ? adam_decay::decoupled : adam_decay::l2;
      prm.ops->adam_update(prm.value(), g, this->state_buffer(i, 0), this->state_buffer(i, 1), prm.size,
                           adam_args<T>{b1, omb1, b2, omb2, nss, bc2, eps, wd, keep, decay});
    }
    this->count_step();
  }

  double beta1() const { return beta1_; }
  /// A new beta1 in [0, 1) (OneCycleLR cycles it as the momentum); the moments already accumulated are kept.
  void set_beta1(double b) {
    require_option(b >= 0.0 && b < 1.0, this->who_, "beta1", b, "it must be in [0, 1)");
    beta1_ = b;
  }
  double beta2() const { return beta2_; }
  double eps() const { return eps_; }
  double weight_decay() const { return wd_; }

 protected:
  template <class Options>
  adam_base(std::vector<param_type> params, const char* who, const Options& o)
      : base(std::move(params), who, o.lr, {"exp_avg", "exp_avg_sq"}),
        beta1_(o.beta1), beta2_(o.beta2), eps_(o.eps), wd_(o.weight_decay) {
    require_option(o.beta1 >= 0.0 && o.beta1 < 1.0, who, "beta1", o.beta1, "it must be in [0, 1)");
    require_option(o.beta2 >= 0.0 && o.beta2 < 1.0, who, "beta2", o.beta2, "it must be in [0, 1)");
    require_option(o.eps >= 0.0 && std::isfinite(o.eps), who, "eps", o.eps, "it must be finite and >= 0");
    require_option(o.weight_decay >= 0.0 && std::isfinite(o.weight_decay), who, "weight_decay", o.weight_decay,
                   "it must be finite and >= 0");
  }

  double beta1_, beta2_, eps_, wd_;
};

}  // namespace detail

namespace detail {
/// Adam or AdamW with its own options type (for options()).
template <class T, bool Decoupled, class Options>
class adam_front : public adam_base<T, Decoupled> {
 public:
  using param_type = nn::parameter_ref<T>;
  adam_front(std::vector<param_type> params, const Options& options = {})
      : adam_base<T, Decoupled>(std::move(params), Decoupled ? "AdamW" : "Adam", options), opt_(options) {}
  /// The options, with the current learning rate and beta1.
  Options options() const {
    Options o = opt_;
    o.lr = this->lr_;
    o.beta1 = this->beta1_;
    return o;
  }

 private:
  Options opt_;
};
}  // namespace detail

/// torch.optim.Adam (amsgrad = false): L2 weight decay added to the gradient before the moments.
template <class T>
using Adam = detail::adam_front<T, false, adam_options>;
/// torch.optim.AdamW (amsgrad = false): p *= 1 - lr * weight_decay, then the Adam step without L2.
template <class T>
using AdamW = detail::adam_front<T, true, adamw_options>;

}  // namespace tessera::optim
