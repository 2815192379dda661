// Sequential<InputShape, Layers...>: a model as a flat list of layer types. The input shape flows through the
// layers at compile time; a layer that cannot take what the previous one produces stops the build with an error
// whose first line names its position, the layer and both shapes:
//   In instantiation of 'struct tessera::nn::error::layer_does_not_fit<7, tessera::nn::Linear<1024, 128>,
//   tessera::Shape<-1, 3136>, tessera::Shape<-1, 1024> >'    (position, layer, input it gets, input it expects)
// At run time the forward pass runs the layers group by group as nn/fusion.hpp groups them: a Conv2d or Linear
// with the activation that follows it is one kernel forward and one fused backward, a Conv2d, ReLU and
// MaxPool2d<2> one operation. Parameters are named as libtorch names them: "0.weight", "3.bias" (a composition's
// under its position: "3.main.0.weight"). The shape checks and the run are nn/chain.hpp's, shared with the
// compositions of nn/composition.hpp. A model whose first layer is an nn::Embedding takes integer indices.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/nn/chain.hpp"
#include "tessera/nn/fusion.hpp"
#include "tessera/nn/layers.hpp"
#include "tessera/nn/summary.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera::nn {

namespace error {
template <class Expected, class Got>
struct model_input_does_not_fit {
  static constexpr bool ok = shapes_compatible_v<Expected, Got>;
  static_assert(ok, "tessera::nn::Sequential: the input's static shape differs from the model's input shape");
};
}  // namespace error

template <class T, class P, class In, class... Layers>
class basic_sequential {
  static_assert(sizeof...(Layers) > 0, "tessera::nn::Sequential needs at least one layer");
  using prop = detail::propagate<0, In, Layers...>;
  using chain = detail::layer_chain<T, P, Layers...>;

 public:
  using value_type = T;
  using policy = P;
  using input_shape = In;
  using output_shape = typename prop::type;  ///< the model's output shape (the batch extent stays dynamic)
  static constexpr std::size_t num_layers = sizeof...(Layers);
  static constexpr bool shapes_fit = prop::ok;
  /// Does the model take integer indices (its first layer is an nn::Embedding) rather than float values?
  static constexpr bool takes_indices = detail::takes_indices<typename chain::template layer_t<0>>;
  using input_var = ad::Var<T, In::rank, P>;
  using output_var = ad::Var<T, output_shape::rank, P>;

  /// Parameters initialised as PyTorch's defaults from `seed`.
  explicit basic_sequential(std::uint64_t seed = 0) : rng_(seed), layers_(rng_) {}

  /// The forward pass on a Var (gradients flow into it if it requires them).
  output_var forward(const input_var& x) {
    check_input(x.dims());
    context ctx{training_, &rng_, bn_reducer_ ? &bn_reducer_ : nullptr};
    return layers_.forward(x, ctx);
  }
  /// The forward pass on a tensor of the input shape (a host tensor of another CPU policy is copied over).
  template <class S, class P2>
  output_var forward(const Tensor<T, S, P2>& x) {
    (void)error::model_input_does_not_fit<In, S>::ok;
    if constexpr (std::is_same_v<P2, P>) return forward(input_var(x, false));
    else return forward(input_var(tessera::to<P>(x), false));
  }
  /// The forward pass on integer indices (int32 or int64, on the host), for a model whose first layer takes them.
  template <class I, class S, class P2>
    requires(std::is_integral_v<I> && !std::is_same_v<I, T>)
  output_var forward(const Tensor<I, S, P2>& indices) {
    static_assert(takes_indices, "tessera::nn::Sequential: integer input needs a model whose first layer takes indices "
                                 "(nn::Embedding)");
    (void)error::model_input_does_not_fit<In, S>::ok;
    check_input(indices.dims());
    context ctx{training_, &rng_, bn_reducer_ ? &bn_reducer_ : nullptr};
    return layers_.forward(indices, ctx);
  }
  /// Inference: the forward pass with nothing recorded.
  template <class X>
  auto predict(const X& x) {
    ad::no_grad ng;
    return forward(x).value();
  }

  /// Synchronised batch normalisation (PyTorch's SyncBatchNorm): in training, every BatchNorm2d and BatchNorm1d of
  /// the model (inside compositions too) normalises with the statistics of all ranks' batches, combined by f, which
  /// sums its doubles in place over the ranks (data parallel training sets an all-reduce of its process group). An
  /// empty f (the default) gives each rank its own statistics. Evaluation uses the running statistics either way. Host
  /// policies only: a model on a device policy throws std::logic_error for a non-empty f.
  void set_batch_norm_reducer(stat_reducer f) {
    if constexpr (P::on_device)
      if (f)
        throw std::logic_error(std::string("tessera::nn::Sequential::set_batch_norm_reducer: synchronised batch normalisation "
                                           "runs on host policies only, not on ") + P::name);
    bn_reducer_ = std::move(f);
  }
  bool has_batch_norm_reducer() const { return bool(bn_reducer_); }

  void train(bool on = true) { training_ = on; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }
  Rng& rng() { return rng_; }

  /// f(name, Var&) for every parameter, in layer order ("0.weight", "0.bias", "3.weight", ...).
  template <class F>
  void for_each_parameter(F&& f) {
    layers_.for_each_parameter("", f);
  }
  /// f(name, Tensor&) for every buffer (running statistics).
  template <class F>
  void for_each_buffer(F&& f) {
    layers_.for_each_buffer("", f);
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
  auto& layer() { return layers_.template layer<I>(); }
  /// The layer-by-layer table (types, output shapes for `batch` items, parameter counts, memory): nn/summary.hpp.
  model_summary summary(index_t batch = 1) { return nn::summary(*this, batch); }

 private:
  template <std::size_t R>
  void check_input(const dims_t<R>& d) const {
    static_assert(int(R) == In::rank, "tessera::nn::Sequential: the input's rank differs from the model's input shape");
    for (int i = 0; i < In::rank; ++i)
      if (In::extents[std::size_t(i)] != dyn && d[i] != In::extents[std::size_t(i)])
        throw shape_error("tessera::nn::Sequential: the input " + tessera::detail::format_dims(d) +
                          " does not fit the model's input shape " + tessera::detail::format_dims(In::extents));
  }

  bool training_ = true;
  Rng rng_;
  stat_reducer bn_reducer_;
  chain layers_;
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
