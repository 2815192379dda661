// A chain of layer types run one after the other: what nn::Sequential (nn/sequential.hpp) and the compositions of
// nn/composition.hpp (Seq, the branches of Residual) are made of.
//   propagate<Pos, S, Layers...>   the shape after each layer, checked at compile time one by one: a layer that does
//                                  not accept what the previous one produces instantiates
//                                  error::layer_does_not_fit<Position, Layer, Input, Expected>, whose static_assert
//                                  stops the build and whose name is the first line of the error
//   layer_chain<T, P, Layers...>   the layers' states (parameters initialised in order from one Rng) and the forward
//                                  pass, run group by group as nn/fusion.hpp groups the layers: a Conv2d or Linear with
//                                  the activation after it is one kernel forward and one fused backward, a Conv2d,
//                                  ReLU and MaxPool2d<2> one operation. Parameters are named "<position>.<name>" under
//                                  a prefix ("0.weight", "3.main.1.bias").
#pragma once
#include <cstddef>
#include <string>
#include <tuple>
#include <typeinfo>
#include <utility>

#include "tessera/autodiff/anomaly.hpp"
#include "tessera/nn/fusion.hpp"
#include "tessera/nn/layers.hpp"

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

/// Does layer type L take integer indices rather than a float Var (nn::Embedding)?
template <class L>
inline constexpr bool takes_indices = requires { requires bool(L::takes_indices); };

/// The states of Layers... for element type T and policy P, and their forward pass group by group.
template <class T, class P, class... Layers>
class layer_chain {
  static_assert(sizeof...(Layers) > 0, "tessera::nn: a chain of layers needs at least one layer");

 public:
  static constexpr std::size_t num_layers = sizeof...(Layers);
  template <std::size_t I>
  using layer_t = std::tuple_element_t<I, std::tuple<Layers...>>;

  /// Parameters drawn in layer order from rng.
  explicit layer_chain(Rng& rng) : layers_(make_layers(rng, std::index_sequence_for<Layers...>{})) {}

  /// The forward pass of every layer, group by group.
  template <class X>
  auto forward(const X& x, context& ctx) {
    return run<0>(x, ctx);
  }

  /// f(name, Var&) for every parameter, named prefix + "<position>." + the layer's name for it.
  template <class F>
  void for_each_parameter(const std::string& prefix, F&& f) {
    for_each_layer([&](auto& layer, std::size_t i) { layer.for_each_parameter(prefix + std::to_string(i) + ".", f); });
  }
  /// f(name, Tensor&) for every buffer (running statistics), named as the parameters.
  template <class F>
  void for_each_buffer(const std::string& prefix, F&& f) {
    for_each_layer([&](auto& layer, std::size_t i) { layer.for_each_buffer(prefix + std::to_string(i) + ".", f); });
  }
  template <std::size_t I>
  auto& layer() { return std::get<I>(layers_); }
  template <std::size_t I>
  const auto& layer() const { return std::get<I>(layers_); }

 private:
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
          if constexpr (group::has_activation) return head.forward(x, ctx, ad::activation_c<group::activation>{});
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

  std::tuple<typename Layers::template state<T, P>...> layers_;
};
}  // namespace detail

}  // namespace tessera::nn
