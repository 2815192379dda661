// amp::autocast on the CUDA policy (amp/autocast.hpp): ad::linear runs with bf16 operands through cuBLASLt
// (backend<cuda>::gemm_bf16) and must give the host's autocast results — checked against plain loops by
// tests/amp/test_autocast.cpp — for the values and every gradient, up to fp32 accumulation order; the result must
// differ from the fp32 product (bf16 did run); convolutions stay fp32 on CUDA (no bf16 convolution there), so
// conv2d under autocast equals conv2d without it. Without a GPU: "SKIPPED: ..." and exit 77.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_autodiff_support.hpp"
#include "cuda_test_support.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <tessera/amp/autocast.hpp>

namespace ts = tessera;
using ts::index_t;
using act_t = ts::ad::activation;

namespace {
template <class A, class B>
void require_near(const A& got, const B& want, double tol, const char* what) {
  REQUIRE(got.size() == want.size());
  for (index_t i = 0; i < got.size(); ++i) {
    INFO(what << " element " << i << ": " << got.data()[i] << " vs " << want.data()[i]);
    REQUIRE(std::abs(double(got.data()[i]) - double(want.data()[i])) <= tol * (1 + std::abs(double(want.data()[i]))));
  }
}

/// linear under autocast on policy P: the output and the gradients of x, W and b (host copies).
template <class P>
auto run_linear(const cuda_test::htensor<2>& x, const cuda_test::htensor<2>& w, const cuda_test::htensor<1>& b,
                const cuda_test::htensor<2>& g, act_t a, bool amp) {
  auto xv = cuda_test::leaf<P>(x), wv = cuda_test::leaf<P>(w);
  auto bv = cuda_test::leaf<P>(b);
  auto gv = cuda_test::leaf<P>(g, false);
  ts::ad::Var<float, 2, P> y;
  {
    ts::amp::autocast scope(amp);
    y = ts::ad::linear(xv, wv, bv, a);
  }
  ts::ad::sum(y * gv).backward();
  return std::make_tuple(ts::to<ts::cpu>(y.value()), ts::to<ts::cpu>(xv.grad()), ts::to<ts::cpu>(wv.grad()),
                         ts::to<ts::cpu>(bv.grad()));
}
}  // namespace

TEST_CASE("autocast linear on CUDA: bf16 through cuBLASLt, the host's autocast results and gradients", "[cuda][amp]") {
  for (auto [B, I, O] : {std::array<index_t, 3>{1, 7, 33}, {33, 65, 7}, {64, 127, 65}})
    for (act_t a : {act_t::none, act_t::relu}) {
      INFO("B " << B << " I " << I << " O " << O << " act " << int(a));
      const auto x = cuda_test::values<2>({B, I}, 1), w = cuda_test::values<2>({O, I}, 2), g = cuda_test::values<2>({B, O}, 4);
      const auto b = cuda_test::values<1>({O}, 3);
      const auto dev = run_linear<ts::cuda>(x, w, b, g, a, true);
      const auto host = run_linear<ts::cpu_threads>(x, w, b, g, a, true);
      const auto fp32 = run_linear<ts::cuda>(x, w, b, g, a, false);
      require_near(std::get<0>(dev), std::get<0>(host), 1e-5, "y");
      require_near(std::get<1>(dev), std::get<1>(host), 1e-5, "dx");
      require_near(std::get<2>(dev), std::get<2>(host), 1e-5, "dW");
      require_near(std::get<3>(dev), std::get<3>(host), 1e-5, "db");
      double most = 0;
      for (index_t i = 0; i < std::get<0>(dev).size(); ++i)
        most = std::max(most, std::abs(double(std::get<0>(dev).data()[i]) - std::get<0>(fp32).data()[i]));
      if (I > 7) REQUIRE(most > 1e-4);  // the operands are not bf16 values: bf16 products differ visibly
    }
}

TEST_CASE("autocast conv2d on CUDA stays fp32 (no bf16 convolution on CUDA)", "[cuda][amp]") {
  using P = ts::cuda;
  const auto x = cuda_test::values<4>({2, 3, 9, 9}, 5), w = cuda_test::values<4>({4, 3, 3, 3}, 6);
  const auto b = cuda_test::values<1>({4}, 7);
  auto xv = cuda_test::leaf<P>(x), wv = cuda_test::leaf<P>(w);
  auto bv = cuda_test::leaf<P>(b);
  const auto plain = ts::to<ts::cpu>(ts::ad::conv2d(xv, wv, bv, ts::conv2d_options{.padding = 1}).value());
  ts::amp::autocast scope;
  REQUIRE(ts::amp::is_autocast_enabled<P>());
  const auto cast = ts::to<ts::cpu>(ts::ad::conv2d(xv, wv, bv, ts::conv2d_options{.padding = 1}).value());
  for (index_t i = 0; i < plain.size(); ++i) REQUIRE(plain.data()[i] == cast.data()[i]);
}
