// max_pool2d and avg_pool2d against plain loops: odd sizes, strides, padding, strided inputs, both CPU policies,
// pooling inside an expression, static output shapes.
#include <catch2/catch.hpp>

#include <limits>
#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
template <class T, class P>
using T4 = ts::Tensor<T, Shape<dyn, dyn, dyn, dyn>, P>;

template <class T, class P>
T4<T, P> input(index_t n, index_t c, index_t h, index_t w) {
  T4<T, P> x(n, c, h, w);
  for (index_t a = 0; a < n; ++a)
    for (index_t b = 0; b < c; ++b)
      for (index_t i = 0; i < h; ++i)
        for (index_t j = 0; j < w; ++j) x(a, b, i, j) = T(((a * 31 + b * 17 + i * 7 + j * 3) % 23) - 11) / T(4);
  return x;
}

// reference pooling of any accessor; avg counts padding as zeros
template <class F>
double pool_ref(F at, index_t h, index_t w, index_t oh, index_t ow, int k, int s, int p, bool avg) {
  double acc = avg ? 0.0 : -std::numeric_limits<double>::infinity();
  for (int kh = 0; kh < k; ++kh)
    for (int kw = 0; kw < k; ++kw) {
      const index_t i = oh * s - p + kh, j = ow * s - p + kw;
      if (i < 0 || i >= h || j < 0 || j >= w) continue;
      const double v = at(i, j);
      acc = avg ? acc + v : (v > acc ? v : acc);
    }
  return avg ? acc / (k * k) : acc;
}

template <int K, int S, int Pd, class T, class P>
void check_both(index_t n, index_t c, index_t h, index_t w) {
  auto x = input<T, P>(n, c, h, w);
  T4<T, P> mx = ts::max_pool2d<K, S, Pd>(x);
  T4<T, P> av = ts::avg_pool2d<K, S, Pd>(x);
  const index_t oh = (h + 2 * Pd - K) / S + 1, ow = (w + 2 * Pd - K) / S + 1;
  REQUIRE(mx.dims() == ts::dims_t<4>{n, c, oh, ow});
  for (index_t a = 0; a < n; ++a)
    for (index_t b = 0; b < c; ++b)
      for (index_t i = 0; i < oh; ++i)
        for (index_t j = 0; j < ow; ++j) {
          auto at = [&](index_t r, index_t q) { return double(x(a, b, r, q)); };
          REQUIRE(double(mx(a, b, i, j)) == pool_ref(at, h, w, i, j, K, S, Pd, false));
          REQUIRE(double(av(a, b, i, j)) == Approx(pool_ref(at, h, w, i, j, K, S, Pd, true)).epsilon(1e-6));
        }
}
}  // namespace

TEMPLATE_PRODUCT_TEST_CASE("pooling matches plain loops", "[pool]", std::pair,
                           ((float, ts::cpu), (float, ts::cpu_threads), (double, ts::cpu), (double, ts::cpu_threads))) {
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  ts::cpu_threads::set_num_threads(2);
  for (index_t hw : {2, 7, 33, 65}) {
    check_both<2, 2, 0, T, P>(3, 5, hw, hw + 1);
    check_both<3, 1, 1, T, P>(2, 3, hw, hw);
    check_both<3, 2, 1, T, P>(1, 7, hw + 2, hw);
  }
  check_both<2, 2, 0, T, P>(64, 32, 28, 28);  // the SimpleCNN's first pooling layer
}

TEST_CASE("pooling reads strided views and sits inside expressions", "[pool]") {
  using P = ts::cpu;
  auto x = input<float, P>(2, 6, 9, 9);
  auto xs = ts::slice<1>(x, 0, 6, 2);  // every other channel
  ts::Tensor<float, Shape<dyn, dyn, dyn, dyn>, P> y = ts::relu(ts::max_pool2d<2>(xs) - 0.5f);
  for (index_t a = 0; a < 2; ++a)
    for (index_t b = 0; b < 3; ++b)
      for (index_t i = 0; i < 4; ++i)
        for (index_t j = 0; j < 4; ++j) {
          auto at = [&](index_t r, index_t q) { return double(x(a, 2 * b, r, q)); };
          const double v = pool_ref(at, 9, 9, i, j, 2, 2, 0, false) - 0.5;
          REQUIRE(y(a, b, i, j) == Approx(v > 0 ? v : 0.0));
        }
}

TEST_CASE("static input extents give a static output shape; a too small input throws", "[pool]") {
  using X = ts::Tensor<float, Shape<dyn, 32, 28, 28>>;
  static_assert(std::is_same_v<decltype(ts::max_pool2d<2>(std::declval<X&>()))::shape_type, Shape<dyn, 32, 14, 14>>);
  static_assert(std::is_same_v<decltype(ts::avg_pool2d<3, 1, 1>(std::declval<X&>()))::shape_type, Shape<dyn, 32, 28, 28>>);
  T4<float, ts::cpu> small(1, 1, 1, 5);
  REQUIRE_THROWS_WITH(ts::max_pool2d<2>(small), Catch::Contains("[1, 1, 1, 5]"));
}
