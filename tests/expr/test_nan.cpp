// NaN propagation in the forward expressions, as PyTorch: relu(NaN), maximum/minimum with a NaN on either side and
// clamp(NaN) are NaN; max/min reductions are NaN when any reduced element is; argmax gives the first NaN's index;
// max_pool2d is NaN in every window holding one; the fused ReLU epilogues of a GEMM and a convolution keep NaN.
// References are plain loops that test std::isnan explicitly. Sizes 1, 7, 33 (and one large enough for two threads),
// NaN first, in the middle and last, for float, double and bfloat16 under cpu and cpu_threads (1 and 2 threads).
#include <cmath>
#include <limits>
#include <vector>

#include "test_support.hpp"

using ts::dyn;
using ts::index_t;
using ts::Shape;
using ts::Tensor;
using tst::TP;

namespace {

using nan_pairs = std::tuple<TP<float, ts::cpu>, TP<double, ts::cpu>, TP<tst::bf16, ts::cpu>, TP<float, ts::cpu_threads>,
                             TP<double, ts::cpu_threads>, TP<tst::bf16, ts::cpu_threads>>;

template <class T, class P>
using T1 = Tensor<T, Shape<dyn>, P>;
template <class T, class P>
using T2 = Tensor<T, Shape<dyn, dyn>, P>;
template <class T, class P>
using T4 = Tensor<T, Shape<dyn, dyn, dyn, dyn>, P>;

const std::vector<index_t> sizes = {1, 7, 33, 40001};

template <class T>
T qnan() {
  return T(std::numeric_limits<float>::quiet_NaN());
}
template <class T>
bool isnan_(T v) {
  return std::isnan(double(v));
}
/// Positions for the NaN in a run of n: first, middle, last (deduplicated for n = 1).
std::vector<index_t> nan_positions(index_t n) {
  std::vector<index_t> p = {0};
  if (n > 2) p.push_back(n / 2);
  if (n > 1) p.push_back(n - 1);
  return p;
}
/// Values in [-5.5, 5.5] with a NaN at `at` (none when at < 0).
template <class T, class X>
void fill(X& x, index_t at, int salt = 0) {
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = tst::small<T>(i, salt);
  if (at >= 0) x.data()[at] = qnan<T>();
}
/// a and b agree, NaN for NaN.
template <class A, class B>
bool same(A a, B b) {
  return isnan_(a) ? isnan_(b) : (!isnan_(b) && double(a) == double(b));
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("relu, maximum, minimum and clamp propagate NaN", "[nan][elementwise]", nan_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t n : sizes)
      for (index_t at : nan_positions(n)) {
        INFO("n=" << n << " NaN at " << at << " threads " << nt);
        T1<T, P> x(n), y(n);
        fill<T>(x, at);
        fill<T>(y, -1, 3);
        T1<T, P> r = ts::relu(x), mxy = ts::maximum(x, y), myx = ts::maximum(y, x), nxy = ts::minimum(x, y),
                 nyx = ts::minimum(y, x), c = ts::clamp(x, T(-1), T(1)), ms = ts::maximum(x, T(0));
        for (index_t i = 0; i < n; ++i) {
          const double a = double(x.data()[i]), b = double(y.data()[i]);
          const bool na = std::isnan(a);
          CHECK(same(r.data()[i], na ? a : (a > 0 ? a : 0.0)));
          CHECK(same(mxy.data()[i], na ? a : (a > b ? a : b)));
          CHECK(same(myx.data()[i], na ? a : (a > b ? a : b)));
          CHECK(same(nxy.data()[i], na ? a : (a < b ? a : b)));
          CHECK(same(nyx.data()[i], na ? a : (a < b ? a : b)));
          CHECK(same(c.data()[i], na ? a : (a < -1 ? -1.0 : a > 1 ? 1.0 : a)));
          CHECK(same(ms.data()[i], na ? a : (a > 0 ? a : 0.0)));
        }
      }
  }
}

TEMPLATE_LIST_TEST_CASE("max and min reductions are NaN when any element is; argmax gives the first NaN", "[nan][reduce]",
                        nan_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using A = ts::compute_t<T>;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t n : sizes)
      for (index_t at : nan_positions(n)) {
        INFO("n=" << n << " NaN at " << at << " threads " << nt);
        T1<T, P> x(n);
        fill<T>(x, at);
        Tensor<A, Shape<>, P> mx = ts::max(x), mn = ts::min(x);
        Tensor<std::int64_t, Shape<>, P> am = ts::argmax(x);
        CHECK(isnan_(mx()));
        CHECK(isnan_(mn()));
        index_t first = -1;  // the reference: the first NaN
        for (index_t i = 0; i < n && first < 0; ++i)
          if (std::isnan(double(x.data()[i]))) first = i;
        CHECK(am() == first);
      }
    // rows [R, C]: reduce the inner axis (one output per row) and the outer axis (one per column); NaN in some rows
    for (index_t rows : {1, 7, 33})
      for (index_t cols : {1, 7, 33, 1201}) {
        INFO("rows=" << rows << " cols=" << cols << " threads " << nt);
        T2<T, P> x(rows, cols);
        fill<T>(x, -1);
        for (index_t r = 0; r < rows; r += 3) x.data()[r * cols + (r * 5) % cols] = qnan<T>();  // every third row
        if (cols > 1) x.data()[cols - 1] = qnan<T>();                                            // row 0 twice
        T1<A, P> rmax = ts::max<1>(x), rmin = ts::min<1>(x), cmax = ts::max<0>(x), cmin = ts::min<0>(x);
        T1<std::int64_t, P> ram = ts::argmax<1>(x), cam = ts::argmax<0>(x);
        for (index_t r = 0; r < rows; ++r) {
          double m = -INFINITY, l = INFINITY;
          index_t best = 0;
          bool seen_nan = false;
          for (index_t c = 0; c < cols; ++c) {
            const double v = double(x.data()[r * cols + c]);
            if (std::isnan(v)) {
              if (!seen_nan) best = c;
              seen_nan = true;
              m = l = v;
            } else if (!seen_nan) {
              if (v > m) { m = v; best = c; }
              if (v < l) l = v;
            }
          }
          CHECK(same(rmax.data()[r], m));
          CHECK(same(rmin.data()[r], l));
          CHECK(ram.data()[r] == best);
        }
        for (index_t c = 0; c < cols; ++c) {
          double m = -INFINITY, l = INFINITY;
          index_t best = 0;
          bool seen_nan = false;
          for (index_t r = 0; r < rows; ++r) {
            const double v = double(x.data()[r * cols + c]);
            if (std::isnan(v)) {
              if (!seen_nan) best = r;
              seen_nan = true;
              m = l = v;
            } else if (!seen_nan) {
              if (v > m) { m = v; best = r; }
              if (v < l) l = v;
            }
          }
          CHECK(same(cmax.data()[c], m));
          CHECK(same(cmin.data()[c], l));
          CHECK(cam.data()[c] == best);
        }
      }
  }
}

namespace {
/// Max over each K x K window (stride S, padding Pd) of plane `pl` of x, NaN when any cell of the window is NaN.
template <class X>
double pool_ref(const X& x, index_t pl, index_t H, index_t W, index_t oh, index_t ow, int K, int S, int Pd) {
  double m = -INFINITY;
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      const index_t i = oh * S - Pd + kh, j = ow * S - Pd + kw;
      if (i < 0 || i >= H || j < 0 || j >= W) continue;
      const double v = double(x.data()[(pl * H + i) * W + j]);
      if (std::isnan(v)) return v;
      if (v > m) m = v;
    }
  return m;
}

template <int K, int S, int Pd, class T, class P>
void check_pool(index_t H, index_t W) {
  const index_t planes = 3, OH = (H + 2 * Pd - K) / S + 1, OW = (W + 2 * Pd - K) / S + 1;
  for (index_t at : nan_positions(H * W)) {
    INFO("K=" << K << " S=" << S << " P=" << Pd << " H=" << H << " W=" << W << " NaN at " << at);
    T4<T, P> x(1, planes, H, W);
    fill<T>(x, -1);
    x.data()[at] = qnan<T>();                      // plane 0
    x.data()[H * W + (at + 1) % (H * W)] = qnan<T>();  // plane 1, shifted
    T4<T, P> y = ts::max_pool2d<K, S, Pd>(x);
    for (index_t pl = 0; pl < planes; ++pl)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow)
          CHECK(same(y.data()[(pl * OH + oh) * OW + ow], pool_ref(x, pl, H, W, oh, ow, K, S, Pd)));
  }
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("max_pool2d is NaN in every window holding a NaN", "[nan][pool]", nan_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t h : {2, 7, 33}) {
      check_pool<2, 2, 0, T, P>(h, h);  // float: the AVX-512 2x2 path (rows of 1, 3 and 16 outputs)
      check_pool<2, 2, 0, T, P>(h, 34);
      check_pool<3, 2, 1, T, P>(h, 7);
    }
  }
}

namespace {
using product_pairs = std::tuple<TP<float, ts::cpu>, TP<double, ts::cpu>, TP<float, ts::cpu_threads>, TP<double, ts::cpu_threads>>;
}

// (matmul and conv2d take float and double)
TEMPLATE_LIST_TEST_CASE("fused epilogues keep NaN: relu(matmul(a, w) + b) and relu(conv2d(x, w))", "[nan][fusion]",
                        product_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  for (int nt : tst::thread_counts<P>()) {
    tst::set_threads(nt);
    for (index_t m : {1, 7, 33})
      for (index_t at : nan_positions(m * 5)) {
        INFO("m=" << m << " NaN at " << at << " threads " << nt);
        const index_t k = 5, n = 33;
        T2<T, P> a(m, k), w(k, n);
        T1<T, P> b(n);
        fill<T>(a, at);
        fill<T>(w, -1, 1);
        fill<T>(b, -1, 2);
        T2<T, P> y = ts::relu(ts::matmul(a, w) + b);
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j) {
            double s = double(b.data()[j]);
            for (index_t q = 0; q < k; ++q) s += double(a.data()[i * k + q]) * double(w.data()[q * n + j]);
            const bool has_nan = std::isnan(s);
            CHECK(isnan_(y.data()[i * n + j]) == has_nan);  // the row holding the NaN, and only it
            if (!has_nan) CHECK(double(y.data()[i * n + j]) >= 0.0);
          }
      }
    // one NaN pixel: every output window touching it is NaN, and only those
    for (index_t h : {7, 12}) {
      const index_t C = 2, K = 3, OH = h;  // 3x3, padding 1
      T4<T, P> x(1, C, h, h), w(K, C, 3, 3);
      fill<T>(x, -1);
      fill<T>(w, -1, 4);
      const index_t pi = h / 2, pj = 1;
      x.data()[(1 * h + pi) * h + pj] = qnan<T>();  // channel 1
      T4<T, P> y = ts::relu(ts::conv2d(x, w, {.padding = 1}));
      for (index_t kk = 0; kk < K; ++kk)
        for (index_t i = 0; i < OH; ++i)
          for (index_t j = 0; j < OH; ++j) {
            const bool touches = std::abs(double(i - pi)) <= 1 && std::abs(double(j - pj)) <= 1;
            INFO("h=" << h << " k=" << kk << " i=" << i << " j=" << j);
            CHECK(isnan_(y.data()[(kk * OH + i) * OH + j]) == touches);
          }
    }
  }
}
