// Helpers shared by the expression tests: type lists (element type x CPU policy), deterministic test values,
// row-major index walking, and element comparison with a tolerance chosen per element type.
// Reference results in the tests are computed with plain loops over the values read back from tensors;
// nothing here calls into tessera's kernels (it only reads data(), dims() and strides()).
#pragma once
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <tessera/tessera.hpp>
#include <tuple>
#include <type_traits>
#include <vector>

namespace ts = tessera;

namespace tst {

using ts::index_t;

/// One element type under one CPU policy: a single entry of the templated tests' type lists.
template <class T, class P>
struct TP {
  using type = T;
  using policy = P;
};

using bf16 = ts::bfloat16;

/// Every numeric element type under cpu_threads. Tests over this list run their body with 1 thread and with 2
/// (thread_counts below): with one thread, cpu_threads takes exactly the code path of cpu (the kernels are shared
/// by both policies; the policy only supplies the thread count), so both policies' paths are covered for every
/// type while each test body is compiled once per type instead of twice (compile time: see the test files).
using thread_pairs =
    std::tuple<TP<float, ts::cpu_threads>, TP<double, ts::cpu_threads>, TP<std::int32_t, ts::cpu_threads>,
               TP<std::int8_t, ts::cpu_threads>, TP<std::uint8_t, ts::cpu_threads>, TP<std::int64_t, ts::cpu_threads>,
               TP<bf16, ts::cpu_threads>>;
/// Every numeric element type under cpu (checks that the cpu policy type itself works with each element type).
using cpu_pairs =
    std::tuple<TP<float, ts::cpu>, TP<double, ts::cpu>, TP<std::int32_t, ts::cpu>, TP<std::int8_t, ts::cpu>,
               TP<std::uint8_t, ts::cpu>, TP<std::int64_t, ts::cpu>, TP<bf16, ts::cpu>>;
/// The floating-point element types under cpu_threads (run with 1 and 2 threads).
using float_thread_pairs =
    std::tuple<TP<float, ts::cpu_threads>, TP<double, ts::cpu_threads>, TP<bf16, ts::cpu_threads>>;

/// Sizes for the leading extent: odd small ones, and one large enough that cpu_threads splits the work and a
/// contiguous inner dimension is cut into chunks (more than 16384 elements per row, more than 32768 in all).
inline const std::vector<index_t> all_sizes = {1, 7, 33, 65, 127, 40001};
inline constexpr index_t big = 40001;

/// Two threads for cpu_threads (the machine has two cores; more would not test anything new).
inline void two_threads() { ts::cpu_threads::set_num_threads(2); }

/// Thread counts to run a test body with under policy P: cpu_threads with 1 thread (the single-threaded path
/// that cpu takes) and with 2 (split work); cpu: its one thread. Call set_threads(nt) before each run.
template <class P>
std::vector<int> thread_counts() {
  if constexpr (std::is_same_v<P, ts::cpu_threads>)
    return {1, 2};
  else
    return {1};
}
inline void set_threads(int nt) { ts::cpu_threads::set_num_threads(nt); }

template <class T>
inline constexpr bool is_float_v = std::is_floating_point_v<T> || std::is_same_v<T, bf16>;

// ---- deterministic values -------------------------------------------------------------------------------------

/// A small value for position k: integers in [-11, 11] (unsigned: [0, 22]); floating types get halves in
/// [-5.5, 5.5], which bfloat16 holds exactly. Repeats often, so ties and equal pairs occur; `salt` varies the pattern.
template <class T>
T small(index_t k, int salt = 0) {
  const long v = long((k * 37 + salt * 101 + (k / 7) * 3 + long(salt) * salt) % 23) - 11;
  if constexpr (std::is_same_v<T, std::uint8_t>)
    return T(v + 11);
  else if constexpr (is_float_v<T>)
    return T(float(v) * 0.5f);
  else
    return T(v);
}

/// Like small(), but never zero (a divisor): magnitudes in [1, 9] (floating: [0.5, 4.5]), signs alternate for signed
/// types.
template <class T>
T nonzero(index_t k, int salt = 0) {
  const long m = long((k * 13 + salt * 7) % 9) + 1;
  const long v = (std::is_unsigned_v<T> || ((k + salt) % 3 != 0)) ? m : -m;
  if constexpr (is_float_v<T>)
    return T(float(v) * 0.5f);
  else
    return T(v);
}

/// Values over the whole range of an 8-bit type (so that arithmetic wraps); other types get small().
template <class T>
T wide(index_t k, int salt = 0) {
  if constexpr (std::is_same_v<T, std::int8_t>)
    return T(long((k * 37 + salt * 59) % 256) - 128);
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return T((k * 37 + salt * 59) % 256);
  else
    return small<T>(k, salt);
}

/// Fill a (contiguous) tensor: element at row-major position k gets f(k).
template <class X, class F>
void fill(X& x, F f) {
  for (index_t k = 0; k < x.size(); ++k) x.data()[k] = f(k);
}

// ---- index walking and reading back ---------------------------------------------------------------------------

/// Call f(idx) for every multi-index of `dims` in row-major order (once for rank 0).
template <std::size_t R, class F>
void for_each_index(const std::array<index_t, R>& dims, F&& f) {
  for (auto d : dims)
    if (d == 0) return;
  std::array<index_t, R> idx{};
  while (true) {
    f(idx);
    int d = int(R) - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

/// `f` rounded to the nearest bfloat16 (ties to even), written here so that references need not call tessera.
inline float round_bf16(float f) {
  if (std::isnan(f)) return f;
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T>
double to_double(T v) {
  if constexpr (std::is_same_v<T, bf16>)
    return double(float(v));
  else
    return double(v);
}

/// The elements of a tensor or view in row-major order, as doubles (exact for every value the tests use).
template <class X>
std::vector<double> values(const X& x) {
  const auto d = x.dims();
  const auto s = x.strides();
  const auto* p = x.data();
  std::vector<double> out;
  out.reserve(std::size_t(ts::product(d)));
  for_each_index(d, [&](const auto& idx) {
    index_t off = 0;
    for (std::size_t i = 0; i < idx.size(); ++i) off += idx[i] * s[i];
    out.push_back(to_double(p[off]));
  });
  return out;
}

// ---- comparison -----------------------------------------------------------------------------------------------

/// Relative and absolute tolerance for results of element type T (integers and bool: exact).
struct tol {
  double rel = 0, abs = 0;
};
template <class T>
constexpr tol tol_for() {
  if constexpr (std::is_same_v<T, float>)
    return {1e-5, 1e-6};
  else if constexpr (std::is_same_v<T, double>)
    return {1e-12, 1e-13};
  else if constexpr (std::is_same_v<T, bf16>)
    return {1e-2, 1e-2};
  else
    return {0, 0};
}

inline bool close(double actual, double expected, tol t) {
  if (std::isnan(expected)) return std::isnan(actual);
  if (std::isinf(expected)) return actual == expected;
  if (std::isnan(actual) || std::isinf(actual)) return false;
  return std::abs(actual - expected) <= t.abs + t.rel * std::abs(expected);
}

inline std::string fmt(double v) {
  std::ostringstream o;
  o.precision(17);
  o << v;
  return o.str();
}

/// "" when `actual` matches `expected` element by element within t; otherwise a description of the first mismatch
/// and the number of mismatches. Use as CHECK(compare(...) == "") so that a failure prints the description.
inline std::string compare(const std::vector<double>& actual, const std::vector<double>& expected, tol t = {}) {
  if (actual.size() != expected.size())
    return "size " + std::to_string(actual.size()) + " != expected size " + std::to_string(expected.size());
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < actual.size(); ++i)
    if (!close(actual[i], expected[i], t)) {
      if (!bad) first = i;
      ++bad;
    }
  if (!bad) return "";
  return std::to_string(bad) + " of " + std::to_string(actual.size()) + " elements differ; first at flat index " +
         std::to_string(first) + ": got " + fmt(actual[first]) + ", expected " + fmt(expected[first]);
}

/// Compare a tensor or view with reference values (row-major), using T's default tolerance.
template <class X>
std::string compare_to(const X& x, const std::vector<double>& expected) {
  using T = std::remove_const_t<typename X::value_type>;
  return compare(values(x), expected, tol_for<T>());
}

// ---- reference arithmetic ----------------------------------------------------------------------------------

/// Reference arithmetic in the element type's own precision: 8-bit integers wrap (C++ promotes, the result is
/// converted back), bfloat16 is computed in float and rounded after every operation, as the library documents.
template <class T>
struct ref_arith {
  static constexpr bool bf = std::is_same_v<T, bf16>;
  using C = std::conditional_t<bf, float, T>;
  static C in(T v) {
    if constexpr (bf)
      return float(v);
    else
      return v;
  }
  template <class V>
  static C fix(V v) {
    if constexpr (bf)
      return round_bf16(float(v));
    else
      return C(v);
  }
  static C add(C x, C y) { return fix(x + y); }
  static C sub(C x, C y) { return fix(x - y); }
  static C mul(C x, C y) { return fix(x * y); }
  static C div(C x, C y) { return fix(x / y); }
  static C neg(C x) { return fix(C(0) - x); }
  static C abs(C x) { return x < C(0) ? neg(x) : x; }
  static C relu(C x) { return x > C(0) ? x : C(0); }
  static C min(C x, C y) { return y < x ? y : x; }
  static C max(C x, C y) { return x < y ? y : x; }
  static C clamp(C x, C lo, C hi) { return min(max(x, lo), hi); }
};

/// Reference for a map over contiguous tensors of equal size: f(i) for each flat index.
template <class F>
std::vector<double> ref_flat(index_t size, F f) {
  std::vector<double> r(static_cast<std::size_t>(size));
  for (index_t i = 0; i < size; ++i) r[i] = double(f(i));
  return r;
}

}  // namespace tst
