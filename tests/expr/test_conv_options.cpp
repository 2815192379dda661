// conv2d with per-axis stride, padding and dilation and non-square kernels (expr/conv.hpp, kernels/cpu/conv.hpp)
// against a plain-loop reference: forward (expression and autodiff), gradients of input, weights and bias by
// finite differences, nn::Conv2d with hw kernels and nn::Conv1d (forward against loops, gradients, shapes).
#include <catch2/catch.hpp>

#include <tessera/autodiff/conv1d_ops.hpp>
#include <tessera/nn/conv1d.hpp>
#include <tessera/tessera.hpp>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dyn;
using ts::hw;
using ts::index_t;
using ts::Shape;

namespace {
template <class T, class P>
using T4 = ts::Tensor<T, ts::dyn_shape_t<4>, P>;

template <class T, class P>
T4<T, P> filled(index_t a, index_t b, index_t c, index_t d, int salt) {
  T4<T, P> t(a, b, c, d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(((i * 37 + salt * 11) % 29) - 14) / T(8);
  return t;
}

struct cfg {
  index_t N, C, H, W, K, R, S;
  ts::conv2d_options o;
};

// y[n][k][oh][ow] = sum over c in k's group, r, s of x[n][c][oh*sh - ph + r*dh][ow*sw - pw + s*dw] * w[k][c'][r][s]
template <class XT, class WT>
std::vector<double> conv_ref(const cfg& c, const XT& x, const WT& w, index_t OH, index_t OW) {
  const ts::conv2d_options& o = c.o;
  const index_t Cg = c.C / o.groups, Kg = c.K / o.groups;
  std::vector<double> y(std::size_t(c.N * c.K * OH * OW), 0.0);
  for (index_t n = 0; n < c.N; ++n)
    for (index_t k = 0; k < c.K; ++k)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow) {
          double acc = 0;
          for (index_t ci = 0; ci < Cg; ++ci)
            for (index_t r = 0; r < c.R; ++r)
              for (index_t s = 0; s < c.S; ++s) {
                const index_t ih = oh * o.stride.h - o.padding.h + r * o.dilation.h;
                const index_t iw = ow * o.stride.w - o.padding.w + s * o.dilation.w;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                acc += double(x(n, (k / Kg) * Cg + ci, ih, iw)) * double(w(k, ci, r, s));
              }
          y[std::size_t(((n * c.K + k) * OH + oh) * OW + ow)] = acc;
        }
  return y;
}

const cfg cases[] = {
    {2, 3, 7, 9, 4, 3, 3, {.stride = {2, 1}, .padding = {1, 0}}},
    {1, 2, 8, 7, 3, 3, 1, {.stride = {1, 2}, .padding = {1, 0}, .dilation = {1, 1}}},
    {2, 4, 9, 8, 4, 2, 3, {.stride = {1, 1}, .padding = {0, 2}, .dilation = {2, 1}, .groups = 2}},
    {1, 3, 33, 7, 5, 1, 3, {.stride = {3, 1}, .padding = {0, 1}, .dilation = {1, 3}}},
    {1, 1, 1, 33, 2, 1, 5, {.stride = {1, 2}, .padding = {0, 2}}},  // H = 1: the Conv1d shape
    {1, 2, 7, 7, 2, 3, 3, {.stride = 1, .padding = {2, 1}}},       // stride 1: the backward-data fast path
};
}  // namespace

TEMPLATE_PRODUCT_TEST_CASE("conv2d: per-axis stride, padding, dilation and non-square kernels match loops", "[conv][options]",
                           std::pair, ((float, ts::cpu), (double, ts::cpu), (float, ts::cpu_threads), (double, ts::cpu_threads))) {
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  for (const cfg& c : cases) {
    INFO("N=" << c.N << " C=" << c.C << " H=" << c.H << " W=" << c.W << " K=" << c.K << " R=" << c.R << " S=" << c.S
              << " stride=" << c.o.stride.h << "," << c.o.stride.w << " pad=" << c.o.padding.h << "," << c.o.padding.w);
    const auto x = filled<T, P>(c.N, c.C, c.H, c.W, 1);
    const auto w = filled<T, P>(c.K, c.C / c.o.groups, c.R, c.S, 2);
    const index_t OH = (c.H + 2 * c.o.padding.h - c.o.dilation.h * (c.R - 1) - 1) / c.o.stride.h + 1;
    const index_t OW = (c.W + 2 * c.o.padding.w - c.o.dilation.w * (c.S - 1) - 1) / c.o.stride.w + 1;
    T4<T, P> y = ts::conv2d(x, w, c.o);
    REQUIRE(y.dims() == ts::dims_t<4>{c.N, c.K, OH, OW});
    const auto ref = conv_ref(c, x, w, OH, OW);
    const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-12;
    for (index_t i = 0; i < y.size(); ++i) CHECK(double(y.data()[i]) == Approx(ref[std::size_t(i)]).margin(tol));
    // strided input (a transposed view of a W x H tensor): the same result
    T4<T, P> xt(c.N, c.C, c.W, c.H);
    for (index_t n = 0; n < c.N; ++n)
      for (index_t ch = 0; ch < c.C; ++ch)
        for (index_t i = 0; i < c.H; ++i)
          for (index_t j = 0; j < c.W; ++j) xt(n, ch, j, i) = x(n, ch, i, j);
    T4<T, P> y2 = ts::conv2d(ts::permute<0, 1, 3, 2>(xt), w, c.o);
    for (index_t i = 0; i < y.size(); ++i) CHECK(double(y2.data()[i]) == Approx(double(y.data()[i])).margin(tol));
  }
}

TEST_CASE("conv2d options: hw spellings, static shapes and errors", "[conv][options]") {
  constexpr ts::conv2d_options a{.padding = 1}, b{.stride = {2, 1}, .padding = {1, 2}};
  STATIC_REQUIRE(a.padding == hw{1, 1});
  STATIC_REQUIRE(b.stride.h == 2 && b.stride.w == 1 && b.padding.w == 2);
  ts::Tensor<float, Shape<2, 3, 9, 8>> x;
  ts::Tensor<float, Shape<4, 3, 3, 1>> w;
  x = 1.0f;
  w = 1.0f;
  auto e = ts::conv2d<ts::conv2d_options{.stride = {2, 1}, .padding = {1, 0}}>(x, w);
  STATIC_REQUIRE(std::is_same_v<typename decltype(e)::shape_type, Shape<2, 4, 5, 8>>);
  T4<float, ts::cpu> xd(1, 3, 4, 4), wd(2, 3, 3, 5);
  xd = 1.0f;
  wd = 1.0f;
  CHECK_THROWS_WITH(ts::conv2d(xd, wd, {.padding = {1, 0}}), Catch::Contains("smaller than the kernel") && Catch::Contains("[1, 3, 4, 4]"));
  CHECK_NOTHROW(ts::conv2d(xd, wd, {.padding = {1, 1}}));
  CHECK_THROWS_WITH(ts::conv2d(xd, wd, {.stride = {1, 0}, .padding = 1}), Catch::Contains("stride >= 1"));
}

TEST_CASE("ad::conv2d: gradients of input, weights and bias with per-axis options", "[conv][options][autodiff]") {
  for (const cfg& c : {cfg{2, 2, 5, 7, 3, 3, 2, {.stride = {2, 1}, .padding = {1, 0}}},
                       cfg{1, 4, 7, 5, 2, 2, 3, {.stride = {1, 2}, .padding = {0, 1}, .dilation = {2, 1}, .groups = 2}},
                       cfg{1, 2, 6, 6, 2, 3, 1, {.stride = 1, .padding = {2, 0}, .dilation = {1, 1}}}}) {
    ad::Var<double, 4> x(gc::values<4>({c.N, c.C, c.H, c.W}, 1), true);
    ad::Var<double, 4> w(gc::values<4>({c.K, c.C / c.o.groups, c.R, c.S}, 2), true);
    ad::Var<double, 1> b(gc::values<1>({c.K}, 3), true);
    auto loss = [&] {
      auto y = ad::conv2d(x, w, b, c.o, ad::activation::tanh);
      return ad::sum(y * y);
    };
    gc::check(loss, x, w, b);
  }
}

TEST_CASE("nn::Conv2d with a non-square kernel and per-axis options", "[conv][options][nn]") {
  using L = ts::nn::Conv2d<2, 3, hw{3, 1}, ts::conv2d_options{.stride = hw{2, 1}, .padding = hw{1, 0}}>;  // (clang 14 takes no bare braced list as a template argument)
  STATIC_REQUIRE(std::is_same_v<L::output<Shape<dyn, 2, 9, 7>>, Shape<dyn, 3, 5, 7>>);
  STATIC_REQUIRE(L::accepts<Shape<dyn, 2, 1, 1>>);      // 1 + 2*1 >= 3 rows, 1 >= 1 column
  STATIC_REQUIRE(L::accepts<Shape<dyn, 2, 9, 7>>);
  STATIC_REQUIRE(!L::accepts<Shape<dyn, 3, 9, 7>>);  // channels
  STATIC_REQUIRE(!L::accepts<Shape<dyn, 2, 0, 7>>);  // 0 + 2*1 rows < 3
  STATIC_REQUIRE(std::is_same_v<ts::nn::Conv2d<1, 1, 3>, ts::nn::Conv2d<1, 1, hw{3, 3}>>);  // int K is K x K
  ts::Rng rng(5);
  L::state<double, ts::cpu> st(rng);
  CHECK(st.weight.dims() == ts::dims_t<4>{3, 2, 3, 1});
  for (index_t i = 0; i < st.weight.size(); ++i) CHECK(std::abs(st.weight.value().data()[i]) <= 1.0 / std::sqrt(6.0));
  ts::nn::context ctx;
  ad::Var<double, 4> x(gc::values<4>({1, 2, 9, 7}, 4), false);
  auto y = st.forward(x, ctx);
  CHECK(y.dims() == ts::dims_t<4>{1, 3, 5, 7});
}

namespace {
// y[n][k][l] = b[k] + sum over c in k's group, t of x[n][c][l*s - p + t*d] * w[k][c'][t]
std::vector<double> conv1d_ref(const ts::Tensor<double, ts::dyn_shape_t<3>>& x, const ts::Tensor<double, ts::dyn_shape_t<3>>& w,
                               const ts::Tensor<double, ts::dyn_shape_t<1>>& b, ts::conv1d_options o, index_t OL) {
  const index_t N = x.dims()[0], C = x.dims()[1], L = x.dims()[2], K = w.dims()[0], KL = w.dims()[2];
  const index_t Cg = C / o.groups, Kg = K / o.groups;
  std::vector<double> y;
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k)
      for (index_t l = 0; l < OL; ++l) {
        double acc = b(k);
        for (index_t c = 0; c < Cg; ++c)
          for (index_t t = 0; t < KL; ++t) {
            const index_t i = l * o.stride - o.padding + t * o.dilation;
            if (i >= 0 && i < L) acc += x(n, (k / Kg) * Cg + c, i) * w(k, c, t);
          }
        y.push_back(acc);
      }
  return y;
}
}  // namespace

TEST_CASE("conv1d and nn::Conv1d: forward against loops, gradients, shapes", "[conv][conv1d]") {
  for (auto o : {ts::conv1d_options{}, ts::conv1d_options{.stride = 2, .padding = 1}, ts::conv1d_options{.padding = 2, .dilation = 2},
                 ts::conv1d_options{.stride = 3, .padding = 1, .groups = 2}}) {
    INFO("stride " << o.stride << " padding " << o.padding << " dilation " << o.dilation << " groups " << o.groups);
    ad::Var<double, 3> x(gc::values<3>({2, 4, 33}, 1), true);
    ad::Var<double, 3> w(gc::values<3>({6, 4 / o.groups, 3}, 2), true);
    ad::Var<double, 1> b(gc::values<1>({6}, 3), true);
    auto y = ad::conv1d(x, w, b, o);
    const index_t OL = (33 + 2 * o.padding - o.dilation * 2 - 1) / o.stride + 1;
    REQUIRE(y.dims() == ts::dims_t<3>{2, 6, OL});
    const auto ref = conv1d_ref(x.value(), w.value(), b.value(), o, OL);
    for (index_t i = 0; i < y.size(); ++i) CHECK(y.value().data()[i] == Approx(ref[std::size_t(i)]).margin(1e-12));
  }
  ad::Var<double, 3> x(gc::values<3>({1, 2, 7}, 4), true);
  ad::Var<double, 3> w(gc::values<3>({3, 2, 3}, 5), true);
  ad::Var<double, 1> b(gc::values<1>({3}, 6), true);
  gc::check([&] {
    auto y = ad::conv1d(x, w, b, {.stride = 2, .padding = 1}, ad::activation::sigmoid);
    return ad::sum(y * y);
  }, x, w, b);

  using L = ts::nn::Conv1d<4, 8, 3, ts::conv1d_options{.stride = 2, .padding = 1}>;
  STATIC_REQUIRE(std::is_same_v<L::output<Shape<dyn, 4, 33>>, Shape<dyn, 8, 17>>);
  STATIC_REQUIRE(!L::accepts<Shape<dyn, 3, 33>>);
  STATIC_REQUIRE(!L::accepts<Shape<dyn, 4, 5, 5>>);
  ts::Rng rng(1);
  L::state<float, ts::cpu_threads> st(rng);
  CHECK(st.weight.dims() == ts::dims_t<3>{8, 4, 3});
  CHECK(st.bias.dims() == ts::dims_t<1>{8});
  for (index_t i = 0; i < st.weight.size(); ++i) CHECK(std::abs(st.weight.value().data()[i]) <= 1.0f / std::sqrt(12.0f));
  ts::nn::context ctx;
  ad::Var<float, 3, ts::cpu_threads> xf(ts::Tensor<float, ts::dyn_shape_t<3>, ts::cpu_threads>(2, 4, 33), false);
  xf.mutable_value() = 0.5f;
  CHECK(st.forward(xf, ctx).dims() == ts::dims_t<3>{2, 8, 17});
  CHECK_THROWS_AS(ad::conv1d(x, ad::Var<double, 3>(gc::values<3>({3, 5, 3}, 1), true), b), ts::shape_error);
}
