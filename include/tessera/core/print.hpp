// Printing tensors and views as PyTorch prints them: `std::cout << t` writes
//
//   tensor([[1.0000, 2.5000, 3.0000],
//           [4.0000, 5.0000, 6.0000]], shape=[2, 3], dtype=float32, policy=cpu)
//
// and tessera::to_string(t) returns the same text. The body is torch 1.13's (torch/_tensor_str.py): one format for
// every element, chosen from the nonzero finite values shown -- whole numbers as `1.`, else fixed with `precision`
// decimals, scientific (`1.0000e+08`) when the largest magnitude exceeds 1e8, the ratio of the largest to the
// smallest exceeds 1000 or (not whole numbers) the smallest is below 1e-4; nan, inf and -inf spelled so; integers
// and bools (`True`, `False`) as they are; all right-aligned to one width, rows wrapped at `linewidth` characters.
// Above `threshold` elements only the first and last `edgeitems` entries of each dimension are shown, with `...`
// between. The suffixes (shape, dtype: float32 float64 bfloat16 int8 uint8 int32 int64 bool, policy) follow torch's
// placement, moved to a new line when the last line would pass `linewidth`.
//
//   tessera::set_printoptions({.precision = 2, .threshold = 50});   // as torch.set_printoptions; fields left out
//   auto o = tessera::get_printoptions();                            // take their defaults (torch's)
//
// Views print their elements in logical order whatever their strides (transposed, sliced, broadcast). Tensors and
// views of the cuda policy are copied to the host first (the span their strides reach; this needs nvcc, as every
// device copy does). Print options are global and not synchronised: set them before printing from several threads.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "tessera/core/policy.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"

namespace tessera {

/// What operator<< shows (torch.set_printoptions' fields and defaults). sci_mode: unset chooses per tensor, true or
/// false forces scientific or fixed notation for floating-point tensors.
struct print_options {
  int precision = 4;         ///< digits after the decimal point
  index_t threshold = 1000;  ///< more elements than this are summarised with "..."
  index_t edgeitems = 3;     ///< entries shown at each end of every summarised dimension
  int linewidth = 80;        ///< characters per line before a row wraps
  std::optional<bool> sci_mode{};
};

namespace detail {
inline print_options& print_options_ref() {
  static print_options o;
  return o;
}
}  // namespace detail

/// Replaces the print options (a field not named in `{.precision = 2}` takes its default). Negative values throw.
inline void set_printoptions(const print_options& o) {
  if (o.precision < 0 || o.threshold < 0 || o.edgeitems < 0 || o.linewidth < 1)
    throw std::invalid_argument("tessera: set_printoptions: precision " + std::to_string(o.precision) + ", threshold " +
                                std::to_string(o.threshold) + ", edgeitems " + std::to_string(o.edgeitems) +
                                " must be >= 0 and linewidth " + std::to_string(o.linewidth) + " >= 1");
  detail::print_options_ref() = o;
}
inline print_options get_printoptions() { return detail::print_options_ref(); }

/// The dtype name shown after a tensor (torch's names without "torch.").
template <class T>
constexpr const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, double>) return "float64";
  else return type_name<T>();
}

namespace detail {

/// The elements as the printer reads them: floating types as double, bool as bool, integers as int64.
template <class T>
using print_value_t = std::conditional_t<is_floating_v<T>, double, std::conditional_t<std::is_same_v<T, bool>, bool, std::int64_t>>;

/// torch's _Formatter: one format and width for every element shown.
template <class V>
class print_formatter {
 public:
  print_formatter(const std::vector<V>& shown, const print_options& o) : prec_(o.precision) {
    if constexpr (!std::is_same_v<V, double>) {
      for (V v : shown) width_ = std::max(width_, plain(v).size());
    } else {
      double lo = 0, hi = 0;
      bool any = false;
      for (double v : shown) {
        if (!std::isfinite(v) || v == 0) continue;
        const double a = std::fabs(v);
        lo = any ? std::min(lo, a) : a;
        hi = any ? std::max(hi, a) : a;
        any = true;
        if (v != std::ceil(v)) int_mode_ = false;
      }
      if (any) {
        if (int_mode_) sci_ = hi / lo > 1000.0 || hi > 1e8;
        else sci_ = hi / lo > 1000.0 || hi > 1e8 || lo < 1e-4;
        for (double v : shown) {
          if (!std::isfinite(v) || v == 0) continue;
          const std::size_t n = sci_ ? c_format("%.*e", prec_, v).size()
                                : int_mode_ ? c_format("%.*f", 0, v).size() + 1  // the "." to come
                                            : c_format("%.*f", prec_, v).size();
          width_ = std::max(width_, n);
        }
      }
      if (o.sci_mode) sci_ = *o.sci_mode;
    }
  }
  std::size_t width() const { return width_; }
  std::string format(V v) const {
    std::string s = plain(v);
    if (s.size() < width_) s.insert(0, width_ - s.size(), ' ');
    return s;
  }

 private:
  /// Python's '{:.Ne}' and '{:.Nf}' are C's %.*e and %.*f for finite values (both correctly rounded).
  static std::string c_format(const char* f, int prec, double v) {
    std::string s(std::size_t(std::snprintf(nullptr, 0, f, prec, v)), '\0');
    std::snprintf(s.data(), s.size() + 1, f, prec, v);
    return s;
  }
  std::string plain(V v) const {
    if constexpr (std::is_same_v<V, bool>) {
      return v ? "True" : "False";
    } else if constexpr (std::is_same_v<V, std::int64_t>) {
      return std::to_string(v);
    } else {
      if (std::isnan(v)) return "nan";  // Python spells every NaN so (printf may write -nan)
      if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
      if (sci_) return c_format("%.*e", prec_, v);
      if (int_mode_) return c_format("%.*f", 0, v) + ".";
      return c_format("%.*f", prec_, v);
    }
  }

  int prec_;
  bool int_mode_ = true, sci_ = false;
  std::size_t width_ = 1;
};

/// A strided block of host memory in logical order: dims, strides and the element at `base`.
template <class T>
struct print_source {
  const T* base;
  std::vector<index_t> dims, strides;
  print_value_t<T> at(index_t off) const {
    if constexpr (std::is_same_v<T, bfloat16>) return double(float(base[off]));
    else return print_value_t<T>(base[off]);
  }
};

template <class T>
class tensor_printer {
 public:
  using V = print_value_t<T>;
  tensor_printer(const print_source<T>& s, const print_options& o) : s_(s), o_(o) {}

  std::string body(int indent) {
    index_t n = 1;
    for (index_t d : s_.dims) n *= d;
    if (n == 0) return "[]";
    summarize_ = n > o_.threshold;
    std::vector<V> shown;
    collect(0, 0, shown);
    fmt_ = std::make_unique<print_formatter<V>>(shown, o_);
    return str(0, 0, indent);
  }

 private:
  bool cut(std::size_t k) const { return summarize_ && s_.dims[k] > 2 * o_.edgeitems; }
  /// The indices shown along dimension k (-1 stands for "...").
  std::vector<index_t> shown_indices(std::size_t k) const {
    std::vector<index_t> idx;
    const index_t d = s_.dims[k];
    if (!cut(k)) {
      for (index_t i = 0; i < d; ++i) idx.push_back(i);
    } else {
      for (index_t i = 0; i < o_.edgeitems; ++i) idx.push_back(i);
      idx.push_back(-1);
      for (index_t i = d - o_.edgeitems; i < d; ++i) idx.push_back(i);
    }
    return idx;
  }
  void collect(std::size_t k, index_t off, std::vector<V>& out) const {
    if (k == s_.dims.size()) {
      out.push_back(s_.at(off));
      return;
    }
    for (index_t i : shown_indices(k))
      if (i >= 0) collect(k + 1, off + i * s_.strides[k], out);
  }
  std::string str(std::size_t k, index_t off, int indent) const {
    const std::size_t rest = s_.dims.size() - k;
    if (rest == 0) return fmt_->format(s_.at(off));
    std::vector<std::string> items;
    for (index_t i : shown_indices(k))
      items.push_back(i < 0 ? (rest == 1 ? " ..." : "...") : str(k + 1, off + i * s_.strides[k], indent + 1));
    if (rest == 1 && summarize_ && o_.edgeitems == 0) items.assign(1, "...");
    std::string sep, r = "[";
    if (rest == 1) {  // a row: as many elements per line as fit
      const double per = std::floor(double(o_.linewidth - indent) / double(fmt_->width() + 2));
      const std::size_t per_line = per < 1 ? 1 : std::size_t(per);
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) r += i % per_line == 0 ? ",\n" + std::string(std::size_t(indent) + 1, ' ') : ", ";
        r += items[i];
      }
    } else {
      sep = "," + std::string(rest - 1, '\n') + std::string(std::size_t(indent) + 1, ' ');
      for (std::size_t i = 0; i < items.size(); ++i) r += (i ? sep : "") + items[i];
    }
    return r + "]";
  }

  const print_source<T>& s_;
  const print_options& o_;
  bool summarize_ = false;
  std::unique_ptr<print_formatter<V>> fmt_;
};

/// torch's _add_suffixes: each suffix after ", ", or on a new line indented when the line would pass linewidth.
inline std::string add_print_suffixes(std::string s, const std::vector<std::string>& suffixes, int indent, int linewidth) {
  const std::size_t nl = s.rfind('\n');
  long last = nl == std::string::npos ? long(s.size()) + 2 : long(s.size() - nl) + 1;
  for (const auto& suf : suffixes) {
    if (last + long(suf.size()) + 2 > linewidth) {
      s += ",\n" + std::string(std::size_t(indent), ' ') + suf;
      last = indent + long(suf.size());
    } else {
      s += ", " + suf;
      last += long(suf.size()) + 2;
    }
  }
  return s + ")";
}

/// The text of a view of any policy, with extra suffixes after shape, dtype and policy (autodiff adds its own).
template <class T, class S, class P>
std::string format_tensor(const View<T, S, P>& v, const std::vector<std::string>& extra = {}) {
  using E = std::remove_const_t<T>;
  constexpr int R = S::rank;
  const print_options& o = print_options_ref();
  print_source<E> src{v.data(), std::vector<index_t>(v.dims().begin(), v.dims().end()),
                      std::vector<index_t>(v.strides().begin(), v.strides().end())};
  std::unique_ptr<E[]> host;
  if constexpr (P::on_device) {  // copy the span the strides reach, then read it on the host
    if (v.size() > 0) {
      index_t lo = 0, hi = 0;
      for (int i = 0; i < R; ++i) {
        const index_t reach = (v.dims()[i] - 1) * v.strides()[i];
        (reach < 0 ? lo : hi) += reach;
      }
      host.reset(new E[std::size_t(hi - lo + 1)]);
      memory<P>::copy_to_host(host.get(), v.data() + lo, std::size_t(hi - lo + 1));
      src.base = host.get() - lo;
    }
  }
  std::vector<std::string> suffixes{"shape=" + format_dims(v.dims()), std::string("dtype=") + dtype_name<E>(),
                                    std::string("policy=") + P::name};
  suffixes.insert(suffixes.end(), extra.begin(), extra.end());
  const int indent = 7;  // "tensor("
  tensor_printer<E> pr(src, o);
  return add_print_suffixes("tensor(" + pr.body(indent), suffixes, indent, o.linewidth);
}
}  // namespace detail

/// The text operator<< writes for a tensor or view.
template <class T, class S, class P>
std::string to_string(const View<T, S, P>& v) { return detail::format_tensor(v); }
template <class T, class S, class P>
std::string to_string(const Tensor<T, S, P>& t) { return detail::format_tensor(t.cview()); }

template <class T, class S, class P>
std::ostream& operator<<(std::ostream& os, const View<T, S, P>& v) { return os << detail::format_tensor(v); }
template <class T, class S, class P>
std::ostream& operator<<(std::ostream& os, const Tensor<T, S, P>& t) { return os << detail::format_tensor(t.cview()); }

}  // namespace tessera
