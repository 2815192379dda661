// scaled_dot_product_attention's float (additive) masks and attention-weight dropout: the fused forward against
// softmax(q k^T * scale + mask) v written as plain loops (float masks of finite values and -inf entries, [T, S],
// [B, T, S] and [B, H, T, S], with the causal and key padding masks; dropout applied in the reference through the
// op's pure keep/drop hash, kernels/attention_dropout.hpp), odd sizes, float and double, cpu and cpu_threads;
// gradients against central finite differences in double (the float mask has none; the dropout mask fixed by the
// seed); a fully -inf row gives NaN; p = 0 is the plain attention, p = 1 gives zeros; the hash keeps 1 - p.
#include <tessera/autodiff/attention_ops.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {

constexpr double ninf = -std::numeric_limits<double>::infinity();

struct geom {
  index_t B, H, T, S, D, Dv;
};

/// What the reference applies: a float mask [mb, mh, T, S] added to the scores, causal masking, key padding [B, S],
/// dropout (p, seed).
struct ref_opts {
  const std::vector<double>* add = nullptr;
  index_t mb = 1, mh = 1;
  bool causal = false;
  const std::vector<char>* pad = nullptr;
  double p = 0.0;
  std::uint64_t seed = 0;
};

/// softmax(q k^T * scale + add) (dropped out) v for contiguous [B, H, T, D] arrays, in double.
std::vector<double> reference(const geom& g, const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v, double scale, const ref_opts& m) {
  std::vector<double> o(std::size_t(g.B * g.H * g.T * g.Dv));
  const std::uint64_t thr = ts::detail::attention_dropout_threshold(m.p);
  for (index_t b = 0; b < g.B; ++b)
    for (index_t h = 0; h < g.H; ++h)
      for (index_t t = 0; t < g.T; ++t) {
        std::vector<double> w(std::size_t(g.S));
        double mx = ninf;
        for (index_t s = 0; s < g.S; ++s) {
          double dot = 0;
          for (index_t c = 0; c < g.D; ++c)
            dot += q[std::size_t(((b * g.H + h) * g.T + t) * g.D + c)] * k[std::size_t(((b * g.H + h) * g.S + s) * g.D + c)];
          double x = dot * scale;
          if (m.add) x += (*m.add)[std::size_t((((m.mb == 1 ? 0 : b) * m.mh + (m.mh == 1 ? 0 : h)) * g.T + t) * g.S + s)];
          if ((m.causal && s > t) || (m.pad && (*m.pad)[std::size_t(b * g.S + s)])) x = ninf;
          w[std::size_t(s)] = x;
          mx = std::max(mx, x);
        }
        double sum = 0;
        for (auto& x : w) {
          x = std::exp(x - mx);  // all -inf: NaN, as softmax gives
          sum += x;
        }
        const std::uint64_t row = ts::detail::attention_dropout_row(m.seed, b, h, t);
        for (index_t s = 0; s < g.S; ++s) {
          double& x = w[std::size_t(s)];
          x /= sum;
          if (m.p > 0) x = ts::detail::attention_dropout_keep(row, s, thr) ? (m.p < 1 ? x / (1 - m.p) : 0.0) : 0.0;
        }
        for (index_t c = 0; c < g.Dv; ++c) {
          double acc = 0;
          for (index_t s = 0; s < g.S; ++s) acc += w[std::size_t(s)] * v[std::size_t(((b * g.H + h) * g.S + s) * g.Dv + c)];
          o[std::size_t(((b * g.H + h) * g.T + t) * g.Dv + c)] = acc;
        }
      }
  return o;
}

std::vector<double> filled(index_t n, int salt) {
  std::vector<double> x(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) x[std::size_t(i)] = std::sin(0.731 * double(i) + 1.3 * salt) * 1.5;
  return x;
}

template <class T, class P>
ad::Var<T, 4, P> var_of(const std::vector<double>& x, const dims_t<4>& d, bool grad = false) {
  ts::Tensor<T, ts::dyn_shape_t<4>, P> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(x[std::size_t(i)]);
  return ad::Var<T, 4, P>(std::move(t), grad);
}

/// A float mask: finite values in [-2, 2] and about one entry in six -inf (key 0 of each row stays finite).
std::vector<double> float_mask(index_t n, index_t S) {
  std::vector<double> m(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) m[std::size_t(i)] = (i * 5 + 1) % 6 == 0 && i % S != 0 ? ninf : 2.0 * std::cos(0.37 * double(i));
  return m;
}

void compare(const std::vector<double>& want, const double* got_d, const float* got_f, double tol) {
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double got = got_d ? got_d[i] : double(got_f[i]);
    INFO("element " << i);
    if (std::isnan(want[i])) REQUIRE(std::isnan(got));
    else REQUIRE(got == Approx(want[i]).margin(tol).epsilon(tol));
  }
}

template <class T, class P>
void check_forward(const geom& g, int mask_kind, bool causal, bool pad, double p) {
  INFO("B=" << g.B << " H=" << g.H << " T=" << g.T << " S=" << g.S << " D=" << g.D << " Dv=" << g.Dv << " mask=" << mask_kind
            << " causal=" << causal << " pad=" << pad << " p=" << p << " double=" << (std::is_same_v<T, double>));
  const auto q = filled(g.B * g.H * g.T * g.D, 1), k = filled(g.B * g.H * g.S * g.D, 2), v = filled(g.B * g.H * g.S * g.Dv, 3);
  ref_opts rm;
  rm.causal = causal;
  ad::sdpa_options opt;
  opt.is_causal = causal;
  // mask_kind: 0 none, 1 [T, S], 2 [B, T, S], 3 [B, H, T, S]
  std::vector<double> mv;
  ts::Tensor<T, ts::dyn_shape_t<2>, P> m2;
  ts::Tensor<T, ts::dyn_shape_t<3>, P> m3;
  ts::Tensor<T, ts::dyn_shape_t<4>, P> m4;
  if (mask_kind) {
    rm.mb = mask_kind >= 2 ? g.B : 1;
    rm.mh = mask_kind == 3 ? g.H : 1;
    mv = float_mask(rm.mb * rm.mh * g.T * g.S, g.S);
    rm.add = &mv;
    T* dst = nullptr;
    if (mask_kind == 1) m2 = decltype(m2)(dims_t<2>{g.T, g.S}), dst = m2.data(), opt.mask = m2;
    if (mask_kind == 2) m3 = decltype(m3)(dims_t<3>{g.B, g.T, g.S}), dst = m3.data(), opt.mask = m3;
    if (mask_kind == 3) m4 = decltype(m4)(dims_t<4>{g.B, g.H, g.T, g.S}), dst = m4.data(), opt.mask = m4;
    for (std::size_t i = 0; i < mv.size(); ++i) dst[i] = T(mv[i]);
  }
  std::vector<char> pv;
  ts::Tensor<bool, ts::dyn_shape_t<2>, P> pt;
  if (pad) {
    pv.resize(std::size_t(g.B * g.S));
    for (index_t b = 0; b < g.B; ++b)
      for (index_t s = 0; s < g.S; ++s) pv[std::size_t(b * g.S + s)] = s >= g.S - b * 2 && s > 0;  // the last 2b keys
    pt = decltype(pt)(dims_t<2>{g.B, g.S});
    for (std::size_t i = 0; i < pv.size(); ++i) pt.data()[i] = pv[i] != 0;
    rm.pad = &pv;
    opt.key_padding_mask = pt;
  }
  ts::Rng rng(17);
  opt.dropout_p = p;
  opt.rng = &rng;
  rm.p = p;
  rm.seed = ts::Rng(17)();  // the op draws one value from its rng as the seed
  const double scale = 1.0 / std::sqrt(double(g.D));
  const auto want = reference(g, q, k, v, scale, rm);
  auto y = ad::scaled_dot_product_attention(var_of<T, P>(q, {g.B, g.H, g.T, g.D}), var_of<T, P>(k, {g.B, g.H, g.S, g.D}),
                                            var_of<T, P>(v, {g.B, g.H, g.S, g.Dv}), opt);
  REQUIRE(y.dims() == dims_t<4>{g.B, g.H, g.T, g.Dv});
  const double tol = std::is_same_v<T, float> ? 5e-5 : 1e-12;
  if constexpr (std::is_same_v<T, double>) compare(want, y.value().data(), nullptr, tol);
  else compare(want, nullptr, y.value().data(), tol);
}

template <class T, class P>
void forward_suite(double p) {
  for (geom g : {geom{1, 1, 1, 1, 1, 1}, geom{2, 3, 7, 7, 7, 7}, geom{1, 2, 33, 65, 16, 16}, geom{2, 1, 65, 33, 7, 5},
                 geom{2, 2, 65, 65, 16, 7}})
    for (int mk : {0, 1, 2, 3})
      for (bool causal : {false, true})
        for (bool pad : {false, true}) check_forward<T, P>(g, mk, causal, pad, p);
}

}  // namespace

TEST_CASE("scaled_dot_product_attention: float masks against plain loops (float, double, cpu, cpu_threads)",
          "[autodiff][attention]") {
  ts::cpu_threads::set_num_threads(2);
  forward_suite<float, ts::cpu>(0.0);
  forward_suite<double, ts::cpu>(0.0);
  forward_suite<float, ts::cpu_threads>(0.0);
  forward_suite<double, ts::cpu_threads>(0.0);
}

TEST_CASE("scaled_dot_product_attention: dropout against plain loops with the same hash mask", "[autodiff][attention]") {
  ts::cpu_threads::set_num_threads(2);
  for (double p : {0.1, 0.5}) {
    forward_suite<float, ts::cpu>(p);
    forward_suite<double, ts::cpu>(p);
    forward_suite<double, ts::cpu_threads>(p);
  }
  check_forward<float, ts::cpu_threads>(geom{2, 2, 65, 65, 16, 7}, 1, true, true, 0.3);
}

TEST_CASE("scaled_dot_product_attention: a float mask row of -inf gives NaN, as a boolean one", "[autodiff][attention]") {
  ts::Tensor<double, ts::dyn_shape_t<2>, ts::cpu> m(dims_t<2>{9, 40});
  for (index_t t = 0; t < 9; ++t)
    for (index_t s = 0; s < 40; ++s) m(t, s) = t == 3 ? ninf : 0.1 * double(s % 4);
  auto q = var_of<double, ts::cpu>(filled(2 * 2 * 9 * 4, 1), {2, 2, 9, 4}, true);
  auto k = var_of<double, ts::cpu>(filled(2 * 2 * 40 * 4, 2), {2, 2, 40, 4}, true);
  auto v = var_of<double, ts::cpu>(filled(2 * 2 * 40 * 4, 3), {2, 2, 40, 4}, true);
  auto y = ad::scaled_dot_product_attention(q, k, v, {.mask = m});
  ts::Tensor<bool, ts::dyn_shape_t<2>, ts::cpu> mb(dims_t<2>{9, 40});
  for (index_t t = 0; t < 9; ++t)
    for (index_t s = 0; s < 40; ++s) mb(t, s) = t == 3;
  auto yb = ad::scaled_dot_product_attention(q, k, v, {.mask = mb});
  for (index_t b = 0; b < 2; ++b)
    for (index_t h = 0; h < 2; ++h)
      for (index_t t = 0; t < 9; ++t)
        for (index_t c = 0; c < 4; ++c) {
          CHECK(std::isnan(y.value()(b, h, t, c)) == (t == 3));
          CHECK(std::isnan(yb.value()(b, h, t, c)) == (t == 3));
        }
}

TEST_CASE("scaled_dot_product_attention: gradients with a float mask and with dropout against finite differences",
          "[autodiff][attention]") {
  ts::cpu_threads::set_num_threads(2);
  using V4 = ad::Var<double, 4, ts::cpu_threads>;
  for (geom g : {geom{1, 1, 1, 1, 1, 1}, geom{2, 1, 7, 5, 3, 2}, geom{1, 2, 33, 37, 2, 3}}) {
    INFO("T=" << g.T << " S=" << g.S << " D=" << g.D);
    V4 q(gc::values<4, ts::cpu_threads>({g.B, g.H, g.T, g.D}, 1), true);
    V4 k(gc::values<4, ts::cpu_threads>({g.B, g.H, g.S, g.D}, 2), true);
    V4 v(gc::values<4, ts::cpu_threads>({g.B, g.H, g.S, g.Dv}, 3), true);
    V4 w(gc::values<4, ts::cpu_threads>({g.B, g.H, g.T, g.Dv}, 4), false);
    ts::Tensor<double, ts::dyn_shape_t<3>, ts::cpu_threads> m(dims_t<3>{g.B, g.T, g.S});
    const auto mv = float_mask(m.size(), g.S);
    for (index_t i = 0; i < m.size(); ++i) m.data()[i] = mv[std::size_t(i)];
    gc::check([&] { return ad::sum(ad::scaled_dot_product_attention(q, k, v, {.mask = m}) * w); }, q, k, v);
    gc::check([&] { return ad::sum(ad::scaled_dot_product_attention(q, k, v, {.mask = m, .is_causal = true}) * w); }, q, k, v);
    for (double p : {0.3, 0.7}) {
      gc::check(
          [&] {
            ts::Rng rng(99);  // the same seed on every evaluation: the same dropout mask
            return ad::sum(ad::scaled_dot_product_attention(q, k, v, {.mask = m, .dropout_p = p, .rng = &rng}) * w);
          },
          q, k, v);
    }
  }
  // one Var as q, k and v with dropout and a causal mask
  V4 x(gc::values<4, ts::cpu_threads>({2, 2, 35, 3}, 5), true);
  V4 w(gc::values<4, ts::cpu_threads>({2, 2, 35, 3}, 6), false);
  gc::check(
      [&] {
        ts::Rng rng(5);
        return ad::sum(ad::scaled_dot_product_attention(x, x, x, {.is_causal = true, .dropout_p = 0.2, .rng = &rng}) * w);
      },
      x);
}

TEST_CASE("scaled_dot_product_attention: dropout p = 0 is the plain attention, p = 1 gives zeros", "[autodiff][attention]") {
  const geom g{2, 3, 33, 40, 7, 5};
  auto q = var_of<float, ts::cpu>(filled(g.B * g.H * g.T * g.D, 1), {g.B, g.H, g.T, g.D}, true);
  auto k = var_of<float, ts::cpu>(filled(g.B * g.H * g.S * g.D, 2), {g.B, g.H, g.S, g.D}, true);
  auto v = var_of<float, ts::cpu>(filled(g.B * g.H * g.S * g.Dv, 3), {g.B, g.H, g.S, g.Dv}, true);
  ts::Rng rng(3);
  auto plain = ad::scaled_dot_product_attention(q, k, v, {.is_causal = true});
  auto p0 = ad::scaled_dot_product_attention(q, k, v, {.is_causal = true, .dropout_p = 0.0, .rng = &rng});
  for (index_t i = 0; i < plain.size(); ++i) REQUIRE(plain.value().data()[i] == p0.value().data()[i]);
  auto p1 = ad::scaled_dot_product_attention(q, k, v, {.is_causal = true, .dropout_p = 1.0, .rng = &rng});
  for (index_t i = 0; i < p1.size(); ++i) REQUIRE(p1.value().data()[i] == 0.0f);
  ad::sum(p1).backward();
  for (const auto* var : {&q, &k, &v})
    for (index_t i = 0; i < var->size(); ++i) REQUIRE(var->grad().data()[i] == 0.0f);
  // two draws of the rng give two different masks; the same seed the same output
  ts::Rng r1(8), r2(8);
  auto a = ad::scaled_dot_product_attention(q, k, v, {.dropout_p = 0.5, .rng = &r1});
  auto b = ad::scaled_dot_product_attention(q, k, v, {.dropout_p = 0.5, .rng = &r2});
  auto c = ad::scaled_dot_product_attention(q, k, v, {.dropout_p = 0.5, .rng = &r1});
  int differ = 0;
  for (index_t i = 0; i < a.size(); ++i) {
    REQUIRE(a.value().data()[i] == b.value().data()[i]);
    differ += a.value().data()[i] != c.value().data()[i];
  }
  CHECK(differ > a.size() / 2);
}

TEST_CASE("attention dropout hash: the kept fraction is 1 - p within 1%", "[autodiff][attention]") {
  for (double p : {0.1, 0.5, 0.9})
    for (std::uint64_t seed : {std::uint64_t(0), std::uint64_t(12345), ~std::uint64_t(0)}) {
      const std::uint64_t thr = ts::detail::attention_dropout_threshold(p);
      index_t kept = 0, n = 0;
      for (index_t b = 0; b < 2; ++b)
        for (index_t h = 0; h < 4; ++h)
          for (index_t i = 0; i < 128; ++i) {
            const std::uint64_t row = ts::detail::attention_dropout_row(seed, b, h, i);
            for (index_t j = 0; j < 128; ++j, ++n) kept += ts::detail::attention_dropout_keep(row, j, thr);
          }
      INFO("p=" << p << " seed=" << seed);
      REQUIRE(n >= 100000);
      CHECK(std::abs(double(kept) / double(n) - (1 - p)) < 0.01);
    }
  CHECK(ts::detail::attention_dropout_threshold(0.0) == 0);  // p = 0 keeps everything
  CHECK(!ts::detail::attention_dropout_keep(ts::detail::attention_dropout_row(1, 0, 0, 0), 0, ts::detail::attention_dropout_threshold(1.0)));
}

TEST_CASE("scaled_dot_product_attention: float mask errors", "[autodiff][attention]") {
  using V4 = ad::Var<float, 4>;
  V4 q(ts::Tensor<float, ts::dyn_shape_t<4>>(dims_t<4>{1, 2, 3, 4}), false);
  V4 k(ts::Tensor<float, ts::dyn_shape_t<4>>(dims_t<4>{1, 2, 5, 4}), false);
  ts::Tensor<double, ts::dyn_shape_t<2>> md(dims_t<2>{3, 5});
  CHECK_THROWS_AS(ad::scaled_dot_product_attention(q, k, k, {.mask = md}), std::invalid_argument);  // not q's type
  ts::Tensor<float, ts::dyn_shape_t<2>> mf(dims_t<2>{3, 4});
  CHECK_THROWS_WITH(ad::scaled_dot_product_attention(q, k, k, {.mask = mf}), Catch::Contains("[3, 4]") && Catch::Contains("[1, 2, 3, 5]"));
  ts::Tensor<float, ts::dyn_shape_t<2>> pf(dims_t<2>{1, 5});
  CHECK_THROWS_AS(ad::scaled_dot_product_attention(q, k, k, {.key_padding_mask = pf}), std::invalid_argument);
}
