// matmul, conv2d and pooling as expression nodes on the cuda policy, against host loops: plain products, transposed
// and batched operands, trees that match a library epilogue (relu(matmul + bias), relu(conv2d + bias)) and trees
// that run as one elementwise kernel after the product. Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <cstdio>
#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using ts::index_t;
using ts::Shape;


namespace {
template <class T, int R>
ts::Tensor<T, ts::dyn_shape_t<R>> host(const ts::dims_t<R>& d, int salt) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(((i * 37 + salt * 11) % 23) - 11) / T(16);
  return t;
}
template <class T>
double tol() { return std::is_same_v<T, float> ? 1e-4 : 1e-12; }
}  // namespace

TEMPLATE_TEST_CASE("matmul on the device matches a host loop, with and without epilogues", "[cuda][matmul]", float, double) {
  using T = TestType;
  for (index_t m : {1, 7, 65})
    for (index_t k : {1, 33})
      for (index_t n : {1, 7, 127}) {
        auto a = host<T, 2>({m, k}, 1);
        auto bt = host<T, 2>({n, k}, 2);  // b = transpose(bt): a transposed operand read in place
        auto bias = host<T, 1>({n}, 3);
        auto da = ts::to<ts::cuda>(a);
        auto dbt = ts::to<ts::cuda>(bt);
        auto dbias = ts::to<ts::cuda>(bias);
        ts::Tensor<T, ts::dyn_shape_t<2>, ts::cuda> y1(m, n), y2(m, n), y3(m, n);
        y1 = ts::matmul(da, ts::transpose(dbt));
        y2 = ts::relu(ts::matmul(da, ts::transpose(dbt)) + dbias);           // cuBLASLt's bias+ReLU epilogue
        y3 = ts::tanh(T(0.5) * ts::matmul(da, ts::transpose(dbt))) - dbias;  // product, then one elementwise kernel
        auto h1 = ts::to<ts::cpu>(y1), h2 = ts::to<ts::cpu>(y2), h3 = ts::to<ts::cpu>(y3);
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j) {
            double s = 0;
            for (index_t q = 0; q < k; ++q) s += double(a(i, q)) * double(bt(j, q));
            REQUIRE(double(h1(i, j)) == Approx(s).margin(tol<T>()));
            REQUIRE(double(h2(i, j)) == Approx(std::max(0.0, s + double(bias(j)))).margin(tol<T>()));
            REQUIRE(double(h3(i, j)) == Approx(std::tanh(0.5 * s) - double(bias(j))).margin(10 * tol<T>()));
          }
      }
}

TEST_CASE("batched matmul on the device", "[cuda][matmul]") {
  auto a = host<float, 3>({3, 5, 4}, 4);
  auto b = host<float, 2>({4, 6}, 5);  // broadcast over the batch
  auto da = ts::to<ts::cuda>(a);
  auto db = ts::to<ts::cuda>(b);
  ts::Tensor<float, ts::dyn_shape_t<3>, ts::cuda> y(3, 5, 6);
  y = ts::matmul(da, db);
  auto h = ts::to<ts::cpu>(y);
  for (index_t q = 0; q < 3; ++q)
    for (index_t i = 0; i < 5; ++i)
      for (index_t j = 0; j < 6; ++j) {
        double s = 0;
        for (index_t t = 0; t < 4; ++t) s += double(a(q, i, t)) * double(b(t, j));
        REQUIRE(h(q, i, j) == Approx(s).margin(1e-4));
      }
}

TEMPLATE_TEST_CASE("conv2d and pooling on the device match the host kernels", "[cuda][conv]", float, double) {
  using T = TestType;
  auto x = host<T, 4>({2, 3, 9, 9}, 6);
  auto w = host<T, 4>({5, 3, 3, 3}, 7);
  auto b = host<T, 1>({5}, 8);
  auto bias3 = ts::reshape<ts::dyn_shape_t<3>>(b, {5, 1, 1});
  ts::Tensor<T, ts::dyn_shape_t<4>> want_fused = ts::relu(ts::conv2d(x, w, {.padding = 1}) + bias3);
  ts::Tensor<T, ts::dyn_shape_t<4>> want_tree = ts::sigmoid(ts::conv2d(x, w, {.stride = 2}) * T(0.5));
  ts::Tensor<T, ts::dyn_shape_t<4>> want_pool = ts::max_pool2d<2>(x);
  ts::Tensor<T, ts::dyn_shape_t<4>> want_avg = ts::avg_pool2d<3, 2, 1>(x);
  auto dx = ts::to<ts::cuda>(x);
  auto dw = ts::to<ts::cuda>(w);
  auto dbias = ts::to<ts::cuda>(b);
  auto dbias3 = ts::reshape<ts::dyn_shape_t<3>>(dbias, {5, 1, 1});
  ts::Tensor<T, ts::dyn_shape_t<4>, ts::cuda> y1(want_fused.dims()), y2(want_tree.dims()), y3(want_pool.dims()), y4(want_avg.dims());
  y1 = ts::relu(ts::conv2d(dx, dw, {.padding = 1}) + dbias3);  // cuDNN's fused bias + ReLU
  y2 = ts::sigmoid(ts::conv2d(dx, dw, {.stride = 2}) * T(0.5));
  y3 = ts::max_pool2d<2>(dx);
  y4 = ts::avg_pool2d<3, 2, 1>(dx);
  auto check = [](const auto& dev, const auto& want) {
    auto h = ts::to<ts::cpu>(dev);
    for (index_t i = 0; i < h.size(); ++i) REQUIRE(double(h.data()[i]) == Approx(double(want.data()[i])).margin(tol<T>()));
  };
  check(y1, want_fused);
  check(y2, want_tree);
  check(y3, want_pool);
  check(y4, want_avg);
}
