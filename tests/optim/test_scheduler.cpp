// Learning-rate schedulers (tessera/optim/scheduler.hpp) against closed-form formulas written here (PyTorch's
// documented schedules), over dozens of steps with odd settings: StepLR, MultiStepLR (repeated and unsorted
// milestones), ExponentialLR, CosineAnnealingLR (past T_max: periodic), LinearLR (warm-up and decay), OneCycleLR
// (cos and linear, two and three phases, momentum and beta1 cycling, stepping past the end), SequentialLR and
// ChainedScheduler, ReduceLROnPlateau (min/max, rel/abs, patience, cooldown, min_lr, eps) on a metric sequence whose
// reductions are worked out by hand; schedulers driving tessera's SGD and Adam; option errors.
// tests/optim/scheduler_vs_torch.py compares the same schedulers with torch.optim.lr_scheduler itself.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <stdexcept>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/nn/parameter.hpp"
#include "tessera/optim/optim.hpp"
#include "tessera/optim/scheduler.hpp"

namespace ts = tessera;
namespace optim = tessera::optim;

namespace {

constexpr double pi = std::numbers::pi;

/// An optimizer with a learning rate and an SGD-style momentum.
struct mock_sgd {
  double l, m = 0.9;
  double lr() const { return l; }
  void set_lr(double x) { l = x; }
  double momentum() const { return m; }
  void set_momentum(double x) { m = x; }
};
/// Only a learning rate.
struct mock_plain {
  double l;
  double lr() const { return l; }
  void set_lr(double x) { l = x; }
};

/// The learning rates after construction and after each of `steps` steps.
template <class S>
std::vector<double> sequence(S& s, int steps) {
  std::vector<double> v{s.get_last_lr()};
  for (int i = 0; i < steps; ++i) {
    s.step();
    v.push_back(s.get_last_lr());
  }
  return v;
}

template <class F>
void check_sequence(const std::vector<double>& got, F&& expected, double rel = 1e-12) {
  for (std::size_t e = 0; e < got.size(); ++e) {
    const double want = expected(int(e));
    INFO("epoch " << e << ": got " << got[e] << ", expected " << want);
    CHECK(std::abs(got[e] - want) <= rel * std::abs(want) + 1e-15);
  }
}

}  // namespace

TEST_CASE("StepLR: base_lr * gamma^floor(epoch / step_size)", "[scheduler]") {
  for (auto setting : {std::pair{3, 0.5}, std::pair{7, 0.33}, std::pair{1, 0.9}}) {
    const int step_size = setting.first;
    const double gamma = setting.second;
    mock_plain o{0.37};
    optim::StepLR s(o, {.step_size = step_size, .gamma = gamma});
    CHECK(s.last_epoch() == 0);
    auto v = sequence(s, 50);
    check_sequence(v, [&](int e) { return 0.37 * std::pow(gamma, e / step_size); });
    CHECK(o.l == v.back());
    CHECK(s.last_epoch() == 50);
    CHECK(s.base_lr() == 0.37);
  }
}

TEST_CASE("MultiStepLR: gamma at each milestone, repeated ones count twice, any order", "[scheduler]") {
  mock_plain o{0.2};
  optim::MultiStepLR s(o, {.milestones = {11, 2, 5, 5, 30}, .gamma = 0.3});
  auto v = sequence(s, 40);
  check_sequence(v, [](int e) {
    int n = (e >= 2) + 2 * (e >= 5) + (e >= 11) + (e >= 30);
    return 0.2 * std::pow(0.3, n);
  });
}

TEST_CASE("ExponentialLR: base_lr * gamma^epoch", "[scheduler]") {
  ts::ad::Var<double, 1, ts::cpu> w(ts::Tensor<double, ts::Shape<ts::dyn>, ts::cpu>(5), true);
  optim::SGD<double> opt({ts::nn::make_parameter_ref("w", w)}, {.lr = 0.5});
  optim::ExponentialLR s(opt, {.gamma = 0.93});
  auto v = sequence(s, 60);
  check_sequence(v, [](int e) { return 0.5 * std::pow(0.93, e); }, 1e-13);
  CHECK(opt.lr() == v.back());  // the scheduler drives the optimizer's learning rate
}

TEST_CASE("CosineAnnealingLR: the closed form, also past T_max (periodic, 2 T_max)", "[scheduler]") {
  for (auto setting : {std::pair{10, 0.001}, std::pair{17, 0.0}, std::pair{1, 0.01}, std::pair{4, 0.03}}) {
    const int T = setting.first;
    const double eta = setting.second;
    mock_plain o{0.1};
    optim::CosineAnnealingLR s(o, {.T_max = T, .eta_min = eta});
    auto v = sequence(s, 5 * T + 7);
    check_sequence(v, [&](int e) { return eta + (0.1 - eta) * (1 + std::cos(pi * e / T)) / 2; }, 1e-9);
  }
}

TEST_CASE("LinearLR: warm-up from start_factor to end_factor, decay, and flat after total_iters", "[scheduler]") {
  {
    mock_plain o{0.1};
    optim::LinearLR s(o, {.start_factor = 0.25, .total_iters = 8});
    check_sequence(sequence(s, 30), [](int e) { return 0.1 * (0.25 + 0.75 * std::min(e, 8) / 8.0); });
  }
  {
    mock_plain o{0.3};
    optim::LinearLR s(o, {.start_factor = 1.0, .end_factor = 0.1, .total_iters = 13});
    check_sequence(sequence(s, 25), [](int e) { return 0.3 * (1.0 - 0.9 * std::min(e, 13) / 13.0); });
  }
}

namespace {
/// OneCycleLR's schedule written out: phase ends (pct_start * T - 1, [2 pct_start T - 2,] T - 1), annealing from the
/// phase's start value to its end value.
struct one_cycle_reference {
  double max_lr, div, final_div, pct;
  int T;
  bool three, cos;
  double mom_hi = 0.95, mom_lo = 0.85;
  double anneal(double a, double b, double p) const { return cos ? b + (a - b) / 2 * (1 + std::cos(pi * p)) : a + (b - a) * p; }
  std::pair<double, double> at(int n) const {  // lr, momentum
    const double init = max_lr / div, low = init / final_div, e1 = pct * T - 1;
    if (!three) {
      if (n <= e1) return {anneal(init, max_lr, n / e1), anneal(mom_hi, mom_lo, n / e1)};
      const double p = (n - e1) / (T - 1 - e1);
      return {anneal(max_lr, low, p), anneal(mom_lo, mom_hi, p)};
    }
    const double e2 = 2 * pct * T - 2;
    if (n <= e1) return {anneal(init, max_lr, n / e1), anneal(mom_hi, mom_lo, n / e1)};
    if (n <= e2) return {anneal(max_lr, init, (n - e1) / (e2 - e1)), anneal(mom_lo, mom_hi, (n - e1) / (e2 - e1))};
    return {anneal(init, low, (n - e2) / (T - 1 - e2)), mom_hi};
  }
};
}  // namespace

TEST_CASE("OneCycleLR: cos and linear, two and three phases, momentum cycled inversely", "[scheduler]") {
  const one_cycle_reference cases[] = {
      {0.8, 25, 1e4, 0.3, 50, false, true},  {0.5, 10, 100, 0.25, 37, true, false},
      {0.03, 7, 3, 0.4, 36, true, true},     {1.5, 25, 1e4, 0.45, 23, false, false},
  };
  for (const auto& r : cases) {
    mock_sgd o{123.0};  // the optimizer's own lr does not matter: OneCycleLR starts at max_lr / div_factor
    optim::OneCycleLR s(o, {.max_lr = r.max_lr, .total_steps = r.T, .pct_start = r.pct,
                            .anneal = r.cos ? optim::anneal_strategy::cos : optim::anneal_strategy::linear,
                            .div_factor = r.div, .final_div_factor = r.final_div, .three_phase = r.three});
    for (int n = 0; n <= r.T; ++n) {
      if (n > 0) s.step();
      const auto [lr, mom] = r.at(n);
      INFO("T " << r.T << " step " << n);
      CHECK(s.get_last_lr() == Approx(lr).epsilon(1e-12));
      CHECK(o.l == s.get_last_lr());
      CHECK(o.m == Approx(mom).epsilon(1e-12));
      CHECK(s.get_last_momentum() == o.m);
      if (n == r.T - 1) CHECK(s.get_last_lr() == Approx(r.max_lr / r.div / r.final_div).epsilon(1e-9));  // the lowest
    }
    CHECK_THROWS_AS(s.step(), std::out_of_range);  // one past total_steps, as PyTorch refuses
  }
}

TEST_CASE("OneCycleLR: epochs * steps_per_epoch, beta1 cycling, and cycle_momentum = false", "[scheduler]") {
  struct mock_adam {
    double l = 0.001, b = 0.9;
    double lr() const { return l; }
    void set_lr(double x) { l = x; }
    double beta1() const { return b; }
    void set_beta1(double x) { b = x; }
  } a;
  optim::OneCycleLR s(a, {.max_lr = 0.01, .epochs = 3, .steps_per_epoch = 7, .base_momentum = 0.8, .max_momentum = 0.97});
  CHECK(s.total_steps() == 21);
  CHECK(a.b == 0.97);
  for (int i = 0; i < 5; ++i) s.step();
  const double e1 = 0.3 * 21 - 1;
  CHECK(a.b == Approx(0.8 + (0.97 - 0.8) / 2 * (1 + std::cos(pi * 5 / e1))).epsilon(1e-12));

  mock_plain p{0.1};
  CHECK_THROWS_AS(optim::OneCycleLR(p, {.max_lr = 0.1, .total_steps = 10}), std::invalid_argument);  // no momentum
  optim::OneCycleLR q(p, {.max_lr = 0.1, .total_steps = 10, .cycle_momentum = false});
  CHECK(p.l == Approx(0.1 / 25));
  CHECK(std::isnan(q.get_last_momentum()));
}

TEST_CASE("OneCycleLR: a phase of zero length is an error when reached", "[scheduler]") {
  mock_sgd o{0.1};
  // pct_start * total_steps - 1 = 0: the first phase has no length and step 0 falls in it (PyTorch divides by zero)
  CHECK_THROWS_AS(optim::OneCycleLR(o, {.max_lr = 0.1, .total_steps = 10, .pct_start = 0.1}), std::domain_error);
}

TEST_CASE("SequentialLR: linear warm-up, then cosine annealing from the base lr", "[scheduler]") {
  mock_plain o{0.1};
  optim::SequentialLR s(o, {.milestones = {5}}, optim::linear_lr_options{.start_factor = 0.1, .total_iters = 5},
                        optim::cosine_annealing_lr_options{.T_max = 20, .eta_min = 0.002});
  CHECK(s.size() == 2);
  check_sequence(sequence(s, 45), [](int e) {
    if (e < 5) return 0.1 * (0.1 + 0.9 * e / 5.0);
    return 0.002 + (0.1 - 0.002) * (1 + std::cos(pi * (e - 5) / 20)) / 2;
  }, 1e-9);
}

TEST_CASE("SequentialLR: three children, each restarting at its milestone", "[scheduler]") {
  mock_plain o{0.4};
  optim::SequentialLR s(o, {.milestones = {4, 10}}, optim::step_lr_options{.step_size = 2, .gamma = 0.5},
                        optim::exponential_lr_options{.gamma = 0.9},
                        optim::multi_step_lr_options{.milestones = {3, 6}, .gamma = 0.7});
  check_sequence(sequence(s, 25), [](int e) {
    if (e < 4) return 0.4 * std::pow(0.5, e / 2);
    if (e < 10) return 0.4 * std::pow(0.9, e - 4);
    const int k = e - 10;  // the MultiStepLR's own epoch
    return 0.4 * std::pow(0.7, (k >= 3) + (k >= 6));
  });
  CHECK_THROWS_AS(optim::SequentialLR(o, {.milestones = {4, 10}}, optim::step_lr_options{.step_size = 2}),
                  std::invalid_argument);
}

TEST_CASE("ChainedScheduler: the children's factors multiply", "[scheduler]") {
  mock_plain o{0.1};
  optim::ChainedScheduler s(o, optim::linear_lr_options{.start_factor = 0.2, .total_iters = 6},
                            optim::exponential_lr_options{.gamma = 0.95});
  check_sequence(sequence(s, 30), [](int e) { return 0.1 * (0.2 + 0.8 * std::min(e, 6) / 6.0) * std::pow(0.95, e); });
}

TEST_CASE("ReduceLROnPlateau: mode min, rel threshold, patience, cooldown, min_lr", "[scheduler]") {
  mock_plain o{1.0};
  optim::ReduceLROnPlateau s(o, {.factor = 0.5, .patience = 2, .threshold = 0.1, .cooldown = 1, .min_lr = 0.2});
  // improvement needs metric < best * 0.9
  const double metric[] = {10, 9.5, 9.2, 9.1, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8};
  // epoch: 1 best 10 | 2 bad1 | 3 bad2 | 4 bad3 -> 0.5, cooldown 1 | 5 8 < 9: best, cooldown ends | 6 bad1 | 7 bad2
  // | 8 bad3 -> 0.25, cooldown | 9 (cooldown: bad reset) | 10 bad1 | 11 bad2 | 12 bad3 -> max(0.125, 0.2) = 0.2
  // | 13 .. 16 at min_lr: 0.2 * 0.5 < min_lr, the drop 0.2 - 0.2 = 0 is below eps: unchanged
  const double want[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2};
  for (int e = 0; e < 16; ++e) {
    s.step(metric[e]);
    INFO("epoch " << e + 1);
    CHECK(s.get_last_lr() == Approx(want[e]));
    CHECK(o.l == s.get_last_lr());
  }
  CHECK(s.best() == 8);
  CHECK(s.last_epoch() == 16);
}

TEST_CASE("ReduceLROnPlateau: mode max, abs threshold, patience 0, eps, NaN metrics", "[scheduler]") {
  mock_plain o{0.05};
  optim::ReduceLROnPlateau s(o, {.mode = optim::plateau_mode::max, .factor = 0.7, .patience = 0, .threshold = 0.01,
                                 .threshold_mode = optim::threshold_mode::abs, .eps = 0.02});
  // better: metric > best + 0.01; patience 0: every bad epoch reduces, unless the drop is <= eps (0.02)
  s.step(0.5);   // best
  CHECK(o.l == 0.05);
  s.step(0.505); // not better by 0.01: bad -> 0.05 * 0.7 = 0.035, a drop of 0.015 <= eps: kept
  CHECK(o.l == 0.05);
  CHECK(s.num_bad_epochs() == 0);
  s.step(std::nan(""));  // NaN is never better
  CHECK(o.l == 0.05);
  mock_plain big{1.0};
  optim::ReduceLROnPlateau t(big, {.mode = optim::plateau_mode::max, .factor = 0.5, .patience = 1, .cooldown = 2});
  const double m[] = {0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2};
  // 1,2 better | 3 bad1 | 4 bad2 -> 0.5, cooldown 2 | 5, 6 in cooldown | 7 bad1 | 8 bad2 -> 0.25
  const double want[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25};
  for (int e = 0; e < 8; ++e) {
    t.step(m[e]);
    INFO("epoch " << e + 1);
    CHECK(big.l == want[e]);
  }
}

TEST_CASE("Schedulers: option errors name the scheduler and the option", "[scheduler]") {
  mock_sgd o{0.1};
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message([&] { optim::StepLR(o, {.step_size = 0}); }), Catch::Contains("StepLR") && Catch::Contains("step_size"));
  CHECK_THAT(message([&] { optim::ExponentialLR(o, {}); }), Catch::Contains("ExponentialLR") && Catch::Contains("gamma"));
  CHECK_THAT(message([&] { optim::CosineAnnealingLR(o, {.T_max = 0}); }), Catch::Contains("T_max"));
  CHECK_THAT(message([&] { optim::LinearLR(o, {.start_factor = 0}); }), Catch::Contains("start_factor"));
  CHECK_THAT(message([&] { optim::LinearLR(o, {.end_factor = 1.5}); }), Catch::Contains("end_factor"));
  CHECK_THAT(message([&] { optim::OneCycleLR(o, {.total_steps = 10}); }), Catch::Contains("max_lr"));
  CHECK_THAT(message([&] { optim::OneCycleLR(o, {.max_lr = 0.1}); }), Catch::Contains("total_steps"));
  CHECK_THAT(message([&] { optim::OneCycleLR(o, {.max_lr = 0.1, .total_steps = 10, .pct_start = 1.5}); }),
             Catch::Contains("pct_start"));
  CHECK_THAT(message([&] { optim::ReduceLROnPlateau(o, {.factor = 1.0}); }), Catch::Contains("factor"));
  CHECK_THAT(message([&] { optim::ReduceLROnPlateau(o, {.patience = -1}); }), Catch::Contains("patience"));
}

TEST_CASE("Schedulers drive tessera's Adam", "[scheduler]") {
  ts::ad::Var<float, 1, ts::cpu> w(ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu>(7), true);
  optim::Adam<float> opt({ts::nn::make_parameter_ref("w", w)}, {.lr = 0.01});
  optim::SequentialLR s(opt, {.milestones = {3}}, optim::linear_lr_options{.start_factor = 0.5, .total_iters = 3},
                        optim::step_lr_options{.step_size = 2, .gamma = 0.5});
  check_sequence(sequence(s, 12), [](int e) {
    if (e < 3) return 0.01 * (0.5 + 0.5 * e / 3.0);
    return 0.01 * std::pow(0.5, (e - 3) / 2);
  });
  CHECK(opt.lr() == s.get_last_lr());
}

TEST_CASE("OneCycleLR cycles tessera's SGD momentum and Adam's beta1", "[scheduler]") {
  ts::ad::Var<float, 1, ts::cpu> w(ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu>(5), true);
  optim::SGD<float> sgd({ts::nn::make_parameter_ref("w", w)}, {.lr = 0.1, .momentum = 0.9});
  optim::OneCycleLR s(sgd, {.max_lr = 0.2, .total_steps = 20, .base_momentum = 0.8, .max_momentum = 0.95});
  CHECK(sgd.momentum() == 0.95);
  const double e1 = 0.3 * 20 - 1;  // the first phase ends at step pct_start * total - 1
  for (int n = 1; n <= 4; ++n) {
    s.step();
    CHECK(sgd.momentum() == Approx(0.8 + (0.95 - 0.8) / 2 * (1 + std::cos(pi * n / e1))).epsilon(1e-12));
    CHECK(sgd.options().momentum == sgd.momentum());
    CHECK(sgd.lr() == s.get_last_lr());
  }
  optim::AdamW<float> adam({ts::nn::make_parameter_ref("w", w)}, {.lr = 0.01});
  optim::OneCycleLR a(adam, {.max_lr = 0.01, .total_steps = 10});
  CHECK(adam.beta1() == 0.95);
  a.step();
  CHECK(adam.beta1() == Approx(0.85 + 0.05 * (1 + std::cos(pi * 1 / (0.3 * 10 - 1)))).epsilon(1e-12));
  CHECK(adam.options().beta1 == adam.beta1());
  // an SGD built without momentum has no buffers to cycle
  optim::SGD<float> plain({ts::nn::make_parameter_ref("w", w)}, {.lr = 0.1});
  CHECK_THROWS_WITH(optim::OneCycleLR(plain, {.max_lr = 0.2, .total_steps = 20}), Catch::Contains("built with momentum = 0"));
  CHECK_THROWS_WITH(adam.set_beta1(1.0), Catch::Contains("beta1"));
}
