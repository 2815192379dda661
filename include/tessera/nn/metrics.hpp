// Classification metrics and integer-typed argmax: what a training loop prints after each epoch.
//
//   double acc = tessera::accuracy(net.forward(images), labels);   // fraction of rows whose argmax is the label
//   index_t n = tessera::correct_count(logits, labels);            // how many rows (sum it over batches)
//   auto pred = tessera::argmax_as<std::int32_t, 1>(logits);       // argmax<1> as int32: compares with int32 labels
//
// logits: [N, C], a Tensor, View or ad::Var (an unevaluated ad expression too) of any floating element type and any
// policy. labels: [N] class indices, a Tensor or View of any integer element type (int32, int64, uint8, int8) and any
// policy (copied to the host when they live elsewhere). The prediction of a row is tessera::argmax's (the first
// largest value; computed by the logits' policy, on the host for cuda logits, whose backend has no argmax yet),
// compared with the label as a 64-bit integer, so a negative or out-of-range label counts as wrong, never as an error.
// Row counts that differ throw shape_error naming both shapes; accuracy of no rows is NaN (the mean of nothing, as
// PyTorch's (pred == y).float().mean()).
//
// argmax_as<I, Axis>(x): tessera::argmax<Axis>(x) (int64, PyTorch's type, stays the default) converted to the
// integer type I in the same lazy expression: `labels == argmax_as<int32_t, 1>(logits)` compiles where
// `labels == argmax<1>(logits)` with int32 labels does not (two element types). Host policies (as argmax).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/expr/elementwise.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/policy/planner.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera {

/// argmax<Axis>(x) as integer type I (one lazy expression; int64 is argmax's own type).
template <class I, int Axis, detail::TensorLike X>
  requires is_integral_element_v<I>
auto argmax_as(X&& x) {
  return cast<I>(argmax<Axis>(std::forward<X>(x)));
}

namespace detail {
template <class T, class S, class P>
View<const T, S, P> metric_logits(const Tensor<T, S, P>& t) { return t.cview(); }
template <class T, class S, class P>
View<const std::remove_const_t<T>, S, P> metric_logits(const View<T, S, P>& v) { return v; }
template <class T, int R, class P>
View<const T, dyn_shape_t<R>, P> metric_logits(const ad::Var<T, R, P>& v) { return v.value().cview(); }

/// The labels in logical order on the host, as int64.
template <class L, class S, class P>
std::vector<std::int64_t> metric_labels(const View<L, S, P>& v) {
  using E = std::remove_const_t<L>;
  static_assert(is_integral_element_v<E>, "tessera: accuracy: the labels must be an integer tensor (class indices)");
  static_assert(S::rank == 1, "tessera: accuracy: the labels must be one class index per row (rank 1)");
  std::vector<std::int64_t> out(std::size_t(v.size()));
  if constexpr (P::on_device) {
    const auto h = Tensor<E, dyn_shape_t<1>, P>(v).to_vector();  // contiguous on the device, then copied
    for (std::size_t i = 0; i < h.size(); ++i) out[i] = std::int64_t(h[i]);
  } else {
    for (index_t i = 0; i < v.size(); ++i) out[std::size_t(i)] = std::int64_t(v.data()[i * v.strides()[0]]);
  }
  return out;
}
template <class L, class S, class P>
std::vector<std::int64_t> metric_labels(const Tensor<L, S, P>& t) { return metric_labels(t.cview()); }
}  // namespace detail

/// The number of rows of logits [N, C] whose argmax equals the label ([N], any integer type).
template <class X, class L>
index_t correct_count(const X& logits, const L& labels) {
  const auto x = detail::metric_logits(logits);
  using XV = decltype(x);
  static_assert(XV::rank == 2, "tessera: accuracy: the logits must be [N, C] (rank 2)");
  static_assert(is_floating_v<typename XV::value_type>, "tessera: accuracy: the logits must be floating point");
  const std::vector<std::int64_t> y = detail::metric_labels(labels);
  if (index_t(y.size()) != x.dims()[0])
    throw shape_error("tessera: accuracy: logits " + detail::format_dims(x.dims()) + " and labels " +
                      detail::format_dims(dims_t<1>{index_t(y.size())}) + " have different numbers of rows");
  if (y.empty()) return 0;
  std::vector<std::int64_t> pred;
  if constexpr (XV::policy::on_device) {  // the device backend has no argmax yet: the logits go to the host
    const auto h = to<cpu>(x);
    pred = Tensor<std::int64_t, dyn_shape_t<1>, cpu>(argmax<1>(h)).to_vector();
  } else {
    pred = Tensor<std::int64_t, dyn_shape_t<1>, typename XV::policy>(argmax<1>(x)).to_vector();
  }
  index_t n = 0;
  for (std::size_t i = 0; i < y.size(); ++i) n += pred[i] == y[i];
  return n;
}

/// The fraction of rows of logits [N, C] whose argmax equals the label, in [0, 1] (NaN for no rows).
template <class X, class L>
double accuracy(const X& logits, const L& labels) {
  const index_t n = detail::metric_logits(logits).dims()[0];
  const index_t c = correct_count(logits, labels);
  return n == 0 ? std::numeric_limits<double>::quiet_NaN() : double(c) / double(n);
}

}  // namespace tessera
