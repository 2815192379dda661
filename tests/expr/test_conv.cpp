// conv2d against a plain-loop reference: odd sizes, stride, padding, dilation, groups, strided input and weight
// views, float and double, both CPU policies; epilogue fusion (bias, activation, residual) in one pass without
// temporaries; nested and aliasing cases; shape errors; pooling's epilogue.
#include <catch2/catch.hpp>

#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
template <class T, class P>
using T4 = ts::Tensor<T, Shape<dyn, dyn, dyn, dyn>, P>;

template <class T, class P>
T4<T, P> filled(index_t a, index_t b, index_t c, index_t d, int salt) {
  T4<T, P> x(a, b, c, d);
  index_t k = 0;
  for (index_t i = 0; i < a; ++i)
    for (index_t j = 0; j < b; ++j)
      for (index_t p = 0; p < c; ++p)
        for (index_t q = 0; q < d; ++q, ++k) x(i, j, p, q) = T(((k * 37 + salt * 11 + (k / 5) * 3) % 19) - 9) / T(8);
  return x;
}

// the definition, as PyTorch states it: y[n,k,oh,ow] = sum_{c,r,s} x[n, g*Cg + c, oh*st - pad + r*dil, ow*st - pad + s*dil] * w[k,c,r,s]
template <class X, class W>
std::vector<double> conv_ref(const X& x, const W& w, int st, int pad, int dil, int groups, index_t& OH, index_t& OW) {
  const index_t N = x.dims()[0], C = x.dims()[1], H = x.dims()[2], Wd = x.dims()[3];
  const index_t K = w.dims()[0], Cg = w.dims()[1], R = w.dims()[2], S = w.dims()[3];
  (void)C;
  OH = (H + 2 * pad - dil * (R - 1) - 1) / st + 1;
  OW = (Wd + 2 * pad - dil * (S - 1) - 1) / st + 1;
  const index_t Kg = K / groups;
  std::vector<double> y(std::size_t(N * K * OH * OW), 0.0);
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow) {
          double acc = 0;
          const index_t g = k / Kg;
          for (index_t c = 0; c < Cg; ++c)
            for (index_t r = 0; r < R; ++r)
              for (index_t s = 0; s < S; ++s) {
                const index_t ih = oh * st - pad + r * dil, iw = ow * st - pad + s * dil;
                if (ih < 0 || ih >= H || iw < 0 || iw >= Wd) continue;
                acc += double(x(n, g * Cg + c, ih, iw)) * double(w(k, c, r, s));
              }
          y[std::size_t(((n * K + k) * OH + oh) * OW + ow)] = acc;
        }
  return y;
}

template <class T>
double tol() { return std::is_same_v<T, float> ? 2e-4 : 1e-11; }

template <class Y>
void require_matches(const Y& y, const std::vector<double>& ref) {
  const auto d = y.dims();
  REQUIRE(std::size_t(d[0] * d[1] * d[2] * d[3]) == ref.size());
  std::size_t i = 0;
  for (index_t a = 0; a < d[0]; ++a)
    for (index_t b = 0; b < d[1]; ++b)
      for (index_t c = 0; c < d[2]; ++c)
        for (index_t e = 0; e < d[3]; ++e, ++i) {
          const double got = double(y(a, b, c, e)), want = ref[i];
          if (std::abs(got - want) > tol<typename Y::value_type>() * (1 + std::abs(want))) {
            INFO("at (" << a << ", " << b << ", " << c << ", " << e << ")");
            REQUIRE(got == Approx(want));
          }
        }
}

template <class T, class P>
void check_conv(index_t N, index_t C, index_t H, index_t W, index_t K, index_t R, int st, int pad, int dil, int groups) {
  INFO("N=" << N << " C=" << C << " H=" << H << " W=" << W << " K=" << K << " R=" << R << " stride=" << st << " pad=" << pad
            << " dil=" << dil << " groups=" << groups);
  auto x = filled<T, P>(N, C, H, W, 1);
  auto w = filled<T, P>(K, C / groups, R, R, 2);
  T4<T, P> y = ts::conv2d(x, w, {.stride = st, .padding = pad, .dilation = dil, .groups = groups});
  index_t OH, OW;
  auto ref = conv_ref(x, w, st, pad, dil, groups, OH, OW);
  REQUIRE(y.dims() == ts::dims_t<4>{N, K, OH, OW});
  require_matches(y, ref);
}
}  // namespace

TEMPLATE_PRODUCT_TEST_CASE("conv2d matches the definition", "[conv]", std::pair,
                           ((float, ts::cpu), (float, ts::cpu_threads), (double, ts::cpu), (double, ts::cpu_threads))) {
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  ts::cpu_threads::set_num_threads(2);
  SECTION("odd sizes, 3x3, padding 1") {
    for (index_t n : {1, 3})
      for (index_t c : {1, 7})
        for (index_t k : {1, 7, 33})
          for (index_t hw : {1, 7, 33}) check_conv<T, P>(n, c, hw, hw, k, 3, 1, 1, 1, 1);
  }
  SECTION("kernel sizes, strides, padding, dilation") {
    check_conv<T, P>(2, 3, 13, 13, 5, 1, 1, 0, 1, 1);
    check_conv<T, P>(2, 3, 13, 11, 5, 5, 1, 2, 1, 1);
    check_conv<T, P>(2, 3, 13, 13, 5, 3, 2, 1, 1, 1);
    check_conv<T, P>(2, 3, 14, 14, 5, 3, 2, 0, 1, 1);
    check_conv<T, P>(1, 4, 15, 15, 6, 3, 1, 2, 2, 1);
    check_conv<T, P>(1, 4, 16, 17, 6, 3, 3, 1, 2, 1);
    check_conv<T, P>(2, 2, 7, 7, 3, 7, 1, 0, 1, 1);  // kernel as large as the input: one output pixel
  }
  SECTION("groups, depthwise") {
    check_conv<T, P>(2, 4, 9, 9, 6, 3, 1, 1, 1, 2);
    check_conv<T, P>(2, 6, 9, 9, 6, 3, 1, 1, 1, 6);
    check_conv<T, P>(1, 6, 10, 10, 12, 3, 2, 1, 1, 3);
  }
  SECTION("more than one K block (C*R*S > 512) and more than one column chunk") {
    check_conv<T, P>(1, 65, 9, 9, 7, 3, 1, 1, 1, 1);
    check_conv<T, P>(2, 3, 65, 65, 33, 3, 1, 1, 1, 1);
    check_conv<T, P>(1, 64, 34, 34, 33, 3, 1, 1, 1, 1);
  }
  SECTION("the SimpleCNN's and the ResNet example's layers") {
    check_conv<T, P>(4, 1, 28, 28, 32, 3, 1, 1, 1, 1);
    check_conv<T, P>(3, 32, 14, 14, 64, 3, 1, 1, 1, 1);
    check_conv<T, P>(3, 64, 7, 7, 64, 3, 1, 1, 1, 1);  // 7 x 7: a panel of 14 pixels is two runs of 7
    check_conv<T, P>(2, 32, 14, 14, 64, 3, 2, 1, 1, 1);
  }
}

TEST_CASE("conv2d reads strided input and weight views in place", "[conv]") {
  ts::cpu_threads::set_num_threads(2);
  using P = ts::cpu_threads;
  auto big = filled<float, P>(3, 8, 20, 22, 3);
  auto x = ts::slice<3>(ts::slice<1>(big, 1, 7, 2), 2, 21, 2);  // channels 1,3,5; every other column
  auto wbig = filled<float, P>(5, 3, 3, 3, 4);
  auto w = ts::permute<0, 1, 3, 2>(wbig);  // transposed kernels
  T4<float, P> y = ts::conv2d(x, w, {.padding = 1});
  index_t OH, OW;
  require_matches(y, conv_ref(x, w, 1, 1, 1, 1, OH, OW));
}

TEST_CASE("conv2d fuses bias, activation and residual into one pass", "[conv][fusion]") {
  ts::cpu_threads::set_num_threads(2);
  using P = ts::cpu_threads;
  const index_t N = 3, C = 5, H = 9, W = 11, K = 7;
  auto x = filled<float, P>(N, C, H, W, 5);
  auto w = filled<float, P>(K, C, 3, 3, 6);
  auto b4 = filled<float, P>(1, K, 1, 1, 7);
  auto bias = ts::reshape<Shape<dyn, 1, 1>>(b4, {K, 1, 1});
  auto res = filled<float, P>(N, K, H, W, 8);
  index_t OH, OW;
  const auto ref = conv_ref(x, w, 1, 1, 1, 1, OH, OW);
  auto at = [&](index_t n, index_t k, index_t h, index_t q) { return ref[std::size_t(((n * K + k) * OH + h) * OW + q)]; };

  T4<float, P> y(N, K, H, W);
  ts::stats::reset();
  y = ts::relu(ts::conv2d(x, w, {.padding = 1}) + bias);
  CHECK(ts::stats::read().passes == 1);
  CHECK(ts::stats::read().allocations == 0);
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k)
      for (index_t h = 0; h < H; ++h)
        for (index_t q = 0; q < W; ++q) REQUIRE(y(n, k, h, q) == Approx(std::max(0.0, at(n, k, h, q) + b4(0, k, 0, 0))).margin(1e-4));

  ts::stats::reset();
  y = ts::clamp(0.5f * ts::conv2d(x, w, {.padding = 1}) + res, -1.0f, 2.0f);  // residual: a full-size operand, row by row
  CHECK(ts::stats::read().passes == 1);
  CHECK(ts::stats::read().allocations == 0);
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k)
      for (index_t h = 0; h < H; ++h)
        for (index_t q = 0; q < W; ++q)
          REQUIRE(y(n, k, h, q) == Approx(std::clamp(0.5 * at(n, k, h, q) + res(n, k, h, q), -1.0, 2.0)).margin(1e-4));

  SECTION("a destination with strided planes falls back to a temporary and stays right") {
    T4<float, P> wide(N, K, H, 2 * W);
    wide = 0.0f;
    auto dst = ts::slice<3>(wide, 0, 2 * W, 2);
    dst = ts::relu(ts::conv2d(x, w, {.padding = 1}) + bias);
    for (index_t n = 0; n < N; ++n)
      for (index_t k = 0; k < K; ++k)
        for (index_t h = 0; h < H; ++h)
          for (index_t q = 0; q < W; ++q) {
            REQUIRE(wide(n, k, h, 2 * q) == Approx(std::max(0.0, at(n, k, h, q) + b4(0, k, 0, 0))).margin(1e-4));
            REQUIRE(wide(n, k, h, 2 * q + 1) == 0.0f);
          }
  }
}

TEST_CASE("conv2d nested, aliased and inside reductions", "[conv]") {
  ts::cpu_threads::set_num_threads(2);
  using P = ts::cpu_threads;
  auto x = filled<double, P>(2, 4, 8, 8, 9);
  auto w1 = filled<double, P>(4, 4, 3, 3, 10);
  auto w2 = filled<double, P>(3, 4, 3, 3, 11);
  index_t OH, OW;
  auto r1 = conv_ref(x, w1, 1, 1, 1, 1, OH, OW);
  T4<double, P> h1(2, 4, 8, 8);
  for (index_t i = 0; i < h1.size(); ++i) h1.data()[i] = std::max(0.0, r1[std::size_t(i)]);

  SECTION("conv of a relu of a conv") {
    T4<double, P> y = ts::conv2d(ts::relu(ts::conv2d(x, w1, {.padding = 1})), w2, {.padding = 1});
    require_matches(y, conv_ref(h1, w2, 1, 1, 1, 1, OH, OW));
  }
  SECTION("x = relu(conv2d(x, w)) reads x while writing it: through a temporary") {
    T4<double, P> xa = x;
    xa = ts::relu(ts::conv2d(xa, w1, {.padding = 1}));
    std::vector<double> want = r1;
    for (auto& v : want) v = std::max(0.0, v);
    require_matches(xa, want);
  }
  SECTION("a sum over a conv") {
    auto s = ts::eval(ts::sum(ts::conv2d(x, w1, {.padding = 1})));
    double want = 0;
    for (double v : r1) want += v;
    CHECK(s() == Approx(want).epsilon(1e-12));
  }
}

TEST_CASE("conv2d shapes: static where the options are, errors naming both shapes", "[conv][shape]") {
  ts::Tensor<float, Shape<64, 32, 14, 14>> x;
  ts::Tensor<float, Shape<64, 32, 3, 3>> w;
  using Y = decltype(ts::conv2d<ts::conv2d_options{.padding = 1}>(x, w));
  STATIC_REQUIRE(std::is_same_v<Y::shape_type, Shape<64, 64, 14, 14>>);
  using Y2 = decltype(ts::conv2d<ts::conv2d_options{.stride = 2}>(x, w));
  STATIC_REQUIRE(std::is_same_v<Y2::shape_type, Shape<64, 64, 6, 6>>);
  using Y3 = decltype(ts::conv2d(x, w, {.padding = 1}));
  STATIC_REQUIRE(std::is_same_v<Y3::shape_type, Shape<64, 64, dyn, dyn>>);

  T4<float, ts::cpu> xd(2, 3, 8, 8), wd(4, 5, 3, 3);
  CHECK_THROWS_WITH(ts::conv2d(xd, wd), Catch::Contains("[2, 3, 8, 8]") && Catch::Contains("[4, 5, 3, 3]"));
  T4<float, ts::cpu> w7(4, 3, 9, 9);
  CHECK_THROWS_WITH(ts::conv2d(xd, w7), Catch::Contains("smaller than the kernel"));
  T4<float, ts::cpu> wg(5, 1, 3, 3);
  CHECK_THROWS_WITH(ts::conv2d(xd, wg, {.groups = 3}), Catch::Contains("multiple of the 3 groups"));
  CHECK_THROWS_AS(ts::conv2d(xd, wd, {.stride = 0}), ts::shape_error);
}

TEST_CASE("pooling runs its elementwise neighbours as an epilogue", "[pool][fusion]") {
  ts::cpu_threads::set_num_threads(2);
  using P = ts::cpu_threads;
  auto x = filled<float, P>(3, 5, 12, 10, 12);
  T4<float, P> y(3, 5, 6, 5);
  ts::stats::reset();
  y = ts::relu(ts::max_pool2d<2>(x) - 0.25f);
  CHECK(ts::stats::read().passes == 1);
  CHECK(ts::stats::read().allocations == 0);
  for (index_t n = 0; n < 3; ++n)
    for (index_t c = 0; c < 5; ++c)
      for (index_t i = 0; i < 6; ++i)
        for (index_t j = 0; j < 5; ++j) {
          float m = -1e30f;
          for (int a = 0; a < 2; ++a)
            for (int b = 0; b < 2; ++b) m = std::max(m, x(n, c, 2 * i + a, 2 * j + b));
          REQUIRE(y(n, c, i, j) == std::max(0.0f, m - 0.25f));
        }
}
