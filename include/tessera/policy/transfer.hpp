// Moving tensors between policies: to<cuda>(t), to<cpu>(t), to<cpu_threads>(t).
#pragma once
#include <cstring>
#include <type_traits>

#include "tessera/expr/node.hpp"

namespace tessera {

namespace detail {
template <class From, class To, class T>
void copy_between(T* dst, const T* src, std::size_t n) {
  if (n == 0) return;
  if constexpr (!From::on_device && !To::on_device) std::memcpy(dst, src, n * sizeof(T));
  else {
    using Dev = std::conditional_t<From::on_device, From, To>;
    static_assert(requires { device_kernels<Dev>::enabled; },
                  "tessera: moving a tensor to or from the cuda policy needs this file compiled by nvcc (a .cu file)");
    if constexpr (From::on_device && To::on_device) memory<Dev>::copy_device_to_device(dst, src, n);
    else if constexpr (To::on_device) memory<Dev>::copy_to_device(dst, src, n);
    else memory<Dev>::copy_to_host(dst, src, n);
  }
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
