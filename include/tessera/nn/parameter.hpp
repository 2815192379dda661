// A type-erased handle on one trainable parameter (a leaf Var of any rank): what optimizers, initialisers and
// checkpoints work on. Names follow libtorch: "<layer index>.<name>", e.g. "0.weight", "3.bias".
// What an optimizer does to a parameter's memory (state buffers, copies, the updates) comes from backend<P> of the
// parameter's policy: make_parameter_ref<T, R, P> stores a pointer to parameter_ops_of<T, P>, a table of backend<P>'s
// functions the compiler instantiates for that policy (a cuda parameter's table exists only where nvcc compiles).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#endif

namespace tessera::nn {

/// backend<P>'s functions for a parameter's elements and its optimizer state (n elements each).
template <class T>
struct parameter_ops {
  bool on_device;                                     ///< the memory is the cuda device's
  T* (*allocate)(index_t n);                          ///< uninitialised
  void (*deallocate)(T* p);
  void (*zero)(T* p, index_t n);
  void (*copy)(T* dst, const T* src, index_t n);      ///< within the parameter's memory (host to host, device to device)
  void (*to_host)(T* dst, const T* src, index_t n);    ///< waits for the copy
  void (*from_host)(T* dst, const T* src, index_t n);  ///< waits for the copy
  void (*sgd_update)(T* p, const T* g, T* buf, index_t n, const tessera::detail::sgd_args<T>& a);
  void (*adam_update)(T* p, const T* g, T* m, T* v, index_t n, const tessera::detail::adam_args<T>& a);
};

/// The table of policy P.
template <class T, class P>
inline constexpr parameter_ops<T> parameter_ops_of = {
    P::on_device,
    &backend<P>::template allocate<T>,
    &backend<P>::template deallocate<T>,
    &backend<P>::template zero<T>,
    &backend<P>::template copy<T>,
    &backend<P>::template to_host<T>,
    &backend<P>::template from_host<T>,
    &backend<P>::template sgd_update<T>,
    &backend<P>::template adam_update<T>,
};

template <class T>
struct parameter_ref {
  std::string name;
  std::vector<index_t> dims;
  index_t size = 0;
  std::function<T*()> value;  ///< the parameter's elements, contiguous, row-major (stable while the model lives)
  std::function<T*()> grad;   ///< its gradient, or nullptr while backward() has not produced one
  std::function<void()> zero_grad;
  /// Sets the function backward() calls once this parameter's gradient is complete during a walk (an empty
  /// function removes it): data-parallel training starts its gradient buckets' all-reduce from it.
  std::function<void(std::function<void()>)> set_grad_ready;
  std::function<T*()> ensure_grad;  ///< its gradient, made (zero-filled) if backward() has not produced one
  /// value() and grad() point to device memory (a parameter of the cuda policy): only device code may touch them
  /// (initialisers and checkpoints refuse or copy such parameters).
  bool on_device = false;
  /// backend<P>'s functions for this memory (set by make_parameter_ref; host memory unless said otherwise).
  const parameter_ops<T>* ops = &parameter_ops_of<T, cpu>;
};

/// A handle on `v` (which must be a leaf) under `name`.
template <class T, int R, class P>
parameter_ref<T> make_parameter_ref(std::string name, ad::Var<T, R, P> v) {
  parameter_ref<T> p;
  p.on_device = P::on_device;
  p.ops = &parameter_ops_of<T, P>;
  p.name = std::move(name);
  for (int i = 0; i < R; ++i) p.dims.push_back(v.dims()[i]);
  p.size = v.size();
  p.value = [v]() mutable { return v.mutable_value().data(); };
  p.grad = [v]() -> T* { return v.has_grad() ? const_cast<T*>(v.grad().data()) : nullptr; };
  p.ensure_grad = [v]() mutable { return v.mutable_grad().data(); };
  p.zero_grad = [v]() mutable { v.zero_grad(); };
  p.set_grad_ready = [v](std::function<void()> f) { v.node().grad_ready = std::move(f); };
  return p;
}

}  // namespace tessera::nn
