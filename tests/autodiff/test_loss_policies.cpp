// Losses whose target lives on the other host policy: a model on cpu_threads with targets read on cpu, and the
// reverse. Every loss that takes a target (mse, l1, smooth_l1, huber, binary cross entropy with and without logits,
// cross entropy with class indices and with probabilities, nll) is computed with the target as a tensor, a strided
// view and a Var of the other policy, and must give exactly the value and the input gradient of the same loss with the
// target on the model's own policy (the same arithmetic on the same policy); a target Var gets the same gradient too.
// Strided views as targets and ad::constant<P>(tensor) did not compile before.
#include <catch2/catch.hpp>

#include <cstdint>
#include <tuple>
#include <vector>

#include <tessera/autodiff/loss_ops.hpp>
#include <tessera/autodiff/ops.hpp>
#include <tessera/autodiff/soft_cross_entropy_ops.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {
constexpr index_t N = 5, C = 3;

/// [N, C] values in (lo, hi), deterministic, on policy P.
template <class P>
ts::Tensor<double, ts::dyn_shape_t<2>, P> values(int seed, double lo, double hi) {
  ts::Tensor<double, ts::dyn_shape_t<2>, P> t(dims_t<2>{N, C});
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = lo + (hi - lo) * double((i * 7 + seed * 3) % 11 + 0.5) / 11.0;
  return t;
}
/// The same values laid out as the transpose of a [C, N] tensor (so that transpose(...) is a strided [N, C] view).
template <class P>
ts::Tensor<double, ts::dyn_shape_t<2>, P> transposed_storage(const ts::Tensor<double, ts::dyn_shape_t<2>, P>& t) {
  ts::Tensor<double, ts::dyn_shape_t<2>, P> s(dims_t<2>{C, N});
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < C; ++j) s(j, i) = t(i, j);
  return s;
}
template <class To, class From>
ts::Tensor<double, ts::dyn_shape_t<2>, To> moved(const ts::Tensor<double, ts::dyn_shape_t<2>, From>& t) {
  return ts::Tensor<double, ts::dyn_shape_t<2>, To>(t.to_vector(), t.dims());
}

/// One loss with the target on P (reference) and as a tensor, view (when Views) and Var of Q: value and gradients
/// identical.
template <class P, class Q, bool Views = true, class Loss>
void same_as_on_own_policy(const char* name, Loss loss, double lo, double hi) {
  CAPTURE(name, P::name, Q::name);
  const auto y_p = values<P>(2, lo, hi);
  const auto y_q = moved<Q>(y_p);
  const auto storage_q = transposed_storage(y_q);
  auto x_ref = ad::parameter(values<P>(1, 0.05, 0.95));
  auto ref = loss(x_ref, y_p);
  ref.backward();
  const auto g_ref = x_ref.grad().to_vector();
  {
    auto x = ad::parameter(values<P>(1, 0.05, 0.95));
    auto l = loss(x, y_q);  // a tensor of Q
    l.backward();
    CHECK(l.item() == ref.item());
    CHECK(x.grad().to_vector() == g_ref);
  }
  if constexpr (Views) {
    auto x = ad::parameter(values<P>(1, 0.05, 0.95));
    auto l = loss(x, ts::transpose(storage_q.cview()));  // a strided view of Q
    l.backward();
    CHECK(l.item() == ref.item());
    CHECK(x.grad().to_vector() == g_ref);
  }
  {
    auto x = ad::parameter(values<P>(1, 0.05, 0.95));
    ad::Var<double, 2, P> yv_p(y_p, true);
    ad::Var<double, 2, Q> yv_q(y_q, true);
    auto lp = loss(x, yv_p);
    lp.backward();
    x.zero_grad();
    auto lq = loss(x, yv_q);  // a Var of Q: its gradient is copied back to it
    lq.backward();
    CHECK(lq.item() == lp.item());
    CHECK(x.grad().to_vector() == g_ref);
    CHECK(yv_q.grad().to_vector() == yv_p.grad().to_vector());
  }
}

template <class P, class Q>
void every_loss() {
  same_as_on_own_policy<P, Q>("mse_loss", [](const auto& x, const auto& y) { return ad::mse_loss(x, y); }, -1.0, 2.0);
  same_as_on_own_policy<P, Q>("mse_loss sum", [](const auto& x, const auto& y) {
    return ad::mse_loss(x, y, {.reduction = ad::reduction::sum});
  }, -1.0, 2.0);
  same_as_on_own_policy<P, Q>("l1_loss", [](const auto& x, const auto& y) { return ad::l1_loss(x, y); }, -1.0, 2.0);
  same_as_on_own_policy<P, Q>("smooth_l1_loss", [](const auto& x, const auto& y) {
    return ad::smooth_l1_loss(x, y, {.beta = 0.3});
  }, -1.0, 2.0);
  same_as_on_own_policy<P, Q>("huber_loss", [](const auto& x, const auto& y) {
    return ad::huber_loss(x, y, {.delta = 0.4});
  }, -1.0, 2.0);
  same_as_on_own_policy<P, Q>("binary_cross_entropy", [](const auto& x, const auto& y) {
    return ad::binary_cross_entropy(x, y);
  }, 0.0, 1.0);
  same_as_on_own_policy<P, Q>("binary_cross_entropy_with_logits", [](const auto& x, const auto& y) {
    return ad::binary_cross_entropy_with_logits(x, y, {.pos_weight = {1.0, 2.0, 0.5}});
  }, 0.0, 1.0);
  // (soft_cross_entropy_ops.hpp takes tensors and Vars as targets, not views)
  same_as_on_own_policy<P, Q, false>("cross_entropy with probabilities", [](const auto& x, const auto& y) {
    return ad::cross_entropy(x, y, {.label_smoothing = 0.1});
  }, 0.0, 1.0);
}

/// Class labels of Q with logits of P: the same value and gradient as labels of P.
template <class P, class Q>
void class_losses() {
  CAPTURE(P::name, Q::name);
  ts::Tensor<std::int32_t, ts::dyn_shape_t<1>, P> lab_p(std::vector<std::int32_t>{2, 0, 1, 1, 2}, dims_t<1>{N});
  ts::Tensor<std::int32_t, ts::dyn_shape_t<1>, Q> lab_q(lab_p.to_vector(), dims_t<1>{N});
  for (int which = 0; which < 3; ++which) {
    CAPTURE(which);
    auto run = [&](const auto& labels, std::vector<double>& grad) {
      auto x = ad::parameter(values<P>(4, -2.0, 2.0));
      ad::Var<double, 0, P> l = which == 0 ? ad::cross_entropy(x, labels)
                                : which == 1 ? ad::cross_entropy(x, labels, {.weight = {1.0, 0.5, 2.0}})
                                             : ad::nll_loss(x, labels);
      l.backward();
      grad = x.grad().to_vector();
      return l.item();
    };
    std::vector<double> gp, gq;
    CHECK(run(lab_q, gq) == run(lab_p, gp));
    CHECK(gq == gp);
  }
}
}  // namespace

TEST_CASE("losses: a cpu target with a cpu_threads model, and the reverse, as on one policy", "[losses][policies]") {
  ts::cpu_threads::set_num_threads(2);
  every_loss<ts::cpu_threads, ts::cpu>();
  // the reverse for two losses (each loss instantiated for both directions took over a minute to compile)
  same_as_on_own_policy<ts::cpu, ts::cpu_threads>("mse_loss", [](const auto& x, const auto& y) { return ad::mse_loss(x, y); }, -1.0, 2.0);
  same_as_on_own_policy<ts::cpu, ts::cpu_threads>("binary_cross_entropy_with_logits", [](const auto& x, const auto& y) {
    return ad::binary_cross_entropy_with_logits(x, y);
  }, 0.0, 1.0);
  class_losses<ts::cpu_threads, ts::cpu>();
  class_losses<ts::cpu, ts::cpu_threads>();
  ts::cpu_threads::set_num_threads(0);
}

TEST_CASE("losses: a target of another policy must still have the input's shape", "[losses][policies]") {
  auto x = ad::parameter(values<ts::cpu_threads>(1, 0.0, 1.0));
  ts::Tensor<double, ts::dyn_shape_t<2>, ts::cpu> wrong(dims_t<2>{N, C + 1});
  wrong = 0.5;
  CHECK_THROWS_WITH(ad::mse_loss(x, wrong), Catch::Contains("[5, 3]") && Catch::Contains("[5, 4]"));
  CHECK_THROWS_WITH(ad::l1_loss(x, wrong.cview()), Catch::Contains("[5, 3]") && Catch::Contains("[5, 4]"));
  ad::Var<double, 2, ts::cpu> wv(wrong, true);
  CHECK_THROWS_AS(ad::mse_loss(x, wv), ts::shape_error);
}

TEST_CASE("constants: ad::constant<P>(tensor) meets a Var of P, whatever the tensor's policy", "[losses][policies]") {
  const auto y = values<ts::cpu>(2, -1.0, 1.0);
  auto x = ad::parameter(values<ts::cpu_threads>(1, -1.0, 1.0));
  auto c = ad::constant<ts::cpu_threads>(y);
  static_assert(std::is_same_v<decltype(c), ad::Var<double, 2, ts::cpu_threads>>);
  CHECK(!c.requires_grad());
  CHECK(c.value().to_vector() == y.to_vector());
  auto l = ad::mean(ad::square(x - c));
  l.backward();
  // reference: plain loops
  const auto xv = x.value().to_vector(), yv = y.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) s += (xv[i] - yv[i]) * (xv[i] - yv[i]);
  CHECK(l.item() == Approx(s / double(xv.size())).epsilon(1e-14));
  const auto g = x.grad().to_vector();
  for (std::size_t i = 0; i < xv.size(); ++i) CHECK(g[i] == Approx(2.0 * (xv[i] - yv[i]) / double(xv.size())).epsilon(1e-14));
  auto same = ad::constant<ts::cpu>(y);  // the same policy: a plain constant
  CHECK(same.value().to_vector() == yv);
}
