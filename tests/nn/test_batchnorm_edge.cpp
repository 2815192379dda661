// batch_norm2d's edge cases, as PyTorch 1.13 has them: in training, an input with no values per channel (N = 0 or
// H * W = 0) gives an empty output and leaves the running statistics as they were (weight and bias get zero
// gradients), and an input with one value per channel is refused ("Expected more than 1 value per channel when
// training"); in evaluation both are fine.
#include <catch2/catch.hpp>

#include <vector>

#include <tessera/tessera.hpp>
#include <tessera/autodiff/nn_ops.hpp>
#include <tessera/nn/layers.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;

namespace {
template <class T>
using Stats = ts::Tensor<T, ts::Shape<dyn>>;

template <class T>
void fill_stats(Stats<T>& rm, Stats<T>& rv) {
  for (index_t c = 0; c < rm.size(); ++c) rm.data()[c] = T(0.5) - T(c), rv.data()[c] = T(1.5) + T(c) * T(0.75);
}
template <class T>
ad::Var<T, 1> param(index_t C, T first, bool grad = true) {
  ts::Tensor<T, ts::Shape<dyn>> t(C);
  for (index_t c = 0; c < C; ++c) t.data()[c] = first + T(c);
  return ad::Var<T, 1>(t, grad);
}
}  // namespace

TEMPLATE_TEST_CASE("batch_norm2d in training on an empty batch: empty output, running statistics unchanged", "[nn][batchnorm]",
                   float, double) {
  using T = TestType;
  const index_t C = 3;
  for (const ts::dims_t<4> d : {ts::dims_t<4>{0, C, 4, 4}, ts::dims_t<4>{2, C, 0, 5}, ts::dims_t<4>{0, C, 1, 1}}) {
    INFO("input " << ts::detail::format_dims(d));
    ad::Var<T, 4> x(typename ad::Var<T, 4>::tensor(d), true);
    auto gamma = param<T>(C, T(1.25)), beta = param<T>(C, T(-0.5));
    Stats<T> rm(C), rv(C), rm0(C), rv0(C);
    fill_stats(rm, rv);
    fill_stats(rm0, rv0);
    auto y = ad::batch_norm2d(x, gamma, beta, rm, rv, true);
    CHECK(y.value().dims() == d);
    for (index_t c = 0; c < C; ++c) {
      CHECK(rm.data()[c] == rm0.data()[c]);  // not NaN
      CHECK(rv.data()[c] == rv0.data()[c]);  // not (1 - momentum) * running_var
    }
    ad::sum(y).backward();
    REQUIRE(gamma.has_grad());
    REQUIRE(beta.has_grad());
    for (index_t c = 0; c < C; ++c) {
      CHECK(gamma.grad().data()[c] == T(0));
      CHECK(beta.grad().data()[c] == T(0));
    }
    CHECK(ad::batch_norm2d(x, gamma, beta, rm, rv, false).value().dims() == d);  // evaluation: empty too
  }
}

TEMPLATE_TEST_CASE("batch_norm2d in training refuses one value per channel, naming the shape", "[nn][batchnorm]", float, double) {
  using T = TestType;
  const index_t C = 3;
  typename ad::Var<T, 4>::tensor xt(ts::dims_t<4>{1, C, 1, 1});
  for (index_t c = 0; c < C; ++c) xt.data()[c] = T(c) + T(0.5);
  ad::Var<T, 4> x(xt, true);
  auto gamma = param<T>(C, T(1)), beta = param<T>(C, T(0));
  Stats<T> rm(C), rv(C), rm0(C), rv0(C);
  fill_stats(rm, rv);
  fill_stats(rm0, rv0);
  CHECK_THROWS_AS(ad::batch_norm2d(x, gamma, beta, rm, rv, true), ts::shape_error);
  CHECK_THROWS_WITH(ad::batch_norm2d(x, gamma, beta, rm, rv, true),
                    Catch::Contains("expected more than 1 value per channel when training") && Catch::Contains("[1, 3, 1, 1]"));
  for (index_t c = 0; c < C; ++c) {
    CHECK(rm.data()[c] == rm0.data()[c]);
    CHECK(rv.data()[c] == rv0.data()[c]);
  }
  // evaluation normalises the single value with the running statistics
  const auto y = ad::batch_norm2d(x, gamma, beta, rm, rv, false).value();
  for (index_t c = 0; c < C; ++c) {
    const double want = (double(x.value().data()[c]) - double(rm0.data()[c])) / std::sqrt(double(rv0.data()[c]) + 1e-5) *
                            double(gamma.value().data()[c]) +
                        double(beta.value().data()[c]);
    CHECK(double(y.data()[c]) == Approx(want).epsilon(1e-5));
  }
  // two values per channel (one image of 1 x 2, or two images of 1 x 1) train
  typename ad::Var<T, 4>::tensor t2(ts::dims_t<4>{1, C, 1, 2}), t3(ts::dims_t<4>{2, C, 1, 1});
  for (index_t i = 0; i < t2.size(); ++i) t2.data()[i] = T(i % 5), t3.data()[i] = T(i % 4);
  ad::Var<T, 4> x2(t2, true), x3(t3, true);
  CHECK_NOTHROW(ad::batch_norm2d(x2, gamma, beta, rm, rv, true));
  CHECK_NOTHROW(ad::batch_norm2d(x3, gamma, beta, rm, rv, true));
}

TEST_CASE("nn::BatchNorm2d in training mode refuses a single 1 x 1 image", "[nn][batchnorm]") {
  ts::Rng rng(1);
  ts::nn::BatchNorm2d<2>::state<float, ts::cpu> bn(rng);
  ts::nn::context ctx;
  ctx.training = true;
  ad::Var<float, 4> x(typename ad::Var<float, 4>::tensor(ts::dims_t<4>{1, 2, 1, 1}), false);
  CHECK_THROWS_WITH(bn.forward(x, ctx), Catch::Contains("more than 1 value per channel"));
  CHECK(bn.running_mean.data()[0] == 0.0f);
  CHECK(bn.running_var.data()[0] == 1.0f);
}
