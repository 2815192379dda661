// Pruning masks, as torch.nn.utils.prune (PyTorch 1.13) in C++: magnitude pruning of single tensors (unstructured,
// the smallest |w|), of many tensors at once (global), and of whole slices (structured: output channels or neurons by
// their L1/L2/Ln norm), with masks kept through fine-tuning and removed to make the pruning permanent.
//
//   prune::pruning<float> p;
//   p.l1_unstructured(net, "0.weight", 0.3);             // 30 % of 0.weight's entries: the smallest |w|
//   p.l1_unstructured(net, "3.weight", 100);             // an integer is a count: 100 entries
//   p.ln_structured(net, "7.weight", 0.5, 2, 0);         // half of 7.weight's rows (dim 0) by their L2 norm
//   p.global_unstructured(net, 0.8);                     // 80 % of all weights of rank >= 2, smallest |w| overall
//   for (...) { opt.zero_grad(); loss.backward(); p.mask_gradients(net); opt.step(); p.apply(net); }
//   p.remove("0.weight");                                // permanent: the mask goes, the zeros stay
//   std::puts(p.report(net).str().c_str());              // per parameter and global sparsity
//
// What it guarantees:
// * amount: a floating-point amount is a fraction in [0, 1], an integer a count in [0, entries]; the number of entries
//   (or slices) pruned is PyTorch's _compute_nparams_toprune, round(amount * n) with ties to even as Python's round.
//   Anything else is std::invalid_argument naming the call, the parameter, its shape and the amount.
// * Exactly that many entries are pruned, even among equal magnitudes (ties go to the lower flat index: PyTorch's topk
//   leaves the order of ties unspecified). Structured pruning keeps the slices of largest norm (ties: lower index).
// * Masks combine as PyTorch's PruningContainer: pruning a parameter again prunes among the entries (or, structured,
//   the slices along `dim` with any entry) still kept, the amount relative to those; the masks multiply.
// * Every pruning call multiplies the weight by its mask at once (PyTorch's weight = weight_orig * mask), and scores
//   magnitudes and norms on the masked weight. apply(net) multiplies every masked parameter again, mask_gradients(net)
//   zeroes the gradients' masked entries: called around an optimizer step (mask_gradients before, apply after) the
//   masked entries stay exactly 0 through SGD with momentum and weight decay or Adam, whose state from before the
//   pruning would otherwise move them.
// * Masks are host vectors of 0 and 1 (T) over the parameter's elements, row-major, named as the model names its
//   parameters ("0.weight", "3.main.1.bias"); parameters of a device policy are read and written through copies.
// Models: anything with for_each_parameter(f), f(name, ad::Var&): nn::Sequential, compositions, a layer's state.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/nn/parameter.hpp"

namespace tessera::prune {

/// How much to prune, as PyTorch's `amount`: a floating-point number is a fraction of the entries (in [0, 1]), an
/// integer a count of them.
struct amount {
  bool is_count = false;
  double fraction = 0;
  std::int64_t count = 0;
  template <class F>
    requires std::is_floating_point_v<F>
  constexpr amount(F f) : fraction(double(f)) {}
  template <class I>
    requires(std::is_integral_v<I> && !std::is_same_v<I, bool>)
  constexpr amount(I n) : is_count(true), count(std::int64_t(n)) {}
  std::string str() const {
    std::ostringstream s;
    if (is_count) s << count << " (a count)";
    else s << fraction << " (a fraction)";
    return s.str();
  }
};

namespace detail {
inline std::string format_dims(const std::vector<index_t>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}
/// "<call>: parameter "<name>" <dims>" for error messages.
inline std::string where(const std::string& call, const std::string& name, const std::vector<index_t>& dims) {
  return "tessera::prune::" + call + ": parameter \"" + name + "\" " + format_dims(dims);
}
}  // namespace detail

/// PyTorch's _validate_pruning_amount and _compute_nparams_toprune: how many of n entries (or slices) `a` prunes.
/// `what` opens the error message (the call, the parameter and its shape).
inline index_t count_to_prune(const amount& a, index_t n, const std::string& what) {
  if (a.is_count) {
    if (a.count < 0 || a.count > n)
      throw std::invalid_argument(what + ": amount " + a.str() + " must be a count in [0, " + std::to_string(n) +
                                  "] (the entries it may prune) or a fraction in [0, 1]");
    return index_t(a.count);
  }
  if (!(a.fraction >= 0.0 && a.fraction <= 1.0))
    throw std::invalid_argument(what + ": amount " + a.str() + " must be a fraction in [0, 1] or an integer count");
  return index_t(std::nearbyint(a.fraction * double(n)));  // Python's round: ties to even (the default rounding mode)
}

/// The norm of a slice for structured pruning: n = 1 (L1), 2 (L2), any p >= 1 ((sum |x|^p)^(1/p)) or infinity (max).
inline void check_norm(double n, const std::string& what) {
  if (!(n >= 1.0))
    throw std::invalid_argument(what + ": the norm " + std::to_string(n) + " must be >= 1 (1: L1, 2: L2, infinity: max)");
}

/// l1_unstructured over n scores: among the entries `prev` keeps (nullptr: all), the count_to_prune(a, kept) with the
/// smallest |score| (ties: the lower index) become 0; returns prev with them zeroed (0/1 values).
template <class T>
std::vector<T> l1_unstructured_mask(const T* scores, const T* prev, index_t n, const amount& a, const std::string& what) {
  std::vector<index_t> kept;
  kept.reserve(std::size_t(n));
  for (index_t i = 0; i < n; ++i)
    if (!prev || prev[i] != T(0)) kept.push_back(i);
  const index_t k = count_to_prune(a, index_t(kept.size()), what);
  std::vector<T> mask(std::size_t(n), T(0));
  for (index_t i : kept) mask[std::size_t(i)] = T(1);
  if (k == 0) return mask;
  auto smaller = [&](index_t x, index_t y) {
    const T ax = std::abs(scores[x]), ay = std::abs(scores[y]);
    return ax < ay || (ax == ay && x < y);
  };
  std::nth_element(kept.begin(), kept.begin() + (k - 1), kept.end(), smaller);
  for (index_t j = 0; j < k; ++j) mask[std::size_t(kept[std::size_t(j)])] = T(0);
  return mask;
}

/// ln_structured over a tensor of `dims`: the slices along `dim` that `prev` keeps (any nonzero entry; nullptr: all)
/// are scored by the n-norm of `scores` over the slice; the count_to_prune(a, kept slices) of smallest norm are pruned
/// (the largest kept, ties to the lower index); returns prev times the slice mask.
template <class T>
std::vector<T> ln_structured_mask(const T* scores, const T* prev, const std::vector<index_t>& dims, const amount& a, double n,
                                  int dim, const std::string& what) {
  const int rank = int(dims.size());
  if (rank < 2)
    throw std::invalid_argument(what + ": structured pruning needs a tensor of rank 2 or more (PyTorch's rule); this one has rank " +
                                std::to_string(rank));
  if (dim < -rank || dim >= rank)
    throw std::invalid_argument(what + ": dim " + std::to_string(dim) + " is out of range for rank " + std::to_string(rank));
  if (dim < 0) dim += rank;
  check_norm(n, what);
  index_t outer = 1, inner = 1;
  for (int i = 0; i < dim; ++i) outer *= dims[std::size_t(i)];
  for (int i = dim + 1; i < rank; ++i) inner *= dims[std::size_t(i)];
  const index_t C = dims[std::size_t(dim)];
  std::vector<double> norm(std::size_t(C), 0.0);
  std::vector<char> alive(std::size_t(C), prev ? 0 : 1);
  for (index_t o = 0; o < outer; ++o)
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < inner; ++i) {
        const index_t e = (o * C + c) * inner + i;
        const double v = std::abs(double(scores[e]));
        double& s = norm[std::size_t(c)];
        if (std::isinf(n)) s = std::max(s, v);
        else if (n == 1.0) s += v;
        else if (n == 2.0) s += v * v;
        else s += std::pow(v, n);
        if (prev && prev[e] != T(0)) alive[std::size_t(c)] = 1;
      }
  std::vector<index_t> kept;
  for (index_t c = 0; c < C; ++c)
    if (alive[std::size_t(c)]) kept.push_back(c);
  const index_t k = count_to_prune(a, index_t(kept.size()), what + " (slices along dim " + std::to_string(dim) + ")");
  // (the p-th root is monotonic: the order of the sums is the order of the norms)
  std::stable_sort(kept.begin(), kept.end(), [&](index_t x, index_t y) { return norm[std::size_t(x)] > norm[std::size_t(y)]; });
  std::vector<char> keep(std::size_t(C), 0);
  for (std::size_t j = 0; j + std::size_t(k) < kept.size(); ++j) keep[std::size_t(kept[j])] = 1;
  std::vector<T> mask(std::size_t(outer * C * inner));
  for (index_t o = 0; o < outer; ++o)
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < inner; ++i) {
        const index_t e = (o * C + c) * inner + i;
        mask[std::size_t(e)] = keep[std::size_t(c)] && (!prev || prev[e] != T(0)) ? T(1) : T(0);
      }
  return mask;
}

/// One line per masked parameter and the total: entries, pruned (mask zeros) and sparsity.
struct sparsity_report {
  struct entry {
    std::string name;
    std::vector<index_t> dims;
    index_t size = 0, zeros = 0;
    double sparsity() const { return size ? double(zeros) / double(size) : 0.0; }
  };
  std::vector<entry> parameters;
  index_t size = 0, zeros = 0;
  double global_sparsity() const { return size ? double(zeros) / double(size) : 0.0; }
  std::string str() const {
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    for (const auto& e : parameters)
      s << "sparsity in " << e.name << " " << detail::format_dims(e.dims) << ": " << 100 * e.sparsity() << " % (" << e.zeros
        << " of " << e.size << ")\n";
    s << "global sparsity: " << 100 * global_sparsity() << " % (" << zeros << " of " << size << ")\n";
    return s.str();
  }
};

/// Every parameter of `net` (for_each_parameter) as a parameter_ref, in the model's order.
template <class T, class Model>
std::vector<nn::parameter_ref<T>> parameters_of(Model& net) {
  std::vector<nn::parameter_ref<T>> out;
  net.for_each_parameter([&](const std::string& name, auto& v) {
    if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(v)>::value_type, T>)
      out.push_back(nn::make_parameter_ref(name, v));
  });
  return out;
}

/// The masks of a model's parameters by name, and the pruning methods that make them.
template <class T = float>
class pruning {
 public:
  /// Prunes the entries of `name` with the smallest |w| (among those still kept): torch's l1_unstructured.
  template <class Model>
  void l1_unstructured(Model& net, const std::string& name, amount a) {
    auto p = find(net, name, "l1_unstructured");
    std::vector<T> w = scores(p);
    set(p, l1_unstructured_mask(w.data(), previous(name), p.size, a, detail::where("l1_unstructured", name, p.dims)), w);
  }

  /// Prunes whole slices of `name` along `dim` (0: output channels of a Conv2d, neurons of a Linear) with the smallest
  /// n-norm (1: L1, 2: L2, infinity: max): torch's ln_structured.
  template <class Model>
  void ln_structured(Model& net, const std::string& name, amount a, double n, int dim = 0) {
    auto p = find(net, name, "ln_structured");
    std::vector<T> w = scores(p);
    set(p, ln_structured_mask(w.data(), previous(name), p.dims, a, n, dim, detail::where("ln_structured", name, p.dims)), w);
  }

  /// Prunes the entries with the smallest |w| across all the named parameters together (the amount of their total
  /// entries still kept): torch's global_unstructured with L1Unstructured. Ties: the lower index in `names`' order.
  template <class Model>
  void global_unstructured(Model& net, const std::vector<std::string>& names, amount a) {
    if (names.empty()) throw std::invalid_argument("tessera::prune::global_unstructured: no parameters named");
    std::vector<nn::parameter_ref<T>> ps;
    std::vector<T> all, prev;
    std::vector<std::vector<T>> ws;
    for (const auto& name : names) {
      for (const auto& q : ps)
        if (q.name == name) throw std::invalid_argument("tessera::prune::global_unstructured: parameter \"" + name + "\" is named twice");
      ps.push_back(find(net, name, "global_unstructured"));
      ws.push_back(scores(ps.back()));
      all.insert(all.end(), ws.back().begin(), ws.back().end());
      const T* m = previous(name);
      if (m) prev.insert(prev.end(), m, m + ps.back().size);
      else prev.insert(prev.end(), std::size_t(ps.back().size), T(1));
    }
    std::string what = "tessera::prune::global_unstructured: parameters";
    for (std::size_t i = 0; i < ps.size(); ++i) what += (i ? ", \"" : " \"") + ps[i].name + "\" " + detail::format_dims(ps[i].dims);
    const std::vector<T> mask = l1_unstructured_mask(all.data(), prev.data(), index_t(all.size()), a, what);
    std::size_t off = 0;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      const std::size_t n = std::size_t(ps[i].size);
      set(ps[i], std::vector<T>(mask.begin() + std::ptrdiff_t(off), mask.begin() + std::ptrdiff_t(off + n)), ws[i]);
      off += n;
    }
  }
  /// global_unstructured over every weight of rank 2 or more (the Linear and Conv2d weights; "weight" names only, so
  /// no BatchNorm or bias).
  template <class Model>
  void global_unstructured(Model& net, amount a) {
    std::vector<std::string> names;
    for (const auto& p : parameters_of<T>(net))
      if (p.dims.size() >= 2 && p.name.size() >= 6 && p.name.compare(p.name.size() - 6, 6, "weight") == 0) names.push_back(p.name);
    global_unstructured(net, names, a);
  }

  /// Combines `mask` (0/1 over the parameter's elements) with the parameter's mask: torch's custom_from_mask.
  template <class Model>
  void custom_from_mask(Model& net, const std::string& name, const std::vector<T>& mask) {
    auto p = find(net, name, "custom_from_mask");
    if (index_t(mask.size()) != p.size)
      throw std::invalid_argument(detail::where("custom_from_mask", name, p.dims) + ": the mask has " + std::to_string(mask.size()) +
                                  " elements, the parameter " + std::to_string(p.size));
    std::vector<T> m(mask.size());
    const T* prev = previous(name);
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = mask[i] != T(0) && (!prev || prev[i] != T(0)) ? T(1) : T(0);
    set(p, std::move(m), read(p));
  }

  /// Multiplies every masked parameter by its mask (after an optimizer step).
  template <class Model>
  void apply(Model& net) const {
    for_masked(net, "apply", [&](nn::parameter_ref<T>& p, const std::vector<T>& m) {
      multiply(p, m, p.value(), [&](T* h) { p.ops->to_host(h, p.value(), p.size); }, [&](const T* h) { p.ops->from_host(p.value(), h, p.size); });
    });
  }
  /// Zeroes the masked entries of every masked parameter's gradient (before an optimizer step; a parameter without a
  /// gradient yet is skipped).
  template <class Model>
  void mask_gradients(Model& net) const {
    for_masked(net, "mask_gradients", [&](nn::parameter_ref<T>& p, const std::vector<T>& m) {
      T* g = p.grad();
      if (!g) return;
      multiply(p, m, g, [&](T* h) { p.ops->to_host(h, g, p.size); }, [&](const T* h) { p.ops->from_host(g, h, p.size); });
    });
  }

  /// Makes the pruning of `name` permanent: the mask is dropped, the weight keeps its zeros (torch's remove).
  void remove(const std::string& name) {
    if (!masks_.erase(name))
      throw std::invalid_argument("tessera::prune::remove: parameter \"" + name + "\" has no mask" + known());
  }
  void remove_all() { masks_.clear(); }

  bool has_mask(const std::string& name) const { return masks_.count(name) != 0; }
  /// The mask of `name` (0/1 over its elements, row-major); std::invalid_argument if it has none.
  const std::vector<T>& mask(const std::string& name) const {
    auto it = masks_.find(name);
    if (it == masks_.end()) throw std::invalid_argument("tessera::prune::mask: parameter \"" + name + "\" has no mask" + known());
    return it->second.mask;
  }
  /// The shape of the masked parameter `name`.
  const std::vector<index_t>& dims(const std::string& name) const {
    mask(name);
    return masks_.at(name).dims;
  }
  /// The masked parameters' names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, e] : masks_) out.push_back(n);
    return out;
  }
  /// The fraction of `name`'s entries its mask prunes.
  double sparsity(const std::string& name) const {
    const auto& m = mask(name);
    return m.empty() ? 0.0 : double(std::count(m.begin(), m.end(), T(0))) / double(m.size());
  }
  /// Per masked parameter (in the model's order) and over all of them: the entries the masks prune.
  template <class Model>
  sparsity_report report(Model& net) const {
    sparsity_report r;
    for (const auto& p : parameters_of<T>(net)) {
      auto it = masks_.find(p.name);
      if (it == masks_.end()) continue;
      const auto& m = it->second.mask;
      const index_t z = index_t(std::count(m.begin(), m.end(), T(0)));
      r.parameters.push_back({p.name, p.dims, p.size, z});
      r.size += p.size;
      r.zeros += z;
    }
    return r;
  }

 private:
  struct entry {
    std::vector<index_t> dims;
    std::vector<T> mask;
  };

  std::string known() const {
    std::string s = masks_.empty() ? " (no parameter is masked)" : " (masked: ";
    std::size_t i = 0;
    for (const auto& [n, e] : masks_) s += (i++ ? ", " : "") + n;
    return masks_.empty() ? s : s + ")";
  }

  const T* previous(const std::string& name) const {
    auto it = masks_.find(name);
    return it == masks_.end() ? nullptr : it->second.mask.data();
  }

  template <class Model>
  static nn::parameter_ref<T> find(Model& net, const std::string& name, const char* call) {
    std::vector<nn::parameter_ref<T>> ps = parameters_of<T>(net);
    for (auto& p : ps)
      if (p.name == name) return std::move(p);
    std::string have;
    for (std::size_t i = 0; i < ps.size(); ++i) have += (i ? ", " : "") + ps[i].name;
    throw std::invalid_argument(std::string("tessera::prune::") + call + ": the model has no parameter \"" + name +
                                "\" (its parameters: " + have + ")");
  }

  static std::vector<T> read(nn::parameter_ref<T>& p) {
    std::vector<T> w(std::size_t(p.size));
    p.ops->to_host(w.data(), p.value(), p.size);
    return w;
  }

  /// The parameter's value (host copy) times its mask: the magnitudes pruning scores (PyTorch's importance scores
  /// default to the masked weight).
  std::vector<T> scores(nn::parameter_ref<T>& p) const {
    std::vector<T> w = read(p);
    if (const T* m = previous(p.name))
      for (std::size_t i = 0; i < w.size(); ++i) w[i] *= m[i];
    return w;
  }

  /// Stores mask m for p and multiplies p's value (w: its host copy) by it.
  void set(nn::parameter_ref<T>& p, std::vector<T> m, std::vector<T> w) {
    for (std::size_t i = 0; i < w.size(); ++i) w[i] *= m[i];
    p.ops->from_host(p.value(), w.data(), p.size);
    masks_[p.name] = entry{p.dims, std::move(m)};
  }

  /// x[i] *= m[i] over p's elements at `x` (host memory), or through a host copy (device memory).
  template <class Get, class Put>
  static void multiply(const nn::parameter_ref<T>& p, const std::vector<T>& m, T* x, Get get, Put put) {
    if (!p.on_device) {
      for (index_t i = 0; i < p.size; ++i) x[i] *= m[std::size_t(i)];
      return;
    }
    std::vector<T> h(std::size_t(p.size));
    get(h.data());
    for (std::size_t i = 0; i < h.size(); ++i) h[i] *= m[i];
    put(h.data());
  }

  template <class Model, class F>
  void for_masked(Model& net, const char* call, F&& f) const {
    std::size_t seen = 0;
    for (auto& p : parameters_of<T>(net)) {
      auto it = masks_.find(p.name);
      if (it == masks_.end()) continue;
      if (it->second.dims != p.dims)
        throw std::invalid_argument(detail::where(call, p.name, p.dims) + ": its mask was made for shape " +
                                    detail::format_dims(it->second.dims));
      f(p, it->second.mask);
      ++seen;
    }
    if (seen != masks_.size())
      for (const auto& [n, e] : masks_) {
        bool found = false;
        for (const auto& p : parameters_of<T>(net)) found = found || p.name == n;
        if (!found)
          throw std::invalid_argument(std::string("tessera::prune::") + call + ": the model has no parameter \"" + n +
                                      "\", which has a mask " + detail::format_dims(e.dims));
      }
  }

  std::map<std::string, entry> masks_;
};

/// Prunes the entries of one Var (a parameter outside a model) with the smallest |w|, in place; returns the mask.
template <class T, int R, class P>
std::vector<T> l1_unstructured(ad::Var<T, R, P>& v, amount a, const std::string& name = "var") {
  auto p = nn::make_parameter_ref(name, v);
  std::vector<T> w(std::size_t(p.size));
  p.ops->to_host(w.data(), p.value(), p.size);
  std::vector<T> m = l1_unstructured_mask<T>(w.data(), nullptr, p.size, a, detail::where("l1_unstructured", name, p.dims));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] *= m[i];
  p.ops->from_host(p.value(), w.data(), p.size);
  return m;
}
/// Prunes whole slices of one Var along `dim` by their n-norm, in place; returns the mask.
template <class T, int R, class P>
std::vector<T> ln_structured(ad::Var<T, R, P>& v, amount a, double n, int dim = 0, const std::string& name = "var") {
  auto p = nn::make_parameter_ref(name, v);
  std::vector<T> w(std::size_t(p.size));
  p.ops->to_host(w.data(), p.value(), p.size);
  std::vector<T> m = ln_structured_mask<T>(w.data(), nullptr, p.dims, a, n, dim, detail::where("ln_structured", name, p.dims));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] *= m[i];
  p.ops->from_host(p.value(), w.data(), p.size);
  return m;
}

}  // namespace tessera::prune
