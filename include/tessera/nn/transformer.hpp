// nn::TransformerEncoderLayer<E, Heads, FF, transformer_options{...}>: PyTorch's nn.TransformerEncoderLayer(E, Heads,
// FF) on [N, T, E] (batch_first = true by default here; false: [T, N, E]), see nn/layers.hpp for the layer protocol.
//   post-norm (norm_first = false, PyTorch's default)   x = norm1(x + sa(x)); x = norm2(x + ff(x))
//   pre-norm  (norm_first = true)                       x = x + sa(norm1(x)); x = x + ff(norm2(x))
// with sa(x) = dropout(self_attn(x)) and ff(x) = dropout(linear2(dropout(act(linear1(x))))). Parameters named as
// PyTorch's: self_attn.in_proj_weight, self_attn.in_proj_bias, self_attn.out_proj.weight, self_attn.out_proj.bias,
// linear1.weight, linear1.bias, linear2.weight, linear2.bias, norm1.weight, norm1.bias, norm2.weight, norm2.bias.
// Everything runs on [N*T, E] rows: the projections and feed-forward are single GEMMs (linear1's ReLU is its
// epilogue). Dropout (training only) is applied where PyTorch applies it, the attention weights included (self_attn's
// dropout = dropout, inside the fused attention, which never forms the weights).
#pragma once
#include <stdexcept>
#include <string>

#include "tessera/autodiff/norm_ops.hpp"
#include "tessera/nn/attention.hpp"
#include "tessera/nn/layer_norm.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera {

/// The feed-forward activation of nn::TransformerEncoderLayer.
enum class transformer_activation { relu, gelu };

/// Options of nn::TransformerEncoderLayer (PyTorch's arguments; batch_first defaults to true here).
struct transformer_options {
  double dropout = 0.1;                                     ///< attention weights, residual branches, feed-forward (training)
  transformer_activation activation = transformer_activation::relu;
  double layer_norm_eps = 1e-5;
  bool batch_first = true;                                  ///< [N, T, E] (false: [T, N, E])
  bool norm_first = false;                                  ///< pre-norm instead of post-norm
  bool bias = true;                                         ///< biases of the linears, attention and norms
};

namespace nn {

template <int E, int Heads, int FF, transformer_options O = transformer_options{}>
struct TransformerEncoderLayer {
  static_assert(FF > 0, "tessera::nn::TransformerEncoderLayer: dim_feedforward must be positive");
  static_assert(O.dropout >= 0.0 && O.dropout < 1.0, "tessera::nn::TransformerEncoderLayer: dropout must be in [0, 1)");
  using attention = MultiheadAttention<E, Heads, mha_options{.bias = O.bias, .dropout = O.dropout, .batch_first = O.batch_first}>;
  using norm = LayerNorm<E, layer_norm_options{.eps = O.layer_norm_eps, .elementwise_affine = true, .bias = O.bias}>;
  template <class S>
  static constexpr bool accepts = attention::template accepts<S>;
  template <class S>
  using expected = typename attention::template expected<S>;
  template <class S>
  using output = typename attention::template output<S>;

  template <class T, class P>
  struct state {
    typename attention::template state<T, P> self_attn;
    typename Linear<E, FF, O.bias>::template state<T, P> linear1;
    typename Linear<FF, E, O.bias>::template state<T, P> linear2;
    typename norm::template state<T, P> norm1, norm2;
    explicit state(Rng& rng) : self_attn(rng), linear1(rng), linear2(rng), norm1(rng), norm2(rng) {}  // PyTorch's order

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      self_attn.for_each_parameter(prefix + "self_attn.", f);
      linear1.for_each_parameter(prefix + "linear1.", f);
      linear2.for_each_parameter(prefix + "linear2.", f);
      norm1.for_each_parameter(prefix + "norm1.", f);
      norm2.for_each_parameter(prefix + "norm2.", f);
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}

    /// x [N, T, E] -> [N, T, E]; masks as MultiheadAttention's (src_mask, src_key_padding_mask, is_causal).
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context& ctx, const mha_masks& m = {}) const {
      const auto& xd = x.dims();
      if (xd[2] != E)
        throw shape_error("tessera: TransformerEncoderLayer: the input " + tessera::detail::format_dims(xd) +
                          " must be d_model = " + std::to_string(E) + " wide (expected " +
                          tessera::detail::format_dims(dims_t<3>{xd[0], xd[1], E}) + ")");
      const index_t N = O.batch_first ? xd[0] : xd[1], Tn = O.batch_first ? xd[1] : xd[0];
      auto h = ad::reshape<2>(x, dims_t<2>{xd[0] * xd[1], E});
      auto drop = [&](const ad::Var<T, 2, P>& v) {
        if (!ctx.training || O.dropout == 0.0) return v;
        if (!ctx.rng) throw std::logic_error("tessera::nn::TransformerEncoderLayer: no random number generator in the context");
        return ad::dropout(v, O.dropout, *ctx.rng, true);
      };
      auto ln = [](const typename norm::template state<T, P>& n, const ad::Var<T, 2, P>& v) {
        return ad::layer_norm(v, n.weight, n.bias, O.layer_norm_eps);
      };
      auto sa = [&](const ad::Var<T, 2, P>& v) {
        auto qkv = ad::linear(v, self_attn.in_proj_weight, self_attn.in_proj_bias);
        auto a = self_attn.attend(qkv, qkv, qkv, N, Tn, Tn, m, true, &ctx);
        return drop(ad::linear(a, self_attn.out_proj_weight, self_attn.out_proj_bias));
      };
      auto ff = [&](const ad::Var<T, 2, P>& v) {
        ad::Var<T, 2, P> z;
        if constexpr (O.activation == transformer_activation::relu) z = ad::linear(v, linear1.weight, linear1.bias, ad::activation::relu);
        else z = ad::gelu(ad::linear(v, linear1.weight, linear1.bias));
        return drop(ad::linear(drop(z), linear2.weight, linear2.bias));
      };
      if constexpr (O.norm_first) {
        h = h + sa(ln(norm1, h));
        h = h + ff(ln(norm2, h));
      } else {
        h = ln(norm1, h + sa(h));
        h = ln(norm2, h + ff(h));
      }
      return ad::reshape<3>(h, xd);
    }
  };
};

}  // namespace nn
}  // namespace tessera
