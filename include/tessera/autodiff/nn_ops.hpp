// Differentiable layer operations with fused forward and backward passes, written once for every policy:
//   linear(x, W, b, act)      y = act(x W^T + b): one GEMM with bias and activation as its epilogue; backward makes
//                             dz = g * act'(y) and the bias gradient in one pass, then two GEMMs that accumulate
//                             straight into dx and dW.
//   conv2d(x, w, b, opt, act) the same for convolution; conv2d_relu_maxpool2 the convolution, ReLU and a 2x2
//                             max-pool as one operation.
//   max_pool2d / avg_pool2d, cross_entropy (log-softmax and NLL fused), mse_loss (targets: a Var, or a tensor or
//   view of any policy), dropout, batch_norm2d
//   (log_softmax and softmax are in ops.hpp).
// Shapes are checked and gradients kept here; every kernel is reached through backend<P> (kernels/backend.hpp:
// kernels/cpu/nn.hpp on the host, kernels/cuda/nn.hpp on the GPU, the same results to rounding). Forwards of
// products and pools are expressions: the planner runs them fused on the host and through cuBLASLt / cuDNN on CUDA.
// Temporaries are tensors of P, freed when the backward returns. Inside an amp::autocast scope (amp/autocast.hpp)
// linear, conv2d and conv2d_relu_maxpool2 on float run their products in bf16 instead (autodiff/autocast_hook.hpp).
#pragma once
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/autodiff/autocast_hook.hpp"
#include "tessera/autodiff/ops.hpp"
#include "tessera/core/random.hpp"
#include "tessera/expr/conv.hpp"
#include "tessera/expr/pool.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif

namespace tessera::ad {

/// The activation a layer applies after its product (kernels/backend.hpp): ad::activation::relu and so on.
using activation = tessera::activation;
/// An activation known at compile time: activation_c<activation::relu>{} where an activation is taken.
template <activation A>
using activation_c = std::integral_constant<activation, A>;
/// What linear and conv2d take as their activation: a run-time value or an activation_c.
template <class A>
concept activation_arg = std::is_same_v<A, activation> ||
                         (std::is_same_v<typename A::value_type, activation> && requires { A::value; });

namespace detail {

// Host kernels (kernels/cpu/nn.hpp) that autodiff/rnn_ops.hpp calls by these names.
using tessera::detail::activation_backward;
using tessera::detail::activation_derivative;

/// y = act(e) for an activation known at compile time (a model's layers know theirs): one fused assignment compiled.
template <class Dst, class E, activation A>
void assign_activated(Dst& y, const E& e, std::integral_constant<activation, A>) {
  if constexpr (A == activation::none) y = e;
  else if constexpr (A == activation::relu) y = tessera::relu(e);
  else if constexpr (A == activation::tanh) y = tessera::tanh(e);
  else y = tessera::sigmoid(e);
}

/// y = act(e) for the activation chosen at run time (each branch is one fused assignment, all four compiled).
template <class Dst, class E>
void assign_activated(Dst& y, const E& e, activation act) {
  switch (act) {
    case activation::none: y = e; break;
    case activation::relu: y = tessera::relu(e); break;
    case activation::tanh: y = tessera::tanh(e); break;
    case activation::sigmoid: y = tessera::sigmoid(e); break;
  }
}

/// act(conv2d(x, w) + b) evaluated into a new tensor (one pass: bias and activation are the epilogue); geo gets the
/// convolution's sizes.
template <class T, class P, class Act>
auto conv2d_forward(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, conv2d_options opt, Act act,
                    tessera::detail::conv_geometry& geo) {
  auto node = tessera::conv2d(x.value(), w.value(), opt);  // checks the shapes
  geo = node.geometry();
  if (b.defined() && b.dims()[0] != geo.K)
    throw shape_error("tessera: conv2d: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                      tessera::detail::format_dims(w.dims()));
  typename Var<T, 4, P>::tensor y(geo.N, geo.K, geo.OH, geo.OW);
  if (b.defined()) assign_activated(y, node + tessera::reshape<dyn_shape_t<3>>(b.value(), dims_t<3>{geo.K, 1, 1}), act);
  else assign_activated(y, node, act);
  return y;
}

/// The products of conv2d's backward from dz (the gradient at the convolution's output, activation already
/// applied): db (when not null; acc_b: add to it), dw and dx, accumulated into the Vars' gradients.
template <class T, class P>
void conv2d_backward_from_dz(const tessera::detail::conv_geometry& geo, const Var<T, 4, P>& x, const Var<T, 4, P>& w, T* db,
                             bool acc_b, const T* dz) {
  bool acc_w;
  T* dw = grad_of(w, acc_w);
  if (dw || db) backend<P>::conv2d_backward_weight(geo, x.value().data(), dz, dw, acc_w, db, acc_b);
  bool acc_x;
  if (T* dx = grad_of(x, acc_x)) backend<P>::conv2d_backward_data(geo, dz, w.value().data(), dx, acc_x);
}

/// The sizes of a pooling of x into out (both contiguous) with the windows of o.
template <class X, class O>
tessera::detail::pool2d_geometry pool_geometry(const X& x, const O& out, const pool2d_options& o) {
  const auto& d = x.dims();
  return {d[0], d[1], d[2], d[3], out.dims()[2], out.dims()[3], o.kernel, o.step(), o.padding, o.dilation, o.count_include_pad,
          o.ceil_mode};
}
}  // namespace detail

namespace detail {
/// The gradient at a product's output from g, the gradient at act(product + b) (out: that value, [outer, C, inner]
/// contiguous): dz = g * act'(out) in dz_buf (allocated here) unless act is none, and b's gradient (the channel sums
/// of dz) added in the same pass when b needs one. Returns dz (g's data itself when there is no activation).
template <class P, class Tn, class B>
const typename Tn::value_type* output_gradient(const Tn& g, const Tn& out, const B& b, activation act, index_t outer, index_t C,
                                               index_t inner, Tn& dz_buf) {
  bool acc_b;
  auto* db = detail::grad_of(b, acc_b);
  if (act != activation::none) dz_buf = Tn(out.dims());
  if ((act != activation::none || db) &&
      backend<P>::activation_backward(g.data(), out.data(), act != activation::none ? dz_buf.data() : nullptr, db, acc_b, outer, C,
                                      inner, act))
    return dz_buf.data();
  return g.data();
}

/// linear's backward (one closure type per element type and policy).
template <class T, class P>
auto linear_back(const Var<T, 2, P>& x, const Var<T, 2, P>& W, const Var<T, 1, P>& b, activation act) {
  using V = Var<T, 2, P>;
  return [x, W, b, act](const auto& g, const auto& out) {
    const index_t B = out.dims()[0], O = out.dims()[1], I = x.dims()[1];
    typename V::tensor dz_buf;
    const T* dz = output_gradient<P>(g, out, b, act, B, O, index_t(1), dz_buf);
    bool acc;
    if (T* gx = detail::grad_of(x, acc))  // dx (B x I) = dz (B x O) W (O x I)
      backend<P>::gemm(tessera::detail::gemm_desc<T>{B, I, O, {dz, O, 1}, {W.value().data(), I, 1}, gx, I, acc});
    if (T* gw = detail::grad_of(W, acc))  // dW (O x I) = dz^T (O x B: dz's row stride O is its column stride) x (B x I)
      backend<P>::gemm(tessera::detail::gemm_desc<T>{O, I, B, {dz, 1, O}, {x.value().data(), I, 1}, gw, I, acc});
  };
}
}  // namespace detail

/// y = act(x W^T + b) for x [B, in], W [out, in] (PyTorch's layout), b [out] (may be an empty Var: no bias).
/// `act_arg`: an ad::activation chosen at run time, or activation_c<A> known at compile time (as conv2d's).
template <class T, class P, class Act = activation_c<activation::none>>
  requires activation_arg<Act>
Var<T, 2, P> linear(const Var<T, 2, P>& x, const Var<T, 2, P>& W, const Var<T, 1, P>& b, Act act_arg = {}) {
  const activation act = act_arg;
  const auto& xd = x.dims();
  const auto& wd = W.dims();
  if (xd[1] != wd[1])
    throw shape_error("tessera: linear: input " + tessera::detail::format_dims(xd) + " does not fit weights " +
                      tessera::detail::format_dims(wd) + " (in_features must equal the input's last extent)");
  const bool has_b = b.defined();
  if (has_b && b.dims()[0] != wd[0])
    throw shape_error("tessera: linear: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                      tessera::detail::format_dims(wd));
  if (const auto* amp = detail::autocast_for<T, P>(); amp && amp->linear) return amp->linear(x, W, b, act);  // amp/autocast.hpp
  using V = Var<T, 2, P>;
  typename V::tensor y(xd[0], wd[0]);
  auto prod = tessera::matmul(x.value(), tessera::transpose(W.value()));
  if (has_b) detail::assign_activated(y, prod + b.value(), act_arg);
  else detail::assign_activated(y, prod, act_arg);
  if (has_b) return V::make(std::move(y), detail::linear_back<T, P>(x, W, b, act), x, W, b);
  return V::make(std::move(y), detail::linear_back<T, P>(x, W, b, act), x, W);
}


namespace detail {
/// conv2d's backward (one closure type per element type and policy, whatever the activation's form).
template <class T, class P>
auto conv2d_back(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, activation act,
                 const tessera::detail::conv_geometry& geo) {
  using V = Var<T, 4, P>;
  return [x, w, b, act, geo](const auto& g, const auto& out) {
    bool acc_b;
    T* db = detail::grad_of(b, acc_b);
    const T* dz = g.data();
    typename V::tensor dz_buf;
    if (act != activation::none) {  // dz and the bias gradient in one pass
      dz_buf = typename V::tensor(out.dims());
      backend<P>::activation_backward(g.data(), out.data(), dz_buf.data(), db, acc_b, geo.N, geo.K, geo.OH * geo.OW, act);
      dz = dz_buf.data();
      db = nullptr;
    }
    conv2d_backward_from_dz(geo, x, w, db, acc_b, dz);
  };
}
}  // namespace detail

/// y = act(conv2d(x, w, opt) + b) for x [N, C, H, W], w [K, C/groups, R, S], b [K] (may be empty: no bias).
/// `act`: an ad::activation chosen at run time (every activation's forward is compiled), or
/// std::integral_constant<activation, A> (ad::activation_c<A>) known at compile time (only its own).
template <class T, class P, class Act = activation_c<activation::none>>
  requires activation_arg<Act>
Var<T, 4, P> conv2d(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, conv2d_options opt = {},
                    Act act_arg = {}) {
  if (const auto* amp = detail::autocast_for<T, P>(); amp && amp->conv2d) return amp->conv2d(x, w, b, opt, activation(act_arg));
  using V = Var<T, 4, P>;
  tessera::detail::conv_geometry geo;
  typename V::tensor y = detail::conv2d_forward(x, w, b, opt, act_arg, geo);
  if (b.defined()) return V::make(std::move(y), detail::conv2d_back<T, P>(x, w, b, activation(act_arg), geo), x, w, b);
  return V::make(std::move(y), detail::conv2d_back<T, P>(x, w, b, activation(act_arg), geo), x, w);
}


/// max_pool2d<2>(relu(conv2d(x, w, opt) + b)) as one operation (Conv2d, ReLU, MaxPool2d<2> in a model): the
/// forward is the convolution with bias and ReLU as its epilogue, then the pooling; the backward routes each
/// pooled gradient to its window's first maximum, applies ReLU's mask and sums the bias gradient in one pass,
/// then runs the convolution's products.
template <class T, class P>
Var<T, 4, P> conv2d_relu_maxpool2(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, conv2d_options opt = {}) {
  if (const auto* amp = detail::autocast_for<T, P>(); amp && amp->conv2d_relu_maxpool2) return amp->conv2d_relu_maxpool2(x, w, b, opt);
  using V = Var<T, 4, P>;
  tessera::detail::conv_geometry geo;
  auto y = std::make_shared<typename V::tensor>(detail::conv2d_forward(x, w, b, opt, activation_c<activation::relu>{}, geo));
  typename V::tensor pooled(tessera::max_pool2d<2>(*y));
  auto back = [x, w, b, geo, y](const auto& g, const auto& out) {
    bool acc_b;
    T* db = detail::grad_of(b, acc_b);
    typename V::tensor dz(y->dims());
    backend<P>::max_pool2x2_relu_backward(detail::pool_geometry(*y, out, pool2d_options{.kernel = 2}), y->data(), g.data(), dz.data(),
                                          db, acc_b);
    detail::conv2d_backward_from_dz(geo, x, w, static_cast<T*>(nullptr), false, dz.data());
  };
  if (b.defined()) return V::make(std::move(pooled), back, x, w, b);
  return V::make(std::move(pooled), back, x, w);
}

namespace detail {
template <bool Max, pool2d_options O, class T, class P>
Var<T, 4, P> pool(const Var<T, 4, P>& x) {
  using V = Var<T, 4, P>;
  typename V::tensor y;
  if constexpr (Max) y = typename V::tensor(tessera::max_pool2d<O>(x.value()));  // the node checks the shapes
  else y = typename V::tensor(tessera::avg_pool2d<O>(x.value()));
  return V::make(std::move(y), [x](const auto& g, const auto& out) {
    bool acc;
    T* gx = grad_of(x, acc);
    if (!gx) return;
    const auto pg = pool_geometry(x, out, O);
    if constexpr (Max) backend<P>::max_pool2d_backward(pg, x.value().data(), g.data(), gx, acc);
    else backend<P>::avg_pool2d_backward(pg, x.value().data(), g.data(), gx, acc);
  }, x);
}
}  // namespace detail

/// Max over K x K windows (stride S, padding Pd), or max_pool2d<pool2d_options{...}>(x) (per-axis kernel, stride,
/// padding and dilation, ceil_mode); the gradient goes to each window's first maximum.
template <auto K, int S = tessera::detail::pool_default_stride(K), int Pd = 0, class T, class P>
Var<T, 4, P> max_pool2d(const Var<T, 4, P>& x) {
  return detail::pool<true, tessera::detail::pool_options<K, S, Pd>()>(x);
}
/// Mean over K x K windows (stride S, padding Pd counted as zeros), or avg_pool2d<pool2d_options{...}>(x)
/// (ceil_mode, count_include_pad); the gradient is spread over each window's cells with the forward's divisor.
template <auto K, int S = tessera::detail::pool_default_stride(K), int Pd = 0, class T, class P>
Var<T, 4, P> avg_pool2d(const Var<T, 4, P>& x) {
  return detail::pool<false, tessera::detail::pool_options<K, S, Pd>()>(x);
}

/// Mean over the batch of -log(softmax(logits)[label]): log-softmax and the negative log-likelihood in one pass;
/// the backward is (softmax - one_hot(label)) / B. Labels are class indices in [0, C), read and checked on the host
/// (then copied to P's memory).
template <class T, class P, class L, class SL, class PL>
Var<T, 0, P> cross_entropy(const Var<T, 2, P>& logits, const Tensor<L, SL, PL>& labels) {
  static_assert(is_host_policy_v<PL>, "tessera: cross_entropy reads the labels on the host");
  static_assert(std::is_integral_v<L>, "tessera: cross_entropy takes integer class labels");
  static_assert(SL::rank == 1, "tessera: cross_entropy takes one label per row of the logits (a rank-1 tensor)");
  const index_t B = logits.dims()[0], C = logits.dims()[1];
  if (labels.dims()[0] != B)
    throw shape_error("tessera: cross_entropy: logits " + tessera::detail::format_dims(logits.dims()) + " and labels " +
                      tessera::detail::format_dims(labels.dims()) + " have different batch sizes");
  std::vector<index_t> lab(static_cast<std::size_t>(B));
  for (index_t i = 0; i < B; ++i) {
    const index_t l = index_t(labels.data()[i]);
    if (l < 0 || l >= C)
      throw std::out_of_range("tessera: cross_entropy: label " + std::to_string(l) + " at row " + std::to_string(i) +
                              " is outside [0, " + std::to_string(C) + ")");
    lab[std::size_t(i)] = l;
  }
  auto plab = std::make_shared<Tensor<index_t, dyn_shape_t<1>, P>>(B);
  backend<P>::from_host(plab->data(), lab.data(), B);
  auto lse = std::make_shared<Tensor<T, dyn_shape_t<1>, P>>(2 * B);  // each row's maximum, then each row's log-sum
  using V = Var<T, 0, P>;
  typename V::tensor y;
  backend<P>::cross_entropy(logits.value().data(), plab->data(), lse->data(), y.data(), B, C);
  return V::make(std::move(y), [logits, lse, plab, B, C](const auto& g, const auto&) {
    bool acc;
    if (T* gz = detail::grad_of(logits, acc))
      backend<P>::cross_entropy_backward(logits.value().data(), lse->data(), plab->data(), g.data(), gz, B, C, acc);
  }, logits);
}

namespace detail {
/// The Var a loss's target (or any constant meeting a Var of P) becomes: a Var of P as it is; a Var of the other host
/// policy copied (its gradient copied back); a tensor or view of any policy copied into a constant of P (a view in
/// its logical order, whatever its strides).
template <class T, int R, class P>
const Var<T, R, P>& as_target(const Var<T, R, P>& y) { return y; }
template <class T, int R, class P, class U, int RY, class Q>
  requires(!std::is_same_v<P, Q>)
Var<T, R, P> as_target(const Var<U, RY, Q>& y) {
  static_assert(std::is_same_v<T, U>, "tessera: loss: the target's element type must be the input's");
  static_assert(RY == R, "tessera: loss: the target must have the input's rank");
  static_assert(is_host_policy_v<P> && is_host_policy_v<Q>,
                "tessera: loss: a target Var on another policy is taken only between the host policies (move it first)");
  using V = Var<T, R, P>;
  return V::make(typename V::tensor(y.value().to_vector(), y.dims()), [y](const auto& g) {
    if (!y.requires_grad()) return;
    auto& gb = y.node().grad_buffer();
    gb = gb + View<const T, dyn_shape_t<R>, Q>(g.data(), g.dims(), g.strides());  // host memory either way
  }, y);
}
template <class T, int R, class P, class U, class S, class Q>
Var<T, R, P> as_target(const Tensor<U, S, Q>& y) {
  static_assert(std::is_same_v<T, U>, "tessera: loss: the target's element type must be the input's");
  static_assert(S::rank == R, "tessera: loss: the target must have the input's rank");
  if constexpr (std::is_same_v<P, Q>) return Var<T, R, P>(y);
  else return Var<T, R, P>(typename Var<T, R, P>::tensor(y.to_vector(), y.dims()));
}

template <class T, int R, class P, class U, class S, class Q>
Var<T, R, P> as_target(const View<U, S, Q>& y) {
  static_assert(std::is_same_v<T, std::remove_const_t<U>>, "tessera: loss: the target's element type must be the input's");
  static_assert(S::rank == R, "tessera: loss: the target must have the input's rank");
  Tensor<T, dyn_shape_t<R>, Q> packed(y);  // contiguous, in the view's policy
  return as_target<T, R, P>(packed);
}

template <class Y>
inline constexpr bool is_view_v = false;
template <class U, class S, class Q>
inline constexpr bool is_view_v<View<U, S, Q>> = true;
/// What as_target takes besides a Var of P itself: a tensor or view (any policy), or a Var on another policy.
template <class Y, class T, int R, class P>
concept foreign_target = tessera::detail::is_tensor_v<Y> || is_view_v<Y> ||
                         (requires { typename Y::node_type; } && !std::is_base_of_v<Var<T, R, P>, Y>);

template <std::size_t R>
void check_same_shape(const std::array<index_t, R>& x, const std::array<index_t, R>& y, const char* op) {
  if (x != y)
    throw shape_error(std::string("tessera: ") + op + ": input " + tessera::detail::format_dims(x) + " and target " +
                      tessera::detail::format_dims(y) + " have different shapes");
}

}  // namespace detail

/// Mean of the squared differences.
template <class T, int R, class P>
Var<T, 0, P> mse_loss(const Var<T, R, P>& a, const Var<T, R, P>& b) {
  return mean(square(a - b));
}
/// mse_loss against a target that is not a Var of P: a tensor or view of any policy (a model on cpu_threads, targets
/// read on cpu), or a Var of the other host policy (which gets its gradient). Shapes must be equal.
template <class T, int R, class P, class Y>
  requires detail::foreign_target<Y, T, R, P>
Var<T, 0, P> mse_loss(const Var<T, R, P>& a, const Y& target) {
  const auto& y = detail::as_target<T, R, P>(target);
  detail::check_same_shape(a.dims(), y.dims(), "mse_loss");
  return mean(square(a - y));
}

/// Inverted dropout: in training, each element is zeroed with probability p and the rest scaled by 1/(1-p). The
/// mask is drawn on the host from rng in element order under every policy, so a seed gives the same mask.
template <class T, int R, class P>
Var<T, R, P> dropout(const Var<T, R, P>& x, double p, Rng& rng, bool training) {
  if (!training || p == 0.0) return x;
  if (p < 0.0 || p >= 1.0) throw std::invalid_argument("tessera: dropout: p must be in [0, 1)");
  using V = Var<T, R, P>;
  auto mask = std::make_shared<typename V::tensor>(x.dims());
  backend<P>::dropout_mask(mask->data(), mask->size(), p, rng);
  return V::make(typename V::tensor(x.value() * *mask), [x, mask](const auto& g) { detail::accumulate(x, g * *mask); }, x);
}

/// Batch normalisation over (N, H, W) per channel of x [N, C, H, W]. In training the batch statistics are used and
/// the running ones updated (running = (1 - momentum) * running + momentum * batch, variance unbiased); in
/// evaluation the running statistics are used. As PyTorch: training on one value per channel is refused, and on
/// none (N * H * W = 0) gives an empty output with the running statistics left as they were.
template <class T, class P, class S1>
Var<T, 4, P> batch_norm2d(const Var<T, 4, P>& x, const Var<T, 1, P>& gamma, const Var<T, 1, P>& beta, Tensor<T, S1, P>& running_mean,
                          Tensor<T, S1, P>& running_var, bool training, double momentum = 0.1, double eps = 1e-5) {
  if (training && x.dims()[0] * x.dims()[2] * x.dims()[3] == 1)
    throw shape_error("tessera: batch_norm2d: expected more than 1 value per channel when training, got input shape " +
                      tessera::detail::format_dims(x.dims()));
  const auto d = x.dims();
  const index_t N = d[0], C = d[1], HW = d[2] * d[3];
  if (gamma.dims()[0] != C || beta.dims()[0] != C || running_mean.dims()[0] != C || running_var.dims()[0] != C)
    throw shape_error("tessera: batch_norm2d: input " + tessera::detail::format_dims(d) + " has " + std::to_string(C) +
                      " channels but the parameters have " + tessera::detail::format_dims(gamma.dims()));
  using V = Var<T, 4, P>;
  using stats = Tensor<T, dyn_shape_t<1>, P>;
  auto mean_ = std::make_shared<stats>(C);
  auto invstd = std::make_shared<stats>(C);
  backend<P>::batch_norm_stats(x.value().data(), N, C, HW, training, momentum, eps, running_mean.data(), running_var.data(),
                               mean_->data(), invstd->data());
  typename V::tensor y(d);
  backend<P>::batch_norm_apply(x.value().data(), gamma.value().data(), beta.value().data(), mean_->data(), invstd->data(), y.data(),
                               N, C, HW);
  return V::make(std::move(y), [x, gamma, beta, mean_, invstd, training, N, C, HW](const auto& g, const auto&) {
    bool acc_g, acc_b, acc_x;
    T* dg = detail::grad_of(gamma, acc_g);
    T* dbeta = detail::grad_of(beta, acc_b);
    T* dx = detail::grad_of(x, acc_x);
    backend<P>::batch_norm_backward(x.value().data(), g.data(), gamma.value().data(), mean_->data(), invstd->data(), dg, dbeta, dx,
                                    N, C, HW, training, acc_g, acc_b, acc_x);
  }, x, gamma, beta);
}

}  // namespace tessera::ad
