// The fusion rule table: which consecutive layers of a model run as one group. nn::Sequential runs each group with
// one operation where the float layers have one (nn/sequential.hpp), and the int8 conversion makes one int8 layer
// of each group (quant/model.hpp, quant/layers.hpp); neither keeps rules of its own. The rules read what the layer
// types declare (nn/layers.hpp):
//   fuses_activation  Conv2d, Linear        runs the activation that follows it as its epilogue
//   fused_activation  ReLU, Tanh, Sigmoid   the activation such a layer runs for it
//   fuses_max_pool2   Conv2d                takes a 2x2 max-pool that follows it (after its activation, if any)
//   max_pool2         MaxPool2d<2>          is a 2x2 max-pool, stride 2, no padding
// A group is a layer declaring fuses_activation, then its activation if one follows, then a 2x2 max-pool if the
// layer takes one and one follows; every other layer is a group of its own:
//   Conv2d, ReLU, MaxPool2d<2>, Flatten, Linear, ReLU, Linear  ->  {Conv2d, ReLU, MaxPool2d<2>} {Flatten}
//                                                                  {Linear, ReLU} {Linear}
#pragma once
#include <array>
#include <cstddef>
#include <tuple>
#include <utility>

#include "tessera/nn/layers.hpp"

namespace tessera::nn {

namespace fusion {
/// What a layer type declares, read by the rules.
template <class L>
inline constexpr bool runs_activation = requires { requires bool(L::fuses_activation); };
template <class L>
inline constexpr bool is_activation = requires { L::fused_activation; };
template <class L>
inline constexpr bool takes_max_pool2 = requires { requires bool(L::fuses_max_pool2); };
template <class L>
inline constexpr bool is_max_pool2 = requires { requires bool(L::max_pool2); };

/// Past the model's last layer.
struct end_of_model {};

/// The rule: how many layers the group starting at L0 covers, L1 and L2 being the layers after it (end_of_model
/// past the end).
template <class L0, class L1, class L2>
constexpr std::size_t group_length() {
  if constexpr (!runs_activation<L0>) {
    return 1;
  } else {
    constexpr std::size_t act = is_activation<L1> ? 1 : 0;
    using After = std::tuple_element_t<act, std::tuple<L1, L2>>;
    return 1 + act + (takes_max_pool2<L0> && is_max_pool2<After> ? 1 : 0);
  }
}
}  // namespace fusion

/// A group of consecutive layer types that runs as one (see group_length for which).
template <class Head, class... Rest>
struct fused {
  using head = Head;  ///< the layer whose state does the work (Conv2d, Linear) or the only layer
  using layers = std::tuple<Head, Rest...>;
  static constexpr std::size_t size = 1 + sizeof...(Rest);
  static constexpr bool has_activation = [] {
    if constexpr (size > 1) return fusion::is_activation<std::tuple_element_t<1, layers>>;
    else return false;
  }();
  /// The activation the head runs as its epilogue (none without one).
  static constexpr ad::activation activation = [] {
    if constexpr (has_activation) return std::tuple_element_t<1, layers>::fused_activation;
    else return ad::activation::none;
  }();
  /// Does the group end with a 2x2 max-pool taken by the head?
  static constexpr bool has_max_pool2 = size > 1 && fusion::is_max_pool2<std::tuple_element_t<size - 1, layers>>;
};

/// The groups of a model's layer list, in order: group<G> is the G-th, starting at layer first<G>.
template <class... Ls>
struct fusion_plan {
  static constexpr std::size_t num_layers = sizeof...(Ls);

 private:
  using padded = std::tuple<Ls..., fusion::end_of_model, fusion::end_of_model>;
  template <std::size_t I>
  using at = std::tuple_element_t<I, padded>;
  static constexpr std::array<std::size_t, num_layers> lengths = []<std::size_t... I>(std::index_sequence<I...>) {
    return std::array<std::size_t, num_layers>{fusion::group_length<at<I>, at<I + 1>, at<I + 2>>()...};
  }(std::make_index_sequence<num_layers>{});

 public:
  /// The number of groups.
  static constexpr std::size_t count = [] {
    std::size_t n = 0;
    for (std::size_t i = 0; i < num_layers; i += lengths[i]) ++n;
    return n;
  }();
  /// starts[G]: the position of group G's first layer; starts[count] is the number of layers.
  static constexpr std::array<std::size_t, count + 1> starts = [] {
    std::array<std::size_t, count + 1> s{};
    std::size_t g = 0;
    for (std::size_t i = 0; i < num_layers; i += lengths[i]) s[g++] = i;
    s[count] = num_layers;
    return s;
  }();
  template <std::size_t G>
  static constexpr std::size_t first = starts[G];

  // (declarations only, for the aliases below; public because clang checks an alias template's access where it is used)
  template <std::size_t G, std::size_t... K>
  static fused<at<starts[G] + K>...> group_of(std::index_sequence<K...>);
  template <std::size_t... G>
  static std::tuple<decltype(group_of<G>(std::make_index_sequence<starts[G + 1] - starts[G]>{}))...> groups_of(
      std::index_sequence<G...>);

  template <std::size_t G>
  using group = decltype(group_of<G>(std::make_index_sequence<starts[G + 1] - starts[G]>{}));
  /// std::tuple of every group type.
  using groups = decltype(groups_of(std::make_index_sequence<count>{}));
};

}  // namespace tessera::nn
