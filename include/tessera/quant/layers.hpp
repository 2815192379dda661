// The int8 layers. Each is a template over the float layer types it stands for and is made by a converting
// constructor from its float layer's state and what calibration measured (as dlib turns bn_ into affine_); int8_of
// is the one mapping from a fused group of float layer types (nn/fusion.hpp) to its int8 layer type:
//   Conv2d [+ ReLU] [+ MaxPool2d<2>]  int8_conv2d: int8 weights per output channel, uint8 NHWC activations; the
//                                     GEMM's epilogue dequantizes, adds the bias, applies the ReLU and requantizes
//                                     (one pass); with the pool, it runs on the int32 accumulators before the
//                                     epilogue (exact, a quarter of the epilogue's work)
//   Linear [+ ReLU]                   int8_linear: the same as a product; the model's last one dequantizes into
//                                     float logits, one after LastStep quantizes its float input with the range
//                                     calibrated there
//   MaxPool2d<2>                      int8_max_pool2d: on the uint8 values
//   ReLU                              int8_relu: max(q, zero point)
//   BatchNorm2d, BatchNorm1d          int8_batch_norm: a per-channel affine map of the dequantized values, requantized
//   Flatten, Dropout                  free (a Linear after a Flatten reads its weight columns in NHWC order)
//   LSTM                              int8_lstm: int8 weights, activations quantized dynamically (quant::qlstm)
//   LastStep                          int8_last_step: the last step of the float sequence
// Any other group is refused at compile time (layer_has_no_int8_version names the layer). quant/model.hpp builds
// the int8 model as a std::tuple of these, one per group.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "tessera/nn/batchnorm1d.hpp"
#include "tessera/nn/fusion.hpp"
#include "tessera/nn/recurrent.hpp"
#include "tessera/quant/qconv.hpp"
#include "tessera/quant/qlstm.hpp"

namespace tessera::quant {

namespace detail {

using act4 = Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, cpu_threads>;

/// An activation between int8 layers: uint8 values, NHWC [B, H, W, C] ([B, 1, 1, F] for features), and their
/// quantization; the last layer fills `logits` instead.
struct qact {
  act4 t;
  qparams qp;
  Tensor<float, Shape<dyn, dyn>, cpu_threads> logits;
  /// Float activations of recurrent models: a time-major sequence [T*B, F] (T > 0) or a matrix [B, F] (T == 0).
  Tensor<float, Shape<dyn, dyn>, cpu_threads> f;
  index_t T = 0, B = 0;
  bool is_float = false;
};

/// The view of an NHWC activation as a [rows, channels] matrix.
inline auto as_matrix(act4& t) {
  const auto d = t.dims();
  return View<std::uint8_t, Shape<dyn, dyn>, cpu_threads>(t.data(), {d[0] * d[1] * d[2], d[3]}, {d[3], 1});
}
inline auto as_matrix(const act4& t) {
  const auto d = t.dims();
  return View<const std::uint8_t, Shape<dyn, dyn>, cpu_threads>(t.data(), {d[0] * d[1] * d[2], d[3]}, {d[3], 1});
}

}  // namespace detail

/// What the conversion of a model's int8 layers reads, in order: what calibration measured, and what the layers
/// converted so far hand on to the next one.
struct conversion {
  /// range[i]: the calibrated quantization of float layer i's input (range[L]: of the model's output).
  std::vector<qparams> range;
  /// dims[i]: the dims of float layer i's input (first calibration batch).
  std::vector<std::vector<index_t>> dims;
  bool per_channel = true;  ///< weight scales per output channel (else one per tensor)

  // where the next int8 layer stands
  std::size_t first = 0;       ///< the position of its group's first float layer
  bool last_weighted = false;  ///< its group holds the model's last Conv2d or Linear (that one produces the logits)
  qparams in;                  ///< the quantization of the int8 activation reaching it
  /// The NCHW dims a Flatten before it flattened (through layers that keep the layout), or null.
  const std::vector<index_t>* flattened = nullptr;

  conversion& at(std::size_t first_, bool last_weighted_) {
    first = first_, last_weighted = last_weighted_;
    return *this;
  }
};

template <class Conv, bool Relu, bool Pooled>
class int8_conv2d;
template <class Linear, bool Relu>
class int8_linear;

/// Conv2d [+ ReLU] [+ MaxPool2d<2>] (Pooled: the pool runs on the accumulators, see conv2d_maxpool2_nhwc).
template <int I, int O, hw K, conv2d_options Op, bool Relu, bool Pooled>
class int8_conv2d<nn::Conv2d<I, O, K, Op>, Relu, Pooled> {
  static_assert(Op.stride.h == Op.stride.w && Op.padding.h == Op.padding.w && Op.dilation.h == Op.dilation.w,
                "tessera::quant: the int8 Conv2d takes the same stride, padding and dilation on both axes (per-axis "
                "conv2d_options have no int8 version yet)");

 public:
  static constexpr bool weighted = true;
  static constexpr conv2d_options o = Op;
  qconv_weight cw;
  Tensor<float, Shape<dyn>, cpu_threads> bias;
  product_dequant dq;
  qparams out;  ///< the quantization of its output (calibrated after the activation, before the pool)

  template <class State>
  int8_conv2d(const State& fl, conversion& c) {
    const auto& w = fl.weight.value();
    const auto d = w.dims();
    out = c.range[c.first + 1 + (Relu ? 1 : 0)];
    cw = qconv_weight(w.data(), d[0], d[1], d[2], d[3], c.per_channel);
    dq = conv_dequant(cw, c.in);
    bias = Tensor<float, Shape<dyn>, cpu_threads>(fl.bias.value());
    if (c.last_weighted) throw std::invalid_argument("tessera::quant: a model ending in Conv2d is not supported (end with Linear)");
    c.in = out;
    c.flattened = nullptr;
  }

  void run(detail::qact& x) const {
    const auto d = x.t.dims();
    index_t OH = tessera::detail::conv_extent(d[1], cw.KH, o.stride.h, o.padding.h, o.dilation.h);
    index_t OW = tessera::detail::conv_extent(d[2], cw.KW, o.stride.w, o.padding.w, o.dilation.w);
    if (Pooled) OH /= 2, OW /= 2;
    detail::act4 y(d[0], OH, OW, cw.K);
    auto ym = detail::as_matrix(y);
    const auto xv = x.t.cview();
    const detail::s8_conv_node<std::remove_const_t<decltype(xv)>> acc(xv, cw, o, x.qp, Pooled);
    if constexpr (Relu) ym = quantize(tessera::relu(dequantize(acc, dq) + bias), out);
    else ym = quantize(dequantize(acc, dq) + bias, out);
    x.t = std::move(y);
    x.qp = out;
  }

};

/// Linear [+ ReLU]; the model's last one produces the float logits.
template <int In, int Out, bool Bias, bool Relu>
class int8_linear<nn::Linear<In, Out, Bias>, Relu> {
 public:
  static constexpr bool weighted = true;
  std::shared_ptr<const qweight> lw;
  qparams in_qp;  ///< its input's quantization (a float input, after LastStep, is quantized with it)
  product_dequant dq;
  Tensor<float, Shape<dyn>, cpu_threads> bias;
  qparams out;
  bool to_float = false;

  template <class State>
  int8_linear(const State& fl, conversion& c) {
    const auto& w = fl.weight.value();
    to_float = c.last_weighted;
    out = c.range[c.first + 1 + (Relu ? 1 : 0)];
    const index_t out_f = w.dims()[0], in = w.dims()[1];
    const std::vector<index_t>* flat_from = c.flattened;
    std::vector<float> b(std::size_t(in * out_f));  // B [in, out] with rows in the activation's (NHWC) order
    for (index_t f = 0; f < in; ++f) {
      index_t src = f;
      if (flat_from && flat_from->size() == 4) {  // NHWC position f = (h * W + w) * C + c reads NCHW c * H * W + h * W + w
        const index_t C = (*flat_from)[1], H = (*flat_from)[2], W = (*flat_from)[3];
        const index_t ch = f % C, hw = f / C;
        src = ch * H * W + hw;
      }
      for (index_t o = 0; o < out_f; ++o) b[std::size_t(f * out_f + o)] = w.data()[o * in + src];
    }
    lw = std::make_shared<const qweight>(b.data(), in, out_f, out_f, 1, c.per_channel);
    in_qp = c.in;
    dq = product_dequant(*lw, c.in);
    bias = Tensor<float, Shape<dyn>, cpu_threads>(out_f);
    if constexpr (Bias) bias = fl.bias.value();
    else bias = 0.0f;
    c.in = out;
    c.flattened = nullptr;
  }

  void run(detail::qact& x) const {
    if (x.is_float && x.T > 0)  // the float Linear maps [B, T, F] per step; the int8 one takes [B, F] only
      throw std::invalid_argument("tessera::quant: an int8 Linear takes [batch, features]: a Linear on a sequence [B, T, F] "
                                  "has no int8 version (put LastStep before it)");
    if (x.is_float) {  // a float input (after LastStep): quantized with the calibrated range
      const index_t B = x.f.dims()[0], F = x.f.dims()[1];
      x.t = detail::act4(B, 1, 1, F);
      auto m = detail::as_matrix(x.t);
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
      if constexpr (Relu) x.logits = tessera::relu(dequantize(acc, dq) + bias);
      else x.logits = dequantize(acc, dq) + bias;
      return;
    }
    detail::act4 y(B, 1, 1, lw->N);
    auto ym = detail::as_matrix(y);
    if constexpr (Relu) ym = quantize(tessera::relu(dequantize(acc, dq) + bias), out);
    else ym = quantize(dequantize(acc, dq) + bias, out);
    x.t = std::move(y);
    x.qp = out;
  }

};

/// A ReLU not fused into a layer before it: max(q, zero point) in place. The quantization and the layout stay, so a
/// Flatten before it still counts for a Linear after it.
class int8_relu {
 public:
  static constexpr bool weighted = false;
  template <class State>
  int8_relu(const State&, conversion&) {}
  void run(detail::qact& x) const {
    auto m = detail::as_matrix(x.t);
    m = maximum(m, std::uint8_t(std::clamp(x.qp.zero_point, 0, 255)));
  }
};

/// A 2x2 max-pool not taken by a convolution before it: on the uint8 values (the quantization stays).
class int8_max_pool2d {
 public:
  static constexpr bool weighted = false;
  template <class State>
  int8_max_pool2d(const State&, conversion&) {}
  void run(detail::qact& x) const {
    detail::act4 y;
    max_pool2x2_nhwc(x.t, y);
    x.t = std::move(y);
  }
};

/// Flatten: free (the activation is NHWC; a Linear after it reads the dims it flattened).
class int8_flatten {
 public:
  static constexpr bool weighted = false;
  template <class State>
  int8_flatten(const State&, conversion& c) {
    c.flattened = &c.dims[c.first];
  }
  void run(detail::qact&) const {}
};

/// Dropout: the identity in inference.
template <class Dropout>
class int8_dropout {
 public:
  static constexpr bool weighted = false;
  template <class State>
  int8_dropout(const State&, conversion&) {}
  void run(detail::qact&) const {}
};

template <class BatchNorm>
class int8_batch_norm;
/// BatchNorm2d, or BatchNorm1d on features [B, F], in evaluation (its running statistics): per channel
/// y = a[c] * x + b[c] (a = weight / sqrt(running_var + 1e-5), b = bias - a * running_mean) on the dequantized values,
/// requantized with the range calibrated after it, as PyTorch's quantized BatchNorm2d / BatchNorm1d
/// (torch.ao.nn.quantized) when it is not folded into the convolution before it.
template <template <int> class BN, int C>
class int8_batch_norm<BN<C>> {
 public:
  static constexpr bool weighted = false;
  Tensor<float, Shape<dyn>, cpu_threads> a, b;
  qparams out;

  template <class State>
  int8_batch_norm(const State& fl, conversion& c) : a(C), b(C) {
    if (c.dims[c.first].size() == 3)
      throw std::invalid_argument("tessera::quant: an int8 BatchNorm1d takes features [B, F]; on a sequence [B, C, L] it has no "
                                  "int8 version");
    for (index_t k = 0; k < C; ++k) {
      const double is = 1.0 / std::sqrt(double(fl.running_var.data()[k]) + 1e-5);
      a.data()[k] = float(double(fl.weight.value().data()[k]) * is);
      b.data()[k] = float(double(fl.bias.value().data()[k]) - double(a.data()[k]) * double(fl.running_mean.data()[k]));
    }
    out = c.range[c.first + 1];
    c.in = out;
  }
  void run(detail::qact& x) const {
    auto m = detail::as_matrix(x.t);  // [rows, C]: channels last
    m = quantize(dequantize(m, x.qp) * a + b, out);
    x.qp = out;
  }
};

template <class LSTM>
class int8_lstm;
/// An LSTM (a model's first layer): int8 weights, activations quantized dynamically per sequence and per step.
template <int In, int H, lstm_options O>
class int8_lstm<nn::LSTM<In, H, O>> {
 public:
  static constexpr bool weighted = false;
  static constexpr bool first_layer_only = true;  ///< it reads the model's float input sequence
  static constexpr bool batch_first = O.batch_first;
  std::shared_ptr<const qlstm> rnn;

  template <class State>
  int8_lstm(const State& fl, conversion& c) : rnn(std::make_shared<const qlstm>(fl.layers)) {
    c.flattened = nullptr;
  }
  void run(detail::qact& x) const {
    Tensor<float, Shape<dyn, dyn>, cpu_threads> y;
    rnn->run_time_major(x.f, x.T, x.B, y);
    x.f = std::move(y);
  }
};

/// LastStep: the last step of the float sequence; a Linear after it quantizes it with the range calibrated here.
class int8_last_step {
 public:
  static constexpr bool weighted = false;
  template <class State>
  int8_last_step(const State&, conversion& c) {
    c.in = c.range[c.first + 1];
    c.flattened = nullptr;
  }
  void run(detail::qact& x) const {
    const index_t F = x.f.dims()[1];
    Tensor<float, Shape<dyn, dyn>, cpu_threads> y(x.B, F);
    std::memcpy(y.data(), x.f.data() + (x.T - 1) * x.B * F, std::size_t(x.B * F) * sizeof(float));
    x.f = std::move(y);
    x.T = 0;
  }
};

/// The int8 layer type of a fused group of float layer types (nn::fused<...>); `type` is void where the group has
/// no int8 form. The one place that says which float layers have an int8 version.
template <class Group>
struct int8_of {
  using type = void;
};
template <int I, int O, hw K, conv2d_options Op, class... Rest>
struct int8_of<nn::fused<nn::Conv2d<I, O, K, Op>, Rest...>> {
  using group = nn::fused<nn::Conv2d<I, O, K, Op>, Rest...>;
  static constexpr bool relu = group::activation == ad::activation::relu;
  using type = std::conditional_t<!group::has_activation || relu, int8_conv2d<nn::Conv2d<I, O, K, Op>, relu, group::has_max_pool2>, void>;
};
template <int In, int Out, bool Bias, class... Rest>
struct int8_of<nn::fused<nn::Linear<In, Out, Bias>, Rest...>> {
  using group = nn::fused<nn::Linear<In, Out, Bias>, Rest...>;
  static constexpr bool relu = group::activation == ad::activation::relu;
  using type = std::conditional_t<!group::has_activation || relu, int8_linear<nn::Linear<In, Out, Bias>, relu>, void>;
};
template <>
struct int8_of<nn::fused<nn::ReLU>> {
  using type = int8_relu;
};
template <>
struct int8_of<nn::fused<nn::MaxPool2d<2>>> {
  using type = int8_max_pool2d;
};
template <>
struct int8_of<nn::fused<nn::Flatten>> {
  using type = int8_flatten;
};
template <double P>
struct int8_of<nn::fused<nn::Dropout<P>>> {
  using type = int8_dropout<nn::Dropout<P>>;
};
template <int In, int H, lstm_options O>
struct int8_of<nn::fused<nn::LSTM<In, H, O>>> {
  using type = std::conditional_t<O.bidirectional, void, int8_lstm<nn::LSTM<In, H, O>>>;  // qlstm runs one direction
};
template <int C>
struct int8_of<nn::fused<nn::BatchNorm2d<C>>> {
  using type = int8_batch_norm<nn::BatchNorm2d<C>>;
};
template <int C>
struct int8_of<nn::fused<nn::BatchNorm1d<C>>> {
  using type = int8_batch_norm<nn::BatchNorm1d<C>>;
};
template <>
struct int8_of<nn::fused<nn::LastStep>> {
  using type = int8_last_step;
};

namespace detail {
template <class Group>
inline constexpr bool has_int8_form = !std::is_void_v<typename int8_of<Group>::type>;

/// Instantiated for the layer of a group without an int8 form: the first of its layers that has none on its own
/// (a Tanh after a Linear), else the group's head.
template <class L>
inline constexpr bool never = false;
template <class L>
struct layer_has_no_int8_version {
  static constexpr bool ok = never<L>;
  static_assert(ok, "tessera::quant: this layer has no int8 version yet (int8 models take Conv2d, Linear, ReLU, "
                    "MaxPool2d<2>, Flatten, Dropout, BatchNorm2d, BatchNorm1d, LSTM (not bidirectional) and LastStep; GRU, RNN and the cells have none; the "
                    "instantiation above names the layer)");
};
template <class Group>
struct blamed_layer;
template <class... Ls>
struct blamed_layer<nn::fused<Ls...>> {
  template <class L, class... Rest>
  static auto first_without(std::tuple<L, Rest...>*) {
    if constexpr (!has_int8_form<nn::fused<L>>) return static_cast<L*>(nullptr);
    else if constexpr (sizeof...(Rest) > 0) return first_without(static_cast<std::tuple<Rest...>*>(nullptr));
    else return static_cast<typename nn::fused<Ls...>::head*>(nullptr);
  }
  using type = std::remove_pointer_t<decltype(first_without(static_cast<std::tuple<Ls...>*>(nullptr)))>;
};

/// Does the group have an int8 form? If not, the compile error names its layer.
template <class Group>
constexpr bool check_int8_form() {
  if constexpr (has_int8_form<Group>) return true;
  else return layer_has_no_int8_version<typename blamed_layer<Group>::type>::ok;
}
}  // namespace detail

/// The int8 layer type of a group that has one.
template <class Group>
using int8_layer_t = typename int8_of<Group>::type;

}  // namespace tessera::quant
