// Gradients of the layer operations (linear, conv2d, pooling, softmax family, losses, dropout, batch norm)
// against central finite differences in double precision.
#include <tessera/autodiff/nn_ops.hpp>

#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

TEST_CASE("linear: every activation, with and without bias", "[autodiff][nn]") {
  ts::cpu_threads::set_num_threads(2);
  for (index_t b : {1, 7}) {
    auto x = ad::Var<double, 2, ts::cpu_threads>(gc::values<2, ts::cpu_threads>({b, 5}, 1), true);
    auto w = ad::Var<double, 2, ts::cpu_threads>(gc::values<2, ts::cpu_threads>({3, 5}, 2), true);
    auto bias = ad::Var<double, 1, ts::cpu_threads>(gc::values<1, ts::cpu_threads>({3}, 3), true);
    auto c = ad::Var<double, 2, ts::cpu_threads>(gc::values<2, ts::cpu_threads>({b, 3}, 4), false);
    for (auto act : {ad::activation::none, ad::activation::relu, ad::activation::tanh, ad::activation::sigmoid}) {
      gc::check([&] { return ad::sum(ad::linear(x, w, bias, act) * c); }, x, w, bias);
      gc::check([&] { return ad::sum(ad::linear(x, w, {}, act) * c); }, x, w);
    }
  }
}

TEST_CASE("conv2d: stride, padding, dilation, groups, bias and activation", "[autodiff][nn]") {
  ts::cpu_threads::set_num_threads(2);
  using V4 = ad::Var<double, 4, ts::cpu_threads>;
  using V1 = ad::Var<double, 1, ts::cpu_threads>;
  struct cfg { index_t n, c, h, k, r; ts::conv2d_options o; ad::activation act; };
  for (auto t : {cfg{2, 3, 7, 4, 3, {.padding = 1}, ad::activation::relu}, cfg{1, 2, 8, 3, 3, {.stride = 2, .padding = 1}, ad::activation::tanh},
                 cfg{2, 2, 9, 2, 3, {.padding = 2, .dilation = 2}, ad::activation::none},
                 cfg{1, 4, 6, 4, 3, {.padding = 1, .groups = 2}, ad::activation::sigmoid}, cfg{1, 1, 5, 2, 1, {}, ad::activation::none}}) {
    INFO("n=" << t.n << " c=" << t.c << " h=" << t.h << " k=" << t.k << " r=" << t.r << " stride=" << t.o.stride.h);
    V4 x(gc::values<4, ts::cpu_threads>({t.n, t.c, t.h, t.h}, 5), true);
    V4 w(gc::values<4, ts::cpu_threads>({t.k, t.c / t.o.groups, t.r, t.r}, 6), true);
    V1 b(gc::values<1, ts::cpu_threads>({t.k}, 7), true);
    const index_t oh = (t.h + 2 * t.o.padding.h - t.o.dilation.h * (t.r - 1) - 1) / t.o.stride.h + 1;
    V4 c(gc::values<4, ts::cpu_threads>({t.n, t.k, oh, oh}, 8), false);
    gc::check([&] { return ad::sum(ad::conv2d(x, w, b, t.o, t.act) * c); }, x, w, b);
    gc::check([&] { return ad::sum(ad::conv2d(x, w, {}, t.o, t.act) * c); }, x, w);
  }
}

TEST_CASE("pooling gradients", "[autodiff][nn]") {
  using V4 = ad::Var<double, 4>;
  ts::Tensor<double, ts::dyn_shape_t<4>> xv(2, 3, 7, 6);
  for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = double((i * 37) % 101) / 50.0 - 1.0;  // distinct within windows
  V4 x(xv, true);
  V4 c(gc::values<4>({2, 3, 3, 3}, 9), false);
  gc::check([&] { return ad::sum(ad::max_pool2d<2>(x) * c); }, x);
  gc::check([&] { return ad::sum(ad::avg_pool2d<2>(x) * c); }, x);
  V4 c2(gc::values<4>({2, 3, 4, 3}, 10), false);
  gc::check([&] { return ad::sum(ad::max_pool2d<3, 2, 1>(x) * c2); }, x);
  gc::check([&] { return ad::sum(ad::avg_pool2d<3, 2, 1>(x) * c2); }, x);
}

TEST_CASE("softmax family and losses", "[autodiff][nn]") {
  using V2 = ad::Var<double, 2>;
  V2 z(gc::values<2>({5, 7}, 11, -3, 3), true);
  V2 c(gc::values<2>({5, 7}, 12), false);
  gc::check([&] { return ad::sum(ad::log_softmax(z) * c); }, z);
  gc::check([&] { return ad::sum(ad::softmax(z) * c); }, z);
  ts::Tensor<int, ts::Shape<ts::dyn>> labels(5);
  for (index_t i = 0; i < 5; ++i) labels(i) = int((i * 3) % 7);
  gc::check([&] { return ad::cross_entropy(z, labels); }, z);
  // the fused loss equals the definition
  auto ls = ad::log_softmax(z).value();
  double want = 0;
  for (index_t i = 0; i < 5; ++i) want -= ls(i, labels(i));
  CHECK(ad::cross_entropy(z, labels).value()() == Approx(want / 5));
  V2 t(gc::values<2>({5, 7}, 13), true);
  gc::check([&] { return ad::mse_loss(z, t); }, z, t);
  labels(2) = 7;
  CHECK_THROWS_WITH(ad::cross_entropy(z, labels), Catch::Contains("label 7 at row 2"));
}

TEST_CASE("dropout and batch norm", "[autodiff][nn]") {
  using V4 = ad::Var<double, 4>;
  using V1 = ad::Var<double, 1>;
  V4 x(gc::values<4>({3, 2, 4, 5}, 14), true);
  V4 c(gc::values<4>({3, 2, 4, 5}, 15), false);
  gc::check([&] {
    ts::Rng rng(7);  // the same mask every call
    return ad::sum(ad::dropout(x, 0.3, rng, true) * c);
  }, x);
  {
    ts::Rng rng(7);
    auto y = ad::dropout(x, 0.5, rng, true).value();
    index_t zeros = 0;
    for (index_t i = 0; i < y.size(); ++i) {
      if (y.data()[i] == 0.0) ++zeros;
      else CHECK(y.data()[i] == Approx(2 * x.value().data()[i]));
    }
    CHECK(zeros > 20);
    CHECK(zeros < 100);
    ts::Rng r2(7);
    CHECK(ad::dropout(x, 0.5, r2, false).value().data()[0] == x.value().data()[0]);
  }
  V1 gamma(gc::values<1>({2}, 16, 0.5, 1.5), true), beta(gc::values<1>({2}, 17), true);
  ts::Tensor<double, ts::Shape<ts::dyn>> rm(2), rv(2);
  rm = 0.0;
  rv = 1.0;
  gc::check([&] { return ad::sum(ad::batch_norm2d(x, gamma, beta, rm, rv, true) * c); }, x, gamma, beta);
  gc::check([&] { return ad::sum(ad::batch_norm2d(x, gamma, beta, rm, rv, false) * c); }, x, gamma, beta);
  // training normalises each channel to mean beta and standard deviation gamma (biased variance)
  auto y = ad::batch_norm2d(x, gamma, beta, rm, rv, true).value();
  for (index_t ch = 0; ch < 2; ++ch) {
    double s = 0, s2 = 0;
    for (index_t n = 0; n < 3; ++n)
      for (index_t i = 0; i < 4; ++i)
        for (index_t j = 0; j < 5; ++j) {
          s += y(n, ch, i, j);
          s2 += y(n, ch, i, j) * y(n, ch, i, j);
        }
    const double m = s / 60, sd = std::sqrt(s2 / 60 - m * m);
    CHECK(m == Approx(beta.value()(ch)).margin(1e-9));
    CHECK(sd == Approx(gamma.value()(ch)).epsilon(1e-4));
  }
}

TEST_CASE("2x2 max-pool backward (the vectorised path) routes each gradient to the window's first maximum", "[autodiff][nn]") {
  for (ts::index_t w : {2, 14, 28, 34, 66}) {  // rows of 1, 7, 14, 17 and 33 outputs: masked tails and full steps
    const ts::index_t n = 2, c = 3, h = 6;
    ts::Tensor<float, ts::dyn_shape_t<4>> xv(n, c, h, w);
    for (ts::index_t i = 0; i < xv.size(); ++i) xv.data()[i] = float((i * 7) % 5);  // many ties
    ad::Var<float, 4> x(xv, true);
    auto y = ad::max_pool2d<2>(x);
    ts::Tensor<float, ts::dyn_shape_t<4>> g(y.dims());
    for (ts::index_t i = 0; i < g.size(); ++i) g.data()[i] = float(i % 11) - 5.0f;
    y.backward(g);
    ts::Tensor<float, ts::dyn_shape_t<4>> want(xv.dims());
    want = 0.0f;
    for (ts::index_t a = 0; a < n; ++a)
      for (ts::index_t b = 0; b < c; ++b)
        for (ts::index_t i = 0; i < h / 2; ++i)
          for (ts::index_t j = 0; j < w / 2; ++j) {
            ts::index_t bi = 2 * i, bj = 2 * j;
            for (int p = 0; p < 2; ++p)
              for (int q = 0; q < 2; ++q)
                if (xv(a, b, 2 * i + p, 2 * j + q) > xv(a, b, bi, bj)) { bi = 2 * i + p; bj = 2 * j + q; }
            want(a, b, bi, bj) += g(a, b, i, j);
          }
    for (ts::index_t i = 0; i < want.size(); ++i) REQUIRE(x.grad().data()[i] == want.data()[i]);
  }
}

TEST_CASE("conv2d gradients in float (the vectorised packing paths) against plain loops", "[autodiff][nn]") {
  ts::cpu_threads::set_num_threads(2);
  using V4 = ad::Var<float, 4, ts::cpu_threads>;
  struct cfg { index_t n, c, h, k, r; int st, pad; };
  for (auto t : {cfg{3, 5, 15, 7, 3, 1, 1}, cfg{2, 3, 30, 40, 3, 1, 1}, cfg{2, 4, 17, 33, 3, 2, 1}, cfg{1, 2, 20, 5, 5, 1, 2},
                 cfg{5, 32, 14, 64, 3, 1, 1}}) {
    INFO("n=" << t.n << " c=" << t.c << " h=" << t.h << " k=" << t.k << " r=" << t.r << " stride=" << t.st);
    ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads> xv(t.n, t.c, t.h, t.h), wv(t.k, t.c, t.r, t.r);
    for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = float((i * 37) % 19) / 19.0f - 0.5f;
    for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] = float((i * 53) % 23) / 23.0f - 0.5f;
    V4 x(xv, true), w(wv, true);
    auto y = ad::conv2d(x, w, {}, {.stride = t.st, .padding = t.pad});
    const index_t oh = y.dims()[2];
    ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads> g(y.dims());
    for (index_t i = 0; i < g.size(); ++i) g.data()[i] = float((i * 29) % 17) / 17.0f - 0.5f;
    y.backward(g);
    for (index_t k = 0; k < t.k; ++k)
      for (index_t c = 0; c < t.c; ++c)
        for (index_t r = 0; r < t.r; ++r)
          for (index_t q = 0; q < t.r; ++q) {
            double s = 0;
            for (index_t n = 0; n < t.n; ++n)
              for (index_t i = 0; i < oh; ++i)
                for (index_t j = 0; j < oh; ++j) {
                  const index_t ih = i * t.st - t.pad + r, iw = j * t.st - t.pad + q;
                  if (ih >= 0 && ih < t.h && iw >= 0 && iw < t.h) s += double(g(n, k, i, j)) * double(xv(n, c, ih, iw));
                }
            REQUIRE(w.grad()(k, c, r, q) == Approx(s).margin(2e-3));
          }
    for (index_t n = 0; n < t.n; ++n)
      for (index_t c = 0; c < t.c; ++c)
        for (index_t ih = 0; ih < t.h; ++ih)
          for (index_t iw = 0; iw < t.h; ++iw) {
            double s = 0;
            for (index_t k = 0; k < t.k; ++k)
              for (index_t r = 0; r < t.r; ++r)
                for (index_t q = 0; q < t.r; ++q) {
                  const index_t a = ih + t.pad - r, b = iw + t.pad - q;
                  if (a % t.st || b % t.st) continue;
                  const index_t i = a / t.st, j = b / t.st;
                  if (a >= 0 && b >= 0 && i < oh && j < oh) s += double(g(n, k, i, j)) * double(wv(k, c, r, q));
                }
            REQUIRE(x.grad()(n, c, ih, iw) == Approx(s).margin(2e-3));
          }
  }
}

TEST_CASE("conv2d + relu + 2x2 max-pool fused equals the three operations", "[autodiff][nn]") {
  ts::cpu_threads::set_num_threads(2);
  using V4 = ad::Var<float, 4, ts::cpu_threads>;
  using V1 = ad::Var<float, 1, ts::cpu_threads>;
  for (index_t h : {14, 15, 28}) {
    ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads> xv(3, 4, h, h), wv(6, 4, 3, 3);
    ts::Tensor<float, ts::dyn_shape_t<1>, ts::cpu_threads> bv(6);
    for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = float((i * 37) % 19) / 19.0f - 0.5f;
    for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] = float((i * 53) % 23) / 23.0f - 0.5f;
    for (index_t i = 0; i < 6; ++i) bv(i) = 0.1f * float(i) - 0.3f;
    V4 x1(xv, true), w1(wv, true), x2(xv, true), w2(wv, true);
    V1 b1(bv, true), b2(bv, true);
    auto fused = ad::conv2d_relu_maxpool2(x1, w1, b1, {.padding = 1});
    auto plain = ad::max_pool2d<2>(ad::conv2d(x2, w2, b2, {.padding = 1}, ad::activation::relu));
    REQUIRE(fused.dims() == plain.dims());
    ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads> g(fused.dims());
    for (index_t i = 0; i < g.size(); ++i) g.data()[i] = float((i * 29) % 17) / 17.0f - 0.5f;
    fused.backward(g);
    plain.backward(g);
    for (index_t i = 0; i < fused.size(); ++i) REQUIRE(fused.value().data()[i] == plain.value().data()[i]);
    for (index_t i = 0; i < xv.size(); ++i) REQUIRE(x1.grad().data()[i] == Approx(x2.grad().data()[i]).margin(1e-5));
    for (index_t i = 0; i < wv.size(); ++i) REQUIRE(w1.grad().data()[i] == Approx(w2.grad().data()[i]).margin(1e-4));
    for (index_t i = 0; i < 6; ++i) REQUIRE(b1.grad()(i) == Approx(b2.grad()(i)).margin(1e-4));
  }
}
