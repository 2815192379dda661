// The losses of autodiff/loss_ops.hpp against plain-loop references written from PyTorch's documented formulas,
// every option and reduction, float and double, cpu and cpu_threads, gradients against central finite differences
// in double, NaN behaviour and the error messages.
//
// Values PyTorch gives (computed by hand from its formulas; lse([1, 2, 3]) = 3 + log(1 + e^-1 + e^-2) = 3.4076059644):
//   F.cross_entropy([[1, 2, 3]], [0])                          = 2.4076059644
//   F.cross_entropy([[1, 2, 3]], [0], label_smoothing=0.1)     = 0.9 * 2.4076059644 + 0.1 / 3 * 4.2228178933 = 2.3076059644
//   F.cross_entropy([[1, 2, 3]] * 2, [0, 2], weight=[1, 2, 3]) = (1 * 2.4076059644 + 3 * 0.4076059644) / 4 = 0.9076059644
//   F.binary_cross_entropy_with_logits([0.], [1.])           = log 2 = 0.6931471806
//   ... with pos_weight=[2.]                                   = 2 log 2 = 1.3862943611
//   F.binary_cross_entropy_with_logits([2.], [0.])           = log(1 + e^2) = 2.1269280110
//   F.binary_cross_entropy([0.], [1.])                       = 100 (the log clamped at -100)
//   F.smooth_l1_loss([0.5], [0.]) = 0.125, ([2.], [0.]) = 1.5; F.huber_loss([2.], [0.], delta=0.5) = 0.875
#include <tessera/autodiff/loss_ops.hpp>
#include <tessera/nn/sequential.hpp>

#include <limits>
#include <vector>

#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using Catch::Contains;
using ts::dims_t;
using ts::index_t;
using ts::Shape;
template <int R, class P = ts::cpu>
using DT = ts::Tensor<double, ts::dyn_shape_t<R>, P>;
using LT = ts::Tensor<long, ts::dyn_shape_t<1>, ts::cpu>;

namespace {

const double nan_d = std::numeric_limits<double>::quiet_NaN();

/// F.cross_entropy with class indices, literally: log_softmax over the class axis, the weighted NLL and smoothing
/// terms, ignored targets zero, the mean divided by the weights of the targets that count. x is [N, C, S].
double ref_cross_entropy(const std::vector<double>& x, index_t N, index_t C, index_t S, const std::vector<long>& y,
                         const std::vector<double>& weight, long ignore, double eps, ad::reduction r, std::vector<double>* per = nullptr) {
  std::vector<double> w = weight.empty() ? std::vector<double>(std::size_t(C), 1.0) : weight;
  double total = 0, den = 0;
  if (per) per->assign(std::size_t(N * S), 0.0);
  for (index_t n = 0; n < N; ++n)
    for (index_t s = 0; s < S; ++s) {
      const long t = y[std::size_t(n * S + s)];
      if (t == ignore) continue;
      auto at = [&](index_t c) { return x[std::size_t((n * C + c) * S + s)]; };
      double m = at(0);
      for (index_t c = 1; c < C; ++c) m = std::max(m, at(c));
      double se = 0;
      for (index_t c = 0; c < C; ++c) se += std::exp(at(c) - m);
      const double lse = m + std::log(se);
      double smooth = 0;
      for (index_t c = 0; c < C; ++c) smooth -= w[std::size_t(c)] * (at(c) - lse);
      const double l = (1 - eps) * -(w[std::size_t(t)] * (at(t) - lse)) + eps / double(C) * smooth;
      if (per) (*per)[std::size_t(n * S + s)] = l;
      total += l;
      den += w[std::size_t(t)];
    }
  return r == ad::reduction::sum ? total : total / den;
}

/// F.nll_loss: -w[y] x[y], ignored targets zero, the mean divided by the weights of the targets that count.
double ref_nll(const std::vector<double>& x, index_t N, index_t C, const std::vector<long>& y, const std::vector<double>& weight,
               long ignore, ad::reduction r) {
  double total = 0, den = 0;
  for (index_t n = 0; n < N; ++n) {
    const long t = y[std::size_t(n)];
    if (t == ignore) continue;
    const double w = weight.empty() ? 1.0 : weight[std::size_t(t)];
    total -= w * x[std::size_t(n * C + t)];
    den += w;
  }
  return r == ad::reduction::sum ? total : total / den;
}

/// The elementwise losses from PyTorch's formulas (x the input, y the target, w the weight, pw the pos_weight).
double ref_bce_logits(double x, double y, double w, double pw) {
  return w * ((1 - y) * x + (1 + (pw - 1) * y) * (std::log(1 + std::exp(-std::abs(x))) + std::max(-x, 0.0)));
}
double ref_bce(double p, double y, double w) {
  return -w * (y * std::max(std::log(p), -100.0) + (1 - y) * std::max(std::log(1 - p), -100.0));
}
double ref_smooth_l1(double x, double y, double beta) {
  const double z = std::abs(x - y);
  return beta == 0 ? z : (z < beta ? 0.5 * z * z / beta : z - 0.5 * beta);
}
double ref_huber(double x, double y, double delta) {
  const double z = std::abs(x - y);
  return z < delta ? 0.5 * z * z : delta * (z - 0.5 * delta);
}

template <class T>
double tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-13;
}

/// Labels for N rows of C classes, every fourth (from the second) set to `ignore` when asked.
LT labels_for(index_t N, index_t C, bool with_ignored, long ignore = -100) {
  LT y(N);
  for (index_t i = 0; i < N; ++i) y(i) = (with_ignored && i % 4 == 1) ? ignore : long((i * 5 + 2) % C);
  return y;
}
std::vector<long> host(const LT& y) { return y.to_vector(); }

template <class T, class P, class Src>
auto var_of(const Src& v, bool grad) {
  constexpr int R = Src::rank;
  ts::Tensor<T, ts::dyn_shape_t<R>, P> t(v.dims());
  for (index_t i = 0; i < v.size(); ++i) t.data()[i] = T(v.data()[i]);
  return ad::Var<T, R, P>(t, grad);
}

template <class T, class P>
void cross_entropy_values() {
  const index_t C = 5;
  const std::vector<double> w{0.5, 2.0, 1.0, 0.25, 3.0};
  for (index_t N : {1, 7, 33})
    for (bool ign : {false, true})
      for (bool weighted : {false, true})
        for (double eps : {0.0, 0.2})
          for (auto r : {ad::reduction::mean, ad::reduction::sum}) {
            INFO("N=" << N << " ignore=" << ign << " weight=" << weighted << " smoothing=" << eps << " sum=" << (r == ad::reduction::sum));
            if (N == 1 && ign) continue;
            auto xd = gc::values<2>({N, C}, 3, -3.0, 3.0);
            auto y = labels_for(N, C, ign);
            auto x = var_of<T, P>(xd, false);
            ad::cross_entropy_options o{.ignore_index = -100, .label_smoothing = eps, .reduction = r};
            if (weighted) o.weight = {0.5, 2.0, 1.0, 0.25, 3.0};
            const double want = ref_cross_entropy(xd.to_vector(), N, C, 1, host(y), weighted ? w : std::vector<double>{}, -100, eps, r);
            CHECK(double(ad::cross_entropy(x, y, o).value()()) == Approx(want).epsilon(tol<T>()));
            std::vector<double> per;
            ref_cross_entropy(xd.to_vector(), N, C, 1, host(y), weighted ? w : std::vector<double>{}, -100, eps, r, &per);
            const auto got = ad::cross_entropy_unreduced(x, y, o).value().to_vector();
            REQUIRE(got.size() == per.size());
            for (std::size_t k = 0; k < per.size(); ++k) CHECK(double(got[k]) == Approx(per[k]).epsilon(tol<T>()).margin(tol<T>()));
          }
}

}  // namespace

TEST_CASE("cross_entropy: values PyTorch gives", "[losses]") {
  DT<2> x({1.0, 2.0, 3.0}, {1, 3});
  ad::Var<double, 2> v(x, false);
  LT y0({0}, {1});
  CHECK(ad::cross_entropy(v, y0).value()() == Approx(2.4076059644).epsilon(1e-10));
  CHECK(ad::cross_entropy(v, y0, {.label_smoothing = 0.1}).value()() == Approx(2.3076059644).epsilon(1e-10));
  DT<2> x2({1.0, 2.0, 3.0, 1.0, 2.0, 3.0}, {2, 3});
  LT y2({0, 2}, {2});
  CHECK(ad::cross_entropy(ad::Var<double, 2>(x2), y2, {.weight = {1.0, 2.0, 3.0}}).value()() == Approx(0.9076059644).epsilon(1e-10));
  // ignore_index may name a valid class: those targets drop out of the mean
  CHECK(ad::cross_entropy(ad::Var<double, 2>(x2), y2, {.ignore_index = 2}).value()() == Approx(2.4076059644).epsilon(1e-10));
}

TEST_CASE("cross_entropy: every option and reduction against the reference", "[losses]") {
  ts::cpu_threads::set_num_threads(2);
  cross_entropy_values<double, ts::cpu>();
  cross_entropy_values<float, ts::cpu>();
  cross_entropy_values<double, ts::cpu_threads>();
  cross_entropy_values<float, ts::cpu_threads>();
}

TEST_CASE("cross_entropy: gradients for every option (finite differences)", "[losses][grad]") {
  const index_t C = 5;
  for (index_t N : {1, 7, 33})
    for (bool ign : {false, true})
      for (bool weighted : {false, true})
        for (double eps : {0.0, 0.3})
          for (auto r : {ad::reduction::none, ad::reduction::mean, ad::reduction::sum}) {
            INFO("N=" << N << " ignore=" << ign << " weight=" << weighted << " smoothing=" << eps << " reduction=" << int(r));
            if (N == 1 && ign) continue;
            ad::Var<double, 2, ts::cpu_threads> x(gc::values<2, ts::cpu_threads>({N, C}, 5, -2.0, 2.0), true);
            auto y = labels_for(N, C, ign);
            ad::cross_entropy_options o{.label_smoothing = eps, .reduction = r};
            if (weighted) o.weight = DT<1>({0.5, 2.0, 1.0, 0.25, 3.0}, {C});
            if (r == ad::reduction::none) {
              ad::Var<double, 1, ts::cpu_threads> c(gc::values<1, ts::cpu_threads>({N}, 6), false);
              gc::check([&] { return ad::sum(ad::cross_entropy_unreduced(x, y, o) * c); }, x);
            } else {
              gc::check([&] { return ad::cross_entropy(x, y, o); }, x);
            }
          }
}

TEST_CASE("cross_entropy: ignored targets have zero loss and zero gradient", "[losses]") {
  ad::Var<double, 2> x(gc::values<2>({7, 4}, 2), true);
  auto y = labels_for(7, 4, true);
  ad::cross_entropy(x, y, {.weight = {1.0, 2.0, 3.0, 4.0}, .label_smoothing = 0.1}).backward();
  const auto per = ad::cross_entropy_unreduced(x, y).value();
  for (index_t i : {1, 5}) {
    CHECK(per(i) == 0.0);
    for (index_t c = 0; c < 4; ++c) CHECK(x.grad()(i, c) == 0.0);
  }
  CHECK(x.grad()(0, 0) != 0.0);
  // every target ignored: the mean is 0 / 0 = NaN (PyTorch's), the sum 0, the gradient zero
  LT all({-100, -100}, {2});
  ad::Var<double, 2> x2(gc::values<2>({2, 4}, 3), true);
  auto m = ad::cross_entropy(x2, all);
  CHECK(std::isnan(m.value()()));
  m.backward();
  for (index_t k = 0; k < 8; ++k) CHECK(x2.grad().data()[k] == 0.0);
  CHECK(ad::cross_entropy(x2, all, {.reduction = ad::reduction::sum}).value()() == 0.0);
}

TEST_CASE("cross_entropy: class-index targets of rank > 1 ([N, C, d1, d2] with [N, d1, d2])", "[losses][grad]") {
  const index_t N = 3, C = 4, H = 2, W = 3, S = H * W;
  ad::Var<double, 4> x(gc::values<4>({N, C, H, W}, 9, -2.0, 2.0), true);
  ts::Tensor<int, ts::dyn_shape_t<3>> y(N, H, W);
  for (index_t i = 0; i < y.size(); ++i) y.data()[i] = i % 5 == 3 ? -100 : int((i * 3 + 1) % C);
  std::vector<long> yh(y.data(), y.data() + y.size());
  const std::vector<double> w{1.0, 0.5, 2.0, 1.5};
  for (double eps : {0.0, 0.2})
    for (auto r : {ad::reduction::mean, ad::reduction::sum}) {
      ad::cross_entropy_options o{.weight = {1.0, 0.5, 2.0, 1.5}, .label_smoothing = eps, .reduction = r};
      CHECK(ad::cross_entropy(x, y, o).value()() ==
            Approx(ref_cross_entropy(x.value().to_vector(), N, C, S, yh, w, -100, eps, r)).epsilon(1e-13));
      gc::check([&] { return ad::cross_entropy(x, y, o); }, x);
    }
  std::vector<double> per;
  ref_cross_entropy(x.value().to_vector(), N, C, S, yh, {}, -100, 0.0, ad::reduction::sum, &per);
  const auto got = ad::cross_entropy_unreduced(x, y);
  CHECK(got.dims() == dims_t<3>{N, H, W});
  for (index_t k = 0; k < got.size(); ++k) CHECK(got.value().data()[k] == Approx(per[std::size_t(k)]).epsilon(1e-13));
}

TEST_CASE("cross_entropy: NaN and -inf logits", "[losses][nan]") {
  // a NaN logit: that row's loss (so the mean) and that row's gradient are NaN, the other rows' finite
  DT<2> xv({1.0, 2.0, 3.0, 0.5, nan_d, 1.0, 2.0, 0.0, -1.0}, {3, 3});
  ad::Var<double, 2> x(xv, true);
  LT y({0, 1, 2}, {3});
  auto l = ad::cross_entropy(x, y);
  CHECK(std::isnan(l.value()()));
  l.backward();
  for (index_t c = 0; c < 3; ++c) {
    CHECK(std::isnan(x.grad()(1, c)));
    CHECK(std::isfinite(x.grad()(0, c)));
  }
  // the NaN row ignored: the loss is finite (PyTorch never reads an ignored row's log-probabilities into the loss)
  LT yi({0, -100, 2}, {3});
  CHECK(std::isfinite(ad::cross_entropy(ad::Var<double, 2>(xv), yi, {.label_smoothing = 0.1}).value()()));
  // -inf masks another class: finite without smoothing (log p of the target only), +inf with it
  DT<2> mv({0.0, -std::numeric_limits<double>::infinity(), 1.0}, {1, 3});
  ad::Var<double, 2> mx(mv, true);
  LT y0({0}, {1});
  auto lm = ad::cross_entropy(mx, y0);
  CHECK(lm.value()() == Approx(std::log(1 + std::exp(1.0))).epsilon(1e-14));
  lm.backward();
  CHECK(mx.grad()(0, 1) == 0.0);
  CHECK(std::isinf(ad::cross_entropy(ad::Var<double, 2>(mv), y0, {.label_smoothing = 0.1}).value()()));
}

TEST_CASE("nll_loss: weight, ignore_index, reductions, gradients", "[losses][grad]") {
  const index_t C = 4;
  const std::vector<double> w{2.0, 0.5, 1.0, 3.0};
  for (index_t N : {1, 7, 33})
    for (bool ign : {false, true})
      for (bool weighted : {false, true})
        for (auto r : {ad::reduction::none, ad::reduction::mean, ad::reduction::sum}) {
          INFO("N=" << N << " ignore=" << ign << " weight=" << weighted << " reduction=" << int(r));
          if (N == 1 && ign) continue;
          ad::Var<double, 2, ts::cpu_threads> x(gc::values<2, ts::cpu_threads>({N, C}, 4, -3.0, 0.0), true);
          auto y = labels_for(N, C, ign);
          ad::nll_loss_options o{.reduction = r};
          if (weighted) o.weight = {2.0, 0.5, 1.0, 3.0};
          if (r == ad::reduction::none) {
            const auto per = ad::nll_loss_unreduced(x, y, o).value();
            const auto xh = x.value().to_vector();
            const auto yh = host(y);
            for (index_t i = 0; i < N; ++i) {
              const double want = yh[std::size_t(i)] == -100 ? 0.0 : -(weighted ? w[std::size_t(yh[std::size_t(i)])] : 1.0) * xh[std::size_t(i * C + yh[std::size_t(i)])];
              CHECK(per(i) == want);
            }
            ad::Var<double, 1, ts::cpu_threads> c(gc::values<1, ts::cpu_threads>({N}, 6), false);
            gc::check([&] { return ad::sum(ad::nll_loss_unreduced(x, y, o) * c); }, x);
          } else {
            CHECK(ad::nll_loss(x, y, o).value()() ==
                  Approx(ref_nll(x.value().to_vector(), N, C, host(y), weighted ? w : std::vector<double>{}, -100, r)).epsilon(1e-14));
            gc::check([&] { return ad::nll_loss(x, y, o); }, x);
          }
        }
  // nll_loss of log_softmax is cross_entropy
  ad::Var<float, 2> z(ts::Tensor<float, ts::dyn_shape_t<2>>({0.3f, -1.0f, 2.0f, 0.1f, 0.0f, 0.5f, -0.5f, 1.5f}, {2, 4}));
  LT y({3, 0}, {2});
  CHECK(ad::nll_loss(ad::log_softmax(z), y).value()() == Approx(ad::cross_entropy(z, y).value()()).epsilon(1e-6));
}

TEST_CASE("binary_cross_entropy_with_logits: values, weight, pos_weight, reductions, gradients", "[losses][grad]") {
  ad::Var<double, 1> z(DT<1>({0.0, 2.0}, {2}));
  CHECK(ad::binary_cross_entropy_with_logits_unreduced(z, DT<1>({1.0, 0.0}, {2})).value()(0) == Approx(0.6931471806).epsilon(1e-10));
  CHECK(ad::binary_cross_entropy_with_logits_unreduced(z, DT<1>({1.0, 0.0}, {2})).value()(1) == Approx(2.1269280110).epsilon(1e-10));
  CHECK(ad::binary_cross_entropy_with_logits_unreduced(z, DT<1>({1.0, 0.0}, {2}), {.pos_weight = {2.0}}).value()(0) ==
        Approx(1.3862943611).epsilon(1e-10));
  // large logits stay finite (the log-sum-exp form)
  ad::Var<float, 1> big(ts::Tensor<float, ts::dyn_shape_t<1>>({100.0f, -100.0f}, {2}));
  CHECK(ad::binary_cross_entropy_with_logits(big, ts::Tensor<float, ts::dyn_shape_t<1>>({0.0f, 1.0f}, {2})).value()() == Approx(100.0f));
  const index_t C = 3;
  for (index_t N : {1, 7, 33})
    for (bool weighted : {false, true})
      for (bool pos : {false, true})
        for (auto r : {ad::reduction::none, ad::reduction::mean, ad::reduction::sum}) {
          INFO("N=" << N << " weight=" << weighted << " pos_weight=" << pos << " reduction=" << int(r));
          ad::Var<double, 2> x(gc::values<2>({N, C}, 7, -4.0, 4.0), true);
          ad::Var<double, 2> t(gc::values<2>({N, C}, 8, 0.0, 1.0), true);  // soft targets take gradients too
          DT<2> wv = gc::values<2>({N, 1}, 9, 0.5, 2.0);
          ad::bce_with_logits_options o{.reduction = r};
          if (weighted) o.weight = wv;  // [N, 1]: per sample
          if (pos) o.pos_weight = {0.5, 2.0, 3.0};
          double want = 0;
          std::vector<double> per;
          for (index_t i = 0; i < N; ++i)
            for (index_t c = 0; c < C; ++c) {
              per.push_back(ref_bce_logits(x.value()(i, c), t.value()(i, c), weighted ? wv(i, 0) : 1.0, pos ? std::vector<double>{0.5, 2.0, 3.0}[std::size_t(c)] : 1.0));
              want += per.back();
            }
          if (r == ad::reduction::none) {
            const auto got = ad::binary_cross_entropy_with_logits_unreduced(x, t, o).value().to_vector();
            for (std::size_t k = 0; k < per.size(); ++k) CHECK(got[k] == Approx(per[k]).epsilon(1e-13));
            ad::Var<double, 2> c(gc::values<2>({N, C}, 10), false);
            gc::check([&] { return ad::sum(ad::binary_cross_entropy_with_logits_unreduced(x, t, o) * c); }, x, t);
          } else {
            if (r == ad::reduction::mean) want /= double(N * C);
            CHECK(ad::binary_cross_entropy_with_logits(x, t, o).value()() == Approx(want).epsilon(1e-13));
            gc::check([&] { return ad::binary_cross_entropy_with_logits(x, t, o); }, x, t);
            // float on cpu_threads, the target a cpu tensor
            auto xf = var_of<float, ts::cpu_threads>(x.value(), false);
            ts::Tensor<float, ts::dyn_shape_t<2>> tf(std::vector<float>(t.value().data(), t.value().data() + t.size()), t.dims());
            CHECK(double(ad::binary_cross_entropy_with_logits(xf, tf, o).value()()) == Approx(want).epsilon(1e-5));
          }
        }
  ad::Var<double, 1> n(DT<1>({nan_d, 1.0}, {2}), true);
  auto l = ad::binary_cross_entropy_with_logits(n, DT<1>({1.0, 0.0}, {2}));
  CHECK(std::isnan(l.value()()));
  l.backward();
  CHECK(std::isnan(n.grad()(0)));
  CHECK(std::isfinite(n.grad()(1)));
}

TEST_CASE("binary_cross_entropy: the log clamped at -100, weight, reductions, gradients", "[losses][grad]") {
  ad::Var<double, 1> p(DT<1>({0.0, 1.0, 0.5}, {3}));
  const auto per = ad::binary_cross_entropy_unreduced(p, DT<1>({1.0, 0.0, 1.0}, {3})).value();
  CHECK(per(0) == 100.0);
  CHECK(per(1) == 100.0);
  CHECK(per(2) == Approx(0.6931471806).epsilon(1e-10));
  CHECK(ad::binary_cross_entropy_unreduced(p, DT<1>({0.0, 1.0, 1.0}, {3})).value()(0) == 0.0);  // 0 * -100, not 0 * -inf
  for (index_t N : {1, 7, 33})
    for (bool weighted : {false, true})
      for (auto r : {ad::reduction::mean, ad::reduction::sum}) {
        ad::Var<double, 2, ts::cpu_threads> x(gc::values<2, ts::cpu_threads>({N, 3}, 11, 0.05, 0.95), true);
        ad::Var<double, 2, ts::cpu_threads> t(gc::values<2, ts::cpu_threads>({N, 3}, 12, 0.0, 1.0), true);
        DT<1> wv({0.5, 1.0, 2.0}, {3});
        ad::bce_options o{.reduction = r};
        if (weighted) o.weight = wv;
        double want = 0;
        for (index_t i = 0; i < N; ++i)
          for (index_t c = 0; c < 3; ++c) want += ref_bce(x.value()(i, c), t.value()(i, c), weighted ? wv(c) : 1.0);
        if (r == ad::reduction::mean) want /= double(N * 3);
        CHECK(ad::binary_cross_entropy(x, t, o).value()() == Approx(want).epsilon(1e-13));
        gc::check([&] { return ad::binary_cross_entropy(x, t, o); }, x, t);
      }
  CHECK_THROWS_WITH(ad::binary_cross_entropy(ad::Var<double, 1>(DT<1>({0.5, 1.5}, {2})), DT<1>({1.0, 0.0}, {2})),
                    Contains("between 0 and 1") && Contains("1.5"));
  CHECK_THROWS_AS(ad::binary_cross_entropy(ad::Var<double, 1>(DT<1>({nan_d}, {1})), DT<1>({1.0}, {1})), std::domain_error);
}

namespace {
/// A regression loss against its reference for each reduction, its gradient in x and in the target.
template <class Loss, class Unreduced, class Ref>
void regression_case(Loss loss, Unreduced unreduced, Ref ref, double lo, double hi) {
  for (index_t N : {1, 7, 33})
    for (auto r : {ad::reduction::none, ad::reduction::mean, ad::reduction::sum}) {
      INFO("N=" << N << " reduction=" << int(r));
      ad::Var<double, 2> x(gc::values<2>({N, 3}, 13, lo, hi), true);
      ad::Var<double, 2> y(gc::values<2>({N, 3}, 14, lo, hi), true);
      double want = 0;
      std::vector<double> per;
      for (index_t k = 0; k < x.size(); ++k) {
        per.push_back(ref(x.value().data()[k], y.value().data()[k]));
        want += per.back();
      }
      if (r == ad::reduction::none) {
        const auto got = unreduced(x, y).value();
        for (index_t k = 0; k < x.size(); ++k) CHECK(got.data()[k] == Approx(per[std::size_t(k)]).epsilon(1e-14).margin(1e-15));
        ad::Var<double, 2> c(gc::values<2>({N, 3}, 15), false);
        gc::check([&] { return ad::sum(unreduced(x, y) * c); }, x, y);
      } else {
        if (r == ad::reduction::mean) want /= double(x.size());
        CHECK(loss(x, y, r).value()() == Approx(want).epsilon(1e-14).margin(1e-15));
        gc::check([&] { return loss(x, y, r); }, x, y);
        auto xf = var_of<float, ts::cpu_threads>(x.value(), false);
        auto yf = var_of<float, ts::cpu_threads>(y.value(), false);
        CHECK(double(loss(xf, yf, r).value()()) == Approx(want).epsilon(1e-5).margin(1e-6));
      }
    }
}
}  // namespace

TEST_CASE("smooth_l1_loss, huber_loss, l1_loss, mse_loss: values, reductions, gradients", "[losses][grad]") {
  DT<1> xs({0.5, 2.0, -3.0}, {3}), zs({0.0, 0.0, 0.0}, {3});
  const auto sl = ad::smooth_l1_loss_unreduced(ad::Var<double, 1>(xs), zs).value();
  CHECK(sl(0) == 0.125);
  CHECK(sl(1) == 1.5);
  CHECK(ad::huber_loss_unreduced(ad::Var<double, 1>(xs), zs, {.delta = 0.5}).value()(1) == 0.875);
  for (double beta : {1.0, 0.3, 0.0}) {
    INFO("beta=" << beta);
    regression_case([beta](const auto& x, const auto& y, ad::reduction r) { return ad::smooth_l1_loss(x, y, {.beta = beta, .reduction = r}); },
                    [beta](const auto& x, const auto& y) { return ad::smooth_l1_loss_unreduced(x, y, {.beta = beta}); },
                    [beta](double x, double y) { return ref_smooth_l1(x, y, beta); }, -2.0, 2.0);
  }
  for (double delta : {1.0, 0.4}) {
    INFO("delta=" << delta);
    regression_case([delta](const auto& x, const auto& y, ad::reduction r) { return ad::huber_loss(x, y, {.delta = delta, .reduction = r}); },
                    [delta](const auto& x, const auto& y) { return ad::huber_loss_unreduced(x, y, {.delta = delta}); },
                    [delta](double x, double y) { return ref_huber(x, y, delta); }, -2.0, 2.0);
  }
  regression_case([](const auto& x, const auto& y, ad::reduction r) { return ad::l1_loss(x, y, {.reduction = r}); },
                  [](const auto& x, const auto& y) { return ad::l1_loss_unreduced(x, y); },
                  [](double x, double y) { return std::abs(x - y); }, -2.0, 2.0);
  regression_case([](const auto& x, const auto& y, ad::reduction r) { return ad::mse_loss(x, y, {.reduction = r}); },
                  [](const auto& x, const auto& y) { return ad::mse_loss_unreduced(x, y); },
                  [](double x, double y) { return (x - y) * (x - y); }, -2.0, 2.0);
  // NaN: the loss NaN; the gradient NaN for mse, smooth_l1 and huber (d g / beta, 2 d g, d g), 0 for l1 (sign(NaN) = 0)
  ad::Var<double, 1> n(DT<1>({nan_d}, {1}), true);
  DT<1> z0({0.0}, {1});
  for (int which = 0; which < 4; ++which) {
    n.zero_grad();
    auto l = which == 0 ? ad::mse_loss(n, z0) : which == 1 ? ad::smooth_l1_loss(n, z0) : which == 2 ? ad::huber_loss(n, z0) : ad::l1_loss(n, z0);
    CHECK(std::isnan(l.value()()));
    l.backward();
    if (which < 3) CHECK(std::isnan(n.grad()(0)));
    else CHECK(n.grad()(0) == 0.0);
  }
}

TEST_CASE("targets on the other host policy: a cpu tensor or Var with a cpu_threads model", "[losses]") {
  ad::Var<float, 2, ts::cpu_threads> x(ts::Tensor<float, ts::dyn_shape_t<2>, ts::cpu_threads>({1.0f, 2.0f, 3.0f, 4.0f}, {2, 2}), true);
  ts::Tensor<float, ts::dyn_shape_t<2>, ts::cpu> t({0.0f, 2.0f, 1.0f, 0.0f}, {2, 2});
  auto l = ad::mse_loss(x, t);  // (1 + 0 + 4 + 16) / 4
  CHECK(l.value()() == 5.25f);
  l.backward();
  CHECK(x.grad()(1, 1) == 2.0f);  // 2 * 4 / 4
  ad::Var<float, 2, ts::cpu> tv(t, true);
  x.zero_grad();
  ad::mse_loss(x, tv, {.reduction = ad::reduction::sum}).backward();  // the gradient reaches the cpu Var
  CHECK(tv.grad()(1, 0) == -4.0f);
  CHECK(x.grad()(1, 0) == 4.0f);
  ad::mse_loss(x, tv).backward();  // the two-Var form without options too: adds -2 * 2 / 4
  CHECK(tv.grad()(1, 0) == -5.0f);
  ts::Tensor<int, ts::dyn_shape_t<1>, ts::cpu> y({1, 0}, {2});
  CHECK(ad::cross_entropy(x, y, {.reduction = ad::reduction::sum}).value()() == Approx(std::log(1 + std::exp(-1.0)) + std::log(1 + std::exp(1.0))).epsilon(1e-6));
}

TEST_CASE("losses on a Sequential's output", "[losses][nn]") {
  using Mlp = tessera::nn::Sequential<Shape<ts::dyn, 4>, tessera::nn::Linear<4, 8>, tessera::nn::ReLU, tessera::nn::Linear<8, 3>>;
  Mlp net(3);
  ts::Tensor<float, Shape<ts::dyn, 4>, ts::cpu_threads> x(7);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 5) / 5.0f - 0.4f;
  ts::Tensor<int, Shape<ts::dyn>> y(7);
  for (index_t i = 0; i < 7; ++i) y(i) = int(i % 3);
  auto out = net.forward(x);
  const double plain = ad::cross_entropy(out, y).value()();
  // the fused kernels (mean, no option in play) and the general path (sum) agree
  CHECK(ad::cross_entropy(out, y, {.reduction = ad::reduction::sum}).value()() / 7.0 == Approx(plain).epsilon(1e-6));
  net.zero_grad();
  ad::cross_entropy(net.forward(x), y, {.weight = {1.0, 2.0, 0.5}, .label_smoothing = 0.1}).backward();
  ts::Tensor<float, Shape<ts::dyn, 3>> onehot(7);
  onehot = 0.0f;
  for (index_t i = 0; i < 7; ++i) onehot(i, i % 3) = 1.0f;
  CHECK(std::isfinite(ad::binary_cross_entropy_with_logits(net.forward(x), onehot, {.pos_weight = {1.0, 2.0, 3.0}}).value()()));
  CHECK(std::isfinite(ad::huber_loss(net.forward(x), onehot).value()()));
}

TEST_CASE("loss errors name the shapes, the label and the option", "[losses][errors]") {
  ad::Var<float, 2> x(ts::Tensor<float, ts::dyn_shape_t<2>>(4, 3));
  CHECK_THROWS_AS(ad::cross_entropy(x, LT(5), {}), ts::shape_error);
  CHECK_THROWS_WITH(ad::cross_entropy(x, LT(5), {}), Contains("cross_entropy") && Contains("[4, 3]") && Contains("[5]"));
  LT bad({0, 1, 3, 2}, {4});
  CHECK_THROWS_AS(ad::cross_entropy(x, bad, {}), std::out_of_range);
  CHECK_THROWS_WITH(ad::cross_entropy(x, bad, {}), Contains("label 3") && Contains("C = 3"));
  LT neg({0, -1, 0, 0}, {4});
  CHECK_THROWS_WITH(ad::nll_loss(x, neg), Contains("label -1") && Contains("[0, 3)"));
  LT ok({0, 1, 2, 0}, {4});
  CHECK_THROWS_AS(ad::cross_entropy(x, ok, {.weight = {1.0, 2.0, 3.0, 4.0}}), ts::shape_error);
  CHECK_THROWS_WITH(ad::nll_loss(x, ok, {.weight = {1.0, 2.0}}), Contains("weight [2]") && Contains("[4, 3]"));
  CHECK_THROWS_WITH(ad::cross_entropy(x, ok, {.label_smoothing = 1.5}), Contains("label_smoothing"));
  CHECK_THROWS_WITH(ad::cross_entropy(x, ok, {.reduction = ad::reduction::none}), Contains("cross_entropy_unreduced"));
  ad::Var<float, 4> x4(ts::Tensor<float, ts::dyn_shape_t<4>>(2, 3, 4, 5));
  CHECK_THROWS_WITH(ad::cross_entropy(x4, ts::Tensor<int, ts::dyn_shape_t<3>>(2, 5, 4), {}), Contains("[2, 3, 4, 5]") && Contains("[2, 5, 4]"));
  ts::Tensor<float, ts::dyn_shape_t<2>> t32(3, 2);
  t32 = 0.5f;
  ts::Tensor<float, ts::dyn_shape_t<2>> half(2, 3);
  half = 0.5f;
  ad::Var<float, 2> x23(half);
  CHECK_THROWS_AS(ad::mse_loss(x23, t32), ts::shape_error);
  CHECK_THROWS_WITH(ad::mse_loss(x23, t32), Contains("mse_loss") && Contains("[2, 3]") && Contains("[3, 2]"));
  CHECK_THROWS_WITH(ad::l1_loss(x23, t32), Contains("[2, 3]") && Contains("[3, 2]"));
  CHECK_THROWS_WITH(ad::smooth_l1_loss(x23, t32), Contains("[2, 3]") && Contains("[3, 2]"));
  CHECK_THROWS_WITH(ad::huber_loss(x23, t32), Contains("[2, 3]") && Contains("[3, 2]"));
  CHECK_THROWS_WITH(ad::binary_cross_entropy_with_logits(x23, t32), Contains("[2, 3]") && Contains("[3, 2]"));
  ts::Tensor<float, ts::dyn_shape_t<2>> t23(2, 3);
  t23 = 0.5f;
  CHECK_THROWS_WITH(ad::binary_cross_entropy_with_logits(x23, t23, {.pos_weight = {1.0, 2.0}}),
                    Contains("pos_weight [2]") && Contains("[2, 3]"));
  CHECK_THROWS_WITH(ad::binary_cross_entropy(x23, t23, {.weight = {1.0, 2.0}}), Contains("weight [2]") && Contains("[2, 3]"));
  CHECK_THROWS_WITH(ad::smooth_l1_loss(x23, t23, {.beta = -1.0}), Contains("beta"));
  CHECK_THROWS_WITH(ad::huber_loss(x23, t23, {.delta = 0.0}), Contains("delta"));
  CHECK_THROWS_WITH(ad::mse_loss(x23, t23, {.reduction = ad::reduction::none}), Contains("mse_loss_unreduced"));
}
