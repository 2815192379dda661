// Optimizers (tessera/optim/optim.hpp) against reference sequences written as plain loops in double (PyTorch's
// update rules as torch.optim documents them), for float and double parameters: SGD with momentum, dampening,
// Nesterov and weight decay; Adam (L2) and AdamW (decoupled), bias correction on the first steps; parameters
// without gradients; zero_grad; state saved after 2 steps and loaded into a fresh optimizer (through
// for_each_state and a checkpoint file) continuing bit for bit; the two-thread split of large parameters;
// option errors; and small quadratics built with tessera::ad minimised by SGD with momentum and by Adam.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tessera/autodiff/ops.hpp"
#include "tessera/core/random.hpp"
#include "tessera/io/checkpoint.hpp"
#include "tessera/nn/parameter.hpp"
#include "tessera/optim/optim.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
namespace optim = tessera::optim;
using ts::index_t;

namespace {

/// Parameters of several shapes (rank 1 and 2) with deterministic values, and a way to set their gradients.
template <class T>
struct Params {
  std::vector<nn::parameter_ref<T>> refs;
  std::vector<std::function<T*()>> grad_buffer;  ///< mutable_grad().data(): creates the gradient

  template <int R>
  void add(const std::string& name, const ts::dims_t<R>& dims, std::uint64_t seed) {
    ts::Tensor<T, ts::dyn_shape_t<R>> t(dims);
    ts::Rng rng(seed);
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(rng.uniform(-1.0f, 1.0f));
    ad::Var<T, R> v(t, true);
    refs.push_back(nn::make_parameter_ref(name, v));
    grad_buffer.push_back([v]() mutable { return v.mutable_grad().data(); });
  }
  std::vector<std::vector<double>> values() const {
    std::vector<std::vector<double>> out;
    for (const auto& r : refs) {
      const T* p = r.value();
      out.emplace_back(p, p + r.size);
    }
    return out;
  }
};

/// The standard set: sizes that leave a tail after the SIMD packets (37), a 2-d one, and a single element.
template <class T>
Params<T> make_params() {
  Params<T> ps;
  ps.template add<1>("0.weight", {37}, 1);
  ps.template add<2>("0.bias", {3, 5}, 2);
  ps.template add<1>("1.scale", {1}, 3);
  return ps;
}

/// The gradient of element i of parameter j at step k (exactly representable in T, so the reference sees the same).
template <class T>
T grad_value(std::size_t j, index_t i, int k) {
  return T(std::sin(0.37 * double(i) + 1.1 * double(k) + 0.5 * double(j)) * (1.0 + 0.5 * std::cos(0.2 * double(i))));
}
template <class T>
void set_grads(Params<T>& ps, int k, const std::vector<bool>& which = {}) {
  for (std::size_t j = 0; j < ps.refs.size(); ++j) {
    if (!which.empty() && !which[j]) continue;
    T* g = ps.grad_buffer[j]();
    for (index_t i = 0; i < ps.refs[j].size; ++i) g[i] = grad_value<T>(j, i, k);
  }
}

/// Relative tolerance of a parameter against its double-precision reference after a few steps.
template <class T>
constexpr double tolerance = std::is_same_v<T, float> ? 2e-6 : 1e-13;

template <class T>
void check_close(const Params<T>& ps, const std::vector<std::vector<double>>& ref, const std::string& what) {
  for (std::size_t j = 0; j < ps.refs.size(); ++j) {
    const T* p = ps.refs[j].value();
    double worst = 0;
    index_t at = 0;
    for (index_t i = 0; i < ps.refs[j].size; ++i) {
      const double e = std::abs(double(p[i]) - ref[j][i]) / (1.0 + std::abs(ref[j][i]));
      if (e > worst) worst = e, at = i;
    }
    INFO(what << ": parameter " << ps.refs[j].name << ", worst element " << at << ": " << double(p[at])
              << " vs reference " << ref[j][at]);
    CHECK(worst <= tolerance<T>);
  }
}

// ---- references: plain loops in double, PyTorch's documented rules ---------------------------------------------

struct SgdRef {
  optim::sgd_options o;
  std::vector<std::vector<double>> p, buf;
  std::vector<int> updates;
  void step(const std::vector<std::vector<double>>& grads, const std::vector<bool>& has_grad) {
    if (buf.empty()) buf.resize(p.size()), updates.assign(p.size(), 0);
    for (std::size_t j = 0; j < p.size(); ++j) {
      if (!has_grad[j]) continue;
      buf[j].resize(p[j].size());
      for (std::size_t i = 0; i < p[j].size(); ++i) {
        double g = grads[j][i] + o.weight_decay * p[j][i];
        if (o.momentum != 0) {
          if (updates[j] == 0) buf[j][i] = g;
          else buf[j][i] = o.momentum * buf[j][i] + (1 - o.dampening) * g;
          g = o.nesterov ? g + o.momentum * buf[j][i] : buf[j][i];
        }
        p[j][i] -= o.lr * g;
      }
      ++updates[j];
    }
  }
};

struct AdamRef {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;
  std::vector<std::vector<double>> p, m, v;
  std::vector<int> t;
  void step(const std::vector<std::vector<double>>& grads, const std::vector<bool>& has_grad) {
    if (m.empty()) m.resize(p.size()), v.resize(p.size()), t.assign(p.size(), 0);
    for (std::size_t j = 0; j < p.size(); ++j) {
      if (!has_grad[j]) continue;
      m[j].resize(p[j].size(), 0.0);
      v[j].resize(p[j].size(), 0.0);
      const int tj = ++t[j];
      for (std::size_t i = 0; i < p[j].size(); ++i) {
        double g = grads[j][i];
        if (decoupled) p[j][i] *= 1 - lr * weight_decay;
        else g += weight_decay * p[j][i];
        m[j][i] = beta1 * m[j][i] + (1 - beta1) * g;
        v[j][i] = beta2 * v[j][i] + (1 - beta2) * g * g;
        const double m_hat = m[j][i] / (1 - std::pow(beta1, tj));
        const double v_hat = v[j][i] / (1 - std::pow(beta2, tj));
        p[j][i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
      }
    }
  }
};

template <class T>
std::vector<std::vector<double>> grads_at(const Params<T>& ps, int k) {
  std::vector<std::vector<double>> g;
  for (std::size_t j = 0; j < ps.refs.size(); ++j) {
    g.emplace_back();
    for (index_t i = 0; i < ps.refs[j].size; ++i) g.back().push_back(double(grad_value<T>(j, i, k)));
  }
  return g;
}

/// All state tensors of an optimizer, copied, by name.
template <class Opt, class T = typename Opt::value_type>
std::map<std::string, std::vector<T>> state_of(Opt& opt) {
  std::map<std::string, std::vector<T>> out;
  opt.for_each_state([&](const std::string& name, optim::state_tensor<T>& t) {
    out[name] = std::vector<T>(t.data(), t.data() + t.size());
  });
  return out;
}

template <class T>
bool bitwise_equal(const Params<T>& a, const Params<T>& b) {
  for (std::size_t j = 0; j < a.refs.size(); ++j)
    if (std::memcmp(a.refs[j].value(), b.refs[j].value(), std::size_t(a.refs[j].size) * sizeof(T)) != 0) return false;
  return true;
}

struct temp_file {
  std::filesystem::path path;
  explicit temp_file(const std::string& tag)
      : path(std::filesystem::temp_directory_path() / ("tessera_optim_" + tag + "_" + std::to_string(::getpid()) + ".ckpt")) {}
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

TEMPLATE_TEST_CASE("SGD follows PyTorch's update rule step by step", "[optim][sgd]", float, double) {
  using T = TestType;
  const std::vector<optim::sgd_options> configs = {
      {.lr = 0.1},
      {.lr = 0.1, .weight_decay = 0.01},
      {.lr = 0.05, .momentum = 0.9},
      {.lr = 0.05, .momentum = 0.9, .dampening = 0.3, .weight_decay = 0.05},
      {.lr = 0.05, .momentum = 0.9, .nesterov = true},
      {.lr = 0.02, .momentum = 0.8, .weight_decay = 0.02, .nesterov = true},
  };
  for (std::size_t c = 0; c < configs.size(); ++c) {
    const auto& o = configs[c];
    INFO("config " << c << ": lr " << o.lr << " momentum " << o.momentum << " dampening " << o.dampening
                   << " weight_decay " << o.weight_decay << " nesterov " << o.nesterov);
    Params<T> ps = make_params<T>();
    SgdRef ref{o, ps.values(), {}, {}};
    optim::SGD<T> opt(ps.refs, o);
    const std::vector<bool> all(ps.refs.size(), true);
    for (int k = 0; k < 6; ++k) {
      set_grads(ps, k);
      opt.step();
      ref.step(grads_at(ps, k), all);
      check_close(ps, ref.p, "step " + std::to_string(k + 1));
    }
    CHECK(opt.steps() == 6);
  }
}

TEMPLATE_TEST_CASE("Adam and AdamW follow PyTorch's update rules, bias correction included", "[optim][adam]", float,
                   double) {
  using T = TestType;
  struct config {
    double lr, beta1, beta2, eps, wd;
    bool decoupled;
  };
  const std::vector<config> configs = {
      {1e-3, 0.9, 0.999, 1e-8, 0.0, false}, {0.01, 0.9, 0.999, 1e-8, 0.1, false}, {0.01, 0.8, 0.99, 1e-6, 0.0, true},
      {0.01, 0.9, 0.999, 1e-8, 0.1, true},  {0.05, 0.5, 0.9, 1e-3, 0.2, false},
  };
  for (std::size_t c = 0; c < configs.size(); ++c) {
    const auto& o = configs[c];
    INFO("config " << c << (o.decoupled ? " AdamW" : " Adam") << ": lr " << o.lr << " betas " << o.beta1 << ", "
                   << o.beta2 << " eps " << o.eps << " weight_decay " << o.wd);
    Params<T> ps = make_params<T>();
    AdamRef ref{o.lr, o.beta1, o.beta2, o.eps, o.wd, o.decoupled, ps.values(), {}, {}, {}};
    const auto p0 = ps.values();
    auto run = [&](auto& opt) {
      const std::vector<bool> all(ps.refs.size(), true);
      for (int k = 0; k < 5; ++k) {
        set_grads(ps, k);
        opt.step();
        ref.step(grads_at(ps, k), all);
        check_close(ps, ref.p, "step " + std::to_string(k + 1));
        if (k == 0 && o.wd == 0.0) {
          // bias correction: after the first step m_hat = g and v_hat = g^2, so p moves by lr * g / (|g| + eps)
          const auto g = grads_at(ps, 0);
          for (std::size_t j = 0; j < ps.refs.size(); ++j)
            for (index_t i = 0; i < ps.refs[j].size; ++i) {
              const double expect = p0[j][i] - o.lr * g[j][i] / (std::abs(g[j][i]) + o.eps);
              REQUIRE(double(ps.refs[j].value()[i]) == Approx(expect).epsilon(tolerance<T>).margin(tolerance<T>));
            }
        }
      }
    };
    if (o.decoupled) {
      optim::AdamW<T> opt(ps.refs, {.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.wd});
      run(opt);
    } else {
      optim::Adam<T> opt(ps.refs, {.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.wd});
      run(opt);
    }
  }
}

TEST_CASE("Adam's and AdamW's defaults are PyTorch's", "[optim][adam]") {
  Params<float> ps = make_params<float>();
  optim::Adam<float> adam(ps.refs);
  CHECK(adam.lr() == 1e-3);
  CHECK(adam.beta1() == 0.9);
  CHECK(adam.beta2() == 0.999);
  CHECK(adam.eps() == 1e-8);
  CHECK(adam.weight_decay() == 0.0);
  optim::AdamW<float> adamw(ps.refs);
  CHECK(adamw.weight_decay() == 1e-2);
  adamw.set_lr(0.5);
  CHECK(adamw.lr() == 0.5);
  CHECK(adamw.options().lr == 0.5);
}

TEMPLATE_TEST_CASE("parameters without a gradient are skipped and keep their own step count", "[optim]", float, double) {
  using T = TestType;
  const std::vector<bool> first_two = {true, true, false};
  const std::vector<bool> all = {true, true, true};
  SECTION("SGD with momentum: the late parameter's first update sets its buffer to its gradient") {
    Params<T> ps = make_params<T>();
    const optim::sgd_options o{.lr = 0.1, .momentum = 0.9, .dampening = 0.5};
    SgdRef ref{o, ps.values(), {}, {}};
    optim::SGD<T> opt(ps.refs, o);
    const T untouched = ps.refs[2].value()[0];
    for (int k = 0; k < 3; ++k) {
      set_grads(ps, k, first_two);
      REQUIRE(ps.refs[2].grad() == nullptr);
      opt.step();
      ref.step(grads_at(ps, k), first_two);
      CHECK(ps.refs[2].value()[0] == untouched);
    }
    check_close(ps, ref.p, "before the third parameter has a gradient");
    for (int k = 3; k < 6; ++k) {
      set_grads(ps, k, all);
      opt.step();
      ref.step(grads_at(ps, k), all);
      check_close(ps, ref.p, "step " + std::to_string(k + 1));
    }
    auto st = state_of(opt);
    CHECK(st.at("step")[0] == T(6));
    CHECK(st.at("0.weight.step")[0] == T(6));
    CHECK(st.at("1.scale.step")[0] == T(3));
  }
  SECTION("Adam: the late parameter's bias correction starts at its own first step") {
    Params<T> ps = make_params<T>();
    AdamRef ref{0.01, 0.9, 0.999, 1e-8, 0.0, false, ps.values(), {}, {}, {}};
    optim::Adam<T> opt(ps.refs, {.lr = 0.01});
    const T untouched = ps.refs[2].value()[0];
    for (int k = 0; k < 2; ++k) {
      set_grads(ps, k, first_two);
      opt.step();
      ref.step(grads_at(ps, k), first_two);
      CHECK(ps.refs[2].value()[0] == untouched);
    }
    set_grads(ps, 2, all);
    opt.step();
    ref.step(grads_at(ps, 2), all);
    check_close(ps, ref.p, "step 3");
    // its first update: lr * g / (|g| + eps), the bias-corrected first step
    const double g = double(grad_value<T>(2, 0, 2));
    CHECK(double(ps.refs[2].value()[0]) ==
          Approx(double(untouched) - 0.01 * g / (std::abs(g) + 1e-8)).epsilon(tolerance<T>).margin(tolerance<T>));
    auto st = state_of(opt);
    CHECK(st.at("0.weight.step")[0] == T(3));
    CHECK(st.at("1.scale.step")[0] == T(1));
  }
}

TEST_CASE("zero_grad zeroes every parameter's gradient", "[optim]") {
  auto w = ad::Var<float, 2>(ts::Tensor<float, ts::dyn_shape_t<2>>(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3}), true);
  auto b = ad::Var<float, 1>(ts::Tensor<float, ts::dyn_shape_t<1>>(std::vector<float>{0.5f, -0.5f, 2}, {3}), true);
  std::vector<nn::parameter_ref<float>> params = {nn::make_parameter_ref("0.weight", w),
                                                  nn::make_parameter_ref("0.bias", b)};
  optim::SGD<float> opt(params, {.lr = 0.1});
  ad::sum(ad::square(w * b)).backward();
  REQUIRE(params[0].grad() != nullptr);
  REQUIRE(params[1].grad() != nullptr);
  CHECK(params[0].grad()[4] != 0.0f);  // d/dw (w b)^2 = 2 w b^2
  opt.zero_grad();
  for (const auto& p : params)
    for (index_t i = 0; i < p.size; ++i) CHECK(p.grad()[i] == 0.0f);
  const std::vector<float> before(params[0].value(), params[0].value() + 6);
  opt.step();  // zero gradients: nothing moves
  CHECK(std::vector<float>(params[0].value(), params[0].value() + 6) == before);
}

TEMPLATE_TEST_CASE("optimizer state saved after 2 steps and loaded into a fresh optimizer continues bit for bit",
                   "[optim][state]", float, double) {
  using T = TestType;
  auto scenario = [](auto make_opt, const std::vector<std::string>& per_param) {
    Params<T> a = make_params<T>();
    auto opt_a = make_opt(a.refs);
    for (int k = 0; k < 2; ++k) {
      set_grads(a, k);
      opt_a.step();
    }
    // the state names
    std::vector<std::string> names;
    opt_a.for_each_state([&](const std::string& n, optim::state_tensor<T>&) { names.push_back(n); });
    std::vector<std::string> expect = {"step"};
    if (!per_param.empty())
      for (const auto& r : a.refs) {
        expect.push_back(r.name + ".step");
        for (const auto& s : per_param) expect.push_back(r.name + "." + s);
      }
    CHECK(names == expect);

    // save: the parameters and the optimizer state, through a checkpoint file
    temp_file file("state");
    ts::checkpoint_writer w;
    for (std::size_t j = 0; j < a.refs.size(); ++j) {
      ts::Tensor<T, ts::Shape<ts::dyn>> t(a.refs[j].size);
      std::memcpy(t.data(), a.refs[j].value(), std::size_t(t.size()) * sizeof(T));
      w.add("model." + a.refs[j].name, t);
    }
    w.add_all([&](auto&& f) { opt_a.for_each_state(f); }, "optim.");
    w.write(file.path);

    // load into fresh parameters and a fresh optimizer
    Params<T> b = make_params<T>();
    auto opt_b = make_opt(b.refs);
    ts::checkpoint_reader r(file.path);
    for (std::size_t j = 0; j < b.refs.size(); ++j) {
      ts::Tensor<T, ts::Shape<ts::dyn>> t(b.refs[j].size);
      r.read_into("model." + b.refs[j].name, t);
      std::memcpy(b.refs[j].value(), t.data(), std::size_t(t.size()) * sizeof(T));
    }
    CHECK(r.read_all([&](auto&& f) { opt_b.for_each_state(f); }, "optim.", ts::unmatched_entries::error) ==
          expect.size());
    CHECK(opt_b.steps() == 2);
    REQUIRE(bitwise_equal(a, b));
    CHECK(state_of(opt_a) == state_of(opt_b));

    for (int k = 2; k < 6; ++k) {
      set_grads(a, k);
      set_grads(b, k);
      opt_a.step();
      opt_b.step();
      INFO("step " << k + 1);
      CHECK(bitwise_equal(a, b));
    }
    CHECK(state_of(opt_a) == state_of(opt_b));

    // the same through for_each_state alone (in-memory copies)
    auto saved = state_of(opt_a);
    Params<T> c = make_params<T>();
    for (std::size_t j = 0; j < c.refs.size(); ++j)
      std::memcpy(c.refs[j].value(), a.refs[j].value(), std::size_t(a.refs[j].size) * sizeof(T));
    auto opt_c = make_opt(c.refs);
    opt_c.for_each_state([&](const std::string& n, optim::state_tensor<T>& t) {
      REQUIRE(saved.at(n).size() == std::size_t(t.size()));
      std::memcpy(t.data(), saved.at(n).data(), saved.at(n).size() * sizeof(T));
    });
    set_grads(a, 7);
    set_grads(c, 7);
    opt_a.step();
    opt_c.step();
    CHECK(bitwise_equal(a, c));

    // and without loading the state, the continuation differs (the test can tell)
    Params<T> d = make_params<T>();
    for (std::size_t j = 0; j < d.refs.size(); ++j)
      std::memcpy(d.refs[j].value(), b.refs[j].value(), std::size_t(b.refs[j].size) * sizeof(T));
    auto opt_d = make_opt(d.refs);
    set_grads(b, 7);
    set_grads(d, 7);
    opt_b.step();
    opt_d.step();
    CHECK_FALSE(bitwise_equal(b, d));
  };
  SECTION("SGD, Nesterov momentum and weight decay") {
    scenario([](auto& refs) { return optim::SGD<T>(refs, {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}); },
             {"momentum_buffer"});
  }
  SECTION("SGD with momentum and dampening") {
    scenario([](auto& refs) { return optim::SGD<T>(refs, {.lr = 0.05, .momentum = 0.5, .dampening = 0.2}); },
             {"momentum_buffer"});
  }
  SECTION("Adam with L2 weight decay") {
    scenario([](auto& refs) { return optim::Adam<T>(refs, {.lr = 0.01, .weight_decay = 0.1}); },
             {"exp_avg", "exp_avg_sq"});
  }
  SECTION("AdamW") {
    scenario([](auto& refs) { return optim::AdamW<T>(refs, {.lr = 0.01}); }, {"exp_avg", "exp_avg_sq"});
  }
}

TEST_CASE("plain SGD has only the step count as state", "[optim][state]") {
  Params<double> ps = make_params<double>();
  optim::SGD<double> opt(ps.refs, {.lr = 0.1});
  std::vector<std::string> names;
  opt.for_each_state([&](const std::string& n, optim::state_tensor<double>& t) {
    names.push_back(n);
    CHECK(t.size() == 1);
  });
  CHECK(names == std::vector<std::string>{"step"});
}

TEMPLATE_TEST_CASE("large parameters (two threads) match the reference and the one-thread result bit for bit",
                   "[optim][threads]", float, double) {
  using T = TestType;
  constexpr index_t n = 70001;  // > 2^16: split over two threads when OpenMP is on
  auto make = [] {
    Params<T> ps;
    ps.template add<1>("big", {n}, 11);
    ps.template add<1>("small", {5}, 12);
    return ps;
  };
  auto run = [&](Params<T>& ps, int threads, auto make_opt) {
#if defined(_OPENMP)
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    auto opt = make_opt(ps.refs);
    for (int k = 0; k < 3; ++k) {
      set_grads(ps, k);
      opt.step();
    }
#if defined(_OPENMP)
    omp_set_num_threads(saved);
#endif
  };
  SECTION("Adam") {
    auto make_opt = [](auto& refs) { return optim::Adam<T>(refs, {.lr = 0.01, .weight_decay = 0.01}); };
    Params<T> one = make(), two = make();
    AdamRef ref{0.01, 0.9, 0.999, 1e-8, 0.01, false, one.values(), {}, {}, {}};
    run(one, 1, make_opt);
    run(two, 2, make_opt);
    for (int k = 0; k < 3; ++k) ref.step(grads_at(one, k), {true, true});
    check_close(two, ref.p, "two threads");
    CHECK(bitwise_equal(one, two));
  }
  SECTION("SGD") {
    auto make_opt = [](auto& refs) { return optim::SGD<T>(refs, {.lr = 0.1, .momentum = 0.9, .nesterov = true}); };
    Params<T> one = make(), two = make();
    SgdRef ref{{.lr = 0.1, .momentum = 0.9, .nesterov = true}, one.values(), {}, {}};
    run(one, 1, make_opt);
    run(two, 2, make_opt);
    for (int k = 0; k < 3; ++k) ref.step(grads_at(one, k), {true, true});
    check_close(two, ref.p, "two threads");
    CHECK(bitwise_equal(one, two));
  }
}

TEST_CASE("invalid options and parameter lists are rejected with the option named", "[optim][errors]") {
  Params<float> ps = make_params<float>();
  using Catch::Contains;
  CHECK_THROWS_WITH(optim::SGD<float>(ps.refs, {}), Contains("SGD") && Contains("lr is not set"));
  CHECK_THROWS_AS(optim::SGD<float>(ps.refs, {}), std::invalid_argument);
  CHECK_THROWS_WITH(optim::SGD<float>(ps.refs, {.lr = -0.1}), Contains("lr") && Contains("-0.1"));
  CHECK_THROWS_WITH(optim::SGD<float>(ps.refs, {.lr = 0.1, .momentum = -0.5}), Contains("momentum"));
  CHECK_THROWS_WITH(optim::SGD<float>(ps.refs, {.lr = 0.1, .weight_decay = -1}), Contains("weight_decay"));
  CHECK_THROWS_WITH(optim::SGD<float>(ps.refs, {.lr = 0.1, .nesterov = true}),
                    Contains("nesterov") && Contains("momentum > 0"));
  CHECK_THROWS_WITH(optim::SGD<float>(ps.refs, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                    Contains("nesterov") && Contains("dampening = 0"));
  CHECK_THROWS_AS(optim::SGD<float>(ps.refs, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                  std::invalid_argument);
  CHECK_THROWS_WITH(optim::Adam<float>(ps.refs, {.lr = -1}), Contains("Adam") && Contains("lr"));
  CHECK_THROWS_WITH(optim::Adam<float>(ps.refs, {.beta1 = 1.0}), Contains("beta1") && Contains("[0, 1)"));
  CHECK_THROWS_WITH(optim::Adam<float>(ps.refs, {.beta2 = -0.1}), Contains("beta2"));
  CHECK_THROWS_WITH(optim::AdamW<float>(ps.refs, {.eps = -1e-8}), Contains("AdamW") && Contains("eps"));
  CHECK_THROWS_WITH(optim::AdamW<float>(ps.refs, {.weight_decay = -0.01}), Contains("weight_decay"));
  CHECK_THROWS_WITH(optim::AdamW<float>(ps.refs, {.lr = std::nan("")}), Contains("lr"));

  optim::SGD<float> opt(ps.refs, {.lr = 0.1});
  CHECK_THROWS_WITH(opt.set_lr(-0.5), Contains("lr"));
  CHECK(opt.lr() == 0.1);

  CHECK_THROWS_WITH(optim::Adam<float>(std::vector<nn::parameter_ref<float>>{}), Contains("empty"));
  auto twice = ps.refs;
  twice.push_back(ps.refs[0]);
  CHECK_THROWS_WITH(optim::Adam<float>(twice), Contains("0.weight") && Contains("more than once"));
  auto aliased = ps.refs;
  aliased.push_back(ps.refs[0]);
  aliased.back().name = "alias";
  CHECK_THROWS_WITH(optim::Adam<float>(aliased), Contains("alias") && Contains("same tensor"));
  std::vector<nn::parameter_ref<float>> unbound(1);
  unbound[0].name = "x";
  CHECK_THROWS_WITH(optim::Adam<float>(unbound), Contains("'x'") && Contains("not bound"));
}

TEMPLATE_TEST_CASE("SGD with momentum and Adam minimise a quadratic built with tessera::ad", "[optim][e2e]", float,
                   double) {
  using T = TestType;
  constexpr index_t n = 20;
  ts::Tensor<T, ts::dyn_shape_t<1>> target(n), start(n);
  ts::Rng rng(7);
  for (index_t i = 0; i < n; ++i) {
    target.data()[i] = T(rng.uniform(-2.0f, 2.0f));
    start.data()[i] = T(rng.uniform(-2.0f, 2.0f));
  }
  const auto tgt = ad::constant(target);
  auto loss_of = [&](const ad::Var<T, 1>& w) { return ad::sum(ad::square(w - tgt)); };
  auto minimise = [&](auto make_opt, int steps) {
    auto w = ad::parameter(start);
    std::vector<nn::parameter_ref<T>> params = {nn::make_parameter_ref("w", w)};
    auto opt = make_opt(params);
    const double initial = double(loss_of(w).value().data()[0]);
    for (int s = 0; s < steps; ++s) {
      opt.zero_grad();
      auto loss = loss_of(w);
      loss.backward();
      opt.step();
    }
    const double final_loss = double(loss_of(w).value().data()[0]);
    INFO("initial loss " << initial << ", final loss " << final_loss);
    CHECK(initial > 1.0);
    CHECK(final_loss < 1e-6);
    double worst = 0;
    for (index_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(double(w.value().data()[i] - target.data()[i])));
    CHECK(worst < 1e-3);
  };
  SECTION("SGD, momentum 0.9") {
    minimise([](auto& p) { return optim::SGD<T>(p, {.lr = 0.05, .momentum = 0.9}); }, 300);
  }
  SECTION("SGD, Nesterov") {
    minimise([](auto& p) { return optim::SGD<T>(p, {.lr = 0.05, .momentum = 0.9, .nesterov = true}); }, 300);
  }
  SECTION("Adam") {
    minimise([](auto& p) { return optim::Adam<T>(p, {.lr = 0.05}); }, 2000);
  }
}
