// Batch normalisation of [N, C] features or [N, C, L] sequences per channel (PyTorch's batch_norm as BatchNorm1d
// runs it), written once for every policy on the kernels batch_norm2d uses (backend<P>::batch_norm_stats / _apply /
// _backward over [N, C, HW]: here HW is 1 or L, the same memory layout).
//   batch_norm1d(x, gamma, beta, running_mean, running_var, training, momentum = 0.1, eps = 1e-5)
// In training the batch's statistics normalise (variance biased) and the running ones are updated
// (running = (1 - momentum) * running + momentum * batch, variance unbiased); in evaluation the running ones are used.
//
// Synchronised batch normalisation (PyTorch's SyncBatchNorm), what nn's BatchNorm layers run in training when a model
// has a stat_reducer (basic_sequential::set_batch_norm_reducer; data parallel training sets one that sums over the
// ranks):
//   sync_batch_norm(x, gamma, beta, running_mean, running_var, reduce, momentum = 0.1, eps = 1e-5)
// x is [N, C], [N, C, L] or [N, C, H, W]. The forward calls reduce once on [sum(x) (C), sum(x^2) (C), count] (this
// rank's, in double) and normalises with the global mean and biased variance; the running statistics take the global
// mean and unbiased variance (count - 1). The backward (when x takes a gradient) calls reduce once on
// [sum(g) (C), sum(g * xhat) (C)] and forms dx with the global count; the gamma and beta gradients stay this rank's sums
// (data parallel averages them afterwards), as SyncBatchNorm.backward. Every rank must run the same layers in the same
// order, so that the reductions match. Host policies only: a device policy throws std::logic_error.
#pragma once
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/autodiff/nn_ops.hpp"
#include "tessera/kernels/cpu/batch_norm.hpp"

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

/// Sums values[0 .. n) in place over every rank of a data-parallel group (an all-reduce of doubles): what
/// sync_batch_norm calls to combine its per-channel sums. Every rank calls it the same number of times, in the same
/// order, with the same n.
using stat_reducer = std::function<void(double* values, index_t n)>;

/// Batch normalisation in training with the statistics of every rank's batch (PyTorch's SyncBatchNorm), over (N),
/// (N, L) or (N, H, W) per channel of x [N, C], [N, C, L] or [N, C, H, W]: `reduce` sums [sum(x), sum(x^2), count]
/// over the ranks. A rank may hold no values (N * L = 0: it still takes part in the reductions); one value per channel
/// over all ranks is refused (a shape_error on every rank alike).
template <class T, int R, class P, class S1>
Var<T, R, P> sync_batch_norm(const Var<T, R, P>& x, const Var<T, 1, P>& gamma, const Var<T, 1, P>& beta, Tensor<T, S1, P>& running_mean,
                             Tensor<T, S1, P>& running_var, const stat_reducer& reduce, double momentum = 0.1, double eps = 1e-5) {
  static_assert(R >= 2 && R <= 4, "tessera: sync_batch_norm takes [N, C], [N, C, L] or [N, C, H, W]");
  const auto d = x.dims();
  const index_t N = d[0], C = d[1];
  index_t HW = 1;
  for (int i = 2; i < R; ++i) HW *= d[i];
  if (gamma.dims()[0] != C || beta.dims()[0] != C || running_mean.dims()[0] != C || running_var.dims()[0] != C)
    throw shape_error("tessera: sync_batch_norm: input " + tessera::detail::format_dims(d) + " has " + std::to_string(C) +
                      " channels but the parameters have " + tessera::detail::format_dims(gamma.dims()));
  if (!reduce) throw std::invalid_argument("tessera: sync_batch_norm: the stat_reducer is empty");
  if constexpr (P::on_device) {
    throw std::logic_error(std::string("tessera: synchronised batch normalisation (a stat_reducer, set_batch_norm_reducer) runs "
                                       "on host policies only, not on ") + P::name);
  } else {
    using V = Var<T, R, P>;
    using stats = Tensor<T, dyn_shape_t<1>, P>;
    std::vector<double> sums(std::size_t(2 * C + 1));
    tessera::detail::cpu_batch_norm_local_sums<T>(x.value().data(), N, C, HW, sums.data(), P::num_threads());
    sums[std::size_t(2 * C)] = double(N * HW);
    reduce(sums.data(), 2 * C + 1);
    const double count = sums[std::size_t(2 * C)];
    if (count == 1)
      throw shape_error("tessera: sync_batch_norm: expected more than 1 value per channel when training, got 1 over all ranks "
                        "(this rank's input shape " + tessera::detail::format_dims(d) + ")");
    auto mean_ = std::make_shared<stats>(C);
    auto invstd = std::make_shared<stats>(C);
    tessera::detail::cpu_batch_norm_global_stats<T>(sums.data(), C, momentum, eps, running_mean.data(), running_var.data(),
                                                    mean_->data(), invstd->data());
    typename V::tensor y(d);
    tessera::detail::cpu_batch_norm_apply<T>(x.value().data(), gamma.value().data(), beta.value().data(), mean_->data(),
                                             invstd->data(), y.data(), N, C, HW, P::num_threads());
    return V::make(std::move(y), [x, gamma, beta, mean_, invstd, reduce, count, N, C, HW](const auto& g, const auto&) {
      bool acc_g, acc_b, acc_x;
      T* dg = detail::grad_of(gamma, acc_g);
      T* dbeta = detail::grad_of(beta, acc_b);
      T* dx = detail::grad_of(x, acc_x);
      std::vector<double> gsums(std::size_t(2 * C));
      tessera::detail::cpu_batch_norm_backward_sums<T>(x.value().data(), g.data(), mean_->data(), invstd->data(), dg, dbeta,
                                                       gsums.data(), N, C, HW, acc_g, acc_b, P::num_threads());
      // as SyncBatchNorm.backward: no input gradient, no reduction (alike on every rank: the same model). Not `dx`:
      // a rank without rows has no dx buffer but takes part.
      if (!x.requires_grad()) return;
      reduce(gsums.data(), 2 * C);
      if (dx && count > 0)
        tessera::detail::cpu_batch_norm_backward_dx<T>(x.value().data(), g.data(), gamma.value().data(), mean_->data(), invstd->data(),
                                                       gsums.data(), count, dx, N, C, HW, acc_x, P::num_threads());
    }, x, gamma, beta);
  }
}

}  // namespace tessera::ad
