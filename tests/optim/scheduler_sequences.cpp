// For tests/optim/scheduler_vs_torch.py: prints the learning rates (and OneCycleLR's momenta) that tessera's
// schedulers (tessera/optim/scheduler.hpp) give, one line per configuration: "<name> <value after construction>
// <value after step 1> ...". The script runs torch.optim.lr_scheduler with the same settings and compares.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/nn/parameter.hpp"
#include "tessera/optim/optim.hpp"
#include "tessera/optim/scheduler.hpp"

namespace ts = tessera;
namespace optim = tessera::optim;

namespace {

/// One tessera SGD on a 3-element parameter (its gradient is never produced: only the learning rate matters here).
struct sgd_holder {
  ts::ad::Var<float, 1, ts::cpu> v{ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu>(3), true};
  optim::SGD<float> opt;
  explicit sgd_holder(double lr) : opt({ts::nn::make_parameter_ref("w", v)}, {.lr = lr}) {}
};

/// An optimizer with a momentum (SGD's) or beta1 (Adam's) that OneCycleLR can cycle.
struct momentum_opt {
  double l, m = 0.9;
  double lr() const { return l; }
  void set_lr(double x) { l = x; }
  double momentum() const { return m; }
  void set_momentum(double x) { m = x; }
};
struct beta1_opt {
  double l, b = 0.9;
  double lr() const { return l; }
  void set_lr(double x) { l = x; }
  double beta1() const { return b; }
  void set_beta1(double x) { b = x; }
};

void print(const std::string& name, const std::vector<double>& v) {
  std::printf("%s", name.c_str());
  for (double x : v) std::printf(" %.17g", x);
  std::printf("\n");
}

template <class S>
void run(const std::string& name, S& s, int steps) {
  std::vector<double> v{s.get_last_lr()};
  for (int i = 0; i < steps; ++i) {
    s.step();
    v.push_back(s.get_last_lr());
  }
  print(name, v);
}

template <class O>
void run_one_cycle(const std::string& name, O& opt, const optim::one_cycle_lr_options& o, int steps,
                   double (*mom)(const O&)) {
  optim::OneCycleLR s(opt, o);
  std::vector<double> lr{s.get_last_lr()}, m{mom(opt)};
  for (int i = 0; i < steps; ++i) {
    s.step();
    lr.push_back(s.get_last_lr());
    m.push_back(mom(opt));
  }
  print(name, lr);
  print(name + ".momentum", m);
}

/// The metric ReduceLROnPlateau sees at epoch k (the script computes the same).
double metric(int k) { return 1.0 / (1.0 + 0.3 * k) + 0.08 * std::sin(1.7 * k) + (k % 7 == 3 ? 0.2 : 0.0); }

}  // namespace

int main() {
  { sgd_holder h(0.1); optim::StepLR s(h.opt, {.step_size = 3, .gamma = 0.5}); run("step", s, 40); }
  { sgd_holder h(0.37); optim::StepLR s(h.opt, {.step_size = 7, .gamma = 0.33}); run("step_b", s, 50); }
  { sgd_holder h(0.2); optim::MultiStepLR s(h.opt, {.milestones = {11, 2, 5, 5, 30}, .gamma = 0.3}); run("multistep", s, 40); }
  { sgd_holder h(0.5); optim::ExponentialLR s(h.opt, {.gamma = 0.93}); run("exp", s, 60); }
  { sgd_holder h(0.1); optim::CosineAnnealingLR s(h.opt, {.T_max = 10, .eta_min = 0.001}); run("cos", s, 45); }
  { sgd_holder h(0.05); optim::CosineAnnealingLR s(h.opt, {.T_max = 17}); run("cos_b", s, 60); }
  { sgd_holder h(0.1); optim::LinearLR s(h.opt, {.start_factor = 0.25, .total_iters = 8}); run("linear", s, 20); }
  { sgd_holder h(0.3); optim::LinearLR s(h.opt, {.start_factor = 1.0, .end_factor = 0.1, .total_iters = 13}); run("linear_decay", s, 25); }
  {
    momentum_opt o{0.01};
    run_one_cycle<momentum_opt>("onecycle_cos", o, {.max_lr = 0.8, .total_steps = 50}, 50,
                                [](const momentum_opt& x) { return x.m; });
  }
  {
    momentum_opt o{0.01};
    run_one_cycle<momentum_opt>("onecycle_linear3", o,
                                {.max_lr = 0.5, .total_steps = 37, .pct_start = 0.25, .anneal = optim::anneal_strategy::linear,
                                 .div_factor = 10, .final_div_factor = 100, .three_phase = true},
                                37, [](const momentum_opt& x) { return x.m; });
  }
  {
    beta1_opt o{0.01};
    run_one_cycle<beta1_opt>("onecycle_adam", o,
                             {.max_lr = 0.03, .epochs = 4, .steps_per_epoch = 9, .pct_start = 0.4,
                              .base_momentum = 0.8, .max_momentum = 0.97, .three_phase = true},
                             36, [](const beta1_opt& x) { return x.b; });
  }
  {
    sgd_holder h(0.1);
    optim::SequentialLR s(h.opt, {.milestones = {5}}, optim::linear_lr_options{.start_factor = 0.1, .total_iters = 5},
                          optim::cosine_annealing_lr_options{.T_max = 20, .eta_min = 0.002});
    run("sequential", s, 40);
  }
  {
    sgd_holder h(0.4);
    optim::SequentialLR s(h.opt, {.milestones = {4, 10}}, optim::step_lr_options{.step_size = 2, .gamma = 0.5},
                          optim::exponential_lr_options{.gamma = 0.9}, optim::multi_step_lr_options{.milestones = {3, 6}, .gamma = 0.7});
    run("sequential3", s, 25);
  }
  {
    sgd_holder h(0.1);
    optim::ChainedScheduler s(h.opt, optim::linear_lr_options{.start_factor = 0.2, .total_iters = 6},
                              optim::exponential_lr_options{.gamma = 0.95});
    run("chained", s, 30);
  }
  {
    sgd_holder h(0.2);
    optim::ChainedScheduler s(h.opt, optim::cosine_annealing_lr_options{.T_max = 9},
                              optim::step_lr_options{.step_size = 4, .gamma = 0.5});
    run("chained_cos", s, 30);
  }
  {
    sgd_holder h(0.1);
    optim::ReduceLROnPlateau s(h.opt, {.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.004});
    std::vector<double> v{s.get_last_lr()};
    for (int k = 0; k < 40; ++k) {
      s.step(metric(k));
      v.push_back(s.get_last_lr());
    }
    print("plateau", v);
  }
  {
    sgd_holder h(0.05);
    optim::ReduceLROnPlateau s(h.opt, {.mode = optim::plateau_mode::max, .factor = 0.7, .patience = 0, .threshold = 0.01,
                                       .threshold_mode = optim::threshold_mode::abs, .cooldown = 2});
    std::vector<double> v{s.get_last_lr()};
    for (int k = 0; k < 40; ++k) {
      s.step(-metric(k));
      v.push_back(s.get_last_lr());
    }
    print("plateau_max_abs", v);
  }
  return 0;
}
