// Pooling options (pool2d_options: per-axis kernel, stride, padding, max dilation, ceil_mode, count_include_pad)
// and adaptive average pooling against plain loops written from PyTorch's rules: forward through the expression,
// autodiff and the nn layers on cpu and cpu_threads in float and double, gradients by finite differences, static
// output shapes, and the 2x2 max-pool fusion still recognised.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <tessera/nn/adaptive_pool.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/tessera.hpp>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dyn;
using ts::hw;
using ts::index_t;
using ts::pool2d_options;
using ts::Shape;

namespace {
template <class T, class P>
using T4 = ts::Tensor<T, ts::dyn_shape_t<4>, P>;

template <class T, class P>
T4<T, P> filled(index_t n, index_t c, index_t h, index_t w, int salt) {
  T4<T, P> t(n, c, h, w);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(((i * 53 + salt * 7) % 31) - 15) / T(8);
  return t;
}

// PyTorch's output size: floor or ceil of (in + 2p - d(k-1) - 1) / s + 1, less one if the last window would start
// at or past in + p
index_t out_extent(index_t in, int k, int s, int p, int d, bool ceil_mode) {
  const index_t num = in + 2 * p - d * (k - 1) - 1;
  index_t out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

// one output cell, written from PyTorch's max_pool2d / avg_pool2d kernels
template <class F>
double pool_cell(F at, index_t H, index_t W, index_t oh, index_t ow, const pool2d_options& o, bool avg) {
  const int sh = o.stride.h ? o.stride.h : o.kernel.h, sw = o.stride.w ? o.stride.w : o.kernel.w;
  const index_t hs = oh * sh - o.padding.h, ws = ow * sw - o.padding.w;
  if (!avg) {
    double m = -std::numeric_limits<double>::infinity();
    for (int a = 0; a < o.kernel.h; ++a)
      for (int b = 0; b < o.kernel.w; ++b) {
        const index_t i = hs + a * o.dilation.h, j = ws + b * o.dilation.w;
        if (i >= 0 && i < H && j >= 0 && j < W) m = std::max(m, at(i, j));
      }
    return m;
  }
  index_t he = std::min<index_t>(hs + o.kernel.h, H + o.padding.h), we = std::min<index_t>(ws + o.kernel.w, W + o.padding.w);
  const index_t pool_size = (he - hs) * (we - ws);
  const index_t h0 = std::max<index_t>(hs, 0), w0 = std::max<index_t>(ws, 0);
  he = std::min<index_t>(he, H);
  we = std::min<index_t>(we, W);
  double s = 0;
  for (index_t i = h0; i < he; ++i)
    for (index_t j = w0; j < we; ++j) s += at(i, j);
  return s / double(o.count_include_pad ? pool_size : (he - h0) * (we - w0));
}

template <bool Avg, pool2d_options O, class T, class P>
void check_pool(index_t N, index_t C, index_t H, index_t W) {
  INFO("input " << N << "x" << C << "x" << H << "x" << W);
  const auto x = filled<T, P>(N, C, H, W, int(H * 3 + W));
  const index_t OH = out_extent(H, O.kernel.h, O.stride.h ? O.stride.h : O.kernel.h, O.padding.h, O.dilation.h, O.ceil_mode);
  const index_t OW = out_extent(W, O.kernel.w, O.stride.w ? O.stride.w : O.kernel.w, O.padding.w, O.dilation.w, O.ceil_mode);
  T4<T, P> y;
  if constexpr (Avg) y = ts::avg_pool2d<O>(x);
  else y = ts::max_pool2d<O>(x);
  REQUIRE(y.dims() == ts::dims_t<4>{N, C, OH, OW});
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (index_t n = 0; n < N; ++n)
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < OH; ++i)
        for (index_t j = 0; j < OW; ++j) {
          auto at = [&](index_t a, index_t b) { return double(x(n, c, a, b)); };
          CHECK(double(y(n, c, i, j)) == Approx(pool_cell(at, H, W, i, j, O, Avg)).margin(tol));
        }
  // the autodiff forward and the layer give the same values
  ad::Var<T, 4, P> v(x, false);
  ad::Var<T, 4, P> z;
  if constexpr (Avg) z = ad::avg_pool2d<O>(v);
  else z = ad::max_pool2d<O>(v);
  for (index_t i = 0; i < y.size(); ++i) CHECK(z.value().data()[i] == y.data()[i]);
}

constexpr pool2d_options mp1{.kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 0}};
constexpr pool2d_options mp2{.kernel = 3, .stride = 2, .padding = 1, .ceil_mode = true};
constexpr pool2d_options mp3{.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}, .dilation = {2, 1}, .ceil_mode = true};
constexpr pool2d_options mp4{.kernel = 2, .ceil_mode = true};
constexpr pool2d_options ap1{.kernel = 3, .stride = 2, .padding = 1, .ceil_mode = true};
constexpr pool2d_options ap2{.kernel = 3, .stride = 2, .padding = 1, .ceil_mode = true, .count_include_pad = false};
constexpr pool2d_options ap3{.kernel = {2, 3}, .stride = {2, 2}, .padding = {1, 0}, .count_include_pad = false};
constexpr pool2d_options ap4{.kernel = {3, 1}, .stride = {1, 1}, .padding = {1, 0}};
}  // namespace

TEMPLATE_PRODUCT_TEST_CASE("pool2d_options: max and avg forward match PyTorch's rules", "[pool][options]", std::pair,
                           ((float, ts::cpu), (double, ts::cpu), (float, ts::cpu_threads), (double, ts::cpu_threads))) {
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  for (index_t h : {1, 7, 33})
    for (index_t w : {3, 8, 33}) {
      if (h >= 2) check_pool<false, mp1, T, P>(2, 3, h, w);
      check_pool<false, mp2, T, P>(1, 2, h, w);
      if (h >= 2) check_pool<false, mp3, T, P>(1, 2, h, w);
      if (h >= 2) check_pool<false, mp4, T, P>(2, 2, h, w);
      check_pool<true, ap1, T, P>(1, 2, h, w);
      check_pool<true, ap2, T, P>(2, 2, h, w);
      check_pool<true, ap3, T, P>(1, 3, h, w);
      check_pool<true, ap4, T, P>(1, 1, h, w);
    }
  // ceil_mode: the last window still starts inside the input (5 rows, k 2, s 2: 3 outputs; PyTorch: 3)
  check_pool<false, pool2d_options{.kernel = 2, .stride = 2, .ceil_mode = true}, T, P>(1, 1, 5, 5);
  CHECK(out_extent(5, 2, 2, 1, 1, true) == 3);
  check_pool<true, pool2d_options{.kernel = 2, .stride = 2, .padding = 1, .ceil_mode = true}, T, P>(1, 2, 5, 7);
  // ceil_mode with padding where the rounded-up window would start in the right padding: dropped
  STATIC_REQUIRE(ts::detail::pool_out_extent(5, 2, 2, 1, 1, true) == 3);  // ceil alone: 4
  STATIC_REQUIRE(ts::detail::pool_out_extent(5, 2, 2, 0, 1, true) == 3);
  STATIC_REQUIRE(ts::detail::pool_out_extent(5, 2, 2, 0, 1, false) == 2);
}

TEST_CASE("pool2d_options: the int spellings, static shapes and errors", "[pool][options]") {
  // MaxPool2d<2> is still MaxPool2d<2, 2, 0>, a 2x2 max-pool the fusion recognises; the options spelling of the same
  // pool is recognised too, a ceil_mode one is not
  STATIC_REQUIRE(std::is_same_v<nn::MaxPool2d<2>, nn::MaxPool2d<2, 2, 0>>);
  STATIC_REQUIRE(nn::MaxPool2d<2>::max_pool2);
  STATIC_REQUIRE(nn::MaxPool2d<pool2d_options{.kernel = 2}>::max_pool2);
  STATIC_REQUIRE(!nn::MaxPool2d<pool2d_options{.kernel = 2, .ceil_mode = true}>::max_pool2);
  STATIC_REQUIRE(!nn::MaxPool2d<3, 2, 1>::max_pool2);
  using Net = nn::Sequential<Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 2, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>>;
  STATIC_REQUIRE(Net::output_shape::extents[2] == 4);
  // static output shapes with per-axis options and ceil_mode
  using L = nn::MaxPool2d<pool2d_options{.kernel = {3, 2}, .stride = 2, .padding = {1, 0}, .ceil_mode = true}>;
  STATIC_REQUIRE(std::is_same_v<L::output<Shape<dyn, 3, 7, 9>>, Shape<dyn, 3, 4, 5>>);
  STATIC_REQUIRE(std::is_same_v<nn::AvgPool2d<3, 2, 1>::output<Shape<4, 3, 7, 7>>, Shape<4, 3, 4, 4>>);
  STATIC_REQUIRE(!L::accepts<Shape<dyn, 3, 0, 9>>);
  ts::Tensor<float, Shape<1, 2, 7, 9>> xs;
  xs = 1.0f;
  auto e = ts::max_pool2d<pool2d_options{.kernel = 3, .stride = {2, 3}, .padding = 1, .dilation = {1, 2}}>(xs);
  STATIC_REQUIRE(std::is_same_v<typename decltype(e)::shape_type, Shape<1, 2, 4, 3>>);
  T4<float, ts::cpu> x(1, 1, 2, 2);
  x = 1.0f;
  constexpr pool2d_options big{.kernel = 3, .dilation = 2};  // a 5 x 5 window
  CHECK_THROWS_WITH(ts::max_pool2d<big>(x), Catch::Contains("max_pool2d") && Catch::Contains("[1, 1, 2, 2]"));
}

TEST_CASE("ad pooling with options: gradients by finite differences", "[pool][options][autodiff]") {
  ad::Var<double, 4> x(gc::values<4>({2, 2, 7, 8}, 1), true);
  // distinct values so each max window has one winner
  for (index_t i = 0; i < x.size(); ++i) x.mutable_value().data()[i] = std::sin(double(i) * 1.7) * 2 + double(i) * 1e-3;
  auto sq = [](const auto& y) { return ad::sum(y * y); };
  gc::check([&] { return sq(ad::max_pool2d<mp1>(x)); }, x);
  gc::check([&] { return sq(ad::max_pool2d<mp2>(x)); }, x);
  gc::check([&] { return sq(ad::max_pool2d<mp3>(x)); }, x);
  gc::check([&] { return sq(ad::avg_pool2d<ap1>(x)); }, x);
  gc::check([&] { return sq(ad::avg_pool2d<ap2>(x)); }, x);
  gc::check([&] { return sq(ad::avg_pool2d<ap3>(x)); }, x);
  gc::check([&] { return sq(ad::avg_pool2d<3, 1, 1>(x)); }, x);
}

namespace {
// PyTorch's adaptive bins
std::vector<double> adaptive_ref(const std::vector<double>& x, index_t N, index_t C, index_t H, index_t W, index_t OH, index_t OW) {
  std::vector<double> y;
  for (index_t p = 0; p < N * C; ++p)
    for (index_t i = 0; i < OH; ++i)
      for (index_t j = 0; j < OW; ++j) {
        const index_t h0 = index_t(std::floor(double(i * H) / double(OH))), h1 = index_t(std::ceil(double((i + 1) * H) / double(OH)));
        const index_t w0 = index_t(std::floor(double(j * W) / double(OW))), w1 = index_t(std::ceil(double((j + 1) * W) / double(OW)));
        double s = 0;
        for (index_t a = h0; a < h1; ++a)
          for (index_t b = w0; b < w1; ++b) s += x[std::size_t((p * H + a) * W + b)];
        y.push_back(s / double((h1 - h0) * (w1 - w0)));
      }
  return y;
}
}  // namespace

TEMPLATE_PRODUCT_TEST_CASE("adaptive_avg_pool2d: PyTorch's bins, forward", "[pool][adaptive]", std::pair,
                           ((float, ts::cpu), (double, ts::cpu), (float, ts::cpu_threads), (double, ts::cpu_threads))) {
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  struct sz {
    index_t H, W, OH, OW;
  };
  for (auto s : {sz{7, 7, 1, 1}, sz{7, 33, 3, 5}, sz{1, 7, 1, 3}, sz{33, 1, 7, 1}, sz{5, 6, 7, 9}, sz{8, 8, 4, 4}}) {
    INFO(s.H << "x" << s.W << " -> " << s.OH << "x" << s.OW);
    const auto x = filled<T, P>(2, 3, s.H, s.W, 3);
    ad::Var<T, 4, P> v(x, false);
    auto y = ad::adaptive_avg_pool2d(v, s.OH, s.OW);
    REQUIRE(y.dims() == ts::dims_t<4>{2, 3, s.OH, s.OW});
    std::vector<double> xd(std::size_t(x.size()));
    for (index_t i = 0; i < x.size(); ++i) xd[std::size_t(i)] = double(x.data()[i]);
    const auto ref = adaptive_ref(xd, 2, 3, s.H, s.W, s.OH, s.OW);
    for (index_t i = 0; i < y.size(); ++i) CHECK(double(y.value().data()[i]) == Approx(ref[std::size_t(i)]).margin(1e-6));
  }
  ad::Var<T, 4, P> v(filled<T, P>(1, 1, 3, 3, 1), false);
  CHECK_THROWS_WITH(ad::adaptive_avg_pool2d(v, 0, 2), Catch::Contains("adaptive_avg_pool2d") && Catch::Contains("[1, 1, 3, 3]") &&
                                                          Catch::Contains("[1, 1, 0, 2]"));
}

TEST_CASE("adaptive_avg_pool2d: gradients, and the AdaptiveAvgPool2d layer", "[pool][adaptive]") {
  ad::Var<double, 4> x(gc::values<4>({2, 2, 7, 5}, 2), true);
  gc::check([&] {
    auto y = ad::adaptive_avg_pool2d(x, 3, 4);  // overlapping windows of two sizes
    return ad::sum(y * y);
  }, x);
  gc::check([&] {
    auto y = ad::adaptive_avg_pool2d(x, 1, 1);
    return ad::sum(y * y);
  }, x);
  using L = nn::AdaptiveAvgPool2d<1>;
  STATIC_REQUIRE(std::is_same_v<L::output<Shape<dyn, 8, 7, 7>>, Shape<dyn, 8, 1, 1>>);
  STATIC_REQUIRE(std::is_same_v<nn::AdaptiveAvgPool2d<2, 3>::output<Shape<4, 8, dyn, dyn>>, Shape<4, 8, 2, 3>>);
  STATIC_REQUIRE(!L::accepts<Shape<dyn, 8, 7>>);
  // the ResNet head: AdaptiveAvgPool2d<1, 1>, Flatten, Linear
  using Head = nn::Sequential<Shape<dyn, 4, 7, 7>, nn::AdaptiveAvgPool2d<1, 1>, nn::Flatten, nn::Linear<4, 3>>;
  STATIC_REQUIRE(std::is_same_v<Head::output_shape, Shape<dyn, 3>>);
  Head h(11);
  ts::Tensor<float, Shape<dyn, 4, 7, 7>> in(2, 4, 7, 7);
  for (index_t i = 0; i < in.size(); ++i) in.data()[i] = float(i % 13) / 13.0f;
  auto out = h.forward(in);
  CHECK(out.dims() == ts::dims_t<2>{2, 3});
  ad::sum(out).backward();
  bool any = false;
  h.for_each_parameter([&](const std::string&, auto& p) {
    for (index_t i = 0; i < p.size(); ++i) any = any || p.grad().data()[i] != 0.0f;
  });
  CHECK(any);
}
