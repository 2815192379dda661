// What the int8 model tests share: seeded images [n, 2, 8, 6], PyTorch's rounding of one value (the plain-loop
// simulations' quantize), and the comparison of an int8 model's logits with its float model's.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <tessera/quant/quantize.hpp>
#include <tessera/tessera.hpp>

namespace quant_test {

/// n images [n, 2, 8, 6] with values in [-1.5, 2.5), from a seeded linear congruential generator.
inline tessera::Tensor<float, tessera::Shape<tessera::dyn, 2, 8, 6>> images(tessera::index_t n, std::uint32_t seed) {
  tessera::Tensor<float, tessera::Shape<tessera::dyn, 2, 8, 6>> x(n);
  std::uint32_t s = seed;
  for (tessera::index_t i = 0; i < x.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    x.data()[i] = float(s >> 8) / float(1 << 24) * 4.0f - 1.5f;
  }
  return x;
}

inline float clampf(float v, float lo, float hi) { return std::min(std::max(v, lo), hi); }
/// PyTorch's quantize_val: x times the reciprocal of the scale, rounded half to even, plus the zero point, clamped.
inline int quantize_ref(float x, tessera::quant::qparams qp) {
  return int(clampf(std::nearbyint(x * (1.0f / qp.scale)) + float(qp.zero_point), 0, 255));
}

/// How far int8 logits lq are from float logits lf ([n, classes] each): the largest difference, the largest float
/// magnitude, and the number of rows whose argmax agrees.
struct agreement {
  double err = 0, mag = 0;
  int agree = 0;
};
template <class L>
agreement compare_logits(const L& lf, const L& lq) {
  agreement a;
  const tessera::index_t n = lf.dims()[0], classes = lf.dims()[1];
  for (tessera::index_t i = 0; i < n; ++i) {
    tessera::index_t af = 0, aq = 0;
    for (tessera::index_t j = 0; j < classes; ++j) {
      a.err = std::max(a.err, double(std::fabs(lf(i, j) - lq(i, j))));
      a.mag = std::max(a.mag, double(std::fabs(lf(i, j))));
      if (lf(i, j) > lf(i, af)) af = j;
      if (lq(i, j) > lq(i, aq)) aq = j;
    }
    a.agree += af == aq;
  }
  return a;
}

}  // namespace quant_test
