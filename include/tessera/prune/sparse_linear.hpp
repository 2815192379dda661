// Sparse Linear layers for inference: a pruned Linear's weight, mostly zeros, kept as CSR (kernels/cpu/sparse.hpp)
// and run as y = act(x W^T + b) with work proportional to its nonzeros, bias and activation fused.
//
//   double d = prune::dense_density(net.layer<3>().weight);          // fraction of nonzero weights, 0 .. 1
//   if (prune::worth_sparse(net.layer<3>().weight)) {                // at least 70 % of them zero
//     prune::sparse_linear<float, cpu_threads> fc(net.layer<3>().weight, net.layer<3>().bias, activation::relu);
//     auto y = fc(x);                                                // x [B, In] (Tensor, View or Var) -> y [B, Out]
//     fc.forward_into(x, y.view());                                  // or into a [B, Out] destination
//   }
//   prune::sparse_inference fast(net);                              // a whole model: its Linear layers >= 70 % zero
//   auto logits = fast.predict(images);                              // run sparse, the rest as the model runs it
//
// sparse_linear<T, P> is built once from a dense weight [Out, In] (a host Tensor or View of any strides, or an
// ad::Var such as an nn::Linear's `weight`) and an optional bias [Out] (an undefined Var or an empty tensor: none);
// exact zeros are dropped, so it holds the weights as they are when it is built (prune and fine-tune first; build it
// again after changing them). P (cpu or cpu_threads) gives the threads: P::num_threads() at each call.
// When it pays: measured on the 2-core AMD EPYC Zen 3 guest at 1024 -> 1024, batch 64, bias + ReLU (bench/bench_sparse.cpp,
// docs/pruning.md), the sparse kernel beats the dense fused GEMM from about 70 % zeros on; worth_sparse says whether a
// weight reaches sparse_threshold (0.7) of zeros.
//
// Guarantees: inputs of any strides (a slice of a batch, a transposed view); shapes are checked on every call and a
// mismatch throws tessera::shape_error (a std::invalid_argument) naming both shapes; results equal the dense
// Linear's up to the order of the float sums (every output sums its nonzeros in column order, per set of
// accumulators), the same on 1 and 2 threads. A Var's forward records no gradient (inference only: the returned Var
// does not require one). Host policies only.
#pragma once
#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/sparse.hpp"
#include "tessera/nn/fusion.hpp"
#include "tessera/nn/layers.hpp"
#include "tessera/nn/sequential.hpp"

namespace tessera::prune {

/// Fraction of zeros at or above which a Linear's weight runs faster through sparse_linear (see the header comment).
inline constexpr double sparse_threshold = 0.7;

namespace detail {
template <class X>
concept host_matrix = requires(const X& x) {
  x.data();
  x.dims();
  x.strides();
} && std::remove_cvref_t<X>::rank == 2 && !std::remove_cvref_t<X>::policy::on_device;

template <class X>
concept host_vector = requires(const X& x) {
  x.data();
  x.dims();
  x.strides();
} && std::remove_cvref_t<X>::rank == 1 && !std::remove_cvref_t<X>::policy::on_device;
}  // namespace detail

/// The fraction of entries of a host tensor or view (any rank, any strides) that are nonzero (NaN counts as nonzero);
/// 0 for an empty one. A Var's value is counted.
template <class X>
  requires requires(const X& x) { x.dims(); x.strides(); x.data(); }
double dense_density(const X& x) {
  constexpr int R = std::remove_cvref_t<X>::rank;
  const auto& d = x.dims();
  const auto& s = x.strides();
  index_t total = 1;
  for (int i = 0; i < R; ++i) total *= d[std::size_t(i)];
  if (total == 0) return 0.0;
  index_t nonzero = 0;
  for (index_t flat = 0; flat < total; ++flat) {  // walk the row-major index, offset through the strides
    index_t rem = flat, off = 0;
    for (int i = R - 1; i >= 0; --i) {
      off += (rem % d[std::size_t(i)]) * s[std::size_t(i)];
      rem /= d[std::size_t(i)];
    }
    using E = std::remove_cvref_t<decltype(x.data()[0])>;
    nonzero += x.data()[off] != E(0);
  }
  return double(nonzero) / double(total);
}
template <class T, int R, class P>
double dense_density(const ad::Var<T, R, P>& w) {
  return dense_density(w.value());
}

/// Is at least sparse_threshold (70 %) of the weight zero?
template <class X>
bool worth_sparse(const X& weight) {
  return 1.0 - dense_density(weight) >= sparse_threshold;
}

/// y = act(x W^T + b) with W held as CSR; see the header comment.
template <class T, class P = cpu_threads>
class sparse_linear {
  static_assert(std::is_floating_point_v<T>, "tessera::prune::sparse_linear: float or double weights");
  static_assert(!P::on_device, "tessera::prune::sparse_linear: host policies only (cpu, cpu_threads)");

 public:
  using value_type = T;
  using policy = P;
  using tensor = Tensor<T, Shape<dyn, dyn>, P>;

  sparse_linear() = default;
  /// From a dense weight [Out, In] (host Tensor or View) with no bias.
  template <detail::host_matrix W>
  explicit sparse_linear(const W& weight, activation act = activation::none) : act_(act) {
    set_weight(weight);
  }
  /// From a dense weight [Out, In] and a bias [Out] (an empty bias, extent 0, means none).
  template <detail::host_matrix W, detail::host_vector Bv>
  sparse_linear(const W& weight, const Bv& bias, activation act = activation::none) : act_(act) {
    set_weight(weight);
    set_bias(bias);
  }
  /// From an nn::Linear's parameters (or any Vars): weight [Out, In], bias [Out] or undefined (no bias).
  template <class PV>
  sparse_linear(const ad::Var<T, 2, PV>& weight, const ad::Var<T, 1, PV>& bias, activation act = activation::none) : act_(act) {
    static_assert(!PV::on_device, "tessera::prune::sparse_linear: host parameters only");
    set_weight(weight.value());
    if (bias.defined()) set_bias(bias.value());
  }
  template <class PV>
  explicit sparse_linear(const ad::Var<T, 2, PV>& weight, activation act = activation::none) : act_(act) {
    static_assert(!PV::on_device, "tessera::prune::sparse_linear: host parameters only");
    set_weight(weight.value());
  }

  index_t in_features() const { return w_->cols; }
  index_t out_features() const { return w_->rows; }
  index_t nnz() const { return w_->nnz(); }
  /// Stored (nonzero) weights over In x Out.
  double density() const { return w_->density(); }
  bool has_bias() const { return !bias_.empty(); }
  activation act() const { return act_; }
  void set_activation(activation a) { act_ = a; }
  const tessera::detail::csr_matrix<T>& csr() const { return *w_; }

  /// y [B, Out] for x [B, In] (a host Tensor or View, any strides).
  template <detail::host_matrix X>
  tensor forward(const X& x) const {
    check_input(x.dims());
    tensor y(x.dims()[0], out_features());
    run(x, y.data(), out_features());
    return y;
  }
  template <detail::host_matrix X>
  tensor operator()(const X& x) const {
    return forward(x);
  }
  /// Inference on a Var: the value's product, returned as a Var that records nothing.
  template <class PV>
  ad::Var<T, 2, PV> forward(const ad::Var<T, 2, PV>& x) const {
    check_input(x.dims());
    typename ad::Var<T, 2, PV>::tensor y(x.dims()[0], out_features());
    run(x.value(), y.data(), out_features());
    return ad::Var<T, 2, PV>(std::move(y), false);
  }
  template <class PV>
  ad::Var<T, 2, PV> operator()(const ad::Var<T, 2, PV>& x) const {
    return forward(x);
  }
  /// Into y [B, Out] (a host Tensor or View with unit column stride, not overlapping x).
  template <detail::host_matrix X, class Y>
  void forward_into(const X& x, Y&& y) const {
    check_input(x.dims());
    const auto& yd = y.dims();
    if (yd[0] != x.dims()[0] || yd[1] != out_features())
      throw shape_error("tessera: sparse_linear: destination " + tessera::detail::format_dims(yd) + " does not fit input " +
                        tessera::detail::format_dims(x.dims()) + " and weights " + weight_dims() + " (it must be [B, Out])");
    if (yd[1] > 1 && y.strides()[1] != 1)
      throw shape_error("tessera: sparse_linear: destination " + tessera::detail::format_dims(yd) +
                        " must have unit column stride (got " + tessera::detail::format_dims(y.strides()) + ")");
    run(x, y.data(), y.strides()[0]);
  }

 private:
  std::shared_ptr<const tessera::detail::csr_matrix<T>> w_ = std::make_shared<tessera::detail::csr_matrix<T>>();
  std::vector<T> bias_;
  activation act_ = activation::none;

  std::string weight_dims() const {
    return tessera::detail::format_dims(dims_t<2>{out_features(), in_features()});
  }
  template <class W>
  void set_weight(const W& w) {
    const auto& d = w.dims();
    const auto& s = w.strides();
    w_ = std::make_shared<tessera::detail::csr_matrix<T>>(
        tessera::detail::csr_from_dense<T>({w.data(), s[0], s[1]}, d[0], d[1]));
  }
  template <class Bv>
  void set_bias(const Bv& b) {
    const auto& d = b.dims();
    if (d[0] == 0) return;
    if (d[0] != out_features())
      throw shape_error("tessera: sparse_linear: bias " + tessera::detail::format_dims(d) + " does not fit weights " +
                        weight_dims() + " (it must have Out elements)");
    bias_.resize(std::size_t(d[0]));
    for (index_t i = 0; i < d[0]; ++i) bias_[std::size_t(i)] = b.data()[i * b.strides()[0]];
  }
  void check_input(const dims_t<2>& xd) const {
    if (xd[1] != in_features())
      throw shape_error("tessera: sparse_linear: input " + tessera::detail::format_dims(xd) + " does not fit weights " +
                        weight_dims() + " (in_features must equal the input's last extent)");
  }
  template <class X>
  void run(const X& x, T* y, index_t ldy) const {
    const auto& s = x.strides();
    tessera::detail::cpu_sparse_linear<T>(*w_, x.dims()[0], {x.data(), s[0], s[1]}, has_bias() ? bias_.data() : nullptr, act_, y,
                                          ldy, P::num_threads());
  }
};

namespace detail {
template <class L>
inline constexpr bool is_linear = false;
template <int In, int Out, bool Bias>
inline constexpr bool is_linear<nn::Linear<In, Out, Bias>> = true;
}  // namespace detail

/// Inference through a model whose pruned Linear layers run sparse: every top-level nn::Linear of the model (on
/// rank-2 input) whose weight is at least `threshold` zero (default sparse_threshold, 70 %) runs as a sparse_linear
/// with the activation that follows it fused, built when this object is made; every other layer runs as the model
/// runs it (the same fusion groups, nn/fusion.hpp). The model is held by reference and must outlive this object;
/// after its weights change (fine-tuning), call rebuild(). Linear layers inside compositions (nn::Residual, Seq) and
/// on rank-3 input stay dense.
///   prune::sparse_inference fast(model);           // after pruning: which Linear layers are sparse enough
///   auto logits = fast.predict(images);            // as model.predict(images), nothing recorded
template <class T, class P, class In, class... Layers>
class sparse_inference {
  using model_type = nn::basic_sequential<T, P, In, Layers...>;
  using plan = nn::fusion_plan<Layers...>;
  static constexpr std::size_t num_layers = sizeof...(Layers);

 public:
  explicit sparse_inference(model_type& model, double threshold = sparse_threshold) : m_(&model), threshold_(threshold) {
    rebuild();
  }
  /// Rebuild the sparse layers from the model's current weights.
  void rebuild() { build<0>(); }
  /// Does the layer at this position (the model's numbering) run sparse?
  bool is_sparse(std::size_t layer) const { return layer < num_layers && sparse_[layer].has_value(); }
  std::size_t num_sparse() const {
    std::size_t n = 0;
    for (const auto& l : sparse_) n += l.has_value();
    return n;
  }
  /// The model's output for x (a host tensor of the model's input shape), nothing recorded.
  template <class S>
  auto predict(const Tensor<T, S, P>& x) {
    static_assert(shapes_compatible_v<In, S>, "tessera::prune::sparse_inference: the input's static shape differs from the model's input shape");
    ad::no_grad ng;
    nn::context ctx{false, &m_->rng(), nullptr};
    return run<0>(ad::Var<T, In::rank, P>(x, false), ctx).value();
  }

 private:
  model_type* m_;
  double threshold_;
  std::array<std::optional<sparse_linear<T, P>>, num_layers> sparse_;

  template <std::size_t G>
  void build() {
    if constexpr (G < plan::count) {
      constexpr std::size_t I = plan::template first<G>;
      using group = typename plan::template group<G>;
      if constexpr (detail::is_linear<typename group::head>) {
        auto& lin = m_->template layer<I>();
        sparse_[I].reset();
        if (1.0 - dense_density(lin.weight) >= threshold_) sparse_[I].emplace(lin.weight, lin.bias, group::activation);
      }
      build<G + 1>();
    }
  }

  template <std::size_t G, class X>
  auto run(const X& x, nn::context& ctx) {
    if constexpr (G == plan::count) {
      return x;
    } else {
      constexpr std::size_t I = plan::template first<G>;
      using group = typename plan::template group<G>;
      auto& head = m_->template layer<I>();
      if constexpr (group::has_max_pool2 && group::activation == activation::relu) {  // one operation, as the model runs it
        return run<G + 1>(head.forward_relu_maxpool2(x, ctx), ctx);
      } else {
        constexpr std::size_t N = group::has_activation ? 2 : 1;
        auto y = [&] {
          if constexpr (detail::is_linear<typename group::head> && X::rank == 2)
            if (sparse_[I]) return sparse_[I]->forward(x);
          if constexpr (group::has_activation) return head.forward(x, ctx, ad::activation_c<group::activation>{});
          else return head.forward(x, ctx);
        }();
        if constexpr (group::has_max_pool2) return run<G + 1>(m_->template layer<I + N>().forward(y, ctx), ctx);
        else return run<G + 1>(y, ctx);
      }
    }
  }
};
template <class T, class P, class In, class... Layers>
sparse_inference(nn::basic_sequential<T, P, In, Layers...>&) -> sparse_inference<T, P, In, Layers...>;
template <class T, class P, class In, class... Layers>
sparse_inference(nn::basic_sequential<T, P, In, Layers...>&, double) -> sparse_inference<T, P, In, Layers...>;

}  // namespace tessera::prune
