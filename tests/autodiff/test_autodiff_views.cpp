// Views of Vars (slice, select, permute, transpose of two axes, squeeze, unsqueeze, flatten, broadcast_to, expand),
// Vars made from strided views, and softmax / log_softmax along any axis: forward values against plain loops,
// gradients against central finite differences (double), float and double, policies cpu and cpu_threads, errors.
#include "gradcheck.hpp"

#include <cmath>
#include <string>
#include <tessera/autodiff/view_ops.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {
using gc::message_of;
using gc::weighted;

template <class T, class P, int R>
ts::Tensor<T, ts::dyn_shape_t<R>, P> filled(const dims_t<R>& d, int salt) {
  return ts::Tensor<T, ts::dyn_shape_t<R>, P>(ts::cast<T>(gc::values<R, P>(d, salt)));
}
}  // namespace

TEMPLATE_TEST_CASE("view forward values match plain loops", "[autodiff][views]", float, double) {
  using T = TestType;
  auto run = [&](auto policy) {
    using P = decltype(policy);
    for (index_t n : {1, 7, 33}) {
      auto x = ad::constant(filled<T, P, 3>({n, 3, 5}, 1));
      const auto& xv = x.value();
      auto s = ad::slice<0>(x, 0, n, 2).value();
      REQUIRE(s.dims() == dims_t<3>{(n + 1) / 2, 3, 5});
      for (index_t i = 0; i < s.dim(0); ++i)
        for (index_t j = 0; j < 3; ++j)
          for (index_t k = 0; k < 5; ++k) CHECK(s(i, j, k) == xv(2 * i, j, k));
      auto s2 = ad::slice<-1>(x, 1, 4).value();
      for (index_t i = 0; i < n; ++i)
        for (index_t k = 0; k < 3; ++k) CHECK(s2(i, 2, k) == xv(i, 2, k + 1));
      auto sel = ad::select<1>(x, 2).value();
      REQUIRE(sel.dims() == dims_t<2>{n, 5});
      for (index_t i = 0; i < n; ++i)
        for (index_t k = 0; k < 5; ++k) CHECK(sel(i, k) == xv(i, 2, k));
      auto p = ad::permute<2, 0, 1>(x).value();
      REQUIRE(p.dims() == dims_t<3>{5, n, 3});
      auto t = ad::transpose<0, 2>(x).value();
      REQUIRE(t.dims() == dims_t<3>{5, 3, n});
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < 3; ++j)
          for (index_t k = 0; k < 5; ++k) {
            CHECK(p(k, i, j) == xv(i, j, k));
            CHECK(t(k, j, i) == xv(i, j, k));
          }
      auto u = ad::unsqueeze<1>(x).value();
      REQUIRE(u.dims() == dims_t<4>{n, 1, 3, 5});
      auto q = ad::squeeze<1>(ad::unsqueeze<1>(x)).value();
      REQUIRE(q.dims() == xv.dims());
      auto f = ad::flatten(x).value();
      REQUIRE(f.dims() == dims_t<1>{n * 15});
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < 3; ++j)
          for (index_t k = 0; k < 5; ++k) {
            CHECK(u(i, 0, j, k) == xv(i, j, k));
            CHECK(q(i, j, k) == xv(i, j, k));
            CHECK(f(i * 15 + j * 5 + k) == xv(i, j, k));
          }
      auto row = ad::constant(filled<T, P, 2>({3, 1}, 2));
      auto b = ad::broadcast_to(row, dims_t<3>{n, 3, 4}).value();
      auto e = ad::expand(row, dims_t<3>{n, -1, 4}).value();
      REQUIRE(b.dims() == dims_t<3>{n, 3, 4});
      REQUIRE(e.dims() == dims_t<3>{n, 3, 4});
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < 3; ++j)
          for (index_t k = 0; k < 4; ++k) {
            CHECK(b(i, j, k) == row.value()(j, 0));
            CHECK(e(i, j, k) == row.value()(j, 0));
          }
    }
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("view gradients against finite differences", "[autodiff][views]") {
  auto run = [&](auto policy) {
    using P = decltype(policy);
    for (index_t n : {1, 7, 33}) {
      auto x = ad::parameter(gc::values<3, P>({n, 3, 5}, 3));
      gc::check([&] { return weighted(ad::slice<0>(x, 0, n, 2), 4); }, x);
      gc::check([&] { return weighted(ad::slice<2>(x, 1, 5, 3), 5); }, x);
      gc::check([&] { return weighted(ad::select<-1>(x, 4), 6); }, x);
      gc::check([&] { return weighted(ad::permute<1, 2, 0>(x), 7); }, x);
      gc::check([&] { return weighted(ad::transpose<0, -1>(x), 8); }, x);
      gc::check([&] { return weighted(ad::squeeze<0>(ad::unsqueeze<0>(x)), 9); }, x);
      gc::check([&] { return weighted(ad::unsqueeze<3>(x), 10); }, x);
      gc::check([&] { return weighted(ad::flatten(x), 11); }, x);
      // overlapping slices and a select of the same Var: their gradients add up
      gc::check([&]() -> ad::Var<double, 0, P> { return weighted(ad::slice<1>(x, 0, 2), 12) + weighted(ad::slice<1>(x, 1, 3), 13) +
                             weighted(ad::select<1>(x, 1), 14); }, x);
      auto col = ad::parameter(gc::values<2, P>({3, 1}, 15));
      gc::check([&] { return weighted(ad::broadcast_to(col, dims_t<3>{n, 3, 4}), 16); }, col);
      gc::check([&] { return weighted(ad::expand(col, dims_t<3>{2, -1, n}), 17); }, col);
    }
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("float view gradients: a slice's gradient lands on the sliced elements only", "[autodiff][views]") {
  auto x = ad::parameter(filled<float, ts::cpu, 2>({7, 4}, 1));
  ad::sum(ad::slice<0>(x, 1, 7, 3) * 2.0f).backward();
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 4; ++j) CHECK(x.grad()(i, j) == ((i == 1 || i == 4) ? 2.0f : 0.0f));
  x.zero_grad();
  const auto w = filled<float, ts::cpu, 2>({7, 4}, 2);
  ad::sum(ad::transpose<0, 1>(x) * ad::constant(ts::transpose(w))).backward();
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 4; ++j) CHECK(x.grad()(i, j) == w(i, j));
}

TEST_CASE("Vars made from strided views copy them into contiguous storage", "[autodiff][views]") {
  auto t = gc::values<2>({7, 5}, 20);
  auto c = ad::constant(ts::transpose(t));
  REQUIRE(c.dims() == dims_t<2>{5, 7});
  auto p = ad::parameter(ts::slice<0>(t, 1, 5));
  REQUIRE(p.dims() == dims_t<2>{4, 5});
  ad::Var<double, 2> s(ts::slice<1>(t, 0, 5, 2), true);
  REQUIRE(s.dims() == dims_t<2>{7, 3});
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 5; ++j) {
      CHECK(c.value()(j, i) == t(i, j));
      if (i >= 1 && i < 5) CHECK(p.value()(i - 1, j) == t(i, j));
      if (j % 2 == 0) CHECK(s.value()(i, j / 2) == t(i, j));
    }
  // the copies are independent of t, and every op takes them
  t(1, 0) = 100.0;
  CHECK(p.value()(0, 0) != 100.0);
  gc::check([&] { return weighted(ad::tanh(ad::matmul(p, c)), 21); }, p);
  gc::check([&] { return weighted(ad::softmax<0>(s), 22); }, s);
  gc::check([&] { return ad::sum(ad::log_softmax<1>(s) * s); }, s);
}

TEST_CASE("softmax and log_softmax along any axis", "[autodiff][views][softmax]") {
  auto reference = [](const auto& x, int axis, bool log) {
    auto y = x;  // a copy of x's dims, overwritten below
    const auto d = x.dims();
    const index_t C = d[std::size_t(axis)];
    index_t inner = 1;
    for (std::size_t i = std::size_t(axis) + 1; i < d.size(); ++i) inner *= d[i];
    const index_t outer = x.size() / (C * inner);
    for (index_t o = 0; o < outer; ++o)
      for (index_t in = 0; in < inner; ++in) {
        const double* p = x.data() + o * C * inner + in;
        double m = p[0], s = 0;
        for (index_t c = 0; c < C; ++c) m = std::max(m, p[c * inner]);
        for (index_t c = 0; c < C; ++c) s += std::exp(p[c * inner] - m);
        for (index_t c = 0; c < C; ++c)
          y.data()[o * C * inner + c * inner + in] = log ? p[c * inner] - m - std::log(s) : std::exp(p[c * inner] - m) / s;
      }
    return y;
  };
  auto near = [](const auto& a, const auto& b) {
    REQUIRE(a.dims() == b.dims());
    for (index_t i = 0; i < a.size(); ++i) CHECK(a.data()[i] == Approx(b.data()[i]).margin(1e-12));
  };
  auto run = [&](auto policy) {
    using P = decltype(policy);
    auto x = ad::parameter(gc::values<3, P>({3, 7, 5}, 30, -3, 3));
    const auto& xv = x.value();
    near(ad::softmax<0>(x).value(), reference(xv, 0, false));
    near(ad::softmax<1>(x).value(), reference(xv, 1, false));
    near(ad::softmax<2>(x).value(), reference(xv, 2, false));
    near(ad::softmax<-1>(x).value(), reference(xv, 2, false));
    near(ad::softmax(x).value(), reference(xv, 2, false));
    near(ad::log_softmax<0>(x).value(), reference(xv, 0, true));
    near(ad::log_softmax<1>(x).value(), reference(xv, 1, true));
    near(ad::log_softmax<-1>(x).value(), reference(xv, 2, true));
    gc::check([&] { return weighted(ad::softmax<0>(x), 31); }, x);
    gc::check([&] { return weighted(ad::softmax<1>(x), 32); }, x);
    gc::check([&] { return weighted(ad::softmax<2>(x), 33); }, x);
    gc::check([&] { return weighted(ad::log_softmax<0>(x), 34); }, x);
    gc::check([&] { return weighted(ad::log_softmax<1>(x), 35); }, x);
    gc::check([&] { return weighted(ad::log_softmax(x), 36); }, x);
    auto y = ad::parameter(gc::values<4, P>({2, 3, 1, 4}, 37, -2, 2));
    const auto& yv = y.value();
    near(ad::softmax<1>(y).value(), reference(yv, 1, false));
    near(ad::softmax<2>(y).value(), reference(yv, 2, false));
    near(ad::log_softmax<3>(y).value(), reference(yv, 3, true));
    gc::check([&] { return weighted(ad::softmax<1>(y), 38); }, y);
    gc::check([&] { return weighted(ad::log_softmax<-3>(y), 39); }, y);
    gc::check([&] { return weighted(ad::softmax<3>(y), 40); }, y);
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("softmax along an axis in float", "[autodiff][views][softmax]") {
  auto x = ad::parameter(filled<float, ts::cpu, 3>({2, 65, 3}, 41));
  auto y = ad::softmax<1>(x).value();
  for (index_t i = 0; i < 2; ++i)
    for (index_t k = 0; k < 3; ++k) {
      float s = 0;
      for (index_t j = 0; j < 65; ++j) s += y(i, j, k);
      CHECK(s == Approx(1.0f).epsilon(1e-5));
    }
  ad::sum(ad::softmax<1>(x)).backward();  // the sum of a softmax is constant: zero gradient
  for (index_t i = 0; i < x.size(); ++i) CHECK(std::abs(x.grad().data()[i]) < 1e-5f);
}

TEST_CASE("view errors say what is wrong", "[autodiff][views]") {
  auto x = ad::parameter(gc::values<2>({4, 3}, 50));
  CHECK(message_of([&] { (void)ad::slice<0>(x, 2, 6); }) ==
        "tessera: slice: [2, 6) step 1 does not fit axis 0 of shape [4, 3]");
  CHECK(message_of([&] { (void)ad::select<1>(x, 3); }) == "tessera: select: index 3 is outside axis 1 of shape [4, 3]");
  CHECK(message_of([&] { (void)ad::squeeze<0>(x); }) == "tessera: squeeze: axis 0 of shape [4, 3] is not 1");
  CHECK(message_of([&] { (void)ad::broadcast_to(x, dims_t<2>{4, 5}); }).find("[4, 3]") != std::string::npos);
  CHECK(message_of([&] { (void)ad::expand(x, dims_t<3>{-1, 4, 3}); }) ==
        "tessera: expand: -1 at new leading axis 0 of [-1, 4, 3] (shape [4, 3])");
}
