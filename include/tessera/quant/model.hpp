// Post-training quantization of a model type. quant::int8_model_t<M> is the int8 inference model of a float
// nn::Sequential M: its converting constructor takes the trained float model and calibration images, runs the
// float model over them layer by layer with an observer on every activation, and builds each int8 layer from its
// float layer (dlib-style conversion):
//   Conv2d (+ ReLU)   int8 weights per output channel, uint8 NHWC activations; the GEMM's epilogue dequantizes,
//                     adds the bias, applies the ReLU and requantizes (one pass)
//   Linear (+ ReLU)   the same as a product; the model's last Linear dequantizes into float logits
//   MaxPool2d<2>      right after a Conv2d (+ ReLU): pooled on the convolution's int32 accumulators before the
//                     epilogue (exact, a quarter of the epilogue's work); elsewhere on the uint8 values
//   Flatten           free (the next Linear's weight columns are permuted from NCHW to NHWC order at conversion)
//   ReLU              fused into the layer before it, or max(q, zero point) alone; Dropout: the identity
//   LSTM              int8 weights, activations quantized dynamically per sequence and per step (quant::qlstm)
//   LastStep          the last step of the float sequence; a Linear after it quantizes its input with the range
//                     calibrated there
//   auto q = tessera::quant::quantize(model, calibration_images);   // int8_model_t<decltype(model)>
//   auto logits = q.predict(images);                                 // float [B, classes]
#pragma once
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "tessera/nn/recurrent.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/quant/observer.hpp"
#include "tessera/quant/qconv.hpp"
#include "tessera/quant/qlstm.hpp"

namespace tessera::quant {

enum class observer_kind { minmax, histogram };

struct calibration_options {
  observer_kind observer = observer_kind::histogram;
  double keep = 0.99999;    ///< histogram: the fraction of activation values kept inside the range
  index_t batch = 100;      ///< calibration images per forward pass
  bool per_channel = true;  ///< weight scales per output channel (else one per tensor)
};

namespace detail {

template <class L>
inline constexpr bool is_conv = false;
template <int I, int O, int K, conv2d_options Op>
inline constexpr bool is_conv<nn::Conv2d<I, O, K, Op>> = true;
template <class L>
inline constexpr bool is_linear = false;
template <int I, int O, bool B>
inline constexpr bool is_linear<nn::Linear<I, O, B>> = true;
template <class L>
inline constexpr bool linear_has_bias = false;
template <int I, int O>
inline constexpr bool linear_has_bias<nn::Linear<I, O, true>> = true;
template <class L>
inline constexpr bool is_dropout = false;
template <double P>
inline constexpr bool is_dropout<nn::Dropout<P>> = true;
template <class L>
inline constexpr bool is_flatten = std::is_same_v<L, nn::Flatten>;
template <class L>
inline constexpr bool is_last_step = std::is_same_v<L, nn::LastStep>;
template <class L>
inline constexpr bool is_lstm = false;
template <int I, int H, lstm_options O>
inline constexpr bool is_lstm<nn::LSTM<I, H, O>> = true;
template <class L>
inline constexpr bool lstm_batch_first = false;
template <int I, int H, lstm_options O>
inline constexpr bool lstm_batch_first<nn::LSTM<I, H, O>> = O.batch_first;
template <class L>
inline constexpr bool has_weights = is_conv<L> || is_linear<L>;

template <class L>
struct layer_has_no_int8_version {
  static constexpr bool ok = is_conv<L> || is_linear<L> || nn::is_relu<L> || nn::is_maxpool2<L> || is_flatten<L> ||
                            is_dropout<L> || is_lstm<L> || is_last_step<L>;
  static_assert(ok, "tessera::quant: this layer has no int8 version yet (int8 models take Conv2d, Linear, ReLU, "
                    "MaxPool2d<2>, Flatten, Dropout, LSTM and LastStep)");
};

/// An activation between int8 layers: uint8 values, NHWC [B, H, W, C] ([B, 1, 1, F] for features), and their
/// quantization; the last layer fills `logits` instead.
struct qact {
  Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, cpu_threads> t;
  qparams qp;
  Tensor<float, Shape<dyn, dyn>, cpu_threads> logits;
  /// Float activations of recurrent models: a time-major sequence [T*B, F] (T > 0) or a matrix [B, F] (T == 0).
  Tensor<float, Shape<dyn, dyn>, cpu_threads> f;
  index_t T = 0, B = 0;
  bool is_float = false;
};

using act4 = Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, cpu_threads>;

/// The view of an NHWC activation as a [rows, channels] matrix.
inline auto as_matrix(act4& t) {
  const auto d = t.dims();
  return View<std::uint8_t, Shape<dyn, dyn>, cpu_threads>(t.data(), {d[0] * d[1] * d[2], d[3]}, {d[3], 1});
}
inline auto as_matrix(const act4& t) {
  const auto d = t.dims();
  return View<const std::uint8_t, Shape<dyn, dyn>, cpu_threads>(t.data(), {d[0] * d[1] * d[2], d[3]}, {d[3], 1});
}

/// A host tensor read under another host policy (no copy).
template <class PT, class T, class S, class P>
View<const T, S, PT> on_policy(const Tensor<T, S, P>& x) {
  static_assert(!P::on_device && !PT::on_device, "tessera::quant: host tensors only");
  return View<const T, S, PT>(x.data(), x.dims(), x.strides());
}

/// One int8 layer: what runs, and with which constants.
struct stage {
  enum kind_t { identity, conv, linear, relu_alone, pool, lstm, last_step } kind = identity;
  std::shared_ptr<const qlstm> rnn;  // lstm
  qparams in_qp;                      // linear on a float input: its calibrated quantization
  qconv_weight cw;                   // conv
  std::shared_ptr<const qweight> lw; // linear
  conv2d_options o;
  Tensor<float, Shape<dyn>, cpu_threads> bias;
  product_dequant dq;
  qparams out;
  bool fused_relu = false, to_float = false;
  bool pooled = false;  // conv: the 2 x 2 max-pool after it runs on its accumulators (see conv2d_maxpool2_nhwc)

  void run(qact& x) const {
    switch (kind) {
      case identity: return;
      case pool: {
        act4 y;
        max_pool2x2_nhwc(x.t, y);
        x.t = std::move(y);
        return;
      }
      case relu_alone: {
        auto m = as_matrix(x.t);
        m = maximum(m, std::uint8_t(std::clamp(x.qp.zero_point, 0, 255)));
        return;
      }
      case conv: {
        const auto d = x.t.dims();
        index_t OH = tessera::detail::conv_extent(d[1], cw.KH, o.stride, o.padding, o.dilation);
        index_t OW = tessera::detail::conv_extent(d[2], cw.KW, o.stride, o.padding, o.dilation);
        if (pooled) OH /= 2, OW /= 2;
        act4 y(d[0], OH, OW, cw.K);
        auto ym = as_matrix(y);
        const auto xv = x.t.cview();
        const s8_conv_node<std::remove_const_t<decltype(xv)>> acc(xv, cw, o, x.qp, pooled);
        if (fused_relu) ym = quantize(tessera::relu(dequantize(acc, dq) + bias), out);
        else ym = quantize(dequantize(acc, dq) + bias, out);
        x.t = std::move(y);
        x.qp = out;
        return;
      }
      case lstm: {
        Tensor<float, Shape<dyn, dyn>, cpu_threads> y;
        rnn->run_time_major(x.f, x.T, x.B, y);
        x.f = std::move(y);
        return;
      }
      case last_step: {
        const index_t F = x.f.dims()[1];
        Tensor<float, Shape<dyn, dyn>, cpu_threads> y(x.B, F);
        std::memcpy(y.data(), x.f.data() + (x.T - 1) * x.B * F, std::size_t(x.B * F) * sizeof(float));
        x.f = std::move(y);
        x.T = 0;
        return;
      }
      case linear: {
        if (x.is_float) {  // a float input (after LastStep): quantized with the calibrated range
          const index_t B = x.f.dims()[0], F = x.f.dims()[1];
          x.t = act4(B, 1, 1, F);
          auto m = as_matrix(x.t);
          m = quantize(x.f, in_qp);
          x.qp = in_qp;
          x.is_float = false;
        }
        const auto d = x.t.dims();
        const index_t B = d[0], F = d[1] * d[2] * d[3];
        const View<const std::uint8_t, Shape<dyn, dyn>, cpu_threads> xm(x.t.data(), {B, F}, {F, 1});
        auto acc = matmul(xm, lw, x.qp);
        if (to_float) {
          x.logits = Tensor<float, Shape<dyn, dyn>, cpu_threads>(B, lw->N);
          if (fused_relu) x.logits = tessera::relu(dequantize(acc, dq) + bias);
          else x.logits = dequantize(acc, dq) + bias;
          return;
        }
        act4 y(B, 1, 1, lw->N);
        auto ym = as_matrix(y);
        if (fused_relu) ym = quantize(tessera::relu(dequantize(acc, dq) + bias), out);
        else ym = quantize(dequantize(acc, dq) + bias, out);
        x.t = std::move(y);
        x.qp = out;
        return;
      }
    }
  }
};

/// An observer of the chosen kind.
struct any_observer {
  observer_kind kind;
  minmax_observer mm;
  histogram_observer h;
  template <class T>
  void observe(const T& t) {
    if (kind == observer_kind::minmax) mm.observe(t.data(), t.size());
    else h.observe(t.data(), t.size());
  }
  qparams params() const { return kind == observer_kind::minmax ? mm.params() : h.params(); }
};

}  // namespace detail

/// The int8 inference model of the float model nn::Sequential<In, Layers...> (any float CPU policy).
template <class In, class... Layers>
class int8_sequential {
  static_assert(In::rank == 4 || In::rank == 3 || In::rank == 2,
                "tessera::quant: int8 models take images [B, C, H, W], sequences [B, T, F] or features [B, F]");
  static_assert((detail::layer_has_no_int8_version<Layers>::ok && ...));
  using layer_list = std::tuple<Layers...>;
  template <std::size_t I>
  using layer_t = std::tuple_element_t<I, layer_list>;
  static constexpr std::size_t L = sizeof...(Layers);

 public:
  using input_shape = In;

  /// Converts `model` (trained, float) after running it over `calibration` (images of the model's input shape).
  template <class P, class S, class PC>
  int8_sequential(nn::basic_sequential<float, P, In, Layers...>& model, const Tensor<float, S, PC>& calibration,
                  calibration_options opt = {}) {
    static_assert(!P::on_device && !PC::on_device, "tessera::quant: calibrate and convert a model on the CPU");
    const index_t n = calibration.dims()[0];
    if (n == 0) throw std::invalid_argument("tessera::quant::quantize: no calibration images");
    std::vector<detail::any_observer> obs(L + 1, detail::any_observer{opt.observer, {}, {}});
    for (auto& o : obs) o.h.keep = opt.keep;
    std::vector<std::vector<index_t>> dims(L + 1);  // each activation's dims (first batch)
    const bool was_training = model.is_training();
    model.eval();
    {
      ad::no_grad ng;
      nn::context ctx{false, &model.rng()};
      for (index_t b0 = 0; b0 < n; b0 += opt.batch) {
        const index_t b1 = std::min(n, b0 + opt.batch);
        Tensor<float, dyn_shape_t<In::rank>, P> xb(slice<0>(detail::on_policy<P>(calibration), b0, b1));
        ad::Var<float, In::rank, P> x(xb, false);
        obs[0].observe(x.value());
        if (b0 == 0) dims[0].assign(x.dims().begin(), x.dims().end());
        observe_from<0>(model, x, ctx, obs, dims, b0 == 0);
      }
    }
    if (was_training) model.train();
    input_qp_ = obs[0].params();
    build<0>(model, obs, dims, input_qp_, opt, /*after_flatten*/ nullptr);
  }

  /// Logits [B, classes] of float images of the model's input shape (quantized on the way in).
  template <class S, class PX>
  Tensor<float, Shape<dyn, dyn>, cpu_threads> predict(const Tensor<float, S, PX>& x) const {
    static_assert(S::rank == In::rank, "tessera::quant: the input's rank differs from the model's");
    for (int i = 1; i < In::rank; ++i)
      if (In::extents[std::size_t(i)] != dyn && x.dims()[i] != In::extents[std::size_t(i)])
        throw shape_error("tessera::quant: the input " + tessera::detail::format_dims(x.dims()) +
                          " does not fit the model's input shape " + tessera::detail::format_dims(In::extents));
    detail::qact a;
    a.qp = input_qp_;
    if constexpr (In::rank == 4) {
      const auto d = x.dims();
      a.t = detail::act4(d[0], d[2], d[3], d[1]);
      a.t = quantize(permute<0, 2, 3, 1>(detail::on_policy<cpu_threads>(x)), input_qp_);  // NCHW -> NHWC on the way
    } else if constexpr (In::rank == 3) {  // a sequence, kept in float and time-major: [T*B, F]
      const auto d = x.dims();
      const bool bf = detail::lstm_batch_first<layer_t<0>>;
      a.B = bf ? d[0] : d[1], a.T = bf ? d[1] : d[0];
      a.is_float = true;
      Tensor<float, Shape<dyn, dyn, dyn>, cpu_threads> tm(a.T, a.B, d[2]);
      if (bf) tm = permute<1, 0, 2>(detail::on_policy<cpu_threads>(x));
      else tm = detail::on_policy<cpu_threads>(x);
      a.f = Tensor<float, Shape<dyn, dyn>, cpu_threads>(reshape<Shape<dyn, dyn>>(tm.cview(), {a.T * a.B, d[2]}));
    } else {
      const auto d = x.dims();
      a.t = detail::act4(d[0], 1, 1, d[1]);
      auto m = detail::as_matrix(a.t);
      m = quantize(detail::on_policy<cpu_threads>(x), input_qp_);
    }
    for (const auto& s : stages_) s.run(a);
    return std::move(a.logits);
  }

  qparams input_qparams() const { return input_qp_; }
  /// The int8 layers (one per float layer; fused activations are identities).
  const std::vector<detail::stage>& stages() const { return stages_; }

 private:
  template <std::size_t I, class M, class X>
  static void observe_from(M& model, const X& x, nn::context& ctx, std::vector<detail::any_observer>& obs,
                           std::vector<std::vector<index_t>>& dims, bool first) {
    if constexpr (I < L) {
      auto y = model.template layer<I>().forward(x, ctx);
      obs[I + 1].observe(y.value());
      if (first) dims[I + 1].assign(y.dims().begin(), y.dims().end());
      observe_from<I + 1>(model, y, ctx, obs, dims, first);
    }
  }

  template <std::size_t J>
  static constexpr bool pool_at() {
    if constexpr (J < L) return nn::is_maxpool2<layer_t<J>>;
    else return false;
  }
  /// Is the max-pool at I run by the convolution before it (Conv2d, [ReLU,] MaxPool2d<2>)?
  template <std::size_t I>
  static constexpr bool pooled_before() {
    if constexpr (I >= 2 && nn::is_relu<layer_t<I - 1>>) return detail::is_conv<layer_t<I - 2>>;
    else if constexpr (I >= 1) return detail::is_conv<layer_t<I - 1>>;
    else return false;
  }

  /// The position of the last Conv2d or Linear (it produces the float logits).
  static constexpr std::size_t last_weighted() {
    constexpr bool w[] = {detail::has_weights<Layers>...};
    std::size_t last = L;
    for (std::size_t j = 0; j < L; ++j)
      if (w[j]) last = j;
    return last;
  }

  template <std::size_t I, class M>
  void build(M& model, const std::vector<detail::any_observer>& obs, const std::vector<std::vector<index_t>>& dims, qparams cur,
             const calibration_options& opt, const std::vector<index_t>* flat_from) {
    if constexpr (I < L) {
      using LT = layer_t<I>;
      detail::stage s;
      constexpr bool relu_next = [] {
        if constexpr (I + 1 < L) return nn::is_relu<layer_t<I + 1>>;
        else return false;
      }();
      if constexpr (detail::has_weights<LT>) {
        auto& fl = model.template layer<I>();
        const auto& w = fl.weight.value();
        s.fused_relu = relu_next;
        s.to_float = I == last_weighted();
        s.out = obs[I + 1 + (relu_next ? 1 : 0)].params();
        if constexpr (detail::is_conv<LT>) {
          const auto d = w.dims();
          s.kind = detail::stage::conv;
          s.pooled = pool_at<I + (relu_next ? 2 : 1)>();
          s.cw = qconv_weight(w.data(), d[0], d[1], d[2], d[3], opt.per_channel);
          s.o = conv_options_of<LT>();
          s.dq = conv_dequant(s.cw, cur);
          s.bias = Tensor<float, Shape<dyn>, cpu_threads>(fl.bias.value());
          if (s.to_float) throw std::invalid_argument("tessera::quant: a model ending in Conv2d is not supported (end with Linear)");
        } else {
          const index_t out = w.dims()[0], in = w.dims()[1];
          s.kind = detail::stage::linear;
          std::vector<float> b(std::size_t(in * out));  // B [in, out] with rows in the activation's (NHWC) order
          for (index_t f = 0; f < in; ++f) {
            index_t src = f;
            if (flat_from && flat_from->size() == 4) {  // NHWC position f = (h * W + w) * C + c reads NCHW c * H * W + h * W + w
              const index_t C = (*flat_from)[1], H = (*flat_from)[2], W = (*flat_from)[3];
              const index_t c = f % C, hw = f / C;
              src = c * H * W + hw;
            }
            for (index_t o = 0; o < out; ++o) b[std::size_t(f * out + o)] = w.data()[o * in + src];
          }
          s.lw = std::make_shared<const qweight>(b.data(), in, out, out, 1, opt.per_channel);
          s.in_qp = cur;  // used when the input arrives in float (after LastStep)
          s.dq = product_dequant(*s.lw, cur);
          s.bias = Tensor<float, Shape<dyn>, cpu_threads>(out);
          if constexpr (detail::linear_has_bias<LT>) s.bias = fl.bias.value();
          else s.bias = 0.0f;
        }
        const qparams next = s.out;
        stages_.push_back(std::move(s));
        if constexpr (relu_next) {
          stages_.push_back(detail::stage{});  // the ReLU ran in the epilogue
          build<I + 2>(model, obs, dims, next, opt, nullptr);
        } else {
          build<I + 1>(model, obs, dims, next, opt, nullptr);
        }
      } else if constexpr (detail::is_lstm<LT>) {
        static_assert(I == 0, "tessera::quant: an LSTM is converted as a model's first layer");
        s.kind = detail::stage::lstm;
        s.rnn = std::make_shared<const qlstm>(model.template layer<I>().layers);
        stages_.push_back(std::move(s));
        build<I + 1>(model, obs, dims, cur, opt, nullptr);
      } else if constexpr (detail::is_last_step<LT>) {
        s.kind = detail::stage::last_step;
        stages_.push_back(std::move(s));
        build<I + 1>(model, obs, dims, obs[I + 1].params(), opt, nullptr);
      } else if constexpr (nn::is_relu<LT>) {
        s.kind = detail::stage::relu_alone;
        stages_.push_back(std::move(s));
        build<I + 1>(model, obs, dims, cur, opt, nullptr);
      } else if constexpr (nn::is_maxpool2<LT>) {
        if (!pooled_before<I>()) s.kind = detail::stage::pool;  // else the convolution before pooled already
        stages_.push_back(std::move(s));
        build<I + 1>(model, obs, dims, cur, opt, flat_from);
      } else if constexpr (detail::is_flatten<LT>) {
        stages_.push_back(std::move(s));
        build<I + 1>(model, obs, dims, cur, opt, &dims[I]);
      } else {  // dropout: the identity in inference
        stages_.push_back(std::move(s));
        build<I + 1>(model, obs, dims, cur, opt, flat_from);
      }
    }
  }

  template <class LT>
  static constexpr conv2d_options conv_options_of() {
    return []<int A, int B, int K, conv2d_options O>(nn::Conv2d<A, B, K, O>*) { return O; }(static_cast<LT*>(nullptr));
  }

  qparams input_qp_;
  std::vector<detail::stage> stages_;
};

namespace detail {
template <class M>
struct int8_model_of;
template <class T, class P, class In, class... Layers>
struct int8_model_of<nn::basic_sequential<T, P, In, Layers...>> {
  using type = int8_sequential<In, Layers...>;
};
template <class In, class... Layers>
struct int8_model_of<nn::Sequential<In, Layers...>> {
  using type = int8_sequential<In, Layers...>;
};
}  // namespace detail

/// The int8 inference model type of a float model type.
template <class M>
using int8_model_t = typename detail::int8_model_of<M>::type;

/// Calibrates on `calibration` (images of the model's input shape; about 1000 suffice) and converts.
template <class M, class S, class P>
int8_model_t<M> quantize(M& model, const Tensor<float, S, P>& calibration, calibration_options opt = {}) {
  return int8_model_t<M>(model, calibration, opt);
}

}  // namespace tessera::quant
