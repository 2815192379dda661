// Reductions: sum, mean, max, min and argmax over every axis set of rank-3 tensors, with and without keepdim, for
// every element type; result types; reductions of expressions and of non-contiguous views; reductions inside
// expressions; non-contiguous destinations; empty extents; errors.
// References come from one plain loop over the source values (ref_reduce below).
//
// Compile time: each (element type, reduction, axes) instantiates a kernel and an assignment (about 1 s at -O2), so
// the sweeps pick axis sets that between them reach every kernel branch (inner axis kept or reduced, outer axes
// kept or reduced, threads over columns, over rows, or over private partial results), use destinations with all
// extents dynamic (assign's aliasing fallback uses that shape, so any other would instantiate everything twice),
// and run under cpu_threads with 1 thread (the code path of cpu) and with 2 (see tst::thread_pairs).
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "test_support.hpp"

using ts::dyn;
using ts::index_t;
using ts::Shape;
using ts::Tensor;

namespace {

using D3 = ts::dims_t<3>;

/// Source shapes: odd extents, extents of 1, and two large ones (more than 32768 elements, so that two threads
/// split the work) whose inner extent after coalescing is large (> 16384) or small.
const std::vector<D3> shapes = {{1, 1, 1}, {7, 1, 5}, {3, 33, 7}, {65, 3, 1}, {1, 127, 3}, {5, 8001, 3}, {2, 3, 40001}};

enum class red { sum, mean, max, min };

/// Reduce row-major values `v` of shape d over the axes marked in `axes`; the result in row-major order of the
/// kept extents (the same order with or without keepdim).
std::vector<double> ref_reduce(const std::vector<double>& v, const D3& d, std::array<bool, 3> axes, red op) {
  D3 od{};
  for (int k = 0; k < 3; ++k) od[k] = axes[k] ? 1 : d[k];
  const double init = op == red::max ? -INFINITY : op == red::min ? INFINITY : 0.0;
  std::vector<double> out(std::size_t(od[0] * od[1] * od[2]), init);
  for (index_t i = 0; i < d[0]; ++i)
    for (index_t j = 0; j < d[1]; ++j)
      for (index_t k = 0; k < d[2]; ++k) {
        const double x = v[std::size_t((i * d[1] + j) * d[2] + k)];
        double& o = out[std::size_t(((axes[0] ? 0 : i) * od[1] + (axes[1] ? 0 : j)) * od[2] + (axes[2] ? 0 : k))];
        if (op == red::max)
          o = x > o ? x : o;
        else if (op == red::min)
          o = x < o ? x : o;
        else
          o += x;
      }
  if (op == red::mean) {
    double count = 1;
    for (int k = 0; k < 3; ++k)
      if (axes[k]) count *= double(d[k]);
    for (auto& o : out) o /= count;
  }
  return out;
}

/// Index of the first largest value along `axis` (or over all values, flattened, when axis < 0).
std::vector<double> ref_argmax(const std::vector<double>& v, const D3& d, int axis) {
  if (axis < 0) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < v.size(); ++i)
      if (v[i] > v[best]) best = i;
    return {double(best)};
  }
  D3 od = d;
  od[axis] = 1;
  std::vector<double> out(std::size_t(od[0] * od[1] * od[2]), -1.0), best(out.size(), 0.0);
  for (index_t i = 0; i < d[0]; ++i)
    for (index_t j = 0; j < d[1]; ++j)
      for (index_t k = 0; k < d[2]; ++k) {
        const index_t idx[3] = {i, j, k};
        const double x = v[std::size_t((i * d[1] + j) * d[2] + k)];
        const std::size_t o =
            std::size_t(((axis == 0 ? 0 : i) * od[1] + (axis == 1 ? 0 : j)) * od[2] + (axis == 2 ? 0 : k));
        if (out[o] < 0 || x > best[o]) {  // strictly greater: the first index of the largest value wins
          out[o] = double(idx[axis]);
          best[o] = x;
        }
      }
  return out;
}

/// The dims of a tensor or view as a std::vector, for comparing extents of different ranks in one CHECK.
template <class X>
std::vector<index_t> dims_of(const X& x) {
  return std::vector<index_t>(x.dims().begin(), x.dims().end());
}

template <class T>
using sum_t = std::conditional_t<std::is_integral_v<T>, std::int64_t, ts::compute_t<T>>;

template <class A, class P>
using R0 = Tensor<A, Shape<>, P>;
template <class A, class P>
using R1 = Tensor<A, Shape<dyn>, P>;
template <class A, class P>
using R2 = Tensor<A, Shape<dyn, dyn>, P>;
template <class A, class P>
using R3 = Tensor<A, Shape<dyn, dyn, dyn>, P>;

}  // namespace

// ---- result types ------------------------------------------------------------------------------------------------

TEST_CASE("result element types: sum of integers is int64, of bfloat16 float; argmax is int64", "[reduce][types]") {
  using X8 = Tensor<std::int8_t, Shape<dyn, dyn>>;
  using XU = Tensor<std::uint8_t, Shape<dyn, dyn>>;
  using X32 = Tensor<std::int32_t, Shape<dyn, dyn>>;
  using XB = Tensor<tst::bf16, Shape<dyn, dyn>>;
  using XF = Tensor<float, Shape<dyn, dyn>>;
  using XD = Tensor<double, Shape<dyn, dyn>>;
  static_assert(std::is_same_v<decltype(ts::sum(std::declval<X8&>()))::value_type, std::int64_t>);
  static_assert(std::is_same_v<decltype(ts::sum<1>(std::declval<XU&>()))::value_type, std::int64_t>);
  static_assert(std::is_same_v<decltype(ts::sum(std::declval<X32&>()))::value_type, std::int64_t>);
  static_assert(std::is_same_v<decltype(ts::sum(std::declval<XB&>()))::value_type, float>);
  static_assert(std::is_same_v<decltype(ts::mean<0>(std::declval<XB&>()))::value_type, float>);
  static_assert(std::is_same_v<decltype(ts::sum(std::declval<XF&>()))::value_type, float>);
  static_assert(std::is_same_v<decltype(ts::mean(std::declval<XD&>()))::value_type, double>);
  static_assert(std::is_same_v<decltype(ts::max(std::declval<X8&>()))::value_type, std::int8_t>);
  static_assert(std::is_same_v<decltype(ts::min<1>(std::declval<XU&>()))::value_type, std::uint8_t>);
  static_assert(std::is_same_v<decltype(ts::max<0>(std::declval<XD&>()))::value_type, double>);
  static_assert(std::is_same_v<decltype(ts::argmax(std::declval<XF&>()))::value_type, std::int64_t>);
  static_assert(std::is_same_v<decltype(ts::argmax<1>(std::declval<X8&>()))::value_type, std::int64_t>);
  // result shapes: reduced axes dropped, or kept as a static 1
  static_assert(std::is_same_v<decltype(ts::sum(std::declval<XF&>()))::shape_type, Shape<>>);
  static_assert(std::is_same_v<decltype(ts::sum<1>(std::declval<XF&>()))::shape_type, Shape<dyn>>);
  static_assert(std::is_same_v<decltype(ts::sum<0, -1>(std::declval<XF&>(), ts::keepdim))::shape_type, Shape<1, 1>>);
  static_assert(
      std::is_same_v<decltype(ts::max<-1>(std::declval<Tensor<float, Shape<4, 5, 6>>&>(), ts::keepdim))::shape_type,
                     Shape<4, 5, 1>>);
  static_assert(
      std::is_same_v<decltype(ts::argmax<0>(std::declval<Tensor<float, Shape<4, 5>>&>()))::shape_type, Shape<5>>);
  SUCCEED();
}

TEST_CASE("max and min of bfloat16 return float, like sum and mean", "[reduce][types]") {
  // Documented in docs/api.md: reductions of bfloat16 compute and return float.
  using XB = Tensor<tst::bf16, Shape<dyn, dyn>>;
  CHECK(std::is_same_v<decltype(ts::max(std::declval<XB&>()))::value_type, float>);
  CHECK(std::is_same_v<decltype(ts::min<1>(std::declval<XB&>()))::value_type, float>);
}

// ---- sweeps over element types ---------------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("sum over each axis and axis set of rank-3 tensors, with and without keepdim", "[reduce][sum]",
                        tst::thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using A = sum_t<T>;
  for (int nt : tst::thread_counts<P>())
    for (const D3& d : shapes) {
      tst::set_threads(nt);
      CAPTURE(nt, d[0], d[1], d[2]);
      R3<T, P> x(d);
      tst::fill(x, [](index_t k) { return tst::wide<T>(k, 1); });  // 8-bit: the whole range; sums do not wrap
      const auto v = tst::values(x);

      R0<A, P> all = ts::sum(x);
      CHECK(tst::compare_to(all, ref_reduce(v, d, {true, true, true}, red::sum)) == "");
      R2<A, P> r2 = ts::sum<0>(x);
      CHECK(dims_of(r2) == std::vector<index_t>{d[1], d[2]});
      CHECK(tst::compare_to(r2, ref_reduce(v, d, {true, false, false}, red::sum)) == "");
      r2 = ts::sum<1>(x);
      CHECK(dims_of(r2) == std::vector<index_t>{d[0], d[2]});
      CHECK(tst::compare_to(r2, ref_reduce(v, d, {false, true, false}, red::sum)) == "");
      R3<A, P> r3 = ts::sum<-1>(x, ts::keepdim);
      CHECK(dims_of(r3) == std::vector<index_t>{d[0], d[1], 1});
      CHECK(tst::compare_to(r3, ref_reduce(v, d, {false, false, true}, red::sum)) == "");
      R1<A, P> r1 = ts::sum<0, 2>(x);
      CHECK(dims_of(r1) == std::vector<index_t>{d[1]});
      CHECK(tst::compare_to(r1, ref_reduce(v, d, {true, false, true}, red::sum)) == "");
      r3 = ts::sum<1, 2>(x, ts::keepdim);
      CHECK(dims_of(r3) == std::vector<index_t>{d[0], 1, 1});
      CHECK(tst::compare_to(r3, ref_reduce(v, d, {false, true, true}, red::sum)) == "");
    }
}

TEMPLATE_LIST_TEST_CASE("max and min over axes of rank-3 tensors", "[reduce][max]", tst::thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using A = ts::compute_t<T>;  // T, or float for bfloat16 (see "max and min of bfloat16 keep the element type")
  for (int nt : tst::thread_counts<P>())
    for (const D3& d : shapes) {
      tst::set_threads(nt);
      CAPTURE(nt, d[0], d[1], d[2]);
      R3<T, P> x(d);
      tst::fill(x, [](index_t k) { return tst::wide<T>(k, 2); });
      const auto v = tst::values(x);

      R0<A, P> all = ts::max(x);
      CHECK(tst::compare_to(all, ref_reduce(v, d, {true, true, true}, red::max)) == "");
      R2<A, P> r2 = ts::max<1>(x);
      CHECK(tst::compare_to(r2, ref_reduce(v, d, {false, true, false}, red::max)) == "");
      R3<A, P> r3 = ts::min<0, 2>(x, ts::keepdim);
      CHECK(dims_of(r3) == std::vector<index_t>{1, d[1], 1});
      CHECK(tst::compare_to(r3, ref_reduce(v, d, {true, false, true}, red::min)) == "");
      r2 = ts::min<-1>(x);
      CHECK(tst::compare_to(r2, ref_reduce(v, d, {false, false, true}, red::min)) == "");
    }
}

TEMPLATE_LIST_TEST_CASE("mean over axes of rank-3 floating tensors", "[reduce][mean]", tst::float_thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using A = ts::compute_t<T>;
  const tst::tol tl = tst::tol_for<A>();
  for (int nt : tst::thread_counts<P>())
    for (const D3& d : shapes) {
      tst::set_threads(nt);
      CAPTURE(nt, d[0], d[1], d[2]);
      R3<T, P> x(d);
      tst::fill(x, [](index_t k) { return tst::small<T>(k, 3); });
      const auto v = tst::values(x);

      R0<A, P> all = ts::mean(x);
      CHECK(tst::compare(tst::values(all), ref_reduce(v, d, {true, true, true}, red::mean), tl) == "");
      R2<A, P> r2 = ts::mean<2>(x);
      CHECK(tst::compare(tst::values(r2), ref_reduce(v, d, {false, false, true}, red::mean), tl) == "");
      R3<A, P> r3 = ts::mean<0, 1>(x, ts::keepdim);
      CHECK(dims_of(r3) == std::vector<index_t>{1, 1, d[2]});
      CHECK(tst::compare(tst::values(r3), ref_reduce(v, d, {true, true, false}, red::mean), tl) == "");
    }
}

TEMPLATE_LIST_TEST_CASE("argmax: flattened and along an axis; ties give the first index", "[reduce][argmax]",
                        tst::thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using I = std::int64_t;
  for (int nt : tst::thread_counts<P>())
    for (const D3& d : shapes) {
      tst::set_threads(nt);
      CAPTURE(nt, d[0], d[1], d[2]);
      R3<T, P> x(d);
      // few distinct values, so the largest one occurs many times along every axis
      tst::fill(x, [](index_t k) { return T(tst::small<T>(k, 4) / T(4)); });
      const auto v = tst::values(x);

      R0<I, P> flat = ts::argmax(x);
      CHECK(tst::compare_to(flat, ref_argmax(v, d, -1)) == "");
      R2<I, P> a0 = ts::argmax<0>(x);
      CHECK(tst::compare_to(a0, ref_argmax(v, d, 0)) == "");
      R3<I, P> a2 = ts::argmax<-1>(x, ts::keepdim);
      CHECK(dims_of(a2) == std::vector<index_t>{d[0], d[1], 1});
      CHECK(tst::compare_to(a2, ref_argmax(v, d, 2)) == "");
    }
}

TEST_CASE("argmax ties: the first index of the largest value wins", "[reduce][argmax]") {
  Tensor<float, Shape<dyn, dyn>> x(3, 5);
  const float vals[15] = {1,  3,  3,  2,  3,  //
                          5,  5,  5,  5,  5,  //
                          -1, -2, -1, -3, -1};
  tst::fill(x, [&](index_t k) { return vals[k]; });
  Tensor<std::int64_t, Shape<dyn>> rows = ts::argmax<1>(x);
  CHECK(tst::values(rows) == std::vector<double>{1, 0, 0});
  Tensor<std::int64_t, Shape<dyn>> cols = ts::argmax<0>(x);
  CHECK(tst::values(cols) == std::vector<double>{1, 1, 1, 1, 1});
  Tensor<std::int64_t, Shape<>> flat = ts::argmax(x);
  CHECK(flat() == 5);
  Tensor<std::int64_t, Shape<>> one = ts::argmax(ts::select<0>(x, 2));  // rank 1
  CHECK(one() == 0);
  // through a transposed view: argmax along axis 0 of x^T is argmax along axis 1 of x
  Tensor<std::int64_t, Shape<dyn>> tr = ts::argmax<0>(ts::transpose(x));
  CHECK(tst::values(tr) == std::vector<double>{1, 0, 0});
  Tensor<std::int64_t, Shape<dyn, dyn>> kept = ts::argmax<1>(x, ts::keepdim);
  CHECK(dims_of(kept) == std::vector<index_t>{3, 1});
  CHECK(tst::values(kept) == std::vector<double>{1, 0, 0});
  // -inf and the identity of max: a row of -inf has argmax 0 and max -inf
  Tensor<float, Shape<dyn>> ninf(4);
  ninf = -std::numeric_limits<float>::infinity();
  Tensor<std::int64_t, Shape<>> ai = ts::argmax(ninf);
  CHECK(ai() == 0);
  Tensor<float, Shape<>> mi = ts::max(ninf);
  CHECK(mi() == -std::numeric_limits<float>::infinity());
}

// ---- edge values of integer types ---------------------------------------------------------------------------

TEST_CASE("integer reductions: sums do not wrap; max and min reach the ends of the range", "[reduce][int]") {
  tst::two_threads();
  const index_t n = tst::big;
  Tensor<std::int8_t, Shape<dyn>, ts::cpu_threads> a(n);
  a = std::int8_t(127);
  Tensor<std::int64_t, Shape<>, ts::cpu_threads> s = ts::sum(a);
  CHECK(s() == 127 * n);
  a(n - 1) = std::int8_t(-128);
  Tensor<std::int8_t, Shape<>, ts::cpu_threads> lo = ts::min(a);
  CHECK(lo() == -128);
  Tensor<std::uint8_t, Shape<dyn, dyn>> u(3, 7);
  u = std::uint8_t(0);
  u(1, 6) = 255;
  Tensor<std::uint8_t, Shape<dyn>> um = ts::max<1>(u);
  CHECK(tst::values(um) == std::vector<double>{0, 255, 0});
  Tensor<std::int64_t, Shape<>> us = ts::sum(u);
  CHECK(us() == 255);
  // all negative: max starts from the lowest value, not from 0
  Tensor<std::int32_t, Shape<dyn, dyn>> neg(5, 33);
  tst::fill(neg, [](index_t k) { return std::int32_t(-1000 - k); });
  Tensor<std::int32_t, Shape<dyn>> nm = ts::max<1>(neg);
  CHECK(tst::values(nm) == std::vector<double>{-1000, -1033, -1066, -1099, -1132});
  Tensor<std::int64_t, Shape<dyn>> big64(3);
  big64(0) = std::int64_t(1) << 62, big64(1) = -(std::int64_t(1) << 62), big64(2) = 5;
  Tensor<std::int64_t, Shape<>> mx = ts::max(big64);
  CHECK(mx() == std::int64_t(1) << 62);
  Tensor<std::int64_t, Shape<>> sm = ts::sum(big64);
  CHECK(sm() == 5);
}

// ---- reductions of expressions and of views ------------------------------------------------------------------

TEMPLATE_TEST_CASE("a reduction of an elementwise expression is one pass with no temporary", "[reduce][fusion]",
                   ts::cpu, ts::cpu_threads) {
  using P = TestType;
  tst::two_threads();
  for (const D3& d : shapes) {
    CAPTURE(d[0], d[1], d[2]);
    R3<float, P> x(d), y(d);
    tst::fill(x, [](index_t k) { return tst::small<float>(k, 5); });
    tst::fill(y, [](index_t k) { return tst::small<float>(k, 6); });
    std::vector<double> xy;
    for (index_t k = 0; k < x.size(); ++k) xy.push_back(double(x.data()[k]) * double(y.data()[k]) + 1.0);
    R2<float, P> r(d[0], d[2]);
    ts::stats::reset();
    r = ts::sum<1>(x * y + 1.0f);  // same extents as r: no allocation
    CHECK(ts::stats::read().passes == 1);
    CHECK(ts::stats::read().allocations == 0);
    CHECK(tst::compare_to(r, ref_reduce(xy, d, {false, true, false}, red::sum)) == "");
    ts::stats::reset();
    R0<float, P> s = ts::sum(x * y + 1.0f);
    CHECK(ts::stats::read().passes == 1);
    CHECK(ts::stats::read().allocations == 1);  // the result
    CHECK(tst::compare_to(s, ref_reduce(xy, d, {true, true, true}, red::sum)) == "");
  }
}

TEMPLATE_TEST_CASE("reductions of expressions over other element types", "[reduce][fusion]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  tst::two_threads();
  for (const D3& d : shapes) {
    CAPTURE(d[0], d[1], d[2]);
    R3<std::int32_t, P> a(d), b(d);
    tst::fill(a, [](index_t k) { return tst::small<std::int32_t>(k, 1); });
    tst::fill(b, [](index_t k) { return tst::small<std::int32_t>(k, 2); });
    std::vector<double> absdiff, pos;
    for (index_t k = 0; k < a.size(); ++k) {
      absdiff.push_back(std::abs(double(a.data()[k]) - double(b.data()[k])));
      pos.push_back(a.data()[k] > 0 ? 1.0 : 0.0);
    }
    R2<std::int32_t, P> m = ts::max<1>(ts::abs(a - b));
    CHECK(tst::compare_to(m, ref_reduce(absdiff, d, {false, true, false}, red::max)) == "");
    R1<std::int64_t, P> count = ts::sum<0, 1>(a > 0);  // a bool expression: counts, as int64
    CHECK(tst::compare_to(count, ref_reduce(pos, d, {true, true, false}, red::sum)) == "");

    // int8: the product wraps in int8 element by element, then the sum is taken in int64
    R3<std::int8_t, P> c(d), e(d);
    tst::fill(c, [](index_t k) { return tst::wide<std::int8_t>(k, 3); });
    tst::fill(e, [](index_t k) { return tst::wide<std::int8_t>(k, 4); });
    std::vector<double> prod;
    for (index_t k = 0; k < c.size(); ++k) prod.push_back(double(std::int8_t(c.data()[k] * e.data()[k])));
    R2<std::int64_t, P> ps = ts::sum<2>(c * e);
    CHECK(tst::compare_to(ps, ref_reduce(prod, d, {false, false, true}, red::sum)) == "");

    // bfloat16: the sum of a bfloat16 expression accumulates in float
    R3<tst::bf16, P> h(d);
    tst::fill(h, [](index_t k) { return tst::small<tst::bf16>(k, 5); });
    std::vector<double> h2;
    for (index_t k = 0; k < h.size(); ++k) h2.push_back(2.0 * double(float(h.data()[k])));
    R2<float, P> hs = ts::sum<0>(h * tst::bf16(2.0f));
    CHECK(tst::compare_to(hs, ref_reduce(h2, d, {true, false, false}, red::sum)) == "");
  }
}

TEMPLATE_TEST_CASE("reductions of transposed and strided views", "[reduce][views]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  tst::two_threads();
  for (const D3& d : shapes) {
    CAPTURE(d[0], d[1], d[2]);
    R3<float, P> x(d);
    tst::fill(x, [](index_t k) { return tst::small<float>(k, 7); });
    // the transposed values as a row-major array of shape [d0, d2, d1]
    const D3 td{d[0], d[2], d[1]};
    std::vector<double> tv;
    for (index_t i = 0; i < d[0]; ++i)
      for (index_t k = 0; k < d[2]; ++k)
        for (index_t j = 0; j < d[1]; ++j) tv.push_back(x(i, j, k));
    R2<float, P> t1 = ts::sum<1>(ts::transpose(x));
    CHECK(tst::compare_to(t1, ref_reduce(tv, td, {false, true, false}, red::sum)) == "");
    R0<float, P> tall = ts::sum(ts::transpose(x));  // not coalescible: every thread keeps partial results
    CHECK(tst::compare_to(tall, ref_reduce(tv, td, {true, true, true}, red::sum)) == "");
    R3<float, P> tm = ts::max<0, 2>(ts::transpose(x), ts::keepdim);
    CHECK(tst::compare_to(tm, ref_reduce(tv, td, {true, false, true}, red::max)) == "");
    R2<float, P> tmean = ts::mean<-1>(ts::transpose(x));
    CHECK(tst::compare(tst::values(tmean), ref_reduce(tv, td, {false, false, true}, red::mean), {1e-5, 1e-6}) == "");

    // every other element along the last axis: strided inner dimension
    const index_t half = (d[2] + 1) / 2;
    const D3 sd{d[0], d[1], half};
    std::vector<double> sv;
    for (index_t i = 0; i < d[0]; ++i)
      for (index_t j = 0; j < d[1]; ++j)
        for (index_t k = 0; k < d[2]; k += 2) sv.push_back(x(i, j, k));
    auto s = ts::slice<2>(x, 0, d[2], 2);
    R2<float, P> s1 = ts::sum<1>(s);
    CHECK(tst::compare_to(s1, ref_reduce(sv, sd, {false, true, false}, red::sum)) == "");
    R1<float, P> s02 = ts::min<0, 2>(s);
    CHECK(tst::compare_to(s02, ref_reduce(sv, sd, {true, false, true}, red::min)) == "");
    R2<std::int64_t, P> sa = ts::argmax<1>(s);
    CHECK(tst::compare_to(sa, ref_argmax(sv, sd, 1)) == "");
  }
}

TEMPLATE_TEST_CASE("reductions into strided and transposed destinations", "[reduce][views]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  tst::two_threads();
  for (const D3& d : shapes) {
    CAPTURE(d[0], d[1], d[2]);
    R3<float, P> x(d);
    tst::fill(x, [](index_t k) { return tst::small<float>(k, 8); });
    const auto v = tst::values(x);
    const auto ref0 = ref_reduce(v, d, {true, false, false}, red::sum);  // [d1, d2]
    const auto mean0 = ref_reduce(v, d, {true, false, false}, red::mean);

    R2<float, P> rows(2 * d[1], d[2]);  // every other row
    rows = -7.0f;
    ts::slice<0>(rows, 1, 2 * d[1], 2) = ts::sum<0>(x);
    CHECK(tst::compare_to(ts::slice<0>(rows, 1, 2 * d[1], 2), ref0) == "");
    CHECK(tst::compare_to(ts::slice<0>(rows, 0, 2 * d[1], 2), std::vector<double>(ref0.size(), -7.0)) == "");
    R2<float, P> cols(d[1], 2 * d[2]);  // every other column: inner stride 2
    cols = -7.0f;
    ts::slice<1>(cols, 0, 2 * d[2], 2) = ts::mean<0>(x);
    CHECK(tst::compare(tst::values(ts::slice<1>(cols, 0, 2 * d[2], 2)), mean0, {1e-5, 1e-6}) == "");
    CHECK(tst::compare_to(ts::slice<1>(cols, 1, 2 * d[2], 2), std::vector<double>(ref0.size(), -7.0)) == "");
    R2<float, P> tr(d[2], d[1]);  // transposed
    ts::transpose(tr) = ts::sum<0>(x);
    CHECK(tst::compare_to(ts::transpose(tr), ref0) == "");
  }
}

TEMPLATE_TEST_CASE("reductions of rank-0 and rank-1 tensors and of broadcast views", "[reduce][views]", ts::cpu,
                   ts::cpu_threads) {
  using P = TestType;
  tst::two_threads();
  R0<double, P> s0;
  s0() = -2.5;
  R0<double, P> a = ts::sum(s0);
  CHECK(a() == -2.5);
  a = ts::max(s0);
  CHECK(a() == -2.5);
  a = ts::mean(s0);
  CHECK(a() == -2.5);
  R0<std::int64_t, P> am = ts::argmax(s0);
  CHECK(am() == 0);
  for (index_t n : tst::all_sizes) {
    CAPTURE(n);
    R1<double, P> v(n);
    tst::fill(v, [](index_t k) { return tst::small<double>(k, 11); });
    const auto vv = tst::values(v);
    const D3 d{1, 1, n};
    a = ts::sum<0>(v);
    CHECK(tst::compare_to(a, ref_reduce(vv, d, {true, true, true}, red::sum)) == "");
    a = ts::min<-1>(v);
    CHECK(tst::compare_to(a, ref_reduce(vv, d, {true, true, true}, red::min)) == "");
    am = ts::argmax<0>(v);
    CHECK(tst::compare_to(am, ref_argmax(vv, d, -1)) == "");
    // a row broadcast over n rows (stride 0 along the reduced axis), and over the kept axis
    R1<double, P> row(3);
    row(0) = 1.5, row(1) = -2.0, row(2) = 0.25;
    R1<double, P> cs = ts::sum<0>(ts::broadcast_to<Shape<dyn, dyn>>(row, {n, 3}));
    CHECK(tst::compare_to(cs, {1.5 * double(n), -2.0 * double(n), 0.25 * double(n)}) == "");
    R1<double, P> rs = ts::sum<1>(ts::broadcast_to<Shape<dyn, dyn>>(row, {n, 3}));
    CHECK(tst::compare_to(rs, std::vector<double>(std::size_t(n), -0.25)) == "");
  }
}

TEMPLATE_TEST_CASE("reductions over an outer and the inner axis into a strided destination", "[reduce][views]", ts::cpu,
                   ts::cpu_threads) {
  using P = TestType;
  tst::two_threads();
  for (const D3& d : shapes) {
    CAPTURE(d[0], d[1], d[2]);
    R3<std::int32_t, P> x(d);
    tst::fill(x, [](index_t k) { return tst::wide<std::int32_t>(k, 12); });
    const auto v = tst::values(x);
    R1<std::int64_t, P> out(3 * d[1]);
    out = std::int64_t(-1);
    ts::slice<0>(out, 2, 3 * d[1], 3) = ts::sum<0, 2>(x);  // every row's threads keep partial sums
    CHECK(tst::compare_to(ts::slice<0>(out, 2, 3 * d[1], 3), ref_reduce(v, d, {true, false, true}, red::sum)) == "");
    CHECK(tst::compare_to(ts::slice<0>(out, 0, 3 * d[1], 3), std::vector<double>(std::size_t(d[1]), -1.0)) == "");
    R3<std::int32_t, P> mx(2 * d[0], 1, 1);
    mx = -1;
    ts::slice<0>(mx, 0, 2 * d[0], 2) = ts::max<1, 2>(x, ts::keepdim);
    CHECK(tst::compare_to(ts::slice<0>(mx, 0, 2 * d[0], 2), ref_reduce(v, d, {false, true, true}, red::max)) == "");
  }
}

// ---- reductions inside expressions ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("reductions inside expressions: centring, softmax, normalising", "[reduce][nested]", ts::cpu,
                   ts::cpu_threads) {
  using P = TestType;
  tst::two_threads();
  for (index_t n : tst::all_sizes) {
    CAPTURE(n);
    R2<float, P> x(n, 7);
    tst::fill(x, [](index_t k) { return tst::small<float>(k, 9); });
    std::vector<double> rmean(n, 0.0), rmax(n, -INFINITY), rsum(n, 0.0);
    double total = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < 7; ++j) {
        rmean[i] += x(i, j) / 7.0;
        rmax[i] = std::max(rmax[i], double(x(i, j)));
        total += x(i, j);
      }
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < 7; ++j) rsum[i] += std::exp(double(x(i, j)) - rmax[i]);

    R2<float, P> c = x - ts::mean<1>(x, ts::keepdim);
    std::vector<double> r;
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < 7; ++j) r.push_back(x(i, j) - rmean[i]);
    CHECK(tst::compare(tst::values(c), r, {1e-5, 1e-5}) == "");

    R2<float, P> sm =
        ts::exp(x - ts::max<-1>(x, ts::keepdim)) / ts::sum<-1>(ts::exp(x - ts::max<-1>(x, ts::keepdim)), ts::keepdim);
    r.clear();
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < 7; ++j) r.push_back(std::exp(double(x(i, j)) - rmax[i]) / rsum[i]);
    CHECK(tst::compare(tst::values(sm), r, {1e-5, 1e-7}) == "");

    R2<float, P> norm = (x + 100.0f) / ts::sum(x + 100.0f);  // a rank-0 reduction broadcast over the tensor
    r.clear();
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < 7; ++j) r.push_back((x(i, j) + 100.0) / (total + 700.0 * double(n)));
    CHECK(tst::compare(tst::values(norm), r, {1e-5, 1e-9}) == "");

    // in place: x = x - min over axis 0 (the reduction reads x before x is written)
    R2<std::int32_t, P> k(n, 7);
    tst::fill(k, [](index_t q) { return tst::small<std::int32_t>(q, 10); });
    std::vector<double> colmin(7, INFINITY);
    const auto kv = tst::values(k);
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < 7; ++j) colmin[j] = std::min(colmin[j], kv[i * 7 + j]);
    k = k - ts::min<0>(k, ts::keepdim);
    r.clear();
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < 7; ++j) r.push_back(kv[i * 7 + j] - colmin[j]);
    CHECK(tst::compare_to(k, r) == "");
  }
}

TEST_CASE("a reduction into part of its own source goes through a temporary", "[reduce][alias]") {
  R2<double, ts::cpu> x(5, 6);
  tst::fill(x, [](index_t k) { return double(k); });
  const auto v = tst::values(x);
  ts::select<1>(x, 0) = ts::sum<1>(x);  // column 0 = row sums (which read column 0)
  for (index_t i = 0; i < 5; ++i) {
    double s = 0;
    for (index_t j = 0; j < 6; ++j) s += v[i * 6 + j];
    CHECK(x(i, 0) == s);
    for (index_t j = 1; j < 6; ++j) CHECK(x(i, j) == v[i * 6 + j]);
  }
}

TEST_CASE("a reduction with keepdim into its own source, or into a slice of it", "[reduce][alias]") {
  // Regression (fixed; was in policy/assign.hpp reads_overlap, used for a reduction's source): a destination that starts at the source's
  // first element with the same strides counts as "reading exactly the element being written", which is safe for
  // elementwise loops but not for reductions: cpu_reduce first fills the destination with the identity, then reads
  // the source. With keepdim the ranks match, so the temporary is skipped and the result is wrong.
  R2<float, ts::cpu> x(4, 1);  // reducing an axis of extent 1 in place: x = sum<1>(x, keepdim) must leave x as it is
  tst::fill(x, [](index_t k) { return float(k + 1); });
  x = ts::sum<1>(x, ts::keepdim);
  CHECK(tst::values(x) == std::vector<double>{1, 2, 3, 4});  // actual: 0 0 0 0

  R2<float, ts::cpu> y(4, 5);  // column 0 = row sums, with keepdim
  tst::fill(y, [](index_t k) { return float(k); });
  const auto v = tst::values(y);
  ts::slice<1>(y, 0, 1) = ts::sum<1>(y, ts::keepdim);
  std::vector<double> r;
  for (index_t i = 0; i < 4; ++i) r.push_back(v[i * 5] + v[i * 5 + 1] + v[i * 5 + 2] + v[i * 5 + 3] + v[i * 5 + 4]);
  CHECK(tst::values(ts::slice<1>(y, 0, 1)) == r);  // actual: each sum misses column 0

  R2<float, ts::cpu> m(1, 6);  // row 0 = column maxima, row 0 holding the largest values
  tst::fill(m, [](index_t k) { return float(10 - k); });
  m = ts::max<0>(m, ts::keepdim);
  CHECK(tst::values(m) == std::vector<double>{10, 9, 8, 7, 6, 5});  // actual: -inf
}

TEST_CASE("an expression holding a reduction reads the operands when it is assigned", "[reduce][nested]") {
  // Regression (fixed; was in expr/reduce.hpp reduce_node::evaluator): a reduction inside an expression caches its result in the node
  // (`mutable cache`) on first evaluation and never drops it, so assigning the same expression again after the
  // operands changed uses the stale reduction. An elementwise expression without a reduction re-reads its operands.
  Tensor<float, Shape<2, 3>> x;
  tst::fill(x, [](index_t k) { return float(k); });
  auto centred = x - ts::mean<1>(x, ts::keepdim);
  Tensor<float, Shape<dyn, dyn>> a = centred;
  CHECK(tst::values(a) == std::vector<double>{-1, 0, 1, -1, 0, 1});
  x = x * 2.0f;
  Tensor<float, Shape<dyn, dyn>> b = centred;  // 2x - mean(2x)
  CHECK(tst::values(b) == std::vector<double>{-2, 0, 2, -2, 0, 2});
}

// ---- empty extents and errors --------------------------------------------------------------------------------

TEST_CASE("empty extents: sums are 0, mean is NaN, max, min and argmax throw", "[reduce][empty]") {
  R2<float, ts::cpu> e(3, 0), f(0, 4);
  R1<float, ts::cpu> s1 = ts::sum<1>(e);  // an empty axis: 0 for every row
  CHECK(tst::values(s1) == std::vector<double>{0, 0, 0});
  R1<float, ts::cpu> s0 = ts::sum<0>(f);
  CHECK(tst::values(s0) == std::vector<double>{0, 0, 0, 0});
  R0<float, ts::cpu> all = ts::sum(f);
  CHECK(all() == 0.0f);
  R2<std::int64_t, ts::cpu_threads> ik = ts::sum<0>(R2<std::int8_t, ts::cpu_threads>(0, 5), ts::keepdim);
  CHECK(dims_of(ik) == std::vector<index_t>{1, 5});
  CHECK(tst::values(ik) == std::vector<double>(5, 0.0));
  R1<float, ts::cpu> m1 = ts::mean<1>(e);
  REQUIRE(m1.size() == 3);
  CHECK(std::isnan(m1(0)));
  CHECK(std::isnan(m1(2)));
  // reducing a non-empty axis of an empty tensor: an empty result, no error
  R1<float, ts::cpu> mx = ts::max<1>(f);
  CHECK(mx.size() == 0);
  R1<float, ts::cpu> se = ts::sum<1>(f);
  CHECK(se.size() == 0);

  REQUIRE_THROWS_AS(ts::max<1>(e), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::max<1>(e), Catch::Contains("empty") && Catch::Contains("[3, 0]"));
  REQUIRE_THROWS_WITH(ts::min(f), Catch::Contains("[0, 4]"));
  REQUIRE_THROWS_AS(ts::argmax(f), ts::shape_error);
  REQUIRE_THROWS_AS(ts::argmax<1>(e), ts::shape_error);
}

TEST_CASE("a reduction into a destination of other extents throws naming both shapes", "[reduce][errors]") {
  R2<float, ts::cpu> x(3, 4);
  x = 1.0f;
  R1<float, ts::cpu> d(5);
  d = 0.0f;
  REQUIRE_THROWS_AS(d.view() = ts::sum<1>(x), ts::shape_error);
  REQUIRE_THROWS_WITH(d.view() = ts::sum<1>(x), Catch::Contains("[3]") && Catch::Contains("[5]"));
  REQUIRE_THROWS_WITH(d.view() = ts::mean<0>(x), Catch::Contains("[4]") && Catch::Contains("[5]"));
  CHECK(tst::values(d) == std::vector<double>(5, 0.0));
  R1<float, ts::cpu> ok = ts::sum<1>(x);  // a tensor takes the extents
  CHECK(tst::values(ok) == std::vector<double>(3, 4.0));
}
