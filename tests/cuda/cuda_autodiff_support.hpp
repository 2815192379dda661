// What the CUDA autodiff tests share: deterministic host inputs and leaf Vars holding copies of them, so that each
// test runs the same operation on cpu_threads and on cuda and compares values and gradients.
#pragma once
#include <cmath>
#include <tessera/autodiff/var.hpp>
#include <tessera/policy/transfer.hpp>

namespace cuda_test {

template <int R>
using htensor = tessera::Tensor<float, tessera::dyn_shape_t<R>>;

/// Deterministic host values in [lo, hi), varied by salt, away from 0.
template <int R>
htensor<R> values(const tessera::dims_t<R>& d, int salt, double lo = -1.0, double hi = 1.0) {
  htensor<R> t(d);
  for (tessera::index_t i = 0; i < t.size(); ++i) {
    const double u = double((i * 7919 + salt * 104729 + 17) % 1000) / 1000.0;
    double v = lo + (hi - lo) * u;
    if (std::abs(v) < 0.05) v += 0.1;
    t.data()[i] = float(v);
  }
  return t;
}

/// A leaf Var of policy P holding a copy of the host tensor h.
template <class P, class S>
tessera::ad::Var<float, S::rank, P> leaf(const tessera::Tensor<float, S>& h, bool requires_grad = true) {
  return tessera::ad::Var<float, S::rank, P>(tessera::to<P>(h), requires_grad);
}

}  // namespace cuda_test
