// Gradients of autodiff/math_ops.hpp (pow, rsqrt, clamp, where, minimum, maximum) and autodiff/reduce_ops.hpp
// (sum, mean, max, min over chosen axes): central finite differences in double at sizes 1, 7 and 33 with
// broadcasting, under cpu and cpu_threads (2 threads); and PyTorch's rules at the edge cases (zeros, bounds, ties,
// NaN) against expected values computed here with plain loops over the inputs.
#include "gradcheck.hpp"

#include <array>
#include <cmath>
#include <limits>
#include <tessera/autodiff/math_ops.hpp>
#include <tessera/autodiff/reduce_ops.hpp>
#include <type_traits>
#include <vector>

namespace {
namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

const double qnan = std::numeric_limits<double>::quiet_NaN();
const double inf = std::numeric_limits<double>::infinity();

template <class P>
void use_threads() {
  if constexpr (std::is_same_v<P, ts::cpu_threads>) ts::cpu_threads::set_num_threads(2);
}

/// Pairwise distinct values in [lo, hi), on a grid of step (hi - lo) / 1009 moved by `shift` steps (up to 1009
/// elements): the maximum of a slice is unique and two tensors with shifts 0 and 0.5 never hold equal values.
template <int R, class P>
ts::Tensor<double, ts::dyn_shape_t<R>, P> distinct(const dims_t<R>& d, int salt, double shift = 0.0, double lo = -1.0,
                                                   double hi = 1.0) {
  ts::Tensor<double, ts::dyn_shape_t<R>, P> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = lo + (hi - lo) * (double((i * 389 + salt * 97) % 1009) + shift) / 1009.0;
  return t;
}

/// A tensor of the given dims holding `v` (row-major).
template <int R, class P = ts::cpu, class T = double>
ts::Tensor<T, ts::dyn_shape_t<R>, P> tensor_of(const dims_t<R>& d, const std::vector<T>& v) {
  ts::Tensor<T, ts::dyn_shape_t<R>, P> t(d);
  REQUIRE(index_t(v.size()) == t.size());
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = v[std::size_t(i)];
  return t;
}

/// Upstream gradients 1, 1.5, 2, ... (not all equal, so that a wrong pairing of g with an element shows).
template <class V>
typename V::tensor seed_for(const V& y) {
  typename V::tensor s(y.dims());
  for (index_t i = 0; i < s.size(); ++i) s.data()[i] = 1.0 + 0.5 * double(i);
  return s;
}

/// `actual` (a tensor's elements) against `expected`: NaN where expected is NaN, the same infinity, else close.
template <class Tn>
void check_values(const Tn& actual, const std::vector<double>& expected) {
  REQUIRE(actual.size() == index_t(expected.size()));
  for (index_t i = 0; i < actual.size(); ++i) {
    const double a = actual.data()[i], e = expected[std::size_t(i)];
    INFO("element " << i << ": " << a << ", expected " << e);
    if (std::isnan(e)) CHECK(std::isnan(a));
    else if (std::isinf(e)) CHECK(a == e);
    else CHECK(a == Approx(e).epsilon(1e-12).margin(1e-300));
  }
}

const std::vector<index_t> sizes = {1, 7, 33};
}  // namespace

// ---- finite differences ---------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("pow's gradients match finite differences", "[autodiff][math]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  use_threads<P>();
  for (index_t n : sizes) {
    INFO("n = " << n);
    auto a = ad::parameter(gc::values<2, P>({n, 5}, 1, 0.5, 2.0));
    auto b = ad::parameter(gc::values<2, P>({n, 5}, 2, -1.5, 1.5));
    gc::check([&] { return ad::sum(ad::square(ad::pow(a, b))); }, a, b);
    // broadcast both ways: [n, 3, 1] ** [1, 4] -> [n, 3, 4]
    auto c = ad::parameter(gc::values<3, P>({n, 3, 1}, 3, 0.5, 2.0));
    auto e = ad::parameter(gc::values<2, P>({1, 4}, 4, -1.5, 1.5));
    gc::check([&] { return ad::sum(ad::square(ad::pow(c, e))); }, c, e);
    // a constant exponent (negative bases with an integer one), a constant base
    auto x = ad::parameter(gc::values<2, P>({n, 5}, 5));
    gc::check([&] { return ad::sum(ad::pow(x, 3) * ad::pow(x, 2.0)); }, x);
    gc::check([&] { return ad::sum(ad::pow(a, 2.5) + ad::pow(a, -1.5)); }, a);
    gc::check([&] { return ad::sum(ad::square(ad::pow(1.7, b) + ad::pow(0.6, b))); }, b);
  }
}

TEMPLATE_TEST_CASE("rsqrt's gradient matches finite differences", "[autodiff][math]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  use_threads<P>();
  for (index_t n : sizes) {
    INFO("n = " << n);
    auto a = ad::parameter(gc::values<2, P>({n, 5}, 6, 0.3, 2.0));
    gc::check([&] { return ad::sum(ad::square(ad::rsqrt(a))); }, a);
  }
}

TEMPLATE_TEST_CASE("clamp's gradient matches finite differences", "[autodiff][math]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  use_threads<P>();
  for (index_t n : sizes) {
    INFO("n = " << n);
    // bounds off the values' grid (steps of 0.002), so that no element sits within the step of a bound
    auto x = ad::parameter(gc::values<3, P>({n, 3, 5}, 7));
    gc::check([&] { return ad::sum(ad::square(ad::clamp(x, -0.5003, 0.6007))); }, x);
  }
}

TEMPLATE_TEST_CASE("where's gradients match finite differences", "[autodiff][math]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  use_threads<P>();
  for (index_t n : sizes) {
    INFO("n = " << n);
    ts::Tensor<bool, ts::dyn_shape_t<2>, P> c(dims_t<2>{n, 10});
    for (index_t i = 0; i < c.size(); ++i) c.data()[i] = (i * 5 + i / 3) % 3 != 0;
    auto a = ad::parameter(gc::values<2, P>({n, 5}, 8));
    auto b = ad::parameter(gc::values<2, P>({1, 5}, 9));
    auto row = ad::parameter(gc::values<1, P>({5}, 10));
    // a non-contiguous condition: every other column of c
    const auto cs = ts::slice<1>(c, 0, 10, 2);
    REQUIRE_FALSE(cs.is_contiguous());
    gc::check([&] { return ad::sum(ad::square(ad::where(cs, a, b))); }, a, b);
    // the condition broadcast ([n, 1]), b of lower rank
    const auto col = ts::slice<1>(c, 3, 4);
    gc::check([&] { return ad::sum(ad::square(ad::where(col, a, row))); }, a, row);
    // the condition an expression
    const auto t = gc::values<2, P>({n, 5}, 11);
    gc::check([&] { return ad::sum(ad::square(ad::where(t > 0.1, b, a))); }, a, b);
  }
}

TEMPLATE_TEST_CASE("minimum's and maximum's gradients match finite differences", "[autodiff][math]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  use_threads<P>();
  for (index_t n : sizes) {
    INFO("n = " << n);
    auto a = ad::parameter(distinct<2, P>({n, 5}, 12));
    auto b = ad::parameter(distinct<2, P>({n, 5}, 13, 0.5));
    auto row = ad::parameter(distinct<1, P>({5}, 14, 0.5));
    gc::check([&] { return ad::sum(ad::square(ad::minimum(a, b)) + ad::maximum(a, b) * 3.0); }, a, b);
    gc::check([&] { return ad::sum(ad::square(ad::maximum(row, a)) - ad::minimum(a, row)); }, a, row);
  }
}

namespace {
/// Every reduction over Axes, with keepdim and without, against finite differences (the result squared and summed,
/// so that the upstream gradient differs per element).
template <int... Axes, class X>
void check_reductions(X& x) {
  gc::check([&] { return ad::sum(ad::square(ad::sum<Axes...>(x, ts::keepdim))); }, x);
  gc::check([&] { return ad::sum(ad::square(ad::mean<Axes...>(x, ts::keepdim))); }, x);
  gc::check([&] { return ad::sum(ad::square(ad::max<Axes...>(x, ts::keepdim))); }, x);
  gc::check([&] { return ad::sum(ad::square(ad::min<Axes...>(x, ts::keepdim))); }, x);
  if constexpr (sizeof...(Axes) > 0) {
    gc::check([&] { return ad::sum(ad::square(ad::sum<Axes...>(x))); }, x);
    gc::check([&] { return ad::sum(ad::square(ad::mean<Axes...>(x))); }, x);
  }
  gc::check([&] { return ad::sum(ad::square(ad::max<Axes...>(x))); }, x);
  gc::check([&] { return ad::sum(ad::square(ad::min<Axes...>(x))); }, x);
}
}  // namespace

TEMPLATE_TEST_CASE("axis reductions' gradients match finite differences", "[autodiff][reduce]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  use_threads<P>();
  for (index_t n : sizes) {
    INFO("n = " << n);
    auto x = ad::parameter(distinct<3, P>({n, 4, 5}, 15));
    SECTION("first axis") { check_reductions<0>(x); }
    SECTION("last axis") { check_reductions<-1>(x); }
    SECTION("middle axis") { check_reductions<1>(x); }
    SECTION("first and last axes") { check_reductions<0, 2>(x); }
    SECTION("two axes, negative") { check_reductions<-2, -1>(x); }
    SECTION("all axes") { check_reductions<>(x); }
  }
}

TEST_CASE("axis reductions: result shapes with and without keepdim", "[autodiff][reduce]") {
  auto x = ad::parameter(distinct<3, ts::cpu>({7, 4, 5}, 16));
  CHECK(ad::sum<1>(x).dims() == dims_t<2>{7, 5});
  CHECK(ad::sum<1>(x, ts::keepdim).dims() == dims_t<3>{7, 1, 5});
  CHECK(ad::mean<0, -1>(x).dims() == dims_t<1>{4});
  CHECK(ad::mean<0, -1>(x, ts::keepdim).dims() == dims_t<3>{1, 4, 1});
  CHECK(ad::max<-1>(x).dims() == dims_t<2>{7, 4});
  CHECK(ad::min(x, ts::keepdim).dims() == dims_t<3>{1, 1, 1});
  CHECK(ad::max(x).dims() == dims_t<0>{});
  CHECK(ad::sum(x).dims() == dims_t<0>{});  // ops.hpp's sum over everything, still chosen without axes
}

// ---- PyTorch's rules at the edge cases ------------------------------------------------------------------------

TEST_CASE("pow at zero, negative bases and exponent zero follows PyTorch", "[autodiff][math][edge]") {
  // base, exponent pairs: 0 ** 0, 0 ** 2, 0 ** -1, 0 ** 0.5, (-2) ** 0.5, 2 ** 3, NaN ** 0, (-2) ** 2, 3 ** 0
  const std::vector<double> av = {0, 0, 0, 0, -2, 2, qnan, -2, 3};
  const std::vector<double> bv = {0, 2, -1, 0.5, 0.5, 3, 0, 2, 0};
  auto a = ad::parameter(tensor_of<1>({9}, av));
  auto b = ad::parameter(tensor_of<1>({9}, bv));
  auto y = ad::pow(a, b);
  const auto seed = seed_for(y);
  y.backward(seed);
  std::vector<double> ga(9), gb(9);
  for (std::size_t i = 0; i < 9; ++i) {
    const double x = av[i], e = bv[i], g = seed.data()[i], out = std::pow(x, e);
    // pow_backward_self: 0 where the exponent is 0, else g * e * x ** (e - 1)
    ga[i] = e == 0 ? 0.0 : g * (e * std::pow(x, e - 1));
    // pow_backward_exponent: 0 where x == 0 and e >= 0, else g * out * log(x)
    gb[i] = g * ((x == 0 && e >= 0) ? 0.0 : out * std::log(x));
  }
  // the cases spelled out
  CHECK(ga[0] == 0.0);           // 0 ** 0: 0 (not 0 * 0 ** -1)
  CHECK(ga[2] == -inf);          // -1 * 0 ** -2
  CHECK(std::isnan(ga[4]));      // 0.5 * (-2) ** -0.5
  CHECK(ga[6] == 0.0);           // exponent 0: 0 even for a NaN base
  CHECK(gb[0] == 0.0);           // 0 ** e, e >= 0: masked
  CHECK(gb[2] == -inf);          // 0 ** -1 * log(0) = inf * -inf
  CHECK(std::isnan(gb[4]));      // log(-2)
  CHECK(std::isnan(gb[7]));      // log(-2), even with an integer exponent
  check_values(a.grad(), ga);
  check_values(b.grad(), gb);
}

TEST_CASE("pow with a constant exponent or base follows PyTorch", "[autodiff][math][edge]") {
  const std::vector<double> xv = {0, qnan, -2, 3, -0.0};
  SECTION("exponent 0: a zero gradient whatever the base") {
    auto a = ad::parameter(tensor_of<1>({5}, xv));
    auto y = ad::pow(a, 0);
    y.backward(seed_for(y));
    check_values(a.grad(), {0, 0, 0, 0, 0});
  }
  SECTION("exponent 3, 0.5 and -1") {
    for (double e : {3.0, 0.5, -1.0}) {
      INFO("exponent " << e);
      auto a = ad::parameter(tensor_of<1>({5}, xv));
      auto y = ad::pow(a, e);
      const auto seed = seed_for(y);
      y.backward(seed);
      std::vector<double> expected(5);
      for (std::size_t i = 0; i < 5; ++i) expected[i] = seed.data()[i] * (e * std::pow(xv[i], e - 1));
      if (e == 0.5) CHECK(expected[0] == inf);  // 0.5 * 0 ** -0.5
      if (e == -1.0) CHECK(expected[0] == -inf);
      check_values(a.grad(), expected);
    }
  }
  SECTION("base 0, a negative base, base 2") {
    const std::vector<double> ev = {0, 2, -1, 0.5};
    for (double s : {0.0, -2.0, 2.0}) {
      INFO("base " << s);
      auto b = ad::parameter(tensor_of<1>({4}, ev));
      auto y = ad::pow(s, b);
      const auto seed = seed_for(y);
      y.backward(seed);
      std::vector<double> expected(4);
      for (std::size_t i = 0; i < 4; ++i)
        expected[i] = seed.data()[i] * ((s == 0 && ev[i] >= 0) ? 0.0 : std::pow(s, ev[i]) * std::log(s));
      if (s == 0) CHECK(expected == std::vector<double>{0, 0, -inf, 0});
      if (s == -2) CHECK(std::isnan(expected[1]));
      check_values(b.grad(), expected);
    }
  }
}

TEST_CASE("rsqrt at zero and below follows PyTorch", "[autodiff][math][edge]") {
  auto a = ad::parameter(tensor_of<1>({4}, {0, -1, 4, 0.25}));
  auto y = ad::rsqrt(a);
  const auto seed = seed_for(y);
  y.backward(seed);
  // -0.5 * g * out ** 3 with out = inf, NaN, 0.5, 2
  const double* g = seed.data();
  check_values(a.grad(), {-inf, qnan, -0.5 * g[2] * 0.125, -0.5 * g[3] * 8.0});
}

TEST_CASE("clamp passes the gradient at both bounds, not outside, not at NaN", "[autodiff][math][edge]") {
  const std::vector<double> xv = {-1, 2, -1.5, 2.5, qnan, 0.5, std::nextafter(-1.0, -2.0), std::nextafter(2.0, 3.0)};
  auto a = ad::parameter(tensor_of<1>({8}, xv));
  auto y = ad::clamp(a, -1, 2);
  const auto seed = seed_for(y);
  y.backward(seed);
  const double* g = seed.data();
  check_values(a.grad(), {g[0], g[1], 0, 0, 0, g[5], 0, 0});
  SECTION("lo > hi: no element is inside, every gradient is 0") {
    a.zero_grad();
    auto z = ad::clamp(a, 1, -1);
    z.backward(seed_for(z));
    check_values(a.grad(), std::vector<double>(8, 0.0));
  }
}

TEST_CASE("where sends the gradient to the chosen side only, summed over broadcast dims", "[autodiff][math][edge]") {
  const auto c = tensor_of<1, ts::cpu, bool>({3}, {true, false, true});
  auto a = ad::parameter(tensor_of<1>({3}, {1, 2, 3}));
  auto b = ad::parameter(tensor_of<1>({1}, {10}));
  auto y = ad::where(c, a, b);
  check_values(y.value(), {1, 10, 3});
  auto seed = seed_for(y);
  seed.data()[0] = qnan;  // a NaN gradient where a was chosen does not reach b
  y.backward(seed);
  check_values(a.grad(), {qnan, 0, seed.data()[2]});
  check_values(b.grad(), {seed.data()[1]});
}

TEST_CASE("minimum and maximum split ties half and half; a NaN on either side passes g to both", "[autodiff][math][edge]") {
  const std::vector<double> av = {1, 2, 3, qnan, 5}, bv = {2, 2, 1, 0, qnan};
  for (bool is_max : {true, false}) {
    INFO((is_max ? "maximum" : "minimum"));
    auto a = ad::parameter(tensor_of<1>({5}, av));
    auto b = ad::parameter(tensor_of<1>({5}, bv));
    auto y = is_max ? ad::maximum(a, b) : ad::minimum(a, b);
    const auto seed = seed_for(y);
    y.backward(seed);
    std::vector<double> ga(5), gb(5);
    for (std::size_t i = 0; i < 5; ++i) {
      const double g = seed.data()[i], x = av[i], z = bv[i];
      const double shared = x == z ? g / 2 : g;
      // maximum: a loses where a < b, b where a > b; minimum the other way round (NaN: neither loses)
      ga[i] = (is_max ? x < z : x > z) ? 0.0 : shared;
      gb[i] = (is_max ? x > z : x < z) ? 0.0 : shared;
    }
    check_values(a.grad(), ga);
    check_values(b.grad(), gb);
  }
  SECTION("b broadcast: its gradient is the sum over a's elements") {
    auto a = ad::parameter(tensor_of<1>({3}, {1, 2, 3}));
    auto b = ad::parameter(tensor_of<1>({1}, {2}));
    ad::sum(ad::maximum(a, b)).backward();
    check_values(a.grad(), {0, 0.5, 1});
    check_values(b.grad(), {1 + 0.5 + 0});
    a.zero_grad();
    b.zero_grad();
    ad::sum(ad::minimum(a, b)).backward();
    check_values(a.grad(), {1, 0.5, 0});
    check_values(b.grad(), {0 + 0.5 + 1});
  }
}

namespace {
/// Reference gradient of a reduction of x [d0, d1, d2] over the axes in `mask` (bit i: axis i), for upstream
/// gradient g (one value per result, row-major; the same order with or without keepdim). kind: 's'um, 'm'ean,
/// 'x' max, 'n' min (amax / amin: g / count of elements equal to the result, 0 elsewhere; a NaN result: NaN).
std::vector<double> reduction_grad_ref(const std::vector<double>& x, const std::array<index_t, 3>& d, unsigned mask,
                                       const std::vector<double>& g, char kind) {
  auto out_index = [&](index_t i, index_t j, index_t k) {
    const index_t c[3] = {i, j, k};
    index_t o = 0;
    for (int ax = 0; ax < 3; ++ax)
      if (!((mask >> ax) & 1u)) o = o * d[ax] + c[ax];
    return o;
  };
  const std::size_t nout = g.size();
  std::vector<double> best(nout, kind == 'x' ? -inf : inf), count(nout, 0.0), members(nout, 0.0);
  std::vector<bool> has_nan(nout, false);
  for (index_t i = 0; i < d[0]; ++i)
    for (index_t j = 0; j < d[1]; ++j)
      for (index_t k = 0; k < d[2]; ++k) {
        const double v = x[std::size_t((i * d[1] + j) * d[2] + k)];
        const auto o = std::size_t(out_index(i, j, k));
        members[o] += 1;
        if (std::isnan(v)) has_nan[o] = true;
        else if (kind == 'x' ? v > best[o] : v < best[o]) best[o] = v;
      }
  for (std::size_t o = 0; o < nout; ++o)
    if (has_nan[o]) best[o] = qnan;
  for (std::size_t t = 0; t < x.size(); ++t) {
    const index_t k = index_t(t) % d[2], j = (index_t(t) / d[2]) % d[1], i = index_t(t) / (d[1] * d[2]);
    if (x[t] == best[std::size_t(out_index(i, j, k))]) count[std::size_t(out_index(i, j, k))] += 1;
  }
  std::vector<double> r(x.size());
  for (std::size_t t = 0; t < x.size(); ++t) {
    const index_t k = index_t(t) % d[2], j = (index_t(t) / d[2]) % d[1], i = index_t(t) / (d[1] * d[2]);
    const auto o = std::size_t(out_index(i, j, k));
    if (kind == 's') r[t] = g[o];
    else if (kind == 'm') r[t] = g[o] / members[o];
    else if (has_nan[o]) r[t] = qnan;  // no element equals a NaN result: (g / 0) * 0
    else r[t] = x[t] == best[o] ? g[o] / count[o] : 0.0;
  }
  return r;
}

/// Each reduction over Axes (mask: the same axes as bits), keepdim and not, on x with ties, against the reference.
template <int... Axes>
void check_against_reference(const std::vector<double>& xv, const std::array<index_t, 3>& d, unsigned mask) {
  auto run = [&](char kind, auto reduce) {
    INFO("kind " << kind);
    auto x = ad::parameter(tensor_of<3>({d[0], d[1], d[2]}, xv));
    auto y = reduce(x);
    const auto seed = seed_for(y);
    y.backward(seed);
    check_values(x.grad(), reduction_grad_ref(xv, d, mask, std::vector<double>(seed.data(), seed.data() + seed.size()), kind));
  };
  run('s', [](auto& x) { return ad::sum<Axes...>(x, ts::keepdim); });
  run('m', [](auto& x) { return ad::mean<Axes...>(x, ts::keepdim); });
  run('x', [](auto& x) { return ad::max<Axes...>(x, ts::keepdim); });
  run('n', [](auto& x) { return ad::min<Axes...>(x, ts::keepdim); });
  run('x', [](auto& x) { return ad::max<Axes...>(x); });
  run('n', [](auto& x) { return ad::min<Axes...>(x); });
  if constexpr (sizeof...(Axes) > 0) {
    run('s', [](auto& x) { return ad::sum<Axes...>(x); });
    run('m', [](auto& x) { return ad::mean<Axes...>(x); });
  }
}
}  // namespace

TEST_CASE("max and min over axes split the gradient among ties (amax / amin), sum and mean spread it", "[autodiff][reduce][edge]") {
  const std::array<index_t, 3> d = {3, 4, 5};
  std::vector<double> xv(60);
  for (std::size_t t = 0; t < xv.size(); ++t) xv[t] = double((t * 7 + t / 5) % 4);  // values 0..3: many ties
  SECTION("ties") {
    check_against_reference<0>(xv, d, 1u);
    check_against_reference<1>(xv, d, 2u);
    check_against_reference<-1>(xv, d, 4u);
    check_against_reference<0, 2>(xv, d, 5u);
    check_against_reference<1, 2>(xv, d, 6u);
    check_against_reference<>(xv, d, 7u);
  }
  SECTION("a NaN: its slices get NaN gradients (amax's rule), the others are untouched") {
    xv[13] = qnan;  // [0, 2, 3]
    check_against_reference<-1>(xv, d, 4u);
    check_against_reference<0, 1>(xv, d, 3u);
  }
  SECTION("one row spelled out: [1, 3, 3, 2] -> [0, g/2, g/2, 0]") {
    auto x = ad::parameter(tensor_of<2>({1, 4}, {1, 3, 3, 2}));
    ad::max<1>(x).backward(tensor_of<1>({1}, {4.0}));
    check_values(x.grad(), {0, 2, 2, 0});
  }
}
