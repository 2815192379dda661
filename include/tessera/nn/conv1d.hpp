// nn::Conv1d<In, Out, K, conv1d_options{...}>: PyTorch's Conv1d as a layer type: [N, In, L] -> [N, Out, L'],
// parameters "weight" [Out, In/groups, K] and "bias" [Out], both U(-1/sqrt(In/groups * K), +) as PyTorch. Runs as
// the 2-D convolution with H = 1 (autodiff/conv1d_ops.hpp) on every policy; a following activation is its epilogue.
#pragma once
#include <cmath>
#include <string>

#include "tessera/autodiff/conv1d_ops.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera::nn {

/// 1-D convolution, In -> Out channels, kernel K: Conv1d<16, 32, 3, conv1d_options{.padding = 1}>.
template <int In, int Out, int K, conv1d_options O = conv1d_options{}>
struct Conv1d {
  static_assert(In > 0 && Out > 0 && K > 0, "tessera::nn::Conv1d: channels and kernel size must be positive");
  static_assert(O.valid(), "tessera::nn::Conv1d: needs stride >= 1, padding >= 0, dilation >= 1 and groups >= 1");
  static_assert(In % O.groups == 0 && Out % O.groups == 0, "tessera::nn::Conv1d: channels must be multiples of the groups");
  static constexpr bool fuses_activation = true;  ///< runs a following activation as its epilogue (nn/fusion.hpp)
  template <class S>
  static constexpr bool accepts = S::rank == 3 && detail::fits(detail::ext<S>(1), In) &&
                                  (detail::ext<S>(2) == dyn || detail::ext<S>(2) + 2 * O.padding >= O.dilation * (K - 1) + 1);
  template <class S>
  using expected = Shape<detail::ext<S>(0), In, detail::ext<S>(2)>;
  template <class S>
  using output = Shape<S::extents[0], Out, tessera::detail::conv_extent(S::extents[2], K, O.stride, O.padding, O.dilation)>;

  template <class T, class P>
  struct state {
    ad::Var<T, 3, P> weight;
    ad::Var<T, 1, P> bias;
    explicit state(Rng& rng) {
      const double bound = 1.0 / std::sqrt(double(In / O.groups * K));
      weight = detail::uniform_parameter<T, 3, P>({Out, In / O.groups, K}, bound, rng);
      bias = detail::uniform_parameter<T, 1, P>({Out}, bound, rng);
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      f(prefix + "weight", weight);
      f(prefix + "bias", bias);
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context&, ad::activation act = ad::activation::none) const {
      return ad::conv1d(x, weight, bias, O, act);
    }
  };
};

}  // namespace tessera::nn
