// Quantization-aware training of an nn::Sequential: quant::qat_model<M> runs the float model M's layers with fake
// quantization where its int8 model quantizes, trains M's own parameters with the usual optimizers, and converts to
// the int8 model type with the ranges it observed (no calibration pass).
//
//   SimpleCNN net;  /* trained in float */
//   quant::qat_model<SimpleCNN> qat(net);               // wraps net (kept by reference: its parameters are trained)
//   optim::SGD<float> opt(qat.parameters(), {.lr = 0.005, .momentum = 0.9});
//   qat.train();  loss = ad::cross_entropy(qat.forward(images), labels);  loss.backward();  opt.step();
//   qat.freeze_observers();  qat.freeze_bn_stats();    // later in the epoch
//   auto q = qat.convert();                             // int8_model_t<folded_model_t<SimpleCNN>> (= int8_model_t<
//                                                       // SimpleCNN> for a model without BatchNorm2d)
//
// Where it quantizes (the int8 model's places: nn/fusion.hpp's groups of the folded model, as quant/model.hpp):
//   the input                       per tensor, affine uint8, moving-average min/max observer
//   each Conv2d / Linear group      weights per output channel, symmetric int8 [-127, 127], scale max |w| / 127 of
//                                   the weights as they are at each forward (what conversion gives them); the group's
//                                   output (after its ReLU, before its 2x2 max-pool) per tensor, affine uint8,
//                                   moving-average observer; the model's last Conv2d / Linear gives float logits
//   ReLU, MaxPool2d<2>, Flatten     alone: the float layer (exact on the grid: the int8 model keeps the quantization)
// Observers: quant::moving_average_observer (PyTorch's MovingAverageMinMaxObserver, averaging constant 0.01 by
// default), updated by forward() in training mode unless frozen; ranges widened to hold 0 (affine_qparams).
// Switches: freeze_observers() (keep the activation ranges), freeze_bn_stats() (BatchNorm2d uses and keeps its running
// statistics: its conv runs folded), enable_fake_quant(false) (the float forward; observers still observe).
// Conv2d + BatchNorm2d: folded as PyTorch's fused ConvBn2d for QAT (quant/fold.hpp): the weights are folded with the
// running variance and fake-quantized; in training with live statistics the output is unfolded (/ sf + bias) and
// batch-normalised with the batch's statistics (the running ones updated); with frozen statistics or in evaluation
// the folded weights and bias run as one convolution, exactly what the int8 model computes.
// What it guarantees: a weighted group's fake-quantized forward is computed in the integer form
//   act((x_int conv w_int) * (s_x * s_w[k]) + b[k]), x_int = q_x - z_x, w_int = q_w,
// whose products and sums are exact in float while every output's sum of |x_int * w_int| stays below 2^24 (always
// when taps * 255 * 127 < 2^24, i.e. up to 518 taps; beyond, in practice: checked by the tests), with the int8
// epilogue's multiply-add; so in evaluation (BatchNorm frozen or absent) forward() gives bit for bit the converted
// int8 model's predict() logits. Supported layers: Conv2d (optionally + BatchNorm2d), Linear, ReLU, MaxPool2d<2>,
// Flatten; the model ends in a Linear. Host policies only.
#pragma once
#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/autodiff/batch_norm_ops.hpp"
#include "tessera/quant/fake_quant.hpp"
#include "tessera/quant/fold.hpp"
#include "tessera/quant/model.hpp"
#include "tessera/quant/observer.hpp"

namespace tessera::quant {

struct qat_options {
  float averaging_constant = 0.01f;  ///< the activation observers' weight of each new batch
};

namespace detail {
template <class L>
inline constexpr bool is_linear = false;
template <int I, int O, bool B>
inline constexpr bool is_linear<nn::Linear<I, O, B>> = true;
template <class L>
struct conv_options_of;
template <int I, int O, hw K, conv2d_options Op>
struct conv_options_of<nn::Conv2d<I, O, K, Op>> {
  static constexpr conv2d_options value = Op;
};
template <class Tuple>
struct plan_of;
template <class... Ls>
struct plan_of<std::tuple<Ls...>> {
  using type = nn::fusion_plan<Ls...>;
};
template <class L>
inline constexpr bool never_qat = false;
}  // namespace detail

/// The quantization-aware training wrapper of a float model M (nn::Sequential or nn::basic_sequential<float, P, ...>
/// on a host policy); see the top of this file.
template <class M>
class qat_model {
  using parts = detail::model_parts<M>;
  using base = typename parts::base;
  using P = typename parts::policy;
  using In = typename parts::input_shape;
  using flayers = typename parts::folded_layers;
  using plan = typename detail::plan_of<flayers>::type;
  static constexpr std::size_t LF = parts::folded_count;
  static_assert(!P::on_device, "tessera::quant::qat_model: quantization-aware training runs on host policies");

  template <std::size_t G>
  static constexpr bool weighted_group = detail::is_conv2d<typename plan::template group<G>::head> ||
                                         detail::is_linear<typename plan::template group<G>::head>;
  static constexpr std::size_t last_weighted = []<std::size_t... G>(std::index_sequence<G...>) {
    std::size_t last = plan::count;
    ((last = weighted_group<G> ? G : last), ...);
    return last;
  }(std::make_index_sequence<plan::count>{});
  static_assert(last_weighted < plan::count, "tessera::quant::qat_model: the model has no Conv2d or Linear");
  /// The folded position after a weighted group's activation (its output's observer).
  template <std::size_t G>
  static constexpr std::size_t out_position = plan::starts[G] + 1 + (plan::template group<G>::has_activation ? 1 : 0);
  /// observed[i]: the activation at folded position i is fake-quantized with an observer of its own.
  static constexpr std::array<bool, LF + 1> observed = []<std::size_t... G>(std::index_sequence<G...>) {
    std::array<bool, LF + 1> o{};
    o[0] = true;
    ((o[out_position<G>] = o[out_position<G>] || (weighted_group<G> && G != last_weighted)), ...);
    return o;
  }(std::make_index_sequence<plan::count>{});

 public:
  using model_type = M;
  using folded_type = folded_model_t<M>;
  using int8_type = int8_model_t<folded_type>;
  using input_var = ad::Var<float, In::rank, P>;

  explicit qat_model(M& model, qat_options opt = {}) : model_(&model), obs_(LF + 1), dims_(LF + 1) {
    for (auto& o : obs_) o.momentum = opt.averaging_constant;
  }

  /// The fake-quantized forward pass (gradients flow into M's parameters).
  auto forward(const input_var& x) {
    nn::context ctx{model_->is_training(), &model_->rng()};
    dims_[0].assign(x.dims().begin(), x.dims().end());
    input_var xf = x;
    qparams xq{};
    if (observing()) obs_[0].observe(x.value());
    if (fake_quant_) {
      xq = obs_[0].params();
      xf = fake_quantize(x, xq);
    }
    return run<0>(xf, xq, ctx);
  }
  /// The same on a tensor of the input shape (a host tensor of another CPU policy is copied over).
  template <class S, class P2>
  auto forward(const Tensor<float, S, P2>& x) {
    if constexpr (std::is_same_v<P2, P>) return forward(input_var(x, false));
    else return forward(input_var(tessera::to<P>(x), false));
  }
  /// Logits with nothing recorded.
  template <class X>
  auto predict(const X& x) {
    ad::no_grad ng;
    return forward(x).value();
  }

  void train(bool on = true) { model_->train(on); }
  void eval() { model_->eval(); }
  bool is_training() const { return model_->is_training(); }
  /// Keep the activation ranges as they are (true), or let training update them again (false). Weight scales always
  /// follow the weights (the int8 conversion takes max |w| / 127 of the final weights).
  void freeze_observers(bool on = true) { observers_frozen_ = on; }
  bool observers_frozen() const { return observers_frozen_; }
  /// BatchNorm2d layers use and keep their running statistics (their convolutions run folded) even in training.
  void freeze_bn_stats(bool on = true) { bn_frozen_ = on; }
  bool bn_stats_frozen() const { return bn_frozen_; }
  /// Fake quantization on (the default) or off (the float model's forward, BatchNorm folded unless in training with
  /// live statistics; observers still observe in training).
  void enable_fake_quant(bool on = true) { fake_quant_ = on; }
  void disable_fake_quant() { fake_quant_ = false; }
  bool fake_quant_enabled() const { return fake_quant_; }

  std::vector<nn::parameter_ref<float>> parameters() { return model_->parameters(); }
  M& float_model() { return *model_; }
  /// The observer of the activation at position i of the folded model (0: the input); only positions the int8 model
  /// requantizes at have one that observes (is_observed).
  const moving_average_observer& observer(std::size_t i) const { return obs_.at(i); }
  static constexpr bool is_observed(std::size_t i) { return i <= LF && observed[i]; }

  /// What the int8 model will be built from: the quantization of each folded position's activation (range; positions
  /// without an observer of their own take the one before, as the int8 layers keep it) and the dims of each group's
  /// input in the last forward pass.
  conversion conversion_parameters() const {
    if (dims_[0].empty())
      throw std::logic_error("tessera::quant::qat_model::convert: run forward() in training first: nothing was observed");
    conversion c;
    c.range.resize(LF + 1);
    c.range[0] = obs_[0].params();
    for (std::size_t i = 1; i <= LF; ++i) c.range[i] = observed[i] ? obs_[i].params() : c.range[i - 1];
    c.dims = dims_;
    c.per_channel = true;
    return c;
  }
  /// The int8 model: the folded float model (quant::fold) converted with the observed ranges.
  int8_type convert() {
    conversion c = conversion_parameters();
    folded_type f = fold(*model_);
    return int8_type(f, std::move(c));
  }

 private:
  bool observing() const { return model_->is_training() && !observers_frozen_; }

  template <std::size_t G, class X>
  auto run(const X& x, qparams xq, nn::context& ctx) {
    if constexpr (G == plan::count) {
      return x;
    } else {
      constexpr std::size_t f = plan::starts[G];
      using group = typename plan::template group<G>;
      using head = typename group::head;
      dims_[f].assign(x.dims().begin(), x.dims().end());
      if constexpr (weighted_group<G>) {
        auto [y, yq] = weighted<G>(x, xq, ctx);
        return run<G + 1>(y, yq, ctx);
      } else if constexpr (std::is_same_v<head, nn::ReLU> || std::is_same_v<head, nn::Flatten> ||
                           nn::fusion::is_max_pool2<head>) {  // exact on the grid: the quantization stays
        return run<G + 1>(model_->template layer<parts::source[f]>().forward(x, ctx), xq, ctx);
      } else {
        static_assert(detail::never_qat<head>, "tessera::quant::qat_model: this layer is not supported by quantization-aware "
                                               "training (Conv2d [+ BatchNorm2d], Linear, ReLU, MaxPool2d<2>, Flatten)");
        return x;
      }
    }
  }

  /// A Conv2d or Linear group: (folded) weights, product, bias, activation, output fake quantization, pool.
  template <std::size_t G, class X>
  auto weighted(const X& x, qparams xq, nn::context&) {
    constexpr std::size_t f = plan::starts[G], src = parts::source[f];
    using group = typename plan::template group<G>;
    using head = typename group::head;
    constexpr bool conv = detail::is_conv2d<head>;
    constexpr bool bn = detail::has_folded_bn<base, f>();
    constexpr bool relu = group::activation == ad::activation::relu;
    static_assert(!group::has_activation || relu, "tessera::quant::qat_model: a Conv2d or Linear is followed by a ReLU or nothing "
                                                  "(the int8 layers have no other activation)");
    constexpr bool last = G == last_weighted;
    static_assert(!(last && conv), "tessera::quant::qat_model: the model ends in a Linear (an int8 model ending in Conv2d is not supported)");
    using act_c = ad::activation_c<relu ? ad::activation::relu : ad::activation::none>;
    auto& layer = static_cast<base&>(*model_).template layer<src>();
    auto product = [&](const auto& a, const auto& w, const auto& b, auto act) {
      if constexpr (conv) return ad::conv2d(a, w, b, detail::conv_options_of<head>::value, act);
      else return ad::linear(a, w, b, act);
    };
    using YV = ad::Var<float, conv ? 4 : 2, P>;
    const ad::Var<float, 1, P> none;
    YV y;
    auto w = layer.weight;
    auto b = layer.bias;  // empty for a Linear without bias
    bool bn_live = false;  // BatchNorm with the batch's statistics (training, not frozen)
    if constexpr (bn) {
      auto& nb = static_cast<base&>(*model_).template layer<src + 1>();
      const auto sf = fold_scale(nb.weight, nb.running_var);
      bn_live = model_->is_training() && !bn_frozen_;
      if (bn_live) {  // PyTorch's ConvBn2d: fake-quantized folded weights, unfolded output, batch normalisation
        if (fake_quant_) {
          const auto wf = scale_channels(layer.weight, sf);
          y = unscale_channels(product(x, fake_quantize_per_channel(wf, per_channel_symmetric_scales(wf.value())), none,
                                       ad::activation_c<ad::activation::none>{}), sf, layer.bias);
        } else {
          y = product(x, layer.weight, layer.bias, ad::activation_c<ad::activation::none>{});
        }
        y = ad::batch_norm2d(y, nb.weight, nb.bias, nb.running_mean, nb.running_var, true);
        if constexpr (relu) y = ad::relu(y);
      } else {
        w = scale_channels(layer.weight, sf);
        b = fold_bias(layer.bias, nb.bias, sf, nb.running_mean);
      }
    }
    if (!bn_live) {
      if (fake_quant_) {  // the integer form (see the top of this file)
        const std::vector<float> ws = per_channel_symmetric_scales(w.value());
        std::vector<float> ds(ws.size());
        for (std::size_t k = 0; k < ws.size(); ++k) ds[k] = xq.scale * ws[k];  // as product_dequant
        const auto y0 = product(detail::to_grid(x, xq), detail::to_grid_per_channel(w, ws), none,
                                ad::activation_c<ad::activation::none>{});
        y = detail::dequant_bias_act(y0, std::move(ds), b, relu);
      } else {
        y = product(x, w, b, act_c{});
      }
    }
    qparams yq = xq;
    if constexpr (!last) {
      constexpr std::size_t out = out_position<G>;
      if (observing()) obs_[out].observe(y.value());
      if (fake_quant_) {
        yq = obs_[out].params();
        y = fake_quantize(y, yq);
      }
    }
    if constexpr (group::has_max_pool2) return std::pair<YV, qparams>(ad::max_pool2d<2>(y), yq);
    else return std::pair<YV, qparams>(y, yq);
  }

  M* model_;
  std::vector<moving_average_observer> obs_;
  std::vector<std::vector<index_t>> dims_;
  bool observers_frozen_ = false, bn_frozen_ = false, fake_quant_ = true;
};

/// The int8 model of a QAT model (qat.convert()).
template <class M>
auto convert(qat_model<M>& qat) {
  return qat.convert();
}

}  // namespace tessera::quant
