// Accuracy of the float transcendental functions of tessera/core/math.hpp (tanh, sigmoid, exp, log, erf) and of
// gelu built on erf, against double-precision <cmath> references computed in plain loops.
//
// How: a dense sweep over float bit patterns (every 99991st pattern, both signs, about 43,000 values, plus the
// neighbourhoods of 0, 1 and the saturation points) through the SIMD packet path; every value is also computed
// through the scalar path (what the loop's tail takes) and the two must give the same bits. Then the special
// values (+-0, +-inf, NaN, saturation, subnormals) and whole tensors of odd lengths (1, 7, 33, 65, 127) through
// the fused assignment, element by element against the scalar function's bits and the reference.
//
// Guarantees checked: relative error <= 2.5e-6 against the double reference wherever the result is a normal
// float of meaningful size; below that (results under FLT_MIN: exp's subnormal results, sigmoid below -87)
// the error is bounded absolutely (one subnormal step for exp, FLT_MIN for sigmoid). gelu = x Phi(x) computed
// as x/2 (1 + erf(x/sqrt2)) loses relative accuracy where 1 + erf cancels (x < -1): there it is bounded
// absolutely (1e-6: erf's few ulp near -1 times |x|/2; the function is below 0.16 in size there), relative
// 2.5e-6 for x >= -1.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "test_support.hpp"
#include <tessera/core/math.hpp>

namespace {
using ts::index_t;
constexpr float kFltMin = std::numeric_limits<float>::min();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kRel = 2.5e-6;

enum class fn { tanh, sigmoid, exp, log, erf, gelu };

double reference(fn f, double x) {
  switch (f) {
    case fn::tanh: return std::tanh(x);
    case fn::sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case fn::exp: return std::exp(x);
    case fn::log: return std::log(x);
    case fn::erf: return std::erf(x);
    case fn::gelu: return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
  }
  return 0;
}

#if TESSERA_SIMD
constexpr int L = ts::simd::lanes_for<sizeof(float)>;
using P = ts::simd::vec<float, L>;
#else
using P = float;
constexpr int L = 1;
#endif

template <class V>
V apply(fn f, V v) {
  switch (f) {
    case fn::tanh: return ts::math::tanh(v);
    case fn::sigmoid: return ts::math::sigmoid(v);
    case fn::exp: return ts::math::exp(v);
    case fn::log: return ts::math::log(v);
    case fn::erf: return ts::math::erf(v);
    case fn::gelu: return ts::op::gelu::apply(v);
  }
  return v;
}

float scalar(fn f, float x) { return apply<float>(f, x); }

/// The allowed error at x (reference r), or a negative number where x is outside the domain checked here.
double allowed(fn f, float x, double r) {
  switch (f) {
    case fn::exp:
      if (x > 88.7228f || x < -103.97f) return -1;           // inf / 0: checked among the special values
      return r >= kFltMin ? kRel * r : std::ldexp(1.0, -149);  // subnormal results: one subnormal step
    case fn::sigmoid: return x >= -87.0f ? kRel * std::fabs(r) : double(kFltMin);
    case fn::log: return x > 0 ? kRel * std::fabs(r) + 1e-30 : -1;
    case fn::gelu: return x >= -1.0f ? kRel * std::fabs(r) + 1e-38 : 1e-6;
    default: return kRel * std::fabs(r) + 1e-45;  // tanh, erf: relative down to the subnormals
  }
}

const char* name(fn f) {
  const char* n[] = {"tanh", "sigmoid", "exp", "log", "erf", "gelu"};
  return n[int(f)];
}

std::vector<float> sweep_values() {
  std::vector<float> v;
  for (std::uint64_t b = 0; b <= 0xFFFFFFFFull; b += 99991) {
    const float x = std::bit_cast<float>(std::uint32_t(b));
    if (std::isfinite(x)) v.push_back(x);
  }
  // neighbourhoods: around 0 (subnormals), 1 (log's zero), and the saturation / overflow points
  for (float c : {0.0f, 1.0f, 7.9053111f, 4.0f, 88.7228394f, -87.3365479f, -103.972084f, -88.3762627f, 87.3365479f})
    for (int s : {1, -1}) {
      float x = c * float(s);
      for (int k = 0; k < 300; ++k) {
        v.push_back(x);
        x = std::nextafter(x, kInf);
      }
    }
  for (float x = -12.0f; x <= 12.0f; x += 0.0009765625f) v.push_back(x);  // the busy range, every 2^-10
  return v;
}

struct sweep_result {
  double worst_ratio = 0;  // max of error / allowed
  float worst_x = 0;
  long checked = 0, bit_mismatches = 0;
  float mismatch_x = 0;
};

// lane k of a packet, or the value itself where there are no packets (clang and TESSERA_NO_SIMD builds: P is float)
template <class V>
void set_lane(V& v, int k, float x) {
  if constexpr (std::is_same_v<V, float>) (void)k, v = x;
  else v[k] = x;
}
template <class V>
float get_lane(const V& v, int k) {
  if constexpr (std::is_same_v<V, float>) return (void)k, v;
  else return v[k];
}

sweep_result run_sweep(fn f, const std::vector<float>& xs) {
  sweep_result res;
  for (std::size_t i = 0; i < xs.size(); i += L) {
    P v{};
    for (int k = 0; k < L; ++k) set_lane(v, k, xs[std::min(i + k, xs.size() - 1)]);
    const P out = apply<P>(f, v);
    for (int k = 0; k < L && i + k < xs.size(); ++k) {
      const float x = xs[i + k];
      const float got = get_lane(out, k);
      if (std::bit_cast<std::uint32_t>(got) != std::bit_cast<std::uint32_t>(scalar(f, x)))
        ++res.bit_mismatches, res.mismatch_x = x;
      const double r = reference(f, double(x));
      const double tol = allowed(f, x, r);
      if (tol < 0) continue;
      ++res.checked;
      const double ratio = std::isfinite(got) ? std::fabs(double(got) - r) / tol : 1e30;
      if (ratio > res.worst_ratio) res.worst_ratio = ratio, res.worst_x = x;
    }
  }
  return res;
}
}  // namespace

TEST_CASE("math: float functions within 2.5e-6 of double references; packet lanes and scalar agree bit for bit",
          "[math]") {
  const std::vector<float> xs = sweep_values();
  for (fn f : {fn::tanh, fn::sigmoid, fn::exp, fn::log, fn::erf, fn::gelu}) {
    const sweep_result r = run_sweep(f, xs);
    INFO(name(f) << ": " << r.checked << " values, worst error / allowed " << r.worst_ratio << " at x = "
                 << r.worst_x << "; " << r.bit_mismatches << " lane/scalar mismatches (last at x = " << r.mismatch_x
                 << ")");
    CHECK(r.checked > 15000);  // log: the positive half only
    CHECK(r.worst_ratio <= 1.0);
    CHECK(r.bit_mismatches == 0);
  }
}

TEST_CASE("math: special values (zeros, infinities, NaN, saturation, subnormals)", "[math]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float sub = 1e-40f;  // subnormal
  auto bits = [](float x) { return std::bit_cast<std::uint32_t>(x); };
  for (fn f : {fn::tanh, fn::sigmoid, fn::exp, fn::log, fn::erf, fn::gelu}) {
    INFO(name(f));
    CHECK(std::isnan(scalar(f, nan)));
    CHECK(std::isnan(scalar(f, -nan)));
  }
  // odd functions keep the sign of zero and return subnormal x as x (tanh x = x, erf x = 2x/sqrt(pi))
  CHECK(bits(scalar(fn::tanh, 0.0f)) == bits(0.0f));
  CHECK(bits(scalar(fn::tanh, -0.0f)) == bits(-0.0f));
  CHECK(bits(scalar(fn::erf, -0.0f)) == bits(-0.0f));
  CHECK(scalar(fn::tanh, sub) == sub);
  CHECK(scalar(fn::tanh, -sub) == -sub);
  CHECK(std::fabs(scalar(fn::erf, sub) - float(1.1283791670955126 * 1e-40)) <= 1e-45f);
  CHECK(scalar(fn::tanh, kInf) == 1.0f);
  CHECK(scalar(fn::tanh, -kInf) == -1.0f);
  CHECK(scalar(fn::tanh, 1e30f) == 1.0f);
  CHECK(std::fabs(scalar(fn::tanh, -9.0f) + 1.0f) <= 6e-8f);  // -1 or the float below it (libm's tanhf: 0.99999994)
  CHECK(scalar(fn::erf, kInf) == 1.0f);
  CHECK(scalar(fn::erf, -kInf) == -1.0f);
  CHECK(scalar(fn::erf, 1e30f) == 1.0f);
  CHECK(scalar(fn::sigmoid, 0.0f) == 0.5f);
  CHECK(scalar(fn::sigmoid, -0.0f) == 0.5f);
  CHECK(scalar(fn::sigmoid, kInf) == 1.0f);
  CHECK(scalar(fn::sigmoid, 100.0f) == 1.0f);
  CHECK(scalar(fn::sigmoid, -kInf) >= 0.0f);
  CHECK(scalar(fn::sigmoid, -kInf) <= kFltMin);
  CHECK(scalar(fn::sigmoid, -1e30f) <= kFltMin);
  CHECK(scalar(fn::sigmoid, sub) == 0.5f);
  CHECK(scalar(fn::exp, 0.0f) == 1.0f);
  CHECK(scalar(fn::exp, -0.0f) == 1.0f);
  CHECK(scalar(fn::exp, sub) == 1.0f);
  CHECK(scalar(fn::exp, kInf) == kInf);
  CHECK(scalar(fn::exp, 88.73f) == kInf);
  CHECK(scalar(fn::exp, 1e30f) == kInf);
  CHECK(bits(scalar(fn::exp, -kInf)) == bits(0.0f));
  CHECK(bits(scalar(fn::exp, -104.0f)) == bits(0.0f));
  CHECK(bits(scalar(fn::exp, -1e30f)) == bits(0.0f));
  CHECK(scalar(fn::exp, -103.0f) == std::numeric_limits<float>::denorm_min());  // exp(-103) = 1.8e-45 rounds so
  CHECK(std::isfinite(scalar(fn::exp, 88.72f)));
  CHECK(scalar(fn::log, 1.0f) == 0.0f);
  CHECK(scalar(fn::log, 0.0f) == -kInf);
  CHECK(scalar(fn::log, -0.0f) == -kInf);
  CHECK(std::isnan(scalar(fn::log, -1.0f)));
  CHECK(std::isnan(scalar(fn::log, -kInf)));
  CHECK(std::isnan(scalar(fn::log, -sub)));
  CHECK(scalar(fn::log, kInf) == kInf);
  CHECK(std::fabs(scalar(fn::log, sub) - std::log(1e-40)) <= kRel * 92.1);
  CHECK(std::fabs(scalar(fn::log, std::numeric_limits<float>::denorm_min()) - std::log(1.401298464e-45)) <=
        kRel * 103.3);
  CHECK(scalar(fn::gelu, 0.0f) == 0.0f);
  CHECK(scalar(fn::gelu, kInf) == kInf);
  CHECK(scalar(fn::gelu, 1e30f) == 1e30f);
  CHECK(std::fabs(scalar(fn::gelu, -10.0f)) <= 1e-6f);
}

TEMPLATE_TEST_CASE("math: fused assignments of odd lengths agree with the scalar function and the reference",
                   "[math]", ts::cpu, ts::cpu_threads) {
  using Vec = ts::Tensor<float, ts::Shape<ts::dyn>, TestType>;
  for (index_t n : {1, 7, 33, 65, 127}) {
    Vec x(n), out(n);
    for (index_t i = 0; i < n; ++i) x.data()[i] = -6.0f + 12.0f * float(i) / float(n) + 0.01f * float(i % 3);
    for (fn f : {fn::tanh, fn::sigmoid, fn::exp, fn::log, fn::gelu}) {
      Vec in(n);
      for (index_t i = 0; i < n; ++i) in.data()[i] = f == fn::log ? std::fabs(x.data()[i]) + 1e-3f : x.data()[i];
      switch (f) {
        case fn::tanh: out = ts::tanh(in); break;
        case fn::sigmoid: out = ts::sigmoid(in); break;
        case fn::exp: out = ts::exp(in); break;
        case fn::log: out = ts::log(in); break;
        default: out = ts::gelu(in); break;
      }
      for (index_t i = 0; i < n; ++i) {
        const float v = in.data()[i];
        INFO(name(f) << " n = " << n << " i = " << i << " x = " << v);
        CHECK(std::bit_cast<std::uint32_t>(out.data()[i]) == std::bit_cast<std::uint32_t>(scalar(f, v)));
        const double r = reference(f, double(v));
        CHECK(std::fabs(double(out.data()[i]) - r) <= allowed(f, v, r));
      }
    }
  }
}
