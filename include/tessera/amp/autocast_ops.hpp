// The bf16 forms of the layer products that amp::autocast (amp/autocast.hpp) puts in place of the fp32 ones:
//   linear_bf16<P>(x, W, b, act)               y = act(bf16(x) bf16(W)^T + b), fp32 accumulation
//   conv2d_bf16<P>(x, w, b, opt, act)          y = act(conv2d(bf16(x), bf16(w)) + b)
//   conv2d_relu_maxpool2_bf16<P>(x, w, b, opt) max_pool2d<2>(the former with ReLU)
// with the signatures of ad::detail::autocast_ops (autodiff/autocast_hook.hpp), written once for every policy
// through backend<P>: to_bf16 (rounding), gemm_bf16, conv2d_bf16 and its two gradient products, activation_backward
// and max_pool2x2_relu_backward (the same fp32 kernels as the fp32 operations). Bias and activation are the products'
// block epilogue on backends that have them (the host), else one fp32 pass after the product.
//
// The backward keeps the bf16 copies the forward made (x's and the weight's) and rounds the output gradient dz (fp32,
// after the activation's and bias's fp32 gradients) once: dx (+)= bf16(dz) bf16(W), dW (+)= bf16(dz)^T bf16(x), both
// accumulated in fp32 into the fp32 gradients. Weights are rounded once per autocast scope (weight_cache); activations
// at every use. The shape checks are the fp32 operations' (ad::linear checks before it hands over; the convolutions
// build the same conv2d expression node, whose constructor checks them, and check the bias with the same message).
#pragma once
#include <cmath>
#include <memory>
#include <unordered_map>

#include "tessera/autodiff/autocast_hook.hpp"
#include "tessera/autodiff/nn_ops.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif

namespace tessera::amp::detail {

using tessera::detail::conv_geometry;
using tessera::detail::mat_ref;

/// backend<P> has the bf16 GEMM and the rounding (linear can run in bf16).
template <class P>
concept has_bf16_gemm = requires(index_t n, mat_ref<bfloat16> r, float* c, const float* s, bfloat16* d) {
  backend<P>::gemm_bf16(n, n, n, r, r, c, n, false);
  backend<P>::to_bf16(s, d, n);
};
/// ... and the bf16 convolution with its two gradient products (conv2d can run in bf16).
template <class P>
concept has_bf16_conv = has_bf16_gemm<P> && requires(const conv_geometry& g, const bfloat16* x, float* y, bool acc) {
  backend<P>::conv2d_bf16(g, x, x, y);
  backend<P>::conv2d_bf16_backward_data(g, x, x, y, acc);
  backend<P>::conv2d_bf16_backward_weight(g, x, x, y, acc);
};

/// bf16 copies of elements, in P's memory.
template <class P>
using bf16_buffer = Tensor<bfloat16, dyn_shape_t<1>, P>;

/// An autocast scope's rounded weights: by node, with the node kept alive (its address cannot be reused while the
/// scope holds the copy).
struct weight_cache_entry {
  std::shared_ptr<const void> owner;
  std::shared_ptr<const void> copy;
};
using weight_cache = std::unordered_map<const void*, weight_cache_entry>;
/// The cache of the innermost enabled scope of this thread (null: none).
inline weight_cache*& current_cache() {
  static thread_local weight_cache* c = nullptr;
  return c;
}

/// n floats rounded to bf16 (round to nearest even) in a new buffer of P.
template <class P>
std::shared_ptr<const bf16_buffer<P>> rounded(const float* src, index_t n) {
  auto t = std::make_shared<bf16_buffer<P>>(n);
  backend<P>::to_bf16(src, t->data(), n);
  return t;
}

/// v's value rounded to bf16; a weight (a leaf that requires gradients) once per scope.
template <int R, class P>
std::shared_ptr<const bf16_buffer<P>> rounded(const ad::Var<float, R, P>& v) {
  auto& nd = v.node();
  weight_cache* cache = current_cache();
  if (!cache || !nd.is_leaf || !nd.requires_grad) return rounded<P>(v.value().data(), v.size());
  if (auto it = cache->find(&nd); it != cache->end()) return std::static_pointer_cast<const bf16_buffer<P>>(it->second.copy);
  auto t = rounded<P>(v.value().data(), v.size());
  cache->emplace(&nd, weight_cache_entry{v.ptr(), t});
  return t;
}

/// c[i, j] = act(c[i, j] + bias) on a rows x cols block (row stride ld); the bias per column (bcol) or per row (brow),
/// either or both null. The activations as the fp32 path's (NaN passes through ReLU).
inline void finish_block(float* c, index_t ld, index_t rows, index_t cols, const float* bcol, const float* brow, activation act) {
  for (index_t i = 0; i < rows; ++i) {
    float* __restrict r = c + i * ld;
    if (bcol)
      for (index_t j = 0; j < cols; ++j) r[j] += bcol[j];
    if (brow) {
      const float bi = brow[i];
      for (index_t j = 0; j < cols; ++j) r[j] += bi;
    }
    switch (act) {
      case activation::none: break;
      case activation::relu:
        for (index_t j = 0; j < cols; ++j) r[j] = r[j] < 0.f ? 0.f : r[j];
        break;
      case activation::tanh:
        for (index_t j = 0; j < cols; ++j) r[j] = std::tanh(r[j]);
        break;
      case activation::sigmoid:
        for (index_t j = 0; j < cols; ++j) r[j] = 1.f / (1.f + std::exp(-r[j]));
        break;
    }
  }
}

/// linear's epilogue: bias per column, on each finished tile of y [B, O].
struct linear_epilogue {
  static constexpr bool active = true;
  float* y;
  index_t ld;
  const float* bias;
  activation act;
  void operator()(index_t i0, index_t j0, index_t rows, index_t cols) const {
    finish_block(y + i0 * ld + j0, ld, rows, cols, bias ? bias + j0 : nullptr, nullptr, act);
  }
};

/// conv2d's epilogue: bias per output channel, on each finished block (image n, channels k0.., pixels p0..) of y.
struct conv_epilogue {
  static constexpr bool active = true;
  float* y;
  index_t K, P;
  const float* bias;
  activation act;
  void operator()(index_t n, index_t k0, index_t krows, index_t p0, index_t pcols) const {
    finish_block(y + (n * K + k0) * P + p0, P, krows, pcols, nullptr, bias ? bias + k0 : nullptr, act);
  }
};

/// y = act(x W^T + b) with bf16 operands (see the top of this file). x [B, I], W [O, I], b [O] or empty.
template <class P>
ad::Var<float, 2, P> linear_bf16(const ad::Var<float, 2, P>& x, const ad::Var<float, 2, P>& W, const ad::Var<float, 1, P>& b,
                                 activation act) {
  using V = ad::Var<float, 2, P>;
  const index_t B = x.dims()[0], I = x.dims()[1], O = W.dims()[0];  // checked by ad::linear
  const bool has_b = b.defined();
  auto xb = rounded(x);
  auto wb = rounded(W);
  typename V::tensor y(B, O);
  if constexpr (backend<P>::block_epilogues) {
    backend<P>::gemm_bf16(B, O, I, {xb->data(), I, 1}, {wb->data(), 1, I}, y.data(), O, false,
                          linear_epilogue{y.data(), O, has_b ? b.value().data() : nullptr, act});
  } else {
    backend<P>::gemm_bf16(B, O, I, {xb->data(), I, 1}, {wb->data(), 1, I}, y.data(), O, false);
    typename V::tensor z(B, O);
    if (has_b) ad::detail::assign_activated(z, y + b.value(), act);
    else ad::detail::assign_activated(z, y, act);
    y = std::move(z);
  }
  auto back = [x, W, b, act, xb, wb](const auto& g, const auto& out) {
    const index_t B = out.dims()[0], O = out.dims()[1], I = x.dims()[1];
    typename V::tensor dz_buf;
    const float* dz = ad::detail::output_gradient<P>(g, out, b, act, B, O, index_t(1), dz_buf);
    if (!(x.requires_grad() || W.requires_grad())) return;
    const auto dzb = rounded<P>(dz, B * O);
    bool acc;
    if (float* gx = ad::detail::grad_of(x, acc))  // dx (B x I) = dz (B x O) W (O x I)
      backend<P>::gemm_bf16(B, I, O, {dzb->data(), O, 1}, {wb->data(), I, 1}, gx, I, acc);
    if (float* gw = ad::detail::grad_of(W, acc))  // dW (O x I) = dz^T (O x B) x (B x I)
      backend<P>::gemm_bf16(O, I, B, {dzb->data(), 1, O}, {xb->data(), I, 1}, gw, I, acc);
  };
  if (has_b) return V::make(std::move(y), back, x, W, b);
  return V::make(std::move(y), back, x, W);
}

/// The convolution's sizes, its shapes and its bias checked as ad::conv2d checks them.
template <class P>
conv_geometry checked_geometry(const ad::Var<float, 4, P>& x, const ad::Var<float, 4, P>& w, const ad::Var<float, 1, P>& b,
                               const conv2d_options& opt) {
  const conv_geometry geo = tessera::conv2d(x.value(), w.value(), opt).geometry();  // the node's constructor checks the shapes
  if (b.defined() && b.dims()[0] != geo.K)
    throw shape_error("tessera: conv2d: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                      tessera::detail::format_dims(w.dims()));
  return geo;
}

/// act(conv2d(bf16(x), bf16(w)) + b) into a new fp32 tensor.
template <class P>
typename ad::Var<float, 4, P>::tensor conv_forward_bf16(const conv_geometry& geo, const bf16_buffer<P>& xb, const bf16_buffer<P>& wb,
                                                        const ad::Var<float, 1, P>& b, activation act) {
  using V = ad::Var<float, 4, P>;
  typename V::tensor y(geo.N, geo.K, geo.OH, geo.OW);
  const index_t np = geo.OH * geo.OW;
  if constexpr (backend<P>::block_epilogues) {
    backend<P>::conv2d_bf16(geo, xb.data(), wb.data(), y.data(), conv_epilogue{y.data(), geo.K, np, b.defined() ? b.value().data() : nullptr, act});
  } else {
    backend<P>::conv2d_bf16(geo, xb.data(), wb.data(), y.data());
    typename V::tensor z(y.dims());
    if (b.defined()) ad::detail::assign_activated(z, y + tessera::reshape<dyn_shape_t<3>>(b.value(), dims_t<3>{geo.K, 1, 1}), act);
    else ad::detail::assign_activated(z, y, act);
    y = std::move(z);
  }
  return y;
}

/// dw (+)= and dx (+)= the convolution's gradient products from dz (fp32, the gradient at the product's output).
template <class P>
void conv_products_backward(const conv_geometry& geo, const ad::Var<float, 4, P>& x, const ad::Var<float, 4, P>& w,
                            const bf16_buffer<P>& xb, const bf16_buffer<P>& wb, const float* dz) {
  if (!(x.requires_grad() || w.requires_grad())) return;
  const auto dzb = rounded<P>(dz, geo.N * geo.K * geo.OH * geo.OW);
  bool acc;
  if (float* gw = ad::detail::grad_of(w, acc)) backend<P>::conv2d_bf16_backward_weight(geo, xb.data(), dzb->data(), gw, acc);
  if (float* gx = ad::detail::grad_of(x, acc)) backend<P>::conv2d_bf16_backward_data(geo, dzb->data(), wb.data(), gx, acc);
}

/// y = act(conv2d(x, w, opt) + b) with bf16 operands.
template <class P>
ad::Var<float, 4, P> conv2d_bf16(const ad::Var<float, 4, P>& x, const ad::Var<float, 4, P>& w, const ad::Var<float, 1, P>& b,
                                 const conv2d_options& opt, activation act) {
  using V = ad::Var<float, 4, P>;
  const conv_geometry geo = checked_geometry(x, w, b, opt);
  auto xb = rounded(x);
  auto wb = rounded(w);
  typename V::tensor y = conv_forward_bf16<P>(geo, *xb, *wb, b, act);
  auto back = [x, w, b, act, geo, xb, wb](const auto& g, const auto& out) {
    typename V::tensor dz_buf;
    const float* dz = ad::detail::output_gradient<P>(g, out, b, act, geo.N, geo.K, geo.OH * geo.OW, dz_buf);
    conv_products_backward<P>(geo, x, w, *xb, *wb, dz);
  };
  if (b.defined()) return V::make(std::move(y), back, x, w, b);
  return V::make(std::move(y), back, x, w);
}

/// max_pool2d<2>(relu(conv2d(x, w, opt) + b)) with bf16 operands (the pooling and its backward in fp32, as
/// ad::conv2d_relu_maxpool2's).
template <class P>
ad::Var<float, 4, P> conv2d_relu_maxpool2_bf16(const ad::Var<float, 4, P>& x, const ad::Var<float, 4, P>& w,
                                               const ad::Var<float, 1, P>& b, const conv2d_options& opt) {
  using V = ad::Var<float, 4, P>;
  const conv_geometry geo = checked_geometry(x, w, b, opt);
  auto xb = rounded(x);
  auto wb = rounded(w);
  auto y = std::make_shared<typename V::tensor>(conv_forward_bf16<P>(geo, *xb, *wb, b, activation::relu));
  typename V::tensor pooled(tessera::max_pool2d<2>(*y));
  auto back = [x, w, b, geo, y, xb, wb](const auto& g, const auto& out) {
    bool acc_b;
    float* db = ad::detail::grad_of(b, acc_b);
    typename V::tensor dz(y->dims());
    backend<P>::max_pool2x2_relu_backward(ad::detail::pool_geometry(*y, out, pool2d_options{.kernel = 2}), y->data(), g.data(),
                                          dz.data(), db, acc_b);
    conv_products_backward<P>(geo, x, w, *xb, *wb, dz.data());
  };
  if (b.defined()) return V::make(std::move(pooled), back, x, w, b);
  return V::make(std::move(pooled), back, x, w);
}

}  // namespace tessera::amp::detail
