// nn/metrics.hpp: accuracy and correct_count against a plain argmax loop, for logits as a Tensor, a strided View, a
// Var and an unevaluated ad expression, labels of every integer type (as tensors and strided views, on either host
// policy); argmax_as. And the training loop of issue 19: a model on cpu_threads, targets and labels read on cpu,
// mse_loss(...).item() and the accuracy. This file includes nn/sequential.hpp but not autodiff/loss_ops.hpp, so the
// mse_loss taking the cpu target is nn_ops.hpp's (before, only loss_ops.hpp had one, and this did not compile).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <tessera/core/factory.hpp>
#include <tessera/nn/metrics.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dims_t;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
constexpr index_t N = 13, C = 5;

/// Logits [N, C] with ties (row 3: two equal maxima) on P.
template <class P>
ts::Tensor<float, Shape<dyn, C>, P> logits() {
  ts::Tensor<float, Shape<dyn, C>, P> x(N);
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < C; ++j) x(i, j) = float((i * 7 + j * 3) % 11) - 4.0f;
  x(3, 1) = 9.0f, x(3, 4) = 9.0f;
  return x;
}
/// The first largest value's index of each row, by a plain loop.
std::vector<index_t> reference_argmax(const std::vector<float>& v) {
  std::vector<index_t> out;
  for (index_t i = 0; i < N; ++i) {
    index_t best = 0;
    for (index_t j = 1; j < C; ++j)
      if (v[std::size_t(i * C + j)] > v[std::size_t(i * C + best)]) best = j;
    out.push_back(best);
  }
  return out;
}
/// Labels: right on rows where i % 3 != 0, wrong elsewhere.
template <class L, class P>
ts::Tensor<L, Shape<dyn>, P> labels(const std::vector<index_t>& pred) {
  ts::Tensor<L, Shape<dyn>, P> y(N);
  for (index_t i = 0; i < N; ++i) y(i) = L(i % 3 != 0 ? pred[std::size_t(i)] : (pred[std::size_t(i)] + 1) % C);
  return y;
}
constexpr index_t right = N - (N + 2) / 3;  // rows i with i % 3 != 0
}  // namespace

TEMPLATE_TEST_CASE("accuracy and correct_count: labels of every integer type, logits as tensor, view, Var, expression",
                   "[metrics]", std::int32_t, std::int64_t, std::uint8_t, std::int8_t) {
  using L = TestType;
  const auto x = logits<ts::cpu_threads>();
  const auto pred = reference_argmax(x.to_vector());
  CHECK(pred[3] == 1);  // the first of two maxima
  const auto y = labels<L, ts::cpu>(pred);
  CHECK(ts::correct_count(x, y) == right);
  CHECK(ts::accuracy(x, y) == double(right) / double(N));
  // a strided view of the logits (the transpose of a [C, N] tensor)
  ts::Tensor<float, Shape<C, dyn>, ts::cpu_threads> xt(N);
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < C; ++j) xt(j, i) = x(i, j);
  CHECK(ts::correct_count(ts::transpose(xt.cview()), y) == right);
  // a Var and an ad expression (evaluated first)
  auto v = ad::parameter(x);
  CHECK(ts::accuracy(v, y) == double(right) / double(N));
  CHECK(ts::correct_count(v * 2.0f, y) == right);
  CHECK(ts::correct_count(-v, y) != right);  // the argmax of -x is another index on most rows
  // labels as a strided view on the other policy: every other element of a longer tensor
  ts::Tensor<L, Shape<dyn>, ts::cpu_threads> spread(2 * N);
  for (index_t i = 0; i < N; ++i) spread(2 * i) = y(i), spread(2 * i + 1) = L(C - 1);
  CHECK(ts::correct_count(x, ts::slice<0>(spread.cview(), 0, 2 * N, 2)) == right);
  CHECK(ts::correct_count(x, ts::slice<0>(spread.cview(), 1, 2 * N, 2)) != right);
}

TEST_CASE("accuracy: labels out of range count as wrong; row counts must match; no rows is NaN", "[metrics]") {
  const auto x = logits<ts::cpu>();
  const auto pred = reference_argmax(x.to_vector());
  auto y = labels<std::int64_t, ts::cpu>(pred);
  y(1) = -1, y(2) = C + 7;  // rows 1 and 2 were right
  CHECK(ts::correct_count(x, y) == right - 2);
  ts::Tensor<std::int32_t, Shape<dyn>> short_labels(N - 1);
  short_labels = 0;
  CHECK_THROWS_AS(ts::accuracy(x, short_labels), ts::shape_error);
  CHECK_THROWS_WITH(ts::correct_count(x, short_labels), Catch::Contains("[13, 5]") && Catch::Contains("[12]"));
  ts::Tensor<float, Shape<dyn, 3>> none(0);
  ts::Tensor<std::int32_t, Shape<dyn>> no_labels(0);
  CHECK(ts::correct_count(none, no_labels) == 0);
  CHECK(std::isnan(ts::accuracy(none, no_labels)));
}

TEST_CASE("argmax_as: argmax along an axis as another integer type; argmax stays int64", "[metrics]") {
  const auto x = logits<ts::cpu>();
  const auto pred = reference_argmax(x.to_vector());
  static_assert(std::is_same_v<typename decltype(ts::argmax<1>(x))::value_type, std::int64_t>);
  ts::Tensor<std::int32_t, Shape<dyn>> p = ts::argmax_as<std::int32_t, 1>(x);
  REQUIRE(p.size() == N);
  for (index_t i = 0; i < N; ++i) CHECK(p(i) == pred[std::size_t(i)]);
  const auto y = labels<std::int32_t, ts::cpu>(pred);
  ts::Tensor<std::int64_t, Shape<>> hits = ts::sum(ts::cast<std::int64_t>(y == ts::argmax_as<std::int32_t, 1>(x)));
  CHECK(hits.item() == right);
  ts::Tensor<std::uint8_t, Shape<dyn>> cols = ts::argmax_as<std::uint8_t, 0>(x);  // along the rows
  REQUIRE(cols.size() == C);
  for (index_t j = 0; j < C; ++j) {
    index_t best = 0;
    for (index_t i = 1; i < N; ++i)
      if (x(i, j) > x(best, j)) best = i;
    CHECK(cols(j) == best);
  }
}

TEST_CASE("issue 19: a cpu_threads model trained on cpu targets, mse_loss(...).item() and accuracy", "[metrics][losses]") {
  using Mlp = nn::Sequential<Shape<dyn, 4>, nn::Linear<4, 8>, nn::ReLU, nn::Linear<8, 3>>;
  Mlp net(5), twin(5);
  const auto x = ts::randn<float, Shape<dyn, 4>, ts::cpu_threads>({9, 4}, 1);
  const auto t = ts::rand<float, Shape<dyn, 3>>({9, 3}, 2);  // cpu
  const auto t_threads = ts::Tensor<float, Shape<dyn, 3>, ts::cpu_threads>(t.to_vector(), t.dims());
  auto out = net.forward(x);
  auto loss = ad::mse_loss(out, t);  // the target on cpu, the model on cpu_threads
  const float value = loss.item();
  loss.backward();
  auto loss_twin = ad::mse_loss(twin.forward(x), ad::Var<float, 2, ts::cpu_threads>(t_threads));
  CHECK(value == loss_twin.item());
  loss_twin.backward();
  std::vector<std::vector<float>> g, g_twin;
  net.for_each_parameter([&](const std::string&, auto& p) { g.push_back(p.grad().to_vector()); });
  twin.for_each_parameter([&](const std::string&, auto& p) { g_twin.push_back(p.grad().to_vector()); });
  CHECK(g == g_twin);
  // the value against a plain loop over the outputs
  const auto o = out.value().to_vector(), tv = t.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < o.size(); ++i) s += double(o[i] - tv[i]) * double(o[i] - tv[i]);
  CHECK(value == Approx(s / double(o.size())).epsilon(1e-6));
  // accuracy against int32 labels on cpu
  ts::Tensor<std::int32_t, Shape<dyn>> y(9);
  for (index_t i = 0; i < 9; ++i) y(i) = std::int32_t(i % 3);
  index_t expect = 0;
  for (index_t i = 0; i < 9; ++i) {
    index_t best = 0;
    for (index_t j = 1; j < 3; ++j)
      if (o[std::size_t(i * 3 + j)] > o[std::size_t(i * 3 + best)]) best = j;
    expect += best == i % 3;
  }
  CHECK(ts::accuracy(out, y) == double(expect) / 9.0);
}
