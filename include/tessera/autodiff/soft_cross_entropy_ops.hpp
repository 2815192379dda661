// Cross entropy with class-probability targets (PyTorch >= 1.10's F.cross_entropy when the target is a float tensor
// of the input's shape), written once for every policy as fused expressions (forward and backward):
//   cross_entropy(logits, probs, {.weight, .label_smoothing, .reduction})     logits [N, C] or [N, C, d1, ...], probs
//       of the same shape (each row a distribution over the classes; not checked, as PyTorch): per target
//       l = -sum_c w_c q_c log_softmax(x)_c with q = (1 - s) p + s / C (label smoothing s); the mean divides by the
//       number of targets (N * d1 * ...), not by the weights; ignore_index does not apply (as PyTorch).
//   cross_entropy_unreduced(logits, probs, {...})   one loss per target, [N] or [N, d1, ...].
// probs may be a Var (it gets a gradient: -(1 - s) w_c log_softmax(x)_c, as PyTorch's), a Var of the other host
// policy, or a tensor of any policy. The class-index forms are in autodiff/loss_ops.hpp.
#pragma once
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/autodiff/loss_ops.hpp"

namespace tessera::ad {
namespace detail {

/// The class weights [1, C, 1] (ones without weight), checked to hold one value per class.
template <class T, class P, std::size_t R>
Tensor<T, dyn_shape_t<3>, P> class_weights(const loss_weight& weight, const std::array<index_t, R>& xd, const char* op) {
  const index_t C = xd[1];
  std::vector<T> w(std::size_t(C), T(1));
  if (weight.defined()) {
    if (weight.dims().size() != 1 || weight.dims()[0] != C)
      throw shape_error(std::string("tessera: ") + op + ": weight " + weight.shape() + " must hold one value per class: input " +
                        tessera::detail::format_dims(xd) + " has " + std::to_string(C) + " classes");
    for (std::size_t c = 0; c < w.size(); ++c) w[c] = T(weight.values()[c]);
  }
  return Tensor<T, dyn_shape_t<3>, P>(w, dims_t<3>{1, C, 1});
}

/// Per-target losses of cross_entropy with probability targets, [N] or [N, d1, ...].
template <class T, int R, class P, class Y>
Var<T, R - 1, P> soft_cross_entropy_each(const Var<T, R, P>& x, const Y& target, const cross_entropy_options& o) {
  static_assert(R >= 2, "tessera: cross_entropy takes an input [N, C] or [N, C, d1, ...]");
  const auto& y = as_target<T, R, P>(target);
  const auto& xd = x.dims();
  if (xd != y.dims())
    throw shape_error("tessera: cross_entropy: input " + tessera::detail::format_dims(xd) + " and probability target " +
                      tessera::detail::format_dims(y.dims()) + " have different shapes (class-probability targets have the "
                      "input's shape)");
  const double eps = o.label_smoothing;
  if (!(eps >= 0.0 && eps <= 1.0))
    throw std::invalid_argument("tessera: cross_entropy: label_smoothing must be in [0, 1], got " + std::to_string(eps));
  using T3 = Tensor<T, dyn_shape_t<3>, P>;
  const index_t N = xd[0], C = xd[1];
  index_t S = 1;
  for (int i = 2; i < R; ++i) S *= xd[std::size_t(i)];
  auto wc = std::make_shared<T3>(class_weights<T, P>(o.weight, xd, "cross_entropy"));
  const auto x3 = as_ncs(x.value(), N, C, S);
  const auto y3 = as_ncs(y.value(), N, C, S);
  // log_softmax along the class axis as PyTorch rounds it: (x - max) - log(sum(exp(x - max)))
  auto m = std::make_shared<T3>(tessera::max<1>(x3, keepdim));
  auto ls = std::make_shared<T3>(tessera::log(tessera::sum<1>(tessera::exp(x3 - *m), keepdim)));
  const T a = T(1.0 - eps), b = T(eps / double(C));
  dims_t<R - 1> od{};
  od[0] = N;
  for (int i = 2; i < R; ++i) od[std::size_t(i - 1)] = xd[std::size_t(i)];
  using V = Var<T, R - 1, P>;
  typename V::tensor out(od);
  auto out3 = tessera::reshape<dyn_shape_t<3>>(out, dims_t<3>{N, 1, S});
  // the coefficient of log p_c: w_c q_c
  out3 = -tessera::sum<1>(*wc * (a * y3 + b) * ((x3 - *m) - *ls), keepdim);
  return V::make(std::move(out), [x, y, wc, m, ls, a, b, N, C, S](const auto& g) {
    const auto g3 = tessera::reshape<dyn_shape_t<3>>(g, dims_t<3>{N, 1, S});
    const auto x3 = as_ncs(x.value(), N, C, S);
    const auto y3 = as_ncs(y.value(), N, C, S);
    const auto logp = (x3 - *m) - *ls;
    bool acc;
    if (T* gx = grad_of(x, acc)) {
      // d l / d x_c = p_c sum_j w_j q_j - w_c q_c
      const T3 coef_sum = tessera::sum<1>(*wc * (a * y3 + b), keepdim);
      assign_grad<T, P>(gx, acc, N, C, S, g3 * (tessera::exp(logp) * coef_sum - *wc * (a * y3 + b)));
    }
    if (T* gy = grad_of(y, acc)) assign_grad<T, P>(gy, acc, N, C, S, -(g3 * a * *wc * logp));  // d l / d p_c = -(1 - s) w_c log p_c
  }, x, y);
}
}  // namespace detail

/// Cross entropy of logits [N, C] (or [N, C, d1, ...]) against class probabilities of the same shape (a float tensor
/// of any policy): PyTorch's F.cross_entropy with probability targets; weight and label_smoothing as PyTorch applies
/// them, ignore_index unused, the mean over the N * d1 * ... targets.
template <class T, int R, class P, class U, class S, class Q>
  requires std::is_floating_point_v<U>
Var<T, 0, P> cross_entropy(const Var<T, R, P>& logits, const Tensor<U, S, Q>& probs, const cross_entropy_options& opt = {}) {
  detail::check_reducing(opt.reduction, "cross_entropy");
  return detail::reduce_loss(detail::soft_cross_entropy_each(logits, probs, opt), opt.reduction);
}
/// The same with a Var target (it gets a gradient).
template <class T, int R, class P, class U, int RY, class Q>
Var<T, 0, P> cross_entropy(const Var<T, R, P>& logits, const Var<U, RY, Q>& probs, const cross_entropy_options& opt = {}) {
  detail::check_reducing(opt.reduction, "cross_entropy");
  return detail::reduce_loss(detail::soft_cross_entropy_each(logits, probs, opt), opt.reduction);
}
/// cross_entropy(logits [N, C], probs) with PyTorch's defaults: preferred to nn_ops.hpp's two-argument form (which
/// takes class indices only).
template <class T, class P, class U, class S, class Q>
  requires std::is_floating_point_v<U>
Var<T, 0, P> cross_entropy(const Var<T, 2, P>& logits, const Tensor<U, S, Q>& probs) {
  return ad::cross_entropy(logits, probs, cross_entropy_options{});
}
/// Without reduction: one loss per target, [N] or [N, d1, ...].
template <class T, int R, class P, class U, class S, class Q>
  requires std::is_floating_point_v<U>
Var<T, R - 1, P> cross_entropy_unreduced(const Var<T, R, P>& logits, const Tensor<U, S, Q>& probs,
                                         const cross_entropy_options& opt = {}) {
  return detail::soft_cross_entropy_each(logits, probs, opt);
}
template <class T, int R, class P, class U, int RY, class Q>
Var<T, R - 1, P> cross_entropy_unreduced(const Var<T, R, P>& logits, const Var<U, RY, Q>& probs,
                                         const cross_entropy_options& opt = {}) {
  return detail::soft_cross_entropy_each(logits, probs, opt);
}

}  // namespace tessera::ad
