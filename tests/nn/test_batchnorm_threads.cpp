// batch_norm2d / batch_norm1d and the convolution's bias gradient on the threaded, vectorised host kernels
// (kernels/cpu/batch_norm.hpp: channels shared among threads from 32768 values on, planes summed in float vector runs
// of 1024): forward, running statistics and every gradient against plain double loops, on sizes that take the
// threaded path, planes with vector tails (13 x 13) and planes longer than one run (37 x 37), an input far from zero
// (mean 100, standard deviation 0.06: a one-pass float sum of squares would lose the variance), float and double, and
// the serial policy for comparison.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <tessera/tessera.hpp>
#include <tessera/autodiff/batch_norm_ops.hpp>
#include <tessera/autodiff/nn_ops.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;

namespace {
struct bn_case {
  index_t n, c, h, w;
  double offset, spread;
};

/// The expected forward, statistics and gradients of training-mode batch norm, in double, by the definition.
struct bn_reference {
  std::vector<double> y, dx, dgamma, dbeta, mean, var_unbiased;
};
bn_reference reference(const std::vector<double>& x, const std::vector<double>& g, const std::vector<double>& gamma,
                       const std::vector<double>& beta, index_t N, index_t C, index_t HW) {
  bn_reference r;
  const index_t M = N * HW;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  for (index_t c = 0; c < C; ++c) {
    double s = 0;
    for (index_t n = 0; n < N; ++n)
      for (index_t i = 0; i < HW; ++i) s += x[std::size_t((n * C + c) * HW + i)];
    const double mu = s / double(M);
    double ss = 0;
    for (index_t n = 0; n < N; ++n)
      for (index_t i = 0; i < HW; ++i) ss += (x[std::size_t((n * C + c) * HW + i)] - mu) * (x[std::size_t((n * C + c) * HW + i)] - mu);
    const double var = ss / double(M), is = 1 / std::sqrt(var + 1e-5);
    r.mean.push_back(mu);
    r.var_unbiased.push_back(ss / double(M - 1));
    double sg = 0, sgx = 0;
    for (index_t n = 0; n < N; ++n)
      for (index_t i = 0; i < HW; ++i) {
        const std::size_t k = std::size_t((n * C + c) * HW + i);
        const double xhat = (x[k] - mu) * is;
        r.y[k] = gamma[std::size_t(c)] * xhat + beta[std::size_t(c)];
        sg += g[k];
        sgx += g[k] * xhat;
      }
    r.dgamma.push_back(sgx);
    r.dbeta.push_back(sg);
    for (index_t n = 0; n < N; ++n)
      for (index_t i = 0; i < HW; ++i) {
        const std::size_t k = std::size_t((n * C + c) * HW + i);
        const double xhat = (x[k] - mu) * is;
        r.dx[k] = gamma[std::size_t(c)] * is * (g[k] - sg / double(M) - xhat * sgx / double(M));
      }
  }
  return r;
}

template <class T, class P>
void check_case(const bn_case& t, bool as_1d) {
  const index_t HW = t.h * t.w, total = t.n * t.c * HW;
  INFO("x [" << t.n << ", " << t.c << ", " << t.h << ", " << t.w << "], offset " << t.offset << (as_1d ? ", batch_norm1d" : ""));
  std::vector<double> x(static_cast<std::size_t>(total)), g(static_cast<std::size_t>(total)), gamma(static_cast<std::size_t>(t.c)),
      beta(static_cast<std::size_t>(t.c));
  for (index_t i = 0; i < total; ++i) {
    x[std::size_t(i)] = double(T(t.offset + t.spread * (double((i * 37) % 101) / 50.0 - 1.0 + 0.3 * double((i / HW) % t.c))));
    g[std::size_t(i)] = double(T(double((i * 53) % 29) / 14.0 - 1.0));
  }
  for (index_t c = 0; c < t.c; ++c) gamma[std::size_t(c)] = 0.5 + 0.25 * double(c), beta[std::size_t(c)] = double(c) - 1.0;
  const bn_reference r = reference(x, g, gamma, beta, t.n, t.c, HW);

  ts::Tensor<T, ts::Shape<dyn>, P> gt(t.c), bt(t.c), rm(t.c), rv(t.c);
  for (index_t c = 0; c < t.c; ++c) gt.data()[c] = T(gamma[std::size_t(c)]), bt.data()[c] = T(beta[std::size_t(c)]), rm.data()[c] = T(0), rv.data()[c] = T(1);
  ad::Var<T, 1, P> gv(gt, true), bv(bt, true);
  const double tol = std::is_same_v<T, float> ? 2e-4 : 1e-10;
  auto check_all = [&](const T* y, const T* dx) {
    for (index_t i = 0; i < total; ++i) {
      REQUIRE(double(y[i]) == Approx(r.y[std::size_t(i)]).margin(tol * 10));
      REQUIRE(double(dx[i]) == Approx(r.dx[std::size_t(i)]).margin(tol * 10));
    }
    for (index_t c = 0; c < t.c; ++c) {
      CHECK(double(gv.grad().data()[c]) == Approx(r.dgamma[std::size_t(c)]).epsilon(tol).margin(tol * double(t.n * HW)));
      CHECK(double(bv.grad().data()[c]) == Approx(r.dbeta[std::size_t(c)]).epsilon(tol).margin(tol * double(t.n * HW)));
      CHECK(double(rm.data()[c]) == Approx(0.1 * r.mean[std::size_t(c)]).epsilon(1e-6).margin(tol * 1e-3));
      CHECK(double(rv.data()[c]) == Approx(0.9 + 0.1 * r.var_unbiased[std::size_t(c)]).epsilon(tol));
    }
  };
  if (as_1d) {  // [N, C, L] with L = H * W
    typename ad::Var<T, 3, P>::tensor xt(ts::dims_t<3>{t.n, t.c, HW}), gtens(ts::dims_t<3>{t.n, t.c, HW});
    for (index_t i = 0; i < total; ++i) xt.data()[i] = T(x[std::size_t(i)]), gtens.data()[i] = T(g[std::size_t(i)]);
    ad::Var<T, 3, P> xv(xt, true);
    auto y = ad::batch_norm1d(xv, gv, bv, rm, rv, true);
    y.backward(gtens);
    check_all(y.value().data(), xv.grad().data());
  } else {
    typename ad::Var<T, 4, P>::tensor xt(ts::dims_t<4>{t.n, t.c, t.h, t.w}), gtens(ts::dims_t<4>{t.n, t.c, t.h, t.w});
    for (index_t i = 0; i < total; ++i) xt.data()[i] = T(x[std::size_t(i)]), gtens.data()[i] = T(g[std::size_t(i)]);
    ad::Var<T, 4, P> xv(xt, true);
    auto y = ad::batch_norm2d(xv, gv, bv, rm, rv, true);
    y.backward(gtens);
    check_all(y.value().data(), xv.grad().data());
  }
}
}  // namespace

TEMPLATE_TEST_CASE("batch_norm2d and batch_norm1d on the threaded kernels match the definition in double", "[nn][batchnorm]", float,
                   double) {
  using T = TestType;
  ts::cpu_threads::set_num_threads(2);
  for (const bn_case t : {bn_case{33, 7, 13, 13, 0.0, 1.0}, bn_case{3, 5, 37, 37, 0.5, 2.0}, bn_case{65, 33, 1, 1, 0.0, 1.0},
                          bn_case{7, 3, 33, 33, 100.0, 0.1}, bn_case{2, 1, 1, 7, 0.0, 1.0}}) {
    check_case<T, ts::cpu_threads>(t, false);
    check_case<T, ts::cpu_threads>(t, true);
    check_case<T, ts::cpu>(t, false);
  }
}

TEST_CASE("conv2d's bias gradient on the threaded path is the sum of the output gradient per channel", "[nn][conv]") {
  ts::cpu_threads::set_num_threads(2);
  using V4 = ad::Var<float, 4, ts::cpu_threads>;
  const index_t N = 9, C = 3, H = 33, K = 7;  // 9 * 7 * 33 * 33 = 68607 output values: threaded
  ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads> xv(N, C, H, H), wv(K, C, 3, 3);
  for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = float((i * 37) % 19) / 19.0f - 0.5f;
  for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] = float((i * 53) % 23) / 23.0f - 0.5f;
  ts::Tensor<float, ts::Shape<dyn>, ts::cpu_threads> bt(K);
  for (index_t k = 0; k < K; ++k) bt.data()[k] = float(k);
  V4 x(xv, true), w(wv, true);
  ad::Var<float, 1, ts::cpu_threads> b(bt, true);
  auto y = ad::conv2d(x, w, b, {.padding = 1});
  typename V4::tensor g(y.dims());
  for (index_t i = 0; i < g.size(); ++i) g.data()[i] = float((i * 29) % 31) / 15.0f - 1.0f;
  y.backward(g);
  for (index_t k = 0; k < K; ++k) {
    double s = 0;
    for (index_t n = 0; n < N; ++n)
      for (index_t p = 0; p < H * H; ++p) s += double(g.data()[(n * K + k) * H * H + p]);
    CHECK(double(b.grad().data()[k]) == Approx(s).epsilon(1e-5).margin(1e-3));
  }
}
