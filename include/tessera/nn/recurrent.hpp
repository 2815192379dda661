// Recurrent layers as types (see nn/layers.hpp for the layer protocol):
//   LSTM<In, Hidden, lstm_options{.num_layers, .dropout, .batch_first}>   [N, T, In] -> [N, T, Hidden] (batch_first;
//       [T, N, In] -> [T, N, Hidden] otherwise), PyTorch's nn.LSTM: initialisation U(-1/sqrt(H), 1/sqrt(H)),
//       parameters weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_ih_l1, ... (zero initial state).
//   LastStep   [N, T, H] -> [N, H]: the last time step (an LSTM followed by a classifier).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "tessera/autodiff/rnn_ops.hpp"
#include "tessera/nn/layers.hpp"
#include "tessera/nn/sequential.hpp"

namespace tessera::nn {

template <int In, int Hidden, lstm_options O = lstm_options{}>
struct LSTM {
  static_assert(In > 0 && Hidden > 0, "tessera::nn::LSTM: the input and hidden sizes must be positive");
  static_assert(O.num_layers >= 1, "tessera::nn::LSTM: at least one layer");
  static_assert(O.dropout >= 0.0 && O.dropout < 1.0, "tessera::nn::LSTM: dropout must be in [0, 1)");
  template <class S>
  static constexpr bool accepts = S::rank == 3 && detail::fits(detail::ext<S>(2), In);
  template <class S>
  using expected = Shape<detail::ext<S>(0), detail::ext<S>(1), In>;
  template <class S>
  using output = Shape<S::extents[0], S::extents[1], Hidden>;

  template <class T, class P>
  struct state {
    std::vector<ad::lstm_layer_params<T, P>> layers;
    explicit state(Rng& rng) {
      const double bound = 1.0 / std::sqrt(double(Hidden));
      for (int l = 0; l < O.num_layers; ++l) {
        const index_t in = l == 0 ? In : Hidden;
        ad::lstm_layer_params<T, P> p;
        p.weight_ih = detail::uniform_parameter<T, 2, P>({4 * Hidden, in}, bound, rng);
        p.weight_hh = detail::uniform_parameter<T, 2, P>({4 * Hidden, Hidden}, bound, rng);
        p.bias_ih = detail::uniform_parameter<T, 1, P>({4 * Hidden}, bound, rng);
        p.bias_hh = detail::uniform_parameter<T, 1, P>({4 * Hidden}, bound, rng);
        layers.push_back(std::move(p));
      }
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      for (std::size_t l = 0; l < layers.size(); ++l) {
        const std::string s = "_l" + std::to_string(l);
        f(prefix + "weight_ih" + s, layers[l].weight_ih);
        f(prefix + "weight_hh" + s, layers[l].weight_hh);
        f(prefix + "bias_ih" + s, layers[l].bias_ih);
        f(prefix + "bias_hh" + s, layers[l].bias_hh);
      }
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context& ctx) const {
      return ad::lstm(x, layers, O, {}, {}, ctx.rng, ctx.training).output;
    }
  };
};

/// [N, T, H] -> [N, H]: the last time step of a batch-first sequence.
struct LastStep {
  template <class S>
  static constexpr bool accepts = S::rank == 3;
  template <class S>
  using expected = Shape<detail::ext<S>(0), dyn, dyn>;
  template <class S>
  using output = Shape<S::extents[0], S::extents[2]>;
  template <class T, class P>
  struct state : detail::no_parameters {
    using detail::no_parameters::no_parameters;
    ad::Var<T, 2, P> forward(const ad::Var<T, 3, P>& x, context&) const { return ad::select_last_step(x); }
  };
};

}  // namespace tessera::nn
