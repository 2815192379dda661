// nn::MultiheadAttention's float attn_mask, attention-weight dropout and kdim / vdim, and nn::TransformerEncoderLayer's
// dropout on the attention weights, against references written as plain loops (projections, per-head softmax
// attention with the float mask added and the weights dropped by the op's pure keep/drop hash, merge, out_proj;
// the encoder's residual and feed-forward dropout masks drawn from the same Rng in the layer's order), batch_first
// true and false, float and double, cpu and cpu_threads; gradients against finite differences in double; PyTorch's
// parameter names and initialisation bounds with kdim / vdim; evaluation applies no dropout.
#include <tessera/nn/sequential.hpp>
#include <tessera/nn/transformer.hpp>

#include <cmath>
#include <cstdint>
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

constexpr double ninf = -std::numeric_limits<double>::infinity();

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

vec part(const vec& x, index_t i, index_t n) { return x.empty() ? vec{} : vec(x.begin() + i * n, x.begin() + (i + 1) * n); }

/// The weights of one attention: q, k, v projections (W [E, in], b [E] or empty) and out_proj.
struct mha_weights {
  vec Wq, bq, Wk, bk, Wv, bv, Wo, bo;
};

template <class S>
mha_weights weights_of(const S& m, index_t E, bool same) {
  mha_weights w;
  const vec b = m.in_proj_bias.defined() ? host(m.in_proj_bias) : vec{};
  if (same) {
    const vec W = host(m.in_proj_weight);
    w.Wq = part(W, 0, E * E), w.Wk = part(W, 1, E * E), w.Wv = part(W, 2, E * E);
  } else {
    w.Wq = host(m.q_proj_weight), w.Wk = host(m.k_proj_weight), w.Wv = host(m.v_proj_weight);
  }
  w.bq = part(b, 0, E), w.bk = part(b, 1, E), w.bv = part(b, 2, E);
  w.Wo = host(m.out_proj_weight);
  w.bo = m.out_proj_bias.defined() ? host(m.out_proj_bias) : vec{};
  return w;
}

/// A float attn_mask ([T, S] or [N * H, T, S]) and dropout (p, seed) of the reference.
struct ref_opts {
  vec add;
  bool per_head = false;
  double p = 0.0;
  std::uint64_t seed = 0;
};

/// PyTorch's multi_head_attention_forward in loops: rows of x are (n, t) at n * T + t (batch first) or t * N + n.
vec mha_ref(const vec& q, const vec& k, const vec& v, index_t N, index_t T, index_t S, index_t E, index_t H, index_t Kd,
            index_t Vd, bool bf, const mha_weights& w, const ref_opts& o) {
  const index_t d = E / H;
  const vec qp = linear_ref(q, N * T, E, w.Wq, w.bq, E), kp = linear_ref(k, N * S, Kd, w.Wk, w.bk, E),
            vp = linear_ref(v, N * S, Vd, w.Wv, w.bv, E);
  auto row = [&](index_t n, index_t t, index_t len) { return bf ? n * len + t : t * N + n; };
  const std::uint64_t thr = ts::detail::attention_dropout_threshold(o.p);
  vec merged(std::size_t(N * T * E));
  for (index_t n = 0; n < N; ++n)
    for (index_t h = 0; h < H; ++h)
      for (index_t t = 0; t < T; ++t) {
        vec a(static_cast<std::size_t>(S));
        double mx = ninf;
        for (index_t s = 0; s < S; ++s) {
          double dot = 0;
          for (index_t c = 0; c < d; ++c) dot += qp[std::size_t(row(n, t, T) * E + h * d + c)] * kp[std::size_t(row(n, s, S) * E + h * d + c)];
          double x = dot / std::sqrt(double(d));
          if (!o.add.empty()) x += o.add[std::size_t(((o.per_head ? n * H + h : 0) * T + t) * S + s)];
          a[std::size_t(s)] = x;
          mx = std::max(mx, x);
        }
        double sum = 0;
        for (auto& x : a) sum += (x = std::exp(x - mx));
        const std::uint64_t key = ts::detail::attention_dropout_row(o.seed, n, h, t);
        for (index_t s = 0; s < S; ++s) {
          a[std::size_t(s)] /= sum;
          if (o.p > 0) a[std::size_t(s)] = ts::detail::attention_dropout_keep(key, s, thr) && o.p < 1 ? a[std::size_t(s)] / (1 - o.p) : 0.0;
        }
        for (index_t c = 0; c < d; ++c) {
          double acc = 0;
          for (index_t s = 0; s < S; ++s) acc += a[std::size_t(s)] * vp[std::size_t(row(n, s, S) * E + h * d + c)];
          merged[std::size_t(row(n, t, T) * E + h * d + c)] = acc;
        }
      }
  return linear_ref(merged, N * T, E, w.Wo, w.bo, E);
}

template <class T, class P>
ad::Var<T, 3, P> input(const dims_t<3>& d, int salt, bool grad = false) {
  ts::Tensor<T, ts::dyn_shape_t<3>, P> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(std::sin(0.61 * double(i) + salt));
  return ad::Var<T, 3, P>(std::move(t), grad);
}

template <class T>
void require_close(const T* got, const vec& want, double tol) {
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i);
    if (std::isnan(want[i])) REQUIRE(std::isnan(double(got[i])));
    else REQUIRE(double(got[i]) == Approx(want[i]).margin(tol).epsilon(tol));
  }
}

/// MultiheadAttention<12, 3, {batch_first BF, dropout Pd, kdim Kd, vdim Vd}> against mha_ref: mask_kind 0 none, 1 a
/// float [T, S] mask, 2 a float [N * H, T, S] one (some -inf, one fully -inf row: NaN); training with a seeded Rng.
template <class T, class P, bool BF, int Kd = 0, int Vd = 0>
void check_mha(index_t N, index_t Tq, index_t S, int mask_kind, bool training) {
  constexpr int E = 12, H = 3;
  constexpr double Pd = 0.25;
  using M = nn::MultiheadAttention<E, H, ts::mha_options{.dropout = Pd, .batch_first = BF, .kdim = Kd, .vdim = Vd}>;
  INFO("N=" << N << " T=" << Tq << " S=" << S << " mask=" << mask_kind << " batch_first=" << BF << " kdim=" << M::kdim
            << " vdim=" << M::vdim << " training=" << training);
  ts::Rng rng(7);
  typename M::template state<T, P> mha(rng);
  for (index_t i = 0; i < 3 * E; ++i) mha.in_proj_bias.mutable_value().data()[i] = T(0.05 * double(i % 5) - 0.1);
  for (index_t i = 0; i < E; ++i) mha.out_proj_bias.mutable_value().data()[i] = T(0.02 * double(i));
  const index_t kd = M::kdim, vd = M::vdim;
  auto dims = [&](index_t len, index_t w) { return BF ? dims_t<3>{N, len, w} : dims_t<3>{len, N, w}; };
  const bool self = Tq == S && M::same_embed_dim;
  auto q = input<T, P>(dims(Tq, E), 1), k = self ? q : input<T, P>(dims(S, kd), 2), v = self ? q : input<T, P>(dims(S, vd), 3);
  ref_opts ro;
  ts::mha_masks mm;
  ts::Tensor<T, ts::dyn_shape_t<2>, P> m2;
  ts::Tensor<T, ts::dyn_shape_t<3>, P> m3;
  if (mask_kind) {
    ro.per_head = mask_kind == 2;
    ro.add.resize(std::size_t((ro.per_head ? N * H : 1) * Tq * S));
    for (std::size_t i = 0; i < ro.add.size(); ++i)
      ro.add[i] = (i * 5) % 7 == 2 && i % std::size_t(S) != 0 ? ninf : std::cos(0.3 * double(i));
    if (Tq > 2)
      for (index_t s = 0; s < S; ++s) ro.add[std::size_t(2 * S + s)] = ninf;  // query 2 (of head 0): every key masked
    T* dst = nullptr;
    if (mask_kind == 1) m2 = decltype(m2)(dims_t<2>{Tq, S}), dst = m2.data(), mm.attn_mask = m2;
    else m3 = decltype(m3)(dims_t<3>{N * H, Tq, S}), dst = m3.data(), mm.attn_mask = m3;
    for (std::size_t i = 0; i < ro.add.size(); ++i) dst[i] = T(ro.add[i]);
  }
  ts::Rng drop_rng(11);
  if (training) ro.p = Pd, ro.seed = ts::Rng(11)();  // the layer draws its seed from the context's Rng
  const vec want = mha_ref(host(q), host(k), host(v), N, Tq, S, E, H, kd, vd, BF, weights_of(mha, E, M::same_embed_dim), ro);
  nn::context ctx{.training = training, .rng = &drop_rng};
  auto y = mha.forward(q, k, v, mm, ctx);
  REQUIRE(y.dims() == dims(Tq, E));
  require_close(y.value().data(), want, std::is_same_v<T, float> ? 2e-5 : 1e-12);
  if (!training) {  // without a context: no dropout either
    auto y2 = mha.forward(q, k, v, mm);
    require_close(y2.value().data(), want, std::is_same_v<T, float> ? 2e-5 : 1e-12);
  }
}

template <class T, class P>
void mha_suite() {
  for (int mk : {0, 1, 2})
    for (bool training : {false, true}) {
      check_mha<T, P, true>(2, 7, 7, mk, training);
      check_mha<T, P, false>(2, 33, 33, mk, training);
      check_mha<T, P, true>(2, 5, 65, mk, training);
      check_mha<T, P, false, 5, 7>(2, 9, 33, mk, training);
      check_mha<T, P, true, 12, 1>(3, 7, 7, mk, training);
      check_mha<T, P, true, 5>(1, 1, 1, 0, training);
    }
}

}  // namespace

TEST_CASE("MultiheadAttention: float masks, dropout and kdim / vdim against plain loops", "[nn][attention]") {
  ts::cpu_threads::set_num_threads(2);
  mha_suite<float, ts::cpu>();
  mha_suite<double, ts::cpu>();
  mha_suite<float, ts::cpu_threads>();
  mha_suite<double, ts::cpu_threads>();
}

TEST_CASE("MultiheadAttention: gradients with a float mask, dropout and kdim / vdim against finite differences", "[nn][attention]") {
  using V3 = ad::Var<double, 3, ts::cpu>;
  ts::Rng rng(5);
  nn::MultiheadAttention<6, 2, ts::mha_options{.dropout = 0.3}>::state<double, ts::cpu> mha(rng);
  for (index_t i = 0; i < 18; ++i) mha.in_proj_bias.mutable_value().data()[i] = 0.1 * double(i % 4);
  V3 x(gc::values<3>({2, 5, 6}, 1), true), c(gc::values<3>({2, 5, 6}, 4), false);
  ts::Tensor<double, ts::dyn_shape_t<2>> fm(dims_t<2>{5, 5});
  for (index_t i = 0; i < 25; ++i) fm.data()[i] = i % 5 != 0 && i % 4 == 1 ? ninf : 0.3 * std::sin(double(i));
  auto& W = mha.in_proj_weight;
  auto& b = mha.in_proj_bias;
  auto& Wo = mha.out_proj_weight;
  gc::check([&] { return ad::sum(mha.forward(x, x, x, {.attn_mask = fm}) * c); }, x, W, b, Wo);
  gc::check(
      [&] {
        ts::Rng r(21);  // the same dropout mask on every evaluation
        nn::context ctx{.training = true, .rng = &r};
        return ad::sum(mha.forward(x, x, x, {.attn_mask = fm, .is_causal = true}, ctx) * c);
      },
      x, W, b, Wo);
  nn::MultiheadAttention<6, 3, ts::mha_options{.dropout = 0.2, .batch_first = false, .kdim = 4, .vdim = 5}>::state<double, ts::cpu> kv(rng);
  for (index_t i = 0; i < 18; ++i) kv.in_proj_bias.mutable_value().data()[i] = 0.05 * double(i % 3);
  V3 xs(gc::values<3>({5, 2, 6}, 1), true), cs(gc::values<3>({5, 2, 6}, 5), false);  // [T, N, E]
  V3 key(gc::values<3>({7, 2, 4}, 2), true), val(gc::values<3>({7, 2, 5}, 3), true);
  gc::check([&] { return ad::sum(kv.forward(xs, key, val) * cs); }, xs, key, val, kv.q_proj_weight, kv.k_proj_weight, kv.v_proj_weight,
            kv.in_proj_bias, kv.out_proj_weight, kv.out_proj_bias);
  gc::check(
      [&] {
        ts::Rng r(3);
        nn::context ctx{.training = true, .rng = &r};
        return ad::sum(kv.forward(xs, key, val, {}, ctx) * cs);
      },
      xs, key, val, kv.q_proj_weight, kv.k_proj_weight, kv.v_proj_weight, kv.in_proj_bias);
}

TEST_CASE("MultiheadAttention: kdim / vdim parameters as PyTorch's, dropout 1 gives out_proj's bias", "[nn][attention]") {
  ts::Rng rng(1);
  nn::MultiheadAttention<16, 4, ts::mha_options{.kdim = 8, .vdim = 24}>::state<float, ts::cpu> mha(rng);
  std::vector<std::string> names;
  mha.for_each_parameter("", [&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight",
                                          "out_proj.bias"});
  CHECK(!mha.in_proj_weight.defined());
  CHECK(mha.q_proj_weight.dims() == dims_t<2>{16, 16});
  CHECK(mha.k_proj_weight.dims() == dims_t<2>{16, 8});
  CHECK(mha.v_proj_weight.dims() == dims_t<2>{16, 24});
  CHECK(mha.in_proj_bias.dims() == dims_t<1>{48});
  // xavier_uniform_: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)); the draws fill the range
  auto bound_of = [](const auto& w) {
    double m = 0;
    for (index_t i = 0; i < w.size(); ++i) m = std::max(m, std::abs(double(w.value().data()[i])));
    return m;
  };
  const double aq = std::sqrt(6.0 / 32), ak = std::sqrt(6.0 / 24), av = std::sqrt(6.0 / 40);
  CHECK(bound_of(mha.q_proj_weight) <= aq);
  CHECK(bound_of(mha.q_proj_weight) > 0.9 * aq);
  CHECK(bound_of(mha.k_proj_weight) <= ak);
  CHECK(bound_of(mha.k_proj_weight) > 0.9 * ak);
  CHECK(bound_of(mha.v_proj_weight) <= av);
  CHECK(bound_of(mha.v_proj_weight) > 0.9 * av);
  for (index_t i = 0; i < 48; ++i) CHECK(mha.in_proj_bias.value().data()[i] == 0.0f);
  // a key or value of the wrong width names both shapes
  auto q = input<float, ts::cpu>({2, 3, 16}, 1);
  CHECK_THROWS_WITH(mha.forward(q, input<float, ts::cpu>({2, 4, 16}, 2), input<float, ts::cpu>({2, 4, 24}, 3)),
                    Catch::Contains("[2, 4, 16]") && Catch::Contains("[2, 4, 24]"));

  nn::MultiheadAttention<8, 2, ts::mha_options{.dropout = 1.0}>::state<double, ts::cpu> all(rng);
  for (index_t i = 0; i < 8; ++i) all.out_proj_bias.mutable_value().data()[i] = 0.5 + double(i);
  auto x = input<double, ts::cpu>({2, 5, 8}, 2);
  ts::Rng r(4);
  nn::context ctx{.training = true, .rng = &r};
  auto y = all.forward(x, ctx);
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(y.value().data()[i] == 0.5 + double(i % 8));  // every weight dropped
  nn::context eval{.training = false, .rng = &r};
  auto ye = all.forward(x, eval);
  int differ = 0;
  for (index_t i = 0; i < y.size(); ++i) differ += ye.value().data()[i] != y.value().data()[i];
  CHECK(differ == y.size());
  nn::context none{.training = true, .rng = nullptr};
  CHECK_THROWS_AS(all.forward(x, none), std::logic_error);
}

namespace {

vec layer_norm_ref(const vec& x, index_t cols, const vec& w, const vec& b) {
  vec y(x.size());
  for (std::size_t r = 0; r * std::size_t(cols) < x.size(); ++r) {
    const double* row = x.data() + r * std::size_t(cols);
    double mean = 0, var = 0;
    for (index_t c = 0; c < cols; ++c) mean += row[c] / double(cols);
    for (index_t c = 0; c < cols; ++c) var += (row[c] - mean) * (row[c] - mean) / double(cols);
    for (index_t c = 0; c < cols; ++c)
      y[r * std::size_t(cols) + std::size_t(c)] = (row[c] - mean) / std::sqrt(var + 1e-5) * w[std::size_t(c)] + b[std::size_t(c)];
  }
  return y;
}

/// x o mask for an inverted-dropout mask drawn from rng in element order (ad::dropout's rule).
vec dropped(vec x, double p, ts::Rng& rng) {
  for (auto& u : x) u = rng.uniform_double() < p ? 0.0 : u / (1.0 - p);
  return x;
}

}  // namespace

TEST_CASE("TransformerEncoderLayer: dropout on the attention weights in training, none in evaluation", "[nn][transformer]") {
  constexpr int E = 8, H = 2, FF = 12;
  constexpr double p = 0.2;
  using L = nn::TransformerEncoderLayer<E, H, FF, ts::transformer_options{.dropout = p}>;
  static_assert(std::is_same_v<L::attention, nn::MultiheadAttention<E, H, ts::mha_options{.dropout = p}>>,
                "self_attn has the layer's dropout, as PyTorch's");
  ts::Rng init(3);
  L::state<double, ts::cpu> layer(init);
  const index_t N = 2, T = 9;
  auto x = input<double, ts::cpu>({N, T, E}, 4);
  const mha_weights w = weights_of(layer.self_attn, E, true);
  auto encoder = [&](bool training, std::uint64_t seed) {
    // post-norm: norm1(x + drop(sa(x))), then norm2(h + drop(linear2(drop(relu(linear1(h)))))); the attention draws its
    // seed first, then each dropout its mask, from the one Rng
    ts::Rng r(seed);
    ref_opts ro;
    if (training) ro.p = p, ro.seed = r();
    vec sa = mha_ref(host(x), host(x), host(x), N, T, T, E, H, E, E, true, w, ro);
    if (training) sa = dropped(sa, p, r);
    vec h = host(x);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += sa[i];
    h = layer_norm_ref(h, E, host(layer.norm1.weight), host(layer.norm1.bias));
    vec z = linear_ref(h, N * T, E, host(layer.linear1.weight), host(layer.linear1.bias), FF);
    for (auto& u : z) u = std::max(u, 0.0);
    if (training) z = dropped(z, p, r);
    vec f = linear_ref(z, N * T, FF, host(layer.linear2.weight), host(layer.linear2.bias), E);
    if (training) f = dropped(f, p, r);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += f[i];
    return layer_norm_ref(h, E, host(layer.norm2.weight), host(layer.norm2.bias));
  };
  ts::Rng r(42);
  nn::context train{.training = true, .rng = &r};
  auto y = layer.forward(x, train);
  require_close(y.value().data(), encoder(true, 42), 1e-11);
  nn::context eval{.training = false, .rng = &r};
  auto ye = layer.forward(x, eval);
  require_close(ye.value().data(), encoder(false, 0), 1e-11);
  // gradients in training, every dropout mask fixed by the seed
  ad::Var<double, 3, ts::cpu> xg(gc::values<3>({2, 3, E}, 1), true), c(gc::values<3>({2, 3, E}, 2), false);
  gc::check(
      [&] {
        ts::Rng rr(9);
        nn::context ctx{.training = true, .rng = &rr};
        return ad::sum(layer.forward(xg, ctx) * c);
      },
      xg, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias, layer.self_attn.out_proj_weight, layer.linear1.weight);
}
