// Rng: a small deterministic random number generator (xoshiro256**, seeded through splitmix64) with the draws
// that training code needs: uniform floats, normal floats (Box-Muller), integers below n, shuffles.
// The same seed gives the same sequence on every platform and compiler (no <random> distributions, whose
// output the standard leaves to the implementation). Host only.
#pragma once
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace tessera {

/// One step of splitmix64: advances `state` and returns the next output. Also a good 64-bit mixing function.
constexpr std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// xoshiro256** (Blackman and Vigna). Satisfies std::uniform_random_bit_generator, so it also works with
/// std::shuffle and the <random> distributions, but its own draws below are reproducible everywhere.
class Rng {
 public:
  using result_type = std::uint64_t;
  static constexpr std::uint64_t default_seed = 0x7e55e7a5eedull;

  explicit Rng(std::uint64_t seed = default_seed) { this->seed(seed); }
  /// An independent stream for (seed, stream): e.g. one per epoch or per worker, all reproducible from `seed`.
  Rng(std::uint64_t seed, std::uint64_t stream) { this->seed(seed, stream); }

  /// Restart the sequence of `seed` (the same as a freshly constructed Rng(seed)).
  void seed(std::uint64_t seed) {
    std::uint64_t sm = seed;
    for (auto& w : s_) w = splitmix64(sm);
    has_spare_ = false;
  }
  void seed(std::uint64_t seed, std::uint64_t stream) {
    std::uint64_t sm = stream;
    const std::uint64_t mixed_stream = splitmix64(sm);
    this->seed(seed ^ mixed_stream ^ 0x6a09e667f3bcc909ull);
  }

  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }

  /// The next 64 random bits.
  result_type operator()() { return next(); }
  result_type next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, 1): 24 random bits, so every value is a float exactly and 1 is never returned.
  float uniform() { return float(next() >> 40) * 0x1.0p-24f; }
  /// Uniform in [lo, hi).
  float uniform(float lo, float hi) {
    const float r = lo + (hi - lo) * uniform();
    return r < hi ? r : lo;  // rounding of lo + (hi - lo) * u can reach hi; keep the interval half-open
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform_double() { return double(next() >> 11) * 0x1.0p-53; }

  /// Normal with the given mean and standard deviation (Box-Muller in double; the second value of each pair is
  /// kept for the next call).
  float normal(float mean = 0.0f, float stddev = 1.0f) { return float(mean + stddev * standard_normal()); }
  double normal_double(double mean = 0.0, double stddev = 1.0) { return mean + stddev * standard_normal(); }

  /// Uniform integer in [0, n) without bias (Lemire's multiply-and-reject). Throws std::invalid_argument if n == 0.
  std::uint64_t below(std::uint64_t n) {
    if (n == 0) throw std::invalid_argument("tessera: Rng::below(0): the range [0, 0) is empty");
    std::uint64_t high, low;
    mul_64x64(next(), n, high, low);
    if (low < n) {
      const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
      while (low < threshold) mul_64x64(next(), n, high, low);
    }
    return high;
  }
  /// Uniform integer in [lo, hi] (both included).
  std::int64_t uniform_int(std::int64_t lo, std::int64_t hi) {
    if (hi < lo)
      throw std::invalid_argument("tessera: Rng::uniform_int(" + std::to_string(lo) + ", " + std::to_string(hi) +
                                  "): empty range");
    const std::uint64_t span = std::uint64_t(hi) - std::uint64_t(lo);
    if (span == std::numeric_limits<std::uint64_t>::max()) return std::int64_t(next());
    return std::int64_t(std::uint64_t(lo) + below(span + 1));
  }
  /// true with probability p.
  bool bernoulli(double p) { return uniform_double() < p; }

  /// Fisher-Yates shuffle of [first, first + n).
  template <class T>
  void shuffle(T* first, std::size_t n) {
    for (std::size_t i = n; i > 1; --i) {
      const std::size_t j = std::size_t(below(i));
      using std::swap;
      swap(first[i - 1], first[j]);
    }
  }
  template <class Container>
  void shuffle(Container& c) {
    shuffle(std::data(c), std::size(c));
  }

  /// The full state (to save it, e.g. in a checkpoint, and resume the same sequence with set_state).
  /// A pending second Box-Muller value is not part of it: the sequence resumes from the next pair.
  std::array<std::uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<std::uint64_t, 4>& s) {
    if ((s[0] | s[1] | s[2] | s[3]) == 0)
      throw std::invalid_argument("tessera: Rng::set_state: the all-zero state is not a valid xoshiro256** state");
    s_ = s;
    has_spare_ = false;
  }

  friend bool operator==(const Rng& a, const Rng& b) {
    return a.s_ == b.s_ && a.has_spare_ == b.has_spare_ && (!a.has_spare_ || a.spare_ == b.spare_);
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  /// The 128-bit product a * b as (high, low) words, in portable C++.
  static constexpr void mul_64x64(std::uint64_t a, std::uint64_t b, std::uint64_t& high, std::uint64_t& low) {
    const std::uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
    const std::uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const std::uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    low = (mid << 32) | (p00 & 0xffffffffu);
    high = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
  }

  double standard_normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1;
    do u1 = uniform_double();
    while (u1 <= 0.0);  // log(0) is -inf
    const double u2 = uniform_double();
    const double r = std::sqrt(-2.0 * std::log(u1));
    constexpr double two_pi = 6.283185307179586476925286766559;
    spare_ = r * std::sin(two_pi * u2);
    has_spare_ = true;
    return r * std::cos(two_pi * u2);
  }

  std::array<std::uint64_t, 4> s_{};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace tessera
