// Recurrent layers as types (see nn/layers.hpp for the layer protocol), libtorch's nn::LSTM / nn::GRU / nn::RNN:
//   LSTM<In, Hidden, lstm_options{.num_layers = 1, .dropout = 0.0, .batch_first = true, .bidirectional = false}>
//   GRU<In, Hidden, gru_options{.num_layers = 1, .bias = true, .batch_first = false, .dropout = 0.0, .bidirectional = false}>
//   RNN<In, Hidden, rnn_options{.num_layers = 1, .nonlinearity = tanh, .bias = true, .batch_first = false, .dropout = 0.0,
//       .bidirectional = false}>
//       [N, T, In] -> [N, T, D*Hidden] (batch_first; [T, N, In] -> [T, N, D*Hidden] otherwise; D = 2 when
//       bidirectional: the forward direction's features first, then the reverse one's), from zeros or given initial
//       states, dropout
//       between layers in training. Parameters weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and the
//       same with _reverse after each layer's forward ones), initialised U(-1/sqrt(H), 1/sqrt(H)) in that order.
//       state.forward_with_state(x, ctx, h0 = {}) (LSTM: (x, ctx, h0 = {}, c0 = {})) returns {output, h_n, c_n (LSTM)},
//       the final states [num_layers * D, N, H], from the initial states h0 (and c0) of that shape (PyTorch's
//       forward(input, h0) / forward(input, (h0, c0)); empty Vars: zeros), gradients flowing into them.
//   LastStep   [N, T, F] -> [N, F]: the last time step of a batch-first sequence (PyTorch's out[:, -1]; on a
//       bidirectional output that is the forward direction's last state and the reverse direction's first output).
//   RNNCell<In, Hidden, rnn_cell_options{.nonlinearity, .bias}>, LSTMCell<In, Hidden, Bias>, GRUCell<In, Hidden, Bias>
//       one time step, libtorch's cells: parameters weight_ih [G*H, In], weight_hh [G*H, H], bias_ih, bias_hh [G*H]
//       (G = 1, 4, 3), initialised U(-1/sqrt(H), 1/sqrt(H)) in that order. In a Sequential a cell maps [N, In] to
//       [N, Hidden] from the zero state; stepping by hand, the layer state's forward(x, h) (LSTMCell: forward(x, {h, c}),
//       returning {h', c'}) takes the previous state, an empty Var (or {}) meaning zeros. Host policies only.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "tessera/autodiff/recurrence_ops.hpp"
#include "tessera/autodiff/rnn_ops.hpp"
#include "tessera/nn/layers.hpp"
#include "tessera/nn/sequential.hpp"

namespace tessera::nn {

namespace detail {
/// The shapes and parameters of a sequence layer: [N, T, In] -> [N, T, D*Hidden] (either axis order: the first two
/// extents pass through), layers x directions of parameters named and initialised as libtorch's.
template <int In, int Hidden, int Layers, bool Bidirectional, int Gates, bool Bias>
struct sequence_layer {
  static constexpr int D = Bidirectional ? 2 : 1;
  template <class S>
  static constexpr bool accepts = S::rank == 3 && detail::fits(detail::ext<S>(2), In);
  template <class S>
  using expected = Shape<detail::ext<S>(0), detail::ext<S>(1), In>;
  template <class S>
  using output = Shape<S::extents[0], S::extents[1], D * Hidden>;

  template <class T, class P>
  struct parameters {
    /// layers[l * D + d]: layer l, direction d (1: reverse); biases empty without Bias.
    std::vector<ad::recurrence_params<T, P>> layers;
    explicit parameters(Rng& rng) {
      const double bound = 1.0 / std::sqrt(double(Hidden));
      for (int l = 0; l < Layers; ++l)
        for (int d = 0; d < D; ++d) {
          const index_t in = l == 0 ? In : D * Hidden;
          ad::recurrence_params<T, P> p;
          p.weight_ih = detail::uniform_parameter<T, 2, P>({Gates * Hidden, in}, bound, rng);
          p.weight_hh = detail::uniform_parameter<T, 2, P>({Gates * Hidden, Hidden}, bound, rng);
          if constexpr (Bias) {
            p.bias_ih = detail::uniform_parameter<T, 1, P>({Gates * Hidden}, bound, rng);
            p.bias_hh = detail::uniform_parameter<T, 1, P>({Gates * Hidden}, bound, rng);
          }
          layers.push_back(std::move(p));
        }
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      for (std::size_t k = 0; k < layers.size(); ++k) {
        const std::string s = "_l" + std::to_string(k / D) + (k % D ? "_reverse" : "");
        f(prefix + "weight_ih" + s, layers[k].weight_ih);
        f(prefix + "weight_hh" + s, layers[k].weight_hh);
        if constexpr (Bias) {
          f(prefix + "bias_ih" + s, layers[k].bias_ih);
          f(prefix + "bias_hh" + s, layers[k].bias_hh);
        }
      }
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}
  };
};
}  // namespace detail

template <int In, int Hidden, lstm_options O = lstm_options{}>
struct LSTM : detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 4, true> {
  static_assert(In > 0 && Hidden > 0, "tessera::nn::LSTM: the input and hidden sizes must be positive");
  static_assert(O.num_layers >= 1, "tessera::nn::LSTM: at least one layer");
  static_assert(O.dropout >= 0.0 && O.dropout < 1.0, "tessera::nn::LSTM: dropout must be in [0, 1)");

  template <class T, class P>
  struct state : detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 4, true>::template parameters<T, P> {
    using detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 4, true>::template parameters<T, P>::parameters;
    /// The output sequence, the final hidden states h_n and cell states c_n [num_layers * D, N, Hidden], from the
    /// initial states h0, c0 of that shape (empty: zeros).
    ad::recurrence_result<T, P> forward_with_state(const ad::Var<T, 3, P>& x, context& ctx, const ad::Var<T, 3, P>& h0 = {},
                                                   const ad::Var<T, 3, P>& c0 = {}) const {
      if constexpr (O.bidirectional) {
        return ad::recurrence(x, this->layers, ad::recurrence_kind::lstm, {O.num_layers, O.batch_first, O.dropout, true}, h0, c0,
                              ctx.rng, ctx.training);
      } else {
        auto r = ad::lstm(x, this->layers, O, h0, c0, ctx.rng, ctx.training);
        return {r.output, r.h_n, r.c_n};
      }
    }
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context& ctx) const { return forward_with_state(x, ctx).output; }
  };
};

/// libtorch's nn::GRU: gates r, z, n per layer and direction (n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
/// h' = (1 - z) n + z h), from h0 (zeros by default).
template <int In, int Hidden, gru_options O = gru_options{}>
struct GRU : detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 3, O.bias> {
  static_assert(In > 0 && Hidden > 0, "tessera::nn::GRU: the input and hidden sizes must be positive");
  static_assert(O.num_layers >= 1, "tessera::nn::GRU: at least one layer");
  static_assert(O.dropout >= 0.0 && O.dropout < 1.0, "tessera::nn::GRU: dropout must be in [0, 1)");

  template <class T, class P>
  struct state : detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 3, O.bias>::template parameters<T, P> {
    using detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 3, O.bias>::template parameters<T, P>::parameters;
    /// The output sequence and the final hidden states h_n [num_layers * D, N, Hidden], from the initial state h0 of
    /// that shape (empty: zeros).
    ad::recurrence_result<T, P> forward_with_state(const ad::Var<T, 3, P>& x, context& ctx, const ad::Var<T, 3, P>& h0 = {}) const {
      return ad::recurrence(x, this->layers, ad::recurrence_kind::gru, {O.num_layers, O.batch_first, O.dropout, O.bidirectional},
                            h0, {}, ctx.rng, ctx.training);
    }
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context& ctx) const { return forward_with_state(x, ctx).output; }
  };
};

/// libtorch's nn::RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (relu with .nonlinearity = ad::rnn_nonlinearity::relu)
/// per layer and direction, from h0 (zeros by default).
template <int In, int Hidden, rnn_options O = rnn_options{}>
struct RNN : detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 1, O.bias> {
  static_assert(In > 0 && Hidden > 0, "tessera::nn::RNN: the input and hidden sizes must be positive");
  static_assert(O.num_layers >= 1, "tessera::nn::RNN: at least one layer");
  static_assert(O.dropout >= 0.0 && O.dropout < 1.0, "tessera::nn::RNN: dropout must be in [0, 1)");
  static_assert(O.nonlinearity == ad::rnn_nonlinearity::tanh || O.nonlinearity == ad::rnn_nonlinearity::relu,
                "tessera::nn::RNN: the nonlinearity is tanh or relu");

  template <class T, class P>
  struct state : detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 1, O.bias>::template parameters<T, P> {
    using detail::sequence_layer<In, Hidden, O.num_layers, O.bidirectional, 1, O.bias>::template parameters<T, P>::parameters;
    /// The output sequence and the final hidden states h_n [num_layers * D, N, Hidden], from the initial state h0 of
    /// that shape (empty: zeros).
    ad::recurrence_result<T, P> forward_with_state(const ad::Var<T, 3, P>& x, context& ctx, const ad::Var<T, 3, P>& h0 = {}) const {
      const auto kind = O.nonlinearity == ad::rnn_nonlinearity::relu ? ad::recurrence_kind::rnn_relu : ad::recurrence_kind::rnn_tanh;
      return ad::recurrence(x, this->layers, kind, {O.num_layers, O.batch_first, O.dropout, O.bidirectional}, h0, {}, ctx.rng,
                            ctx.training);
    }
    ad::Var<T, 3, P> forward(const ad::Var<T, 3, P>& x, context& ctx) const { return forward_with_state(x, ctx).output; }
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
