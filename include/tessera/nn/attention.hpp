// nn::MultiheadAttention<E, Heads, mha_options{.bias = true, .dropout = 0.0, .batch_first = true}>: PyTorch's
// nn.MultiheadAttention(E, Heads) without kdim/vdim (see nn/layers.hpp for the layer protocol).
//   parameters   in_proj_weight [3E, E] (xavier_uniform_), in_proj_bias [3E] (zeros), out_proj.weight [E, E]
//                (U(-1/sqrt(E), 1/sqrt(E)), as a Linear), out_proj.bias [E] (zeros): PyTorch's names and init
//   layout       batch_first = true is the default here (PyTorch's is false): [N, T, E]; false: [T, N, E]
//   in a model   self-attention [N, T, E] -> [N, T, E] without masks
//   by hand      state.forward(query, key, value, {.attn_mask, .key_padding_mask, .is_causal}) for cross-attention
//                and masks (attn_mask [T, S] or [N * Heads, T, S], key_padding_mask [N, S]; true = masked out)
// Self-attention projects x once ([N*T, E] x [E, 3E], one GEMM); the heads are read from that projection in place
// by the fused attention (autodiff/attention_ops.hpp) and written merged, [N*T, E], for out_proj's GEMM. The
// attention weights are never formed (need_weights=False in PyTorch's terms). A query whose keys are all masked gives
// NaN, as PyTorch. Attention-weight dropout is not implemented (dropout must be 0).
#pragma once
#include <cmath>
#include <string>

#include "tessera/autodiff/attention_ops.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera {

/// Options of nn::MultiheadAttention (PyTorch's arguments; batch_first defaults to true here).
struct mha_options {
  bool bias = true;          ///< in_proj_bias and out_proj.bias
  double dropout = 0.0;      ///< on the attention weights: not implemented, must be 0
  bool batch_first = true;   ///< [N, T, E] (false: [T, N, E], PyTorch's default)
};

/// The masks of one attention call (PyTorch's MultiheadAttention.forward arguments; true = masked out).
struct mha_masks {
  ad::attention_mask attn_mask;         ///< [T, S] or [N * Heads, T, S]
  ad::attention_mask key_padding_mask;  ///< [N, S]
  bool is_causal = false;               ///< key s hidden from query t when s > t
};

namespace nn {

template <int E, int Heads, mha_options O = mha_options{}>
struct MultiheadAttention {
  static_assert(E > 0 && Heads > 0, "tessera::nn::MultiheadAttention: embed_dim and num_heads must be positive");
  static_assert(E % Heads == 0, "tessera::nn::MultiheadAttention: embed_dim must be divisible by num_heads");
  static_assert(O.dropout == 0.0, "tessera::nn::MultiheadAttention: attention-weight dropout is not implemented (dropout must be 0)");
  template <class S>
  static constexpr bool accepts = S::rank == 3 && detail::fits(detail::ext<S>(2), E);
  template <class S>
  using expected = Shape<detail::ext<S>(0), detail::ext<S>(1), E>;
  template <class S>
  using output = Shape<S::extents[0], S::extents[1], E>;

  template <class T, class P>
  struct state {
    ad::Var<T, 2, P> in_proj_weight;   ///< [3E, E]: the query, key and value projections stacked
    ad::Var<T, 1, P> in_proj_bias;     ///< [3E] (empty without bias)
    ad::Var<T, 2, P> out_proj_weight;  ///< [E, E], named out_proj.weight
    ad::Var<T, 1, P> out_proj_bias;    ///< [E], named out_proj.bias (empty without bias)

    explicit state(Rng& rng) {
      // PyTorch builds out_proj (a Linear) first, then _reset_parameters: xavier_uniform_ on in_proj_weight, zero biases
      out_proj_weight = detail::uniform_parameter<T, 2, P>({E, E}, 1.0 / std::sqrt(double(E)), rng);
      in_proj_weight = detail::uniform_parameter<T, 2, P>({3 * E, E}, std::sqrt(6.0 / double(E + 3 * E)), rng);
      if constexpr (O.bias) {
        in_proj_bias = detail::filled_parameter<T, 1, P>({3 * E}, T(0));
        out_proj_bias = detail::filled_parameter<T, 1, P>({E}, T(0));
      }
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      f(prefix + "in_proj_weight", in_proj_weight);
      if constexpr (O.bias) f(prefix + "in_proj_bias", in_proj_bias);
      f(prefix + "out_proj.weight", out_proj_weight);
      if constexpr (O.bias) f(prefix + "out_proj.bias", out_proj_bias);
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}

    /// In a model: self-attention without masks.
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context&) const { return forward(x, x, x); }

    /// Attention of query [N, T, E] over key and value [N, S, E] ([T, N, E] / [S, N, E] without batch_first): [N, T, E].
    /// One Var as all three is self-attention (one projection GEMM); otherwise each input is projected by the whole
    /// in_proj_weight and the part it needs is read (a key Var also used as value is projected once).
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& query, const ad::Var<T, 3, P>& key, const ad::Var<T, 3, P>& value,
                             const mha_masks& m = {}) const {
      const auto &qd = query.dims(), &kd = key.dims(), &vd = value.dims();
      auto fail = [](const char* why, const auto& a, const auto& b) {
        throw shape_error(std::string("tessera: MultiheadAttention: ") + why + ": " + tessera::detail::format_dims(a) + " and " +
                          tessera::detail::format_dims(b));
      };
      if (qd[2] != E) fail("the query's last extent must be embed_dim", qd, dims_t<1>{E});
      if (kd[2] != E || vd != kd) fail("key and value must have the same shape, embed_dim wide", kd, vd);
      const int bq = O.batch_first ? 0 : 1;
      if (qd[bq] != kd[bq]) fail("query and key differ in batch size", qd, kd);
      const index_t N = qd[bq], Tq = qd[1 - bq], S = kd[1 - bq];
      auto flat = [](const ad::Var<T, 3, P>& v) {
        return ad::reshape<2>(v, dims_t<2>{v.dims()[0] * v.dims()[1], E});
      };
      const bool self = key.ptr() == query.ptr() && value.ptr() == query.ptr();
      ad::Var<T, 2, P> a;
      if (self) {
        auto qkv = ad::linear(flat(query), in_proj_weight, in_proj_bias);
        a = attend(qkv, qkv, qkv, N, Tq, S, m, true);
      } else {
        auto qp = ad::linear(flat(query), in_proj_weight, in_proj_bias);
        auto kp = ad::linear(flat(key), in_proj_weight, in_proj_bias);
        auto vp = value.ptr() == key.ptr() ? kp : ad::linear(flat(value), in_proj_weight, in_proj_bias);
        a = attend(qp, kp, vp, N, Tq, S, m, false);
      }
      return ad::reshape<3>(ad::linear(a, out_proj_weight, out_proj_bias), qd);
    }

    /// The attention and merged heads [rows of the query, E] from projections laid out [rows, 3E] (q in columns
    /// [0, E), k in [E, 2E), v in [2E, 3E)); nn::TransformerEncoderLayer calls it on its own [N*T, 3E] projection.
    ad::Var<T, 2, P> attend(const ad::Var<T, 2, P>& qp, const ad::Var<T, 2, P>& kp, const ad::Var<T, 2, P>& vp, index_t N,
                            index_t Tq, index_t S, const mha_masks& m, bool covers) const {
      constexpr index_t d = E / Heads, W = 3 * E;
      // (n, h, t, c) of a [rows, 3E] projection: batch-first rows are n * T + t, else t * N + n
      auto strides = [&](index_t len, index_t width, index_t out[3]) {
        out[0] = O.batch_first ? len * width : width;
        out[1] = d;
        out[2] = O.batch_first ? width : N * width;
      };
      ad::detail::attention_layout L{N, Heads, Tq, S, d, d, 0, E, 2 * E, {}, {}, {}, {}, covers};
      strides(Tq, W, L.qs);
      strides(S, W, L.ks);
      strides(S, W, L.vs);
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
      auto masks = ad::detail::copy_masks<P>(so, N, Heads, Tq, S, "MultiheadAttention");
      const T scale = T(1.0 / std::sqrt(double(d)));
      return ad::detail::attention_core<2>(qp, kp, vp, L, dims_t<2>{N * Tq, E}, scale, m.is_causal, std::move(masks));
    }
  };
};

}  // namespace nn
}  // namespace tessera
