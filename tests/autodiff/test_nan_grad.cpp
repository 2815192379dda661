// Gradients with NaN, as PyTorch: relu's backward is threshold_backward (0 where the output is <= 0, else the incoming
// gradient, so a NaN output passes it on); max_pool2d sends each window's gradient to its NaN cell (PyTorch's scan
// `v > max || isnan(v)`: the last NaN of the window), fused into conv + relu + pool too; one NaN pixel in a
// convolution makes exactly the gradients that touch it NaN. Also the softmax family with large logits: computed as
// (z - max) - log(sum(exp(z - max))), so float results are as exact as PyTorch's. References are plain loops in double.
#include <cmath>
#include <limits>
#include <tessera/autodiff/nn_ops.hpp>
#include <vector>

#include "test_support.hpp"

namespace ad = tessera::ad;
using ts::dyn_shape_t;
using ts::index_t;
using tst::TP;

namespace {
using grad_pairs = std::tuple<TP<float, ts::cpu>, TP<double, ts::cpu>, TP<float, ts::cpu_threads>, TP<double, ts::cpu_threads>>;

template <class T>
T qnan() {
  return std::numeric_limits<T>::quiet_NaN();
}
/// a equals the reference b (NaN for NaN) within tol (relative to max(|b|, 1)).
template <class A>
bool near(A a, double b, double tol) {
  if (std::isnan(b)) return std::isnan(double(a));
  return !std::isnan(double(a)) && std::abs(double(a) - b) <= tol * std::max(1.0, std::abs(b));
}
template <class T>
double tol_for() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-11;
}
std::vector<index_t> nan_positions(index_t n) {
  std::vector<index_t> p = {0};
  if (n > 2) p.push_back(n / 2);
  if (n > 1) p.push_back(n - 1);
  return p;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("relu's gradient follows threshold_backward: a NaN output passes the gradient on", "[nan][grad]",
                        grad_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t n : {1, 7, 33})
      for (index_t at : nan_positions(n)) {
        INFO("n=" << n << " NaN at " << at);
        ts::Tensor<T, dyn_shape_t<1>, P> xv(n), cv(n);
        for (index_t i = 0; i < n; ++i) {
          xv(i) = tst::small<T>(i);
          cv(i) = tst::small<T>(i, 5);
        }
        xv(at) = qnan<T>();
        ad::Var<T, 1, P> x(xv, true), c(cv);
        ad::sum(ad::relu(x) * c).backward();
        for (index_t i = 0; i < n; ++i) {
          const double v = double(xv(i));
          const double want = v <= 0 ? 0.0 : double(cv(i));  // threshold_backward(g, relu(x), 0); NaN <= 0 is false
          CHECK(near(x.grad()(i), want, 0));
        }
      }
  }
}

namespace {
/// y = relu(conv2d(x, w, padding 1) + b) and the gradients of sum(y * c), in double, with x [1, C, H, H], w [K, C, 3, 3].
struct conv_ref {
  std::vector<double> y, dx, dw, db;
};
template <class X, class W, class B, class G>
conv_ref conv_relu_ref(const X& x, const W& w, const B& b, const G& c, index_t C, index_t H, index_t K) {
  conv_ref r{std::vector<double>(K * H * H), std::vector<double>(C * H * H, 0.0), std::vector<double>(K * C * 9, 0.0),
             std::vector<double>(K, 0.0)};
  for (index_t k = 0; k < K; ++k)
    for (index_t i = 0; i < H; ++i)
      for (index_t j = 0; j < H; ++j) {
        double s = double(b.data()[k]);
        for (index_t ch = 0; ch < C; ++ch)
          for (index_t u = 0; u < 3; ++u)
            for (index_t v = 0; v < 3; ++v) {
              const index_t ii = i + u - 1, jj = j + v - 1;
              if (ii < 0 || ii >= H || jj < 0 || jj >= H) continue;
              s += double(x.data()[(ch * H + ii) * H + jj]) * double(w.data()[((k * C + ch) * 3 + u) * 3 + v]);
            }
        const double y = std::isnan(s) ? s : (s > 0 ? s : 0.0);
        r.y[(k * H + i) * H + j] = y;
        const double dz = y <= 0 ? 0.0 : double(c.data()[(k * H + i) * H + j]);  // NaN y passes the gradient
        r.db[k] += dz;
        for (index_t ch = 0; ch < C; ++ch)
          for (index_t u = 0; u < 3; ++u)
            for (index_t v = 0; v < 3; ++v) {
              const index_t ii = i + u - 1, jj = j + v - 1;
              if (ii < 0 || ii >= H || jj < 0 || jj >= H) continue;
              r.dw[((k * C + ch) * 3 + u) * 3 + v] += dz * double(x.data()[(ch * H + ii) * H + jj]);
              r.dx[(ch * H + ii) * H + jj] += dz * double(w.data()[((k * C + ch) * 3 + u) * 3 + v]);
            }
      }
  return r;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("one NaN pixel: conv2d + relu is NaN where it touches, and so are exactly those gradients",
                        "[nan][grad][conv]", grad_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t H : {7, 12}) {
      const index_t C = 2, K = 3;
      ts::Tensor<T, dyn_shape_t<4>, P> xv(1, C, H, H), wv(K, C, 3, 3), cv(1, K, H, H);
      ts::Tensor<T, dyn_shape_t<1>, P> bv(K);
      for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = tst::small<T>(i) / T(4);
      for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] = tst::small<T>(i, 1) / T(4);
      for (index_t i = 0; i < cv.size(); ++i) cv.data()[i] = tst::small<T>(i, 2) / T(4);
      for (index_t i = 0; i < K; ++i) bv.data()[i] = tst::small<T>(i, 3) / T(4);
      xv.data()[(1 * H + H / 2) * H + 1] = qnan<T>();
      const auto ref = conv_relu_ref(xv, wv, bv, cv, C, H, K);
      ad::Var<T, 4, P> x(xv, true), w(wv, true), c(cv);
      ad::Var<T, 1, P> b(bv, true);
      auto y = ad::conv2d(x, w, b, {.padding = 1}, ad::activation::relu);
      ad::sum(y * c).backward();
      const double tol = tol_for<T>();
      INFO("H=" << H);
      for (index_t i = 0; i < y.size(); ++i) CHECK(near(y.value().data()[i], ref.y[i], tol));
      for (index_t i = 0; i < xv.size(); ++i) CHECK(near(x.grad().data()[i], ref.dx[i], tol));
      for (index_t i = 0; i < wv.size(); ++i) CHECK(near(w.grad().data()[i], ref.dw[i], tol));
      for (index_t i = 0; i < K; ++i) CHECK(near(b.grad().data()[i], ref.db[i], tol));
      int nan_w = 0;
      for (index_t i = 0; i < wv.size(); ++i) nan_w += std::isnan(double(w.grad().data()[i]));
      CHECK(nan_w == K * 9);  // the weights of channel 1, for every output channel
    }
  }
}

TEMPLATE_LIST_TEST_CASE("relu(linear) with a NaN input: NaN row out, the gradient through it as PyTorch's", "[nan][grad]",
                        grad_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t B : {1, 7, 33})
      for (index_t at : nan_positions(B * 5)) {
        INFO("B=" << B << " NaN at " << at);
        const index_t I = 5, O = 7;
        ts::Tensor<T, dyn_shape_t<2>, P> xv(B, I), wv(O, I), cv(B, O);
        ts::Tensor<T, dyn_shape_t<1>, P> bv(O);
        for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = tst::small<T>(i);
        for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] = tst::small<T>(i, 1);
        for (index_t i = 0; i < cv.size(); ++i) cv.data()[i] = tst::small<T>(i, 2);
        for (index_t i = 0; i < O; ++i) bv.data()[i] = tst::small<T>(i, 3);
        xv.data()[at] = qnan<T>();
        ad::Var<T, 2, P> x(xv, true), w(wv, true), c(cv);
        ad::Var<T, 1, P> b(bv, true);
        auto y = ad::linear(x, w, b, ad::activation::relu);
        ad::sum(y * c).backward();
        std::vector<double> dz(B * O), dx(B * I, 0.0), dw(O * I, 0.0), db(O, 0.0);
        for (index_t r = 0; r < B; ++r)
          for (index_t o = 0; o < O; ++o) {
            double s = double(bv(o));
            for (index_t q = 0; q < I; ++q) s += double(xv(r, q)) * double(wv(o, q));
            const double yy = std::isnan(s) ? s : (s > 0 ? s : 0.0);
            CHECK(near(y.value()(r, o), yy, tol_for<T>()));
            const double d = yy <= 0 ? 0.0 : double(cv(r, o));
            db[o] += d;
            for (index_t q = 0; q < I; ++q) {
              dx[r * I + q] += d * double(wv(o, q));
              dw[o * I + q] += d * double(xv(r, q));
            }
          }
        for (index_t i = 0; i < B * I; ++i) CHECK(near(x.grad().data()[i], dx[i], tol_for<T>()));
        for (index_t i = 0; i < O * I; ++i) CHECK(near(w.grad().data()[i], dw[i], tol_for<T>()));
        for (index_t i = 0; i < O; ++i) CHECK(near(b.grad().data()[i], db[i], tol_for<T>()));
      }
  }
}

namespace {
/// The cell of window (oh, ow) that PyTorch's max_pool2d picks: scanning rows then columns, a cell replaces the
/// running one when it is greater or NaN (so the last NaN, else the first maximum); -1 for an all-padding window.
template <class X>
index_t pool_winner(const X& x, index_t H, index_t W, index_t oh, index_t ow, int K, int S, int Pd) {
  double m = -INFINITY;
  index_t best = -1;
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      const index_t i = oh * S - Pd + kh, j = ow * S - Pd + kw;
      if (i < 0 || i >= H || j < 0 || j >= W) continue;
      const double v = double(x[i * W + j]);
      if (best < 0 || v > m || std::isnan(v)) {
        m = v;
        best = i * W + j;
      }
    }
  return best;
}

template <int K, int S, int Pd, class T, class P>
void check_pool_grad(index_t H, index_t W) {
  const index_t OH = (H + 2 * Pd - K) / S + 1, OW = (W + 2 * Pd - K) / S + 1;
  for (index_t at : nan_positions(H * W)) {
    INFO("K=" << K << " S=" << S << " P=" << Pd << " H=" << H << " W=" << W << " NaN at " << at);
    ts::Tensor<T, dyn_shape_t<4>, P> xv(1, 2, H, W), cv(1, 2, OH, OW);
    for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = tst::small<T>(i);
    for (index_t i = 0; i < cv.size(); ++i) cv.data()[i] = tst::small<T>(i, 4);
    xv.data()[at] = qnan<T>();
    xv.data()[H * W + at] = qnan<T>();
    if (H * W > 1) xv.data()[H * W + (at + 1) % (H * W)] = qnan<T>();  // two NaN cells in some windows of plane 1
    ad::Var<T, 4, P> x(xv, true), c(cv);
    ad::sum(ad::max_pool2d<K, S, Pd>(x) * c).backward();
    std::vector<double> dx(xv.size(), 0.0);
    for (index_t pl = 0; pl < 2; ++pl)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow) {
          const index_t wn = pool_winner(xv.data() + pl * H * W, H, W, oh, ow, K, S, Pd);
          if (wn >= 0) dx[pl * H * W + wn] += double(cv.data()[(pl * OH + oh) * OW + ow]);
        }
    for (index_t i = 0; i < xv.size(); ++i) CHECK(near(x.grad().data()[i], dx[i], 0));
  }
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("max_pool2d's gradient goes to the window's NaN", "[nan][grad][pool]", grad_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t h : {2, 7, 33}) {
      check_pool_grad<2, 2, 0, T, P>(h, h);  // float: the AVX-512 2x2 path
      check_pool_grad<2, 2, 0, T, P>(h, 34);
      check_pool_grad<3, 2, 1, T, P>(h, 7);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("conv2d + relu + 2x2 max-pool fused: with a NaN pixel, the same NaN values and gradients as the three "
                        "operations", "[nan][grad][pool]", grad_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t h : {6, 14, 33}) {
      INFO("h=" << h);
      ts::Tensor<T, dyn_shape_t<4>, P> xv(2, 3, h, h), wv(4, 3, 3, 3);
      ts::Tensor<T, dyn_shape_t<1>, P> bv(4);
      for (index_t i = 0; i < xv.size(); ++i) xv.data()[i] = tst::small<T>(i) / T(8);
      for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] = tst::small<T>(i, 1) / T(8);
      for (index_t i = 0; i < 4; ++i) bv(i) = tst::small<T>(i, 2) / T(8);
      xv.data()[(1 * h + h / 2) * h + h / 3] = qnan<T>();  // image 0, channel 1
      ad::Var<T, 4, P> x1(xv, true), w1(wv, true), x2(xv, true), w2(wv, true);
      ad::Var<T, 1, P> b1(bv, true), b2(bv, true);
      auto fused = ad::conv2d_relu_maxpool2(x1, w1, b1, {.padding = 1});
      auto plain = ad::max_pool2d<2>(ad::conv2d(x2, w2, b2, {.padding = 1}, ad::activation::relu));
      ts::Tensor<T, dyn_shape_t<4>, P> g(fused.dims());
      for (index_t i = 0; i < g.size(); ++i) g.data()[i] = tst::small<T>(i, 3) / T(8);
      fused.backward(g);
      plain.backward(g);
      int nan_out = 0;
      for (index_t i = 0; i < fused.size(); ++i) {
        CHECK(near(fused.value().data()[i], double(plain.value().data()[i]), 0));
        nan_out += std::isnan(double(fused.value().data()[i]));
      }
      CHECK(nan_out >= 4);  // the pooled windows over the 3x3 NaN patch, in every output channel
      for (index_t i = 0; i < xv.size(); ++i) CHECK(near(x1.grad().data()[i], double(x2.grad().data()[i]), tol_for<T>()));
      for (index_t i = 0; i < wv.size(); ++i) CHECK(near(w1.grad().data()[i], double(w2.grad().data()[i]), tol_for<T>()));
      for (index_t i = 0; i < 4; ++i) CHECK(near(b1.grad()(i), double(b2.grad()(i)), tol_for<T>()));
      int nan_w = 0;
      for (index_t i = 0; i < wv.size(); ++i) nan_w += std::isnan(double(w1.grad().data()[i]));
      CHECK(nan_w == 4 * 9);  // the weights reading channel 1
    }
  }
}

// ---- softmax family: precision with large logits ----------------------------------------------------------------

namespace {
using host_policies = std::tuple<ts::cpu, ts::cpu_threads>;
/// |got - want| within `ulps` float ulps of `size` (the size of the result, or of the terms it is made of).
bool within_ulps(double got, double want, double size, double ulps) {
  return std::abs(got - want) <= ulps * double(std::numeric_limits<float>::epsilon()) * std::max(std::abs(size), 1e-30);
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("log_softmax, softmax and cross_entropy of equal logits -100 are exact in float", "[softmax][precision]",
                        host_policies) {
  using P = TestType;
  for (index_t C : {1, 7, 33}) {
    INFO("C=" << C);
    const index_t B = 3;
    ts::Tensor<float, dyn_shape_t<2>, P> zv(B, C);
    for (index_t i = 0; i < zv.size(); ++i) zv.data()[i] = -100.0f;
    ts::Tensor<int, dyn_shape_t<1>> labels(B);
    for (index_t i = 0; i < B; ++i) labels(i) = int(i % C);
    ad::Var<float, 2, P> z(zv, false);
    const auto ls = ad::log_softmax(z).value();
    const auto sm = ad::softmax(z).value();
    const float want_ls = float(-std::log(double(C))), want_sm = float(1.0 / double(C));
    for (index_t i = 0; i < zv.size(); ++i) {
      CHECK(within_ulps(ls.data()[i], want_ls, want_ls, 1));
      CHECK(within_ulps(sm.data()[i], want_sm, want_sm, 1));
    }
    CHECK(within_ulps(ad::cross_entropy(z, labels).value()(), -want_ls, want_ls, 1));
  }
}

TEMPLATE_LIST_TEST_CASE("log_softmax, softmax and cross_entropy near +-1000 agree with double, forward and gradient",
                        "[softmax][precision]", host_policies) {
  using P = TestType;
  for (double centre : {1000.0, -1000.0})
    for (index_t C : {1, 7, 33}) {
      INFO("centre=" << centre << " C=" << C);
      const index_t B = 5;
      ts::Tensor<float, dyn_shape_t<2>, P> zv(B, C), gv(B, C);
      for (index_t i = 0; i < zv.size(); ++i) {
        zv.data()[i] = float(centre) + tst::small<float>(i) / 4;
        gv.data()[i] = tst::small<float>(i, 7) / 4;
      }
      ts::Tensor<int, dyn_shape_t<1>> labels(B);
      for (index_t i = 0; i < B; ++i) labels(i) = int((i * 3) % C);
      ad::Var<float, 2, P> z1(zv, true), z2(zv, true), z3(zv, true);
      auto ls = ad::log_softmax(z1);
      auto sm = ad::softmax(z2);
      auto ce = ad::cross_entropy(z3, labels);
      ls.backward(gv);
      sm.backward(gv);
      ce.backward();
      double loss = 0;
      for (index_t r = 0; r < B; ++r) {
        const float* zr = zv.data() + r * C;
        const float* gr = gv.data() + r * C;
        double m = -INFINITY, s = 0, gs = 0, gps = 0;
        for (index_t j = 0; j < C; ++j) m = std::max(m, double(zr[j]));
        for (index_t j = 0; j < C; ++j) s += std::exp(double(zr[j]) - m);
        std::vector<double> lsr(C), p(C);
        for (index_t j = 0; j < C; ++j) {
          lsr[j] = (double(zr[j]) - m) - std::log(s);
          p[j] = std::exp(lsr[j]);
          gs += gr[j];
          gps += gr[j] * p[j];
        }
        loss -= lsr[labels(r)];
        for (index_t j = 0; j < C; ++j) {
          const index_t k = r * C + j;
          CHECK(within_ulps(ls.value().data()[k], lsr[j], lsr[j], 4));
          CHECK(within_ulps(sm.value().data()[k], p[j], p[j], 8));
          // d log_softmax = g - p sum(g); d softmax = p (g - sum(g p)); d cross_entropy = (p - onehot) / B
          CHECK(within_ulps(z1.grad().data()[k], gr[j] - p[j] * gs, std::abs(gr[j]) + std::abs(p[j] * gs), 8));
          CHECK(within_ulps(z2.grad().data()[k], p[j] * (gr[j] - gps), p[j] * (std::abs(gr[j]) + std::abs(gps)), 8));
          const double oh = j == labels(r) ? 1.0 : 0.0;
          CHECK(within_ulps(z3.grad().data()[k], (p[j] - oh) / B, (p[j] + oh) / B, 8));
        }
      }
      CHECK(within_ulps(ce.value()(), loss / B, loss / B + 1e-30, 8));
    }
}
