// Moving tensors between policies: to<cuda>(t), to<cpu>(t), to<cpu_threads>(t).
#pragma once
#include <cstring>
#include <type_traits>

#include "tessera/expr/node.hpp"
#include "tessera/policy/planner.hpp"

namespace tessera {

namespace detail {
/// n elements from src (memory of From) to dst (memory of To): the side that is not host memory does the copy.
template <class From, class To, class T>
void copy_between(T* dst, const T* src, std::size_t n) {
  static_assert(requires { backend<From>::on_device; } && requires { backend<To>::on_device; },
                "tessera: moving a tensor to or from the cuda policy needs this file compiled by nvcc (a .cu file)");
  if (n == 0) return;
  if constexpr (!backend<From>::on_device) backend<To>::from_host(dst, src, index_t(n));
  else if constexpr (!backend<To>::on_device) backend<From>::to_host(dst, src, index_t(n));
  else backend<From>::copy(dst, src, index_t(n));
}
}  // namespace detail

/// A copy of a tensor, view or expression under policy P2 (same element type and shape). Device copies synchronise.
template <Policy P2, detail::TensorLike X>
auto to(const X& x) {
  using D = std::remove_cvref_t<X>;
  if constexpr (detail::is_tensor_v<D>) {
    using T = typename D::value_type;
    Tensor<T, typename D::shape_type, P2> out(x.dims());
    detail::copy_between<typename D::policy, P2>(out.data(), x.data(), std::size_t(x.size()));
    return out;
  } else {
    return to<P2>(eval(x));  // make it contiguous in its own policy first
  }
}

}  // namespace tessera
