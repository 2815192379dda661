// Losses with PyTorch's options (torch.nn.functional's formulas, defaults, reductions and NaN behaviour), written
// once for every policy as a few fused expressions each (forward and backward; no loss-specific kernel):
//   cross_entropy / nll_loss            class-index targets, logits [N, C] or [N, C, d1, ...] with labels [N] or
//                                       [N, d1, ...]; class weight, ignore_index, label_smoothing (cross_entropy)
//                                       (cross_entropy with class-probability targets: autodiff/soft_cross_entropy_ops.hpp)
//   binary_cross_entropy_with_logits    weight, pos_weight (PyTorch's log-sum-exp form: finite for any logit)
//   binary_cross_entropy                probabilities in [0, 1], each log clamped at -100
//   smooth_l1_loss (beta), huber_loss (delta), l1_loss, mse_loss
// reduction: mean (the default), sum, none. A reduction to a scalar gives a Var of rank 0; reduction::none keeps one
// loss per element (per sample for the class losses), a Var of another rank, so it is spelled `<name>_unreduced`
// (the reducing functions refuse reduction::none with a message naming it). Targets and labels may be tensors of any
// policy (read or copied where the inputs are; a model on cpu_threads takes targets read on cpu), targets also views
// of any policy (strided ones read in logical order) or Vars (gradients flow into a target Var as PyTorch's do; a Var
// on the other host policy is copied, its gradient copied back). The weights are read on the host when the loss is built.
#pragma once
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/autodiff/nn_ops.hpp"
#include "tessera/autodiff/ops.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/expr/views.hpp"

namespace tessera::ad {

/// How a loss combines its per-element values (PyTorch's `reduction`): their mean, their sum, or none (kept).
enum class reduction { none, mean, sum };

/// Optional per-class (cross_entropy, nll_loss) or per-element (binary cross entropy) weights, read on the host
/// from a tensor or Var of any policy, or given as a list: `.weight = w`, `.weight = {1.0, 2.0, 0.5}`.
class loss_weight {
 public:
  loss_weight() = default;
  loss_weight(std::initializer_list<double> values) : values_(values), dims_{index_t(values.size())}, defined_(true) {}
  template <class U, class S, class Q>
  loss_weight(const Tensor<U, S, Q>& t) : dims_(t.dims().begin(), t.dims().end()), defined_(true) {  // NOLINT: `.weight = w`
    static_assert(std::is_floating_point_v<U>, "tessera: loss weight: the weights must be floating point");
    for (U v : t.to_vector()) values_.push_back(double(v));
  }
  template <class U, int R, class Q>
  loss_weight(const Var<U, R, Q>& v) : loss_weight(v.value()) {}  // NOLINT: the value (weights take no gradient)

  bool defined() const { return defined_; }
  const std::vector<double>& values() const { return values_; }
  const std::vector<index_t>& dims() const { return dims_; }
  std::string shape() const {
    std::string s = "[";
    for (std::size_t i = 0; i < dims_.size(); ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
    return s + "]";
  }

 private:
  std::vector<double> values_;
  std::vector<index_t> dims_;
  bool defined_ = false;
};

/// cross_entropy's options (PyTorch's defaults): weight (one per class, C values), ignore_index (targets equal to
/// it give zero loss and gradient and do not count in the mean), label_smoothing in [0, 1], reduction.
struct cross_entropy_options {
  loss_weight weight{};
  index_t ignore_index = -100;
  double label_smoothing = 0.0;
  ad::reduction reduction = ad::reduction::mean;
};
/// nll_loss's options: weight (C values), ignore_index, reduction.
struct nll_loss_options {
  loss_weight weight{};
  index_t ignore_index = -100;
  ad::reduction reduction = ad::reduction::mean;
};
/// binary_cross_entropy_with_logits's options: weight (broadcast to the input), pos_weight (weight of the positive
/// term, broadcast to the input: usually one per class, the last dimension), reduction.
struct bce_with_logits_options {
  loss_weight weight{};
  loss_weight pos_weight{};
  ad::reduction reduction = ad::reduction::mean;
};
/// binary_cross_entropy's options: weight (broadcast to the input), reduction.
struct bce_options {
  loss_weight weight{};
  ad::reduction reduction = ad::reduction::mean;
};
/// smooth_l1_loss's options: beta >= 0 (0 makes it l1_loss), reduction.
struct smooth_l1_options {
  double beta = 1.0;
  ad::reduction reduction = ad::reduction::mean;
};
/// huber_loss's options: delta > 0, reduction.
struct huber_options {
  double delta = 1.0;
  ad::reduction reduction = ad::reduction::mean;
};
/// l1_loss's and mse_loss's options: reduction.
struct l1_options { ad::reduction reduction = ad::reduction::mean; };
struct mse_options { ad::reduction reduction = ad::reduction::mean; };

namespace detail {

/// A reducing loss refuses reduction::none (its result would have another rank).
inline void check_reducing(ad::reduction r, const char* op) {
  if (r == ad::reduction::none)
    throw std::invalid_argument(std::string("tessera: ") + op + ": reduction::none keeps one loss per element, a Var of " +
                                "another rank: call ad::" + op + "_unreduced");
}

// as_target (the Var a target of any policy becomes) is in autodiff/nn_ops.hpp, which mse_loss(x, y) shares. The public
// losses convert the target once and the per-element implementations below take it as a Var of P, so that a loss's
// expressions are instantiated once per input type whatever form the target takes.

/// A per-element weight as a tensor of P with the input's rank (leading extents 1), checked to broadcast to x.
/// Undefined: a single 1.
template <class T, int R, class P>
Tensor<T, dyn_shape_t<R>, P> broadcast_weight(const loss_weight& w, const dims_t<R>& x, const char* op, const char* what) {
  dims_t<R> d{};
  for (auto& e : d) e = 1;
  if (!w.defined()) return Tensor<T, dyn_shape_t<R>, P>(std::vector<T>{T(1)}, d);
  const auto& wd = w.dims();
  bool ok = int(wd.size()) <= R;
  for (std::size_t i = 0; ok && i < wd.size(); ++i) {
    const index_t e = wd[wd.size() - 1 - i], xe = x[std::size_t(R) - 1 - i];
    ok = e == 1 || e == xe;
    d[std::size_t(R) - 1 - i] = e;
  }
  if (!ok)
    throw shape_error(std::string("tessera: ") + op + ": " + what + " " + w.shape() + " cannot be broadcast to input " +
                      tessera::detail::format_dims(x));
  return Tensor<T, dyn_shape_t<R>, P>(std::vector<T>(w.values().begin(), w.values().end()), d);
}

/// x reduced as `r` says (mean or sum) to a scalar.
template <class T, int R, class P>
Var<T, 0, P> reduce_loss(const Var<T, R, P>& per, ad::reduction r) { return r == ad::reduction::sum ? ad::sum(per) : ad::mean(per); }

/// The class targets of cross_entropy / nll_loss, read on the host and laid out for the input seen as [N, C, S]
/// (S: the product of the extents after the class axis): labels ([N, 1, S], -1 where ignored, so that no class
/// matches), the weight of each target (0 where ignored), whether it counts, the class indices [1, C, 1], the class
/// weights [1, C, 1] (ones without weight), and the weighted number of targets (the mean's divisor).
template <class T, class P>
struct class_targets {
  index_t N = 0, C = 0, S = 1;
  Tensor<index_t, dyn_shape_t<3>, P> label, cls;
  Tensor<T, dyn_shape_t<3>, P> wy, wc;
  Tensor<bool, dyn_shape_t<3>, P> keep;
  std::vector<double> wy_host;  // per target
  std::vector<bool> keep_host;
  double wsum = 0, divisor = 0;  // the sums of the class weights and of the weights of the targets that count
};

template <class T, class P, std::size_t R, class L, class SL, class PL>
class_targets<T, P> read_targets(const std::array<index_t, R>& xd, const Tensor<L, SL, PL>& labels, const loss_weight& weight,
                                 index_t ignore_index, const char* op) {
  static_assert(std::is_integral_v<L>, "tessera: cross_entropy / nll_loss take integer class labels");
  static_assert(R >= 2, "tessera: cross_entropy / nll_loss take an input [N, C] or [N, C, d1, ...]");
  static_assert(std::size_t(SL::rank) + 1 == R,
                "tessera: cross_entropy / nll_loss take labels with the input's rank minus one ([N] for [N, C], [N, d1, ...] "
                "for [N, C, d1, ...])");
  class_targets<T, P> t;
  t.N = xd[0];
  t.C = xd[1];
  bool same = labels.dims()[0] == xd[0];
  for (std::size_t i = 2; i < R; ++i) {
    t.S *= xd[i];
    same = same && labels.dims()[i - 1] == xd[i];
  }
  if (!same)
    throw shape_error(std::string("tessera: ") + op + ": input " + tessera::detail::format_dims(xd) + " and labels " +
                      tessera::detail::format_dims(labels.dims()) + " do not fit (labels: the input's shape without axis 1)");
  std::vector<double> w(std::size_t(t.C), 1.0);
  if (weight.defined()) {
    if (weight.dims().size() != 1 || weight.dims()[0] != t.C)
      throw shape_error(std::string("tessera: ") + op + ": weight " + weight.shape() + " must hold one value per class: input " +
                        tessera::detail::format_dims(xd) + " has " + std::to_string(t.C) + " classes");
    w = weight.values();
  }
  for (double v : w) t.wsum += v;
  const auto lab = labels.to_vector();
  const std::size_t n = lab.size();
  std::vector<index_t> lh(n);
  std::vector<T> wyh(n);
  t.wy_host.resize(n);
  t.keep_host.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    const index_t l = index_t(lab[k]);
    const bool keep = l != ignore_index;
    if (keep && (l < 0 || l >= t.C))
      throw std::out_of_range(std::string("tessera: ") + op + ": label " + std::to_string(l) + " at position " + std::to_string(k) +
                              " is outside [0, " + std::to_string(t.C) + ") (C = " + std::to_string(t.C) +
                              " classes) and is not ignore_index " + std::to_string(ignore_index));
    lh[k] = keep ? l : -1;
    t.wy_host[k] = keep ? w[std::size_t(l)] : 0.0;
    wyh[k] = T(t.wy_host[k]);
    t.keep_host[k] = keep;
    if (keep) t.divisor += t.wy_host[k];
  }
  const dims_t<3> td{t.N, 1, t.S}, cd{1, t.C, 1};
  t.label = Tensor<index_t, dyn_shape_t<3>, P>(lh, td);
  t.wy = Tensor<T, dyn_shape_t<3>, P>(wyh, td);
  t.keep = Tensor<bool, dyn_shape_t<3>, P>(t.keep_host, td);
  std::vector<index_t> ch(std::size_t(t.C));
  for (index_t c = 0; c < t.C; ++c) ch[std::size_t(c)] = c;
  t.cls = Tensor<index_t, dyn_shape_t<3>, P>(ch, cd);
  t.wc = Tensor<T, dyn_shape_t<3>, P>(std::vector<T>(w.begin(), w.end()), cd);
  return t;
}

/// The weighted mean or the sum of per-target losses (PyTorch's: the mean divides by the weights of the targets
/// that count; with none counting it is NaN and the gradient zero).
template <class T, int R, class P>
Var<T, 0, P> reduce_class_loss(const Var<T, R, P>& per, ad::reduction r, double divisor) {
  if (r == ad::reduction::sum) return ad::sum(per);
  if (divisor > 0) return ad::sum(per) * (1.0 / divisor);
  return ad::sum(per) * 0.0 + std::numeric_limits<double>::quiet_NaN();
}

/// x's value seen as [N, C, S] (a contiguous tensor of P).
template <class X>
auto as_ncs(const X& x, index_t N, index_t C, index_t S) {
  return tessera::reshape<dyn_shape_t<3>>(x, dims_t<3>{N, C, S});
}

/// dst (+)= e over a raw gradient buffer seen as [N, C, S].
template <class T, class P, class E>
void assign_grad(T* gx, bool acc, index_t N, index_t C, index_t S, const E& e) {
  const dims_t<3> d{N, C, S};
  View<T, dyn_shape_t<3>, P> v(gx, d, contiguous_strides(d));
  if (acc) v = v + e;
  else v = e;
}

/// Per-target losses of cross_entropy, shaped like the labels.
template <class T, int R, class P, class L, class SL, class PL>
Var<T, R - 1, P> cross_entropy_each(const Var<T, R, P>& x, const Tensor<L, SL, PL>& labels, const cross_entropy_options& o,
                                    double& divisor) {
  const double eps = o.label_smoothing;
  if (!(eps >= 0.0 && eps <= 1.0))
    throw std::invalid_argument("tessera: cross_entropy: label_smoothing must be in [0, 1], got " + std::to_string(eps));
  auto t = std::make_shared<class_targets<T, P>>(read_targets<T, P>(x.dims(), labels, o.weight, o.ignore_index, "cross_entropy"));
  divisor = t->divisor;
  const index_t N = t->N, C = t->C, S = t->S;
  using T3 = Tensor<T, dyn_shape_t<3>, P>;
  const auto x3 = as_ncs(x.value(), N, C, S);
  // log_softmax along the class axis as PyTorch rounds it: (x - max) - log(sum(exp(x - max)))
  auto m = std::make_shared<T3>(tessera::max<1>(x3, keepdim));
  auto ls = std::make_shared<T3>(tessera::log(tessera::sum<1>(tessera::exp(x3 - *m), keepdim)));
  const T a = T(1.0 - eps), b = T(eps / double(C));
  // S_k: the sum over the classes of the coefficients of log p in the loss (for the softmax's gradient)
  std::vector<T> sh(t->wy_host.size());
  for (std::size_t k = 0; k < sh.size(); ++k)
    sh[k] = t->keep_host[k] ? T((1.0 - eps) * t->wy_host[k] + eps / double(C) * t->wsum) : T(0);
  auto s3 = std::make_shared<T3>(sh, dims_t<3>{N, 1, S});
  // the target's logit, picked (exactly) by comparing class indices: other classes' values (-inf masks) never enter
  const auto pick = tessera::sum<1>(tessera::where(t->cls == t->label, x3, T(0)), keepdim);
  using V = Var<T, R - 1, P>;
  typename V::tensor out(labels.dims());
  auto out3 = tessera::reshape<dyn_shape_t<3>>(out, dims_t<3>{N, 1, S});
  if (eps > 0.0) {
    const auto smooth = tessera::sum<1>(((x3 - *m) - *ls) * t->wc, keepdim);
    out3 = tessera::where(t->keep, -(a * t->wy * ((pick - *m) - *ls) + b * smooth), T(0));
  } else {
    out3 = tessera::where(t->keep, -(t->wy * ((pick - *m) - *ls)), T(0));
  }
  return V::make(std::move(out), [x, t, m, ls, s3, a, b, eps](const auto& g) {
    bool acc;
    T* gx = grad_of(x, acc);
    if (!gx) return;
    const index_t N = t->N, C = t->C, S = t->S;
    const auto x3 = as_ncs(x.value(), N, C, S);
    const auto g3 = tessera::reshape<dyn_shape_t<3>>(g, dims_t<3>{N, 1, S});
    const auto gk = tessera::where(t->keep, g3, T(0));
    const auto p = tessera::exp((x3 - *m) - *ls);
    // d loss / d x_c = -(coef_c - p_c * S), coef_c = a w_y [c == y] + b w_c
    if (eps > 0.0)
      assign_grad<T, P>(gx, acc, N, C, S,
                        -gk * (tessera::where(t->cls == t->label, a * t->wy, T(0)) + b * t->wc - p * *s3));
    else
      assign_grad<T, P>(gx, acc, N, C, S, -gk * (tessera::where(t->cls == t->label, t->wy, T(0)) - p * *s3));
  }, x);
}

/// Per-target losses of nll_loss: -w_y x[y] (0 where ignored), shaped like the labels.
template <class T, int R, class P, class L, class SL, class PL>
Var<T, R - 1, P> nll_loss_each(const Var<T, R, P>& x, const Tensor<L, SL, PL>& labels, const nll_loss_options& o, double& divisor) {
  auto t = std::make_shared<class_targets<T, P>>(read_targets<T, P>(x.dims(), labels, o.weight, o.ignore_index, "nll_loss"));
  divisor = t->divisor;
  const index_t N = t->N, C = t->C, S = t->S;
  const auto x3 = as_ncs(x.value(), N, C, S);
  using V = Var<T, R - 1, P>;
  typename V::tensor out(labels.dims());
  auto out3 = tessera::reshape<dyn_shape_t<3>>(out, dims_t<3>{N, 1, S});
  out3 = tessera::where(t->keep, -(t->wy * tessera::sum<1>(tessera::where(t->cls == t->label, x3, T(0)), keepdim)), T(0));
  return V::make(std::move(out), [x, t](const auto& g) {
    bool acc;
    T* gx = grad_of(x, acc);
    if (!gx) return;
    const auto g3 = tessera::reshape<dyn_shape_t<3>>(g, dims_t<3>{t->N, 1, t->S});
    assign_grad<T, P>(gx, acc, t->N, t->C, t->S, tessera::where(t->cls == t->label, -(g3 * t->wy), T(0)));
  }, x);
}

/// A loss computed elementwise from x and y: out = fwd(x, y); x.grad += dx(x, y, g), y.grad += dy(x, y, g).
template <class T, int R, class P, class F, class DX, class DY>
Var<T, R, P> pointwise_loss(const Var<T, R, P>& x, const Var<T, R, P>& y, F fwd, DX dx, DY dy) {
  using V = Var<T, R, P>;
  return V::make(typename V::tensor(fwd(x.value(), y.value())), [x, y, dx, dy](const auto& g) {
    if (x.requires_grad()) accumulate(x, dx(x.value(), y.value(), g));
    if (y.requires_grad()) accumulate(y, dy(x.value(), y.value(), g));
  }, x, y);
}

template <class T, int R, class P>
Var<T, R, P> bce_logits_each(const Var<T, R, P>& x, const Var<T, R, P>& y, const bce_with_logits_options& o) {
  check_same_shape(x.dims(), y.dims(), "binary_cross_entropy_with_logits");
  using TR = Tensor<T, dyn_shape_t<R>, P>;
  auto w = std::make_shared<TR>(broadcast_weight<T, R, P>(o.weight, x.dims(), "binary_cross_entropy_with_logits", "weight"));
  // -log(sigmoid(x)) = log(1 + exp(-|x|)) + max(-x, 0): finite for every finite x
  auto nls = [](const auto& xv) { return tessera::log(T(1) + tessera::exp(-tessera::abs(xv))) + tessera::relu(-xv); };
  if (!o.pos_weight.defined())
    return pointwise_loss(
        x, y, [w, nls](const auto& xv, const auto& yv) { return *w * ((T(1) - yv) * xv + nls(xv)); },
        [w](const auto& xv, const auto& yv, const auto& g) { return g * *w * (tessera::sigmoid(xv) - yv); },
        [w](const auto& xv, const auto&, const auto& g) { return -(g * *w * xv); });
  auto pw = std::make_shared<TR>(broadcast_weight<T, R, P>(o.pos_weight, x.dims(), "binary_cross_entropy_with_logits", "pos_weight"));
  return pointwise_loss(
      x, y, [w, pw, nls](const auto& xv, const auto& yv) { return *w * ((T(1) - yv) * xv + (T(1) + (*pw - T(1)) * yv) * nls(xv)); },
      // PyTorch's: ((pw y + 1 - y) sigmoid(x) - pw y) g w
      [w, pw](const auto& xv, const auto& yv, const auto& g) {
        return g * *w * ((*pw * yv + T(1) - yv) * tessera::sigmoid(xv) - *pw * yv);
      },
      // d/dy = -x - (pw - 1) log(sigmoid(x)) = (pw - 1) nls(x) - x
      [w, pw, nls](const auto& xv, const auto&, const auto& g) { return g * *w * ((*pw - T(1)) * nls(xv) - xv); });
}

template <class T, int R, class P>
Var<T, R, P> bce_each(const Var<T, R, P>& x, const Var<T, R, P>& y, const bce_options& o) {
  check_same_shape(x.dims(), y.dims(), "binary_cross_entropy");
  if constexpr (!P::on_device) {  // PyTorch checks the range on the host (a device kernel would only assert)
    const T* p = x.value().data();
    for (index_t i = 0; i < x.size(); ++i)
      if (!(p[i] >= T(0) && p[i] <= T(1)))
        throw std::domain_error("tessera: binary_cross_entropy: all elements of input should be between 0 and 1 (element " +
                                std::to_string(i) + " is " + std::to_string(double(p[i])) + ")");
  }
  using TR = Tensor<T, dyn_shape_t<R>, P>;
  auto w = std::make_shared<TR>(broadcast_weight<T, R, P>(o.weight, x.dims(), "binary_cross_entropy", "weight"));
  return pointwise_loss(
      x, y,
      [w](const auto& xv, const auto& yv) {
        return -(*w * (yv * tessera::max(tessera::log(xv), T(-100)) + (T(1) - yv) * tessera::max(tessera::log(T(1) - xv), T(-100))));
      },
      // PyTorch's: g w (x - y) / max((1 - x) x, 1e-12)
      [w](const auto& xv, const auto& yv, const auto& g) { return g * *w * (xv - yv) / tessera::max((T(1) - xv) * xv, T(1e-12)); },
      [w](const auto& xv, const auto&, const auto& g) { return g * *w * (tessera::log(T(1) - xv) - tessera::log(xv)); });
}

template <class T, int R, class P, class F, class D>
Var<T, R, P> difference_loss(const Var<T, R, P>& x, const Var<T, R, P>& y, const char* op, F fwd, D dd) {
  check_same_shape(x.dims(), y.dims(), op);
  return pointwise_loss(
      x, y, [fwd](const auto& xv, const auto& yv) { return fwd(xv - yv); },
      [dd](const auto& xv, const auto& yv, const auto& g) { return dd(xv - yv, g); },
      [dd](const auto& xv, const auto& yv, const auto& g) { return -dd(xv - yv, g); });
}

template <class T, int R, class P>
Var<T, R, P> l1_each(const Var<T, R, P>& x, const Var<T, R, P>& y) {
  // the gradient is sign(x - y) g: 0 where x == y (and where x - y is NaN)
  return difference_loss(
      x, y, "l1_loss", [](const auto& d) { return tessera::abs(d); },
      [](const auto& d, const auto& g) { return tessera::where(d > T(0), g, tessera::where(d < T(0), -g, T(0))); });
}
template <class T, int R, class P>
Var<T, R, P> mse_each(const Var<T, R, P>& x, const Var<T, R, P>& y) {
  return difference_loss(
      x, y, "mse_loss", [](const auto& d) { return d * d; }, [](const auto& d, const auto& g) { return T(2) * d * g; });
}
template <class T, int R, class P>
Var<T, R, P> smooth_l1_each(const Var<T, R, P>& x, const Var<T, R, P>& y, double beta_d) {
  if (!(beta_d >= 0.0))
    throw std::invalid_argument("tessera: smooth_l1_loss: beta must be >= 0, got " + std::to_string(beta_d));
  if (beta_d == 0.0) return l1_each(x, y);  // as PyTorch: beta 0 is l1_loss
  const T beta = T(beta_d);
  // |d| < beta: 0.5 d^2 / beta, else |d| - 0.5 beta; gradient clamped to +-1 outside (-beta, beta), NaN passed on
  return difference_loss(
      x, y, "smooth_l1_loss",
      [beta](const auto& d) {
        return tessera::where(tessera::abs(d) < beta, T(0.5) * d * d / beta, tessera::abs(d) - T(0.5) * beta);
      },
      [beta](const auto& d, const auto& g) { return tessera::where(d <= -beta, -g, tessera::where(d >= beta, g, d * g / beta)); });
}
template <class T, int R, class P>
Var<T, R, P> huber_each(const Var<T, R, P>& x, const Var<T, R, P>& y, double delta_d) {
  if (!(delta_d > 0.0))
    throw std::invalid_argument("tessera: huber_loss: delta must be > 0, got " + std::to_string(delta_d));
  const T delta = T(delta_d);
  // |d| < delta: 0.5 d^2, else delta (|d| - 0.5 delta); gradient clamped to +-delta
  return difference_loss(
      x, y, "huber_loss",
      [delta](const auto& d) {
        return tessera::where(tessera::abs(d) < delta, T(0.5) * d * d, delta * (tessera::abs(d) - T(0.5) * delta));
      },
      [delta](const auto& d, const auto& g) {
        return tessera::where(d <= -delta, -(delta * g), tessera::where(d >= delta, delta * g, d * g));
      });
}

/// The common case (logits [N, C], no weight, no smoothing, the mean, no target ignored or out of range) through
/// the backend's fused log-softmax and NLL kernels, as nn_ops.hpp's cross_entropy(logits, labels); false (nothing
/// done) otherwise.
template <class T, int R, class P, class L, class SL, class PL>
bool cross_entropy_fused(const Var<T, R, P>& logits, const Tensor<L, SL, PL>& labels, const cross_entropy_options& o,
                         Var<T, 0, P>& result) {
  if constexpr (R != 2 || SL::rank != 1) {
    return false;
  } else {
    if (o.weight.defined() || o.label_smoothing != 0.0 || o.reduction != ad::reduction::mean) return false;
    const index_t B = logits.dims()[0], C = logits.dims()[1];
    if (labels.dims()[0] != B) return false;
    const auto lab = labels.to_vector();
    std::vector<index_t> lh(lab.size());
    for (std::size_t i = 0; i < lab.size(); ++i) {
      lh[i] = index_t(lab[i]);
      if (lh[i] < 0 || lh[i] >= C || lh[i] == o.ignore_index) return false;
    }
    if (B == 0) return false;
    auto plab = std::make_shared<Tensor<index_t, dyn_shape_t<1>, P>>(lh, dims_t<1>{B});
    auto lse = std::make_shared<Tensor<T, dyn_shape_t<1>, P>>(2 * B);  // each row's maximum, then its log-sum
    using V = Var<T, 0, P>;
    typename V::tensor y;
    backend<P>::cross_entropy(logits.value().data(), plab->data(), lse->data(), y.data(), B, C);
    result = V::make(std::move(y), [logits, lse, plab, B, C](const auto& g, const auto&) {
      bool acc;
      if (T* gz = grad_of(logits, acc))
        backend<P>::cross_entropy_backward(logits.value().data(), lse->data(), plab->data(), g.data(), gz, B, C, acc);
    }, logits);
    return true;
  }
}
}  // namespace detail

// ---- class-index targets ----

/// Cross entropy of logits [N, C] (or [N, C, d1, ...]) against class labels [N] (or [N, d1, ...]), integer tensors
/// of any policy: PyTorch's F.cross_entropy with class indices, (1 - s) nll(log_softmax) + s / C * the smoothing term,
/// both weighted; the mean divides by the summed weights of the targets that count. Labels outside [0, C) other
/// than ignore_index throw std::out_of_range.
template <class T, int R, class P, class L, class SL, class PL>
  requires std::is_integral_v<L>
Var<T, 0, P> cross_entropy(const Var<T, R, P>& logits, const Tensor<L, SL, PL>& labels, const cross_entropy_options& opt = {}) {
  detail::check_reducing(opt.reduction, "cross_entropy");
  Var<T, 0, P> fused;
  if (detail::cross_entropy_fused(logits, labels, opt, fused)) return fused;
  double divisor = 0;
  auto per = detail::cross_entropy_each(logits, labels, opt, divisor);
  return detail::reduce_class_loss(per, opt.reduction, divisor);
}
/// cross_entropy(logits [N, C], labels) with PyTorch's defaults (ignore_index -100 included): preferred, where this
/// header is included, to nn_ops.hpp's form of the same signature, which takes no ignore_index (it is more
/// constrained; both run the same kernels when no target is ignored).
template <class T, class P, class L, class SL, class PL>
  requires std::is_integral_v<L>
Var<T, 0, P> cross_entropy(const Var<T, 2, P>& logits, const Tensor<L, SL, PL>& labels) {
  return ad::cross_entropy(logits, labels, cross_entropy_options{});
}
/// cross_entropy without reduction: one loss per target, shaped like the labels (0 where ignored).
template <class T, int R, class P, class L, class SL, class PL>
  requires std::is_integral_v<L>
Var<T, R - 1, P> cross_entropy_unreduced(const Var<T, R, P>& logits, const Tensor<L, SL, PL>& labels,
                                         const cross_entropy_options& opt = {}) {
  double divisor = 0;
  return detail::cross_entropy_each(logits, labels, opt, divisor);
}

/// Negative log-likelihood of log-probabilities [N, C] (or [N, C, d1, ...]) at class labels: -weight[y] x[y].
template <class T, int R, class P, class L, class SL, class PL>
Var<T, 0, P> nll_loss(const Var<T, R, P>& log_probs, const Tensor<L, SL, PL>& labels, const nll_loss_options& opt = {}) {
  detail::check_reducing(opt.reduction, "nll_loss");
  double divisor = 0;
  auto per = detail::nll_loss_each(log_probs, labels, opt, divisor);  // sets divisor
  return detail::reduce_class_loss(per, opt.reduction, divisor);
}
template <class T, int R, class P, class L, class SL, class PL>
Var<T, R - 1, P> nll_loss_unreduced(const Var<T, R, P>& log_probs, const Tensor<L, SL, PL>& labels,
                                    const nll_loss_options& opt = {}) {
  double divisor = 0;
  return detail::nll_loss_each(log_probs, labels, opt, divisor);
}

// ---- binary targets ----

/// Binary cross entropy of logits against targets in [0, 1] (same shape; a tensor of any policy or a Var):
/// w ((1 - y) x + (1 + (pw - 1) y) (log(1 + exp(-|x|)) + max(-x, 0))).
template <class T, int R, class P, class Y>
Var<T, 0, P> binary_cross_entropy_with_logits(const Var<T, R, P>& logits, const Y& targets, const bce_with_logits_options& opt = {}) {
  detail::check_reducing(opt.reduction, "binary_cross_entropy_with_logits");
  return detail::reduce_loss(detail::bce_logits_each(logits, detail::as_target<T, R, P>(targets), opt), opt.reduction);
}
template <class T, int R, class P, class Y>
Var<T, R, P> binary_cross_entropy_with_logits_unreduced(const Var<T, R, P>& logits, const Y& targets,
                                                        const bce_with_logits_options& opt = {}) {
  return detail::bce_logits_each(logits, detail::as_target<T, R, P>(targets), opt);
}
/// Binary cross entropy of probabilities in [0, 1] (checked on the host policies; outside, NaN included, throws
/// std::domain_error as PyTorch does): -w (y max(log p, -100) + (1 - y) max(log(1 - p), -100)).
template <class T, int R, class P, class Y>
Var<T, 0, P> binary_cross_entropy(const Var<T, R, P>& probs, const Y& targets, const bce_options& opt = {}) {
  detail::check_reducing(opt.reduction, "binary_cross_entropy");
  return detail::reduce_loss(detail::bce_each(probs, detail::as_target<T, R, P>(targets), opt), opt.reduction);
}
template <class T, int R, class P, class Y>
Var<T, R, P> binary_cross_entropy_unreduced(const Var<T, R, P>& probs, const Y& targets, const bce_options& opt = {}) {
  return detail::bce_each(probs, detail::as_target<T, R, P>(targets), opt);
}

// ---- regression ----

/// |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta, d = x - y (beta 0: l1_loss; negative: std::invalid_argument).
template <class T, int R, class P, class Y>
Var<T, 0, P> smooth_l1_loss(const Var<T, R, P>& x, const Y& y, const smooth_l1_options& opt = {}) {
  detail::check_reducing(opt.reduction, "smooth_l1_loss");
  return detail::reduce_loss(detail::smooth_l1_each(x, detail::as_target<T, R, P>(y), opt.beta), opt.reduction);
}
template <class T, int R, class P, class Y>
Var<T, R, P> smooth_l1_loss_unreduced(const Var<T, R, P>& x, const Y& y, const smooth_l1_options& opt = {}) {
  return detail::smooth_l1_each(x, detail::as_target<T, R, P>(y), opt.beta);
}
/// |d| < delta ? 0.5 d^2 : delta (|d| - 0.5 delta), d = x - y (delta must be > 0).
template <class T, int R, class P, class Y>
Var<T, 0, P> huber_loss(const Var<T, R, P>& x, const Y& y, const huber_options& opt = {}) {
  detail::check_reducing(opt.reduction, "huber_loss");
  return detail::reduce_loss(detail::huber_each(x, detail::as_target<T, R, P>(y), opt.delta), opt.reduction);
}
template <class T, int R, class P, class Y>
Var<T, R, P> huber_loss_unreduced(const Var<T, R, P>& x, const Y& y, const huber_options& opt = {}) {
  return detail::huber_each(x, detail::as_target<T, R, P>(y), opt.delta);
}
/// |x - y|.
template <class T, int R, class P, class Y>
Var<T, 0, P> l1_loss(const Var<T, R, P>& x, const Y& y, const l1_options& opt = {}) {
  detail::check_reducing(opt.reduction, "l1_loss");
  return detail::reduce_loss(detail::l1_each(x, detail::as_target<T, R, P>(y)), opt.reduction);
}
template <class T, int R, class P, class Y>
Var<T, R, P> l1_loss_unreduced(const Var<T, R, P>& x, const Y& y) { return detail::l1_each(x, detail::as_target<T, R, P>(y)); }
/// (x - y)^2 with a reduction; the target may be a tensor or view of any host policy (or of P), or a Var (nn_ops.hpp's
/// mse_loss(x, y) is the mean with the same targets).
template <class T, int R, class P, class Y>
Var<T, 0, P> mse_loss(const Var<T, R, P>& x, const Y& y, const mse_options& opt) {
  detail::check_reducing(opt.reduction, "mse_loss");
  return detail::reduce_loss(detail::mse_each(x, detail::as_target<T, R, P>(y)), opt.reduction);
}
template <class T, int R, class P, class Y>
Var<T, R, P> mse_loss_unreduced(const Var<T, R, P>& x, const Y& y) { return detail::mse_each(x, detail::as_target<T, R, P>(y)); }

}  // namespace tessera::ad
