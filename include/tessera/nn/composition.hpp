// Layers made of layers, usable wherever a layer is (in a Sequential, in each other):
//   Identity                         passes its input through (any shape), no parameters
//   Seq<Layers...>                   the layers one after the other (as torch.nn.Sequential inside a model):
//                                    parameters "<position>.<name>" under the Seq's own prefix
//   Residual<Main, Shortcut, Post>   y = post(main(x) + shortcut(x)); Shortcut defaults to Identity, Post to ReLU.
//                                    Parameters "main.*", "shortcut.*", "post.*" under its prefix, so in a model
//                                    "3.main.0.weight", "3.shortcut.0.weight" (a branch that is a single layer
//                                    rather than a Seq: "3.shortcut.weight"), as PyTorch prints a module with the
//                                    submodules main, shortcut and post.
// Shapes are checked at compile time by the chain machinery of nn/chain.hpp (a misfit inside a branch names its
// position in the branch, the layer and both shapes: error::layer_does_not_fit); branches whose outputs differ
// stop the build at error::residual_branches_differ<MainOutput, ShortcutOutput>. Each branch runs its layers
// group by group as nn/fusion.hpp groups them (Conv2d with the ReLU after it fused, and so on).
//   using Block = nn::Residual<nn::Seq<nn::Conv2d<16, 16, 3, {.padding = 1}>, nn::BatchNorm2d<16>, nn::ReLU,
//                                      nn::Conv2d<16, 16, 3, {.padding = 1}>, nn::BatchNorm2d<16>>>;
#pragma once
#include <string>
#include <tuple>
#include <type_traits>

#include "tessera/nn/chain.hpp"
#include "tessera/nn/layers.hpp"

namespace tessera::nn {

/// Passes its input through unchanged (any shape): a Residual's default shortcut, or a placeholder.
struct Identity {
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
    ad::Var<T, R, P> forward(const ad::Var<T, R, P>& x, context&) const {
      return x;
    }
  };
};

/// Layers run one after the other, as one layer.
template <class... Layers>
struct Seq {
  static_assert(sizeof...(Layers) > 0, "tessera::nn::Seq needs at least one layer");
  template <class S>
  static constexpr bool accepts = detail::propagate<0, S, Layers...>::ok;
  template <class S>
  using expected = typename std::tuple_element_t<0, std::tuple<Layers...>>::template expected<S>;
  template <class S>
  using output = typename detail::propagate<0, S, Layers...>::type;
  template <class T, class P>
  struct state : detail::layer_chain<T, P, Layers...> {
    using detail::layer_chain<T, P, Layers...>::layer_chain;
  };
};

namespace error {
/// Instantiated for every Residual; fails when its branches' outputs differ (both named, main first).
template <class MainOutput, class ShortcutOutput>
struct residual_branches_differ {
  static constexpr bool ok = shapes_compatible_v<MainOutput, ShortcutOutput>;
  static_assert(ok, "tessera::nn::Residual: the main branch and the shortcut produce different shapes, so they cannot "
                    "be added (the instantiation above names the main branch's output shape, then the shortcut's)");
};
/// Instantiated when the layer after the sum (Post) does not take it.
template <class Post, class Sum>
struct residual_post_does_not_fit {
  static constexpr bool ok = Post::template accepts<Sum>;
  static_assert(ok, "tessera::nn::Residual: the layer after the sum does not accept the sum's shape");
};
}  // namespace error

namespace detail {
/// A branch as a chain of layers for the shape checks: a Seq's layers, else the single layer.
template <class L>
struct as_seq {
  using type = Seq<L>;
};
template <class... Ls>
struct as_seq<Seq<Ls...>> {
  using type = Seq<Ls...>;
};

/// The shape checks of Residual<Main, Shortcut, Post> on input S, each branch through the chain machinery; the
/// first misfit stops the checks after it.
template <class Main, class Shortcut, class Post, class S>
constexpr bool residual_fits() {
  using M = typename as_seq<Main>::type;
  using C = typename as_seq<Shortcut>::type;
  if constexpr (!M::template accepts<S> || !C::template accepts<S>) {
    return false;
  } else {
    using MO = typename M::template output<S>;
    using CO = typename C::template output<S>;
    if constexpr (!error::residual_branches_differ<MO, CO>::ok) return false;
    else return error::residual_post_does_not_fit<Post, MO>::ok;
  }
}
}  // namespace detail

/// y = post(main(x) + shortcut(x)): a residual block. Main and Shortcut are layers (a Seq<...> for several).
template <class Main, class Shortcut = Identity, class Post = ReLU>
struct Residual {
  template <class S>
  static constexpr bool accepts = detail::residual_fits<Main, Shortcut, Post, S>();
  template <class S>
  using expected = typename Main::template expected<S>;
  template <class S>
  using output = typename Post::template output<typename detail::as_seq<Main>::type::template output<S>>;

  template <class T, class P>
  struct state {
    typename Main::template state<T, P> main;
    typename Shortcut::template state<T, P> shortcut;
    typename Post::template state<T, P> post;
    /// The main branch's parameters are drawn first, then the shortcut's.
    explicit state(Rng& rng) : main(rng), shortcut(rng), post(rng) {}

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      main.for_each_parameter(prefix + "main.", f);
      shortcut.for_each_parameter(prefix + "shortcut.", f);
      post.for_each_parameter(prefix + "post.", f);
    }
    template <class F>
    void for_each_buffer(const std::string& prefix, F&& f) {
      main.for_each_buffer(prefix + "main.", f);
      shortcut.for_each_buffer(prefix + "shortcut.", f);
      post.for_each_buffer(prefix + "post.", f);
    }
    template <int R>
    ad::Var<T, R, P> forward(const ad::Var<T, R, P>& x, context& ctx) {
      const auto m = main.forward(x, ctx);
      const auto s = shortcut.forward(x, ctx);
      static_assert(std::remove_cvref_t<decltype(m)>::rank == R && std::remove_cvref_t<decltype(s)>::rank == R,
                    "tessera::nn::Residual: both branches must keep the input's rank");
      if (m.dims() != s.dims())  // dynamic extents the compile-time check could not see
        throw shape_error("tessera::nn::Residual: the main branch's output " + tessera::detail::format_dims(m.dims()) +
                          " and the shortcut's " + tessera::detail::format_dims(s.dims()) + " differ");
      if constexpr (is_fusable_activation<Post>) {  // the sum and the activation as one fused node (autodiff/fused.hpp)
        constexpr ad::activation a = Post::fused_activation;
        if constexpr (a == ad::activation::relu) return ad::relu(m + s);
        else if constexpr (a == ad::activation::tanh) return ad::tanh(m + s);
        else if constexpr (a == ad::activation::sigmoid) return ad::sigmoid(m + s);
        else return m + s;
      } else {
        return post.forward(ad::Var<T, R, P>(m + s), ctx);
      }
    }
  };
};

}  // namespace tessera::nn
