// Conv2d + BatchNorm2d folding: a BatchNorm2d right after a Conv2d is, in evaluation (running statistics), a
// per-channel scale and shift of the convolution's output, so it folds into the convolution's weights and bias:
//   sf[k]     = gamma[k] / sqrt(running_var[k] + 1e-5)
//   w'[k,...] = w[k,...] * sf[k]
//   b'[k]     = beta[k] + (b[k] - running_mean[k]) * sf[k]
// The types:   quant::folded_model_t<M>   M's nn::Sequential with every BatchNorm2d that follows a Conv2d removed
// The values:  quant::fold(model)         a folded_model_t<M> holding the folded weights (M in evaluation equals it
//                                         within float rounding)
// The folding functions are also differentiable operations (fold_scale, scale_channels, fold_bias, unscale_channels)
// so that quant/qat.hpp trains the folded weights as PyTorch's fused ConvBn2d for QAT does; both paths compute the
// folded values with the same arithmetic (sf in double, w * sf in float, b' in double), so a QAT model's folded
// weights are bit for bit those quant::fold gives.
// Host policies only.
#pragma once
#include <cmath>
#include <cstddef>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "tessera/autodiff/ops.hpp"
#include "tessera/nn/sequential.hpp"

namespace tessera::quant {

inline constexpr double bn_eps = 1e-5;  ///< nn::BatchNorm2d's epsilon

namespace detail {

template <class L>
inline constexpr bool is_conv2d = false;
template <int I, int O, hw K, conv2d_options Op>
inline constexpr bool is_conv2d<nn::Conv2d<I, O, K, Op>> = true;
template <class L>
inline constexpr bool is_batch_norm2d = false;
template <int C>
inline constexpr bool is_batch_norm2d<nn::BatchNorm2d<C>> = true;

/// The layer list with every BatchNorm2d that follows a Conv2d dropped (Acc: kept so far, Prev: the layer before).
template <class Acc, class Prev, class... Ls>
struct fold_layers {
  using type = Acc;
};
template <class... A, class Prev, class L, class... Rest>
struct fold_layers<std::tuple<A...>, Prev, L, Rest...> {
  using kept = std::conditional_t<is_conv2d<Prev> && is_batch_norm2d<L>, std::tuple<A...>, std::tuple<A..., L>>;
  using type = typename fold_layers<kept, L, Rest...>::type;
};

/// The float model type of a layer list (a std::tuple) under policy P.
template <class P, class In, class Tuple>
struct sequential_of;
template <class P, class In, class... Ls>
struct sequential_of<P, In, std::tuple<Ls...>> {
  using type = nn::basic_sequential<float, P, In, Ls...>;
};

/// The parts of a float model type (nn::Sequential or nn::basic_sequential<float, ...>).
template <class M>
struct model_parts;
template <class P, class In, class... Ls>
struct model_parts<nn::basic_sequential<float, P, In, Ls...>> {
  using policy = P;
  using input_shape = In;
  using layers = std::tuple<Ls...>;
  using base = nn::basic_sequential<float, P, In, Ls...>;
  static constexpr std::size_t count = sizeof...(Ls);
  /// folded_bn[i]: layer i is a BatchNorm2d folded into the Conv2d before it
  static constexpr std::array<bool, sizeof...(Ls)> folded_bn = [] {
    constexpr bool conv[] = {is_conv2d<Ls>...}, bn[] = {is_batch_norm2d<Ls>...};
    std::array<bool, sizeof...(Ls)> f{};
    for (std::size_t i = 1; i < sizeof...(Ls); ++i) f[i] = conv[i - 1] && bn[i];
    return f;
  }();
  using folded_layers = typename fold_layers<std::tuple<>, void, Ls...>::type;
  static constexpr std::size_t folded_count = std::tuple_size_v<folded_layers>;
  /// source[j]: the position in the model of the folded model's layer j
  static constexpr std::array<std::size_t, folded_count> source = [] {
    std::array<std::size_t, folded_count> s{};
    std::size_t j = 0;
    for (std::size_t i = 0; i < sizeof...(Ls); ++i)
      if (!folded_bn[i]) s[j++] = i;
    return s;
  }();
  using folded = typename sequential_of<P, In, folded_layers>::type;
};
template <class In, class... Ls>
struct model_parts<nn::Sequential<In, Ls...>> : model_parts<nn::basic_sequential<float, cpu_threads, In, Ls...>> {};

/// Does layer J of the folded model have a BatchNorm2d folded into it (the layer after its source)?
template <class M, std::size_t J>
constexpr bool has_folded_bn() {
  using parts = model_parts<M>;
  constexpr std::size_t i = parts::source[J];
  if constexpr (i + 1 < parts::count) return parts::folded_bn[i + 1];
  else return false;
}

}  // namespace detail

/// The float model type M with every BatchNorm2d that follows a Conv2d folded into it (M itself when it has none,
/// as basic_sequential<float, P, In, ...>).
template <class M>
using folded_model_t = typename detail::model_parts<M>::folded;

// ---- the folding, as differentiable operations (the values are those quant::fold gives) ----

/// sf = gamma / sqrt(running_var + eps) (running_var a constant); the gradient to gamma is g / sqrt(running_var + eps).
template <class P, class S>
ad::Var<float, 1, P> fold_scale(const ad::Var<float, 1, P>& gamma, const Tensor<float, S, P>& running_var) {
  using V = ad::Var<float, 1, P>;
  const index_t C = gamma.dims()[0];
  auto inv = std::make_shared<std::vector<double>>(std::size_t(C));
  typename V::tensor sf(C);
  for (index_t k = 0; k < C; ++k) {
    (*inv)[std::size_t(k)] = 1.0 / std::sqrt(double(running_var.data()[k]) + bn_eps);
    sf.data()[k] = float(double(gamma.value().data()[k]) * (*inv)[std::size_t(k)]);
  }
  return V::make(std::move(sf), [gamma, inv, C](const auto& g) {
    bool acc = false;
    float* d = ad::detail::grad_of(gamma, acc);
    if (!d) return;
    for (index_t k = 0; k < C; ++k) {
      const float v = float(double(g.data()[k]) * (*inv)[std::size_t(k)]);
      d[k] = acc ? d[k] + v : v;
    }
  }, gamma);
}

/// w [K, ...] * sf[k] per channel of axis 0.
template <int R, class P>
ad::Var<float, R, P> scale_channels(const ad::Var<float, R, P>& w, const ad::Var<float, 1, P>& sf) {
  using V = ad::Var<float, R, P>;
  const index_t K = w.dims()[0], inner = K ? w.size() / K : 0;
  typename V::tensor y(w.dims());
  for (index_t k = 0; k < K; ++k)
    for (index_t i = k * inner; i < (k + 1) * inner; ++i) y.data()[i] = w.value().data()[i] * sf.value().data()[k];
  return V::make(std::move(y), [w, sf, K, inner](const auto& g) {
    bool acc_w = false, acc_s = false;
    float* dw = ad::detail::grad_of(w, acc_w);
    float* ds = ad::detail::grad_of(sf, acc_s);
    for (index_t k = 0; k < K; ++k) {
      double sum = 0;
      for (index_t i = k * inner; i < (k + 1) * inner; ++i) {
        if (dw) dw[i] = acc_w ? dw[i] + g.data()[i] * sf.value().data()[k] : g.data()[i] * sf.value().data()[k];
        sum += double(g.data()[i]) * double(w.value().data()[i]);
      }
      if (ds) ds[k] = acc_s ? ds[k] + float(sum) : float(sum);
    }
  }, w, sf);
}

/// b' = beta + (b - running_mean) * sf (b may be an empty Var: 0), in double.
template <class P, class S>
ad::Var<float, 1, P> fold_bias(const ad::Var<float, 1, P>& b, const ad::Var<float, 1, P>& beta, const ad::Var<float, 1, P>& sf,
                               const Tensor<float, S, P>& running_mean) {
  using V = ad::Var<float, 1, P>;
  const index_t C = beta.dims()[0];
  auto centred = std::make_shared<std::vector<float>>(std::size_t(C));  // b - running_mean
  typename V::tensor y(C);
  for (index_t k = 0; k < C; ++k) {
    const double bk = b.defined() ? double(b.value().data()[k]) : 0.0;
    (*centred)[std::size_t(k)] = float(bk - double(running_mean.data()[k]));
    y.data()[k] = float(double(beta.value().data()[k]) + (bk - double(running_mean.data()[k])) * double(sf.value().data()[k]));
  }
  auto back = [b, beta, sf, centred, C](const auto& g) {
    bool ab = false, abeta = false, as = false;
    float* db = ad::detail::grad_of(b, ab);
    float* dbeta = ad::detail::grad_of(beta, abeta);
    float* ds = ad::detail::grad_of(sf, as);
    for (index_t k = 0; k < C; ++k) {
      const float gk = g.data()[k];
      if (db) db[k] = ab ? db[k] + gk * sf.value().data()[k] : gk * sf.value().data()[k];
      if (dbeta) dbeta[k] = abeta ? dbeta[k] + gk : gk;
      if (ds) ds[k] = as ? ds[k] + gk * (*centred)[std::size_t(k)] : gk * (*centred)[std::size_t(k)];
    }
  };
  if (b.defined()) return V::make(std::move(y), std::move(back), b, beta, sf);
  return V::make(std::move(y), std::move(back), beta, sf);
}

/// y [N, C, H, W] / sf[c] + b[c] (b may be empty): the convolution of folded weights brought back to the unfolded
/// one's scale, before a BatchNorm2d that normalises with the batch's statistics (PyTorch's ConvBn2d in training).
template <class P>
ad::Var<float, 4, P> unscale_channels(const ad::Var<float, 4, P>& y, const ad::Var<float, 1, P>& sf, const ad::Var<float, 1, P>& b) {
  using V = ad::Var<float, 4, P>;
  const auto d = y.dims();
  const index_t N = d[0], C = d[1], inner = d[2] * d[3];
  typename V::tensor out(d);
  for (index_t r = 0; r < N * C; ++r) {
    const index_t c = r % C;
    const float s = sf.value().data()[c], bc = b.defined() ? b.value().data()[c] : 0.0f;
    for (index_t i = r * inner; i < (r + 1) * inner; ++i) out.data()[i] = y.value().data()[i] / s + bc;
  }
  auto back = [y, sf, b, N, C, inner](const auto& g) {
    bool ay = false, as = false, ab = false;
    float* dy = ad::detail::grad_of(y, ay);
    float* ds = ad::detail::grad_of(sf, as);
    float* db = ad::detail::grad_of(b, ab);
    std::vector<double> gs(std::size_t(C), 0.0), gb(std::size_t(C), 0.0);
    for (index_t r = 0; r < N * C; ++r) {
      const index_t c = r % C;
      const float s = sf.value().data()[c];
      for (index_t i = r * inner; i < (r + 1) * inner; ++i) {
        const float gi = g.data()[i];
        if (dy) dy[i] = ay ? dy[i] + gi / s : gi / s;
        gs[std::size_t(c)] -= double(gi) * double(y.value().data()[i]) / (double(s) * double(s));
        gb[std::size_t(c)] += double(gi);
      }
    }
    for (index_t c = 0; c < C; ++c) {
      if (ds) ds[c] = as ? ds[c] + float(gs[std::size_t(c)]) : float(gs[std::size_t(c)]);
      if (db) db[c] = ab ? db[c] + float(gb[std::size_t(c)]) : float(gb[std::size_t(c)]);
    }
  };
  if (b.defined()) return V::make(std::move(out), std::move(back), y, sf, b);
  return V::make(std::move(out), std::move(back), y, sf);
}

// ---- the folded model ----

namespace detail {
/// Copies layer J of the folded model from the model's layers (folding the BatchNorm2d after a Conv2d).
template <std::size_t J, class M, class F>
void fold_layer(M& model, F& folded) {
  using parts = model_parts<M>;
  constexpr std::size_t i = parts::source[J];
  auto& src = model.template layer<i>();
  auto& dst = folded.template layer<J>();
  using L = std::tuple_element_t<i, typename parts::layers>;
  if constexpr (has_folded_bn<M, J>()) {
    auto& bn = model.template layer<i + 1>();
    ad::no_grad ng;
    const auto sf = fold_scale(bn.weight, bn.running_var);
    dst.weight.mutable_value() = scale_channels(src.weight, sf).value();
    dst.bias.mutable_value() = fold_bias(src.bias, bn.bias, sf, bn.running_mean).value();
  } else if constexpr (requires { src.running_mean; }) {
    static_assert(sizeof(L) == 0, "tessera::quant::fold: a BatchNorm that does not follow a Conv2d is not folded (not supported "
                                  "by quantization-aware training)");
  } else {
    dst.for_each_parameter("", [&](const std::string& name, auto& v) {
      src.for_each_parameter("", [&](const std::string& n2, auto& v2) {
        if constexpr (std::is_same_v<std::remove_cvref_t<decltype(v)>, std::remove_cvref_t<decltype(v2)>>)
          if (n2 == name) v.mutable_value() = v2.value();
      });
    });
  }
}
}  // namespace detail

/// The folded float model of `model` (in evaluation it equals `model` within float rounding): every BatchNorm2d after
/// a Conv2d folded into that convolution with its running statistics, every other parameter copied.
template <class M>
folded_model_t<M> fold(M& model) {
  using parts = detail::model_parts<M>;
  folded_model_t<M> f(0);
  f.eval();
  [&]<std::size_t... J>(std::index_sequence<J...>) {
    (detail::fold_layer<J>(static_cast<typename parts::base&>(model), f), ...);
  }(std::make_index_sequence<parts::folded_count>{});
  return f;
}

}  // namespace tessera::quant
