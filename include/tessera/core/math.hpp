// Elementwise math on scalars and SIMD packets. Float packets use Cephes-style polynomials so the
// vector lanes and the scalar tail give the same bits; double packets go lane by lane through <cmath>;
// device code uses CUDA's own functions.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tessera/core/simd.hpp"

namespace tessera::math {

#if TESSERA_SIMD
namespace detail {
using simd::vec;

template <int N>
TS_INLINE vec<float, N> bits_to_float(vec<std::int32_t, N> i) { return reinterpret_cast<vec<float, N>&>(i); }
template <int N>
TS_INLINE vec<std::int32_t, N> float_to_bits(vec<float, N> f) { return reinterpret_cast<vec<std::int32_t, N>&>(f); }

template <int N>
TS_INLINE vec<float, N> sel(vec<std::int32_t, N> m, vec<float, N> a, vec<float, N> b) { return m ? a : b; }

/// 1/x: with AVX-512, a 14-bit estimate refined by one Newton step (about 1 ulp, far cheaper than a divide).
template <int N>
TS_INLINE vec<float, N> recipf_v(vec<float, N> x) {
#if defined(__AVX512F__)
  if constexpr (N == 16) {
    vec<float, N> r = (vec<float, N>)_mm512_rcp14_ps((__m512)x);
    return r * (2.0f - x * r);
  } else
#endif
    return 1.0f / x;
}

// exp(x) = 2^n * p(r), x = n ln2 + r, |r| <= ln2/2 (Cephes' polynomial). x must already be in range.
template <int N>
TS_INLINE vec<float, N> exp_reduced(vec<float, N> x, vec<std::int32_t, N>& ni) {
  using V = vec<float, N>;
  const V magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  V n = (x * 1.44269504088896341f + magic) - magic;
  V r = x - n * 0.693359375f + n * 2.12194440e-4f;
  V z = r * r;
  V y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
         1.6666665459e-1f) * r + 5.0000001201e-1f;
  ni = __builtin_convertvector(n, vec<std::int32_t, N>);
  return y * z + r + 1.0f;
}

template <int N>
TS_INLINE vec<float, N> expf_v(vec<float, N> x) {
  using V = vec<float, N>;
  const V x0 = x;
  // beyond these exp is inf or 0 in float; inside, 2^n is applied in two halves so subnormal results survive
  x = sel<N>(x > 88.8f, V{} + 88.8f, x);
  x = sel<N>(x < -104.0f, V{} - 104.0f, x);
  vec<std::int32_t, N> ni;
  const V y = exp_reduced<N>(x, ni);
  auto n1 = ni >> 1, n2 = ni - n1;
  V res = y * bits_to_float<N>((n1 + 127) << 23) * bits_to_float<N>((n2 + 127) << 23);
  res = sel<N>(x0 > 88.72283935546875f, V{} + __builtin_inff(), res);
  res = sel<N>(x0 < -103.972084045410f, V{}, res);
  return sel<N>(x0 != x0, x0, res);
}

// exp without the inf/0/NaN edges, for sigmoid: exp(-x) beyond +-88 only needs to be huge or tiny there.
template <int N>
TS_INLINE vec<float, N> expf_clamped_v(vec<float, N> x) {
  using V = vec<float, N>;
  x = sel<N>(x > 88.3762626647949f, V{} + 88.3762626647949f, x);
  x = sel<N>(x < -87.3365478515625f, V{} - 87.3365478515625f, x);
  vec<std::int32_t, N> ni;
  return exp_reduced<N>(x, ni) * bits_to_float<N>((ni + 127) << 23);
}

template <int N>
TS_INLINE vec<float, N> logf_v(vec<float, N> x) {
  using V = vec<float, N>;
  using I = vec<std::int32_t, N>;
  const V x0 = x;
  const I subnormal = x < 1.17549435e-38f;
  x = sel<N>(subnormal, x * 8388608.0f, x);  // scale subnormals by 2^23 into the normal range
  I bits = float_to_bits<N>(x);
  V e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, V);
  e = sel<N>(subnormal, e - 23.0f, e);
  V m = bits_to_float<N>((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  I small = m < 0.707106781186547524f;
  e = sel<N>(small, e - 1.0f, e);
  m = sel<N>(small, m + m - 1.0f, m - 1.0f);
  V z = m * m;
  V y = ((((((((7.0376836292e-2f * m - 1.1514610310e-1f) * m + 1.1676998740e-1f) * m - 1.2420140846e-1f) * m +
              1.4249322787e-1f) * m - 1.6668057665e-1f) * m + 2.0000714765e-1f) * m - 2.4999993993e-1f) * m +
        3.3333331174e-1f) * m * z;
  y = y + e * -2.12194440e-4f - 0.5f * z;
  V r = m + y + e * 0.693359375f;
  r = sel<N>(x0 == 0.0f, V{} - __builtin_inff(), r);
  r = sel<N>(x0 < 0.0f, V{} + __builtin_nanf(""), r);
  r = sel<N>(x0 == __builtin_inff(), x0, r);
  r = sel<N>(x0 != x0, x0, r);
  return r;
}

// Minimax rational approximation of degree 13/6 on [-7.9053, 7.9053] (beyond it tanh rounds to +-1 in float),
// the form XLA and Eigen use: no exp, one reciprocal, a few ulp of error.
template <int N>
TS_INLINE vec<float, N> tanhf_v(vec<float, N> x) {
  using V = vec<float, N>;
  const V x0 = x;
  x = sel<N>(x > 7.90531110763549805f, V{} + 7.90531110763549805f, x);
  x = sel<N>(x < -7.90531110763549805f, V{} - 7.90531110763549805f, x);
  const V x2 = x * x;
  V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const V r = p * recipf_v<N>(q);
  const V ax = sel<N>(x0 < 0.0f, -x0, x0);
  return sel<N>(ax < 0.0004f, x0, r);
}

// 1/(1+exp(-x)); below x = -87.3 the result (under 1e-38) is returned as exp(x) would give it, flushed near 0.
template <int N>
TS_INLINE vec<float, N> sigmoidf_v(vec<float, N> x) { return recipf_v<N>(1.0f + expf_clamped_v<N>(-x)); }

// Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
template <int N>
TS_INLINE vec<float, N> erff_v(vec<float, N> x) {
  using V = vec<float, N>;
  V ax = sel<N>(x < 0.0f, -x, x);
  V t = 1.0f / (1.0f + 0.3275911f * ax);
  V p = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  V r = 1.0f - p * expf_v<N>(-ax * ax);
  return sel<N>(x < 0.0f, -r, r);
}

template <class V, class F>
TS_INLINE V lanewise(V v, F f) {
  constexpr int N = sizeof(V) / sizeof(v[0]);
  for (int i = 0; i < N; ++i) v[i] = f(v[i]);
  return v;
}
}  // namespace detail

template <class V>
inline constexpr bool is_float_packet_v = simd::is_packet_v<V> && std::is_same_v<simd::elem_t<V>, float>;
#define TS_VEC_N(V) int(sizeof(V) / sizeof(float))
#endif

// One entry point per function: float scalar, double scalar, float packet, double packet, device.
#if TESSERA_SIMD
#define TS_MATH_FN(NAME, FVEC, DSCALAR)                                                          \
  template <class V>                                                                             \
  TS_HD TS_INLINE V NAME(V x) {                                                                  \
    if constexpr (std::is_same_v<V, float>) {                                                    \
      simd::vec<float, 1> v{x};                                                                  \
      return detail::FVEC<1>(v)[0];                                                              \
    } else if constexpr (std::is_same_v<V, double>) return DSCALAR(x);                           \
    else if constexpr (is_float_packet_v<V>) return detail::FVEC<TS_VEC_N(V)>(x);                \
    else return detail::lanewise(x, [](double d) { return DSCALAR(d); });                        \
  }
#else
#define TS_MATH_FN(NAME, FVEC, DSCALAR) \
  template <class V>                    \
  TS_HD inline V NAME(V x) { return DSCALAR(x); }
#endif

namespace scalar {
TS_HD inline float exp(float x) { return ::expf(x); }
TS_HD inline double exp(double x) { return ::exp(x); }
TS_HD inline float log(float x) { return ::logf(x); }
TS_HD inline double log(double x) { return ::log(x); }
TS_HD inline float tanh(float x) { return ::tanhf(x); }
TS_HD inline double tanh(double x) { return ::tanh(x); }
TS_HD inline float sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
TS_HD inline double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
TS_HD inline float erf(float x) { return ::erff(x); }
TS_HD inline double erf(double x) { return ::erf(x); }
}  // namespace scalar

TS_MATH_FN(exp, expf_v, scalar::exp)
TS_MATH_FN(log, logf_v, scalar::log)
TS_MATH_FN(tanh, tanhf_v, scalar::tanh)
TS_MATH_FN(sigmoid, sigmoidf_v, scalar::sigmoid)
TS_MATH_FN(erf, erff_v, scalar::erf)
#undef TS_MATH_FN

template <class V>
TS_HD TS_INLINE V sqrt(V x) {
  if constexpr (std::is_same_v<V, float>) return ::sqrtf(x);
  else if constexpr (std::is_same_v<V, double>) return ::sqrt(x);
#if TESSERA_SIMD
  else return detail::lanewise(x, [](auto d) { return decltype(d)(std::sqrt(d)); });
#endif
}

template <class V>
TS_HD TS_INLINE V pow(V x, V y) {
  if constexpr (std::is_same_v<V, float>) return ::powf(x, y);
  else if constexpr (std::is_same_v<V, double>) return ::pow(x, y);
#if TESSERA_SIMD
  else {
    for (int i = 0; i < int(sizeof(V) / sizeof(x[0])); ++i) x[i] = std::pow(x[i], y[i]);
    return x;
  }
#endif
}

}  // namespace tessera::math
