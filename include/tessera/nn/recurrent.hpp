// Recurrent layers as types (see nn/layers.hpp for the layer protocol):
//   LSTM<In, Hidden, lstm_options{.num_layers, .dropout, .batch_first}>   [N, T, In] -> [N, T, Hidden] (batch_first;
//       [T, N, In] -> [T, N, Hidden] otherwise), PyTorch's nn.LSTM: initialisation U(-1/sqrt(H), 1/sqrt(H)),
//       parameters weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_ih_l1, ... (zero initial state).
//   LastStep   [N, T, H] -> [N, H]: the last time step (an LSTM followed by a classifier).
//   RNNCell<In, Hidden, rnn_cell_options{.nonlinearity, .bias}>, LSTMCell<In, Hidden, Bias>, GRUCell<In, Hidden, Bias>
//       one time step, libtorch's cells: parameters weight_ih [G*H, In], weight_hh [G*H, H], bias_ih, bias_hh [G*H]
//       (G = 1, 4, 3), initialised U(-1/sqrt(H), 1/sqrt(H)) in that order. In a Sequential a cell maps [N, In] to
//       [N, Hidden] from the zero state; stepping by hand, the layer state's forward(x, h) (LSTMCell: forward(x, {h, c}),
//       returning {h', c'}) takes the previous state, an empty Var (or {}) meaning zeros. Host policies only.
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

/// Options of nn::RNNCell (libtorch's RNNCellOptions).
struct rnn_cell_options {
  ad::rnn_nonlinearity nonlinearity = ad::rnn_nonlinearity::tanh;
  bool bias = true;
};

namespace detail {
/// The layer protocol of a cell: [N, In] -> [N, Hidden].
template <int In, int Hidden>
struct cell_shapes {
  static_assert(In > 0 && Hidden > 0, "tessera::nn: a cell's input and hidden sizes must be positive");
  template <class S>
  static constexpr bool accepts = S::rank == 2 && detail::fits(detail::ext<S>(1), In);
  template <class S>
  using expected = Shape<detail::ext<S>(0), In>;
  template <class S>
  using output = Shape<S::extents[0], Hidden>;
};

/// A cell's parameters for `Gates` gates, named and initialised as libtorch's (weight_ih, weight_hh, bias_ih,
/// bias_hh; U(-1/sqrt(Hidden), 1/sqrt(Hidden)) in that order).
template <class T, class P, int In, int Hidden, int Gates, bool Bias>
struct cell_parameters {
  ad::Var<T, 2, P> weight_ih;  ///< [Gates * Hidden, In]
  ad::Var<T, 2, P> weight_hh;  ///< [Gates * Hidden, Hidden]
  ad::Var<T, 1, P> bias_ih;    ///< [Gates * Hidden] (empty without bias)
  ad::Var<T, 1, P> bias_hh;    ///< [Gates * Hidden] (empty without bias)
  explicit cell_parameters(Rng& rng) {
    const double bound = 1.0 / std::sqrt(double(Hidden));
    weight_ih = detail::uniform_parameter<T, 2, P>({Gates * Hidden, In}, bound, rng);
    weight_hh = detail::uniform_parameter<T, 2, P>({Gates * Hidden, Hidden}, bound, rng);
    if constexpr (Bias) {
      bias_ih = detail::uniform_parameter<T, 1, P>({Gates * Hidden}, bound, rng);
      bias_hh = detail::uniform_parameter<T, 1, P>({Gates * Hidden}, bound, rng);
    }
  }
  template <class F>
  void for_each_parameter(const std::string& prefix, F&& f) {
    f(prefix + "weight_ih", weight_ih);
    f(prefix + "weight_hh", weight_hh);
    if constexpr (Bias) {
      f(prefix + "bias_ih", bias_ih);
      f(prefix + "bias_hh", bias_hh);
    }
  }
  template <class F>
  void for_each_buffer(const std::string&, F&&) {}
};
}  // namespace detail

/// h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (relu with {.nonlinearity = ad::rnn_nonlinearity::relu}).
template <int In, int Hidden, rnn_cell_options O = rnn_cell_options{}>
struct RNNCell : detail::cell_shapes<In, Hidden> {
  template <class T, class P>
  struct state : detail::cell_parameters<T, P, In, Hidden, 1, O.bias> {
    using detail::cell_parameters<T, P, In, Hidden, 1, O.bias>::cell_parameters;
    /// One step from h [N, Hidden] (an empty Var: zeros).
    ad::Var<T, 2, P> forward(const ad::Var<T, 2, P>& x, const ad::Var<T, 2, P>& h = {}) const {
      return ad::rnn_cell(x, h, this->weight_ih, this->weight_hh, this->bias_ih, this->bias_hh, O.nonlinearity);
    }
    /// In a Sequential: one step from the zero state.
    ad::Var<T, 2, P> forward(const ad::Var<T, 2, P>& x, context&) const { return forward(x); }
  };
};

/// libtorch's LSTMCell: gates i, f, g, o; returns {h', c'} from {h, c}.
template <int In, int Hidden, bool Bias = true>
struct LSTMCell : detail::cell_shapes<In, Hidden> {
  template <class T, class P>
  struct state : detail::cell_parameters<T, P, In, Hidden, 4, Bias> {
    using detail::cell_parameters<T, P, In, Hidden, 4, Bias>::cell_parameters;
    /// One step from {h, c} (each [N, Hidden]; empty Vars: zeros); returns {h', c'}.
    ad::lstm_cell_state<T, P> forward(const ad::Var<T, 2, P>& x, const ad::lstm_cell_state<T, P>& s = {}) const {
      return ad::lstm_cell(x, s.h, s.c, this->weight_ih, this->weight_hh, this->bias_ih, this->bias_hh);
    }
    /// In a Sequential: h' of one step from the zero state.
    ad::Var<T, 2, P> forward(const ad::Var<T, 2, P>& x, context&) const { return forward(x).h; }
  };
};

/// libtorch's GRUCell: gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h.
template <int In, int Hidden, bool Bias = true>
struct GRUCell : detail::cell_shapes<In, Hidden> {
  template <class T, class P>
  struct state : detail::cell_parameters<T, P, In, Hidden, 3, Bias> {
    using detail::cell_parameters<T, P, In, Hidden, 3, Bias>::cell_parameters;
    /// One step from h [N, Hidden] (an empty Var: zeros).
    ad::Var<T, 2, P> forward(const ad::Var<T, 2, P>& x, const ad::Var<T, 2, P>& h = {}) const {
      return ad::gru_cell(x, h, this->weight_ih, this->weight_hh, this->bias_ih, this->bias_hh);
    }
    /// In a Sequential: one step from the zero state.
    ad::Var<T, 2, P> forward(const ad::Var<T, 2, P>& x, context&) const { return forward(x); }
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
