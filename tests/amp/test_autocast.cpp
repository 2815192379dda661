// amp::autocast (amp/autocast.hpp): the bf16 forms of linear, conv2d and conv2d_relu_maxpool2 against plain loops in
// double on the bf16-rounded operands (forward and every gradient), the scope's rules (nesting, autocast(false), other
// threads, double untouched, the weight cache per scope, no_grad), shape errors, and a model's gradients under
// autocast against its fp32 gradients.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include <tessera/amp/autocast.hpp>
#include <tessera/nn/sequential.hpp>

namespace ts = tessera;
using ts::index_t;
using act_t = ts::ad::activation;

namespace {

std::vector<float> randoms(index_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}
/// bf16 rounding, written here (round to nearest even on the bits), not tessera's conversion.
double bf(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return f;
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}
double act_ref(double v, act_t a) {
  switch (a) {
    case act_t::relu: return v < 0 ? 0 : v;
    case act_t::tanh: return std::tanh(v);
    case act_t::sigmoid: return 1 / (1 + std::exp(-v));
    default: return v;
  }
}
/// d act / d z from the output y (as the fp32 backward computes it).
double act_grad_from_y(double y, act_t a) {
  switch (a) {
    case act_t::relu: return y > 0 ? 1 : 0;
    case act_t::tanh: return 1 - y * y;
    case act_t::sigmoid: return y * (1 - y);
    default: return 1;
  }
}
template <class P, int R>
ts::ad::Var<float, R, P> var(const std::vector<float>& v, ts::dims_t<R> d, bool grad = true) {
  ts::Tensor<float, ts::dyn_shape_t<R>, P> t(d);
  std::copy(v.begin(), v.end(), t.data());
  return ts::ad::Var<float, R, P>(std::move(t), grad);
}
template <class Tn>
std::vector<float> values(const Tn& t) {
  return std::vector<float>(t.data(), t.data() + t.size());
}
/// |got - want| <= tol * scale + slack + 1e-6 for each element.
void check_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale, double tol,
                 const char* what, const std::vector<double>* slack = nullptr) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(what << " element " << i << ": " << got[i] << " vs " << want[i]);
    REQUIRE(std::abs(double(got[i]) - want[i]) <= tol * scale[i] + (slack ? (*slack)[i] : 0.0) + 1e-6);
  }
}
/// How far bf16(dz) may differ from the reference's: one bf16 step (2^-7 relative) where dz (fp32, computed by the
/// code under test with tanh's or sigmoid's derivative in its own order of operations) lies within a few fp32 steps
/// of a rounding midpoint, where a last-bit difference in dz rounds the other way; 0 elsewhere.
double flip_slack(float dz) {
  std::uint32_t u;
  std::memcpy(&u, &dz, 4);
  const int low = int(u & 0xffffu) - 0x8000;
  return (low < 64 && low > -64) ? std::ldexp(std::abs(double(dz)), -7) : 0.0;
}

const act_t all_acts[] = {act_t::none, act_t::relu, act_t::tanh, act_t::sigmoid};

}  // namespace

TEMPLATE_TEST_CASE("autocast linear: forward and gradients against plain loops on bf16 operands", "[amp]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  const std::vector<std::array<index_t, 3>> sizes = {{1, 1, 1}, {7, 33, 5}, {33, 7, 65}, {65, 127, 33}, {3, 1000, 17}};
  for (int nt : {1, 2}) {
    if constexpr (std::is_same_v<P, ts::cpu_threads>) ts::cpu_threads::set_num_threads(nt);
    else if (nt == 2) continue;
    for (auto [B, I, O] : sizes)
      for (act_t a : all_acts)
        for (bool has_b : {true, false}) {
          INFO("B " << B << " I " << I << " O " << O << " act " << int(a) << " bias " << has_b << " threads " << nt);
          auto xv = randoms(B * I, 1), wv = randoms(O * I, 2), bv = randoms(O, 3), gv = randoms(B * O, 4);
          auto x = var<P, 2>(xv, {B, I}), W = var<P, 2>(wv, {O, I});
          auto b = has_b ? var<P, 1>(bv, {O}) : ts::ad::Var<float, 1, P>();
          auto G = var<P, 2>(gv, {B, O}, false);
          ts::ad::Var<float, 0, P> loss;
          ts::ad::Var<float, 2, P> y;
          {
            ts::amp::autocast bf16;
            y = ts::ad::linear(x, W, b, a);
            loss = ts::ad::sum(y * G);
          }
          // forward
          std::vector<double> yref(B * O), scale(B * O), z(B * O);
          for (index_t i = 0; i < B; ++i)
            for (index_t o = 0; o < O; ++o) {
              double s = 0, m = 0;
              for (index_t k = 0; k < I; ++k) {
                s += bf(xv[i * I + k]) * bf(wv[o * I + k]);
                m += std::abs(bf(xv[i * I + k]) * bf(wv[o * I + k]));
              }
              z[i * O + o] = s + (has_b ? bv[o] : 0.0);
              yref[i * O + o] = act_ref(z[i * O + o], a);
              scale[i * O + o] = m + 1;
            }
          check_close(values(y.value()), yref, scale, 1e-5, "y");
          loss.backward();
          // dz = G act'(y) from the fp32 output, rounded to bf16 for the products
          const auto yv = values(y.value());
          std::vector<double> dz(B * O), dzb(B * O), flips(B * O);
          for (index_t j = 0; j < B * O; ++j) {
            dz[j] = double(gv[j]) * act_grad_from_y(yv[j], a);
            const float dzf = float(gv[j]) * float(act_grad_from_y(yv[j], a));
            dzb[j] = bf(dzf);
            flips[j] = flip_slack(dzf);
          }
          std::vector<double> dx(B * I, 0), sx(B * I, 1), dw(O * I, 0), sw(O * I, 1), db(O, 0), sb(O, 1), fx(B * I, 0), fw(O * I, 0);
          for (index_t i = 0; i < B; ++i)
            for (index_t o = 0; o < O; ++o)
              for (index_t k = 0; k < I; ++k) {
                dx[i * I + k] += dzb[i * O + o] * bf(wv[o * I + k]);
                sx[i * I + k] += std::abs(dzb[i * O + o] * bf(wv[o * I + k]));
                dw[o * I + k] += dzb[i * O + o] * bf(xv[i * I + k]);
                sw[o * I + k] += std::abs(dzb[i * O + o] * bf(xv[i * I + k]));
                fx[i * I + k] += flips[i * O + o] * std::abs(bf(wv[o * I + k]));
                fw[o * I + k] += flips[i * O + o] * std::abs(bf(xv[i * I + k]));
              }
          for (index_t i = 0; i < B; ++i)
            for (index_t o = 0; o < O; ++o) {
              db[o] += dz[i * O + o];
              sb[o] += std::abs(dz[i * O + o]);
            }
          check_close(values(x.grad()), dx, sx, 1e-5, "dx", &fx);
          check_close(values(W.grad()), dw, sw, 1e-5, "dW", &fw);
          if (has_b) check_close(values(b.grad()), db, sb, 1e-5, "db");
        }
  }
  ts::cpu_threads::set_num_threads(2);
}

namespace {
struct conv_case {
  index_t N, C, H, W, K, R, S;
  ts::conv2d_options opt;
};
/// y[n, k, oh, ow] (pre-activation, with bias) in double on bf16 operands, and the sum of |products| beside it.
/// f(y_index, x_index, w_index) for every tap of the convolution that reads the input (padding skipped): the
/// definition of conv2d, walked in plain loops.
template <class F>
void for_each_tap(const conv_case& c, index_t OH, index_t OW, F&& f) {
  const index_t Cg = c.C / c.opt.groups, Kg = c.K / c.opt.groups;
  for (index_t n = 0; n < c.N; ++n)
    for (index_t k = 0; k < c.K; ++k)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow)
          for (index_t ci = 0; ci < Cg; ++ci)
            for (index_t r = 0; r < c.R; ++r)
              for (index_t q = 0; q < c.S; ++q) {
                const index_t ih = oh * c.opt.stride.h - c.opt.padding.h + r * c.opt.dilation.h;
                const index_t iw = ow * c.opt.stride.w - c.opt.padding.w + q * c.opt.dilation.w;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                f(std::size_t(((n * c.K + k) * OH + oh) * OW + ow), std::size_t(((n * c.C + (k / Kg) * Cg + ci) * c.H + ih) * c.W + iw),
                  std::size_t(((k * Cg + ci) * c.R + r) * c.S + q));
              }
}
/// y[n, k, oh, ow] (pre-activation, with bias) in double on bf16 operands, and the sum of |products| beside it.
void conv_ref(const conv_case& c, const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>* b, index_t OH,
              index_t OW, std::vector<double>& z, std::vector<double>& scale) {
  z.assign(c.N * c.K * OH * OW, 0);
  scale.assign(z.size(), 1);
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = b ? (*b)[(i / std::size_t(OH * OW)) % std::size_t(c.K)] : 0.0;
  for_each_tap(c, OH, OW, [&](std::size_t yi, std::size_t xi, std::size_t wi) {
    const double p = bf(x[xi]) * bf(w[wi]);
    z[yi] += p;
    scale[yi] += std::abs(p);
  });
}
/// dx and dw of the convolution in double from dzb (the bf16-rounded output gradient), with their scales and the
/// slack of dz's rounding flips (flips: flip_slack per output element).
void conv_grad_ref(const conv_case& c, const std::vector<float>& x, const std::vector<float>& w, const std::vector<double>& dzb,
                   index_t OH, index_t OW, std::vector<double>& dx, std::vector<double>& sx, std::vector<double>& dw,
                   std::vector<double>& sw, const std::vector<double>& flips, std::vector<double>& fx, std::vector<double>& fw) {
  dx.assign(x.size(), 0), sx.assign(x.size(), 1), dw.assign(w.size(), 0), sw.assign(w.size(), 1);
  fx.assign(x.size(), 0), fw.assign(w.size(), 0);
  for_each_tap(c, OH, OW, [&](std::size_t yi, std::size_t xi, std::size_t wi) {
    const double g = dzb[yi], f = flips[yi];
    dx[xi] += g * bf(w[wi]);
    sx[xi] += std::abs(g * bf(w[wi]));
    dw[wi] += g * bf(x[xi]);
    sw[wi] += std::abs(g * bf(x[xi]));
    fx[xi] += f * std::abs(bf(w[wi]));
    fw[wi] += f * std::abs(bf(x[xi]));
  });
}
}  // namespace

TEMPLATE_TEST_CASE("autocast conv2d: forward and gradients against plain loops on bf16 operands", "[amp]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  const std::vector<conv_case> cases = {
      {1, 1, 1, 1, 1, 1, 1, {}},
      {2, 3, 7, 7, 5, 3, 3, {.padding = 1}},
      {3, 4, 13, 9, 6, 3, 5, {.stride = 2, .padding = {1, 2}, .groups = 2}},
      {1, 7, 9, 11, 7, 3, 3, {.padding = 2, .dilation = 2, .groups = 7}},
      {2, 1, 28, 28, 33, 3, 3, {.padding = 1}},
  };
  for (int nt : {1, 2}) {
    if constexpr (std::is_same_v<P, ts::cpu_threads>) ts::cpu_threads::set_num_threads(nt);
    else if (nt == 2) continue;
    for (const auto& c : cases)
      for (act_t a : all_acts) {
        const bool has_b = a != act_t::tanh;  // one activation without a bias
        INFO("N " << c.N << " C " << c.C << " H " << c.H << " W " << c.W << " K " << c.K << " act " << int(a) << " threads " << nt);
        const index_t Cg = c.C / c.opt.groups;
        auto xv = randoms(c.N * c.C * c.H * c.W, 11), wv = randoms(c.K * Cg * c.R * c.S, 12), bv = randoms(c.K, 13);
        auto x = var<P, 4>(xv, {c.N, c.C, c.H, c.W}), w = var<P, 4>(wv, {c.K, Cg, c.R, c.S});
        auto b = has_b ? var<P, 1>(bv, {c.K}) : ts::ad::Var<float, 1, P>();
        ts::ad::Var<float, 4, P> y;
        {
          ts::amp::autocast bf16;
          y = ts::ad::conv2d(x, w, b, c.opt, a);
        }
        const index_t OH = y.dims()[2], OW = y.dims()[3];
        std::vector<double> z, scale;
        conv_ref(c, xv, wv, has_b ? &bv : nullptr, OH, OW, z, scale);
        std::vector<double> yref(z.size());
        for (std::size_t i = 0; i < z.size(); ++i) yref[i] = act_ref(z[i], a);
        check_close(values(y.value()), yref, scale, 1e-5, "y");

        auto gv = randoms(y.size(), 14);
        auto G = var<P, 4>(gv, y.dims(), false);
        ts::ad::sum(y * G).backward();
        const auto yv = values(y.value());
        std::vector<double> dzb(yv.size()), flips(yv.size()), db(c.K, 0), sb(c.K, 1);
        for (std::size_t i = 0; i < yv.size(); ++i) {
          const float dzf = float(gv[i]) * float(act_grad_from_y(yv[i], a));
          dzb[i] = bf(dzf);
          flips[i] = flip_slack(dzf);
          const index_t k = index_t(i / std::size_t(OH * OW)) % c.K;
          db[k] += dzf;
          sb[k] += std::abs(dzf);
        }
        std::vector<double> dx, sx, dw, sw, fx, fw;
        conv_grad_ref(c, xv, wv, dzb, OH, OW, dx, sx, dw, sw, flips, fx, fw);
        check_close(values(x.grad()), dx, sx, 1e-5, "dx", &fx);
        check_close(values(w.grad()), dw, sw, 1e-5, "dw", &fw);
        if (has_b) check_close(values(b.grad()), db, sb, 1e-5, "db");
      }
  }
  ts::cpu_threads::set_num_threads(2);
}

TEST_CASE("autocast conv2d_relu_maxpool2: the bf16 convolution, then fp32 pooling and its fp32 gradient routing", "[amp]") {
  using P = ts::cpu_threads;
  const conv_case c{3, 2, 9, 12, 5, 3, 3, {.padding = 1}};
  auto xv = randoms(c.N * c.C * c.H * c.W, 21), wv = randoms(c.K * c.C * 9, 22), bv = randoms(c.K, 23);
  auto x = var<P, 4>(xv, {c.N, c.C, c.H, c.W}), w = var<P, 4>(wv, {c.K, c.C, 3, 3});
  auto b = var<P, 1>(bv, {c.K});
  ts::ad::Var<float, 4, P> pooled, full;
  {
    ts::amp::autocast bf16;
    pooled = ts::ad::conv2d_relu_maxpool2(x, w, b, c.opt);
    ts::ad::no_grad ng;
    full = ts::ad::conv2d(x, w, b, c.opt, act_t::relu);  // checked against plain loops by the test above
  }
  const index_t OH = 9, OW = 12, PH = 4, PW = 6;
  REQUIRE(pooled.dims() == ts::dims_t<4>{c.N, c.K, PH, PW});
  const auto yv = values(full.value()), pv = values(pooled.value());
  auto gv = randoms(pooled.size(), 24);
  ts::ad::sum(pooled * var<P, 4>(gv, pooled.dims(), false)).backward();
  std::vector<double> dz(yv.size(), 0), db(c.K, 0), sb(c.K, 1);
  for (index_t n = 0; n < c.N; ++n)
    for (index_t k = 0; k < c.K; ++k)
      for (index_t ph = 0; ph < PH; ++ph)
        for (index_t pw = 0; pw < PW; ++pw) {
          // the window's first maximum (row-major), the gradient through ReLU where the output is positive
          const index_t base = ((n * c.K + k) * OH + 2 * ph) * OW + 2 * pw;
          index_t best = base;
          for (index_t dh = 0; dh < 2; ++dh)
            for (index_t dw = 0; dw < 2; ++dw)
              if (yv[std::size_t(base + dh * OW + dw)] > yv[std::size_t(best)]) best = base + dh * OW + dw;
          const std::size_t pi = std::size_t(((n * c.K + k) * PH + ph) * PW + pw);
          REQUIRE(pv[pi] == yv[std::size_t(best)]);
          if (yv[std::size_t(best)] > 0) {
            dz[std::size_t(best)] += gv[pi];
            db[k] += gv[pi];
            sb[k] += std::abs(gv[pi]);
          }
        }
  std::vector<double> dzb(dz.size()), none(dz.size(), 0.0);
  for (std::size_t i = 0; i < dz.size(); ++i) dzb[i] = bf(float(dz[i]));
  std::vector<double> dx, sx, dw, sw, fx, fw;
  conv_grad_ref(c, xv, wv, dzb, OH, OW, dx, sx, dw, sw, none, fx, fw);
  check_close(values(x.grad()), dx, sx, 1e-5, "dx");
  check_close(values(w.grad()), dw, sw, 1e-5, "dw");
  check_close(values(b.grad()), db, sb, 1e-5, "db");
}

TEST_CASE("autocast scopes: bf16 inside, fp32 outside, nesting, other threads, double, no_grad", "[amp]") {
  using P = ts::cpu_threads;
  const index_t B = 5, I = 37, O = 9;
  auto xv = randoms(B * I, 31), wv = randoms(O * I, 32);
  auto x = var<P, 2>(xv, {B, I}), W = var<P, 2>(wv, {O, I});
  const ts::ad::Var<float, 1, P> none;
  const auto fp32 = values(ts::ad::linear(x, W, none).value());
  auto bf16_ref = [&] {
    std::vector<float> r(B * O);
    for (index_t i = 0; i < B; ++i)
      for (index_t o = 0; o < O; ++o) {
        double s = 0;
        for (index_t k = 0; k < I; ++k) s += bf(xv[i * I + k]) * bf(wv[o * I + k]);
        r[i * O + o] = float(s);
      }
    return r;
  }();
  auto near = [](const std::vector<float>& a, const std::vector<float>& b, double tol) {
    for (std::size_t i = 0; i < a.size(); ++i)
      if (std::abs(a[i] - b[i]) > tol) return false;
    return true;
  };
  REQUIRE_FALSE(near(fp32, bf16_ref, 1e-4));  // the operands are not bf16 values: the two modes differ visibly
  REQUIRE_FALSE(ts::amp::is_autocast_enabled());
  {
    ts::amp::autocast on;
    REQUIRE(ts::amp::is_autocast_enabled());
    REQUIRE(ts::amp::is_autocast_enabled<ts::cpu>());
    REQUIRE(near(values(ts::ad::linear(x, W, none).value()), bf16_ref, 1e-5));
    {
      ts::amp::autocast off(false);
      REQUIRE_FALSE(ts::amp::is_autocast_enabled());
      REQUIRE(values(ts::ad::linear(x, W, none).value()) == fp32);
      {
        ts::amp::autocast again;
        REQUIRE(near(values(ts::ad::linear(x, W, none).value()), bf16_ref, 1e-5));
      }
      REQUIRE(values(ts::ad::linear(x, W, none).value()) == fp32);
    }
    REQUIRE(near(values(ts::ad::linear(x, W, none).value()), bf16_ref, 1e-5));
    // another thread is not in this thread's scope
    std::vector<float> other;
    std::thread t([&] { other = values(ts::ad::linear(x, W, none).value()); });
    t.join();
    REQUIRE(other == fp32);
    // double products are never cast
    ts::Tensor<double, ts::dyn_shape_t<2>, P> xd(B, I), wd(O, I);
    for (index_t i = 0; i < B * I; ++i) xd.data()[i] = xv[std::size_t(i)];
    for (index_t i = 0; i < O * I; ++i) wd.data()[i] = wv[std::size_t(i)];
    const auto yd = ts::ad::linear(ts::ad::Var<double, 2, P>(xd), ts::ad::Var<double, 2, P>(wd), ts::ad::Var<double, 1, P>());
    for (index_t i = 0; i < B; ++i)
      for (index_t o = 0; o < O; ++o) {
        double s = 0;
        for (index_t k = 0; k < I; ++k) s += double(xv[i * I + k]) * double(wv[o * I + k]);
        REQUIRE(std::abs(yd.value().data()[i * O + o] - s) < 1e-12);
      }
    // without gradient mode nothing is recorded
    ts::ad::no_grad ng;
    REQUIRE_FALSE(ts::ad::linear(x, W, none).requires_grad());
  }
  REQUIRE_FALSE(ts::amp::is_autocast_enabled());
  REQUIRE(values(ts::ad::linear(x, W, none).value()) == fp32);
}

TEST_CASE("autocast weight cache: a weight is rounded once per scope, and a new scope sees its new values", "[amp]") {
  using P = ts::cpu_threads;
  const index_t B = 3, I = 8, O = 4;
  auto x = var<P, 2>(randoms(B * I, 41), {B, I}, false);
  auto W = var<P, 2>(randoms(O * I, 42), {O, I});
  auto Wc = var<P, 2>(randoms(O * I, 43), {O, I}, false);  // a constant (no gradient): not cached
  const ts::ad::Var<float, 1, P> none;
  {
    ts::amp::autocast s;
    auto y1 = ts::ad::linear(x, W, none);
    auto y2 = ts::ad::linear(x * 1.f, W, none);  // a computed input: rounded at its use, not kept
    REQUIRE(values(y1.value()) == values(y2.value()));
    ts::ad::linear(x, Wc, none);
    REQUIRE(s.cached_weights() == 1);
  }
  // change W (as an optimizer step between scopes), then a new scope reads the new values
  for (index_t i = 0; i < O * I; ++i) const_cast<float*>(W.value().data())[i] = 0.5f;
  ts::amp::autocast s2;
  const auto y = values(ts::ad::linear(x, W, none).value());
  for (index_t i = 0; i < B; ++i)
    for (index_t o = 0; o < O; ++o) {
      double r = 0;
      for (index_t k = 0; k < I; ++k) r += bf(x.value().data()[i * I + k]) * 0.5;
      REQUIRE(std::abs(y[std::size_t(i * O + o)] - r) < 1e-5);
    }
}

TEST_CASE("autocast: shape errors name both shapes, as in fp32", "[amp]") {
  using P = ts::cpu_threads;
  ts::amp::autocast s;
  auto x = var<P, 2>(randoms(6, 1), {2, 3}), W = var<P, 2>(randoms(8, 2), {2, 4});
  REQUIRE_THROWS_WITH(ts::ad::linear(x, W, ts::ad::Var<float, 1, P>()), Catch::Contains("[2, 3]") && Catch::Contains("[2, 4]"));
  auto xi = var<P, 4>(randoms(2 * 3 * 5 * 5, 3), {2, 3, 5, 5}), w = var<P, 4>(randoms(4 * 2 * 9, 4), {4, 2, 3, 3});
  REQUIRE_THROWS_AS(ts::ad::conv2d(xi, w, ts::ad::Var<float, 1, P>()), ts::shape_error);
  auto w3 = var<P, 4>(randoms(4 * 3 * 9, 5), {4, 3, 3, 3});
  REQUIRE_THROWS_WITH(ts::ad::conv2d(xi, w3, var<P, 1>(randoms(5, 6), {5})), Catch::Contains("[5]") && Catch::Contains("[4, 3, 3, 3]"));
}

TEST_CASE("autocast on a model: a CNN's gradients in bf16 follow its fp32 gradients", "[amp]") {
  using P = ts::cpu_threads;
  using net_t = ts::nn::Sequential<ts::Shape<ts::dyn, 1, 12, 12>, ts::nn::Conv2d<1, 8, 3, ts::conv2d_options{.padding = 1}>, ts::nn::ReLU,
                                   ts::nn::MaxPool2d<2>, ts::nn::Conv2d<8, 16, 3, ts::conv2d_options{.padding = 1}>, ts::nn::ReLU,
                                   ts::nn::Flatten, ts::nn::Linear<16 * 6 * 6, 32>, ts::nn::ReLU, ts::nn::Linear<32, 10>>::on<P>;
  net_t net;
  const index_t N = 16;
  auto xv = randoms(N * 144, 51, 0.f, 1.f);
  ts::Tensor<float, ts::dyn_shape_t<4>, P> xt(N, 1, 12, 12);
  std::copy(xv.begin(), xv.end(), xt.data());
  ts::Tensor<std::int32_t, ts::dyn_shape_t<1>, P> labels(N);
  for (index_t i = 0; i < N; ++i) labels.data()[i] = std::int32_t(i % 10);
  auto grads = [&](bool amp) {
    net.zero_grad();
    ts::ad::Var<float, 0, P> loss;
    {
      ts::amp::autocast s(amp);
      loss = ts::ad::cross_entropy(net.forward(ts::ad::Var<float, 4, P>(xt)), labels);
    }
    loss.backward();
    std::vector<std::vector<float>> g;
    net.for_each_parameter([&](const std::string&, auto& v) { g.push_back(values(v.grad())); });
    return std::make_pair(loss.item(), g);
  };
  const auto [l32, g32] = grads(false);
  const auto [l16, g16] = grads(true);
  REQUIRE(std::abs(l16 - l32) < 2e-2 * std::abs(l32));
  REQUIRE(l16 != l32);  // bf16 did run
  REQUIRE(g16.size() == g32.size());
  for (std::size_t p = 0; p < g32.size(); ++p) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < g32[p].size(); ++i) {
      num += (double(g16[p][i]) - g32[p][i]) * (double(g16[p][i]) - g32[p][i]);
      den += double(g32[p][i]) * g32[p][i];
    }
    INFO("parameter " << p << ": relative difference " << std::sqrt(num / den));
    // bf16 operands move some pre-activations across ReLU's 0 and some pooling maxima to another pixel, which
    // reroutes those gradients: 7 % seen on this small random model; a wrong product (a transposed or missing term)
    // gives about 100 %
    REQUIRE(std::sqrt(num / den) < 0.15);
  }
}
