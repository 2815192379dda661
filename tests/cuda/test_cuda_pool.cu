// cuda_max_pool2d / cuda_avg_pool2d and their backward kernels (kernels/cuda/pool.hpp) against plain host loops:
// odd extents, kernel/stride/padding combinations, contiguous, channels-last and sliced inputs, ties (the first
// cell wins), -inf and NaN cells, argmax stored or recomputed, overwriting and accumulating gradients; float and
// double. Without a GPU the executable prints "SKIPPED: no CUDA device" and exits 77 (ctest: skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <tessera/kernels/cuda/pool.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
using ts::index_t;

namespace {

using cuda_test::cuda_ok;
using cuda_test::dbuf;

struct stream_t {
  cudaStream_t s = nullptr;
  stream_t() { cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~stream_t() { cudaStreamDestroy(s); }
};

struct config {
  index_t N, C, H, W;
  int k, s, p;
  index_t OH() const { return ts::pool2d_out_extent(H, k, s, p); }
  index_t OW() const { return ts::pool2d_out_extent(W, k, s, p); }
  std::string str() const {
    return "N" + std::to_string(N) + " C" + std::to_string(C) + " " + std::to_string(H) + "x" + std::to_string(W) +
           " kernel " + std::to_string(k) + " stride " + std::to_string(s) + " pad " + std::to_string(p);
  }
};

const config configs[] = {
    {2, 3, 7, 9, 2, 2, 0},    // the usual 2x2/2, odd extents (last row and column dropped)
    {2, 3, 7, 9, 3, 2, 1},    // 3x3/2 padding 1 (ResNet's stem)
    {1, 2, 8, 8, 3, 1, 1},    // overlapping windows, stride 1
    {2, 2, 5, 6, 2, 1, 0},    // overlapping 2x2/1
    {1, 1, 1, 1, 1, 1, 0},    // one element
    {1, 3, 33, 17, 4, 3, 2},  // 4x4/3 padding 2
    {2, 2, 9, 9, 5, 2, 2},    // 5x5/2 padding 2
    {3, 5, 16, 16, 2, 2, 1},  // padding on a 2x2 window
    {1, 1, 3, 3, 3, 3, 1},    // one window, padded
};

/// Input layouts: 0 contiguous NCHW, 1 channels-last (NHWC memory), 2 every other column of a wider NCHW tensor.
struct layout {
  index_t sn, sc, sh, sw, size;
};
layout make_layout(const config& c, int kind) {
  if (kind == 0) return {c.C * c.H * c.W, c.H * c.W, c.W, 1, c.N * c.C * c.H * c.W};
  if (kind == 1) return {c.H * c.W * c.C, 1, c.W * c.C, c.C, c.N * c.C * c.H * c.W};
  return {c.C * c.H * 2 * c.W, c.H * 2 * c.W, 2 * c.W, 2, c.N * c.C * c.H * 2 * c.W};
}

/// Values with many ties (5 levels) and, when `specials`, -inf and NaN cells here and there.
template <class T>
std::vector<T> pool_values(index_t size, bool specials) {
  std::vector<T> v(static_cast<std::size_t>(size));
  for (index_t i = 0; i < size; ++i) {
    v[std::size_t(i)] = T((i * 7 + (i / 5) * 3) % 5) - T(2);
    if (specials && i % 97 == 13) v[std::size_t(i)] = -std::numeric_limits<T>::infinity();
    if (specials && i % 211 == 50) v[std::size_t(i)] = std::numeric_limits<T>::quiet_NaN();
  }
  return v;
}

/// Host reference of one max window (tessera's host rule: a later cell wins only when strictly greater; the
/// identity is -inf, so NaN never wins; the winner's index defaults to the first real cell).
template <class T>
T host_window_max(const std::vector<T>& x, const layout& L, const config& c, index_t n, index_t ch, index_t oh, index_t ow,
                  index_t& arg) {
  T acc = -std::numeric_limits<T>::infinity();
  arg = -1;
  for (int kh = 0; kh < c.k; ++kh)
    for (int kw = 0; kw < c.k; ++kw) {
      const index_t h = oh * c.s - c.p + kh, w = ow * c.s - c.p + kw;
      if (h < 0 || h >= c.H || w < 0 || w >= c.W) continue;
      const T v = x[std::size_t(n * L.sn + ch * L.sc + h * L.sh + w * L.sw)];
      if (arg < 0) arg = h * c.W + w;
      if (acc < v) {
        acc = v;
        arg = h * c.W + w;
      }
    }
  return acc;
}

template <class T>
bool same(T a, T b) {
  return (std::isnan(double(a)) && std::isnan(double(b))) || a == b;
}

}  // namespace

TEMPLATE_TEST_CASE("cuda_max_pool2d: values, winners and gradients", "[cuda][pool]", float, double) {
  using T = TestType;
  stream_t st;
  for (const auto& c : configs)
    for (int kind = 0; kind < 3; ++kind) {
      const layout L = make_layout(c, kind);
      const auto x = pool_values<T>(L.size, true);
      const index_t OH = c.OH(), OW = c.OW(), ny = c.N * c.C * OH * OW, nx = c.N * c.C * c.H * c.W;
      dbuf<T> dx(x), dy{std::size_t(ny)};
      dbuf<std::int32_t> darg{std::size_t(ny)};
      ts::cuda_max_pool2d<T>(st.s, dx.p, c.N, c.C, c.H, c.W, L.sn, L.sc, L.sh, L.sw, c.k, c.s, c.p, dy.p, darg.p);
      const auto y = dy.get(st.s);
      const auto arg = darg.get(st.s);
      // dy: distinct values; host gradient by scatter in window order.
      std::vector<T> g(static_cast<std::size_t>(ny));
      for (index_t i = 0; i < ny; ++i) g[std::size_t(i)] = T(0.5) + T(i % 13) * T(0.25);
      std::vector<double> gx(std::size_t(nx), 0.0);
      INFO(c.str() << " layout " << kind);
      for (index_t n = 0; n < c.N; ++n)
        for (index_t ch = 0; ch < c.C; ++ch)
          for (index_t oh = 0; oh < OH; ++oh)
            for (index_t ow = 0; ow < OW; ++ow) {
              index_t a;
              const T want = host_window_max(x, L, c, n, ch, oh, ow, a);
              const std::size_t i = std::size_t(((n * c.C + ch) * OH + oh) * OW + ow);
              INFO("y[" << n << "][" << ch << "][" << oh << "][" << ow << "]");
              REQUIRE(same(y[i], want));
              REQUIRE(arg[i] == a);
              gx[std::size_t((n * c.C + ch) * c.H * c.W + a)] += double(g[i]);
            }
      dbuf<T> ddy(g);
      const auto prev = pool_values<T>(nx, false);
      for (int variant = 0; variant < 4; ++variant) {  // argmax stored / recomputed x overwrite / accumulate
        const bool use_arg = variant & 1, acc = variant & 2;
        dbuf<T> ddx{std::size_t(nx)};
        if (acc) ddx.put(prev);
        ts::cuda_max_pool2d_backward<T>(st.s, use_arg ? nullptr : dx.p, c.N, c.C, c.H, c.W, L.sn, L.sc, L.sh, L.sw, c.k,
                                        c.s, c.p, ddy.p, ddx.p, use_arg ? darg.p : nullptr, acc);
        const auto got = ddx.get(st.s);
        for (index_t i = 0; i < nx; ++i) {
          const double want = gx[std::size_t(i)] + (acc ? double(prev[std::size_t(i)]) : 0.0);
          INFO("dx[" << i << "] argmax " << use_arg << " accumulate " << acc);
          REQUIRE(double(got[std::size_t(i)]) == Approx(want).margin(1e-12));
        }
      }
    }
}

TEMPLATE_TEST_CASE("cuda_avg_pool2d: values and gradients (padding counts as zeros)", "[cuda][pool]", float, double) {
  using T = TestType;
  stream_t st;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  for (const auto& c : configs)
    for (int kind = 0; kind < 3; ++kind) {
      const layout L = make_layout(c, kind);
      std::vector<T> x(static_cast<std::size_t>(L.size));
      for (index_t i = 0; i < L.size; ++i) x[std::size_t(i)] = T(std::sin(0.37 * double(i)) * 3.0);
      const index_t OH = c.OH(), OW = c.OW(), ny = c.N * c.C * OH * OW, nx = c.N * c.C * c.H * c.W;
      dbuf<T> dx(x), dy{std::size_t(ny)};
      ts::cuda_avg_pool2d<T>(st.s, dx.p, c.N, c.C, c.H, c.W, L.sn, L.sc, L.sh, L.sw, c.k, c.s, c.p, dy.p);
      const auto y = dy.get(st.s);
      std::vector<T> g(static_cast<std::size_t>(ny));
      for (index_t i = 0; i < ny; ++i) g[std::size_t(i)] = T(std::cos(0.11 * double(i)));
      std::vector<double> gx(std::size_t(nx), 0.0);
      INFO(c.str() << " layout " << kind);
      for (index_t n = 0; n < c.N; ++n)
        for (index_t ch = 0; ch < c.C; ++ch)
          for (index_t oh = 0; oh < OH; ++oh)
            for (index_t ow = 0; ow < OW; ++ow) {
              const std::size_t i = std::size_t(((n * c.C + ch) * OH + oh) * OW + ow);
              double sum = 0;
              for (int kh = 0; kh < c.k; ++kh)
                for (int kw = 0; kw < c.k; ++kw) {
                  const index_t h = oh * c.s - c.p + kh, w = ow * c.s - c.p + kw;
                  if (h < 0 || h >= c.H || w < 0 || w >= c.W) continue;
                  sum += double(x[std::size_t(n * L.sn + ch * L.sc + h * L.sh + w * L.sw)]);
                  gx[std::size_t(((n * c.C + ch) * c.H + h) * c.W + w)] += double(g[i]) / double(c.k * c.k);
                }
              INFO("y[" << n << "][" << ch << "][" << oh << "][" << ow << "]");
              REQUIRE(double(y[i]) == Approx(sum / double(c.k * c.k)).margin(tol * 3.0 * c.k * c.k));
            }
      dbuf<T> ddy(g);
      std::vector<T> prev(static_cast<std::size_t>(nx));
      for (index_t i = 0; i < nx; ++i) prev[std::size_t(i)] = T(i % 7) - T(3);
      for (bool acc : {false, true}) {
        dbuf<T> ddx{std::size_t(nx)};
        if (acc) ddx.put(prev);
        ts::cuda_avg_pool2d_backward<T>(st.s, c.N, c.C, c.H, c.W, c.k, c.s, c.p, ddy.p, ddx.p, acc);
        const auto got = ddx.get(st.s);
        for (index_t i = 0; i < nx; ++i) {
          const double want = gx[std::size_t(i)] + (acc ? double(prev[std::size_t(i)]) : 0.0);
          INFO("dx[" << i << "] accumulate " << acc);
          REQUIRE(double(got[std::size_t(i)]) == Approx(want).margin(tol * 8.0 * c.k * c.k));
        }
      }
    }
}

TEST_CASE("cuda_max_pool2d: a window of -inf still has a winner: its first cell", "[cuda][pool]") {
  stream_t st;
  const float inf = std::numeric_limits<float>::infinity();
  dbuf<float> dx(std::vector<float>{-inf, -inf, -inf, -inf}), dy(1), dg(std::vector<float>{2.0f}), ddx(4);
  dbuf<std::int32_t> arg(1);
  ts::cuda_max_pool2d<float>(st.s, dx.p, 1, 1, 2, 2, 4, 4, 2, 1, 2, 2, 0, dy.p, arg.p);
  CHECK(dy.get(st.s)[0] == -inf);
  CHECK(arg.get(st.s)[0] == 0);
  ts::cuda_max_pool2d_backward<float>(st.s, dx.p, 1, 1, 2, 2, 4, 4, 2, 1, 2, 2, 0, dg.p, ddx.p);
  CHECK(ddx.get(st.s) == std::vector<float>{2.0f, 0.0f, 0.0f, 0.0f});
}

TEST_CASE("cuda pooling: bad arguments throw", "[cuda][pool]") {
  stream_t st;
  dbuf<float> d(256);
  CHECK_THROWS_AS(ts::cuda_max_pool2d<float>(st.s, d.p, 1, 1, 4, 4, 16, 16, 4, 1, 3, 1, 2, d.p), ts::shape_error);  // pad > k/2
  CHECK_THROWS_AS(ts::cuda_avg_pool2d<float>(st.s, d.p, 1, 1, 2, 2, 4, 4, 2, 1, 3, 1, 0, d.p), ts::shape_error);  // too small
  CHECK_THROWS_AS(ts::cuda_max_pool2d_backward<float>(st.s, nullptr, 1, 1, 4, 4, 16, 16, 4, 1, 2, 2, 0, d.p, d.p),
                  std::invalid_argument);  // neither x nor argmax
}
