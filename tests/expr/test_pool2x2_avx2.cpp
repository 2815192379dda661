// The 2x2 stride-2 max pool's fast paths (kernels/cpu/pool2x2.hpp: 16 windows a step with AVX-512, 8 with AVX2;
// on a CPU with neither, the scalar loops) against plain loops written here: the forward (detail::cpu_pool2d) and
// the gradient (detail::pool_backward, plain and with the fused Conv+ReLU+MaxPool's relu_mask and bias sums) on
// rows of 1, 7, 8, 9, 14, 15, 16 and 17 outputs (masked tails and full steps), even and odd widths and heights
// (cells no window covers), ties (the first maximum of the window takes the gradient), NaN cells (a NaN wins its
// window; of several, the last in the order row 0 left, row 0 right, row 1 left, row 1 right), -0 against +0,
// strided inputs and outputs (a column stride of 2 takes the scalar loop; padded rows the vector path), accumulate
// on and off, 1 and 2 threads; float (the vector paths) and double (the scalar loops). Then the public operations
// (max_pool2d, ad::max_pool2d, ad::conv2d_relu_maxpool2) on the same kinds of input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <tessera/autodiff/nn_ops.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
namespace td = tessera::detail;
namespace ad = tessera::ad;
using ts::index_t;

namespace {

/// Values with many ties (quarters in [-1, 1], so bias sums are exact), some -0, and a NaN every `nan_every` cells
/// (0: none); the same for every T.
template <class T>
std::vector<T> cells(index_t n, int nan_every, unsigned seed) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const unsigned h = unsigned(i) * 2654435761u + seed * 40503u;
    const int q = int((h >> 7) % 9) - 4;  // -4 .. 4
    v[std::size_t(i)] = q == 0 && (h & 1u) ? -T(0) : T(q) / T(4);
    if (nan_every > 0 && (h >> 3) % unsigned(nan_every) == 0) v[std::size_t(i)] = std::numeric_limits<T>::quiet_NaN();
  }
  return v;
}

/// The window cell (0..3: row 0 left, row 0 right, row 1 left, row 1 right) that takes the gradient: the last NaN
/// if there is one, else the first cell holding the largest value.
template <class T>
int winner(const T (&w)[4]) {
  for (int k = 3; k >= 0; --k)
    if (std::isnan(w[k])) return k;
  int best = 0;
  for (int k = 1; k < 4; ++k)
    if (w[k] > w[best]) best = k;
  return best;
}

template <class T>
bool same(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

struct geom {
  index_t N, C, H, W;
};

/// The forward through cpu_pool2d with input strides xs and output strides ys (element offsets), against the loop.
template <class T>
void check_forward(const geom& g, index_t row_pad, index_t col_step, index_t out_step, int nan_every, int threads) {
  const index_t OH = g.H / 2, OW = g.W / 2;
  const index_t row = g.W * col_step + row_pad;
  const ts::dims_t<4> xs{g.C * g.H * row, g.H * row, row, col_step};
  const ts::dims_t<4> ys{g.C * OH * OW * out_step, OH * OW * out_step, OW * out_step, out_step};
  const auto x = cells<T>(g.N * xs[0], nan_every, 1);
  std::vector<T> y(static_cast<std::size_t>(g.N * ys[0]), T(-77));
  constexpr ts::pool2d_options O{.kernel = 2};
  td::cpu_pool2d<true, O>(x.data(), ts::dims_t<4>{g.N, g.C, g.H, g.W}, xs, y.data(), OH, OW, ys, threads);
  for (index_t n = 0; n < g.N; ++n)
    for (index_t c = 0; c < g.C; ++c)
      for (index_t i = 0; i < OH; ++i)
        for (index_t j = 0; j < OW; ++j) {
          auto at = [&](index_t r, index_t q) { return x[std::size_t(n * xs[0] + c * xs[1] + r * xs[2] + q * xs[3])]; };
          const T w[4] = {at(2 * i, 2 * j), at(2 * i, 2 * j + 1), at(2 * i + 1, 2 * j), at(2 * i + 1, 2 * j + 1)};
          const T got = y[std::size_t(n * ys[0] + c * ys[1] + i * ys[2] + j * ys[3])];
          INFO("n=" << n << " c=" << c << " i=" << i << " j=" << j);
          REQUIRE(same(got, w[winner(w)]));
        }
  if (out_step > 1)  // the gaps between outputs stay as they were
    for (index_t k = 0; k < g.N * ys[0]; ++k)
      if (k % out_step) REQUIRE(y[std::size_t(k)] == T(-77));
}

/// The gradient through pool_backward (accumulate, or relu_mask with bias sums: the fused backward never
/// accumulates) against the loop.
template <class T>
void check_backward(const geom& g, bool accumulate, bool relu_mask, int nan_every, int threads) {
  const index_t OH = g.H / 2, OW = g.W / 2, HW = g.H * g.W;
  const auto x = cells<T>(g.N * g.C * HW, nan_every, 2);
  std::vector<T> go(static_cast<std::size_t>(g.N * g.C * OH * OW));
  for (std::size_t i = 0; i < go.size(); ++i) go[i] = T(int((i * 7) % 11) - 5);  // integers: exact sums
  const auto before = cells<T>(g.N * g.C * HW, 0, 3);
  std::vector<T> dx = before, db(static_cast<std::size_t>(g.C), T(0.5));
  const td::pool2d_geometry pg{g.N, g.C, g.H, g.W, OH, OW, 2, 2, 0};
  td::pool_backward<true, T>(x.data(), go.data(), dx.data(), pg, accumulate, threads, relu_mask, relu_mask ? db.data() : nullptr);
  std::vector<T> want(dx.size(), T(0)), want_db(db.size(), T(0.5));
  if (accumulate) want = before;
  for (index_t n = 0; n < g.N; ++n)
    for (index_t c = 0; c < g.C; ++c)
      for (index_t i = 0; i < OH; ++i)
        for (index_t j = 0; j < OW; ++j) {
          const index_t base = (n * g.C + c) * HW;
          const index_t at[4] = {base + 2 * i * g.W + 2 * j, base + 2 * i * g.W + 2 * j + 1, base + (2 * i + 1) * g.W + 2 * j,
                                 base + (2 * i + 1) * g.W + 2 * j + 1};
          const T w[4] = {x[std::size_t(at[0])], x[std::size_t(at[1])], x[std::size_t(at[2])], x[std::size_t(at[3])]};
          const int k = winner(w);
          T gv = go[std::size_t(((n * g.C + c) * OH + i) * OW + j)];
          if (relu_mask && w[k] <= T(0)) gv = T(0);  // a NaN maximum passes
          want[std::size_t(at[k])] += gv;
          want_db[std::size_t(c)] += gv;
        }
  for (std::size_t i = 0; i < dx.size(); ++i) {
    INFO("cell " << i << " of " << dx.size());
    REQUIRE(dx[i] == want[i]);
  }
  if (relu_mask)
    for (std::size_t c = 0; c < db.size(); ++c) REQUIRE(db[c] == want_db[c]);
}

template <class T>
void check_all_widths(int threads) {
  for (index_t ow : {1, 7, 8, 9, 14, 15, 16, 17})
    for (index_t odd_w : {0, 1})
      for (index_t h : {2, 5, 8}) {
        const geom g{2, 3, h, 2 * ow + odd_w};
        INFO("H=" << g.H << " W=" << g.W << " threads=" << threads);
        for (int nan_every : {0, 7}) {
          check_forward<T>(g, 0, 1, 1, nan_every, threads);
          check_forward<T>(g, 5, 1, 1, nan_every, threads);  // padded rows: the vector path, row stride W + 5
          check_forward<T>(g, 0, 2, 1, nan_every, threads);  // column stride 2: the scalar loop
          check_forward<T>(g, 0, 1, 2, nan_every, threads);  // output column stride 2: the scalar loop
          check_backward<T>(g, false, false, nan_every, threads);
          check_backward<T>(g, true, false, nan_every, threads);  // accumulate: the general loop
          check_backward<T>(g, false, true, nan_every, threads);  // relu_mask and bias sums (never with accumulate)
        }
      }
}

}  // namespace

TEST_CASE("2x2 max pool: forward and gradient against plain loops at every tail length", "[pool][pool2x2]") {
  SECTION("float, 1 thread") { check_all_widths<float>(1); }
  SECTION("float, 2 threads") { check_all_widths<float>(2); }
  SECTION("double (the scalar loops)") { check_all_widths<double>(1); }
}

TEST_CASE("2x2 max pool: planes large enough to split over threads", "[pool][pool2x2]") {
  const geom g{2, 40, 29, 35};  // 80 planes of 14 x 17 outputs: above both kernels' threading thresholds
  for (int threads : {1, 2}) {
    check_forward<float>(g, 0, 1, 1, 13, threads);
    for (bool relu : {false, true}) check_backward<float>(g, false, relu, 13, threads);
    check_backward<float>(g, true, false, 13, threads);
  }
}

TEST_CASE("2x2 max pool: public operations on ties, NaN and odd extents", "[pool][pool2x2]") {
  using T4 = ts::Tensor<float, ts::dyn_shape_t<4>, ts::cpu_threads>;
  ts::cpu_threads::set_num_threads(2);
  for (index_t w : {2, 15, 29, 32, 35}) {
    const index_t n = 2, c = 3, h = 7;
    T4 xv(n, c, h, w);
    const auto v = cells<float>(xv.size(), 9, 4);
    std::copy(v.begin(), v.end(), xv.data());
    ad::Var<float, 4, ts::cpu_threads> x(xv, true);
    auto y = ad::max_pool2d<2>(x);
    REQUIRE(y.dims() == ts::dims_t<4>{n, c, h / 2, w / 2});
    T4 g(y.dims());
    for (index_t i = 0; i < g.size(); ++i) g.data()[i] = float(i % 11) - 5.0f;
    y.backward(g);
    T4 plain = ts::max_pool2d<2>(xv);
    for (index_t a = 0; a < n; ++a)
      for (index_t b = 0; b < c; ++b)
        for (index_t i = 0; i < h; ++i)
          for (index_t j = 0; j < w; ++j) {
            float want = 0;
            if (i / 2 < h / 2 && j / 2 < w / 2) {
              const index_t oi = i / 2, oj = j / 2;
              const float win[4] = {xv(a, b, 2 * oi, 2 * oj), xv(a, b, 2 * oi, 2 * oj + 1), xv(a, b, 2 * oi + 1, 2 * oj),
                                    xv(a, b, 2 * oi + 1, 2 * oj + 1)};
              const int k = winner(win);
              if (k == int((i % 2) * 2 + j % 2)) want = g(a, b, oi, oj);
              if (i % 2 == 0 && j % 2 == 0) {
                REQUIRE(same(y.value()(a, b, oi, oj), win[k]));
                REQUIRE(same(plain(a, b, oi, oj), win[k]));
              }
            }
            INFO("w=" << w << " at " << a << "," << b << "," << i << "," << j);
            REQUIRE(x.grad()(a, b, i, j) == want);
          }
  }
}

TEST_CASE("2x2 max pool: the fused conv2d + relu + max-pool gradient on odd extents", "[pool][pool2x2]") {
  using V4 = ad::Var<float, 4, ts::cpu>;
  using V1 = ad::Var<float, 1, ts::cpu>;
  for (index_t h : {3, 16, 17, 30, 33}) {  // rows of 1, 8, 8, 15 and 16 outputs
    ts::Tensor<float, ts::dyn_shape_t<4>> xv(2, 2, h, h), wv(3, 2, 1, 1);
    ts::Tensor<float, ts::dyn_shape_t<1>> bv(3);
    const auto v = cells<float>(xv.size(), 0, 5);
    std::copy(v.begin(), v.end(), xv.data());
    for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] = float(int(i % 5) - 2) / 2.0f;
    for (index_t i = 0; i < 3; ++i) bv(i) = 0.25f * float(i) - 0.25f;
    V4 x(xv, true), w(wv, true);
    V1 b(bv, true);
    auto y = ad::conv2d_relu_maxpool2(x, w, b);  // a 1x1 convolution: z = w . x + b per cell, exact in float
    ts::Tensor<float, ts::dyn_shape_t<4>> g(y.dims());
    for (index_t i = 0; i < g.size(); ++i) g.data()[i] = float(int(i % 7) - 3);
    y.backward(g);
    const index_t oh = h / 2;
    std::vector<double> db(3, 0.0), dw(6, 0.0);
    for (index_t n = 0; n < 2; ++n)
      for (index_t k = 0; k < 3; ++k) {
        auto z = [&](index_t i, index_t j) {
          float s = bv(k);
          for (index_t c = 0; c < 2; ++c) s += wv(k, c, 0, 0) * xv(n, c, i, j);
          return s > 0 ? s : 0.0f;  // relu
        };
        for (index_t i = 0; i < oh; ++i)
          for (index_t j = 0; j < oh; ++j) {
            const float win[4] = {z(2 * i, 2 * j), z(2 * i, 2 * j + 1), z(2 * i + 1, 2 * j), z(2 * i + 1, 2 * j + 1)};
            const int m = winner(win);
            REQUIRE(y.value()(n, k, i, j) == win[m]);
            if (win[m] > 0) {
              db[std::size_t(k)] += g(n, k, i, j);
              for (index_t c = 0; c < 2; ++c)
                dw[std::size_t(k * 2 + c)] += g(n, k, i, j) * xv(n, c, 2 * i + m / 2, 2 * j + m % 2);
            }
          }
      }
    for (index_t k = 0; k < 3; ++k) {
      REQUIRE(double(b.grad()(k)) == db[std::size_t(k)]);
      for (index_t c = 0; c < 2; ++c) REQUIRE(double(w.grad()(k, c, 0, 0)) == dw[std::size_t(k * 2 + c)]);
    }
  }
}
