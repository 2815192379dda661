// Differentiable joining, splitting and indexing of Vars, as PyTorch's: cat, stack, split, chunk, index_select and
// gather. cat and stack copy each input into its slice of the result (one strided pass each) and hand each input
// its slice of the gradient back; split and chunk are slices (view_ops.hpp). index_select copies one sub-tensor per
// index, and its backward adds them back one index after another, so repeated indices accumulate. These are tensor
// expressions and run on every policy. gather (any index per element) runs a host loop (kernels/cpu/gather.hpp):
// host policies only. An index outside its axis throws std::out_of_range naming the index and the extent.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/autodiff/view_ops.hpp"
#include "tessera/kernels/cpu/gather.hpp"

namespace tessera::ad {

namespace detail {
/// Var::make for inputs counted at run time (cat, stack): records `backward` (called with the output's gradient)
/// when gradients are on and any input requires them; in anomaly mode checks the result first.
template <class V, class Back, class In>
V make_from_list(typename V::tensor value, Back&& backward, const std::vector<In>& inputs) {
  V out(std::move(value), false);
  auto& nd = out.node();
  const bool anomaly = detect_anomaly_enabled();
  if (anomaly) {
    if (const char* kind = nd.value_anomaly(); *kind) {
      std::string why = "its inputs were finite";
      for (std::size_t k = 0; k != inputs.size(); ++k)
        if (const char* ik = inputs[k].node().value_anomaly(); *ik) {
          why = "its input " + std::to_string(k) + " " + inputs[k].node().shape() + " already held " + ik;
          break;
        }
      throw anomaly_error("tessera: anomaly: the forward of " + op_name_of<std::remove_cvref_t<Back>>() +
                          anomaly_where(anomaly_layer()) + " produced " + kind + " in its result " + nd.shape() + "; " + why);
    }
  }
  bool any = false;
  for (const auto& in : inputs) any = any || in.requires_grad();
  if (grad_mode() && any) {
    nd.requires_grad = true;
    nd.is_leaf = false;
    nd.op_name = &op_name_of<std::remove_cvref_t<Back>>;
    if (anomaly) nd.layer = anomaly_layer();
    for (const auto& in : inputs) nd.inputs.push_back(in.ptr());
    nd.backward_fn = [self = &nd, b = std::forward<Back>(backward)]() { b(self->grad_buffer()); };
  }
  return out;
}

template <class I>
inline constexpr bool index_type = std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>;

template <class I, std::size_t R>
[[noreturn]] void index_out_of_range(const char* op, I value, index_t at, int axis, const std::array<index_t, R>& dims) {
  throw std::out_of_range(std::string("tessera: ") + op + ": index " + std::to_string(value) + " (element " +
                          std::to_string(at) + " of the indices) is out of range for axis " + std::to_string(axis) +
                          " of extent " + std::to_string(dims[std::size_t(axis)]) + " (shape " +
                          tessera::detail::format_dims(dims) + ")");
}
}  // namespace detail

// ---- cat, stack ----

/// The Vars joined along Axis (default 0); their other extents must agree (shape_error naming both shapes).
template <int Axis = 0, class T, int R, class P>
Var<T, R, P> cat(const std::vector<Var<T, R, P>>& xs) {
  static_assert(R >= 1, "tessera: ad::cat joins Vars of rank 1 or more");
  constexpr int ax = detail::axis_of<Axis, R>("cat");
  if (xs.empty()) throw shape_error("tessera: cat: no Vars to join");
  auto d = xs[0].dims();
  index_t total = 0;
  for (const auto& x : xs) {
    for (int i = 0; i < R; ++i)
      if (i != ax && x.dims()[std::size_t(i)] != d[std::size_t(i)])
        throw shape_error("tessera: cat: shapes " + tessera::detail::format_dims(d) + " and " +
                          tessera::detail::format_dims(x.dims()) + " differ outside axis " + std::to_string(ax));
    total += x.dims()[std::size_t(ax)];
  }
  d[std::size_t(ax)] = total;
  typename Var<T, R, P>::tensor y(d);
  index_t off = 0;
  for (const auto& x : xs) {
    const index_t n = x.dims()[std::size_t(ax)];
    tessera::slice<ax>(y, off, off + n) = x.value().cview();
    off += n;
  }
  return detail::make_from_list<Var<T, R, P>>(std::move(y), [xs](const auto& g) {
    index_t at = 0;
    for (const auto& x : xs) {
      const index_t n = x.dims()[std::size_t(ax)];
      if (x.requires_grad()) detail::accumulate(x, tessera::slice<ax>(g, at, at + n));
      at += n;
    }
  }, xs);
}
template <int Axis = 0, class T, int R, class P>
Var<T, R, P> cat(std::initializer_list<Var<T, R, P>> xs) {
  return cat<Axis>(std::vector<Var<T, R, P>>(xs));
}
template <int Axis = 0, class T, int R, class P, class... More>
  requires(std::is_convertible_v<const More&, const Var<T, R, P>&> && ...)
Var<T, R, P> cat(const Var<T, R, P>& first, const More&... more) {
  return cat<Axis>(std::vector<Var<T, R, P>>{first, more...});
}

/// The Vars (all of one shape) stacked along a new axis at position Axis (0 .. rank; negative: from the end).
template <int Axis = 0, class T, int R, class P>
Var<T, R + 1, P> stack(const std::vector<Var<T, R, P>>& xs) {
  static_assert(Axis >= -(R + 1) && Axis <= R, "tessera: ad::stack: the new axis must be in -(rank+1) .. rank");
  constexpr int ax = Axis < 0 ? Axis + R + 1 : Axis;
  if (xs.empty()) throw shape_error("tessera: stack: no Vars to stack");
  for (const auto& x : xs)
    if (x.dims() != xs[0].dims())
      throw shape_error("tessera: stack: shapes " + tessera::detail::format_dims(xs[0].dims()) + " and " +
                        tessera::detail::format_dims(x.dims()) + " differ");
  dims_t<R + 1> d{};
  for (int i = 0, k = 0; i <= R; ++i) d[std::size_t(i)] = i == ax ? index_t(xs.size()) : xs[0].dims()[std::size_t(k++)];
  typename Var<T, R + 1, P>::tensor y(d);
  for (std::size_t k = 0; k != xs.size(); ++k) tessera::select<ax>(y, index_t(k)) = xs[k].value().cview();
  return detail::make_from_list<Var<T, R + 1, P>>(std::move(y), [xs](const auto& g) {
    for (std::size_t k = 0; k != xs.size(); ++k)
      if (xs[k].requires_grad()) detail::accumulate(xs[k], tessera::select<ax>(g, index_t(k)));
  }, xs);
}
template <int Axis = 0, class T, int R, class P>
Var<T, R + 1, P> stack(std::initializer_list<Var<T, R, P>> xs) {
  return stack<Axis>(std::vector<Var<T, R, P>>(xs));
}
template <int Axis = 0, class T, int R, class P, class... More>
  requires(std::is_convertible_v<const More&, const Var<T, R, P>&> && ...)
Var<T, R + 1, P> stack(const Var<T, R, P>& first, const More&... more) {
  return stack<Axis>(std::vector<Var<T, R, P>>{first, more...});
}

// ---- split, chunk ----

/// Consecutive pieces of Axis with the given sizes (they must add up to its extent), as torch.split with a list.
template <int Axis = 0, class T, int R, class P>
std::vector<Var<T, R, P>> split(const Var<T, R, P>& a, const std::vector<index_t>& sizes) {
  constexpr int ax = detail::axis_of<Axis, R>("split");
  const index_t extent = a.dims()[std::size_t(ax)];
  index_t total = 0;
  bool negative = false;
  for (index_t s : sizes) {
    total += s;
    negative = negative || s < 0;
  }
  if (negative || total != extent) {
    std::string list;
    for (index_t s : sizes) list += (list.empty() ? "" : ", ") + std::to_string(s);
    throw shape_error("tessera: split: sizes [" + list + "] do not add up to extent " + std::to_string(extent) +
                      " of axis " + std::to_string(ax) + " of shape " + tessera::detail::format_dims(a.dims()));
  }
  std::vector<Var<T, R, P>> out;
  out.reserve(sizes.size());
  index_t off = 0;
  for (index_t s : sizes) {
    out.push_back(slice<ax>(a, off, off + s));
    off += s;
  }
  return out;
}
/// Pieces of `size` along Axis, the last one smaller when size does not divide the extent (torch.split with an int).
template <int Axis = 0, class T, int R, class P>
std::vector<Var<T, R, P>> split(const Var<T, R, P>& a, index_t size) {
  constexpr int ax = detail::axis_of<Axis, R>("split");
  const index_t extent = a.dims()[std::size_t(ax)];
  if (size < 1)
    throw shape_error("tessera: split: the piece size must be at least 1, not " + std::to_string(size) + " (shape " +
                      tessera::detail::format_dims(a.dims()) + ")");
  std::vector<index_t> sizes;
  for (index_t off = 0; off < extent; off += size) sizes.push_back(std::min(size, extent - off));
  if (sizes.empty()) sizes.push_back(0);  // an empty axis: one empty piece, as torch
  return split<Axis>(a, sizes);
}
/// At most n pieces of equal size ceil(extent / n) along Axis, the last smaller (torch.chunk).
template <int Axis = 0, class T, int R, class P>
std::vector<Var<T, R, P>> chunk(const Var<T, R, P>& a, index_t n) {
  if (n < 1) throw shape_error("tessera: chunk: the number of chunks must be at least 1, not " + std::to_string(n));
  constexpr int ax = detail::axis_of<Axis, R>("chunk");
  const index_t extent = a.dims()[std::size_t(ax)];
  return split<Axis>(a, std::max<index_t>(1, (extent + n - 1) / n));
}

// ---- index_select, gather ----

/// The sub-tensors of Axis at `indices` (a rank-1 int32 or int64 tensor, on any policy), in their order: the
/// result's Axis has indices.size() entries. Backward adds each gradient slice back at its index (repeated indices
/// accumulate).
template <int Axis, class T, int R, class P, class I, class S, class PI>
auto index_select(const Var<T, R, P>& a, const Tensor<I, S, PI>& indices) {
  static_assert(detail::index_type<I>, "tessera: ad::index_select: the indices must be an int32 or int64 tensor");
  static_assert(S::rank == 1, "tessera: ad::index_select: the indices must be a rank-1 tensor");
  constexpr int ax = detail::axis_of<Axis, R>("index_select");
  auto idx = std::make_shared<const std::vector<I>>(indices.to_vector());  // read on the host, once
  const auto& ix = *idx;
  for (std::size_t k = 0; k != ix.size(); ++k)
    if (ix[k] < 0 || index_t(ix[k]) >= a.dims()[std::size_t(ax)]) detail::index_out_of_range("index_select", ix[k], index_t(k), ax, a.dims());
  auto d = a.dims();
  d[std::size_t(ax)] = index_t(ix.size());
  using V = Var<T, R, P>;
  typename V::tensor y(d);
  for (std::size_t k = 0; k != ix.size(); ++k)
    tessera::select<ax>(y, index_t(k)) = tessera::select<ax>(a.value(), index_t(ix[k]));
  return V::make(std::move(y), [a, idx](const auto& g) {
    if (!a.requires_grad()) return;
    auto& gb = a.node().grad_buffer();
    for (std::size_t k = 0; k != idx->size(); ++k) {
      auto gv = tessera::select<ax>(gb, index_t((*idx)[k]));
      gv = gv + tessera::select<ax>(g, index_t(k));
    }
  }, a);
}

/// torch.gather: out[p] = a[p with its Axis coordinate replaced by index[p]]; `index` (int32 or int64, on the host)
/// has a's rank, the result its shape, and index.size(d) <= a.size(d) for d != Axis. Backward scatter-adds (repeated
/// indices accumulate). Host policies only.
template <int Axis, class T, int R, class P, class I, class S, class PI>
auto gather(const Var<T, R, P>& a, const Tensor<I, S, PI>& index) {
  static_assert(!P::on_device && !PI::on_device,
                "tessera: ad::gather runs on the host (cpu, cpu_threads) only; use ad::index_select, which runs on "
                "every policy, or move the data to the host with tessera::to<cpu>");
  static_assert(detail::index_type<I>, "tessera: ad::gather: the index must be an int32 or int64 tensor");
  static_assert(S::rank == R, "tessera: ad::gather: the index must have the rank of the Var");
  constexpr int ax = detail::axis_of<Axis, R>("gather");
  const dims_t<R> id = index.dims();
  for (int i = 0; i < R; ++i)
    if (i != ax && id[std::size_t(i)] > a.dims()[std::size_t(i)])
      throw shape_error("tessera: gather: the index shape " + tessera::detail::format_dims(id) + " is larger than the shape " +
                        tessera::detail::format_dims(a.dims()) + " along axis " + std::to_string(i));
  auto idx = std::make_shared<const Tensor<I, dyn_shape_t<R>, PI>>(index);
  if (const index_t bad = tessera::detail::gather_first_bad(idx->data(), idx->size(), a.dims()[std::size_t(ax)]); bad >= 0)
    detail::index_out_of_range("gather", idx->data()[bad], bad, ax, a.dims());
  using V = Var<T, R, P>;
  typename V::tensor y(id);
  tessera::detail::cpu_gather_axis<false>(a.value().data(), a.dims(), idx->data(), id, ax, y.data());
  return V::make(std::move(y), [a, idx](const auto& g) {
    if (!a.requires_grad()) return;
    tessera::detail::cpu_gather_axis<true>(a.node().grad_buffer().data(), a.dims(), idx->data(), idx->dims(), ax, g.data());
  }, a);
}

}  // namespace tessera::ad
