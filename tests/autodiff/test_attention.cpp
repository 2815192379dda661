// scaled_dot_product_attention: the fused (flash-style) forward against softmax(q k^T * scale + mask) v written as
// plain loops, over sizes that do not divide the kernel's blocks (T, S = 1, 7, 33, 65, 129; D = 1, 7, 16), every
// mask (causal, boolean [T, S] / [B, T, S] / [B, H, T, S], key padding), fully masked rows (NaN, as PyTorch's
// MultiheadAttention), float and double, cpu and cpu_threads; gradients of q, k and v (and of one Var used as all
// three) against central finite differences in double.
#include <tessera/autodiff/attention_ops.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {

struct geom {
  index_t B, H, T, S, D, Dv;
};

/// Which (b, h, t, s) the reference masks: the same rules as the op's options, written out.
struct ref_masks {
  bool causal = false;
  const std::vector<char>* mask = nullptr;  // [mb, mh, T, S]
  index_t mb = 1, mh = 1;
  const std::vector<char>* pad = nullptr;  // [B, S]
  bool masked(const geom& g, index_t b, index_t h, index_t t, index_t s) const {
    if (causal && s > t) return true;
    if (mask && (*mask)[std::size_t((((mb == 1 ? 0 : b) * mh + (mh == 1 ? 0 : h)) * g.T + t) * g.S + s)]) return true;
    if (pad && (*pad)[std::size_t(b * g.S + s)]) return true;
    return false;
  }
};

/// softmax(q k^T * scale + mask) v for contiguous [B, H, T, D] arrays, in double; NaN rows where every key is masked.
std::vector<double> reference(const geom& g, const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v, double scale, const ref_masks& m) {
  std::vector<double> o(std::size_t(g.B * g.H * g.T * g.Dv));
  for (index_t b = 0; b < g.B; ++b)
    for (index_t h = 0; h < g.H; ++h)
      for (index_t t = 0; t < g.T; ++t) {
        std::vector<double> w(std::size_t(g.S));
        double mx = -std::numeric_limits<double>::infinity();
        for (index_t s = 0; s < g.S; ++s) {
          double dot = 0;
          for (index_t c = 0; c < g.D; ++c)
            dot += q[std::size_t(((b * g.H + h) * g.T + t) * g.D + c)] * k[std::size_t(((b * g.H + h) * g.S + s) * g.D + c)];
          w[std::size_t(s)] = m.masked(g, b, h, t, s) ? -std::numeric_limits<double>::infinity() : dot * scale;
          mx = std::max(mx, w[std::size_t(s)]);
        }
        double sum = 0;
        for (auto& x : w) {
          x = std::exp(x - mx);  // all masked: exp(-inf - -inf) = NaN, as softmax gives
          sum += x;
        }
        for (index_t c = 0; c < g.Dv; ++c) {
          double acc = 0;
          for (index_t s = 0; s < g.S; ++s) acc += w[std::size_t(s)] / sum * v[std::size_t(((b * g.H + h) * g.S + s) * g.Dv + c)];
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

template <class T, class P>
void check_forward(const geom& g, int mask_kind, bool causal, bool pad) {
  INFO("B=" << g.B << " H=" << g.H << " T=" << g.T << " S=" << g.S << " D=" << g.D << " Dv=" << g.Dv << " mask=" << mask_kind
            << " causal=" << causal << " pad=" << pad << " double=" << (std::is_same_v<T, double>));
  const auto q = filled(g.B * g.H * g.T * g.D, 1), k = filled(g.B * g.H * g.S * g.D, 2), v = filled(g.B * g.H * g.S * g.Dv, 3);
  ref_masks rm;
  rm.causal = causal;
  ad::sdpa_options opt;
  opt.is_causal = causal;
  // mask_kind: 0 none, 1 [T, S], 2 [B, T, S], 3 [B, H, T, S]; about one key in five masked
  std::vector<char> mv;
  ts::Tensor<bool, ts::dyn_shape_t<2>, P> m2;
  ts::Tensor<bool, ts::dyn_shape_t<3>, P> m3;
  ts::Tensor<bool, ts::dyn_shape_t<4>, P> m4;
  if (mask_kind) {
    rm.mb = mask_kind >= 2 ? g.B : 1;
    rm.mh = mask_kind == 3 ? g.H : 1;
    mv.resize(std::size_t(rm.mb * rm.mh * g.T * g.S));
    for (std::size_t i = 0; i < mv.size(); ++i) mv[i] = (i * 7 + 3) % 5 == 0;
    rm.mask = &mv;
    bool* dst = nullptr;
    if (mask_kind == 1) m2 = decltype(m2)(dims_t<2>{g.T, g.S}), dst = m2.data(), opt.mask = m2;
    if (mask_kind == 2) m3 = decltype(m3)(dims_t<3>{g.B, g.T, g.S}), dst = m3.data(), opt.mask = m3;
    if (mask_kind == 3) m4 = decltype(m4)(dims_t<4>{g.B, g.H, g.T, g.S}), dst = m4.data(), opt.mask = m4;
    for (std::size_t i = 0; i < mv.size(); ++i) dst[i] = mv[i] != 0;
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
  const double scale = 1.0 / std::sqrt(double(g.D));
  const auto want = reference(g, q, k, v, scale, rm);
  auto y = ad::scaled_dot_product_attention(var_of<T, P>(q, {g.B, g.H, g.T, g.D}), var_of<T, P>(k, {g.B, g.H, g.S, g.D}),
                                            var_of<T, P>(v, {g.B, g.H, g.S, g.Dv}), opt);
  REQUIRE(y.dims() == dims_t<4>{g.B, g.H, g.T, g.Dv});
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  int nan_rows = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double got = double(y.value().data()[i]);
    if (std::isnan(want[i])) {
      nan_rows += 1;
      REQUIRE(std::isnan(got));
    } else {
      INFO("element " << i);
      REQUIRE(got == Approx(want[i]).margin(tol).epsilon(tol));
    }
  }
  if (mask_kind == 0 && !pad) CHECK(nan_rows == 0);
}

template <class T, class P>
void forward_suite() {
  for (geom g : {geom{1, 1, 1, 1, 1, 1}, geom{2, 3, 7, 7, 7, 7}, geom{1, 2, 33, 65, 16, 16}, geom{2, 1, 65, 33, 7, 5},
                 geom{1, 1, 129, 129, 1, 3}, geom{2, 2, 65, 65, 16, 7}})
    for (int mk : {0, 1, 2, 3})
      for (bool causal : {false, true})
        for (bool pad : {false, true}) check_forward<T, P>(g, mk, causal, pad);
}

}  // namespace

TEST_CASE("scaled_dot_product_attention: forward against plain loops (float, double, cpu, cpu_threads)", "[autodiff][attention]") {
  ts::cpu_threads::set_num_threads(2);
  forward_suite<float, ts::cpu>();
  forward_suite<double, ts::cpu>();
  forward_suite<float, ts::cpu_threads>();
  forward_suite<double, ts::cpu_threads>();
}

TEST_CASE("scaled_dot_product_attention: a fully masked row gives NaN, the others stay finite", "[autodiff][attention]") {
  const geom g{2, 2, 9, 40, 4, 4};
  ts::Tensor<bool, ts::dyn_shape_t<2>, ts::cpu> pad(dims_t<2>{2, 40});
  pad = false;
  for (index_t s = 0; s < 40; ++s) pad(1, s) = true;  // batch 1: every key is padding
  ts::Tensor<bool, ts::dyn_shape_t<2>, ts::cpu> m(dims_t<2>{9, 40});
  m = false;
  for (index_t s = 0; s < 40; ++s) m(3, s) = true;  // query 3: every key masked
  auto q = var_of<double, ts::cpu>(filled(2 * 2 * 9 * 4, 1), {2, 2, 9, 4}, true);
  auto k = var_of<double, ts::cpu>(filled(2 * 2 * 40 * 4, 2), {2, 2, 40, 4}, true);
  auto v = var_of<double, ts::cpu>(filled(2 * 2 * 40 * 4, 3), {2, 2, 40, 4}, true);
  auto y = ad::scaled_dot_product_attention(q, k, v, {.mask = m, .key_padding_mask = pad});
  for (index_t h = 0; h < 2; ++h)
    for (index_t t = 0; t < 9; ++t)
      for (index_t c = 0; c < 4; ++c) {
        CHECK(std::isnan(y.value()(1, h, t, c)));
        CHECK(std::isnan(y.value()(0, h, t, c)) == (t == 3));
      }
  ad::sum(y).backward();  // the NaN reaches the gradients of its (batch, head) only, as in PyTorch
  bool nan0 = false, nan1 = false;
  for (index_t i = 0; i < v.size(); ++i) (i < v.size() / 2 ? nan0 : nan1) |= std::isnan(v.grad().data()[i]);
  CHECK(nan0);  // batch 0 holds the NaN row 3
  CHECK(nan1);
  auto q2 = var_of<double, ts::cpu>(filled(2 * 2 * 9 * 4, 1), {2, 2, 9, 4}, true);
  auto y2 = ad::scaled_dot_product_attention(q2, k.detach(), v.detach(), {.key_padding_mask = pad});
  ad::sum(y2).backward();
  for (index_t i = 0; i < q2.size() / 2; ++i) CHECK(std::isfinite(q2.grad().data()[i]));  // batch 0 is untouched
}

TEST_CASE("scaled_dot_product_attention: gradients of q, k and v against finite differences", "[autodiff][attention]") {
  ts::cpu_threads::set_num_threads(2);
  using V4 = ad::Var<double, 4, ts::cpu_threads>;
  for (geom g : {geom{1, 1, 1, 1, 1, 1}, geom{2, 1, 7, 5, 3, 2}, geom{1, 2, 33, 37, 2, 3}}) {
    INFO("T=" << g.T << " S=" << g.S << " D=" << g.D);
    V4 q(gc::values<4, ts::cpu_threads>({g.B, g.H, g.T, g.D}, 1), true);
    V4 k(gc::values<4, ts::cpu_threads>({g.B, g.H, g.S, g.D}, 2), true);
    V4 v(gc::values<4, ts::cpu_threads>({g.B, g.H, g.S, g.Dv}, 3), true);
    V4 w(gc::values<4, ts::cpu_threads>({g.B, g.H, g.T, g.Dv}, 4), false);
    ts::Tensor<bool, ts::dyn_shape_t<2>, ts::cpu_threads> pad(dims_t<2>{g.B, g.S});
    pad = false;
    if (g.S > 1) pad(g.B - 1, g.S - 1) = true;
    ts::Tensor<bool, ts::dyn_shape_t<2>, ts::cpu_threads> m(dims_t<2>{g.T, g.S});
    for (index_t i = 0; i < m.size(); ++i) m.data()[i] = i % 3 == 1 && i % g.S != 0;  // key 0 always visible
    gc::check([&] { return ad::sum(ad::scaled_dot_product_attention(q, k, v) * w); }, q, k, v);
    gc::check([&] { return ad::sum(ad::scaled_dot_product_attention(q, k, v, {.is_causal = true, .scale = 0.7}) * w); }, q, k, v);
    gc::check([&] { return ad::sum(ad::scaled_dot_product_attention(q, k, v, {.mask = m, .key_padding_mask = pad}) * w); }, q, k, v);
  }
  // one Var as q, k and v (self-attention without projections): the three gradients add up in one buffer
  V4 x(gc::values<4, ts::cpu_threads>({2, 2, 35, 3}, 5), true);
  V4 w(gc::values<4, ts::cpu_threads>({2, 2, 35, 3}, 6), false);
  gc::check([&] { return ad::sum(ad::scaled_dot_product_attention(x, x, x, {.is_causal = true}) * w); }, x);
  V4 kk(gc::values<4, ts::cpu_threads>({2, 2, 35, 3}, 7), true);
  gc::check([&] { return ad::sum(ad::scaled_dot_product_attention(x, kk, kk) * w); }, x, kk);
}

TEST_CASE("scaled_dot_product_attention: cpu_threads gives cpu's values and gradients (a head per thread)", "[autodiff][attention]") {
  ts::cpu_threads::set_num_threads(2);
  const geom g{2, 3, 100, 90, 16, 8};
  auto run = [&](auto tag) {
    using P = decltype(tag);
    auto q = var_of<float, P>(filled(g.B * g.H * g.T * g.D, 1), {g.B, g.H, g.T, g.D}, true);
    auto k = var_of<float, P>(filled(g.B * g.H * g.S * g.D, 2), {g.B, g.H, g.S, g.D}, true);
    auto v = var_of<float, P>(filled(g.B * g.H * g.S * g.Dv, 3), {g.B, g.H, g.S, g.Dv}, true);
    auto w = var_of<float, P>(filled(g.B * g.H * g.T * g.Dv, 4), {g.B, g.H, g.T, g.Dv});
    auto y = ad::scaled_dot_product_attention(q, k, v, {.is_causal = true});
    ad::sum(y * w).backward();
    std::vector<float> all = y.value().to_vector();
    for (const auto& t : {q.grad().to_vector(), k.grad().to_vector(), v.grad().to_vector()}) all.insert(all.end(), t.begin(), t.end());
    return all;
  };
  const auto a = run(ts::cpu{}), b = run(ts::cpu_threads{});
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == b[i]);
}

TEST_CASE("scaled_dot_product_attention: shape errors name both shapes", "[autodiff][attention]") {
  using V4 = ad::Var<float, 4>;
  V4 q(ts::Tensor<float, ts::dyn_shape_t<4>>(dims_t<4>{1, 2, 3, 4}), false);
  V4 k(ts::Tensor<float, ts::dyn_shape_t<4>>(dims_t<4>{1, 2, 5, 3}), false);
  V4 v(ts::Tensor<float, ts::dyn_shape_t<4>>(dims_t<4>{1, 2, 5, 4}), false);
  CHECK_THROWS_WITH(ad::scaled_dot_product_attention(q, k, v), Catch::Contains("[1, 2, 3, 4]") && Catch::Contains("[1, 2, 5, 3]"));
  ts::Tensor<bool, ts::dyn_shape_t<2>> m(dims_t<2>{3, 4});
  CHECK_THROWS_AS(ad::scaled_dot_product_attention(q, v, v, {.mask = m}), ts::shape_error);
  CHECK_THROWS_AS(ad::scaled_dot_product_attention(q, v, v, {.dropout_p = 0.1}), std::logic_error);  // no rng
  CHECK_THROWS_AS(ad::scaled_dot_product_attention(q, v, v, {.dropout_p = 1.5}), std::invalid_argument);
}
