// conv1d(x, w, b, options, act): PyTorch's 1-D convolution of an NCL Var (x [N, C, L], w [K, C/groups, KL],
// b [K]) with its gradients, run as conv2d on [N, C, 1, L] with a 1 x KL kernel (H = 1): one implementation, the
// 2-D one, for every policy. conv1d_options are PyTorch's Conv1d arguments.
#pragma once
#include <string>

#include "tessera/autodiff/nn_ops.hpp"

namespace tessera {

/// Stride, zero padding, dilation and channel groups of a 1-D convolution (PyTorch's Conv1d arguments); a
/// structural type, usable as a template argument: nn::Conv1d<4, 8, 3, conv1d_options{.padding = 1}>.
struct conv1d_options {
  int stride = 1;
  int padding = 0;
  int dilation = 1;
  int groups = 1;
  friend constexpr bool operator==(const conv1d_options&, const conv1d_options&) = default;
  constexpr bool valid() const { return stride >= 1 && padding >= 0 && dilation >= 1 && groups >= 1; }
  /// The same convolution as a 2-D one over [N, C, 1, L].
  constexpr conv2d_options as_2d() const { return {.stride = {1, stride}, .padding = {0, padding}, .dilation = {1, dilation}, .groups = groups}; }
};

namespace ad {

/// y = act(conv1d(x, w, opt) + b) for x [N, C, L], w [K, C/groups, KL], b [K] (may be empty: no bias).
template <class T, class P>
Var<T, 3, P> conv1d(const Var<T, 3, P>& x, const Var<T, 3, P>& w, const Var<T, 1, P>& b, conv1d_options opt = {},
                    activation act = activation::none) {
  const auto xd = x.dims(), wd = w.dims();
  if (!opt.valid())
    throw shape_error("tessera: conv1d: input " + tessera::detail::format_dims(xd) + " and weights " + tessera::detail::format_dims(wd) +
                      ": needs stride >= 1, padding >= 0, dilation >= 1 and groups >= 1");
  if (xd[2] + 2 * index_t(opt.padding) < index_t(opt.dilation) * (wd[2] - 1) + 1)
    throw shape_error("tessera: conv1d: input " + tessera::detail::format_dims(xd) + " and weights " + tessera::detail::format_dims(wd) +
                      ": the padded input is shorter than the (dilated) kernel");
  // channel and group mismatches are caught (with both shapes named) by conv2d
  auto y = conv2d(reshape<4>(x, dims_t<4>{xd[0], xd[1], 1, xd[2]}), reshape<4>(w, dims_t<4>{wd[0], wd[1], 1, wd[2]}), b, opt.as_2d(), act);
  const auto yd = y.dims();
  return reshape<3>(y, dims_t<3>{yd[0], yd[1], yd[3]});
}

}  // namespace ad
}  // namespace tessera
