// Convolution and pooling options on the cuda policy against the same operations on cpu_threads: conv2d with
// per-axis stride, padding and dilation and non-square kernels (cuDNN), conv1d, max / avg pooling with per-axis
// windows, dilation, ceil_mode and count_include_pad (kernels/cuda/pool.hpp), adaptive average pooling
// (kernels/cuda/adaptive_pool.hpp): forward values and the gradients of every input (loss = sum(y * c) for fixed c).
// float; values compared to 1e-4 relative. Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"
#include "cuda_autodiff_support.hpp"

#include <cmath>
#include <string>
#include <tessera/autodiff/adaptive_pool_ops.hpp>
#include <tessera/autodiff/conv1d_ops.hpp>
#include <tessera/autodiff/nn_ops.hpp>
#include <tessera/tessera.hpp>
#include <tuple>
#include <utility>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;
using ts::pool2d_options;

namespace {
using cuda_test::htensor;
using cuda_test::values;
using cuda_test::leaf;
/// f on cpu_threads and on cuda with copies of the same inputs; compares y and every input's gradient.
template <class F, class... H>
void check_op(const std::string& name, F&& f, const H&... inputs) {
  auto run = [&](auto pol) {
    using P = decltype(pol);
    auto vars = std::make_tuple(leaf<P>(inputs)...);
    auto y = std::apply(f, vars);
    constexpr int RO = decltype(y)::rank;
    auto c = leaf<P>(values<RO>(y.dims(), 99), false);
    ad::sum(y * c).backward();
    auto grads = std::apply([](auto&... v) { return std::make_tuple(ts::to<ts::cpu>(v.grad())...); }, vars);
    return std::make_pair(ts::to<ts::cpu>(y.value()), std::move(grads));
  };
  const auto host = run(ts::cpu_threads{});
  const auto dev = run(ts::cuda{});
  cuda_test::require_close(host.first, dev.first, name + ": forward");
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (cuda_test::require_close(std::get<I>(host.second), std::get<I>(dev.second), name + ": gradient of input " + std::to_string(I)),
     ...);
  }(std::index_sequence_for<H...>{});
}
// (at namespace scope: nvcc crashes on function-local constexpr options used as template arguments in lambdas)
constexpr pool2d_options m1{.kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 0}};
constexpr pool2d_options m2{.kernel = 3, .stride = 2, .padding = 1, .dilation = {1, 2}, .ceil_mode = true};
constexpr pool2d_options a1{.kernel = 3, .stride = 2, .padding = 1, .ceil_mode = true};
constexpr pool2d_options a2{.kernel = {2, 3}, .stride = 2, .padding = 1, .ceil_mode = true, .count_include_pad = false};
}  // namespace

TEST_CASE("cuda: conv2d with per-axis options and non-square kernels", "[cuda][conv][options]") {
  struct cfg {
    index_t n, c, h, w, k, r, s;
    ts::conv2d_options o;
  };
  for (auto t : {cfg{2, 3, 7, 9, 4, 3, 1, {.stride = {2, 1}, .padding = {1, 0}}},
                 cfg{1, 4, 9, 8, 4, 2, 3, {.stride = {1, 2}, .padding = {0, 2}, .dilation = {2, 1}, .groups = 2}},
                 cfg{1, 2, 1, 33, 3, 1, 5, {.stride = {1, 3}, .padding = {0, 2}, .dilation = {1, 2}}}}) {
    const std::string name = "conv2d " + std::to_string(t.h) + "x" + std::to_string(t.w) + " kernel " + std::to_string(t.r) + "x" +
                             std::to_string(t.s);
    const auto x = values<4>({t.n, t.c, t.h, t.w}, 1), w = values<4>({t.k, t.c / t.o.groups, t.r, t.s}, 2);
    const auto b = values<1>({t.k}, 3);
    const auto o = t.o;
    check_op(name, [o](const auto& x, const auto& w, const auto& b) { return ad::conv2d(x, w, b, o, ad::activation::tanh); }, x, w, b);
  }
  const auto x = values<3>({2, 4, 33}, 4), w = values<3>({6, 2, 3}, 5);
  const auto b = values<1>({6}, 6);
  check_op("conv1d", [](const auto& x, const auto& w, const auto& b) {
    return ad::conv1d(x, w, b, ts::conv1d_options{.stride = 2, .padding = 1, .groups = 2});
  }, x, w, b);
}

TEST_CASE("cuda: pooling with per-axis windows, dilation, ceil_mode and count_include_pad", "[cuda][pool][options]") {
  htensor<4> x(2, 3, 7, 9);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 37) % 101) / 50.0f - 1.0f;  // distinct within windows
  check_op("max m1", [](const auto& x) { return ad::max_pool2d<m1>(x); }, x);
  check_op("max m2", [](const auto& x) { return ad::max_pool2d<m2>(x); }, x);
  check_op("avg a1", [](const auto& x) { return ad::avg_pool2d<a1>(x); }, x);
  check_op("avg a2", [](const auto& x) { return ad::avg_pool2d<a2>(x); }, x);
  // the expression path (planner -> backend<cuda>::pool2d) on a strided view
  auto dx = ts::to<ts::cuda>(x);
  ts::Tensor<float, ts::dyn_shape_t<4>, ts::cuda> y = ts::avg_pool2d<a2>(ts::permute<0, 1, 3, 2>(dx));
  htensor<4> want = ts::avg_pool2d<a2>(ts::permute<0, 1, 3, 2>(x));
  cuda_test::require_close(want, y, "avg a2 on a transposed view");
}

TEST_CASE("cuda: adaptive average pooling", "[cuda][pool][adaptive]") {
  for (auto [h, w, oh, ow] : {std::tuple<index_t, index_t, index_t, index_t>{7, 7, 1, 1}, {7, 33, 3, 5}, {5, 6, 7, 9}, {1, 7, 1, 3}}) {
    const auto x = values<4>({2, 3, h, w}, 7);
    const index_t OH = oh, OW = ow;
    check_op("adaptive " + std::to_string(h) + "x" + std::to_string(w) + " -> " + std::to_string(oh) + "x" + std::to_string(ow),
             [OH, OW](const auto& x) { return ad::adaptive_avg_pool2d(x, OH, OW); }, x);
  }
}
