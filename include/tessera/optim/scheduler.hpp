// Learning-rate schedulers with PyTorch's semantics (torch.optim.lr_scheduler, 1.13): the same numbers, step for
// step, computed the way PyTorch computes them (the recursive, "chainable" form where PyTorch uses it, so that
// schedulers compose as they do there).
//
//   optim::SGD<float> opt(net.parameters(), {.lr = 0.1, .momentum = 0.9});
//   optim::CosineAnnealingLR sched(opt, {.T_max = 100, .eta_min = 1e-4});
//   for (int epoch = 0; epoch < 100; ++epoch) { train(...); sched.step(); }      // or step() after every batch
//   double lr = sched.get_last_lr();
//
//   optim::SequentialLR warm_then_cos(opt, {.milestones = {5}},                // 5 epochs of linear warm-up, then
//       optim::linear_lr_options{.start_factor = 0.1, .total_iters = 5},        // cosine annealing
//       optim::cosine_annealing_lr_options{.T_max = 95});
//   optim::ReduceLROnPlateau plateau(opt, {.mode = optim::plateau_mode::min, .patience = 3});
//   plateau.step(validation_loss);
//
// A scheduler works on any optimizer `opt` with `double opt.lr()` and `opt.set_lr(double)` (every tessera optimizer);
// it keeps a reference to it, so the optimizer must outlive the scheduler. Tessera's optimizers have one learning
// rate (PyTorch's single parameter group), so get_last_lr() is one number. OneCycleLR's momentum cycling sets
// opt.set_momentum(double) (SGD's momentum) or opt.set_beta1(double) (Adam's beta1), whichever the optimizer type has;
// an optimizer with neither needs .cycle_momentum = false (as in PyTorch, which refuses such an optimizer). Tessera's
// SGD (built with momentum > 0), Adam and AdamW have them. Tessera's
// optimizers refuse a negative learning rate (std::invalid_argument from set_lr), which chained recursive forms can
// reach where PyTorch would carry on with it (a cosine with eta_min > 0 chained under a StepLR).
//
// As in PyTorch, constructing a scheduler performs its first step (epoch 0): StepLR leaves the learning rate as it is,
// LinearLR multiplies it by start_factor, OneCycleLR sets max_lr / div_factor. The optimizer's learning rate at the
// first scheduler's construction is the base learning rate ("initial_lr"); the schedulers inside a SequentialLR or a
// ChainedScheduler share it (they are built by the composite from their options, in order, each performing its own
// first step, exactly as PyTorch's would be when constructed one after another on one optimizer).
//
// Schedulers and their options (every option is documented at its struct below):
//   StepLR             lr = base_lr * gamma^(epoch / step_size)                          step_lr_options
//   MultiStepLR        lr *= gamma at each milestone (repeated milestones count)          multi_step_lr_options
//   ExponentialLR      lr *= gamma every step                                             exponential_lr_options
//   CosineAnnealingLR  eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, computed recursively as
//                      PyTorch 1.13 does (and so periodic past T_max)                     cosine_annealing_lr_options
//   LinearLR           lr = base_lr * factor, factor linear from start_factor to end_factor over total_iters steps
//                      (linear warm-up)                                                   linear_lr_options
//   OneCycleLR         the 1cycle policy: warm-up from max_lr / div_factor to max_lr, annealing (cos or linear) to
//                      max_lr / div_factor / final_div_factor; two or three phases; momentum cycled inversely
//                                                                                         one_cycle_lr_options
//   SequentialLR       one child scheduler after another, switching at milestones         sequential_lr_options
//   ChainedScheduler   every child steps at each step (their factors multiply)
//   ReduceLROnPlateau  lr *= factor when a metric stops improving; step(metric)           reduce_lr_on_plateau_options
// Errors: an option out of its range is std::invalid_argument naming the scheduler, the option and its value;
// stepping a OneCycleLR past total_steps, or onto a phase of zero length, is std::out_of_range / std::domain_error
// (PyTorch raises there too). tests/optim/scheduler_vs_torch.py compares every scheduler with torch's, step by step.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <numbers>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tessera/optim/optim.hpp"

namespace tessera::optim {

/// An optimizer a scheduler can drive: its learning rate can be read and set.
template <class O>
concept lr_optimizer = requires(O& o, double x) {
  { o.lr() } -> std::convertible_to<double>;
  o.set_lr(x);
};

namespace detail {

/// What a scheduler drives: one optimizer's learning rate (and its momentum, where it has one), and PyTorch's
/// group['initial_lr'], shared by every scheduler built on this handle.
struct lr_target {
  std::function<double()> get_lr;
  std::function<void(double)> set_lr;
  std::function<void(double)> set_momentum;  ///< empty: the optimizer has no momentum to cycle
  std::function<double()> get_momentum;
  bool has_initial_lr = false;
  double initial_lr = 0.0;
  /// PyTorch's group.setdefault('initial_lr', group['lr']).
  double ensure_initial_lr() {
    if (!has_initial_lr) initial_lr = get_lr(), has_initial_lr = true;
    return initial_lr;
  }
};

template <lr_optimizer O>
std::shared_ptr<lr_target> make_lr_target(O& opt) {
  auto t = std::make_shared<lr_target>();
  t->get_lr = [&opt] { return double(opt.lr()); };
  t->set_lr = [&opt](double lr) { opt.set_lr(lr); };
  if constexpr (requires(O& o, double x) { o.set_momentum(x); double(o.momentum()); }) {
    t->set_momentum = [&opt](double m) { opt.set_momentum(m); };
    t->get_momentum = [&opt] { return double(opt.momentum()); };
  } else if constexpr (requires(O& o, double x) { o.set_beta1(x); double(o.beta1()); }) {
    t->set_momentum = [&opt](double m) { opt.set_beta1(m); };
    t->get_momentum = [&opt] { return double(opt.beta1()); };
  }
  return t;
}

inline void require_positive_int(const char* who, const char* option, std::int64_t v) {
  if (v < 1)
    throw std::invalid_argument(std::string("tessera: ") + who + ": option " + option + " = " + std::to_string(v) +
                                " is invalid: it must be >= 1");
}

}  // namespace detail

/// What every scheduler except ReduceLROnPlateau shares (PyTorch's _LRScheduler): the epoch counter, the base
/// learning rate, step() and get_last_lr().
class lr_scheduler {
 public:
  virtual ~lr_scheduler() = default;
  lr_scheduler(const lr_scheduler&) = delete;
  lr_scheduler& operator=(const lr_scheduler&) = delete;

  /// One step: last_epoch += 1 and the optimizer's learning rate becomes the scheduler's next value. Call it once per
  /// epoch or once per batch, after opt.step(), as in PyTorch.
  virtual void step() {
    ++step_count_;
    ++last_epoch_;
    apply(get_lr());
  }
  /// The learning rate the last step set.
  double get_last_lr() const { return last_lr_; }
  /// The number of steps taken since construction (0 right after it: construction is epoch 0).
  std::int64_t last_epoch() const { return last_epoch_; }
  /// The base learning rate (PyTorch's base_lrs[0]: the optimizer's initial_lr).
  double base_lr() const { return base_lr_; }

 protected:
  explicit lr_scheduler(std::shared_ptr<detail::lr_target> t) : t_(std::move(t)) {}

  /// PyTorch's _LRScheduler.__init__ after the subclass's own fields: initial_lr (set once per optimizer), base_lr,
  /// then the initial step (epoch 0). Called at the end of every scheduler's constructor.
  void start() {
    base_lr_ = t_->ensure_initial_lr();
    initial_step();
  }
  void initial_step() {
    step_count_ = 0;
    step();
  }
  /// PyTorch's step(epoch): last_epoch = epoch and the closed form where the scheduler has one, else get_lr().
  void step_to(std::int64_t epoch) {
    ++step_count_;
    last_epoch_ = epoch;
    apply(closed_form_lr());
  }
  void apply(double lr) {
    t_->set_lr(lr);
    last_lr_ = t_->get_lr();
  }
  double current_lr() const { return t_->get_lr(); }

  /// The chainable form: the next learning rate from the optimizer's current one (PyTorch's get_lr()).
  virtual double get_lr() = 0;
  /// PyTorch's _get_closed_form_lr() from base_lr and last_epoch; get_lr() where a scheduler has none.
  virtual double closed_form_lr() { return get_lr(); }

  friend class SequentialLR;
  friend class ChainedScheduler;

  std::shared_ptr<detail::lr_target> t_;
  double base_lr_ = 0.0;
  double last_lr_ = 0.0;
  std::int64_t last_epoch_ = -1;
  std::int64_t step_count_ = 0;
};

/// torch.optim.lr_scheduler.StepLR.
struct step_lr_options {
  std::int64_t step_size = 1;  ///< the learning rate is multiplied by gamma every step_size steps (>= 1)
  double gamma = 0.1;          ///< the factor (finite, >= 0)
};
/// lr = base_lr * gamma^floor(last_epoch / step_size) (in the chainable form: lr *= gamma when last_epoch is a
/// nonzero multiple of step_size).
class StepLR final : public lr_scheduler {
 public:
  template <lr_optimizer O>
  StepLR(O& opt, const step_lr_options& o) : StepLR(detail::make_lr_target(opt), o) {}
  StepLR(std::shared_ptr<detail::lr_target> t, const step_lr_options& o) : lr_scheduler(std::move(t)), o_(o) {
    detail::require_positive_int("StepLR", "step_size", o.step_size);
    detail::require_option(std::isfinite(o.gamma) && o.gamma >= 0, "StepLR", "gamma", o.gamma, "it must be finite and >= 0");
    start();
  }
  const step_lr_options& options() const { return o_; }

 protected:
  double get_lr() override {
    if (last_epoch_ == 0 || last_epoch_ % o_.step_size != 0) return current_lr();
    return current_lr() * o_.gamma;
  }
  double closed_form_lr() override { return base_lr_ * std::pow(o_.gamma, double(last_epoch_ / o_.step_size)); }

 private:
  step_lr_options o_;
};

/// torch.optim.lr_scheduler.MultiStepLR.
struct multi_step_lr_options {
  std::vector<std::int64_t> milestones;  ///< epochs at which lr *= gamma (any order; a repeated one multiplies again)
  double gamma = 0.1;                    ///< the factor (finite, >= 0)
};
/// lr *= gamma^(number of times last_epoch appears among the milestones).
class MultiStepLR final : public lr_scheduler {
 public:
  template <lr_optimizer O>
  MultiStepLR(O& opt, const multi_step_lr_options& o) : MultiStepLR(detail::make_lr_target(opt), o) {}
  MultiStepLR(std::shared_ptr<detail::lr_target> t, const multi_step_lr_options& o) : lr_scheduler(std::move(t)), o_(o) {
    detail::require_option(std::isfinite(o.gamma) && o.gamma >= 0, "MultiStepLR", "gamma", o.gamma,
                           "it must be finite and >= 0");
    sorted_ = o.milestones;
    std::sort(sorted_.begin(), sorted_.end());
    start();
  }
  const multi_step_lr_options& options() const { return o_; }

 protected:
  double get_lr() override {
    const auto n = std::count(sorted_.begin(), sorted_.end(), last_epoch_);
    if (n == 0) return current_lr();
    return current_lr() * std::pow(o_.gamma, double(n));
  }
  double closed_form_lr() override {
    const auto n = std::upper_bound(sorted_.begin(), sorted_.end(), last_epoch_) - sorted_.begin();
    return base_lr_ * std::pow(o_.gamma, double(n));
  }

 private:
  multi_step_lr_options o_;
  std::vector<std::int64_t> sorted_;
};

/// torch.optim.lr_scheduler.ExponentialLR.
struct exponential_lr_options {
  double gamma = std::numeric_limits<double>::quiet_NaN();  ///< lr *= gamma every step; required (finite, >= 0)
};
class ExponentialLR final : public lr_scheduler {
 public:
  template <lr_optimizer O>
  ExponentialLR(O& opt, const exponential_lr_options& o) : ExponentialLR(detail::make_lr_target(opt), o) {}
  ExponentialLR(std::shared_ptr<detail::lr_target> t, const exponential_lr_options& o) : lr_scheduler(std::move(t)), o_(o) {
    detail::require_option(std::isfinite(o.gamma) && o.gamma >= 0, "ExponentialLR", "gamma", o.gamma,
                           "give a finite gamma >= 0, e.g. {.gamma = 0.95}");
    start();
  }
  const exponential_lr_options& options() const { return o_; }

 protected:
  double get_lr() override { return last_epoch_ == 0 ? current_lr() : current_lr() * o_.gamma; }
  double closed_form_lr() override { return base_lr_ * std::pow(o_.gamma, double(last_epoch_)); }

 private:
  exponential_lr_options o_;
};

/// torch.optim.lr_scheduler.CosineAnnealingLR.
struct cosine_annealing_lr_options {
  std::int64_t T_max = 0;  ///< steps from base_lr down to eta_min (>= 1); past it the schedule rises again (period 2 T_max)
  double eta_min = 0.0;    ///< the lowest learning rate (finite)
};
/// PyTorch 1.13's recursive form: lr_{e} = (1 + cos(pi e / T)) / (1 + cos(pi (e - 1) / T)) * (lr_{e-1} - eta_min) +
/// eta_min, with lr += (base_lr - eta_min) * (1 - cos(pi / T)) / 2 where (e - 1 - T) is a multiple of 2T; equal
/// to the closed form eta_min + (base_lr - eta_min) * (1 + cos(pi e / T)) / 2 up to rounding when alone.
class CosineAnnealingLR final : public lr_scheduler {
 public:
  template <lr_optimizer O>
  CosineAnnealingLR(O& opt, const cosine_annealing_lr_options& o) : CosineAnnealingLR(detail::make_lr_target(opt), o) {}
  CosineAnnealingLR(std::shared_ptr<detail::lr_target> t, const cosine_annealing_lr_options& o)
      : lr_scheduler(std::move(t)), o_(o) {
    detail::require_positive_int("CosineAnnealingLR", "T_max", o.T_max);
    detail::check_finite("CosineAnnealingLR", "eta_min", o.eta_min);
    start();
  }
  const cosine_annealing_lr_options& options() const { return o_; }

 protected:
  double get_lr() override {
    const double pi = std::numbers::pi, T = double(o_.T_max), e = double(last_epoch_);
    if (last_epoch_ == 0) return current_lr();
    if (step_count_ == 1 && last_epoch_ > 0) return o_.eta_min + (base_lr_ - o_.eta_min) * (1 + std::cos(e * pi / T)) / 2;
    if (py_mod(last_epoch_ - 1 - o_.T_max, 2 * o_.T_max) == 0)
      return current_lr() + (base_lr_ - o_.eta_min) * (1 - std::cos(pi / T)) / 2;
    return (1 + std::cos(pi * e / T)) / (1 + std::cos(pi * (e - 1) / T)) * (current_lr() - o_.eta_min) + o_.eta_min;
  }
  double closed_form_lr() override {
    return o_.eta_min + (base_lr_ - o_.eta_min) * (1 + std::cos(std::numbers::pi * double(last_epoch_) / double(o_.T_max))) / 2;
  }

 private:
  static std::int64_t py_mod(std::int64_t a, std::int64_t b) { return ((a % b) + b) % b; }
  cosine_annealing_lr_options o_;
};

/// torch.optim.lr_scheduler.LinearLR (linear warm-up).
struct linear_lr_options {
  double start_factor = 1.0 / 3;  ///< the factor of base_lr at epoch 0 (in (0, 1])
  double end_factor = 1.0;        ///< the factor from epoch total_iters on (in [0, 1])
  std::int64_t total_iters = 5;   ///< steps from start_factor to end_factor (>= 1)
};
/// lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters), in
/// PyTorch's chainable form (each step multiplies the current learning rate by the ratio of consecutive factors).
class LinearLR final : public lr_scheduler {
 public:
  template <lr_optimizer O>
  LinearLR(O& opt, const linear_lr_options& o) : LinearLR(detail::make_lr_target(opt), o) {}
  LinearLR(std::shared_ptr<detail::lr_target> t, const linear_lr_options& o) : lr_scheduler(std::move(t)), o_(o) {
    detail::require_option(o.start_factor > 0 && o.start_factor <= 1, "LinearLR", "start_factor", o.start_factor,
                           "it must be in (0, 1]");
    detail::require_option(o.end_factor >= 0 && o.end_factor <= 1, "LinearLR", "end_factor", o.end_factor,
                           "it must be in [0, 1]");
    detail::require_positive_int("LinearLR", "total_iters", o.total_iters);
    start();
  }
  const linear_lr_options& options() const { return o_; }

 protected:
  double get_lr() override {
    if (last_epoch_ == 0) return current_lr() * o_.start_factor;
    if (last_epoch_ > o_.total_iters) return current_lr();
    const double d = o_.end_factor - o_.start_factor;
    return current_lr() * (1. + d / (double(o_.total_iters) * o_.start_factor + double(last_epoch_ - 1) * d));
  }
  double closed_form_lr() override {
    return base_lr_ * (o_.start_factor + (o_.end_factor - o_.start_factor) *
                                             double(std::min(o_.total_iters, last_epoch_)) / double(o_.total_iters));
  }

 private:
  linear_lr_options o_;
};

/// OneCycleLR's annealing between the phases' ends.
enum class anneal_strategy { cos, linear };

/// torch.optim.lr_scheduler.OneCycleLR.
struct one_cycle_lr_options {
  double max_lr = std::numeric_limits<double>::quiet_NaN();  ///< the peak learning rate; required (finite, > 0)
  std::int64_t total_steps = 0;      ///< steps in the cycle; 0: epochs * steps_per_epoch
  std::int64_t epochs = 0;           ///< with steps_per_epoch, when total_steps is 0
  std::int64_t steps_per_epoch = 0;
  double pct_start = 0.3;            ///< the share of the cycle spent rising to max_lr (in [0, 1])
  anneal_strategy anneal = anneal_strategy::cos;  ///< cos: (1 + cos(pi pct)) / 2 between the ends; linear
  bool cycle_momentum = true;        ///< momentum (SGD) or beta1 (Adam) from max_momentum down to base_momentum while
                                     ///< the lr rises, and back (needs set_momentum or set_beta1 on the optimizer)
  double base_momentum = 0.85;       ///< the momentum at the peak learning rate
  double max_momentum = 0.95;        ///< the momentum at the start and the end
  double div_factor = 25.0;          ///< the initial learning rate is max_lr / div_factor (> 0)
  double final_div_factor = 1e4;     ///< the last is max_lr / div_factor / final_div_factor (> 0)
  bool three_phase = false;          ///< three phases: up to max_lr, back down to the initial lr (symmetrically),
                                     ///< then down to the last; false: up, then down to the last
};
class OneCycleLR final : public lr_scheduler {
 public:
  template <lr_optimizer O>
  OneCycleLR(O& opt, const one_cycle_lr_options& o) : OneCycleLR(detail::make_lr_target(opt), o) {}
  OneCycleLR(std::shared_ptr<detail::lr_target> t, const one_cycle_lr_options& o) : lr_scheduler(std::move(t)), o_(o) {
    const char* who = "OneCycleLR";
    if (o.total_steps != 0) {
      detail::require_positive_int(who, "total_steps", o.total_steps);
      total_ = o.total_steps;
    } else {
      if (o.epochs == 0 && o.steps_per_epoch == 0)
        throw std::invalid_argument("tessera: OneCycleLR: give total_steps, or epochs and steps_per_epoch");
      detail::require_positive_int(who, "epochs", o.epochs);
      detail::require_positive_int(who, "steps_per_epoch", o.steps_per_epoch);
      total_ = o.epochs * o.steps_per_epoch;
    }
    detail::require_option(std::isfinite(o.max_lr) && o.max_lr > 0, who, "max_lr", o.max_lr,
                           "give a finite peak learning rate > 0, e.g. {.max_lr = 0.1, .total_steps = 1000}");
    detail::require_option(o.pct_start >= 0 && o.pct_start <= 1, who, "pct_start", o.pct_start, "it must be in [0, 1]");
    detail::require_option(std::isfinite(o.div_factor) && o.div_factor > 0, who, "div_factor", o.div_factor,
                           "it must be finite and > 0");
    detail::require_option(std::isfinite(o.final_div_factor) && o.final_div_factor > 0, who, "final_div_factor",
                           o.final_div_factor, "it must be finite and > 0");
    const double T = double(total_);
    // the products rounded before the subtraction, as Python does (volatile: no fused multiply-add, which would move
    // a phase's end off an integer step, e.g. 0.1 * 10 - 1)
    volatile double pT = o.pct_start * T, pT2 = 2 * o.pct_start * T;
    if (o.three_phase)
      phases_ = {{pT - 1, 0, 1, 0, 1}, {pT2 - 2, 1, 0, 1, 0}, {T - 1, 0, 2, 0, 0}};
    else
      phases_ = {{pT - 1, 0, 1, 0, 1}, {T - 1, 1, 2, 1, 0}};
    initial_ = o.max_lr / o.div_factor;
    min_ = initial_ / o.final_div_factor;
    t_->initial_lr = initial_;  // PyTorch sets group['initial_lr'] whatever was there
    t_->has_initial_lr = true;
    if (o.cycle_momentum) {
      detail::check_finite(who, "base_momentum", o.base_momentum);
      detail::check_finite(who, "max_momentum", o.max_momentum);
      if (!t_->set_momentum)
        throw std::invalid_argument("tessera: OneCycleLR: option cycle_momentum = true needs an optimizer with "
                                    "set_momentum(double) or set_beta1(double); give .cycle_momentum = false");
      t_->set_momentum(o.max_momentum);
      last_momentum_ = o.max_momentum;
    }
    start();
  }
  const one_cycle_lr_options& options() const { return o_; }
  std::int64_t total_steps() const { return total_; }
  /// The momentum (or beta1) the last step set; NaN without cycle_momentum.
  double get_last_momentum() const { return last_momentum_; }

 protected:
  double get_lr() override {
    const std::int64_t n = last_epoch_;
    if (n > total_)
      throw std::out_of_range("tessera: OneCycleLR: stepped " + std::to_string(n + 1) + " times; total_steps is " +
                              std::to_string(total_));
    const double lrs[3] = {initial_, o_.max_lr, min_}, moms[2] = {o_.max_momentum, o_.base_momentum};
    double start_step = 0, lr = 0, mom = 0;
    for (std::size_t i = 0; i < phases_.size(); ++i) {
      const phase& p = phases_[i];
      if (double(n) <= p.end_step || i + 1 == phases_.size()) {
        if (p.end_step - start_step == 0)
          throw std::domain_error("tessera: OneCycleLR: step " + std::to_string(n) + " falls in phase " +
                                  std::to_string(i + 1) + ", whose length is zero (pct_start = " +
                                  detail::format_double(o_.pct_start) + ", total_steps = " + std::to_string(total_) + ")");
        const double pct = (double(n) - start_step) / (p.end_step - start_step);
        lr = anneal(lrs[p.start_lr], lrs[p.end_lr], pct);
        mom = anneal(moms[p.start_mom], moms[p.end_mom], pct);
        break;
      }
      start_step = p.end_step;
    }
    if (o_.cycle_momentum) {
      t_->set_momentum(mom);
      last_momentum_ = mom;
    }
    return lr;
  }

 private:
  struct phase {
    double end_step;
    int start_lr, end_lr;    ///< 0 initial, 1 max, 2 min
    int start_mom, end_mom;  ///< 0 max_momentum, 1 base_momentum
  };
  double anneal(double start, double end, double pct) const {
    if (o_.anneal == anneal_strategy::cos) return end + (start - end) / 2.0 * (std::cos(std::numbers::pi * pct) + 1);
    return (end - start) * pct + start;
  }
  one_cycle_lr_options o_;
  std::int64_t total_ = 0;
  std::vector<phase> phases_;
  double initial_ = 0, min_ = 0;
  double last_momentum_ = std::numeric_limits<double>::quiet_NaN();
};

namespace detail {
template <class Options>
struct scheduler_for {
  static_assert(sizeof(Options) == 0,
                "tessera::optim::SequentialLR and ChainedScheduler take their children as options structs: "
                "step_lr_options, multi_step_lr_options, exponential_lr_options, cosine_annealing_lr_options, "
                "linear_lr_options or one_cycle_lr_options (ReduceLROnPlateau cannot be a child: its step takes a metric)");
};
template <> struct scheduler_for<step_lr_options> { using type = StepLR; };
template <> struct scheduler_for<multi_step_lr_options> { using type = MultiStepLR; };
template <> struct scheduler_for<exponential_lr_options> { using type = ExponentialLR; };
template <> struct scheduler_for<cosine_annealing_lr_options> { using type = CosineAnnealingLR; };
template <> struct scheduler_for<linear_lr_options> { using type = LinearLR; };
template <> struct scheduler_for<one_cycle_lr_options> { using type = OneCycleLR; };

/// The children of a composite, built in order on one target from their options.
template <class... Options>
std::vector<std::unique_ptr<lr_scheduler>> make_children(const std::shared_ptr<lr_target>& t, const Options&... o) {
  std::vector<std::unique_ptr<lr_scheduler>> out;
  (out.push_back(std::make_unique<typename scheduler_for<Options>::type>(t, o)), ...);
  return out;
}
}  // namespace detail

/// torch.optim.lr_scheduler.SequentialLR.
struct sequential_lr_options {
  std::vector<std::int64_t> milestones;  ///< ascending epochs at which the next child takes over (one fewer than
                                         ///< the children)
};
/// Child k runs from milestone k - 1 on; at a milestone the new child restarts at its epoch 0 (its closed form, as
/// PyTorch's scheduler.step(0)). Built from the children's options:
///   SequentialLR s(opt, {.milestones = {5}}, linear_lr_options{...}, cosine_annealing_lr_options{...});
class SequentialLR final : public lr_scheduler {
 public:
  template <lr_optimizer O, class... Options>
  SequentialLR(O& opt, const sequential_lr_options& o, const Options&... children)
      : SequentialLR(detail::make_lr_target(opt), o, children...) {}
  template <class... Options>
  SequentialLR(std::shared_ptr<detail::lr_target> t, const sequential_lr_options& o, const Options&... children)
      : lr_scheduler(t), o_(o) {
    static_assert(sizeof...(Options) > 0, "tessera::optim::SequentialLR needs at least one child scheduler's options");
    t_->ensure_initial_lr();  // the base lr, before any child changes it
    children_ = detail::make_children(t_, children...);
    if (o.milestones.size() + 1 != children_.size())
      throw std::invalid_argument("tessera: SequentialLR: " + std::to_string(children_.size()) + " schedulers need " +
                                  std::to_string(children_.size() - 1) + " milestones, got " +
                                  std::to_string(o.milestones.size()));
    if (!std::is_sorted(o.milestones.begin(), o.milestones.end()))
      throw std::invalid_argument("tessera: SequentialLR: option milestones must be in ascending order");
    last_epoch_ = 0;
    t_->set_lr(t_->initial_lr);  // PyTorch: reset to initial_lr, undo the children's first steps, then restart the first
    for (auto& c : children_) c->last_epoch_ -= 1;
    children_[0]->initial_step();
    base_lr_ = t_->initial_lr;
    last_lr_ = children_[0]->get_last_lr();
  }
  void step() override {
    ++last_epoch_;
    const auto& m = o_.milestones;
    const std::size_t idx = std::size_t(std::upper_bound(m.begin(), m.end(), last_epoch_) - m.begin());
    lr_scheduler& s = *children_[idx];
    if (idx > 0 && m[idx - 1] == last_epoch_) s.step_to(0);
    else s.step();
    last_lr_ = s.get_last_lr();
  }
  std::size_t size() const { return children_.size(); }
  lr_scheduler& child(std::size_t i) { return *children_.at(i); }

 protected:
  double get_lr() override { return current_lr(); }

 private:
  sequential_lr_options o_;
  std::vector<std::unique_ptr<lr_scheduler>> children_;
};

/// torch.optim.lr_scheduler.ChainedScheduler: every child steps at every step, in order (their chainable forms
/// multiply), e.g. ChainedScheduler s(opt, linear_lr_options{...}, exponential_lr_options{.gamma = 0.9}).
class ChainedScheduler final : public lr_scheduler {
 public:
  template <lr_optimizer O, class... Options>
  explicit ChainedScheduler(O& opt, const Options&... children) : ChainedScheduler(detail::make_lr_target(opt), children...) {}
  template <class... Options>
  explicit ChainedScheduler(std::shared_ptr<detail::lr_target> t, const Options&... children) : lr_scheduler(t) {
    static_assert(sizeof...(Options) > 0, "tessera::optim::ChainedScheduler needs at least one child scheduler's options");
    base_lr_ = t_->ensure_initial_lr();
    children_ = detail::make_children(t_, children...);
    last_epoch_ = 0;
    last_lr_ = t_->get_lr();
  }
  void step() override {
    ++last_epoch_;
    for (auto& c : children_) c->step();
    last_lr_ = t_->get_lr();
  }
  std::size_t size() const { return children_.size(); }
  lr_scheduler& child(std::size_t i) { return *children_.at(i); }

 protected:
  double get_lr() override { return current_lr(); }

 private:
  std::vector<std::unique_ptr<lr_scheduler>> children_;
};

/// ReduceLROnPlateau: which way the metric improves.
enum class plateau_mode { min, max };
/// ReduceLROnPlateau: how `threshold` measures a significant improvement.
enum class threshold_mode { rel, abs };

/// torch.optim.lr_scheduler.ReduceLROnPlateau.
struct reduce_lr_on_plateau_options {
  plateau_mode mode = plateau_mode::min;  ///< min: lower is better (a loss); max: higher is better (an accuracy)
  double factor = 0.1;                    ///< new lr = max(lr * factor, min_lr) (in [0, 1))
  std::int64_t patience = 10;             ///< bad epochs tolerated; the lr drops at the (patience + 1)-th in a row (>= 0)
  double threshold = 1e-4;                ///< what counts as better: rel: best * (1 -/+ threshold), abs: best -/+ threshold
  tessera::optim::threshold_mode threshold_mode = tessera::optim::threshold_mode::rel;  ///< rel (a share) or abs
  std::int64_t cooldown = 0;              ///< steps after a drop during which bad epochs are not counted (>= 0)
  double min_lr = 0.0;                    ///< the learning rate never goes below it (>= 0)
  double eps = 1e-8;                      ///< a drop smaller than eps is not made (>= 0)
};
/// lr *= factor when the metric has not improved for more than `patience` steps; step(metric) once per epoch.
/// A NaN metric never counts as an improvement.
class ReduceLROnPlateau {
 public:
  template <lr_optimizer O>
  ReduceLROnPlateau(O& opt, const reduce_lr_on_plateau_options& o = {}) : ReduceLROnPlateau(detail::make_lr_target(opt), o) {}
  ReduceLROnPlateau(std::shared_ptr<detail::lr_target> t, const reduce_lr_on_plateau_options& o) : t_(std::move(t)), o_(o) {
    const char* who = "ReduceLROnPlateau";
    detail::require_option(o.factor >= 0 && o.factor < 1, who, "factor", o.factor, "it must be in [0, 1)");
    detail::require_option(o.patience >= 0, who, "patience", double(o.patience), "it must be >= 0");
    detail::require_option(o.cooldown >= 0, who, "cooldown", double(o.cooldown), "it must be >= 0");
    detail::require_option(std::isfinite(o.threshold), who, "threshold", o.threshold, "it must be finite");
    detail::require_option(o.min_lr >= 0 && std::isfinite(o.min_lr), who, "min_lr", o.min_lr, "it must be finite and >= 0");
    detail::require_option(o.eps >= 0 && std::isfinite(o.eps), who, "eps", o.eps, "it must be finite and >= 0");
    best_ = worse();
    last_lr_ = t_->get_lr();
  }

  /// One epoch's metric (a validation loss in mode min).
  void step(double metric) {
    ++last_epoch_;
    if (is_better(metric, best_)) best_ = metric, num_bad_ = 0;
    else ++num_bad_;
    if (cooldown_counter_ > 0) --cooldown_counter_, num_bad_ = 0;  // bad epochs in the cooldown are not counted
    if (num_bad_ > o_.patience) {
      const double old_lr = t_->get_lr();
      const double new_lr = std::max(old_lr * o_.factor, o_.min_lr);
      if (old_lr - new_lr > o_.eps) t_->set_lr(new_lr);
      cooldown_counter_ = o_.cooldown;
      num_bad_ = 0;
    }
    last_lr_ = t_->get_lr();
  }
  double get_last_lr() const { return last_lr_; }
  std::int64_t last_epoch() const { return last_epoch_; }
  double best() const { return best_; }
  std::int64_t num_bad_epochs() const { return num_bad_; }
  bool in_cooldown() const { return cooldown_counter_ > 0; }
  const reduce_lr_on_plateau_options& options() const { return o_; }
  /// Forgets the best value, the bad epochs and the cooldown (PyTorch's _reset).
  void reset() { best_ = worse(), cooldown_counter_ = 0, num_bad_ = 0; }

 private:
  double worse() const {
    return o_.mode == plateau_mode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  }
  bool is_better(double a, double best) const {
    const bool rel = o_.threshold_mode == threshold_mode::rel;
    if (o_.mode == plateau_mode::min) return rel ? a < best * (1. - o_.threshold) : a < best - o_.threshold;
    return rel ? a > best * (o_.threshold + 1.) : a > best + o_.threshold;
  }
  std::shared_ptr<detail::lr_target> t_;
  reduce_lr_on_plateau_options o_;
  double best_ = 0, last_lr_ = 0;
  std::int64_t last_epoch_ = 0, num_bad_ = 0, cooldown_counter_ = 0;
};

}  // namespace tessera::optim
