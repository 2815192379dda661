// nn::BatchNorm1d and ad::batch_norm1d on [N, C] and [N, C, L]: training (batch statistics, biased variance; running
// statistics updated with the unbiased one, num_batches_tracked counted) and evaluation (running statistics) against
// plain loops; gradients of the input, weight and bias against finite differences in double in both modes; names,
// compile-time shapes in a Sequential, and the refused inputs.
#include <tessera/nn/batchnorm1d.hpp>
#include <tessera/nn/sequential.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
/// x as [N, C, L] (L = 1 for [N, C]) through batch norm by loops: y, and the running statistics after one step.
struct bn_reference {
  std::vector<double> y, running_mean, running_var;
};
bn_reference bn_loops(const std::vector<double>& x, index_t N, index_t C, index_t L, const std::vector<double>& w,
                      const std::vector<double>& b, std::vector<double> rm, std::vector<double> rv, bool training) {
  bn_reference r;
  r.y.resize(x.size());
  const double eps = 1e-5, momentum = 0.1;
  for (index_t c = 0; c < C; ++c) {
    double mean = rm[std::size_t(c)], var = rv[std::size_t(c)];
    if (training) {
      const double M = double(N * L);
      double s = 0;
      for (index_t n = 0; n < N; ++n)
        for (index_t l = 0; l < L; ++l) s += x[std::size_t((n * C + c) * L + l)];
      mean = s / M;
      double q = 0;
      for (index_t n = 0; n < N; ++n)
        for (index_t l = 0; l < L; ++l) q += (x[std::size_t((n * C + c) * L + l)] - mean) * (x[std::size_t((n * C + c) * L + l)] - mean);
      var = q / M;
      rm[std::size_t(c)] = (1 - momentum) * rm[std::size_t(c)] + momentum * mean;
      rv[std::size_t(c)] = (1 - momentum) * rv[std::size_t(c)] + momentum * q / (M - 1);
    }
    for (index_t n = 0; n < N; ++n)
      for (index_t l = 0; l < L; ++l) {
        const std::size_t k = std::size_t((n * C + c) * L + l);
        r.y[k] = (x[k] - mean) / std::sqrt(var + eps) * w[std::size_t(c)] + b[std::size_t(c)];
      }
  }
  r.running_mean = rm, r.running_var = rv;
  return r;
}
template <class Tn>
std::vector<double> as_vector(const Tn& t) {
  std::vector<double> v(std::size_t(t.size()));
  for (index_t i = 0; i < t.size(); ++i) v[std::size_t(i)] = double(t.data()[i]);
  return v;
}

template <class T, class P, int R>
void check_against_loops(const ts::dims_t<R>& d) {
  const index_t N = d[0], C = d[1], L = R == 3 ? d[2] : 1;
  INFO("input " << ts::detail::format_dims(d));
  // weight and bias set to non-default values, running statistics too
  ad::Var<T, 1, P> w(ts::Tensor<T, ts::dyn_shape_t<1>, P>(ts::cast<T>(gc::values<1, P>({C}, 2, 0.5, 1.5))), true);
  ad::Var<T, 1, P> b(ts::Tensor<T, ts::dyn_shape_t<1>, P>(ts::cast<T>(gc::values<1, P>({C}, 3))), true);
  ts::Tensor<T, Shape<dyn>, P> rm(ts::cast<T>(gc::values<1, P>({C}, 4))), rv(ts::cast<T>(gc::values<1, P>({C}, 5, 0.5, 2.0)));
  auto xd = gc::values<R, P>(d, 6, -2.0, 3.0);
  ad::Var<T, R, P> x(ts::Tensor<T, ts::dyn_shape_t<R>, P>(ts::cast<T>(xd)), false);
  const auto xs = as_vector(x.value());
  for (bool training : {true, false}) {
    INFO("training " << training);
    auto want = bn_loops(xs, N, C, L, as_vector(w.value()), as_vector(b.value()), as_vector(rm), as_vector(rv), training);
    auto y = ad::batch_norm1d(x, w, b, rm, rv, training);
    REQUIRE(y.dims() == d);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    for (index_t i = 0; i < y.size(); ++i) CHECK(double(y.value().data()[i]) == Approx(want.y[std::size_t(i)]).epsilon(tol).margin(tol));
    for (index_t c = 0; c < C; ++c) {
      CHECK(double(rm.data()[c]) == Approx(want.running_mean[std::size_t(c)]).epsilon(tol).margin(tol));
      CHECK(double(rv.data()[c]) == Approx(want.running_var[std::size_t(c)]).epsilon(tol).margin(tol));
    }
  }
}
}  // namespace

TEMPLATE_TEST_CASE("batch_norm1d against loops: [N, C] and [N, C, L], train and eval", "[nn][batchnorm1d]", float, double) {
  using T = TestType;
  check_against_loops<T, ts::cpu, 2>({7, 3});
  check_against_loops<T, ts::cpu_threads, 2>({33, 1});
  check_against_loops<T, ts::cpu, 3>({7, 3, 5});
  check_against_loops<T, ts::cpu_threads, 3>({2, 65, 1});
  check_against_loops<T, ts::cpu_threads, 3>({1, 4, 7});  // one sample: the statistics over L alone
}

TEMPLATE_TEST_CASE("batch_norm1d gradients against finite differences (double)", "[nn][batchnorm1d]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  for (bool training : {true, false}) {
    INFO("training " << training);
    ad::Var<double, 1, P> w(gc::values<1, P>({3}, 2, 0.5, 1.5), true), b(gc::values<1, P>({3}, 3), true);
    ts::Tensor<double, Shape<dyn>, P> rm(gc::values<1, P>({3}, 4)), rv(gc::values<1, P>({3}, 5, 0.5, 2.0));
    {
      ad::Var<double, 2, P> x(gc::values<2, P>({7, 3}, 6), true);
      ad::Var<double, 2, P> c(gc::values<2, P>({7, 3}, 7), false);
      gc::check([&] { return ad::sum(ad::batch_norm1d(x, w, b, rm, rv, training) * c); }, x, w, b);
    }
    {
      ad::Var<double, 3, P> x(gc::values<3, P>({4, 3, 5}, 8), true);
      ad::Var<double, 3, P> c(gc::values<3, P>({4, 3, 5}, 9), false);
      gc::check([&] { return ad::sum(ad::batch_norm1d(x, w, b, rm, rv, training) * c); }, x, w, b);
    }
  }
}

TEST_CASE("BatchNorm1d in a Sequential: shapes, names, buffers, train/eval, num_batches_tracked", "[nn][batchnorm1d]") {
  using Net = nn::Sequential<Shape<dyn, 6>, nn::Linear<6, 4>, nn::BatchNorm1d<4>, nn::ReLU, nn::Linear<4, 2>>;
  using Seq3 = nn::Sequential<Shape<dyn, 3, 9>, nn::BatchNorm1d<3>, nn::Flatten, nn::Linear<27, 2>>;
  STATIC_REQUIRE(Net::shapes_fit);
  STATIC_REQUIRE(std::is_same_v<Net::output_shape, Shape<dyn, 2>>);
  STATIC_REQUIRE(std::is_same_v<Seq3::output_shape, Shape<dyn, 2>>);
  STATIC_REQUIRE(nn::BatchNorm1d<3>::accepts<Shape<dyn, 3>>);
  STATIC_REQUIRE(!nn::BatchNorm1d<3>::accepts<Shape<dyn, 4>>);
  STATIC_REQUIRE(!nn::BatchNorm1d<3>::accepts<Shape<dyn, 3, 2, 2>>);
  Net net(1);
  std::vector<std::string> names, buffers;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  net.for_each_buffer([&](const std::string& n, auto&) { buffers.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"});
  CHECK(buffers == std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"});
  auto& bn = net.layer<1>();
  CHECK(bn.weight.value()(0) == 1.0f);
  CHECK(bn.bias.value()(0) == 0.0f);
  ts::Tensor<float, Shape<dyn, 6>, ts::cpu_threads> x(5);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 7) / 7.0f - 0.4f;
  net.train();
  auto y1 = net.predict(x);
  net.predict(x);
  CHECK(bn.num_batches_tracked() == 2);
  const float rm = bn.running_mean(0);
  CHECK(rm != 0.0f);
  net.eval();
  auto y2 = net.predict(x);
  CHECK(bn.num_batches_tracked() == 2);  // evaluation counts nothing and leaves the statistics
  CHECK(bn.running_mean(0) == rm);
  CHECK(y2.dims() == y1.dims());
  Seq3 s(2);
  ts::Tensor<float, Shape<dyn, 3, 9>, ts::cpu_threads> xs(4);
  xs = 0.25f;
  CHECK(s.predict(xs).dims() == ts::dims_t<2>{4, 2});
}

TEST_CASE("batch_norm1d refuses one value per channel in training and parameters of another size", "[nn][batchnorm1d]") {
  ad::Var<float, 1> w(ts::Tensor<float, Shape<dyn>>(3), true), b(ts::Tensor<float, Shape<dyn>>(3), true);
  ts::Tensor<float, Shape<dyn>> rm(3), rv(3);
  rm = 0.0f;
  rv = 1.0f;
  w.mutable_value() = 1.0f;
  b.mutable_value() = 0.0f;
  ad::Var<float, 2> one(ts::Tensor<float, Shape<dyn, dyn>>(ts::dims_t<2>{1, 3}), false);
  CHECK_THROWS_WITH(ad::batch_norm1d(one, w, b, rm, rv, true), Catch::Contains("more than 1 value per channel") && Catch::Contains("[1, 3]"));
  CHECK_NOTHROW(ad::batch_norm1d(one, w, b, rm, rv, false));
  ad::Var<float, 3> four(ts::Tensor<float, Shape<dyn, dyn, dyn>>(ts::dims_t<3>{2, 4, 5}), false);
  CHECK_THROWS_AS(ad::batch_norm1d(four, w, b, rm, rv, true), ts::shape_error);
  CHECK_THROWS_WITH(ad::batch_norm1d(four, w, b, rm, rv, true), Catch::Contains("[2, 4, 5]") && Catch::Contains("[3]"));
}
