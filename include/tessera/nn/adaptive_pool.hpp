// nn::AdaptiveAvgPool2d<OH, OW>: PyTorch's AdaptiveAvgPool2d as a layer type: [N, C, H, W] -> [N, C, OH, OW], each
// output cell the mean of its window (rows [floor(i*H/OH), ceil((i+1)*H/OH)), columns likewise); no parameters.
// AdaptiveAvgPool2d<1, 1> then Flatten is the global-average-pool head of a ResNet. Every policy
// (autodiff/adaptive_pool_ops.hpp).
#pragma once
#include "tessera/autodiff/adaptive_pool_ops.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera::nn {

/// Adaptive average pooling to OH x OW (OW defaults to OH, as PyTorch's single output_size).
template <int OH, int OW = OH>
struct AdaptiveAvgPool2d {
  static_assert(OH >= 1 && OW >= 1, "tessera::nn::AdaptiveAvgPool2d: the output size must be at least 1 x 1");
  template <class S>
  static constexpr bool accepts = S::rank == 4 && (detail::ext<S>(2) == dyn || detail::ext<S>(2) >= 1) &&
                                  (detail::ext<S>(3) == dyn || detail::ext<S>(3) >= 1);
  template <class S>
  using expected = Shape<detail::ext<S>(0), detail::ext<S>(1), dyn, dyn>;
  template <class S>
  using output = Shape<S::extents[0], S::extents[1], OH, OW>;
  template <class T, class P>
  struct state : detail::no_parameters {
    using detail::no_parameters::no_parameters;
    ad::Var<T, 4, P> forward(const ad::Var<T, 4, P>& x, context&) const { return ad::adaptive_avg_pool2d(x, OH, OW); }
  };
};

}  // namespace tessera::nn
