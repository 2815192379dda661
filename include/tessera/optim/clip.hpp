// Gradient clipping as torch.nn.utils does it (PyTorch 1.13): clip_grad_norm (clip_grad_norm_) scales every gradient
// by one factor so that their joint norm is at most max_norm; clip_grad_value (clip_grad_value_) clamps each
// gradient element to [-clip_value, clip_value].
//
//   loss.backward();
//   double norm = optim::clip_grad_norm(net, 1.0);            // a model: anything with for_each_parameter(f)
//   double inf = optim::clip_grad_norm(params, 5.0, optim::inf_norm);   // or a std::vector<nn::parameter_ref<T>>
//   optim::clip_grad_value(net, 0.5);
//   opt.step();
//
// clip_grad_norm(params, max_norm, norm_type = 2, error_if_nonfinite = false) returns the total norm of the
// gradients before clipping: for norm_type p, (sum over parameters of ||g||_p^p)^(1/p), the p-norm of the
// parameters' p-norms as PyTorch computes it; for inf_norm (norm_type = +infinity) the largest |g| of all. The
// gradients are multiplied by min(1, max_norm / (total + 1e-6)) (PyTorch's clip_coef, clamped at 1; so a NaN total
// makes every gradient NaN, an infinite one makes the finite elements 0). With error_if_nonfinite a NaN or infinite
// total is a std::runtime_error and no gradient is changed. Parameters without a gradient (grad() is nullptr) are
// left out, as PyTorch leaves out p.grad is None; with none at all the total is 0. Sums are accumulated in double.
// Parameters in device memory (the cuda policy) are copied to the host, clipped there and copied back.
// norm_type must be > 0 (or inf_norm), max_norm and clip_value >= 0 and not NaN: otherwise std::invalid_argument.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/nn/parameter.hpp"
#include "tessera/optim/optim.hpp"

namespace tessera::optim {

/// norm_type for the largest absolute value (PyTorch's float('inf')).
inline constexpr double inf_norm = std::numeric_limits<double>::infinity();

namespace detail {

template <class M>
inline constexpr bool is_parameter_list = false;
template <class T>
inline constexpr bool is_parameter_list<std::vector<nn::parameter_ref<T>>> = true;

/// The parameter_refs of a model (f(name, Var&) for each parameter via for_each_parameter; its element type is
/// Model::value_type, float where it names none) or of a list (a copy of the handles, not of the tensors).
template <class Model>
auto parameter_refs_of(Model& model) {
  using M = std::remove_cvref_t<Model>;
  if constexpr (is_parameter_list<M>) {
    return M(model);
  } else {
    using T = decltype([] {
      if constexpr (requires { typename M::value_type; }) return typename M::value_type{};
      else return float{};
    }());
    std::vector<nn::parameter_ref<T>> out;
    model.for_each_parameter([&](const std::string& name, auto& v) { out.push_back(nn::make_parameter_ref(name, v)); });
    return out;
  }
}

/// f(T* grad, n) on host memory for every parameter that has a gradient; device gradients are copied to the host
/// first and, when write is true, copied back after.
template <class T, class F>
void for_each_host_grad(const std::vector<nn::parameter_ref<T>>& params, bool write, F&& f) {
  for (const auto& p : params) {
    T* g = p.grad ? p.grad() : nullptr;
    if (g == nullptr || p.size == 0) continue;
    if (!p.on_device) {
      f(g, p.size);
      continue;
    }
    std::vector<T> h(std::size_t(p.size));
    p.ops->to_host(h.data(), g, p.size);
    f(h.data(), p.size);
    if (write) p.ops->from_host(g, h.data(), p.size);
  }
}

}  // namespace detail

/// torch.nn.utils.clip_grad_norm_: the total norm of the gradients (before clipping); scales them so that it is at
/// most max_norm. `params`: a model with for_each_parameter, or a std::vector<nn::parameter_ref<T>>.
template <class Params>
double clip_grad_norm(Params& params, double max_norm, double norm_type = 2.0, bool error_if_nonfinite = false) {
  if (std::isnan(max_norm) || max_norm < 0)
    throw std::invalid_argument("tessera: clip_grad_norm: max_norm = " + detail::format_double(max_norm) +
                                " is invalid: it must be >= 0");
  if (!(norm_type > 0))
    throw std::invalid_argument("tessera: clip_grad_norm: norm_type = " + detail::format_double(norm_type) +
                                " is invalid: it must be > 0 (or optim::inf_norm)");
  const auto refs = detail::parameter_refs_of(params);
  using T = std::remove_pointer_t<decltype(refs[0].value())>;
  const bool inf = std::isinf(norm_type);
  double total = 0;  // inf: the largest |g|; else the sum of the parameters' norms to the power p
  detail::for_each_host_grad(refs, false, [&](const T* g, index_t n) {
    double acc = 0;
    if (inf) {
      for (index_t i = 0; i < n; ++i) {
        const double a = std::abs(double(g[i]));
        acc = std::isnan(a) || std::isnan(acc) ? std::numeric_limits<double>::quiet_NaN() : std::max(acc, a);
      }
      total = std::isnan(acc) || std::isnan(total) ? std::numeric_limits<double>::quiet_NaN() : std::max(total, acc);
    } else if (norm_type == 2.0) {
      for (index_t i = 0; i < n; ++i) acc += double(g[i]) * double(g[i]);
      total += acc;  // (sqrt(acc))^2
    } else if (norm_type == 1.0) {
      for (index_t i = 0; i < n; ++i) acc += std::abs(double(g[i]));
      total += acc;
    } else {
      for (index_t i = 0; i < n; ++i) acc += std::pow(std::abs(double(g[i])), norm_type);
      total += acc;  // (acc^(1/p))^p
    }
  });
  if (!inf) total = norm_type == 2.0 ? std::sqrt(total) : norm_type == 1.0 ? total : std::pow(total, 1.0 / norm_type);
  if (error_if_nonfinite && !std::isfinite(total))
    throw std::runtime_error("tessera: clip_grad_norm: the total norm of order " + detail::format_double(norm_type) +
                             " of the gradients is non-finite (" + detail::format_double(total) + ")" +
                             ", so it cannot be clipped (error_if_nonfinite = false scales by it anyway)");
  const double coef = max_norm / (total + 1e-6);
  if (!(coef >= 1.0)) {  // PyTorch multiplies by min(coef, 1); NaN stays NaN
    const T c = T(coef);
    detail::for_each_host_grad(refs, true, [&](T* g, index_t n) {
      for (index_t i = 0; i < n; ++i) g[i] *= c;
    });
  }
  return total;
}

/// torch.nn.utils.clip_grad_value_: every gradient element clamped to [-clip_value, clip_value] (NaN stays NaN).
template <class Params>
void clip_grad_value(Params& params, double clip_value) {
  if (std::isnan(clip_value) || clip_value < 0)
    throw std::invalid_argument("tessera: clip_grad_value: clip_value = " + detail::format_double(clip_value) +
                                " is invalid: it must be >= 0");
  const auto refs = detail::parameter_refs_of(params);
  using T = std::remove_pointer_t<decltype(refs[0].value())>;
  const T hi = std::isinf(clip_value) ? std::numeric_limits<T>::infinity() : T(clip_value), lo = -hi;
  detail::for_each_host_grad(refs, true, [&](T* g, index_t n) {
    for (index_t i = 0; i < n; ++i)
      if (g[i] < lo) g[i] = lo;
      else if (g[i] > hi) g[i] = hi;
  });
}

}  // namespace tessera::optim
