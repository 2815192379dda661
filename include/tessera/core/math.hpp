// Elementwise math on scalars and SIMD packets: exp, log, tanh, sigmoid, erf (and sqrt, pow). ops.hpp calls these
// for every float expression node; kernels (rnn, attention) call them on packets directly.
// Float packets use Cephes-style range reductions and minimax polynomials / rationals, and a float scalar goes
// through the same code as a one-lane packet, so the vector lanes and the scalar tail give the same bits
// (tests/core/test_math_accuracy.cpp checks it). Accuracy against double references: relative error below
// 2.5e-6 wherever the result is a normal float (measured: exp 7e-8, log 8e-8, tanh 3e-7, sigmoid 2e-7, erf 3e-7);
// NaN propagates, +-inf and large |x| saturate, subnormal inputs are handled. Double packets go lane by lane
// through <cmath>; device code uses CUDA's own functions.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tessera/core/simd.hpp"

#if TESSERA_SIMD && (defined(__SSE__) || defined(__AVX__))
#include <immintrin.h>
#endif

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

/// min(a, b) as the SSE/AVX instruction computes it: a < b ? a : b (so b comes back when either is NaN). One
/// instruction where the packet is a register (the comparison plus blend that `?:` would give is two).
template <int N>
TS_INLINE vec<float, N> minf_v(vec<float, N> a, vec<float, N> b) {
#if defined(__AVX512F__)
  if constexpr (N == 16) return (vec<float, N>)_mm512_min_ps((__m512)a, (__m512)b);
#endif
#if defined(__AVX__)
  if constexpr (N == 8) return (vec<float, N>)_mm256_min_ps((__m256)a, (__m256)b);
#endif
#if defined(__SSE__)
  if constexpr (N == 4) return (vec<float, N>)_mm_min_ps((__m128)a, (__m128)b);
#endif
  return sel<N>(a < b, a, b);
}
/// max(a, b): a > b ? a : b (b when either is NaN).
template <int N>
TS_INLINE vec<float, N> maxf_v(vec<float, N> a, vec<float, N> b) {
#if defined(__AVX512F__)
  if constexpr (N == 16) return (vec<float, N>)_mm512_max_ps((__m512)a, (__m512)b);
#endif
#if defined(__AVX__)
  if constexpr (N == 8) return (vec<float, N>)_mm256_max_ps((__m256)a, (__m256)b);
#endif
#if defined(__SSE__)
  if constexpr (N == 4) return (vec<float, N>)_mm_max_ps((__m128)a, (__m128)b);
#endif
  return sel<N>(a > b, a, b);
}
/// x limited to [lo, hi]; NaN passes through (the constant is the first operand).
template <int N>
TS_INLINE vec<float, N> clampf_v(vec<float, N> x, float lo, float hi) {
  return maxf_v<N>(vec<float, N>{} + lo, minf_v<N>(vec<float, N>{} + hi, x));
}

/// 1/x: with AVX-512, a 14-bit estimate refined by one Newton step (about 1 ulp, far cheaper than a divide).
/// Every packet width and the scalar tail take the same estimate (vrcp14: specified to the bit), so lanes and
/// tail agree whatever the lane count.
template <int N>
TS_INLINE vec<float, N> recipf_v(vec<float, N> x) {
#if defined(__AVX512F__)
  vec<float, N> r;
  if constexpr (N == 16) r = (vec<float, N>)_mm512_rcp14_ps((__m512)x);
#if defined(__AVX512VL__)
  else if constexpr (N == 8) r = (vec<float, N>)_mm256_rcp14_ps((__m256)x);
  else if constexpr (N == 4) r = (vec<float, N>)_mm_rcp14_ps((__m128)x);
#endif
  else
    for (int i = 0; i < N; ++i) r[i] = _mm_cvtss_f32(_mm_rcp14_ss(_mm_setzero_ps(), _mm_set_ss(x[i])));
  return r * (2.0f - x * r);
#else
  return 1.0f / x;
#endif
}

/// a / b: a division where it is the fastest exact choice (AVX2, SSE), a * recipf_v(b) with AVX-512.
template <int N>
TS_INLINE vec<float, N> divf_v(vec<float, N> a, vec<float, N> b) {
#if defined(__AVX512F__)
  return a * recipf_v<N>(b);
#else
  return a / b;
#endif
}

// exp(s * x) for s = +1 or -1, s x already in [-104, 89] (Wide) or [-87.33, 88.37]. x = n ln2 + r, |r| <= ln2/2,
// exp(r) by a minimax polynomial (degree 6, relative error 2e-8 with its float coefficients; degree 5, 1.4e-7,
// when not Wide); Wide applies 2^n in two halves, so results below FLT_MIN come out subnormal (one rounding)
// and above FLT_MAX inf, with no selects.
// n comes from the rounding constant's low mantissa bits (t = x log2e + 1.5 * 2^23 holds n there), so there
// is no float-int conversion. The sign s is folded into the constants (sigmoid takes exp(-x) with no negation).
template <int N, int S = 1, bool Wide = true>
TS_INLINE vec<float, N> exp_core(vec<float, N> x) {
  using V = vec<float, N>;
  using I = vec<std::int32_t, N>;
  constexpr float s = float(S);
  const V magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const V t = x * (s * 1.44269504088896341f) + magic;
  const V n = t - magic;
  // r = s x - n ln2 (ln2 in two parts: n * 0.693359375 is exact); u = s r, so exp(r) = p(s u)
  V u = x - n * (s * 0.693359375f);
  u = u + n * (s * 2.12194440e-4f);
  V p;
  if constexpr (Wide) {  // degree 6: relative error 2e-8
    p = u * 1.383702271e-03f + s * 8.374816738e-03f;
    p = p * u + 4.166822135e-02f;
    p = p * u + s * 1.666641980e-01f;
    p = p * u + 4.999999106e-01f;
    p = p * u + s;
    p = p * u + 1.0f;
  } else {  // degree 5: relative error 1.4e-7, for sigmoid
    p = u * (s * 8.297796361e-03f) + 4.191539064e-02f;
    p = p * u + s * 1.666757315e-01f;
    p = p * u + 4.999889433e-01f;
    p = p * u + s * 9.999997020e-01f;
    p = p * u + 1.000000119e+00f;
  }
  const I ni = float_to_bits<N>(t) - 0x4B400000;
  if constexpr (!Wide) return p * bits_to_float<N>((ni + 127) << 23);  // n in [-126, 127]: one scaling
  const I n1 = ni >> 1;
  return p * bits_to_float<N>((n1 + 127) << 23) * bits_to_float<N>((ni - n1 + 127) << 23);
}

template <int N>
TS_INLINE vec<float, N> expf_v(vec<float, N> x) {
  // below -104 exp is 0 in float, above 89 inf; both come out of the scaling. NaN passes the clamp and the
  // arithmetic.
  return exp_core<N>(clampf_v<N>(x, -104.0f, 89.0f));
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
// the form XLA and Eigen use: no exp, one division. Computed as x * (p / q) with p, q in x^2, so tiny and
// subnormal x come back as x (p / q is 1 within an ulp there) with no select; NaN passes the clamp.
template <int N>
TS_INLINE vec<float, N> tanhf_v(vec<float, N> x0) {
  using V = vec<float, N>;
  const V x = clampf_v<N>(x0, -7.90531110763549805f, 7.90531110763549805f);
  const V x2 = x * x;
  V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * divf_v<N>(p, q);
}

// 1/(1+exp(-x)), exp(-x) with the sign folded into its constants; x limited to [-88.37, 87.33] first (so
// exp(-x) stays normal and finite: one scaling), so below -88.37 the result is about 3.7e-39 (absolutely
// within FLT_MIN of the true value) and above 87.33 it is 1. NaN passes the clamp and the arithmetic.
template <int N>
TS_INLINE vec<float, N> sigmoidf_v(vec<float, N> x) {
  return recipf_v<N>(1.0f + exp_core<N, -1, false>(clampf_v<N>(x, -88.3762626647949f, 87.3365478515625f)));
}

// erf as Eigen's generic_fast_erf_float: a rational approximation of degree 13/8 on [-4, 4] (beyond it erf
// rounds to +-1), evaluated as x * (p / q) in x^2 so tiny and subnormal x keep their bits' worth. NaN passes.
template <int N>
TS_INLINE vec<float, N> erff_v(vec<float, N> x0) {
  using V = vec<float, N>;
  const V x = clampf_v<N>(x0, -4.0f, 4.0f);
  const V x2 = x * x;
  V p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  V q = x2 * -1.45660718464996e-05f - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * divf_v<N>(p, q);
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
