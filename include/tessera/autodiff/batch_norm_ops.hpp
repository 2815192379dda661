// Batch normalisation of [N, C] features or [N, C, L] sequences per channel (PyTorch's batch_norm as BatchNorm1d
// runs it), written once for every policy on the kernels batch_norm2d uses (backend<P>::batch_norm_stats / _apply /
// _backward over [N, C, HW]: here HW is 1 or L, the same memory layout).
//   batch_norm1d(x, gamma, beta, running_mean, running_var, training, momentum = 0.1, eps = 1e-5)
// In training the batch's statistics normalise (variance biased) and the running ones are updated
// (running = (1 - momentum) * running + momentum * batch, variance unbiased); in evaluation the running ones are used.
#pragma once
#include <memory>
#include <string>

#include "tessera/autodiff/nn_ops.hpp"

namespace tessera::ad {

/// Batch normalisation over (N) or (N, L) per channel of x [N, C] or [N, C, L]. As PyTorch: training on one value per
/// channel is refused; on none (N * L = 0) it gives an empty output and leaves the running statistics as they were.
template <class T, int R, class P, class S1>
Var<T, R, P> batch_norm1d(const Var<T, R, P>& x, const Var<T, 1, P>& gamma, const Var<T, 1, P>& beta, Tensor<T, S1, P>& running_mean,
                          Tensor<T, S1, P>& running_var, bool training, double momentum = 0.1, double eps = 1e-5) {
  static_assert(R == 2 || R == 3, "tessera: batch_norm1d takes [N, C] or [N, C, L]");
  const auto d = x.dims();
  const index_t N = d[0], C = d[1], L = R == 3 ? d[R - 1] : 1;
  if (training && N * L == 1)
    throw shape_error("tessera: batch_norm1d: expected more than 1 value per channel when training, got input shape " +
                      tessera::detail::format_dims(d));
  if (gamma.dims()[0] != C || beta.dims()[0] != C || running_mean.dims()[0] != C || running_var.dims()[0] != C)
    throw shape_error("tessera: batch_norm1d: input " + tessera::detail::format_dims(d) + " has " + std::to_string(C) +
                      " channels but the parameters have " + tessera::detail::format_dims(gamma.dims()));
  using V = Var<T, R, P>;
  using stats = Tensor<T, dyn_shape_t<1>, P>;
  auto mean_ = std::make_shared<stats>(C);
  auto invstd = std::make_shared<stats>(C);
  backend<P>::batch_norm_stats(x.value().data(), N, C, L, training, momentum, eps, running_mean.data(), running_var.data(),
                               mean_->data(), invstd->data());
  typename V::tensor y(d);
  backend<P>::batch_norm_apply(x.value().data(), gamma.value().data(), beta.value().data(), mean_->data(), invstd->data(), y.data(),
                               N, C, L);
  return V::make(std::move(y), [x, gamma, beta, mean_, invstd, training, N, C, L](const auto& g, const auto&) {
    bool acc_g, acc_b, acc_x;
    T* dg = detail::grad_of(gamma, acc_g);
    T* dbeta = detail::grad_of(beta, acc_b);
    T* dx = detail::grad_of(x, acc_x);
    backend<P>::batch_norm_backward(x.value().data(), g.data(), gamma.value().data(), mean_->data(), invstd->data(), dg, dbeta, dx,
                                    N, C, L, training, acc_g, acc_b, acc_x);
  }, x, gamma, beta);
}

}  // namespace tessera::ad
