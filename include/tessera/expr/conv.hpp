// conv2d(x, w, options) over NCHW tensors as an expression node (operands and geometry). At the top of an
// assignment the planner has it written into the destination directly (policy/planner.hpp); an elementwise tree
// around it (bias, activation, residual add...) runs as the convolution's epilogue on each finished block; inside
// any other expression it is evaluated once into a temporary. With the options as a template argument,
// conv2d<conv2d_options{.padding = 1}>(x, w), static input shapes give a static output shape and channel mismatches
// are compile errors. Stride, padding and dilation are per axis (hw: one int for both, or {h, w}); the kernel's
// height and width are the weights' dims 2 and 3.
#pragma once
#include <memory>
#include <string>
#include <type_traits>

#include "tessera/expr/matmul.hpp"
#include "tessera/kernels/backend.hpp"

namespace tessera {

/// Stride, zero padding and dilation per axis, and channel groups (PyTorch's Conv2d arguments). Each of the three
/// takes one int for both axes or {h, w}: conv2d_options{.stride = 2, .padding = {1, 2}}. A structural type, so it
/// can be a template argument: conv2d<conv2d_options{.padding = 1}>(x, w), nn::Conv2d<1, 8, 3, {.padding = 1}>.
struct conv2d_options {
  hw stride = 1;
  hw padding = 0;
  hw dilation = 1;
  int groups = 1;
  friend constexpr bool operator==(const conv2d_options&, const conv2d_options&) = default;
  /// stride >= 1, padding >= 0, dilation >= 1 on both axes and groups >= 1.
  constexpr bool valid() const {
    return stride.h >= 1 && stride.w >= 1 && padding.h >= 0 && padding.w >= 0 && dilation.h >= 1 && dilation.w >= 1 && groups >= 1;
  }
};

namespace op {
struct conv2d {
  static constexpr const char* name = "conv2d";
};
}  // namespace op

namespace error {
/// Instantiated when the input's channels differ from the weights' input channels times the groups.
template <class XShape, class WShape, int Groups>
struct conv2d_input_channels_differ {
  static constexpr extent_t c = XShape::extents[1], cw = WShape::extents[1];
  static constexpr bool ok = c == dyn || cw == dyn || c == cw * Groups;
  static_assert(ok, "tessera: conv2d: the input's channels (dim 1 of x) must equal the weights' input channels (dim 1 "
                    "of w) times the groups");
};
template <class WShape, int Groups>
struct conv2d_output_channels_not_divisible_by_groups {
  static constexpr bool ok = WShape::extents[0] == dyn || WShape::extents[0] % Groups == 0;
  static_assert(ok, "tessera: conv2d: the output channels (dim 0 of w) must be a multiple of the groups");
};
template <class XShape, class WShape, hw Pad, hw Dilation>
struct conv2d_input_smaller_than_kernel {
  static constexpr auto fits = [](extent_t in, extent_t k, int pad, int dil) { return in == dyn || k == dyn || in + 2 * pad >= dil * (k - 1) + 1; };
  static constexpr bool ok = fits(XShape::extents[2], WShape::extents[2], Pad.h, Dilation.h) &&
                             fits(XShape::extents[3], WShape::extents[3], Pad.w, Dilation.w);
  static_assert(ok, "tessera: conv2d: the padded input is smaller than the (dilated) kernel");
};
template <class XShape, class WShape>
struct conv2d_needs_nchw {
  static constexpr bool ok = XShape::rank == 4 && WShape::rank == 4;
  static_assert(ok, "tessera: conv2d takes an NCHW input (rank 4) and weights [out channels, in channels / groups, "
                    "kernel height, kernel width] (rank 4)");
};
}  // namespace error

namespace detail {

constexpr extent_t conv_extent(extent_t in, extent_t k, int stride, int pad, int dilation) {
  return in == dyn || k == dyn ? dyn : (in + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
}

/// Static: the options are known at compile time (O), so the output's height and width can be too.
template <class X, class Wt, conv2d_options O, bool Static>
using conv2d_shape_t = Shape<X::shape_type::extents[0], Wt::shape_type::extents[0],
                             Static ? conv_extent(X::shape_type::extents[2], Wt::shape_type::extents[2], O.stride.h, O.padding.h, O.dilation.h) : dyn,
                             Static ? conv_extent(X::shape_type::extents[3], Wt::shape_type::extents[3], O.stride.w, O.padding.w, O.dilation.w) : dyn>;

template <class X, class Wt, bool Static, conv2d_options O>
struct conv2d_node : contraction_node_base<conv2d_node<X, Wt, Static, O>, typename X::value_type, conv2d_shape_t<X, Wt, O, Static>,
                                           common_policy_t<typename X::policy, typename Wt::policy>> {
  using value_type = typename X::value_type;
  using shape_type = conv2d_shape_t<X, Wt, O, Static>;
  using policy = common_policy_t<typename X::policy, typename Wt::policy>;
  static constexpr int rank = 4;
  static constexpr bool epilogue_ok = false;      // not a (row, column) matrix epilogue...
  static constexpr bool nchw_epilogue_ok = true;  // ...but one over (image, channel, plane)

  X x;
  Wt w;
  conv2d_options opt;
  conv_geometry geo{};
  dims_t<4> dims_;

  conv2d_node(X x_, Wt w_, conv2d_options o) : x(std::move(x_)), w(std::move(w_)), opt(o) {
    const auto& dx = x.dims();
    const auto& dw = w.dims();
    auto fail = [&](const std::string& why) {
      throw shape_error("tessera: conv2d: input " + format_dims(dx) + " and weights " + format_dims(dw) + ": " + why);
    };
    if (!o.valid()) fail("needs stride >= 1, padding >= 0, dilation >= 1 (on both axes) and groups >= 1");
    if (dx[1] != dw[1] * o.groups)
      fail("the input has " + std::to_string(dx[1]) + " channels but the weights take " + std::to_string(dw[1]) + " x " +
           std::to_string(o.groups) + " group(s)");
    if (dw[0] % o.groups != 0) fail("the output channels are not a multiple of the " + std::to_string(o.groups) + " groups");
    if (dx[2] + 2 * o.padding.h < o.dilation.h * (dw[2] - 1) + 1 || dx[3] + 2 * o.padding.w < o.dilation.w * (dw[3] - 1) + 1)
      fail("the padded input is smaller than the kernel (dilated)");
    geo = {dx[0], dx[1], dx[2], dx[3], dw[0], dw[2], dw[3],
           conv_out_extent(dx[2], dw[2], o.stride.h, o.padding.h, o.dilation.h),
           conv_out_extent(dx[3], dw[3], o.stride.w, o.padding.w, o.dilation.w),
           o.stride, o.padding, o.dilation, o.groups};
    dims_ = {geo.N, geo.K, geo.OH, geo.OW};
  }
  const dims_t<4>& expr_dims() const { return dims_; }
  const conv_geometry& geometry() const { return geo; }

  template <class F>
  void for_each_operand(F&& f) const {
    f(x);
    f(w);
  }

};

template <bool Static, conv2d_options O, class X, class Wt>
auto make_conv2d(X&& x, Wt&& w, conv2d_options o) {
  auto ex = contraction_operand(std::forward<X>(x));
  auto ew = contraction_operand(std::forward<Wt>(w));
  using EX = decltype(ex);
  using EW = decltype(ew);
  (void)error::conv2d_needs_nchw<typename EX::shape_type, typename EW::shape_type>::ok;
  if constexpr (EX::rank == 4 && EW::rank == 4) {
    (void)error::element_types_differ<op::conv2d, typename EX::value_type, typename EW::value_type>::ok;
    if constexpr (Static) {
      (void)error::conv2d_input_channels_differ<typename EX::shape_type, typename EW::shape_type, O.groups>::ok;
      (void)error::conv2d_output_channels_not_divisible_by_groups<typename EW::shape_type, O.groups>::ok;
      (void)error::conv2d_input_smaller_than_kernel<typename EX::shape_type, typename EW::shape_type, O.padding, O.dilation>::ok;
    }
    return conv2d_node<EX, EW, Static, O>(std::move(ex), std::move(ew), o);
  }
}
}  // namespace detail

/// 2-D convolution (cross-correlation, as in PyTorch) of an NCHW input with weights [K, C/groups, R, S]:
/// conv2d(x, w, {.padding = 1}), conv2d(x, w, {.stride = {2, 1}, .padding = {1, 0}}). The output's height and width are dynamic; see the overload below.
template <detail::TensorLike X, detail::TensorLike Wt>
auto conv2d(X&& x, Wt&& w, conv2d_options o = {}) {
  return detail::make_conv2d<false, conv2d_options{}>(std::forward<X>(x), std::forward<Wt>(w), o);
}

/// conv2d with the options fixed at compile time, conv2d<conv2d_options{.padding = 1}>(x, w): static input shapes
/// give a static output shape, and channel mismatches fail to compile.
template <conv2d_options O, detail::TensorLike X, detail::TensorLike Wt>
auto conv2d(X&& x, Wt&& w) {
  static_assert(O.valid(), "tessera: conv2d needs stride >= 1, padding >= 0, dilation >= 1 (on both axes) and groups >= 1");
  return detail::make_conv2d<true, O>(std::forward<X>(x), std::forward<Wt>(w), O);
}

}  // namespace tessera
