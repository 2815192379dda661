// Structured pruning that makes a smaller model: a model type with narrower layers, and the copy of a pruned model's
// kept channels into it. The narrower layers run as narrower GEMMs and convolutions; nothing is masked at run time.
//
//   using Small = prune::with_widths_t<SimpleCNN, 16, 32, 64>;   // each prunable layer's output width, in order
//   prune::pruning<float> p;
//   prune::prune_channels(p, net, 0.5);              // half of each prunable layer's channels by their L1 norm
//   ... fine-tune with p.mask_gradients(net) / p.apply(net) around each optimizer step ...
//   Small small = prune::shrink<Small>(net, p);      // the kept channels' weights, biases, BatchNorm statistics
//
// Prunable layers: every Conv2d (groups = 1) and Linear of an nn::Sequential except the model's last Conv2d or Linear
// (its outputs are the model's). with_widths_t<Model, W...> replaces their output widths in order and adjusts the
// layers after each: the next Conv2d's or Linear's input width (a Linear after Flatten takes W * H * W', the spatial
// extents from the model's static shape propagation), BatchNorm2d<C> and BatchNorm1d<C> in between; activations,
// pooling, Dropout and Flatten pass the channels through. A width list of the wrong length, a width of 0 or above the
// original, or a layer it cannot adjust after a narrowed one stops the build with a static_assert in plain words.
//
// prune_channels(p, net, amount, n) runs p.ln_structured(name, amount, n, dim 0) on each prunable layer's weight and
// masks, for the channels that are now all zero, the layer's bias and the weight and bias of the BatchNorm layers
// before the next Conv2d or Linear, so that a pruned channel outputs exactly zero (ReLU, Tanh, GELU, pooling and
// padding keep zeros zero).
//
// shrink<Small>(big, p) keeps, for each prunable layer, the output channels whose weight mask (or, without a mask, the
// weight itself) is not all zero along dim 0; their number must be Small's width for that layer (else
// std::invalid_argument naming the layer and both counts). It copies their weight rows and biases, the matching input
// channels of the next Conv2d, input columns of the next Linear (after Flatten: each kept channel's H*W block),
// BatchNorm weights, biases and running statistics, and every other layer's parameters and buffers as they are.
// With shrink_options::require_exact (the default) it also checks that the masked model computes what the shrunk one
// does: a dropped channel's bias and BatchNorm weight and bias must be 0 and no Sigmoid may see it (std::invalid_argument
// otherwise). The outputs then agree up to the order of summation (the narrower GEMM blocks its K axis elsewhere), a
// few ulps; tests/prune/test_shrink.cpp checks 1e-5 relative on odd batch sizes. Host policies only.
#pragma once
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/nn/adaptive_pool.hpp"
#include "tessera/nn/batchnorm1d.hpp"
#include "tessera/nn/layers.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/prune/mask.hpp"

namespace tessera::prune {

namespace detail {
template <class... L>
struct layer_list {};

template <class L>
struct conv_of : std::false_type {};
template <int I, int O, hw K, conv2d_options Op>
struct conv_of<nn::Conv2d<I, O, K, Op>> : std::true_type {
  static constexpr int in = I, out = O, groups = Op.groups;
  template <int I2, int O2>
  using with = nn::Conv2d<I2, O2, K, Op>;
};
template <class L>
struct linear_of : std::false_type {};
template <int I, int O, bool B>
struct linear_of<nn::Linear<I, O, B>> : std::true_type {
  static constexpr int in = I, out = O, groups = 1;
  static constexpr bool bias = B;
  template <int I2, int O2>
  using with = nn::Linear<I2, O2, B>;
};
template <class L>
struct bn_of : std::false_type {};
template <int C>
struct bn_of<nn::BatchNorm2d<C>> : std::true_type {
  static constexpr int channels = C;
  static constexpr bool flat = false;
  template <int C2>
  using with = nn::BatchNorm2d<C2>;
};
template <int C>
struct bn_of<nn::BatchNorm1d<C>> : std::true_type {
  static constexpr int channels = C;
  static constexpr bool flat = true;
  template <int C2>
  using with = nn::BatchNorm1d<C2>;
};
template <class L>
inline constexpr bool is_adaptive_pool = false;
template <int H, int W>
inline constexpr bool is_adaptive_pool<nn::AdaptiveAvgPool2d<H, W>> = true;

template <class L>
inline constexpr bool has_bias = conv_of<L>::value || requires { requires bool(linear_of<L>::bias); };
template <class L>
inline constexpr bool is_weighted = conv_of<L>::value || linear_of<L>::value;
/// Layers that leave the channels as they are and keep zeros zero (or, Sigmoid, not: shrink checks that).
template <class L>
inline constexpr bool passes_channels = std::is_base_of_v<nn::detail::stateless<L>, L> || requires { L::options; } ||
                                        is_adaptive_pool<L> || std::is_same_v<L, nn::Flatten>;

template <class... L>
inline constexpr int prunable_count = [] {
  const int n = (0 + ... + int(is_weighted<L>));
  return n > 0 ? n - 1 : 0;
}();
}  // namespace detail

namespace error {
template <int Given, int Prunable>
struct widths_do_not_match {
  static constexpr bool ok = Given == Prunable;
  static_assert(ok, "tessera::prune::with_widths_t: give one width per prunable layer (every Conv2d and Linear but the "
                    "model's last): the instantiation above names how many widths were given and how many layers take one");
};
template <int Position, class Layer, int Width, int Original>
struct width_out_of_range {
  static constexpr bool ok = Width >= 1 && Width <= Original;
  static_assert(ok, "tessera::prune::with_widths_t: a layer's new width must be at least 1 and at most its original width "
                    "(the instantiation above names the position, the layer, the width given and the original)");
};
template <int Position, class Layer, bool Ok>
struct cannot_adjust {
  static constexpr bool ok = Ok;
  static_assert(ok, "tessera::prune::with_widths_t: this layer follows a narrowed layer and is not one whose width can "
                    "follow (Conv2d with groups = 1, Linear on [N, F], BatchNorm2d, BatchNorm1d on [N, F], activations, "
                    "pooling, Dropout, Flatten)");
};
}  // namespace error

namespace detail {
/// One layer of the rewrite: L at position Pos seeing original shape S, the current activation narrowed to C channels
/// (0: not narrowed) of Block features each on a flat axis; W the widths left.
template <int Pos, class L, class S, int C, int Block, bool Prunable, class W>
struct rewrite_step {
  static constexpr bool static_spatial = [] {
    for (int i = 2; i < S::rank; ++i)
      if (S::extents[std::size_t(i)] == dyn) return false;
    return true;
  }();
  static constexpr bool known = C == 0 || (passes_channels<L> && (!std::is_same_v<L, nn::Flatten> || static_spatial));
  static constexpr bool ok = error::cannot_adjust<Pos, L, known>::ok;
  using layer = L;
  static constexpr int c = C;
  static constexpr int block = [] {
    if constexpr (std::is_same_v<L, nn::Flatten> && C != 0) {
      int b = Block;
      for (int i = 2; i < S::rank; ++i) b *= int(S::extents[std::size_t(i)]);
      return b;
    } else {
      return Block;
    }
  }();
  using widths = W;
};
template <int Pos, class L, class S, int C, int Block, bool Prunable, int... W>
  requires(is_weighted<L>)
struct rewrite_step<Pos, L, S, C, Block, Prunable, std::integer_sequence<int, W...>> {
  using t = std::conditional_t<conv_of<L>::value, conv_of<L>, linear_of<L>>;
  static constexpr bool shape_ok = C == 0 || (conv_of<L>::value ? t::groups == 1 : S::rank == 2);
  static constexpr bool groups_ok = !Prunable || t::groups == 1;
  static constexpr bool ok0 = error::cannot_adjust<Pos, L, shape_ok && groups_ok>::ok;
  static constexpr int first = [] {
    constexpr int ws[] = {W..., 0};
    return ws[0];
  }();
  static constexpr bool ok = ok0 && error::width_out_of_range<Pos, L, (Prunable ? first : 1), (Prunable ? t::out : 1)>::ok;
  static constexpr int in = C == 0 ? t::in : C * Block;
  static constexpr int out = Prunable && ok ? first : t::out;
  using layer = typename t::template with<in, out>;
  static constexpr int c = Prunable ? out : 0;
  static constexpr int block = 1;
  template <class Seq>
  struct pop {
    using type = Seq;
  };
  template <int F, int... Rest>
  struct pop<std::integer_sequence<int, F, Rest...>> {
    using type = std::integer_sequence<int, Rest...>;
  };
  using widths = std::conditional_t<Prunable, typename pop<std::integer_sequence<int, W...>>::type, std::integer_sequence<int, W...>>;
};
template <int Pos, class L, class S, int C, int Block, bool Prunable, class W>
  requires(bn_of<L>::value)
struct rewrite_step<Pos, L, S, C, Block, Prunable, W> {
  static constexpr bool ok = error::cannot_adjust<Pos, L, C == 0 || !bn_of<L>::flat || S::rank == 2>::ok;
  using layer = std::conditional_t<C == 0, L, typename bn_of<L>::template with<(C == 0 ? 1 : C * Block)>>;
  static constexpr int c = C, block = Block;
  using widths = W;
};

template <int Pos, class S, int C, int Block, class W, class Done, class... Rest>
struct rewrite {
  using type = Done;
};
template <int Pos, class S, int C, int Block, class W, class... Done, class L, class... Rest>
struct rewrite<Pos, S, C, Block, W, layer_list<Done...>, L, Rest...> {
  using step = rewrite_step<Pos, L, S, C, Block, is_weighted<L> && (false || ... || is_weighted<Rest>), W>;
  using type = typename rewrite<Pos + 1, typename L::template output<S>, step::c, step::block, typename step::widths,
                                layer_list<Done..., typename step::layer>, Rest...>::type;
};

template <class In, class List, int... W>
struct rewritten;
template <class In, class... L, int... W>
struct rewritten<In, layer_list<L...>, W...> {
  static constexpr bool ok = error::widths_do_not_match<int(sizeof...(W)), prunable_count<L...>>::ok;
  using list = std::conditional_t<ok, typename rewrite<0, In, 0, 1, std::integer_sequence<int, W...>, layer_list<>, L...>::type,
                                  layer_list<L...>>;
};

template <class List>
struct as_model;
template <class... L>
struct as_model<layer_list<L...>> {
  template <class T, class P, class In>
  using basic = nn::basic_sequential<T, P, In, L...>;
  template <class In>
  using sequential = nn::Sequential<In, L...>;
};

/// The layer types of a Sequential (deduced through the base class, so nn::Sequential<...> works too).
template <class T, class P, class In, class... L>
layer_list<L...> layers_of(const nn::basic_sequential<T, P, In, L...>*);
template <class Model>
using layers_t = decltype(layers_of(static_cast<const Model*>(nullptr)));
}  // namespace detail

/// Model M with each prunable layer's output width replaced by W... in order (see the file's comment).
template <class M, int... W>
struct with_widths;
template <class T, class P, class In, class... L, int... W>
struct with_widths<nn::basic_sequential<T, P, In, L...>, W...> {
  using type = typename detail::as_model<typename detail::rewritten<In, detail::layer_list<L...>, W...>::list>::template basic<T, P, In>;
};
template <class In, class... L, int... W>
struct with_widths<nn::Sequential<In, L...>, W...> {
  using type = typename detail::as_model<typename detail::rewritten<In, detail::layer_list<L...>, W...>::list>::template sequential<In>;
};
template <class M, int... W>
using with_widths_t = typename with_widths<M, W...>::type;

/// How many layers of model M take a width in with_widths_t, and their positions.
template <class M>
inline constexpr int prunable_layers_v = []<class... L>(detail::layer_list<L...>*) {
  return detail::prunable_count<L...>;
}(static_cast<detail::layers_t<M>*>(nullptr));

namespace detail {
template <class L>
using layer_at_t = L;
/// f(std::integral_constant<std::size_t, I>, layer type tag) for each layer of Model.
template <class Model, class F>
void for_each_layer_type(F&& f) {
  [&]<class... L>(layer_list<L...>*) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(std::integral_constant<std::size_t, I>{}, static_cast<L*>(nullptr)), ...);
    }(std::index_sequence_for<L...>{});
  }(static_cast<layers_t<Model>*>(nullptr));
}
/// Is layer I of Model prunable (a Conv2d or Linear with another after it)?
template <class Model, std::size_t I>
constexpr bool prunable_at() {
  return []<class... L>(layer_list<L...>*) {
    constexpr bool w[] = {is_weighted<L>..., false};
    if (!w[I]) return false;
    for (std::size_t j = I + 1; j < sizeof...(L); ++j)
      if (w[j]) return true;
    return false;
  }(static_cast<layers_t<Model>*>(nullptr));
}

/// The channels (slices along dim 0) of a tensor of `dims` with any nonzero in `x`.
template <class T>
std::vector<index_t> nonzero_rows(const T* x, const std::vector<index_t>& dims) {
  index_t inner = 1;
  for (std::size_t i = 1; i < dims.size(); ++i) inner *= dims[i];
  std::vector<index_t> rows;
  for (index_t r = 0; r < dims[0]; ++r)
    for (index_t i = 0; i < inner; ++i)
      if (x[r * inner + i] != T(0)) {
        rows.push_back(r);
        break;
      }
  return rows;
}
}  // namespace detail

/// Structured pruning of every prunable layer of `net` (see the file's comment): p.ln_structured(weight, a, n, 0),
/// then the layer's bias and the BatchNorm weights and biases before the next Conv2d or Linear masked for the channels
/// whose weight mask is all zero.
template <class T, class Model>
void prune_channels(pruning<T>& p, Model& net, const std::vector<amount>& amounts, double n = 1) {
  constexpr int count = prunable_layers_v<Model>;
  if (int(amounts.size()) != count)
    throw std::invalid_argument("tessera::prune::prune_channels: " + std::to_string(amounts.size()) + " amounts given, the model has " +
                                std::to_string(count) + " prunable layers (every Conv2d and Linear but the last)");
  int k = 0;
  std::vector<T> rows;  // 1 for the channels the last prunable layer keeps; empty: none pending
  detail::for_each_layer_type<Model>([&](auto idx, auto* tag) {
    constexpr std::size_t I = decltype(idx)::value;
    using L = std::remove_pointer_t<decltype(tag)>;
    const std::string at = std::to_string(I) + ".";
    if constexpr (detail::is_weighted<L>) {
      rows.clear();
      if constexpr (detail::prunable_at<Model, I>()) {
        p.ln_structured(net, at + "weight", amounts[std::size_t(k++)], n, 0);
        const auto& m = p.mask(at + "weight");
        const auto& d = p.dims(at + "weight");
        rows.assign(std::size_t(d[0]), T(0));
        for (index_t r : detail::nonzero_rows(m.data(), d)) rows[std::size_t(r)] = T(1);
        if constexpr (detail::has_bias<L>) p.custom_from_mask(net, at + "bias", rows);
      }
    } else if constexpr (detail::bn_of<L>::value) {
      if (!rows.empty()) {
        const index_t block = index_t(detail::bn_of<L>::channels) / index_t(rows.size());
        std::vector<T> m(static_cast<std::size_t>(detail::bn_of<L>::channels));
        for (std::size_t f = 0; f < m.size(); ++f) m[f] = rows[f / std::size_t(block)];
        p.custom_from_mask(net, at + "weight", m);
        p.custom_from_mask(net, at + "bias", m);
      }
    }
  });
}
/// The same amount for every prunable layer.
template <class T, class Model>
void prune_channels(pruning<T>& p, Model& net, amount a, double n = 1) {
  prune_channels(p, net, std::vector<amount>(std::size_t(prunable_layers_v<Model>), a), n);
}

struct shrink_options {
  /// check that the masked model computes what the shrunk one does (a dropped channel's bias and BatchNorm weight and
  /// bias 0, no Sigmoid after it)
  bool require_exact = true;
};

/// The smaller model Small (with_widths_t of big's type) holding big's kept channels; `masks` (may be null) says
/// which: see the file's comment.
template <class Small, class Big, class T>
Small shrink(Big& big, const pruning<T>* masks, shrink_options o = {}) {
  static_assert(!Big::policy::on_device && !Small::policy::on_device, "tessera::prune::shrink: shrink a model on the CPU");
  static_assert(Big::num_layers == Small::num_layers, "tessera::prune::shrink: the small model must have the big one's layers "
                                                      "(prune::with_widths_t of its type)");
  Small small(0);
  small.train(big.is_training());
  std::vector<index_t> keep;  // the kept channels of the current activation (all when not narrowed)
  index_t channels = 0;       // the channels of the big model's activation that `keep` selects from
  bool narrowed = false;
  std::vector<index_t> dropped;  // channels dropped by the last prunable layer (for require_exact)
  auto fail = [](const std::string& s) { throw std::invalid_argument("tessera::prune::shrink: " + s); };
  auto all = [](index_t n) {
    std::vector<index_t> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), index_t(0));
    return v;
  };
  // the features of a flat axis of `width` features (kept channels' blocks)
  auto features = [&](index_t width) {
    if (!narrowed) return all(width);
    if (width % channels) fail("internal: " + std::to_string(width) + " features do not divide into " + std::to_string(channels) + " channels");
    const index_t block = width / channels;
    std::vector<index_t> f;
    for (index_t c : keep)
      for (index_t j = 0; j < block; ++j) f.push_back(c * block + j);
    return f;
  };
  detail::for_each_layer_type<Big>([&](auto idx, auto* tag) {
    constexpr std::size_t I = decltype(idx)::value;
    using L = std::remove_pointer_t<decltype(tag)>;
    auto& b = big.template layer<I>();
    auto& s = small.template layer<I>();
    const std::string at = "layer " + std::to_string(I);
    if constexpr (detail::is_weighted<L>) {
      const auto& bw = b.weight.value();
      auto& sw = s.weight.mutable_value();
      const index_t out = bw.dims()[0], in = bw.dims()[1];
      index_t inner = 1;
      for (std::size_t i = 2; i < std::size_t(bw.dims().size()); ++i) inner *= bw.dims()[i];
      std::vector<index_t> ins = detail::conv_of<L>::value ? (narrowed ? keep : all(in)) : features(in);
      std::vector<index_t> outs = all(out);
      if constexpr (detail::prunable_at<Big, I>()) {
        const std::string name = std::to_string(I) + ".weight";
        const std::vector<index_t> d(bw.dims().begin(), bw.dims().end());
        outs = masks && masks->has_mask(name) ? detail::nonzero_rows(masks->mask(name).data(), d) : detail::nonzero_rows(bw.data(), d);
      }
      if (index_t(outs.size()) != sw.dims()[0] || index_t(ins.size()) != sw.dims()[1])
        fail(at + " (weight " + prune::detail::format_dims({bw.dims().begin(), bw.dims().end()}) + ") keeps " + std::to_string(outs.size()) +
             " of its " + std::to_string(out) + " output channels (those whose mask is not all zero) and " + std::to_string(ins.size()) +
             " inputs; the small model's layer has weight " + prune::detail::format_dims({sw.dims().begin(), sw.dims().end()}));
      for (std::size_t r = 0; r < outs.size(); ++r)
        for (std::size_t c = 0; c < ins.size(); ++c)
          std::memcpy(sw.data() + (index_t(r) * index_t(ins.size()) + index_t(c)) * inner, bw.data() + (outs[r] * in + ins[c]) * inner,
                      std::size_t(inner) * sizeof(T));
      dropped.clear();
      for (index_t r = 0, j = 0; r < out; ++r)
        if (j < index_t(outs.size()) && outs[std::size_t(j)] == r) ++j;
        else dropped.push_back(r);
      if (b.bias.defined()) {
        for (std::size_t r = 0; r < outs.size(); ++r) s.bias.mutable_value().data()[r] = b.bias.value().data()[outs[r]];
        if (o.require_exact)
          for (index_t r : dropped)
            if (b.bias.value().data()[r] != T(0))
              fail(at + " drops output channel " + std::to_string(r) + " but its bias is " + std::to_string(double(b.bias.value().data()[r])) +
                   ", not 0: the masked model would not compute what the shrunk one does (prune the channels with "
                   "prune::prune_channels, which masks the bias too, or pass shrink_options{.require_exact = false})");
      }
      narrowed = detail::prunable_at<Big, I>();
      keep = outs;
      channels = out;
    } else if constexpr (detail::bn_of<L>::value) {
      const index_t C = index_t(detail::bn_of<L>::channels);
      const std::vector<index_t> f = features(C);
      auto pick = [&](const T* from, T* to) {
        for (std::size_t j = 0; j < f.size(); ++j) to[j] = from[f[j]];
      };
      pick(b.weight.value().data(), s.weight.mutable_value().data());
      pick(b.bias.value().data(), s.bias.mutable_value().data());
      pick(b.running_mean.data(), s.running_mean.data());
      pick(b.running_var.data(), s.running_var.data());
      if constexpr (detail::bn_of<L>::flat) s.num_batches_tracked() = b.num_batches_tracked();
      if (o.require_exact && narrowed) {
        const index_t block = C / channels;
        for (index_t ch : dropped)
          for (index_t j = 0; j < block; ++j)
            if (b.weight.value().data()[ch * block + j] != T(0) || b.bias.value().data()[ch * block + j] != T(0))
              fail(at + " (BatchNorm) has a nonzero weight or bias for dropped channel " + std::to_string(ch) +
                   ": its output would not be 0 in the masked model (prune::prune_channels masks them, or pass "
                   "shrink_options{.require_exact = false})");
      }
    } else {
      if constexpr (std::is_same_v<L, nn::Sigmoid>)
        if (o.require_exact && narrowed && !dropped.empty())
          fail(at + " is a Sigmoid after dropped channels: sigmoid(0) = 0.5, so the masked model differs from the shrunk one "
                    "(pass shrink_options{.require_exact = false} to shrink anyway)");
      // any other layer: the same type in both models; its parameters and buffers copied as they are
      std::vector<std::pair<void*, std::size_t>> to;
      std::size_t k = 0;
      s.for_each_parameter("", [&](const std::string&, auto& v) { to.emplace_back(v.mutable_value().data(), std::size_t(v.size()) * sizeof(T)); });
      b.for_each_parameter("", [&](const std::string&, auto& v) { std::memcpy(to[k++].first, v.value().data(), std::size_t(v.size()) * sizeof(T)); });
      to.clear();
      k = 0;
      s.for_each_buffer("", [&](const std::string&, auto& t) { to.emplace_back(t.data(), std::size_t(t.size()) * sizeof(*t.data())); });
      b.for_each_buffer("", [&](const std::string&, auto& t) { std::memcpy(to[k++].first, t.data(), std::size_t(t.size()) * sizeof(*t.data())); });
    }
  });
  return small;
}
/// shrink<Small>(big, p): the channels p's masks keep.
template <class Small, class Big, class T>
Small shrink(Big& big, const pruning<T>& masks, shrink_options o = {}) {
  return shrink<Small>(big, &masks, o);
}
/// shrink<Small>(big): the channels whose weights are not all zero (after pruning::remove).
template <class Small, class Big>
Small shrink(Big& big, shrink_options o = {}) {
  return shrink<Small>(big, static_cast<const pruning<typename Big::value_type>*>(nullptr), o);
}

}  // namespace tessera::prune
