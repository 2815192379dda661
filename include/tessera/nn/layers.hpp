// Layers as types. Each layer type is a description: its hyper-parameters are template arguments, and it says at
// compile time which input shapes it accepts (`accepts<S>`), what it expects (`expected<S>`, for error messages)
// and what it produces (`output<S>`). `state<T, P>` holds its parameters and runs it on Vars; Sequential strings
// them together (nn/sequential.hpp).
#pragma once
#include <cmath>
#include <string>
#include <utility>

#include "tessera/autodiff/batch_norm_ops.hpp"
#include "tessera/autodiff/nn_ops.hpp"
#include "tessera/nn/parameter.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera::nn {

/// Sums values[0 .. n) in place over every rank of a data-parallel group: set on a model with
/// basic_sequential::set_batch_norm_reducer, it makes its BatchNorm layers synchronised in training (ad::sync_batch_norm).
using stat_reducer = ad::stat_reducer;

/// What a forward pass needs besides the input: the mode, the random numbers (dropout) and, for synchronised batch
/// normalisation, the reducer of the BatchNorm layers' statistics (nullptr: each rank's own statistics).
struct context {
  bool training = true;
  Rng* rng = nullptr;
  const stat_reducer* batch_norm_reducer = nullptr;
};

namespace detail {
template <class S>
constexpr extent_t ext(int i) {
  return i < S::rank ? S::extents[std::size_t(i)] : dyn;
}
constexpr bool fits(extent_t have, extent_t want) { return have == dyn || have == want; }

/// The state of a layer without parameters or buffers.
struct no_parameters {
  explicit no_parameters(Rng&) {}
  template <class F>
  void for_each_parameter(const std::string&, F&&) {}
  template <class F>
  void for_each_buffer(const std::string&, F&&) {}
};

/// A leaf Var of the given dims filled with U(-bound, bound) (PyTorch's default for Linear and Conv2d, bound =
/// 1/sqrt(fan_in)). Drawn on the host (a device policy gets a copy): a seed gives the same model under every policy.
template <class T, int R, class P>
ad::Var<T, R, P> uniform_parameter(const dims_t<R>& d, double bound, Rng& rng) {
  Tensor<T, dyn_shape_t<R>, std::conditional_t<P::on_device, cpu, P>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(rng.uniform_double() * 2 * bound - bound);
  if constexpr (P::on_device) return ad::Var<T, R, P>(tessera::to<P>(t), true);
  else return ad::Var<T, R, P>(std::move(t), true);
}
template <class T, int R, class P>
ad::Var<T, R, P> filled_parameter(const dims_t<R>& d, T v) {
  Tensor<T, dyn_shape_t<R>, P> t(d);
  t = v;
  return ad::Var<T, R, P>(std::move(t), true);
}
}  // namespace detail

/// Activations that a preceding Conv2d or Linear runs as its epilogue (and whose backward it fuses); which layers
/// run as one group is decided in nn/fusion.hpp from these declarations.
template <class L>
inline constexpr bool is_fusable_activation = requires { L::fused_activation; };
template <class L>
inline constexpr bool is_relu = false;
template <class L>
inline constexpr bool is_maxpool2 = false;

// ---- convolution and linear ----

/// 2-D convolution, In -> Out channels, K x K kernel (or K = hw{KH, KW}); options as PyTorch's, per axis where
/// they take {h, w}: Conv2d<1, 32, 3, {.padding = 1}>, Conv2d<8, 8, hw{3, 1}, {.stride = {2, 1}, .padding = {1, 0}}>.
template <int In, int Out, hw K, conv2d_options O = conv2d_options{}>
struct Conv2d {
  static_assert(In > 0 && Out > 0 && K.h > 0 && K.w > 0, "tessera::nn::Conv2d: channels and kernel size must be positive");
  static_assert(O.valid(), "tessera::nn::Conv2d: needs stride >= 1, padding >= 0, dilation >= 1 (on both axes) and groups >= 1");
  static_assert(In % O.groups == 0 && Out % O.groups == 0, "tessera::nn::Conv2d: channels must be multiples of the groups");
  static constexpr bool fuses_activation = true;  ///< runs a following activation as its epilogue (nn/fusion.hpp)
  static constexpr bool fuses_max_pool2 = true;   ///< takes a following MaxPool2d<2> into its group (nn/fusion.hpp)
  template <class S>
  static constexpr bool accepts = S::rank == 4 && detail::fits(detail::ext<S>(1), In) &&
                                  (detail::ext<S>(2) == dyn || detail::ext<S>(2) + 2 * O.padding.h >= O.dilation.h * (K.h - 1) + 1) &&
                                  (detail::ext<S>(3) == dyn || detail::ext<S>(3) + 2 * O.padding.w >= O.dilation.w * (K.w - 1) + 1);
  template <class S>
  using expected = Shape<detail::ext<S>(0), In, detail::ext<S>(2), detail::ext<S>(3)>;
  template <class S>
  using output = Shape<S::extents[0], Out, tessera::detail::conv_extent(S::extents[2], K.h, O.stride.h, O.padding.h, O.dilation.h),
                       tessera::detail::conv_extent(S::extents[3], K.w, O.stride.w, O.padding.w, O.dilation.w)>;

  template <class T, class P>
  struct state {
    ad::Var<T, 4, P> weight;
    ad::Var<T, 1, P> bias;
    explicit state(Rng& rng) {
      const double bound = 1.0 / std::sqrt(double(In / O.groups * K.h * K.w));
      weight = detail::uniform_parameter<T, 4, P>({Out, In / O.groups, K.h, K.w}, bound, rng);
      bias = detail::uniform_parameter<T, 1, P>({Out}, bound, rng);
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      f(prefix + "weight", weight);
      f(prefix + "bias", bias);
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}
    /// `act`: the activation that follows (an ad::activation_c<A> from the model, or a run-time ad::activation).
    template <class Act = ad::activation_c<ad::activation::none>>
    ad::Var<T, 4, P> forward(const ad::Var<T, 4, P>& x, context&, Act act = {}) const {
      return ad::conv2d(x, weight, bias, O, act);
    }
    /// This layer, a ReLU and a 2x2 max-pool as one operation.
    ad::Var<T, 4, P> forward_relu_maxpool2(const ad::Var<T, 4, P>& x, context&) const {
      return ad::conv2d_relu_maxpool2(x, weight, bias, O);
    }
  };
};

namespace detail {
/// S with its last extent replaced by Last.
template <class S, extent_t Last, class I = std::make_index_sequence<std::size_t(S::rank - 1)>>
struct last_extent_replaced;
template <class S, extent_t Last, std::size_t... I>
struct last_extent_replaced<S, Last, std::index_sequence<I...>> {
  using type = Shape<S::extents[I]..., Last>;
};

/// y = act(x W^T + b) over the last axis of x [*, In] -> [*, Out] (rank >= 3; PyTorch's Linear on any leading
/// axes): the leading axes are the rows of the GEMM, read from x's contiguous storage and written into y's (no copy).
/// The backward is ad::linear's on those rows.
template <class T, int R, class P, class Act>
ad::Var<T, R, P> linear_leading_axes(const ad::Var<T, R, P>& x, const ad::Var<T, 2, P>& W, const ad::Var<T, 1, P>& b,
                                     Act act_arg) {
  const ad::activation act = act_arg;
  static_assert(R >= 3, "tessera::nn::Linear: the leading-axes form takes rank 3 or more (rank 2 is ad::linear)");
  using V = ad::Var<T, R, P>;
  const auto& xd = x.dims();
  const auto& wd = W.dims();
  if (xd[R - 1] != wd[1])
    throw shape_error("tessera: Linear: input " + tessera::detail::format_dims(xd) + " does not fit weights " +
                      tessera::detail::format_dims(wd) + " (in_features must equal the input's last extent)");
  if (b.defined() && b.dims()[0] != wd[0])
    throw shape_error("tessera: Linear: bias " + tessera::detail::format_dims(b.dims()) + " does not fit weights " +
                      tessera::detail::format_dims(wd));
  index_t M = 1;  // the leading axes as one
  for (int i = 0; i < R - 1; ++i) M *= xd[std::size_t(i)];
  const index_t I = wd[1], O = wd[0];
  dims_t<R> yd = xd;
  yd[R - 1] = O;
  typename V::tensor y(yd);
  View<const T, dyn_shape_t<2>, P> x2(x.value().data(), dims_t<2>{M, I}, dims_t<2>{I, 1});
  View<T, dyn_shape_t<2>, P> y2(y.data(), dims_t<2>{M, O}, dims_t<2>{O, 1});
  auto prod = tessera::matmul(x2, tessera::transpose(W.value()));
  if (b.defined()) ad::detail::assign_activated(y2, prod + b.value(), act_arg);
  else ad::detail::assign_activated(y2, prod, act_arg);
  auto back = [x, W, b, act, M, I, O](const auto& g, const auto& out) {
    bool acc_b;
    T* db = ad::detail::grad_of(b, acc_b);
    tessera::Tensor<T, dyn_shape_t<2>, P> dz_buf;
    if (act != ad::activation::none) dz_buf = tessera::Tensor<T, dyn_shape_t<2>, P>(M, O);
    const T* dz = g.data();
    if (act != ad::activation::none || db)
      if (backend<P>::activation_backward(g.data(), out.data(), act != ad::activation::none ? dz_buf.data() : nullptr, db, acc_b,
                                          M, O, index_t(1), act))
        dz = dz_buf.data();
    bool acc;
    if (T* gx = ad::detail::grad_of(x, acc))  // dx (M x I) = dz (M x O) W (O x I)
      backend<P>::gemm(tessera::detail::gemm_desc<T>{M, I, O, {dz, O, 1}, {W.value().data(), I, 1}, gx, I, acc});
    if (T* gw = ad::detail::grad_of(W, acc))  // dW (O x I) = dz^T x
      backend<P>::gemm(tessera::detail::gemm_desc<T>{O, I, M, {dz, 1, O}, {x.value().data(), I, 1}, gw, I, acc});
  };
  if (b.defined()) return V::make(std::move(y), back, x, W, b);
  return V::make(std::move(y), back, x, W);
}
}  // namespace detail

/// y = x W^T + b with W [Out, In], over the last axis: [*, In] -> [*, Out] (rank 2 or more, as PyTorch's).
template <int In, int Out, bool Bias = true>
struct Linear {
  static_assert(In > 0 && Out > 0, "tessera::nn::Linear: features must be positive");
  static constexpr bool fuses_activation = true;  ///< runs a following activation as its epilogue (nn/fusion.hpp)
  template <class S>
  static constexpr bool accepts = S::rank >= 2 && detail::fits(detail::ext<S>(S::rank - 1), In);
  template <class S>
  using expected = typename detail::last_extent_replaced<S, In>::type;
  template <class S>
  using output = typename detail::last_extent_replaced<S, Out>::type;

  template <class T, class P>
  struct state {
    ad::Var<T, 2, P> weight;
    ad::Var<T, 1, P> bias;
    explicit state(Rng& rng) {
      const double bound = 1.0 / std::sqrt(double(In));
      weight = detail::uniform_parameter<T, 2, P>({Out, In}, bound, rng);
      if constexpr (Bias) bias = detail::uniform_parameter<T, 1, P>({Out}, bound, rng);
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      f(prefix + "weight", weight);
      if constexpr (Bias) f(prefix + "bias", bias);
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}
    /// `act`: the activation that follows (an ad::activation_c<A> from the model, or a run-time ad::activation).
    template <class Act = ad::activation_c<ad::activation::none>>
    ad::Var<T, 2, P> forward(const ad::Var<T, 2, P>& x, context&, Act act = {}) const {
      return ad::linear(x, weight, bias, act);
    }
    /// [*, In] -> [*, Out] for rank 3 or more: the leading axes flattened into the GEMM's rows.
    template <int R, class Act = ad::activation_c<ad::activation::none>>
      requires(R >= 3)
    ad::Var<T, R, P> forward(const ad::Var<T, R, P>& x, context&, Act act = {}) const {
      return detail::linear_leading_axes(x, weight, bias, act);
    }
  };
};

// ---- shape-preserving layers without parameters ----

namespace detail {
template <class Self>
struct stateless {
  template <class S>
  static constexpr bool accepts = true;
  template <class S>
  using expected = S;
  template <class S>
  using output = S;
  template <class T, class P>
  struct state : detail::no_parameters {
    using detail::no_parameters::no_parameters;
    template <int R>
    ad::Var<T, R, P> forward(const ad::Var<T, R, P>& x, context& ctx) const {
      return Self::apply(x, ctx);
    }
  };
};
}  // namespace detail

struct ReLU : detail::stateless<ReLU> {
  static constexpr ad::activation fused_activation = ad::activation::relu;
  template <class V>
  static V apply(const V& x, context&) { return ad::relu(x); }
};
template <>
inline constexpr bool is_relu<ReLU> = true;
struct Tanh : detail::stateless<Tanh> {
  static constexpr ad::activation fused_activation = ad::activation::tanh;
  template <class V>
  static V apply(const V& x, context&) { return ad::tanh(x); }
};
struct Sigmoid : detail::stateless<Sigmoid> {
  static constexpr ad::activation fused_activation = ad::activation::sigmoid;
  template <class V>
  static V apply(const V& x, context&) { return ad::sigmoid(x); }
};
struct GELU : detail::stateless<GELU> {
  template <class V>
  static V apply(const V& x, context&) { return ad::gelu(x); }
};
/// Zeroes each element with probability P in training (scaling the rest by 1/(1-P)); the identity in evaluation.
template <double P>
struct Dropout : detail::stateless<Dropout<P>> {
  static_assert(P >= 0.0 && P < 1.0, "tessera::nn::Dropout: the probability must be in [0, 1)");
  template <class V>
  static V apply(const V& x, context& ctx) {
    if (!ctx.training || P == 0.0) return x;
    if (!ctx.rng) throw std::logic_error("tessera::nn::Dropout: no random number generator in the context");
    return ad::dropout(x, P, *ctx.rng, true);
  }
};

// ---- shape-changing layers without parameters ----

template <class Op, pool2d_options O>
struct pool_layer {
  static_assert(O.valid(), "tessera::nn pooling layer: needs kernel >= 1, stride >= 1 (or 0: the kernel), 0 <= padding <= "
                           "kernel/2 and dilation >= 1 on both axes");
  static_assert(std::is_same_v<Op, op::max_pool2d> || O.dilation == hw{1}, "tessera::nn::AvgPool2d: has no dilation (as PyTorch)");
  static constexpr pool2d_options options = O;
  template <class Sh>
  static constexpr bool accepts = Sh::rank == 4 &&
                                  (detail::ext<Sh>(2) == dyn || detail::ext<Sh>(2) + 2 * O.padding.h >= O.dilation.h * (O.kernel.h - 1) + 1) &&
                                  (detail::ext<Sh>(3) == dyn || detail::ext<Sh>(3) + 2 * O.padding.w >= O.dilation.w * (O.kernel.w - 1) + 1);
  template <class Sh>
  using expected = Shape<detail::ext<Sh>(0), detail::ext<Sh>(1), dyn, dyn>;
  template <class Sh>
  using output = Shape<Sh::extents[0], Sh::extents[1],
                       tessera::detail::pooled_extent(Sh::extents[2], O.kernel.h, O.step().h, O.padding.h, O.dilation.h, O.ceil_mode),
                       tessera::detail::pooled_extent(Sh::extents[3], O.kernel.w, O.step().w, O.padding.w, O.dilation.w, O.ceil_mode)>;
  template <class T, class P>
  struct state : detail::no_parameters {
    using detail::no_parameters::no_parameters;
    ad::Var<T, 4, P> forward(const ad::Var<T, 4, P>& x, context&) const {
      if constexpr (std::is_same_v<Op, op::max_pool2d>) return ad::max_pool2d<O>(x);
      else return ad::avg_pool2d<O>(x);
    }
  };
};
/// Max over K x K windows, stride S (default K), padding Pd: MaxPool2d<2>, MaxPool2d<3, 2, 1>; or with every option
/// (per-axis kernel, stride, padding, dilation; ceil_mode) MaxPool2d<pool2d_options{.kernel = 3, .stride = 2,
/// .padding = 1, .ceil_mode = true}>.
template <auto K, int S = tessera::detail::pool_default_stride(K), int Pd = 0>
struct MaxPool2d : pool_layer<op::max_pool2d, tessera::detail::pool_options<K, S, Pd>()> {
  /// a Conv2d before it may take it (nn/fusion.hpp): 2x2 windows, stride 2, no padding, dilation or ceil_mode
  static constexpr bool max_pool2 = tessera::detail::pool_options<K, S, Pd>().is_2x2();
};
template <auto K, int S, int Pd>
inline constexpr bool is_maxpool2<MaxPool2d<K, S, Pd>> = MaxPool2d<K, S, Pd>::max_pool2;
/// Mean over K x K windows, stride S (default K), padding Pd counted as zeros; or AvgPool2d<pool2d_options{...}>
/// (per-axis kernel, stride, padding; ceil_mode; count_include_pad).
template <auto K, int S = tessera::detail::pool_default_stride(K), int Pd = 0>
struct AvgPool2d : pool_layer<op::avg_pool2d, tessera::detail::pool_options<K, S, Pd>()> {};

/// [N, d1, d2, ...] -> [N, d1*d2*...].
struct Flatten {
  template <class S>
  static constexpr bool accepts = S::rank >= 2;
  template <class S>
  using expected = Shape<detail::ext<S>(0), dyn>;
  template <class S>
  static constexpr extent_t rest() {
    extent_t p = 1;
    for (int i = 1; i < S::rank; ++i) {
      if (S::extents[std::size_t(i)] == dyn) return dyn;
      p *= S::extents[std::size_t(i)];
    }
    return p;
  }
  template <class S>
  using output = Shape<S::extents[0], rest<S>()>;
  template <class T, class P>
  struct state : detail::no_parameters {
    using detail::no_parameters::no_parameters;
    template <int R>
    ad::Var<T, 2, P> forward(const ad::Var<T, R, P>& x, context&) const { return ad::flatten_batch(x); }
  };
};

/// softmax / log-softmax over the features of [N, C].
template <bool Log>
struct softmax_layer {
  template <class S>
  static constexpr bool accepts = S::rank == 2;
  template <class S>
  using expected = Shape<detail::ext<S>(0), dyn>;
  template <class S>
  using output = S;
  template <class T, class P>
  struct state : detail::no_parameters {
    using detail::no_parameters::no_parameters;
    ad::Var<T, 2, P> forward(const ad::Var<T, 2, P>& x, context&) const {
      if constexpr (Log) return ad::log_softmax(x);
      else return ad::softmax(x);
    }
  };
};
struct Softmax : softmax_layer<false> {};
struct LogSoftmax : softmax_layer<true> {};

/// Batch normalisation of C channels (NCHW): weight (gamma) and bias (beta) parameters, running_mean and
/// running_var buffers updated in training with momentum 0.1, as PyTorch's BatchNorm2d. In training with a
/// context's batch_norm_reducer, the statistics of every rank's batch (PyTorch's SyncBatchNorm: ad::sync_batch_norm).
template <int C>
struct BatchNorm2d {
  template <class S>
  static constexpr bool accepts = S::rank == 4 && detail::fits(detail::ext<S>(1), C);
  template <class S>
  using expected = Shape<detail::ext<S>(0), C, detail::ext<S>(2), detail::ext<S>(3)>;
  template <class S>
  using output = S;
  template <class T, class P>
  struct state {
    ad::Var<T, 1, P> weight, bias;
    Tensor<T, Shape<dyn>, P> running_mean, running_var;
    explicit state(Rng&) : weight(detail::filled_parameter<T, 1, P>({C}, T(1))), bias(detail::filled_parameter<T, 1, P>({C}, T(0))),
                           running_mean(C), running_var(C) {
      running_mean = T(0);
      running_var = T(1);
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
    }
    ad::Var<T, 4, P> forward(const ad::Var<T, 4, P>& x, context& ctx) {
      if (ctx.training && ctx.batch_norm_reducer)
        return ad::sync_batch_norm(x, weight, bias, running_mean, running_var, *ctx.batch_norm_reducer);
      return ad::batch_norm2d(x, weight, bias, running_mean, running_var, ctx.training);
    }
  };
};

}  // namespace tessera::nn
