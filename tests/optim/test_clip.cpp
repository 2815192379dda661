// Gradient clipping (tessera/optim/clip.hpp) against plain loops: clip_grad_norm's total norm for norm types 2, 1,
// 3, 0.5 and infinity over parameters of odd sizes (37, 3x5, 1, 1001), the scaling by max_norm / (total + 1e-6)
// only when it is below 1, parameters without gradients left out, NaN and infinite gradients (error_if_nonfinite,
// and PyTorch's scaling by the non-finite norm otherwise), a model (nn::Sequential) and a parameter list giving the
// same result, double parameters, clip_grad_value's clamp, and option errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/nn/parameter.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/optim/clip.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
namespace optim = tessera::optim;
using ts::index_t;

namespace {

template <class T>
struct Params {
  std::vector<nn::parameter_ref<T>> refs;
  std::vector<std::function<T*()>> make_grad;
  void add(const std::string& name, index_t n) {
    ts::Tensor<T, ts::Shape<ts::dyn>, ts::cpu> t(n);
    for (index_t i = 0; i < n; ++i) t.data()[i] = T(0.5);
    ad::Var<T, 1, ts::cpu> v(t, true);
    refs.push_back(nn::make_parameter_ref(name, v));
    make_grad.push_back([v]() mutable { return v.mutable_grad().data(); });
  }
  /// Gradient j filled with g(j, i).
  template <class G>
  void set(std::size_t j, G&& g) {
    T* p = make_grad[j]();
    for (index_t i = 0; i < refs[j].size; ++i) p[i] = T(g(j, i));
  }
  std::vector<std::vector<double>> grads() const {
    std::vector<std::vector<double>> out;
    for (const auto& r : refs) {
      const T* g = r.grad();
      out.emplace_back();
      if (g) out.back().assign(g, g + r.size);
    }
    return out;
  }
};

double gval(std::size_t j, index_t i) { return std::sin(0.7 * double(i) + 1.3 * double(j)) * (1.0 + 0.1 * double(i % 5)); }

template <class T>
Params<T> make(bool all_grads = true) {
  Params<T> ps;
  ps.add("a", 37);
  ps.add("b", 15);  // a 3x5 parameter's element count
  ps.add("c", 1);
  ps.add("d", 1001);
  for (std::size_t j = 0; j < ps.refs.size(); ++j)
    if (all_grads || j != 2) ps.set(j, gval);
  return ps;
}

/// The reference: (sum over every element of |g|^p)^(1/p), or max |g|.
double ref_norm(const std::vector<std::vector<double>>& g, double p) {
  double acc = 0;
  for (const auto& v : g)
    for (double x : v) acc = std::isinf(p) ? std::max(acc, std::abs(x)) : acc + std::pow(std::abs(x), p);
  return std::isinf(p) ? acc : std::pow(acc, 1.0 / p);
}

}  // namespace

TEST_CASE("clip_grad_norm: the total norm of order 2, 1, 3, 0.5 and inf; scaling when above max_norm", "[clip]") {
  for (double p : {2.0, 1.0, 3.0, 0.5, optim::inf_norm}) {
    INFO("norm_type " << p);
    auto ps = make<float>();
    const auto before = ps.grads();
    const double want = ref_norm(before, p);
    // above the norm: nothing changes
    CHECK(optim::clip_grad_norm(ps.refs, want * 1.5, p) == Approx(want).epsilon(1e-6));
    CHECK(ps.grads() == before);
    // below: every gradient times max_norm / (total + 1e-6)
    const double max_norm = want / 3.7;
    CHECK(optim::clip_grad_norm(ps.refs, max_norm, p) == Approx(want).epsilon(1e-6));
    const double coef = max_norm / (want + 1e-6);
    const auto after = ps.grads();
    for (std::size_t j = 0; j < after.size(); ++j)
      for (std::size_t i = 0; i < after[j].size(); ++i)
        REQUIRE(after[j][i] == Approx(before[j][i] * coef).epsilon(1e-5).margin(1e-7));
    CHECK(ref_norm(after, p) == Approx(max_norm).epsilon(1e-5));
  }
}

TEST_CASE("clip_grad_norm: the inf norm is the largest |g|, wherever it is", "[clip]") {
  auto ps = make<float>();
  ps.make_grad[3]()[1000] = -42.5f;  // the last element of the odd-sized parameter
  CHECK(optim::clip_grad_norm(ps.refs, 1e9, optim::inf_norm) == 42.5);
  ps.make_grad[2]()[0] = 50.0f;
  CHECK(optim::clip_grad_norm(ps.refs, 5.0, optim::inf_norm) == 50.0);
  CHECK(ps.grads()[2][0] == Approx(5.0 * 50.0 / (50.0 + 1e-6)));
  CHECK(ps.grads()[3][1000] == Approx(-42.5 * 5.0 / (50.0 + 1e-6)));
}

TEST_CASE("clip_grad_norm: parameters without a gradient are left out", "[clip]") {
  auto ps = make<double>(false);  // parameter "c" has no gradient
  const auto before = ps.grads();
  CHECK(before[2].empty());
  const double want = ref_norm(before, 2.0);
  CHECK(optim::clip_grad_norm(ps.refs, 0.1) == Approx(want).epsilon(1e-12));
  CHECK(ps.refs[2].grad() == nullptr);  // still none
  CHECK(ps.grads()[0][5] == Approx(before[0][5] * 0.1 / (want + 1e-6)).epsilon(1e-12));

  Params<float> none;
  none.add("x", 9);
  CHECK(optim::clip_grad_norm(none.refs, 1.0) == 0.0);
  std::vector<nn::parameter_ref<float>> empty;
  CHECK(optim::clip_grad_norm(empty, 1.0) == 0.0);
}

TEST_CASE("clip_grad_norm: non-finite norms", "[clip]") {
  SECTION("error_if_nonfinite: a NaN gradient is an error and nothing changes") {
    auto ps = make<float>();
    ps.make_grad[1]()[7] = std::numeric_limits<float>::quiet_NaN();
    const auto before = ps.grads();
    CHECK_THROWS_WITH(optim::clip_grad_norm(ps.refs, 1.0, 2.0, true), Catch::Contains("non-finite") || Catch::Contains("nan"));
    const auto after = ps.grads();
    CHECK(after[0] == before[0]);
    CHECK(std::isnan(after[1][7]));
    CHECK(after[1][6] == before[1][6]);
  }
  SECTION("error_if_nonfinite: an infinite gradient is an error for the inf norm too") {
    auto ps = make<float>();
    ps.make_grad[0]()[36] = -std::numeric_limits<float>::infinity();
    CHECK_THROWS_AS(optim::clip_grad_norm(ps.refs, 1.0, optim::inf_norm, true), std::runtime_error);
  }
  SECTION("without the error: NaN spreads to every gradient (PyTorch scales by the NaN coefficient)") {
    auto ps = make<float>();
    ps.make_grad[3]()[500] = std::numeric_limits<float>::quiet_NaN();
    CHECK(std::isnan(optim::clip_grad_norm(ps.refs, 1.0)));
    for (const auto& g : ps.grads())
      for (double x : g) REQUIRE(std::isnan(x));
  }
  SECTION("without the error: an infinite norm makes the finite gradients 0 and the infinite NaN") {
    auto ps = make<float>();
    ps.make_grad[0]()[3] = std::numeric_limits<float>::infinity();
    CHECK(std::isinf(optim::clip_grad_norm(ps.refs, 1.0)));
    const auto g = ps.grads();
    CHECK(std::isnan(g[0][3]));
    CHECK(g[0][4] == 0.0);
    CHECK(g[3][1000] == 0.0);
  }
}

TEST_CASE("clip_grad_norm and clip_grad_value on a model equal the parameter list's", "[clip]") {
  using Net = nn::Sequential<ts::Shape<ts::dyn, 7>, nn::Linear<7, 5>, nn::ReLU, nn::Linear<5, 3>>;
  Net a(1), b(1);
  auto ra = a.parameters(), rb = b.parameters();
  for (std::size_t j = 0; j < ra.size(); ++j) {
    float* ga = ra[j].ensure_grad();
    float* gb = rb[j].ensure_grad();
    for (index_t i = 0; i < ra[j].size; ++i) ga[i] = gb[i] = float(gval(j, i) * 3);
  }
  const double na = optim::clip_grad_norm(a, 0.75, 3.0);
  const double nb = optim::clip_grad_norm(rb, 0.75, 3.0);
  CHECK(na == nb);
  CHECK(na > 0.75);
  optim::clip_grad_value(a, 0.01);
  optim::clip_grad_value(rb, 0.01);
  for (std::size_t j = 0; j < ra.size(); ++j)
    for (index_t i = 0; i < ra[j].size; ++i) REQUIRE(ra[j].grad()[i] == rb[j].grad()[i]);
}

TEST_CASE("clip_grad_value: every element clamped to [-clip, clip]; NaN stays NaN", "[clip]") {
  auto ps = make<double>(false);
  ps.make_grad[3]()[17] = std::numeric_limits<double>::quiet_NaN();
  const auto before = ps.grads();
  optim::clip_grad_value(ps.refs, 0.37);
  const auto after = ps.grads();
  CHECK(after[2].empty());
  for (std::size_t j = 0; j < after.size(); ++j)
    for (std::size_t i = 0; i < after[j].size(); ++i) {
      const double x = before[j][i];
      if (std::isnan(x)) REQUIRE(std::isnan(after[j][i]));
      else REQUIRE(after[j][i] == (x > 0.37 ? 0.37 : x < -0.37 ? -0.37 : x));
    }
  optim::clip_grad_value(ps.refs, std::numeric_limits<double>::infinity());  // nothing to clamp
  CHECK(ps.grads()[0] == after[0]);
}

TEST_CASE("clip_grad_norm / clip_grad_value: option errors", "[clip]") {
  auto ps = make<float>();
  CHECK_THROWS_WITH(optim::clip_grad_norm(ps.refs, -1.0), Catch::Contains("max_norm"));
  CHECK_THROWS_WITH(optim::clip_grad_norm(ps.refs, std::nan("")), Catch::Contains("max_norm"));
  CHECK_THROWS_WITH(optim::clip_grad_norm(ps.refs, 1.0, 0.0), Catch::Contains("norm_type"));
  CHECK_THROWS_WITH(optim::clip_grad_norm(ps.refs, 1.0, -2.0), Catch::Contains("norm_type"));
  CHECK_THROWS_WITH(optim::clip_grad_value(ps.refs, -0.5), Catch::Contains("clip_value"));
}
