// Differentiable reductions over chosen axes: sum, mean, max and min, spelled as the expressions of expr/reduce.hpp
// (ad::sum<1>(x), ad::max<0, -1>(x, keepdim); no axes: all of them). Gradients as PyTorch's:
//   sum:      g broadcast back over the reduced axes;
//   mean:     the same divided by the number of elements reduced into each result;
//   max, min: PyTorch's amax / amin rule (scale_grad_by_count): (g / count) * (x == out), the gradient split evenly
//             among the elements equal to the result (ties), which is what a reduction over several axes needs. A
//             slice holding a NaN has out = NaN, no element equal to it, and gets NaN gradients, as amax's do.
// argmax is not differentiable (it returns indices): ad::argmax stops the build with a message saying so.
// The all-axes ad::sum(x) and ad::mean(x) without keepdim are those of ops.hpp. Each backward is one fused
// expression (max and min evaluate their count of ties first), so it runs on every policy.
#pragma once
#include "tessera/autodiff/ops.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace tessera::ad {

namespace detail {

enum class reduction { sum, mean, max, min };

/// The bit set of the reduced axes (negative axes count from the end; none: all of them).
template <int R, int... Axes>
constexpr std::uint32_t reduced_axes() {
  static_assert(((Axes >= -R && Axes < R) && ...), "tessera: ad reduction: an axis is outside the rank of the Var");
  if constexpr (sizeof...(Axes) == 0) return R >= 32 ? ~0u : (1u << R) - 1u;
  else return ((1u << ((Axes + R) % R)) | ...);
}

/// The reduced tensor t (the result of a reduction over the axes in Mask of a tensor with dims `dims`, kept as extent
/// 1 or dropped) seen with `dims`: stride 0 along the reduced axes. Read-only, no copy.
template <std::uint32_t Mask, bool Keep, std::size_t R, class Tn>
auto restore_reduced(const Tn& t, const std::array<index_t, R>& dims) {
  using T = typename Tn::value_type;
  const auto ts = t.strides();
  std::array<index_t, R> s{};
  for (std::size_t i = 0, k = 0; i < R; ++i) {
    if ((Mask >> i) & 1u) {
      s[i] = 0;
      if (Keep) ++k;
    } else {
      s[i] = ts[k++];
    }
  }
  return View<const T, dyn_shape_t<int(R)>, typename Tn::policy>(t.data(), dims, s);
}

/// The number of elements of `dims` reduced into each result.
template <std::uint32_t Mask, std::size_t R>
index_t reduced_count(const std::array<index_t, R>& dims) {
  index_t n = 1;
  for (std::size_t i = 0; i < R; ++i)
    if ((Mask >> i) & 1u) n *= dims[i];
  return n;
}

template <reduction K, bool Keep, int... Axes, class X>
auto reduce_forward(const X& x) {
  if constexpr (K == reduction::sum) {
    if constexpr (Keep) return tessera::sum<Axes...>(x, keepdim);
    else return tessera::sum<Axes...>(x);
  } else if constexpr (K == reduction::mean) {
    if constexpr (Keep) return tessera::mean<Axes...>(x, keepdim);
    else return tessera::mean<Axes...>(x);
  } else if constexpr (K == reduction::max) {
    if constexpr (Keep) return tessera::max<Axes...>(x, keepdim);
    else return tessera::max<Axes...>(x);
  } else {
    if constexpr (Keep) return tessera::min<Axes...>(x, keepdim);
    else return tessera::min<Axes...>(x);
  }
}

template <reduction K, bool Keep, int... Axes, class T, int R, class P>
auto reduce_var(const Var<T, R, P>& a) {
  constexpr std::uint32_t mask = reduced_axes<R, Axes...>();
  auto fwd = reduce_forward<K, Keep, Axes...>(a.value());
  using V = Var<T, decltype(fwd)::rank, P>;
  return V::make(typename V::tensor(fwd), [a](const auto& g, const auto& out) {
    const auto gb = restore_reduced<mask, Keep>(g, a.dims());
    if constexpr (K == reduction::sum) {
      (void)out;
      accumulate(a, gb);
    } else if constexpr (K == reduction::mean) {
      (void)out;
      accumulate(a, gb / T(reduced_count<mask>(a.dims())));  // PyTorch's mean_backward divides by the count
    } else {
      // amax / amin (scale_grad_by_count): (g / mask.sum(axes, keepdim)) * mask, mask = (x == out)
      const auto& x = a.value();
      const auto ob = restore_reduced<mask, Keep>(out, a.dims());
      const auto ties = tessera::sum<Axes...>(tessera::cast<T>(x == ob), keepdim);
      accumulate(a, (gb / ties) * tessera::cast<T>(x == ob));
    }
  }, a);
}

template <class...>
inline constexpr bool no_gradient = false;

}  // namespace detail

/// The sum over Axes (at least one; ad::sum(x) over all of them is in ops.hpp): ad::sum<1>(x), ad::sum<0, -1>(x).
template <int... Axes, class T, int R, class P>
  requires(sizeof...(Axes) > 0)
auto sum(const Var<T, R, P>& a) {
  return detail::reduce_var<detail::reduction::sum, false, Axes...>(a);
}
/// The sum over Axes (none: all), the reduced axes kept as extent 1.
template <int... Axes, class T, int R, class P>
auto sum(const Var<T, R, P>& a, keepdim_t) {
  return detail::reduce_var<detail::reduction::sum, true, Axes...>(a);
}
/// The mean over Axes (at least one; ad::mean(x) over all of them is in ops.hpp).
template <int... Axes, class T, int R, class P>
  requires(sizeof...(Axes) > 0)
auto mean(const Var<T, R, P>& a) {
  return detail::reduce_var<detail::reduction::mean, false, Axes...>(a);
}
/// The mean over Axes (none: all), the reduced axes kept as extent 1.
template <int... Axes, class T, int R, class P>
auto mean(const Var<T, R, P>& a, keepdim_t) {
  return detail::reduce_var<detail::reduction::mean, true, Axes...>(a);
}
/// The largest element over Axes (none: all); the gradient is amax's (split evenly among ties).
template <int... Axes, class T, int R, class P>
auto max(const Var<T, R, P>& a) {
  return detail::reduce_var<detail::reduction::max, false, Axes...>(a);
}
template <int... Axes, class T, int R, class P>
auto max(const Var<T, R, P>& a, keepdim_t) {
  return detail::reduce_var<detail::reduction::max, true, Axes...>(a);
}
/// The smallest element over Axes (none: all); the gradient is amin's (split evenly among ties).
template <int... Axes, class T, int R, class P>
auto min(const Var<T, R, P>& a) {
  return detail::reduce_var<detail::reduction::min, false, Axes...>(a);
}
template <int... Axes, class T, int R, class P>
auto min(const Var<T, R, P>& a, keepdim_t) {
  return detail::reduce_var<detail::reduction::min, true, Axes...>(a);
}

/// Not provided: argmax returns indices, which carry no gradient.
template <int... Axes, class T, int R, class P, class... K>
void argmax(const Var<T, R, P>&, K...) {
  static_assert(detail::no_gradient<T>,
                "tessera: argmax is not differentiable (it returns indices); use tessera::argmax(x.value()), or "
                "ad::max for a differentiable maximum");
}

}  // namespace tessera::ad
