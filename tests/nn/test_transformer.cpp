// nn::MultiheadAttention and nn::TransformerEncoderLayer against references written as plain loops (projections,
// per-head softmax attention, merge, out_proj; layer norm; feed-forward), batch_first true and false, masks (causal,
// key padding, [T, S] and PyTorch's [N * Heads, T, S] attn_mask), post- and pre-norm, relu and gelu, float and double,
// cpu and cpu_threads; gradients of every parameter and the input against finite differences in double; PyTorch's
// parameter names and initialisation; use in a Sequential.
#include <tessera/nn/sequential.hpp>
#include <tessera/nn/transformer.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dims_t;
using ts::index_t;
using vec = std::vector<double>;

namespace {

template <class V>
vec host(const V& v) {
  vec out(std::size_t(v.size()));
  for (index_t i = 0; i < v.size(); ++i) out[std::size_t(i)] = double(v.value().data()[i]);
  return out;
}

/// y [rows, O] = x [rows, I] W^T + b.
vec linear_ref(const vec& x, index_t rows, index_t I, const vec& W, const vec& b, index_t O) {
  vec y(std::size_t(rows * O));
  for (index_t r = 0; r < rows; ++r)
    for (index_t o = 0; o < O; ++o) {
      double s = b.empty() ? 0.0 : b[std::size_t(o)];
      for (index_t i = 0; i < I; ++i) s += x[std::size_t(r * I + i)] * W[std::size_t(o * I + i)];
      y[std::size_t(r * O + o)] = s;
    }
  return y;
}

vec layer_norm_ref(const vec& x, index_t cols, const vec& w, const vec& b, double eps) {
  vec y(x.size());
  for (std::size_t r = 0; r * std::size_t(cols) < x.size(); ++r) {
    double mean = 0, var = 0;
    for (index_t c = 0; c < cols; ++c) mean += x[r * std::size_t(cols) + std::size_t(c)] / double(cols);
    for (index_t c = 0; c < cols; ++c) {
      const double d = x[r * std::size_t(cols) + std::size_t(c)] - mean;
      var += d * d / double(cols);
    }
    for (index_t c = 0; c < cols; ++c)
      y[r * std::size_t(cols) + std::size_t(c)] =
          (x[r * std::size_t(cols) + std::size_t(c)] - mean) / std::sqrt(var + eps) * w[std::size_t(c)] + b[std::size_t(c)];
  }
  return y;
}

struct mha_ref_masks {
  bool causal = false;
  std::vector<char> attn;  // [T, S] or [N * H, T, S]
  bool per_head = false;
  std::vector<char> pad;  // [N, S]
};

/// PyTorch's multi_head_attention_forward in loops: rows of x are (n, t) at n * T + t (batch first) or t * N + n.
vec mha_ref(const vec& q, const vec& k, const vec& v, index_t N, index_t T, index_t S, index_t E, index_t H, bool bf, const vec& Win,
            const vec& bin, const vec& Wout, const vec& bout, const mha_ref_masks& m) {
  const index_t d = E / H;
  auto part = [&](int which) {  // rows of W_in / b_in for q, k or v
    vec W(Win.begin() + which * E * E, Win.begin() + (which + 1) * E * E);
    vec b = bin.empty() ? vec{} : vec(bin.begin() + which * E, bin.begin() + (which + 1) * E);
    return std::make_pair(W, b);
  };
  auto [Wq, bq] = part(0);
  auto [Wk, bk] = part(1);
  auto [Wv, bv] = part(2);
  const vec qp = linear_ref(q, N * T, E, Wq, bq, E), kp = linear_ref(k, N * S, E, Wk, bk, E), vp = linear_ref(v, N * S, E, Wv, bv, E);
  auto row = [&](index_t n, index_t t, index_t len) { return bf ? n * len + t : t * N + n; };
  vec merged(std::size_t(N * T * E));
  for (index_t n = 0; n < N; ++n)
    for (index_t h = 0; h < H; ++h)
      for (index_t t = 0; t < T; ++t) {
        vec w(static_cast<std::size_t>(S));
        double mx = -std::numeric_limits<double>::infinity();
        for (index_t s = 0; s < S; ++s) {
          double dot = 0;
          for (index_t c = 0; c < d; ++c) dot += qp[std::size_t(row(n, t, T) * E + h * d + c)] * kp[std::size_t(row(n, s, S) * E + h * d + c)];
          bool masked = (m.causal && s > t) || (!m.pad.empty() && m.pad[std::size_t(n * S + s)]);
          if (!m.attn.empty()) masked = masked || m.attn[std::size_t(((m.per_head ? n * H + h : 0) * T + t) * S + s)];
          w[std::size_t(s)] = masked ? -std::numeric_limits<double>::infinity() : dot / std::sqrt(double(d));
          mx = std::max(mx, w[std::size_t(s)]);
        }
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (index_t c = 0; c < d; ++c) {
          double o = 0;
          for (index_t s = 0; s < S; ++s) o += w[std::size_t(s)] / sum * vp[std::size_t(row(n, s, S) * E + h * d + c)];
          merged[std::size_t(row(n, t, T) * E + h * d + c)] = o;
        }
      }
  return linear_ref(merged, N * T, E, Wout, bout, E);
}

template <class T, class P>
ad::Var<T, 3, P> input(const dims_t<3>& d, int salt, bool grad = false) {
  ts::Tensor<T, ts::dyn_shape_t<3>, P> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(std::sin(0.61 * double(i) + salt));
  return ad::Var<T, 3, P>(std::move(t), grad);
}

template <class T, class P, bool BF>
void check_mha(index_t N, index_t Tq, index_t S, int mask_kind) {
  constexpr int E = 12, H = 3;
  INFO("N=" << N << " T=" << Tq << " S=" << S << " mask=" << mask_kind << " batch_first=" << BF);
  ts::Rng rng(7);
  typename nn::MultiheadAttention<E, H, ts::mha_options{.batch_first = BF}>::template state<T, P> mha(rng);
  // non-zero biases, so that they are exercised
  for (index_t i = 0; i < 3 * E; ++i) mha.in_proj_bias.mutable_value().data()[i] = T(0.05 * double(i % 5) - 0.1);
  for (index_t i = 0; i < E; ++i) mha.out_proj_bias.mutable_value().data()[i] = T(0.02 * double(i));
  const dims_t<3> qd = BF ? dims_t<3>{N, Tq, E} : dims_t<3>{Tq, N, E}, kd = BF ? dims_t<3>{N, S, E} : dims_t<3>{S, N, E};
  const bool self = Tq == S && mask_kind >= 0;
  auto q = input<T, P>(qd, 1), k = self ? q : input<T, P>(kd, 2), v = self ? q : input<T, P>(kd, 3);
  mha_ref_masks rm;
  ts::mha_masks mm;
  ts::Tensor<bool, ts::dyn_shape_t<2>, P> m2, pad;
  ts::Tensor<bool, ts::dyn_shape_t<3>, P> m3;
  if (mask_kind == 1) mm.is_causal = rm.causal = true;
  if (mask_kind == 2) {
    pad = decltype(pad)(dims_t<2>{N, S});
    rm.pad.resize(std::size_t(N * S));
    for (index_t i = 0; i < N * S; ++i) pad.data()[i] = rm.pad[std::size_t(i)] = (i % S) >= S - (i / S) && (i % S) > 0;
    mm.key_padding_mask = pad;
  }
  if (mask_kind == 3) {
    m2 = decltype(m2)(dims_t<2>{Tq, S});
    rm.attn.resize(std::size_t(Tq * S));
    for (index_t i = 0; i < Tq * S; ++i) m2.data()[i] = rm.attn[std::size_t(i)] = i % 4 == 3 && i % S != 0;
    mm.attn_mask = m2;
  }
  if (mask_kind == 4) {
    m3 = decltype(m3)(dims_t<3>{N * H, Tq, S});
    rm.attn.resize(std::size_t(N * H * Tq * S));
    rm.per_head = true;
    for (index_t i = 0; i < N * H * Tq * S; ++i) m3.data()[i] = rm.attn[std::size_t(i)] = (i * 5) % 7 == 2 && i % S != 0;
    mm.attn_mask = m3;
  }
  const vec want = mha_ref(host(q), host(k), host(v), N, Tq, S, E, H, BF, host(mha.in_proj_weight), host(mha.in_proj_bias),
                           host(mha.out_proj_weight), host(mha.out_proj_bias), rm);
  auto y = mha.forward(q, k, v, mm);
  REQUIRE(y.dims() == qd);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(double(y.value().data()[i]) == Approx(want[std::size_t(i)]).margin(tol));
}

template <class T, class P>
void mha_suite() {
  for (int mk : {0, 1, 2, 3, 4}) {
    check_mha<T, P, true>(2, 7, 7, mk);
    check_mha<T, P, false>(2, 7, 7, mk);
    check_mha<T, P, true>(3, 33, 33, mk);
    check_mha<T, P, true>(2, 5, 65, mk == 1 ? 0 : mk);  // cross-attention (causal needs T = S in this reference's use)
    check_mha<T, P, false>(1, 65, 9, mk == 1 ? 0 : mk);
  }
  check_mha<T, P, true>(1, 1, 1, 0);
}

/// TransformerEncoderLayer in loops, from the layer's own parameters.
template <class L>
vec encoder_ref(L& layer, const vec& x, index_t N, index_t T, index_t E, index_t H, index_t FF, bool norm_first, bool gelu, bool bf) {
  auto p = [](const auto& var) { return host(var); };
  auto sa = [&](const vec& h) {
    return mha_ref(h, h, h, N, T, T, E, H, bf, p(layer.self_attn.in_proj_weight), p(layer.self_attn.in_proj_bias),
                   p(layer.self_attn.out_proj_weight), p(layer.self_attn.out_proj_bias), {});
  };
  auto ff = [&](const vec& h) {
    vec z = linear_ref(h, N * T, E, p(layer.linear1.weight), p(layer.linear1.bias), FF);
    for (auto& u : z) u = gelu ? 0.5 * u * (1.0 + std::erf(u / std::sqrt(2.0))) : std::max(u, 0.0);
    return linear_ref(z, N * T, FF, p(layer.linear2.weight), p(layer.linear2.bias), E);
  };
  auto ln1 = [&](const vec& h) { return layer_norm_ref(h, E, p(layer.norm1.weight), p(layer.norm1.bias), 1e-5); };
  auto ln2 = [&](const vec& h) { return layer_norm_ref(h, E, p(layer.norm2.weight), p(layer.norm2.bias), 1e-5); };
  auto add = [](vec a, const vec& b) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return a;
  };
  vec h = x;
  if (norm_first) {
    h = add(h, sa(ln1(h)));
    h = add(h, ff(ln2(h)));
  } else {
    h = ln1(add(h, sa(h)));
    h = ln2(add(h, ff(h)));
  }
  return h;
}

template <class T, class P, ts::transformer_options O>
void check_encoder(index_t N, index_t Tn) {
  constexpr int E = 16, H = 4, FF = 24;
  INFO("N=" << N << " T=" << Tn << " norm_first=" << O.norm_first << " gelu=" << (O.activation == ts::transformer_activation::gelu));
  ts::Rng rng(3);
  typename nn::TransformerEncoderLayer<E, H, FF, O>::template state<T, P> layer(rng);
  for (index_t i = 0; i < E; ++i) {  // non-trivial norms
    layer.norm1.weight.mutable_value().data()[i] = T(1 + 0.03 * double(i));
    layer.norm2.bias.mutable_value().data()[i] = T(0.01 * double(i));
  }
  const dims_t<3> xd = O.batch_first ? dims_t<3>{N, Tn, E} : dims_t<3>{Tn, N, E};
  auto x = input<T, P>(xd, 4);
  nn::context ctx{.training = false};
  auto y = layer.forward(x, ctx);
  const vec want = encoder_ref(layer, host(x), N, Tn, E, H, FF, O.norm_first, O.activation == ts::transformer_activation::gelu, O.batch_first);
  const double tol = std::is_same_v<T, float> ? 5e-5 : 1e-11;
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(double(y.value().data()[i]) == Approx(want[std::size_t(i)]).margin(tol));
}

}  // namespace

TEST_CASE("MultiheadAttention: forward against plain loops", "[nn][attention]") {
  ts::cpu_threads::set_num_threads(2);
  mha_suite<float, ts::cpu>();
  mha_suite<double, ts::cpu_threads>();
}

TEST_CASE("MultiheadAttention: PyTorch's parameter names and initialisation", "[nn][attention]") {
  ts::Rng rng(1);
  nn::MultiheadAttention<16, 4>::state<float, ts::cpu> mha(rng);
  std::vector<std::string> names;
  mha.for_each_parameter("self_attn.", [&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
                                          "self_attn.out_proj.bias"});
  CHECK(mha.in_proj_weight.dims() == dims_t<2>{48, 16});
  const double xb = std::sqrt(6.0 / 64.0), ob = 1.0 / 4.0;
  double wmax = 0, omax = 0;
  for (float w : mha.in_proj_weight.value().to_vector()) wmax = std::max(wmax, std::abs(double(w)));
  for (float w : mha.out_proj_weight.value().to_vector()) omax = std::max(omax, std::abs(double(w)));
  CHECK(wmax <= xb);
  CHECK(wmax > 0.8 * xb);  // xavier_uniform_'s bound, not Linear's 1/sqrt(16)
  CHECK(omax <= ob);
  CHECK(omax > 0.8 * ob);
  for (float b : mha.in_proj_bias.value().to_vector()) CHECK(b == 0.0f);
  for (float b : mha.out_proj_bias.value().to_vector()) CHECK(b == 0.0f);
  nn::MultiheadAttention<8, 2, ts::mha_options{.bias = false}>::state<float, ts::cpu> nb(rng);
  int count = 0;
  nb.for_each_parameter("", [&](const std::string&, auto&) { ++count; });
  CHECK(count == 2);
}

TEST_CASE("MultiheadAttention: gradients of every parameter and of the inputs", "[nn][attention]") {
  using V3 = ad::Var<double, 3, ts::cpu>;
  ts::Rng rng(5);
  nn::MultiheadAttention<6, 2>::state<double, ts::cpu> mha(rng);
  for (index_t i = 0; i < 18; ++i) mha.in_proj_bias.mutable_value().data()[i] = 0.1 * double(i % 4);
  V3 x(gc::values<3>({2, 5, 6}, 1), true), kv(gc::values<3>({2, 4, 6}, 2), true), val(gc::values<3>({2, 4, 6}, 3), true);
  V3 c(gc::values<3>({2, 5, 6}, 4), false);
  ts::Tensor<bool, ts::dyn_shape_t<2>> pad(dims_t<2>{2, 5});
  pad = false;
  pad(1, 4) = true;
  auto& W = mha.in_proj_weight;
  auto& b = mha.in_proj_bias;
  auto& Wo = mha.out_proj_weight;
  auto& bo = mha.out_proj_bias;
  gc::check([&] { return ad::sum(mha.forward(x, x, x) * c); }, x, W, b, Wo, bo);
  gc::check([&] { return ad::sum(mha.forward(x, x, x, {.key_padding_mask = pad, .is_causal = true}) * c); }, x, W, b, Wo, bo);
  gc::check([&] { return ad::sum(mha.forward(x, kv, kv) * c); }, x, kv, W, b, Wo, bo);
  gc::check([&] { return ad::sum(mha.forward(x, kv, val) * c); }, x, kv, val, W, b);
  nn::MultiheadAttention<6, 3, ts::mha_options{.batch_first = false}>::state<double, ts::cpu> tf(rng);
  gc::check([&] { return ad::sum(tf.forward(x, x, x) * c); }, x, tf.in_proj_weight, tf.out_proj_weight);
}

TEST_CASE("MultiheadAttention: shape errors", "[nn][attention]") {
  ts::Rng rng(1);
  nn::MultiheadAttention<8, 2>::state<float, ts::cpu> mha(rng);
  auto q = input<float, ts::cpu>({2, 3, 8}, 1);
  CHECK_THROWS_AS(mha.forward(q, input<float, ts::cpu>({3, 4, 8}, 2), input<float, ts::cpu>({3, 4, 8}, 3)), ts::shape_error);
  CHECK_THROWS_AS(mha.forward(q, input<float, ts::cpu>({2, 4, 8}, 2), input<float, ts::cpu>({2, 5, 8}, 3)), ts::shape_error);
  ts::Tensor<bool, ts::dyn_shape_t<3>> m(dims_t<3>{3, 3, 3});
  CHECK_THROWS_WITH(mha.forward(q, q, q, {.attn_mask = m}), Catch::Contains("[3, 3, 3]"));
}

TEST_CASE("TransformerEncoderLayer: post- and pre-norm against plain loops", "[nn][transformer]") {
  ts::cpu_threads::set_num_threads(2);
  constexpr auto gelu = ts::transformer_activation::gelu;
  check_encoder<float, ts::cpu, ts::transformer_options{}>(2, 7);
  check_encoder<float, ts::cpu_threads, ts::transformer_options{.norm_first = true}>(3, 33);
  check_encoder<double, ts::cpu, ts::transformer_options{.activation = gelu}>(2, 65);
  check_encoder<double, ts::cpu_threads, ts::transformer_options{.activation = gelu, .batch_first = false, .norm_first = true}>(2, 9);
  check_encoder<double, ts::cpu, ts::transformer_options{.batch_first = false}>(1, 1);
}

TEST_CASE("TransformerEncoderLayer: gradients, parameter names, dropout and Sequential", "[nn][transformer]") {
  using V3 = ad::Var<double, 3, ts::cpu>;
  ts::Rng rng(2);
  nn::TransformerEncoderLayer<4, 2, 6, ts::transformer_options{.dropout = 0.0, .norm_first = true}>::state<double, ts::cpu> pre(rng);
  nn::TransformerEncoderLayer<4, 2, 6, ts::transformer_options{.dropout = 0.0, .activation = ts::transformer_activation::gelu}>::state<
      double, ts::cpu> post(rng);
  V3 x(gc::values<3>({2, 3, 4}, 1), true), c(gc::values<3>({2, 3, 4}, 2), false);
  nn::context ctx{.training = true};
  gc::check([&] { return ad::sum(pre.forward(x, ctx) * c); }, x, pre.self_attn.in_proj_weight, pre.self_attn.in_proj_bias,
            pre.self_attn.out_proj_weight, pre.linear1.weight, pre.linear1.bias, pre.linear2.weight, pre.norm1.weight, pre.norm2.bias);
  gc::check([&] { return ad::sum(post.forward(x, ctx) * c); }, x, post.self_attn.in_proj_weight, post.self_attn.out_proj_bias,
            post.linear1.weight, post.linear2.weight, post.linear2.bias, post.norm1.weight, post.norm1.bias, post.norm2.weight);

  using Net = nn::Sequential<ts::Shape<ts::dyn, 5, 8>, nn::TransformerEncoderLayer<8, 2, 16>, nn::MultiheadAttention<8, 4>>;
  Net net(3);
  std::vector<std::string> names;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  const std::vector<std::string> want{"0.self_attn.in_proj_weight", "0.self_attn.in_proj_bias", "0.self_attn.out_proj.weight",
                                      "0.self_attn.out_proj.bias", "0.linear1.weight", "0.linear1.bias", "0.linear2.weight",
                                      "0.linear2.bias", "0.norm1.weight", "0.norm1.bias", "0.norm2.weight", "0.norm2.bias",
                                      "1.in_proj_weight", "1.in_proj_bias", "1.out_proj.weight", "1.out_proj.bias"};
  CHECK(names == want);
  ts::Tensor<float, ts::Shape<ts::dyn, 5, 8>> in(3);
  for (index_t i = 0; i < in.size(); ++i) in.data()[i] = float(std::cos(0.3 * double(i)));
  net.eval();
  auto a = net.predict(in), b = net.predict(in);
  REQUIRE(a.dims() == dims_t<3>{3, 5, 8});
  for (index_t i = 0; i < a.size(); ++i) CHECK(a.data()[i] == b.data()[i]);  // no dropout in evaluation
  net.train();
  auto t = net.forward(in);
  int differ = 0;
  for (index_t i = 0; i < a.size(); ++i) differ += t.value().data()[i] != a.data()[i];
  CHECK(differ > 0);  // dropout 0.1 in training
}
