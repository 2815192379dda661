// Attention and layer normalisation on the cuda policy against the same operations on cpu (whose values and gradients
// test_attention, test_layer_norm and test_transformer check against loops and finite differences):
// scaled_dot_product_attention with every mask kind (and a fully masked row: NaN on both), layer_norm over one and
// two axes, MultiheadAttention (self and cross) and TransformerEncoderLayer (post- and pre-norm): outputs and the
// gradients of the inputs and every parameter, float and double, at sizes that do not divide any block.
// Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <string>
#include <tessera/autodiff/attention_ops.hpp>
#include <tessera/autodiff/norm_ops.hpp>
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

template <class P, int R>
ts::Tensor<bool, ts::dyn_shape_t<R>, P> bools(const dims_t<R>& d, int every, index_t keep_col) {
  ts::Tensor<bool, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = i % every == 1 && i % d[R - 1] != keep_col;
  if constexpr (P::on_device) return ts::to<P>(t);
  else return t;
}

template <class T, class P>
std::vector<ts::Tensor<T, ts::dyn_shape_t<4>>> run_sdpa(int mask_kind) {
  const index_t B = 2, H = 3, Tq = 37, S = 70, D = 7, Dv = 5;
  using V4 = ad::Var<T, 4, P>;
  V4 q(ts::to<P>(values<T, 4>({B, H, Tq, D}, 1)), true), k(ts::to<P>(values<T, 4>({B, H, S, D}, 2)), true),
      v(ts::to<P>(values<T, 4>({B, H, S, Dv}, 3)), true), c(ts::to<P>(values<T, 4>({B, H, Tq, Dv}, 4)), false);
  auto m3 = bools<P, 3>({B, Tq, S}, 3, 0);
  auto pad = bools<P, 2>({B, S}, 5, 0);
  ad::sdpa_options o;
  if (mask_kind == 1) o.is_causal = true;
  if (mask_kind == 2) o.mask = m3, o.key_padding_mask = pad;
  auto y = ad::scaled_dot_product_attention(q, k, v, o);
  ad::sum(y * c).backward();
  return {ts::to<ts::cpu>(y.value()), ts::to<ts::cpu>(q.grad()), ts::to<ts::cpu>(k.grad()), ts::to<ts::cpu>(v.grad())};
}

template <class T, class P>
std::vector<ts::Tensor<T, ts::dyn_shape_t<3>>> run_layer_norm() {
  using V3 = ad::Var<T, 3, P>;
  V3 x(ts::to<P>(values<T, 3>({3, 5, 33}, 1)), true), c(ts::to<P>(values<T, 3>({3, 5, 33}, 2)), false);
  ad::Var<T, 1, P> w(ts::to<P>(values<T, 1>({33}, 3)), true), b(ts::to<P>(values<T, 1>({33}, 4)), true);
  auto y = ad::layer_norm(x, w, b);
  ad::sum(y * c).backward();
  auto as3 = [](const auto& t) {
    const auto h = ts::to<ts::cpu>(t);
    return ts::Tensor<T, ts::dyn_shape_t<3>>(ts::reshape<ts::dyn_shape_t<3>>(h, dims_t<3>{1, 1, 33}));
  };
  return {ts::to<ts::cpu>(y.value()), ts::to<ts::cpu>(x.grad()), as3(w.grad()), as3(b.grad())};
}

template <class T, class P, ts::transformer_options O>
std::vector<std::vector<T>> run_encoder(bool cross) {
  ts::Rng rng(9);
  typename nn::TransformerEncoderLayer<12, 3, 20, O>::template state<T, P> layer(rng);
  using V3 = ad::Var<T, 3, P>;
  V3 x(ts::to<P>(values<T, 3>({2, 9, 12}, 1)), true), kv(ts::to<P>(values<T, 3>({2, 13, 12}, 2)), true);
  V3 c(ts::to<P>(values<T, 3>({2, 9, 12}, 3)), false);
  nn::context ctx{.training = false};
  auto y = cross ? layer.self_attn.forward(x, kv, kv) : layer.forward(x, ctx);
  ad::sum(y * c).backward();
  std::vector<std::vector<T>> out{ts::to<ts::cpu>(y.value()).to_vector(), ts::to<ts::cpu>(x.grad()).to_vector()};
  layer.for_each_parameter("", [&](const std::string&, auto& p) {
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

TEST_CASE("cuda scaled_dot_product_attention matches the host", "[cuda][attention]") {
  for (int mk : {0, 1, 2}) {
    const auto h = run_sdpa<float, ts::cpu>(mk), d = run_sdpa<float, ts::cuda>(mk);
    for (std::size_t i = 0; i < h.size(); ++i) require_close(h[i], d[i], "float, mask kind " + std::to_string(mk) + ", tensor " + std::to_string(i));
    const auto hd = run_sdpa<double, ts::cpu>(mk), dd = run_sdpa<double, ts::cuda>(mk);
    for (std::size_t i = 0; i < hd.size(); ++i) require_close(hd[i], dd[i], "double, tensor " + std::to_string(i), 1e-10);
  }
  // a fully masked row: NaN on the device too
  ts::Tensor<bool, ts::dyn_shape_t<2>> m(dims_t<2>{4, 6});
  m = false;
  for (index_t s = 0; s < 6; ++s) m(2, s) = true;
  ad::Var<float, 4, ts::cuda> q(ts::to<ts::cuda>(values<float, 4>({1, 1, 4, 3}, 1)), false), k(ts::to<ts::cuda>(values<float, 4>({1, 1, 6, 3}, 2)), false);
  auto y = ts::to<ts::cpu>(ad::scaled_dot_product_attention(q, k, k, {.mask = ts::to<ts::cuda>(m)}).value());
  for (index_t t = 0; t < 4; ++t) CHECK(std::isnan(y(0, 0, t, 0)) == (t == 2));
}

TEST_CASE("cuda layer_norm matches the host", "[cuda][layer_norm]") {
  const auto h = run_layer_norm<float, ts::cpu>(), d = run_layer_norm<float, ts::cuda>();
  for (std::size_t i = 0; i < h.size(); ++i) require_close(h[i], d[i], "float, tensor " + std::to_string(i));
  const auto hd = run_layer_norm<double, ts::cpu>(), dd = run_layer_norm<double, ts::cuda>();
  for (std::size_t i = 0; i < hd.size(); ++i) require_close(hd[i], dd[i], "double, tensor " + std::to_string(i), 1e-10);
}

TEST_CASE("cuda MultiheadAttention and TransformerEncoderLayer match the host", "[cuda][transformer]") {
  constexpr ts::transformer_options post{}, pre{.activation = ts::transformer_activation::gelu, .norm_first = true};
  same(run_encoder<float, ts::cpu, post>(false), run_encoder<float, ts::cuda, post>(false), 1e-4);
  same(run_encoder<double, ts::cpu, pre>(false), run_encoder<double, ts::cuda, pre>(false), 1e-10);
  same(run_encoder<float, ts::cpu, post>(true), run_encoder<float, ts::cuda, post>(true), 1e-4);
}
