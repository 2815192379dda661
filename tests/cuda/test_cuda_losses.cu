// The losses of autodiff/loss_ops.hpp on the cuda policy against the same losses on cpu_threads: each loss's value
// and the gradients of its input (and of a target Var), for every option, reduction none / mean / sum, class-index
// targets of rank 1 and 3, class-probability targets (autodiff/soft_cross_entropy_ops.hpp), labels and targets given
// as host tensors. float; values compared to 1e-4 relative.
// Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <tessera/autodiff/loss_ops.hpp>
#include <tessera/autodiff/soft_cross_entropy_ops.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {
template <int R>
using htensor = ts::Tensor<float, ts::dyn_shape_t<R>>;

template <int R>
htensor<R> values(const dims_t<R>& d, int salt, double lo = -1.0, double hi = 1.0) {
  htensor<R> t(d);
  for (index_t i = 0; i < t.size(); ++i) {
    const double u = double((i * 7919 + salt * 104729 + 17) % 1000) / 1000.0;
    t.data()[i] = float(lo + (hi - lo) * u);
  }
  return t;
}

void close(const std::vector<float>& dev, const std::vector<float>& host, const char* what) {
  REQUIRE(dev.size() == host.size());
  float scale = 1e-3f;
  for (float h : host) scale = std::max(scale, std::abs(h));
  for (std::size_t i = 0; i < dev.size(); ++i) {
    INFO(what << " element " << i);
    CHECK(dev[i] == Approx(host[i]).epsilon(1e-4).margin(1e-4 * scale));
  }
}

/// f(x, t) -> scalar Var on both policies, x and t copies of hx and ht; the values and both gradients compared.
template <int R, class F>
void same_on_both(const htensor<R>& hx, const htensor<R>& ht, F f, const char* what) {
  ad::Var<float, R, ts::cpu_threads> xh(ts::Tensor<float, ts::dyn_shape_t<R>, ts::cpu_threads>(hx.to_vector(), hx.dims()), true);
  ad::Var<float, R, ts::cpu_threads> th(ts::Tensor<float, ts::dyn_shape_t<R>, ts::cpu_threads>(ht.to_vector(), ht.dims()), true);
  ad::Var<float, R, ts::cuda> xd(ts::to<ts::cuda>(hx), true), td(ts::to<ts::cuda>(ht), true);
  auto lh = f(xh, th);
  auto ld = f(xd, td);
  INFO(what);
  close(ld.value().to_vector(), lh.value().to_vector(), "value");
  lh.backward();
  ld.backward();
  close(xd.grad().to_vector(), xh.grad().to_vector(), "input gradient");
  if (th.has_grad()) close(td.grad().to_vector(), th.grad().to_vector(), "target gradient");
}
}  // namespace

TEST_CASE("cuda losses: class-index targets, every option", "[cuda][losses]") {
  for (index_t N : {1, 7, 33}) {
    ts::Tensor<int, ts::dyn_shape_t<1>> y(N);
    for (index_t i = 0; i < N; ++i) y(i) = (N > 1 && i % 4 == 1) ? -100 : int((i * 5 + 2) % 5);
    const auto hx = values<2>({N, 5}, 1, -3.0, 3.0);
    const auto hz = values<2>({N, 5}, 2);  // unused target: the class losses take labels
    for (double eps : {0.0, 0.2})
      for (bool weighted : {false, true})
        for (auto r : {ad::reduction::mean, ad::reduction::sum}) {
          ad::cross_entropy_options o{.label_smoothing = eps, .reduction = r};
          if (weighted) o.weight = {0.5, 2.0, 1.0, 0.25, 3.0};
          same_on_both<2>(hx, hz, [&](const auto& x, const auto&) { return ad::cross_entropy(x, y, o); }, "cross_entropy");
          same_on_both<2>(hx, hz, [&](const auto& x, const auto&) { return ad::sum(ad::cross_entropy_unreduced(x, y, o)); },
                          "cross_entropy_unreduced");
          ad::nll_loss_options n{.weight = o.weight, .reduction = r};
          same_on_both<2>(hx, hz, [&](const auto& x, const auto&) { return ad::nll_loss(x, y, n); }, "nll_loss");
        }
  }
  // [N, C, d1, d2] with [N, d1, d2]
  ts::Tensor<long, ts::dyn_shape_t<3>> y3(2, 3, 4);
  for (index_t i = 0; i < y3.size(); ++i) y3.data()[i] = i % 5 == 3 ? -100 : long(i % 4);
  const auto hx4 = values<4>({2, 4, 3, 4}, 3, -2.0, 2.0);
  same_on_both<4>(hx4, hx4, [&](const auto& x, const auto&) { return ad::cross_entropy(x, y3, {.label_smoothing = 0.1}); },
                  "cross_entropy rank 4");
}

TEST_CASE("cuda losses: binary and regression losses, targets with gradients", "[cuda][losses]") {
  for (index_t N : {1, 7, 33}) {
    const auto hx = values<2>({N, 3}, 4, -3.0, 3.0);
    const auto hp = values<2>({N, 3}, 5, 0.05, 0.95);
    const auto ht = values<2>({N, 3}, 6, 0.0, 1.0);
    for (auto r : {ad::reduction::mean, ad::reduction::sum}) {
      same_on_both<2>(hx, ht, [&](const auto& x, const auto& t) {
        return ad::binary_cross_entropy_with_logits(x, t, {.weight = {0.5, 1.0, 2.0}, .pos_weight = {1.0, 2.0, 3.0}, .reduction = r});
      }, "bce_with_logits");
      same_on_both<2>(hp, ht, [&](const auto& x, const auto& t) { return ad::binary_cross_entropy(x, t, {.weight = {0.5, 1.0, 2.0}, .reduction = r}); },
                      "binary_cross_entropy");
      same_on_both<2>(hx, ht, [&](const auto& x, const auto& t) { return ad::smooth_l1_loss(x, t, {.beta = 0.5, .reduction = r}); }, "smooth_l1");
      same_on_both<2>(hx, ht, [&](const auto& x, const auto& t) { return ad::huber_loss(x, t, {.delta = 0.7, .reduction = r}); }, "huber");
      same_on_both<2>(hx, ht, [&](const auto& x, const auto& t) { return ad::l1_loss(x, t, {.reduction = r}); }, "l1");
      same_on_both<2>(hx, ht, [&](const auto& x, const auto& t) { return ad::mse_loss(x, t, {.reduction = r}); }, "mse");
    }
    same_on_both<2>(hx, ht, [&](const auto& x, const auto& t) { return ad::sum(ad::huber_loss_unreduced(x, t) * x); }, "huber none");
    // a host tensor as the target of a device input
    same_on_both<2>(hx, ht, [&](const auto& x, const auto&) { return ad::mse_loss(x, ht); }, "mse, host target");
  }
}

TEST_CASE("cuda losses: cross_entropy with class-probability targets", "[cuda][losses]") {
  for (index_t N : {1, 7, 33}) {
    const auto hx = values<2>({N, 5}, 7, -3.0, 3.0);
    const auto hp = values<2>({N, 5}, 8, 0.0, 1.0);  // rows need not sum to 1 for the comparison
    for (auto r : {ad::reduction::mean, ad::reduction::sum})
      same_on_both<2>(hx, hp, [&](const auto& x, const auto& t) {
        return ad::cross_entropy(x, t, {.weight = {0.5, 1.0, 2.0, 1.5, 1.0}, .label_smoothing = 0.2, .reduction = r});
      }, "soft cross_entropy");
    same_on_both<2>(hx, hp, [&](const auto& x, const auto&) { return ad::cross_entropy(x, hp); }, "soft cross_entropy, host target");
    const auto hx3 = values<3>({N, 4, 3}, 9, -3.0, 3.0), hp3 = values<3>({N, 4, 3}, 10, 0.0, 1.0);
    same_on_both<3>(hx3, hp3, [&](const auto& x, const auto& t) {
      const auto u = ad::cross_entropy_unreduced(x, t, {.label_smoothing = 0.1});
      return ad::sum(u * u);  // a different weight per target
    }, "soft cross_entropy [N, C, d], none");
  }
}
