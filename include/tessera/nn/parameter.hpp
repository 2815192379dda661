// A type-erased handle on one trainable parameter (a leaf Var of any rank): what optimizers, initialisers and
// checkpoints work on. Names follow libtorch: "<layer index>.<name>", e.g. "0.weight", "3.bias".
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tessera/autodiff/var.hpp"

namespace tessera::nn {

template <class T>
struct parameter_ref {
  std::string name;
  std::vector<index_t> dims;
  index_t size = 0;
  std::function<T*()> value;  ///< the parameter's elements, contiguous, row-major (stable while the model lives)
  std::function<T*()> grad;   ///< its gradient, or nullptr while backward() has not produced one
  std::function<void()> zero_grad;
  /// value() and grad() point to device memory (a parameter of the cuda policy): only device code may touch them
  /// (optimizers launch kernels for such parameters; see optim/optim.hpp).
  bool on_device = false;
};

/// A handle on `v` (which must be a leaf) under `name`.
template <class T, int R, class P>
parameter_ref<T> make_parameter_ref(std::string name, ad::Var<T, R, P> v) {
  parameter_ref<T> p;
  p.on_device = P::on_device;
  p.name = std::move(name);
  for (int i = 0; i < R; ++i) p.dims.push_back(v.dims()[i]);
  p.size = v.size();
  p.value = [v]() mutable { return v.mutable_value().data(); };
  p.grad = [v]() -> T* { return v.has_grad() ? const_cast<T*>(v.grad().data()) : nullptr; };
  p.zero_grad = [v]() mutable { v.zero_grad(); };
  return p;
}

}  // namespace tessera::nn
