// nn::MultiheadAttention<E, Heads, mha_options{.bias = true, .dropout = 0.0, .batch_first = true, .kdim = 0, .vdim = 0}>:
// PyTorch's nn.MultiheadAttention(E, Heads) (see nn/layers.hpp for the layer protocol).
//   parameters   in_proj_weight [3E, E] (xavier_uniform_), in_proj_bias [3E] (zeros), out_proj.weight [E, E]
//                (U(-1/sqrt(E), 1/sqrt(E)), as a Linear), out_proj.bias [E] (zeros): PyTorch's names and init;
//                with kdim or vdim other than E (0 = E): q_proj_weight [E, E], k_proj_weight [E, kdim],
//                v_proj_weight [E, vdim] (xavier_uniform_ each) instead of in_proj_weight, as PyTorch
//   layout       batch_first = true is the default here (PyTorch's is false): [N, T, E]; false: [T, N, E]
//   in a model   self-attention [N, T, E] -> [N, T, E] without masks (needs kdim = vdim = E)
//   by hand      state.forward(query, key, value, {.attn_mask, .key_padding_mask, .is_causal}[, ctx]) for
//                cross-attention (key [N, S, kdim], value [N, S, vdim]) and masks (attn_mask [T, S] or
//                [N * Heads, T, S], bools with true = masked out or floats added to the scores; key_padding_mask
//                [N, S] bools)
//   dropout      on the attention weights, in training only (the context's training and rng; by hand: the ctx
//                passed, none without one), inverted (kept weights times 1 / (1 - dropout)), never materialised
// Self-attention projects x once ([N*T, E] x [E, 3E], one GEMM); the heads are read from that projection in place
// by the fused attention (autodiff/attention_ops.hpp) and written merged, [N*T, E], for out_proj's GEMM. The
// attention weights are never formed (need_weights=False in PyTorch's terms). A query whose keys are all masked gives
// NaN, as PyTorch.
#pragma once
#include <cmath>
#include <string>

#include "tessera/autodiff/attention_ops.hpp"
#include "tessera/autodiff/view_ops.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera {

/// Options of nn::MultiheadAttention (PyTorch's arguments; batch_first defaults to true here).
struct mha_options {
  bool bias = true;          ///< in_proj_bias and out_proj.bias
  double dropout = 0.0;      ///< on the attention weights, in training, in [0, 1]
  bool batch_first = true;   ///< [N, T, E] (false: [T, N, E], PyTorch's default)
  int kdim = 0;              ///< the keys' width (0: embed_dim)
  int vdim = 0;              ///< the values' width (0: embed_dim)
};

/// The masks of one attention call (PyTorch's MultiheadAttention.forward arguments; true = masked out).
struct mha_masks {
  ad::attention_mask attn_mask;         ///< [T, S] or [N * Heads, T, S]: bools (true = masked out) or floats (added)
  ad::attention_mask key_padding_mask;  ///< [N, S]
  bool is_causal = false;               ///< key s hidden from query t when s > t
};

namespace nn {

template <int E, int Heads, mha_options O = mha_options{}>
struct MultiheadAttention {
  static_assert(E > 0 && Heads > 0, "tessera::nn::MultiheadAttention: embed_dim and num_heads must be positive");
  static_assert(E % Heads == 0, "tessera::nn::MultiheadAttention: embed_dim must be divisible by num_heads");
  static_assert(O.dropout >= 0.0 && O.dropout <= 1.0, "tessera::nn::MultiheadAttention: dropout must be in [0, 1]");
  static_assert(O.kdim >= 0 && O.vdim >= 0, "tessera::nn::MultiheadAttention: kdim and vdim must be positive (0: embed_dim)");
  static constexpr index_t kdim = O.kdim ? O.kdim : E, vdim = O.vdim ? O.vdim : E;
  /// PyTorch's _qkv_same_embed_dim: one stacked in_proj_weight, else separate q, k and v projection weights.
  static constexpr bool same_embed_dim = kdim == E && vdim == E;
  template <class S>
  static constexpr bool accepts = S::rank == 3 && detail::fits(detail::ext<S>(2), E);
  template <class S>
  using expected = Shape<detail::ext<S>(0), detail::ext<S>(1), E>;
  template <class S>
  using output = Shape<S::extents[0], S::extents[1], E>;

  template <class T, class P>
  struct state {
    ad::Var<T, 2, P> in_proj_weight;   ///< [3E, E]: the query, key and value projections stacked (empty unless same_embed_dim)
    ad::Var<T, 2, P> q_proj_weight;    ///< [E, E] (only when kdim or vdim differs from E)
    ad::Var<T, 2, P> k_proj_weight;    ///< [E, kdim] (idem)
    ad::Var<T, 2, P> v_proj_weight;    ///< [E, vdim] (idem)
    ad::Var<T, 1, P> in_proj_bias;     ///< [3E] (empty without bias)
    ad::Var<T, 2, P> out_proj_weight;  ///< [E, E], named out_proj.weight
    ad::Var<T, 1, P> out_proj_bias;    ///< [E], named out_proj.bias (empty without bias)

    explicit state(Rng& rng) {
      // PyTorch builds out_proj (a Linear) first, then _reset_parameters: xavier_uniform_ on in_proj_weight, zero biases
      out_proj_weight = detail::uniform_parameter<T, 2, P>({E, E}, 1.0 / std::sqrt(double(E)), rng);
      if constexpr (same_embed_dim) {
        in_proj_weight = detail::uniform_parameter<T, 2, P>({3 * E, E}, std::sqrt(6.0 / double(E + 3 * E)), rng);
      } else {
        q_proj_weight = detail::uniform_parameter<T, 2, P>({E, E}, std::sqrt(6.0 / double(E + E)), rng);
        k_proj_weight = detail::uniform_parameter<T, 2, P>({E, kdim}, std::sqrt(6.0 / double(E + kdim)), rng);
        v_proj_weight = detail::uniform_parameter<T, 2, P>({E, vdim}, std::sqrt(6.0 / double(E + vdim)), rng);
      }
      if constexpr (O.bias) {
        in_proj_bias = detail::filled_parameter<T, 1, P>({3 * E}, T(0));
        out_proj_bias = detail::filled_parameter<T, 1, P>({E}, T(0));
      }
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      if constexpr (same_embed_dim) {
        f(prefix + "in_proj_weight", in_proj_weight);
      } else {
        f(prefix + "q_proj_weight", q_proj_weight);
        f(prefix + "k_proj_weight", k_proj_weight);
        f(prefix + "v_proj_weight", v_proj_weight);
      }
      if constexpr (O.bias) f(prefix + "in_proj_bias", in_proj_bias);
      f(prefix + "out_proj.weight", out_proj_weight);
      if constexpr (O.bias) f(prefix + "out_proj.bias", out_proj_bias);
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}

    /// In a model: self-attention without masks (dropout on the weights in training).
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context& ctx) const {
      static_assert(same_embed_dim, "tessera::nn::MultiheadAttention: self-attention in a model needs kdim = vdim = embed_dim "
                                    "(with other widths call forward(query, key, value) by hand)");
      return forward(x, x, x, {}, ctx);
    }

    /// Attention of query [N, T, E] over key [N, S, kdim] and value [N, S, vdim] ([T, N, E] / [S, N, .] without
    /// batch_first): [N, T, E].
    /// One Var as all three is self-attention (one projection GEMM); otherwise each input is projected by the whole
    /// in_proj_weight and the part it needs is read (a key Var also used as value is projected once).
    /// Without a context: no dropout (as evaluation); with one: dropout on the weights when ctx.training.
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& query, const ad::Var<T, 3, P>& key, const ad::Var<T, 3, P>& value,
                             const mha_masks& m = {}) const {
      return run(query, key, value, m, nullptr);
    }
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& query, const ad::Var<T, 3, P>& key, const ad::Var<T, 3, P>& value,
                             const mha_masks& m, context& ctx) const {
      return run(query, key, value, m, &ctx);
    }

    /// The attention and merged heads [rows of the query, E] from projections laid out [rows, 3E] (q in columns
    /// [0, E), k in [E, 2E), v in [2E, 3E)); nn::TransformerEncoderLayer calls it on its own [N*T, 3E] projection.
    /// Dropout on the weights when ctx is given and training.
    ad::Var<T, 2, P> attend(const ad::Var<T, 2, P>& qp, const ad::Var<T, 2, P>& kp, const ad::Var<T, 2, P>& vp, index_t N,
                            index_t Tq, index_t S, const mha_masks& m, bool covers, const context* ctx = nullptr) const {
      return attend_cols(qp, kp, vp, 3 * E, 3 * E, 3 * E, 0, E, 2 * E, N, Tq, S, m, covers, ctx);
    }

   private:
    ad::Var<T, 3, P> run(const ad::Var<T, 3, P>& query, const ad::Var<T, 3, P>& key, const ad::Var<T, 3, P>& value,
                         const mha_masks& m, const context* ctx) const {
      const auto &qd = query.dims(), &kd = key.dims(), &vd = value.dims();
      auto fail = [](const char* why, const auto& a, const auto& b) {
        throw shape_error(std::string("tessera: MultiheadAttention: ") + why + ": " + tessera::detail::format_dims(a) + " and " +
                          tessera::detail::format_dims(b));
      };
      if (qd[2] != E) fail("the query's last extent must be embed_dim", qd, dims_t<1>{E});
      if (kd[2] != kdim || vd[2] != vdim || vd[0] != kd[0] || vd[1] != kd[1])
        fail("key and value must have the same batch and length, kdim and vdim wide", kd, vd);
      const int bq = O.batch_first ? 0 : 1;
      if (qd[bq] != kd[bq]) fail("query and key differ in batch size", qd, kd);
      const index_t N = qd[bq], Tq = qd[1 - bq], S = kd[1 - bq];
      auto flat = [](const ad::Var<T, 3, P>& v) {
        return ad::reshape<2>(v, dims_t<2>{v.dims()[0] * v.dims()[1], v.dims()[2]});
      };
      if constexpr (!same_embed_dim) {  // three projections, [rows, E] each, with their thirds of in_proj_bias
        auto bias = [&](index_t i) { return O.bias ? ad::slice<0>(in_proj_bias, i * E, (i + 1) * E) : ad::Var<T, 1, P>{}; };
        auto qp = ad::linear(flat(query), q_proj_weight, bias(0));
        auto kp = ad::linear(flat(key), k_proj_weight, bias(1));
        auto vp = ad::linear(flat(value), v_proj_weight, bias(2));
        auto a = attend_cols(qp, kp, vp, E, E, E, 0, 0, 0, N, Tq, S, m, false, ctx);
        return ad::reshape<3>(ad::linear(a, out_proj_weight, out_proj_bias), qd);
      }
      const bool self = key.ptr() == query.ptr() && value.ptr() == query.ptr();
      ad::Var<T, 2, P> a;
      if (self) {
        auto qkv = ad::linear(flat(query), in_proj_weight, in_proj_bias);
        a = attend(qkv, qkv, qkv, N, Tq, S, m, true, ctx);
      } else {
        auto qp = ad::linear(flat(query), in_proj_weight, in_proj_bias);
        auto kp = ad::linear(flat(key), in_proj_weight, in_proj_bias);
        auto vp = value.ptr() == key.ptr() ? kp : ad::linear(flat(value), in_proj_weight, in_proj_bias);
        a = attend(qp, kp, vp, N, Tq, S, m, false, ctx);
      }
      return ad::reshape<3>(ad::linear(a, out_proj_weight, out_proj_bias), qd);
    }

    /// attend on projections of row widths wq, wk, wv with the heads of q, k, v from columns cq, ck, cv.
    ad::Var<T, 2, P> attend_cols(const ad::Var<T, 2, P>& qp, const ad::Var<T, 2, P>& kp, const ad::Var<T, 2, P>& vp, index_t wq,
                                 index_t wk, index_t wv, index_t cq, index_t ck, index_t cv, index_t N, index_t Tq, index_t S,
                                 const mha_masks& m, bool covers, const context* ctx) const {
      constexpr index_t d = E / Heads;
      // (n, h, t, c) of a [rows, 3E] projection: batch-first rows are n * T + t, else t * N + n
      auto strides = [&](index_t len, index_t width, index_t out[3]) {
        out[0] = O.batch_first ? len * width : width;
        out[1] = d;
        out[2] = O.batch_first ? width : N * width;
      };
      ad::detail::attention_layout L{N, Heads, Tq, S, d, d, cq, ck, cv, {}, {}, {}, {}, covers};
      strides(Tq, wq, L.qs);
      strides(S, wk, L.ks);
      strides(S, wv, L.vs);
      strides(Tq, E, L.os);
      ad::sdpa_options so;
      so.key_padding_mask = m.key_padding_mask;
      so.mask = m.attn_mask;
      if (so.mask.defined() && so.mask.rank == 3) {  // PyTorch's [N * Heads, T, S]: one mask per (batch, head)
        if (so.mask.dims[0] != N * Heads)
          throw shape_error("tessera: MultiheadAttention: a 3-d attn_mask " + so.mask.format() + " must be [batch * num_heads, " +
                            std::to_string(Tq) + ", " + std::to_string(S) + "] with batch * num_heads = " + std::to_string(N * Heads));
        so.mask.rank = 4;
        so.mask.dims[3] = so.mask.dims[2];
        so.mask.dims[2] = so.mask.dims[1];
        so.mask.dims[0] = N;
        so.mask.dims[1] = Heads;
      }
      auto masks = ad::detail::copy_masks<T, P>(so, N, Heads, Tq, S, "MultiheadAttention");
      const T scale = T(1.0 / std::sqrt(double(d)));
      const bool drop = O.dropout > 0.0 && ctx && ctx->training;
      const auto dargs =
          ad::detail::draw_attention_dropout(drop ? O.dropout : 0.0, drop ? ctx->rng : nullptr, "MultiheadAttention");
      return ad::detail::attention_core<2>(qp, kp, vp, L, dims_t<2>{N * Tq, E}, scale, m.is_causal, std::move(masks), dargs);
    }
  };
};

}  // namespace nn
}  // namespace tessera
