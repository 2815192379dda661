// Layer normalisation on Vars, written once for every policy:
//   layer_norm(x, weight, bias, eps)   x of any rank normalised over its last K axes (K = weight's rank; with no
//                                      affine parameters layer_norm<K>(x, {}, {}, eps)), as torch.nn.functional.layer_norm:
//                                      mean and biased variance per row, y = (x - mean) / sqrt(var + eps) * w + b.
// One fused pass forward (the rows' mean and 1/sqrt(var + eps) kept) and one fused pass backward for dx, dweight
// and dbias, through backend<P>::layer_norm_forward / _backward (kernels/cpu/norm.hpp, kernels/cuda/norm.hpp).
#pragma once
#include <memory>
#include <string>

#include "tessera/autodiff/ops.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif

namespace tessera::ad {

/// x normalised over its last K axes, scaled by weight and shifted by bias (both of those K extents; either may be an
/// empty Var: no scale / no shift). eps is added to the variance, as PyTorch's default 1e-5.
template <int K, class T, int R, class P>
Var<T, R, P> layer_norm(const Var<T, R, P>& x, const Var<T, K, P>& weight = {}, const Var<T, K, P>& bias = {},
                        double eps = 1e-5) {
  static_assert(K >= 1 && K <= R, "tessera: layer_norm: normalises over 1 to rank-of-input trailing axes");
  const auto& xd = x.dims();
  index_t cols = 1;
  for (int i = 0; i < K; ++i) cols *= xd[R - K + i];
  const index_t rows = cols > 0 ? x.size() / cols : 0;
  auto check = [&](const Var<T, K, P>& p, const char* what) {
    if (!p.defined()) return;
    for (int i = 0; i < K; ++i)
      if (p.dims()[i] != xd[R - K + i])
        throw shape_error(std::string("tessera: layer_norm: ") + what + " " + tessera::detail::format_dims(p.dims()) +
                          " does not match the last axes of the input " + tessera::detail::format_dims(xd));
  };
  check(weight, "weight");
  check(bias, "bias");
  using V = Var<T, R, P>;
  using stats = Tensor<T, dyn_shape_t<1>, P>;
  auto mean = std::make_shared<stats>(rows);
  auto rstd = std::make_shared<stats>(rows);
  typename V::tensor y(xd);
  const T* w = weight.defined() ? weight.value().data() : nullptr;
  const T* b = bias.defined() ? bias.value().data() : nullptr;
  backend<P>::layer_norm_forward(x.value().data(), w, b, y.data(), mean->data(), rstd->data(), rows, cols, eps);
  auto back = [x, weight, bias, mean, rstd, rows, cols](const auto& g, const auto&) {
    bool acc_x, acc_w, acc_b;
    T* dx = detail::grad_of(x, acc_x);
    T* dw = detail::grad_of(weight, acc_w);
    T* db = detail::grad_of(bias, acc_b);
    const T* w = weight.defined() ? weight.value().data() : nullptr;
    backend<P>::layer_norm_backward(x.value().data(), g.data(), w, mean->data(), rstd->data(), dx, acc_x, dw, acc_w, db, acc_b,
                                    rows, cols);
  };
  if (weight.defined() && bias.defined()) return V::make(std::move(y), back, x, weight, bias);
  if (weight.defined()) return V::make(std::move(y), back, x, weight);
  if (bias.defined()) return V::make(std::move(y), back, x, bias);
  return V::make(std::move(y), back, x);
}

}  // namespace tessera::ad
