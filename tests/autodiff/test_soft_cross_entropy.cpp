// cross_entropy with class-probability targets (autodiff/soft_cross_entropy_ops.hpp): values against plain loops of
// PyTorch's formula (class weight, label smoothing, mean / sum / none; [N, C] and [N, C, d1, d2]; odd sizes; float
// and double; cpu and cpu_threads; the target as a tensor and as a Var), numbers computed by torch 1.13, gradients of
// the logits and of the target by central differences, and the errors (shapes named, reduction none refused).
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <tessera/autodiff/soft_cross_entropy_ops.hpp>
#include <vector>

#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::index_t;

namespace {
/// Per-target losses of x [N, C, S] against probabilities p of the same layout, in double:
/// -sum_c w_c ((1 - s) p_c + s / C) log_softmax(x)_c.
std::vector<double> soft_ce_ref(const std::vector<double>& x, const std::vector<double>& p, const std::vector<double>& w, index_t N,
                                index_t C, index_t S, double s) {
  std::vector<double> out(std::size_t(N * S));
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < S; ++k) {
      auto at = [&](index_t c) { return std::size_t((n * C + c) * S + k); };
      double mx = x[at(0)];
      for (index_t c = 1; c < C; ++c) mx = std::max(mx, x[at(c)]);
      double z = 0;
      for (index_t c = 0; c < C; ++c) z += std::exp(x[at(c)] - mx);
      double l = 0;
      for (index_t c = 0; c < C; ++c) {
        const double logp = x[at(c)] - mx - std::log(z);
        const double q = (1 - s) * p[at(c)] + s / double(C);
        l -= (w.empty() ? 1.0 : w[std::size_t(c)]) * q * logp;
      }
      out[std::size_t(n * S + k)] = l;
    }
  return out;
}

/// Logits and row-normalised probabilities (some rows one-hot, some with zeros) of dims d, class axis 1.
template <int R>
void make_inputs(const ts::dims_t<R>& d, std::vector<double>& x, std::vector<double>& p) {
  index_t n = 1, S = 1;
  for (int i = 0; i < R; ++i) n *= d[std::size_t(i)];
  for (int i = 2; i < R; ++i) S *= d[std::size_t(i)];
  const index_t N = d[0], C = d[1];
  x.resize(std::size_t(n));
  p.resize(std::size_t(n));
  const auto xv = gc::values<1>({n}, 3, -3.0, 3.0), pv = gc::values<1>({n}, 5, 0.0, 1.0);
  for (index_t i = 0; i < n; ++i) {
    x[std::size_t(i)] = xv.data()[i];
    p[std::size_t(i)] = i % 5 == 0 ? 0.0 : pv.data()[i];
  }
  for (index_t a = 0; a < N; ++a)
    for (index_t k = 0; k < S; ++k) {
      double sum = 0;
      for (index_t c = 0; c < C; ++c) sum += p[std::size_t((a * C + c) * S + k)];
      for (index_t c = 0; c < C; ++c) {
        double& v = p[std::size_t((a * C + c) * S + k)];
        if ((a + k) % 3 == 2) v = c == (a + k) % C ? 1.0 : 0.0;  // one-hot rows
        else v = sum > 0 ? v / sum : 1.0 / double(C);
      }
    }
}

template <class T, int R, class P>
void check_values(const ts::dims_t<R>& d, bool weighted, double smoothing, bool var_target) {
  std::vector<double> xh, ph;
  make_inputs<R>(d, xh, ph);
  const index_t N = d[0], C = d[1];
  const index_t S = index_t(xh.size()) / (N * C);
  std::vector<double> w;
  if (weighted)
    for (index_t c = 0; c < C; ++c) w.push_back(0.25 + 0.5 * double(c % 4));
  std::vector<T> xt(xh.begin(), xh.end()), pt(ph.begin(), ph.end());
  ad::Var<T, R, P> x(ts::Tensor<T, ts::dyn_shape_t<R>, P>(xt, d), false);
  ts::Tensor<T, ts::dyn_shape_t<R>, ts::cpu> p(pt, d);
  ad::cross_entropy_options o{.label_smoothing = smoothing};
  if (weighted) o.weight = ts::Tensor<double, ts::dyn_shape_t<1>, ts::cpu>(w, ts::dims_t<1>{C});
  std::vector<double> ref;
  {  // the reference sees the rounded inputs
    std::vector<double> xr(xt.begin(), xt.end()), pr(pt.begin(), pt.end());
    ref = soft_ce_ref(xr, pr, w, N, C, S, smoothing);
  }
  double sum = 0;
  for (double v : ref) sum += v;
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  auto scalar = [](const auto& v) { return double(v.value().data()[0]); };  // host policies
  ad::Var<T, R, P> pv(ts::Tensor<T, ts::dyn_shape_t<R>, P>(pt, d), false);
  auto unred = var_target ? ad::cross_entropy_unreduced(x, pv, o) : ad::cross_entropy_unreduced(x, p, o);
  ts::dims_t<R - 1> od{};
  od[0] = N;
  for (int i = 2; i < R; ++i) od[std::size_t(i - 1)] = d[std::size_t(i)];
  REQUIRE(unred.dims() == od);
  const auto& uh = unred.value();
  for (std::size_t k = 0; k < ref.size(); ++k) {
    INFO("target " << k);
    CHECK(double(uh.data()[k]) == Approx(ref[k]).epsilon(tol).margin(tol));
  }
  o.reduction = ad::reduction::sum;
  CHECK(scalar(var_target ? ad::cross_entropy(x, pv, o) : ad::cross_entropy(x, p, o)) == Approx(sum).epsilon(tol).margin(tol));
  o.reduction = ad::reduction::mean;  // divided by the number of targets, not by the weights
  CHECK(scalar(var_target ? ad::cross_entropy(x, pv, o) : ad::cross_entropy(x, p, o)) ==
        Approx(sum / double(N * S)).epsilon(tol).margin(tol));
}

template <class T, class P>
void values_all() {
  for (bool weighted : {false, true})
    for (double s : {0.0, 0.3, 1.0}) {
      INFO("weighted " << weighted << " smoothing " << s);
      check_values<T, 2, P>({7, 5}, weighted, s, false);
      check_values<T, 2, P>({1, 1}, weighted, s, true);
      check_values<T, 2, P>({3, 33}, weighted, s, true);
      check_values<T, 2, P>({65, 7}, weighted, s, false);
      check_values<T, 4, P>({2, 7, 3, 1}, weighted, s, true);
      check_values<T, 3, P>({3, 4, 33}, weighted, s, false);
    }
}
}  // namespace

TEST_CASE("cross_entropy with probability targets against loops", "[autodiff][loss][cross_entropy]") {
  values_all<double, ts::cpu>();
  values_all<float, ts::cpu_threads>();
  values_all<float, ts::cpu>();
  values_all<double, ts::cpu_threads>();
}

TEST_CASE("cross_entropy with probability targets: PyTorch's numbers", "[autodiff][loss][cross_entropy]") {
  using V2 = ad::Var<double, 2, ts::cpu>;
  const ts::dims_t<2> d{3, 4};
  V2 x(ts::Tensor<double, ts::dyn_shape_t<2>, ts::cpu>({0.5, -1.0, 2.0, 0.25, 1.5, 0.0, -0.5, -2.0, -0.75, 0.3, 0.9, 1.2}, d), true);
  V2 p(ts::Tensor<double, ts::dyn_shape_t<2>, ts::cpu>({0.1, 0.2, 0.3, 0.4, 0.7, 0.1, 0.1, 0.1, 0.0, 0.0, 1.0, 0.0}, d), true);
  const ad::loss_weight w = {0.5, 1.0, 2.0, 1.5};
  auto val = [](const auto& v) { return v.value().data()[0]; };
  // F.cross_entropy(x, p)
  CHECK(val(ad::cross_entropy(x, p.value())) == Approx(1.325341491644407).epsilon(1e-14));
  // F.cross_entropy(x, p, weight=w)
  CHECK(val(ad::cross_entropy(x, p, {.weight = w})) == Approx(1.9516453179630109).epsilon(1e-14));
  // F.cross_entropy(x, p, weight=w, label_smoothing=0.2, reduction='sum')
  CHECK(val(ad::cross_entropy(x, p, {.weight = w, .label_smoothing = 0.2, .reduction = ad::reduction::sum})) ==
        Approx(6.045454881844531).epsilon(1e-14));
  // F.cross_entropy(x, p, weight=w, label_smoothing=0.2, reduction='none')
  const auto none = ad::cross_entropy_unreduced(x, p, {.weight = w, .label_smoothing = 0.2});
  const double none_ref[] = {2.219433387812037, 1.6897237472328954, 2.136297746799599};
  for (int i = 0; i < 3; ++i) CHECK(none.value().data()[i] == Approx(none_ref[i]).epsilon(1e-14));
  // l = F.cross_entropy(x, p, weight=w, label_smoothing=0.2); l.backward(); x.grad, p.grad
  auto l = ad::cross_entropy(x, p, {.weight = w, .label_smoothing = 0.2});
  CHECK(val(l) == Approx(2.01515162728151).epsilon(1e-14));
  l.backward();
  const double gx[] = {0.05082370121688957,  -0.05382521260492351, 0.13154595611518616,  -0.1285444447271522,
                       0.11196810553266215,  0.004335027600776225, -0.05775434426188127, -0.0585487888715572,
                       0.029984846082355226, 0.09283332158272063,  -0.36714467943491824, 0.2443265117698424};
  const double gp[] = {0.24923719979310044, 0.8984743995862008, 0.1969487991724018, 0.8477115993793014,
                       0.04377883853676335, 0.48755767707352665, 1.2417820208137202, 1.53133651561029,
                       0.3704538916612323,  0.4609077833224647,  0.6018155666449294, 0.33136167498369706};
  for (int i = 0; i < 12; ++i) {
    INFO("element " << i);
    CHECK(x.grad().data()[i] == Approx(gx[i]).epsilon(1e-13));
    CHECK(p.grad().data()[i] == Approx(gp[i]).epsilon(1e-13));
  }
  // [N, C, d1]: F.cross_entropy(x2, p2, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1)
  const ts::dims_t<3> d3{2, 3, 2};
  ad::Var<double, 3, ts::cpu> x2(
      ts::Tensor<double, ts::dyn_shape_t<3>, ts::cpu>({0.5, -1.0, 2.0, 0.25, 1.0, -0.3, 1.5, 0.0, -0.5, -2.0, 0.2, 0.4}, d3), false);
  ts::Tensor<double, ts::dyn_shape_t<3>, ts::cpu> p2({0.2, 0.5, 0.3, 0.25, 0.5, 0.25, 1.0, 0.0, 0.0, 0.6, 0.0, 0.4}, d3);
  CHECK(val(ad::cross_entropy(x2, p2, {.weight = {1.0, 2.0, 0.5}, .label_smoothing = 0.1})) == Approx(1.619970054848103).epsilon(1e-14));
}

TEST_CASE("cross_entropy with probability targets: gradients by central differences", "[autodiff][loss][cross_entropy]") {
  auto run = [](auto x, auto p, const ad::cross_entropy_options& o) {
    auto loss = [&] { return ad::cross_entropy(x, p, o); };
    gc::check(loss, x);
    gc::check(loss, p);
    auto each = [&] { return gc::weighted(ad::cross_entropy_unreduced(x, p, o), 9); };
    gc::check(each, x, p);
  };
  using P = ts::cpu_threads;
  run(ad::Var<double, 2, P>(gc::values<2, P>({3, 5}, 1, -2.0, 2.0), true), ad::Var<double, 2, P>(gc::values<2, P>({3, 5}, 2, 0.0, 1.0), true),
      {.weight = {0.5, 1.0, 2.0, 1.5, 0.25}, .label_smoothing = 0.3});
  run(ad::Var<double, 3, ts::cpu>(gc::values<3>({2, 4, 3}, 3, -2.0, 2.0), true),
      ad::Var<double, 3, ts::cpu>(gc::values<3>({2, 4, 3}, 4, 0.0, 1.0), true), {.reduction = ad::reduction::sum});
  run(ad::Var<double, 2, ts::cpu>(gc::values<2>({1, 7}, 5, -2.0, 2.0), true),
      ad::Var<double, 2, ts::cpu>(gc::values<2>({1, 7}, 6, 0.0, 1.0), true), {.label_smoothing = 1.0});
}

TEST_CASE("cross_entropy with probability targets: errors", "[autodiff][loss][cross_entropy]") {
  ad::Var<double, 2, ts::cpu> x(gc::values<2>({3, 4}, 1), false);
  ts::Tensor<double, ts::dyn_shape_t<2>, ts::cpu> p35(ts::dims_t<2>{3, 5}), p34(ts::dims_t<2>{3, 4});
  for (index_t i = 0; i < p34.size(); ++i) p34.data()[i] = 0.25;
  const auto msg = gc::message_of([&] { ad::cross_entropy(x, p35); });
  CHECK(msg.find("[3, 4]") != std::string::npos);
  CHECK(msg.find("[3, 5]") != std::string::npos);
  CHECK_THROWS_AS(ad::cross_entropy(x, p35), ts::shape_error);
  CHECK_THROWS_AS(ad::cross_entropy(x, p34, {.weight = {1.0, 2.0}}), ts::shape_error);
  CHECK_THROWS_AS(ad::cross_entropy(x, p34, {.reduction = ad::reduction::none}), std::invalid_argument);
  CHECK_THROWS_AS(ad::cross_entropy(x, p34, {.label_smoothing = 1.5}), std::invalid_argument);
  // class indices still take the class-index form
  ts::Tensor<std::int64_t, ts::dyn_shape_t<1>, ts::cpu> labels({0, 3, 1}, ts::dims_t<1>{3});
  const auto pl = ad::cross_entropy_unreduced(x, labels);
  CHECK(pl.dims() == ts::dims_t<1>{3});
}
