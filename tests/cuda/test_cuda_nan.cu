// NaN on the device propagates as on the host and in PyTorch: relu through the library epilogues (cuBLASLt's
// bias+ReLU, cuDNN's fused bias+ReLU) and our own kernels, maximum from either side, max reductions, max-pool,
// log_softmax of large logits. The host results are the reference (tests/expr/test_nan.cpp checks them against
// plain loops); each case also counts the NaNs a plain rule expects. Without a GPU: prints why and exits 77.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <limits>
#include <tessera/autodiff/ops.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::index_t;

namespace {
template <class T, int R>
ts::Tensor<T, ts::dyn_shape_t<R>> host(const ts::dims_t<R>& d, int salt) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(((i * 37 + salt * 11) % 23) - 11) / T(16);
  return t;
}
/// Same NaN positions, and close values elsewhere; returns the number of NaNs.
template <class TD, class TH>
index_t same_nans(const TD& dev, const TH& want) {
  const auto h = ts::to<ts::cpu>(dev);
  REQUIRE(h.size() == want.size());
  index_t nans = 0;
  for (index_t i = 0; i < h.size(); ++i) {
    const double a = double(h.data()[i]), b = double(want.data()[i]);
    REQUIRE(std::isnan(a) == std::isnan(b));
    if (std::isnan(b)) ++nans;
    else REQUIRE(a == Approx(b).margin(1e-4));
  }
  return nans;
}
}  // namespace

TEST_CASE("relu(matmul + bias) on the device: a NaN in A makes its row NaN", "[cuda][nan]") {
  const index_t m = 7, k = 33, n = 65;
  auto a = host<float, 2>({m, k}, 1);
  auto w = host<float, 2>({k, n}, 2);
  auto b = host<float, 1>({n}, 3);
  a(3, 5) = std::numeric_limits<float>::quiet_NaN();
  ts::Tensor<float, ts::dyn_shape_t<2>> want = ts::relu(ts::matmul(a, w) + b);
  auto da = ts::to<ts::cuda>(a);
  auto dw = ts::to<ts::cuda>(w);
  auto db = ts::to<ts::cuda>(b);
  ts::Tensor<float, ts::dyn_shape_t<2>, ts::cuda> y = ts::relu(ts::matmul(da, dw) + db);  // cuBLASLt epilogue
  CHECK(same_nans(y, want) == n);
  ts::Tensor<float, ts::dyn_shape_t<2>, ts::cuda> y2 = ts::relu(ts::matmul(da, dw) * 2.0f);  // our elementwise kernel
  CHECK(same_nans(y2, ts::Tensor<float, ts::dyn_shape_t<2>>(ts::relu(ts::matmul(a, w) * 2.0f))) == n);
}

TEST_CASE("relu(conv2d + bias) and max-pool on the device keep a NaN pixel", "[cuda][nan]") {
  auto x = host<float, 4>({1, 2, 9, 9}, 4);
  auto w = host<float, 4>({3, 2, 3, 3}, 5);
  auto b = host<float, 1>({3}, 6);
  x(0, 1, 4, 4) = std::numeric_limits<float>::quiet_NaN();
  auto bias3 = ts::reshape<ts::dyn_shape_t<3>>(b, {3, 1, 1});
  ts::Tensor<float, ts::dyn_shape_t<4>> want = ts::relu(ts::conv2d(x, w, {.padding = 1}) + bias3);
  ts::Tensor<float, ts::dyn_shape_t<4>> want_pool = ts::max_pool2d<2>(x);
  auto dx = ts::to<ts::cuda>(x);
  auto dw = ts::to<ts::cuda>(w);
  auto db = ts::to<ts::cuda>(b);
  auto dbias3 = ts::reshape<ts::dyn_shape_t<3>>(db, {3, 1, 1});
  ts::Tensor<float, ts::dyn_shape_t<4>, ts::cuda> y = ts::relu(ts::conv2d(dx, dw, {.padding = 1}) + dbias3);  // cuDNN
  CHECK(same_nans(y, want) == 3 * 9);  // every output channel, the 3 x 3 windows around the pixel
  ts::Tensor<float, ts::dyn_shape_t<4>, ts::cuda> p = ts::max_pool2d<2>(dx);
  CHECK(same_nans(p, want_pool) == 1);
}

TEST_CASE("maximum and max reductions on the device are NaN from either side", "[cuda][nan]") {
  auto x = host<float, 2>({5, 33}, 7);
  auto y = host<float, 2>({5, 33}, 8);
  x(1, 0) = std::numeric_limits<float>::quiet_NaN();
  y(2, 32) = std::numeric_limits<float>::quiet_NaN();
  auto dx = ts::to<ts::cuda>(x);
  auto dy = ts::to<ts::cuda>(y);
  ts::Tensor<float, ts::dyn_shape_t<2>, ts::cuda> m1 = ts::maximum(dx, dy), m2 = ts::maximum(dy, dx);
  CHECK(same_nans(m1, ts::Tensor<float, ts::dyn_shape_t<2>>(ts::maximum(x, y))) == 2);
  CHECK(same_nans(m2, ts::Tensor<float, ts::dyn_shape_t<2>>(ts::maximum(y, x))) == 2);
  ts::Tensor<float, ts::dyn_shape_t<1>, ts::cuda> r = ts::max<1>(dx);
  CHECK(same_nans(r, ts::Tensor<float, ts::dyn_shape_t<1>>(ts::max<1>(x))) == 1);
}

TEST_CASE("log_softmax of large logits on the device is exact in float", "[cuda][softmax]") {
  ts::Tensor<float, ts::dyn_shape_t<2>> z(2, 10);
  z = -100.0f;  // all equal: -log(10) exactly, whatever their size
  auto v = ad::log_softmax(ad::constant(ts::to<ts::cuda>(z)));
  const auto h = ts::to<ts::cpu>(v.value());
  for (index_t i = 0; i < h.size(); ++i) CHECK(h.data()[i] == float(-std::log(10.0)));
}
