// Reductions over all or chosen axes: sum, mean, max, min, argmax, with keepdim.
// A reduction reads its source expression in one fused pass. Inside a larger elementwise expression
// (x - mean<1>(x, keepdim)) it is evaluated once into a temporary before the outer loop runs.
#pragma once
#include <bit>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>

#include "tessera/expr/elementwise.hpp"
#include "tessera/expr/node.hpp"
#include "tessera/kernels/cpu/reduce.hpp"

namespace tessera {

/// Tag: keep reduced axes as extent 1.
struct keepdim_t {};
inline constexpr keepdim_t keepdim{};

namespace op {
struct sum {
  static constexpr const char* name = "sum";
  template <class T>
  static constexpr bool accepts = true;
  template <class T>
  using result = std::conditional_t<std::is_integral_v<T>, std::int64_t, compute_t<T>>;
  template <class A>
  static TS_HD constexpr A identity() { return A(0); }
  template <class V>
  static TS_HD TS_INLINE V combine(V a, V b) { return a + b; }
};
struct mean : sum {
  static constexpr const char* name = "mean";
  template <class T>
  static constexpr bool accepts = is_floating_v<T>;
};
struct max_reduce {
  static constexpr const char* name = "max";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
  template <class T>
  using result = compute_t<T>;
  template <class A>
  static TS_HD constexpr A identity() {
    if constexpr (std::numeric_limits<A>::has_infinity) return -std::numeric_limits<A>::infinity();
    else return std::numeric_limits<A>::lowest();
  }
  /// NaN wins, as in PyTorch (a max over anything with a NaN is NaN).
  template <class V>
  static TS_HD TS_INLINE V combine(V a, V b) { return op::max::apply(a, b); }
};
struct min_reduce {
  static constexpr const char* name = "min";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
  template <class T>
  using result = compute_t<T>;
  template <class A>
  static TS_HD constexpr A identity() {
    if constexpr (std::numeric_limits<A>::has_infinity) return std::numeric_limits<A>::infinity();
    else return std::numeric_limits<A>::max();
  }
  /// NaN wins, as in PyTorch.
  template <class V>
  static TS_HD TS_INLINE V combine(V a, V b) { return op::min::apply(a, b); }
};
struct argmax {
  static constexpr const char* name = "argmax";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
  template <class T>
  using result = std::int64_t;
};
}  // namespace op


namespace detail {

template <class Op, class S, int... Axes>
constexpr std::uint32_t axes_mask() {
  (void)(error::axis_out_of_range<Op, Axes, S>::ok && ...);
  if constexpr (sizeof...(Axes) == 0) return S::rank >= 32 ? ~0u : (1u << S::rank) - 1u;
  else return ((1u << ((Axes + S::rank) % (S::rank > 0 ? S::rank : 1))) | ...);
}

template <class S, std::uint32_t Mask, bool Keep>
constexpr auto reduced_extents() {
  constexpr int kept = [] {
    int k = 0;
    for (int i = 0; i < S::rank; ++i) k += (Keep || !((Mask >> i) & 1u)) ? 1 : 0;
    return k;
  }();
  std::array<extent_t, kept> a{};
  int k = 0;
  for (int i = 0; i < S::rank; ++i) {
    if ((Mask >> i) & 1u) {
      if (Keep) a[k++] = 1;
    } else a[k++] = S::extents[i];
  }
  return a;
}

template <class Op, class C, std::uint32_t Mask, bool Keep>
struct reduce_node {
  using source_type = C;
  using op_type = Op;
  using value_type = typename Op::template result<typename C::value_type>;
  using shape_type = shape_from_array_t<reduced_extents<typename C::shape_type, Mask, Keep>()>;
  using policy = typename C::policy;
  static constexpr int rank = shape_type::rank;
  static constexpr int source_rank = C::rank;
  static constexpr bool is_tessera_expression = true;
  static constexpr int contractions = 0;  // evaluated on its own before the outer loop
  static constexpr bool is_reduction = true;
  static constexpr bool packable = simd::packable_v<value_type>;
  static constexpr std::size_t max_lane_size = sizeof(value_type);
  static constexpr std::uint32_t mask = Mask;
  static constexpr bool keep = Keep;

  C child;
  dims_t<rank> dims_;
  mutable std::shared_ptr<const Tensor<value_type, shape_type, policy>> cache;

  explicit reduce_node(C c) : child(std::move(c)) {
    const auto sd = child.expr_dims();
    int k = 0;
    for (int i = 0; i < source_rank; ++i) {
      if ((Mask >> i) & 1u) {
        if (Keep) dims_[k++] = 1;
      } else dims_[k++] = sd[i];
    }
    if constexpr (std::is_same_v<Op, op::argmax> || std::is_same_v<Op, op::max_reduce> || std::is_same_v<Op, op::min_reduce>) {
      for (int i = 0; i < source_rank; ++i)
        if (((Mask >> i) & 1u) && sd[i] == 0)
          throw shape_error(std::string("tessera: ") + Op::name + ": cannot reduce the empty axis " + std::to_string(i) +
                            " of shape " + format_dims(sd));
    }
  }
  const dims_t<rank>& expr_dims() const { return dims_; }
  const C& source() const { return child; }

  template <int R>
  auto evaluator(const dims_t<R>& out) const {
    return materialize_as_leaf<R>(*this, cache, out);
  }
  template <class F>
  void for_each_leaf(F&&) const {}

  /// Output strides aligned to the source's dims: 0 along reduced axes.
  template <class DV>
  dims_t<source_rank> out_strides_in_source(const DV& dst) const {
    dims_t<source_rank> s{};
    int k = 0;
    for (int i = 0; i < source_rank; ++i) {
      if ((Mask >> i) & 1u) {
        s[i] = 0;
        if (Keep) ++k;
      } else s[i] = dst.strides()[k++];
    }
    return s;
  }

  template <class DV>
  void reduce_into(const DV& dst) const {
    using P = typename DV::policy;
    if constexpr (P::on_device) {
      static_assert(requires { device_kernels<P>::enabled; },
                    "tessera: the cuda policy runs kernels: compile this file with nvcc (a .cu file)");
      device_kernels<P>::reduce(dst, *this);
    } else if constexpr (std::is_same_v<Op, op::argmax>) {
      host_argmax(dst);
    } else {
      const auto sd = child.expr_dims();
      auto ev = child.template evaluator<source_rank>(sd);
      using A = value_type;
      cpu_reduce<Op, A, C::packable && simd::packable_v<A>, std::max(C::max_lane_size, sizeof(A)), source_rank>(
          dst.data(), sd, out_strides_in_source(dst), ev, dst.dims().data(), dst.strides().data(), rank,
          P::num_threads());
      if constexpr (std::is_same_v<Op, op::mean>) {
        index_t count = 1;
        for (int i = 0; i < source_rank; ++i)
          if ((Mask >> i) & 1u) count *= sd[i];
        const A scale = count ? A(1) / A(count) : std::numeric_limits<A>::quiet_NaN();
        DV d = dst;
        d = map_node<op::mul, View<const A, typename DV::shape_type, P>, scalar_node<A>>(
            View<const A, typename DV::shape_type, P>(dst), scalar_node<A>{scale});
      }
    }
  }

 private:
  /// First index of the largest value in base[0], base[s], ... base[(n-1) s], or of the first NaN (PyTorch's argmax).
  template <class T>
  static index_t first_argmax(const T* base, index_t n, index_t s) {
    using F = compute_t<T>;
    F bv = F(base[0]);
    index_t best = 0;
    if (bv != bv) return 0;
    for (index_t k = 1; k < n; ++k) {
      const F v = F(base[k * s]);
      if (v != v) return k;
      if (v > bv) {
        bv = v;
        best = k;
      }
    }
    return best;
  }

  // argmax: first index of the largest value along one axis (or over the flattened source).
  template <class DV>
  void host_argmax(const DV& dst) const {
    using T = typename C::value_type;
    using P = typename DV::policy;
    const auto src = Tensor<T, typename C::shape_type, P>(child);  // contiguous, so the loop below is plain
    const auto sd = src.dims();
    if constexpr (Mask == ((source_rank >= 32 ? ~0u : (1u << source_rank) - 1u)) && source_rank != 1) {
      const index_t n = src.size();
      if (n == 0) throw shape_error("tessera: argmax of an empty tensor");
      *dst.data() = first_argmax(src.data(), n, 1);
    } else {
      static_assert(std::popcount(Mask) == 1, "tessera: argmax reduces one axis (or all of them)");
      constexpr int ax = std::countr_zero(Mask);
      index_t outer = 1, inner = 1;
      for (int i = 0; i < ax; ++i) outer *= sd[i];
      for (int i = ax + 1; i < source_rank; ++i) inner *= sd[i];
      const index_t n = sd[ax];
      const auto os = out_strides_in_source(dst);
      stats::count_pass();
#if defined(_OPENMP)
#pragma omp parallel for num_threads(P::num_threads()) if (outer * inner * n >= 32768)
#endif
      for (index_t o = 0; o < outer; ++o)
        for (index_t i = 0; i < inner; ++i) {
          const T* base = src.data() + o * n * inner + i;
          const index_t best = first_argmax(base, n, inner);
          // destination offset from the (outer, inner) position
          index_t rem_o = o, rem_i = i, off = 0;
          for (int d = source_rank - 1; d > ax; --d) { off += (rem_i % sd[d]) * os[d]; rem_i /= sd[d]; }
          for (int d = ax - 1; d >= 0; --d) { off += (rem_o % sd[d]) * os[d]; rem_o /= sd[d]; }
          dst.data()[off] = best;
        }
    }
  }
};

template <class Op, bool Keep, int... Axes, class X>
auto make_reduce(X&& x) {
  auto ex = as_expr(std::forward<X>(x));
  using E = decltype(ex);
  (void)error::element_type_not_supported<Op, typename E::value_type>::ok;
  constexpr std::uint32_t m = axes_mask<Op, typename E::shape_type, Axes...>();
  return reduce_node<Op, E, m, Keep>(std::move(ex));
}
}  // namespace detail

#define TS_REDUCTION(FN, OP)                                                                         \
  template <int... Axes, detail::TensorLike X>                                                       \
  auto FN(X&& x) { return detail::make_reduce<op::OP, false, Axes...>(std::forward<X>(x)); }         \
  template <int... Axes, detail::TensorLike X>                                                       \
  auto FN(X&& x, keepdim_t) { return detail::make_reduce<op::OP, true, Axes...>(std::forward<X>(x)); }
/// sum(x): all axes; sum<1>(x): axis 1; sum<0, -1>(x, keepdim): axes 0 and last, kept as extent 1.
TS_REDUCTION(sum, sum)
TS_REDUCTION(mean, mean)
TS_REDUCTION(max, max_reduce)
TS_REDUCTION(min, min_reduce)
#undef TS_REDUCTION
/// argmax(x): index into the flattened tensor; argmax<Axis>(x): indices along one axis (int64).
template <int... Axes, detail::TensorLike X>
auto argmax(X&& x) {
  static_assert(sizeof...(Axes) <= 1, "tessera: argmax takes one axis, or none for the flattened tensor");
  return detail::make_reduce<op::argmax, false, Axes...>(std::forward<X>(x));
}
template <int... Axes, detail::TensorLike X>
auto argmax(X&& x, keepdim_t) {
  static_assert(sizeof...(Axes) == 1, "tessera: argmax with keepdim takes one axis");
  return detail::make_reduce<op::argmax, true, Axes...>(std::forward<X>(x));
}

}  // namespace tessera
