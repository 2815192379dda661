// adaptive_avg_pool2d(x, OH, OW): PyTorch's adaptive average pooling of an NCHW Var to an OH x OW output (output
// cell (i, j) averages rows [floor(i*H/OH), ceil((i+1)*H/OH)) and the same for columns), with its gradient. Written
// once for every policy through backend<P>::adaptive_avg_pool2d / _backward (kernels/cpu/adaptive_pool.hpp on the
// host, kernels/cuda/adaptive_pool.hpp on the GPU).
#pragma once
#include <string>

#include "tessera/autodiff/nn_ops.hpp"

namespace tessera::ad {

/// y [N, C, OH, OW] = the adaptive average pooling of x [N, C, H, W] (OH, OW >= 1; they may exceed H, W: the
/// windows then repeat cells, as PyTorch). The gradient spreads each output's gradient evenly over its window.
template <class T, class P>
Var<T, 4, P> adaptive_avg_pool2d(const Var<T, 4, P>& x, index_t OH, index_t OW) {
  static_assert(std::is_floating_point_v<T>, "tessera: adaptive_avg_pool2d needs a floating-point type");
  using V = Var<T, 4, P>;
  const auto d = x.dims();
  if (OH < 1 || OW < 1 || d[2] < 1 || d[3] < 1)
    throw shape_error("tessera: adaptive_avg_pool2d: input " + tessera::detail::format_dims(d) + " to output " +
                      tessera::detail::format_dims(dims_t<4>{d[0], d[1], OH, OW}) + ": the input's and the output's "
                      "height and width must be at least 1");
  const tessera::detail::pool2d_geometry pg{d[0], d[1], d[2], d[3], OH, OW, 1, 1, 0};
  typename V::tensor y(d[0], d[1], OH, OW);
  backend<P>::adaptive_avg_pool2d(pg, x.value().data(), x.value().strides().data(), y.data());
  return V::make(std::move(y), [x, pg](const auto& g, const auto&) {
    bool acc;
    if (T* gx = detail::grad_of(x, acc)) backend<P>::adaptive_avg_pool2d_backward(pg, g.data(), gx, acc);
  }, x);
}

}  // namespace tessera::ad
