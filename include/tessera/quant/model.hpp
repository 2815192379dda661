// Post-training quantization of a model type. quant::int8_model_t<M> is the int8 inference model of a float
// nn::Sequential M: its converting constructor takes the trained float model and calibration images, runs the
// float model over them layer by layer with an observer on every activation, and converts each group of float
// layers (nn/fusion.hpp: a Conv2d or Linear with its ReLU and, for a Conv2d, a 2x2 max-pool; any other layer
// alone) into the int8 layer int8_of that group (quant/layers.hpp, which lists them). The model is the std::tuple
// of those int8 layers, run in order.
//   auto q = tessera::quant::quantize(model, calibration_images);   // int8_model_t<decltype(model)>
//   auto logits = q.predict(images);                                 // float [B, classes]
// calibration_options{.reduce_range = true} quantizes every activation to 7 bits (PyTorch's reduce_range, the default of
// its fbgemm qconfig): half the levels, and on AVX2 CPUs without AVX512-VNNI the int8 GEMM's faster exact avx2_u7 path.
#pragma once
#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/nn/recurrent.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/quant/layers.hpp"
#include "tessera/quant/observer.hpp"

namespace tessera::quant {

enum class observer_kind { minmax, histogram };

struct calibration_options {
  observer_kind observer = observer_kind::histogram;
  double keep = 0.99999;    ///< histogram: the fraction of activation values kept inside the range
  index_t batch = 100;      ///< calibration images per forward pass
  bool per_channel = true;  ///< weight scales per output channel (else one per tensor)
  /// 7-bit activations (PyTorch's reduce_range, the default of its fbgemm qconfig): uint8 activations in [0, 127], so
  /// that the int8 GEMM takes its vpmaddubsw path on AVX2 CPUs without AVX512-VNNI (exact; half the levels)
  bool reduce_range = false;
};

namespace detail {

/// A host tensor read under another host policy (no copy).
template <class PT, class T, class S, class P>
View<const T, S, PT> on_policy(const Tensor<T, S, P>& x) {
  static_assert(!P::on_device && !PT::on_device, "tessera::quant: host tensors only");
  return View<const T, S, PT>(x.data(), x.dims(), x.strides());
}

/// Does the int8 layer Q only stand first in a model (it reads the float input)?
template <class Q>
inline constexpr bool first_layer_only = requires { requires Q::first_layer_only; };

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
  qparams params(bool reduce_range) const { return kind == observer_kind::minmax ? mm.params(reduce_range) : h.params(reduce_range); }
};

}  // namespace detail

/// The int8 inference model of the float model nn::Sequential<In, Layers...> (any float CPU policy): a std::tuple of
/// int8 layers, one per group of the fusion plan (nn/fusion.hpp), each int8_of that group (quant/layers.hpp), run in
/// order.
template <class In, class... Layers>
class int8_sequential {
  static_assert(In::rank == 4 || In::rank == 3 || In::rank == 2,
                "tessera::quant: int8 models take images [B, C, H, W], sequences [B, T, F] or features [B, F]");
  using plan = nn::fusion_plan<Layers...>;
  static constexpr std::size_t L = sizeof...(Layers);
  static constexpr bool convertible = []<class... G>(std::tuple<G...>*) {
    return (detail::check_int8_form<G>() && ...);
  }(static_cast<typename plan::groups*>(nullptr));

  template <class... G>
  static std::tuple<int8_layer_t<G>...> int8_list(std::tuple<G...>*) requires(convertible);
  template <class... G>
  static std::tuple<> int8_list(std::tuple<G...>*) requires(!convertible);  // the error above says why

 public:
  using input_shape = In;
  /// The int8 layers' types, one per group of float layers.
  using layer_types = decltype(int8_list(static_cast<typename plan::groups*>(nullptr)));

 private:
  /// The group holding the model's last Conv2d or Linear (it produces the float logits); plan::count if none.
  static constexpr std::size_t last_weighted = []<class... Q>(std::tuple<Q...>*) {
    constexpr bool w[] = {false, Q::weighted...};
    std::size_t last = plan::count;
    for (std::size_t g = 0; g < sizeof...(Q); ++g)
      if (w[g + 1]) last = g;
    return last;
  }(static_cast<layer_types*>(nullptr));
  static constexpr bool first_only_layers_first = []<class... Q>(std::tuple<Q...>*) {
    std::size_t g = 0;
    return ((g++ == 0 || !detail::first_layer_only<Q>) && ...);
  }(static_cast<layer_types*>(nullptr));
  static_assert(first_only_layers_first, "tessera::quant: an LSTM is converted as a model's first layer");

 public:
  /// Converts `model` (trained, float) after running it over `calibration` (images of the model's input shape).
  template <class P, class S, class PC>
  int8_sequential(nn::basic_sequential<float, P, In, Layers...>& model, const Tensor<float, S, PC>& calibration,
                  calibration_options opt = {})
      : int8_sequential(model, calibrate(model, calibration, opt)) {}

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
      using first = std::tuple_element_t<0, layer_types>;
      const bool bf = [] {
        if constexpr (requires { first::batch_first; }) return first::batch_first;
        else return false;
      }();
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
    std::apply([&](const auto&... layer) { (layer.run(a), ...); }, layers_);
    return std::move(a.logits);
  }

  qparams input_qparams() const { return input_qp_; }
  /// The int8 layers, one per group of float layers (layer_types).
  const layer_types& layers() const { return layers_; }
  template <std::size_t G>
  const auto& layer() const { return std::get<G>(layers_); }

  /// Converts `model` with quantization parameters measured elsewhere (quant/qat.hpp's observers): c.range, c.dims
  /// and c.per_channel as calibrate fills them.
  template <class M>
  int8_sequential(M& model, conversion c) : input_qp_(c.range[0]), layers_(convert(model, c, std::make_index_sequence<plan::count>{})) {}

 private:

  /// Runs the float model over the calibration images with an observer on every activation.
  template <class M, class S, class PC>
  static conversion calibrate(M& model, const Tensor<float, S, PC>& calibration, const calibration_options& opt) {
    using P = typename M::policy;
    static_assert(!P::on_device && !PC::on_device, "tessera::quant: calibrate and convert a model on the CPU");
    const index_t n = calibration.dims()[0];
    if (n == 0) throw std::invalid_argument("tessera::quant::quantize: no calibration images");
    std::vector<detail::any_observer> obs(L + 1, detail::any_observer{opt.observer, {}, {}});
    for (auto& o : obs) o.h.keep = opt.keep;
    conversion c;
    c.dims.resize(L + 1);  // each activation's dims (first batch)
    c.per_channel = opt.per_channel;
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
        if (b0 == 0) c.dims[0].assign(x.dims().begin(), x.dims().end());
        observe_from<0>(model, x, ctx, obs, c.dims, b0 == 0);
      }
    }
    if (was_training) model.train();
    for (const auto& o : obs) c.range.push_back(o.params(opt.reduce_range));
    return c;
  }

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

  /// The int8 layers, converted in order (a braced list runs its constructors left to right): each from the state
  /// of its group's first float layer.
  template <class M, std::size_t... G>
  static layer_types convert(M& model, conversion& c, std::index_sequence<G...>) {
    c.in = c.range[0];
    return layer_types{std::tuple_element_t<G, layer_types>(model.template layer<plan::starts[G]>(),
                                                            c.at(plan::starts[G], G == last_weighted))...};
  }

  qparams input_qp_;
  layer_types layers_;
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
