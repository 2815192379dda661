// Views, batched matmul, softmax along any axis, cat / stack / split / index_select of Vars on the cuda policy
// against the same operations on cpu_threads: forward values and the gradients of every input (loss = sum(y * c) for
// fixed c). float; values compared to 1e-4 relative. Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"
#include "cuda_autodiff_support.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <tessera/autodiff/index_ops.hpp>
#include <tessera/tessera.hpp>
#include <tuple>
#include <utility>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {
using cuda_test::htensor;
using cuda_test::values;
using cuda_test::leaf;
/// f (a generic lambda taking the policy's Vars) on cpu_threads and on cuda with the same inputs; compares the output
/// and every input's gradient of sum(y * c).
template <class F, class... H>
void check_op(const std::string& name, F&& f, const H&... inputs) {
  auto run = [&](auto pol) {
    using P = decltype(pol);
    auto vars = std::make_tuple(leaf<P>(inputs)...);
    auto y = std::apply([&](const auto&... v) { return f(pol, v...); }, vars);
    constexpr int RO = decltype(y)::rank;
    auto c = leaf<P>(values<RO>(y.dims(), 99), false);
    auto loss = ad::sum(y * c);
    loss.backward();
    auto grads = std::apply([](auto&... v) { return std::make_tuple(ts::to<ts::cpu>(v.grad())...); }, vars);
    return std::make_pair(ts::to<ts::cpu>(y.value()), std::move(grads));
  };
  const auto host = run(ts::cpu_threads{});
  const auto dev = run(ts::cuda{});
  cuda_test::require_close(host.first, dev.first, name + ": forward");
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (cuda_test::require_close(std::get<I>(host.second), std::get<I>(dev.second), name + ": gradient of input " + std::to_string(I)), ...);
  }(std::index_sequence_for<H...>{});
}
}  // namespace

TEST_CASE("cuda autodiff views: slice, select, permute, transpose, squeeze, unsqueeze, broadcast", "[cuda][autodiff]") {
  for (index_t n : {1, 7, 33}) {
    const auto x = values<3>({n, 3, 5}, 1);
    const auto col = values<2>({3, 1}, 2);
    const std::string s = " n=" + std::to_string(n);
    check_op("slice" + s, [](auto, const auto& x) { return ad::slice<0>(x, 0, x.dims()[0], 2); }, x);
    check_op("slice, select" + s, [](auto, const auto& x) { return ad::select<2>(ad::slice<-1>(x, 1, 5), 3); }, x);
    check_op("permute" + s, [](auto, const auto& x) { return ad::permute<2, 0, 1>(x); }, x);
    check_op("transpose<0, 2>" + s, [](auto, const auto& x) { return ad::transpose<0, 2>(x); }, x);
    check_op("squeeze, unsqueeze, flatten" + s, [](auto, const auto& x) { return ad::flatten(ad::squeeze<1>(ad::unsqueeze<1>(x))); }, x);
    check_op("broadcast_to" + s, [n](auto, const auto& c) { return ad::broadcast_to(c, dims_t<3>{n, 3, 4}); }, col);
    check_op("overlapping slices" + s, [](auto, const auto& x) { return ad::slice<1>(x, 0, 2) + ad::slice<1>(x, 1, 3); }, x);
  }
}

TEST_CASE("cuda autodiff: batched matmul with broadcast batch dims, matrix-vector, dot", "[cuda][autodiff]") {
  for (index_t m : {1, 7, 33}) {
    const std::string s = " m=" + std::to_string(m);
    check_op("[B, M, K] x [K, N]" + s, [](auto, const auto& a, const auto& b) { return ad::matmul(a, b); },
             values<3>({3, m, 5}, 3), values<2>({5, 4}, 4));
    check_op("[B, 1, M, K] x [H, K, N]" + s, [](auto, const auto& a, const auto& b) { return ad::matmul(a, b); },
             values<4>({3, 1, m, 5}, 5), values<3>({2, 5, 6}, 6));
    check_op("[M, K] x [K]" + s, [](auto, const auto& a, const auto& v) { return ad::matmul(a, v); },
             values<2>({m, 9}, 7), values<1>({9}, 8));
    check_op("[K] x [B, K, N]" + s, [](auto, const auto& v, const auto& b) { return ad::matmul(v, b); },
             values<1>({m}, 9), values<3>({2, m, 3}, 10));
    check_op("[K] x [K]" + s, [](auto, const auto& u, const auto& v) { return ad::matmul(u, v); },
             values<1>({m}, 11), values<1>({m}, 12));
  }
}

TEST_CASE("cuda autodiff: softmax and log_softmax along every axis", "[cuda][autodiff]") {
  const auto x = values<3>({3, 7, 65}, 13, -3, 3);
  check_op("softmax<0>", [](auto, const auto& x) { return ad::softmax<0>(x); }, x);
  check_op("softmax<1>", [](auto, const auto& x) { return ad::softmax<1>(x); }, x);
  check_op("softmax<2>", [](auto, const auto& x) { return ad::softmax<2>(x); }, x);
  check_op("log_softmax<0>", [](auto, const auto& x) { return ad::log_softmax<0>(x); }, x);
  check_op("log_softmax<-2>", [](auto, const auto& x) { return ad::log_softmax<-2>(x); }, x);
  const auto y = values<4>({2, 3, 4, 5}, 14, -2, 2);
  check_op("softmax<1> rank 4", [](auto, const auto& y) { return ad::softmax<1>(y); }, y);
  check_op("log_softmax rank 4", [](auto, const auto& y) { return ad::log_softmax(y); }, y);
}

TEST_CASE("cuda autodiff: cat, stack, split, index_select", "[cuda][autodiff]") {
  const auto a = values<2>({7, 3}, 15), b = values<2>({5, 3}, 16);
  check_op("cat<0>", [](auto, const auto& a, const auto& b) { return ad::cat<0>(a, b, a); }, a, b);
  check_op("stack<1>", [](auto, const auto& a) { return ad::stack<1>(a, ad::tanh(a)); }, a);
  check_op("split", [](auto, const auto& a) {
    auto p = ad::split<0>(a, 3);
    return ad::cat<0>(p[2], p[0]);
  }, a);
  check_op("index_select with repeats", [](auto pol, const auto& a) {
    using P = decltype(pol);
    const ts::Tensor<std::int64_t, ts::dyn_shape_t<1>> ids(std::vector<std::int64_t>{6, 0, 6, 2, 6}, dims_t<1>{5});
    return ad::index_select<0>(a, ts::to<P>(ids));
  }, a);
}
