// nn::LayerNorm<N, layer_norm_options{.eps = 1e-5, .elementwise_affine = true, .bias = true}>: PyTorch's
// nn.LayerNorm(N) over the last axis of an input of any rank (see nn/layers.hpp for the layer protocol), parameters
// weight [N] = 1 and bias [N] = 0; one fused kernel each way (ad::layer_norm, autodiff/norm_ops.hpp).
#pragma once
#include <string>
#include <utility>

#include "tessera/autodiff/norm_ops.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera {

/// Options of nn::LayerNorm (PyTorch's LayerNorm arguments).
struct layer_norm_options {
  double eps = 1e-5;               ///< added to the variance
  bool elementwise_affine = true;  ///< learn weight (and bias)
  bool bias = true;                ///< with elementwise_affine: learn bias too
};

namespace nn {

namespace detail {
/// S with its last extent replaced by Last (Shape<Last> for a scalar shape).
template <class S, extent_t Last, class = std::make_index_sequence<(S::rank > 0 ? S::rank - 1 : 0)>>
struct with_last;
template <class S, extent_t Last, std::size_t... I>
struct with_last<S, Last, std::index_sequence<I...>> {
  using type = Shape<S::extents[I]..., Last>;
};
}  // namespace detail

template <int N, layer_norm_options O = layer_norm_options{}>
struct LayerNorm {
  static_assert(N > 0, "tessera::nn::LayerNorm: the normalized size must be positive");
  static_assert(O.eps >= 0.0, "tessera::nn::LayerNorm: eps must not be negative");
  template <class S>
  static constexpr bool accepts = S::rank >= 1 && detail::fits(detail::ext<S>(S::rank - 1), N);
  template <class S>
  using expected = typename detail::with_last<S, N>::type;
  template <class S>
  using output = S;

  template <class T, class P>
  struct state {
    ad::Var<T, 1, P> weight, bias;  ///< empty without elementwise_affine (bias also without O.bias)
    explicit state(Rng&) {
      if constexpr (O.elementwise_affine) {
        weight = detail::filled_parameter<T, 1, P>({N}, T(1));
        if constexpr (O.bias) bias = detail::filled_parameter<T, 1, P>({N}, T(0));
      }
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      if constexpr (O.elementwise_affine) {
        f(prefix + "weight", weight);
        if constexpr (O.bias) f(prefix + "bias", bias);
      }
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}
    template <int R>
    ad::Var<T, R, P> forward(const ad::Var<T, R, P>& x, context&) const {
      return ad::layer_norm<1>(x, weight, bias, O.eps);
    }
  };
};

}  // namespace nn
}  // namespace tessera
