// nn::BatchNorm1d<C>: batch normalisation of [N, C] features or [N, C, L] sequences per channel, as PyTorch's
// torch.nn.BatchNorm1d (momentum 0.1, eps 1e-5, affine, tracking running statistics). Parameters "weight" (ones)
// and "bias" (zeros); buffers "running_mean" (zeros), "running_var" (ones) and "num_batches_tracked" (an int64
// scalar on the host counting the training passes). Training normalises with the batch's statistics (variance
// biased) and updates the running ones (variance unbiased); evaluation uses the running ones. The operation is
// ad::batch_norm1d (autodiff/batch_norm_ops.hpp); in training with a context's batch_norm_reducer (a model's
// set_batch_norm_reducer) it is ad::sync_batch_norm, PyTorch's SyncBatchNorm. int8 models refuse it at compile time
// (quant/layers.hpp names it).
#pragma once
#include <cstdint>
#include <string>

#include "tessera/autodiff/batch_norm_ops.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera::nn {

template <int C>
struct BatchNorm1d {
  static_assert(C > 0, "tessera::nn::BatchNorm1d: the number of channels must be positive");
  template <class S>
  static constexpr bool accepts = (S::rank == 2 || S::rank == 3) && detail::fits(detail::ext<S>(1), C);
  template <class S>
  static constexpr auto expected_of() {
    if constexpr (S::rank == 3) return Shape<detail::ext<S>(0), C, detail::ext<S>(2)>{};
    else return Shape<detail::ext<S>(0), C>{};
  }
  template <class S>
  using expected = decltype(expected_of<S>());
  template <class S>
  using output = S;

  template <class T, class P>
  struct state {
    ad::Var<T, 1, P> weight, bias;
    Tensor<T, Shape<dyn>, P> running_mean, running_var;
    Tensor<std::int64_t, Shape<>, cpu> num_batches_tracked;
    explicit state(Rng&) : weight(detail::filled_parameter<T, 1, P>({C}, T(1))), bias(detail::filled_parameter<T, 1, P>({C}, T(0))),
                           running_mean(C), running_var(C) {
      running_mean = T(0);
      running_var = T(1);
      num_batches_tracked() = 0;
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      f(prefix + "weight", weight);
      f(prefix + "bias", bias);
    }
    template <class F>
    void for_each_buffer(const std::string& prefix, F&& f) {
      f(prefix + "running_mean", running_mean);
      f(prefix + "running_var", running_var);
      f(prefix + "num_batches_tracked", num_batches_tracked);
    }
    template <int R>
    ad::Var<T, R, P> forward(const ad::Var<T, R, P>& x, context& ctx) {
      static_assert(R == 2 || R == 3, "tessera::nn::BatchNorm1d takes [N, C] or [N, C, L]");
      auto y = ctx.training && ctx.batch_norm_reducer
                   ? ad::sync_batch_norm(x, weight, bias, running_mean, running_var, *ctx.batch_norm_reducer)
                   : ad::batch_norm1d(x, weight, bias, running_mean, running_var, ctx.training);
      if (ctx.training) num_batches_tracked() += 1;
      return y;
    }
  };
};

}  // namespace tessera::nn
