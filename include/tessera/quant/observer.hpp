// Observers: watch the values a tensor takes over calibration batches and choose its quantization parameters.
//   minmax_observer           the whole range seen
//   moving_average_observer   an exponential moving average of each batch's min and max (outliers of one batch fade)
//   histogram_observer        a histogram of the values; the range keeps a given fraction of them (percentile),
//                             clipping rare outliers to spend the 256 levels on the bulk
// params<Q>(reduce_range) gives the parameters (affine_qparams): with reduce_range, over 7 bits as PyTorch's observers.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/quant/quantize.hpp"

namespace tessera::quant {

namespace detail {
inline std::pair<float, float> finite_range(const float* p, index_t n) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (index_t i = 0; i < n; ++i) {
    const float v = p[i];
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  return {lo, hi};
}
}  // namespace detail

struct minmax_observer {
  float lo = std::numeric_limits<float>::infinity(), hi = -std::numeric_limits<float>::infinity();
  void observe(const float* p, index_t n) {
    const auto [a, b] = detail::finite_range(p, n);
    lo = std::min(lo, a), hi = std::max(hi, b);
  }
  template <class T>
  void observe(const T& t) { observe(t.data(), t.size()); }
  template <class Q = std::uint8_t>
  qparams params(bool reduce_range = false) const { return affine_qparams<Q>(lo, hi, reduce_range); }
};

struct moving_average_observer {
  float momentum = 0.01f;  ///< weight of each new batch (PyTorch's averaging_constant)
  float lo = 0, hi = 0;
  bool seen = false;
  void observe(const float* p, index_t n) {
    const auto [a, b] = detail::finite_range(p, n);
    if (!(a <= b)) return;
    if (!seen) lo = a, hi = b, seen = true;
    else lo += momentum * (a - lo), hi += momentum * (b - hi);
  }
  template <class T>
  void observe(const T& t) { observe(t.data(), t.size()); }
  template <class Q = std::uint8_t>
  qparams params(bool reduce_range = false) const {
    if (!seen) throw std::invalid_argument("tessera::quant::moving_average_observer: nothing was observed");
    return affine_qparams<Q>(lo, hi, reduce_range);
  }
};

/// Keeps `bins` bins over a range that doubles whenever a value falls outside it (re-binning what it has), so one
/// pass over the calibration data suffices.
struct histogram_observer {
  double keep = 0.9999;  ///< fraction of the observed values inside the chosen range
  int bins = 2048;
  double lo = 0, hi = 0;  ///< the histogram's range (always holds 0)
  std::vector<double> count;

  void observe(const float* p, index_t n) {
    const auto [a, b] = detail::finite_range(p, n);
    if (!(a <= b)) return;
    if (count.empty()) count.assign(std::size_t(bins), 0.0), lo = std::min(0.0, double(a)), hi = std::max(0.0, double(b));
    if (hi == lo) hi = lo + 1e-6;
    while (a < lo || b > hi) grow(a < lo, b > hi);
    const float inv = float(bins / (hi - lo)), base = float(lo);
    for (index_t i = 0; i < n; ++i) {
      const float v = (p[i] - base) * inv;
      if (!(v >= 0.0f)) {  // NaN, or below lo by rounding
        if (std::isfinite(p[i])) count[0] += 1;
        continue;
      }
      count[std::size_t(std::min(bins - 1, int(v)))] += 1;
    }
  }
  template <class T>
  void observe(const T& t) { observe(t.data(), t.size()); }

  /// The range holding `keep` of the values, trimming the two tails equally (always holding 0).
  std::pair<float, float> range() const {
    if (count.empty()) throw std::invalid_argument("tessera::quant::histogram_observer: nothing was observed");
    double total = 0;
    for (double c : count) total += c;
    const double tail = total * (1.0 - keep) / 2;
    const double w = (hi - lo) / bins;
    int a = 0, b = bins - 1;
    for (double s = 0; a < bins - 1 && s + count[std::size_t(a)] <= tail; ++a) s += count[std::size_t(a)];
    for (double s = 0; b > 0 && s + count[std::size_t(b)] <= tail; --b) s += count[std::size_t(b)];
    return {float(std::min(0.0, lo + a * w)), float(std::max(0.0, lo + (b + 1) * w))};
  }
  template <class Q = std::uint8_t>
  qparams params(bool reduce_range = false) const {
    const auto [a, b] = range();
    return affine_qparams<Q>(a, b, reduce_range);
  }

 private:
  void grow(bool down, bool up) {  // double the range on one side; pairs of bins merge
    std::vector<double> c(std::size_t(bins), 0.0);
    const double span = hi - lo;
    if (up || !down) {
      for (int k = 0; k < bins; ++k) c[std::size_t(k / 2)] += count[std::size_t(k)];
      hi = lo + 2 * span;
    } else {
      for (int k = 0; k < bins; ++k) c[std::size_t(bins / 2 + k / 2)] += count[std::size_t(k)];
      lo = hi - 2 * span;
    }
    count.swap(c);
  }
};

}  // namespace tessera::quant
