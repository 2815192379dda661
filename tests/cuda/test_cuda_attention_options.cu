// Attention's float masks, attention-weight dropout and MultiheadAttention's kdim / vdim on the cuda policy against
// the same operations on cpu (whose values and gradients test_attention_options and test_transformer_options check
// against loops and finite differences): the same seed gives the same dropout mask on both (a counter-based hash).
// Outputs and the gradients of the inputs and every parameter, float and double, at sizes that do not divide any block.
// Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <tessera/autodiff/attention_ops.hpp>
#include <tessera/nn/transformer.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dims_t;
using ts::index_t;
using cuda_test::require_close;

namespace {

template <class T, int R>
ts::Tensor<T, ts::dyn_shape_t<R>> values(const dims_t<R>& d, int salt) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(double((i * 7919 + salt * 104729 + 17) % 1000) / 500.0 - 1.0);
  return t;
}

/// kind 0: a float mask [B, H, Tq, S] with -inf entries; 1: dropout 0.3 with a causal mask; 2: both.
template <class T, class P>
std::vector<ts::Tensor<T, ts::dyn_shape_t<4>>> run_sdpa(int kind) {
  const index_t B = 2, H = 3, Tq = 37, S = 70, D = 7, Dv = 5;
  using V4 = ad::Var<T, 4, P>;
  V4 q(ts::to<P>(values<T, 4>({B, H, Tq, D}, 1)), true), k(ts::to<P>(values<T, 4>({B, H, S, D}, 2)), true),
      v(ts::to<P>(values<T, 4>({B, H, S, Dv}, 3)), true), c(ts::to<P>(values<T, 4>({B, H, Tq, Dv}, 4)), false);
  auto mh = values<T, 4>({B, H, Tq, S}, 5);
  for (index_t i = 0; i < mh.size(); ++i)
    if (i % 7 == 3 && i % S != 0) mh.data()[i] = -std::numeric_limits<T>::infinity();
  auto m = ts::to<P>(mh);
  ts::Rng rng(5);
  ad::sdpa_options o;
  if (kind != 1) o.mask = m;
  if (kind >= 1) o.dropout_p = 0.3, o.rng = &rng, o.is_causal = kind == 1;
  auto y = ad::scaled_dot_product_attention(q, k, v, o);
  ad::sum(y * c).backward();
  return {ts::to<ts::cpu>(y.value()), ts::to<ts::cpu>(q.grad()), ts::to<ts::cpu>(k.grad()), ts::to<ts::cpu>(v.grad())};
}

template <class T, class P, bool training>
std::vector<std::vector<T>> run_mha() {
  ts::Rng rng(9);
  typename nn::MultiheadAttention<12, 3, ts::mha_options{.dropout = 0.2, .kdim = 5, .vdim = 7}>::template state<T, P> mha(rng);
  using V3 = ad::Var<T, 3, P>;
  V3 x(ts::to<P>(values<T, 3>({2, 9, 12}, 1)), true), key(ts::to<P>(values<T, 3>({2, 13, 5}, 2)), true),
      val(ts::to<P>(values<T, 3>({2, 13, 7}, 3)), true), c(ts::to<P>(values<T, 3>({2, 9, 12}, 4)), false);
  ts::Rng drop(3);
  nn::context ctx{.training = training, .rng = &drop};
  auto y = mha.forward(x, key, val, {}, ctx);
  ad::sum(y * c).backward();
  std::vector<std::vector<T>> out{ts::to<ts::cpu>(y.value()).to_vector(), ts::to<ts::cpu>(x.grad()).to_vector(),
                                  ts::to<ts::cpu>(key.grad()).to_vector(), ts::to<ts::cpu>(val.grad()).to_vector()};
  mha.for_each_parameter("", [&](const std::string&, auto& p) {
    if (p.has_grad()) out.push_back(ts::to<ts::cpu>(p.grad()).to_vector());
  });
  return out;
}

template <class T>
void same(const std::vector<std::vector<T>>& a, const std::vector<std::vector<T>>& b, double rel) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].size() == b[i].size());
    double scale = 0;
    for (T x : a[i]) scale = std::max(scale, std::abs(double(x)));
    for (std::size_t j = 0; j < a[i].size(); ++j) {
      INFO("tensor " << i << " element " << j);
      REQUIRE(std::abs(double(a[i][j]) - double(b[i][j])) <= rel * (std::abs(double(a[i][j])) + 0.1 * scale) + 1e-6);
    }
  }
}

}  // namespace

TEST_CASE("cuda scaled_dot_product_attention with float masks and dropout matches the host", "[cuda][attention]") {
  for (int kind : {0, 1, 2}) {
    const auto h = run_sdpa<float, ts::cpu>(kind), d = run_sdpa<float, ts::cuda>(kind);
    for (std::size_t i = 0; i < h.size(); ++i) require_close(h[i], d[i], "float, kind " + std::to_string(kind) + ", tensor " + std::to_string(i));
    const auto hd = run_sdpa<double, ts::cpu>(kind), dd = run_sdpa<double, ts::cuda>(kind);
    for (std::size_t i = 0; i < hd.size(); ++i) require_close(hd[i], dd[i], "double, tensor " + std::to_string(i), 1e-10);
  }
}

TEST_CASE("cuda MultiheadAttention with kdim / vdim and dropout matches the host", "[cuda][transformer]") {
  same(run_mha<float, ts::cpu, false>(), run_mha<float, ts::cuda, false>(), 1e-4);
  same(run_mha<double, ts::cpu, true>(), run_mha<double, ts::cuda, true>(), 1e-10);
}

