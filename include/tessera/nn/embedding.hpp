// nn::Embedding<Num, Dim, O>: a lookup table of Num vectors of Dim values, as PyTorch's torch.nn.Embedding. It takes
// integer indices (int32 or int64, a host tensor) [N] or [N, T] and gives [N, Dim] or [N, T, Dim]. Parameter
// "weight" [Num, Dim], drawn from N(0, 1) as PyTorch draws it; with embedding_options{.padding_idx = p} row p
// starts at zero and gets no gradient; with .max_norm > 0 each row looked up whose .norm_type-norm exceeds max_norm is
// first renormalised to max_norm in the weight, in place and without gradient (PyTorch's max_norm). An index outside
// [0, Num) throws std::out_of_range naming it and Num.
// As the first layer of a Sequential, the model takes the index tensor: Sequential<Shape<dyn, 12>,
// Embedding<1000, 64>, Flatten, Linear<12 * 64, 10>>::forward(Tensor<std::int64_t, ...>). The operation is
// ad::embedding (autodiff/embedding_ops.hpp).
#pragma once
#include <string>

#include "tessera/autodiff/embedding_ops.hpp"
#include "tessera/nn/layers.hpp"
#include "tessera/policy/transfer.hpp"

namespace tessera::nn {

struct embedding_options {
  /// The row that stays zero and gets no gradient; -1: none. (PyTorch's negative values count from the end; here
  /// write Num - 1 for the last row.)
  int padding_idx = -1;
  /// > 0: the rows looked up are renormalised in place to this norm when theirs exceeds it; 0: off.
  double max_norm = 0.0;
  /// The p of the p-norm for max_norm (PyTorch's norm_type; +infinity: the largest magnitude).
  double norm_type = 2.0;
};

template <int Num, int Dim, embedding_options O = embedding_options{}>
struct Embedding {
  static_assert(Num > 0 && Dim > 0, "tessera::nn::Embedding: the number of embeddings and their size must be positive");
  static_assert(O.padding_idx >= -1 && O.padding_idx < Num,
                "tessera::nn::Embedding: padding_idx must be a row of the table (0 .. Num - 1) or -1 for none");
  static_assert(O.max_norm >= 0.0, "tessera::nn::Embedding: max_norm must be >= 0 (0: off)");
  static_assert(O.norm_type > 0.0, "tessera::nn::Embedding: norm_type must be > 0");
  static constexpr bool takes_indices = true;  ///< a Sequential starting with it takes integer indices
  template <class S>
  static constexpr bool accepts = S::rank == 1 || S::rank == 2;
  template <class S>
  using expected = Shape<detail::ext<S>(0), dyn>;
  template <class S>
  static constexpr auto output_of() {
    if constexpr (S::rank == 1) return Shape<S::extents[0], Dim>{};
    else return Shape<S::extents[0], S::extents[1], Dim>{};
  }
  template <class S>
  using output = decltype(output_of<S>());

  template <class T, class P>
  struct state {
    ad::Var<T, 2, P> weight;
    explicit state(Rng& rng) {
      Tensor<T, dyn_shape_t<2>, std::conditional_t<P::on_device, cpu, P>> t(dims_t<2>{Num, Dim});
      for (index_t i = 0; i < t.size(); ++i) {
        if constexpr (std::is_same_v<T, double>) t.data()[i] = rng.normal_double();
        else t.data()[i] = T(rng.normal());
      }
      if constexpr (O.padding_idx >= 0)
        for (index_t j = 0; j < Dim; ++j) t.data()[index_t(O.padding_idx) * Dim + j] = T(0);
      if constexpr (P::on_device) weight = ad::Var<T, 2, P>(tessera::to<P>(t), true);
      else weight = ad::Var<T, 2, P>(std::move(t), true);
    }
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
      f(prefix + "weight", weight);
    }
    template <class F>
    void for_each_buffer(const std::string&, F&&) {}
    /// Integer indices (a host tensor) -> their rows.
    template <class I, class S, class PI>
    ad::Var<T, S::rank + 1, P> forward(const Tensor<I, S, PI>& indices, context&) const {
      static_assert(S::rank == 1 || S::rank == 2, "tessera::nn::Embedding takes indices [N] or [N, T]");
      return ad::embedding(weight, indices, index_t(O.padding_idx), O.max_norm, O.norm_type);
    }
  };
};

}  // namespace tessera::nn
