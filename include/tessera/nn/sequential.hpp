// Sequential<InputShape, Layers...>: a model as a flat list of layer types. The input shape flows through the
// layers at compile time; a layer that cannot take what the previous one produces stops the build with an error
// whose first line names its position, the layer and both shapes:
//   In instantiation of 'struct tessera::nn::error::layer_does_not_fit<7, tessera::nn::Linear<1024, 128>,
//   tessera::Shape<-1, 3136>, tessera::Shape<-1, 1024> >'    (position, layer, input it gets, input it expects)
// At run time the forward pass runs the layers group by group as nn/fusion.hpp groups them: a Conv2d or Linear
// with the activation that follows it is one kernel forward and one fused backward, a Conv2d, ReLU and
// MaxPool2d<2> one operation. Parameters are named as libtorch names them: "0.weight", "3.bias".
#pragma once
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "tessera/nn/fusion.hpp"
#include "tessera/nn/layers.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera::nn {

namespace error {
/// Instantiated for every layer; fails when the layer at `Position` does not accept `Input` (`Expected` is what it
/// would take).
template <int Position, class Layer, class Input, class Expected>
struct layer_does_not_fit {
  static constexpr bool ok = Layer::template accepts<Input>;
  static_assert(ok, "tessera::nn::Sequential: the layer at this position does not accept the shape the previous layer "
                    "produces (the instantiation above names the position, the layer, the shape it gets and the shape it expects)");
};
template <class Expected, class Got>
struct model_input_does_not_fit {
  static constexpr bool ok = shapes_compatible_v<Expected, Got>;
  static_assert(ok, "tessera::nn::Sequential: the input's static shape differs from the model's input shape");
};
}  // namespace error

namespace detail {
/// The shapes after each layer, checked one by one; after the first misfit no further layer is checked.
template <int Pos, class S, class... Ls>
struct propagate {
  using type = S;
  static constexpr bool ok = true;
};
template <int Pos, class S, class L, class... Rest>
struct propagate<Pos, S, L, Rest...> {
  static constexpr bool here = error::layer_does_not_fit<Pos, L, S, typename L::template expected<S>>::ok;
  template <bool Ok>
  struct next_of {
    using type = propagate<Pos + 1, S>;
  };
  template <bool Ok>
    requires Ok
  struct next_of<Ok> {
    using type = propagate<Pos + 1, typename L::template output<S>, Rest...>;
  };
  using next = typename next_of<here>::type;
  using type = typename next::type;
  static constexpr bool ok = here && next::ok;
};
}  // namespace detail

template <class T, class P, class In, class... Layers>
class basic_sequential {
  static_assert(sizeof...(Layers) > 0, "tessera::nn::Sequential needs at least one layer");
  using prop = detail::propagate<0, In, Layers...>;

 public:
  using value_type = T;
  using policy = P;
  using input_shape = In;
  using output_shape = typename prop::type;  ///< the model's output shape (the batch extent stays dynamic)
  static constexpr std::size_t num_layers = sizeof...(Layers);
  static constexpr bool shapes_fit = prop::ok;
  using input_var = ad::Var<T, In::rank, P>;
  using output_var = ad::Var<T, output_shape::rank, P>;

  /// Parameters initialised as PyTorch's defaults from `seed`.
  explicit basic_sequential(std::uint64_t seed = 0) : rng_(seed), layers_(make_layers(rng_, std::index_sequence_for<Layers...>{})) {}

  /// The forward pass on a Var (gradients flow into it if it requires them).
  output_var forward(const input_var& x) {
    check_input(x.dims());
    context ctx{training_, &rng_};
    return run<0>(x, ctx);
  }
  /// The forward pass on a tensor of the input shape (a host tensor of another CPU policy is copied over).
  template <class S, class P2>
  output_var forward(const Tensor<T, S, P2>& x) {
    (void)error::model_input_does_not_fit<In, S>::ok;
    if constexpr (std::is_same_v<P2, P>) return forward(input_var(x, false));
    else return forward(input_var(tessera::to<P>(x), false));
  }
  /// Inference: the forward pass with nothing recorded.
  template <class X>
  auto predict(const X& x) {
    ad::no_grad ng;
    return forward(x).value();
  }

  void train(bool on = true) { training_ = on; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }
  Rng& rng() { return rng_; }

  /// f(name, Var&) for every parameter, in layer order ("0.weight", "0.bias", "3.weight", ...).
  template <class F>
  void for_each_parameter(F&& f) {
    for_each_layer([&](auto& layer, std::size_t i) { layer.for_each_parameter(std::to_string(i) + ".", f); });
  }
  /// f(name, Tensor&) for every buffer (running statistics).
  template <class F>
  void for_each_buffer(F&& f) {
    for_each_layer([&](auto& layer, std::size_t i) { layer.for_each_buffer(std::to_string(i) + ".", f); });
  }
  /// Handles on every parameter, for optimizers and initialisers.
  std::vector<parameter_ref<T>> parameters() {
    std::vector<parameter_ref<T>> out;
    for_each_parameter([&](const std::string& name, auto& v) { out.push_back(make_parameter_ref(name, v)); });
    return out;
  }
  index_t num_parameters() {
    index_t n = 0;
    for_each_parameter([&](const std::string&, auto& v) { n += v.size(); });
    return n;
  }
  void zero_grad() {
    for_each_parameter([](const std::string&, auto& v) { v.zero_grad(); });
  }
  template <std::size_t I>
  auto& layer() { return std::get<I>(layers_); }

 private:
  template <std::size_t I>
  using layer_t = std::tuple_element_t<I, std::tuple<Layers...>>;

  template <std::size_t... I>
  static auto make_layers(Rng& rng, std::index_sequence<I...>) {
    // braced initialisation: layers are initialised in order, so the random draws are too
    return std::tuple<typename Layers::template state<T, P>...>{typename Layers::template state<T, P>(rng)...};
  }

  using plan = fusion_plan<Layers...>;

  /// Runs group G of the fusion plan and the groups after it.
  template <std::size_t G, class X>
  auto run(const X& x, context& ctx) {
    if constexpr (G == plan::count) {
      return x;
    } else {
      constexpr std::size_t I = plan::template first<G>;
      using group = typename plan::template group<G>;
      auto& head = std::get<I>(layers_);
      if constexpr (group::has_max_pool2 && group::activation == ad::activation::relu) {  // one operation
        auto y = in_layer<I, 3>([&] { return head.forward_relu_maxpool2(x, ctx); });
        return run<G + 1>(y, ctx);
      } else {
        constexpr std::size_t N = group::has_activation ? 2 : 1;  // the head and its epilogue
        auto y = in_layer<I, N>([&] {
          if constexpr (group::has_activation) return head.forward(x, ctx, group::activation);
          else return head.forward(x, ctx);
        });
        if constexpr (group::has_max_pool2) {  // no single float operation for this group: the pool runs after it
          auto z = in_layer<I + N, 1>([&] { return std::get<I + N>(layers_).forward(y, ctx); });
          return run<G + 1>(z, ctx);
        } else {
          return run<G + 1>(y, ctx);
        }
      }
    }
  }

  /// f() run as layers I .. I + N - 1; in anomaly mode (ad::set_detect_anomaly) its messages name them.
  template <std::size_t I, std::size_t N, class F>
  static auto in_layer(F&& f) {
    if (!ad::detect_anomaly_enabled()) return f();
    std::string label = N == 1 ? "layer " + std::to_string(I) + " (" : "layers " + std::to_string(I) + "-" + std::to_string(I + N - 1) + " (";
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      ((label += (K ? ", " : "") + ad::detail::op_name_from_type(typeid(layer_t<I + K>))), ...);
    }(std::make_index_sequence<N>{});
    ad::anomaly_layer_scope scope(label + ")");
    return f();
  }

  template <class F>
  void for_each_layer(F&& f) {
    std::apply([&](auto&... l) {
      std::size_t i = 0;
      (f(l, i++), ...);
    }, layers_);
  }

  void check_input(const dims_t<In::rank>& d) const {
    for (int i = 0; i < In::rank; ++i)
      if (In::extents[std::size_t(i)] != dyn && d[i] != In::extents[std::size_t(i)])
        throw shape_error("tessera::nn::Sequential: the input " + tessera::detail::format_dims(d) +
                          " does not fit the model's input shape " + tessera::detail::format_dims(In::extents));
  }

  bool training_ = true;
  Rng rng_;
  std::tuple<typename Layers::template state<T, P>...> layers_;
};

/// A model of float parameters under the threaded CPU policy; Sequential<...>::on<P, T> is the same model for
/// another policy or element type.
template <class In, class... Layers>
class Sequential : public basic_sequential<float, cpu_threads, In, Layers...> {
 public:
  using basic_sequential<float, cpu_threads, In, Layers...>::basic_sequential;
  template <class P, class T = float>
  using on = basic_sequential<T, P, In, Layers...>;
};

}  // namespace tessera::nn
