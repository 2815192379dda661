// The keep/drop decision of attention-weight dropout, shared by the host and device attention kernels
// (kernels/cpu/attention.hpp, kernels/cuda/attention.hpp): a pure function of (seed, b, h, i, j), so the backward
// regenerates the forward's mask block by block and the T x S mask is never stored.
//   attention_dropout_threshold(p)                 p as a threshold on 32 random bits (2^32 for p = 1: nothing kept)
//   attention_dropout_row(seed, b, h, i)           the key of query row i of head (b, h)
//   attention_dropout_keep(row, j, threshold)      is weight (i, j) of that row kept? (probability 1 - p)
// The bits of element j are the j-th output of splitmix64 started at the row key: counter-based, the same on every
// policy and thread split.
#pragma once
#include <cstdint>

#include "tessera/config.hpp"
#include "tessera/core/error.hpp"

namespace tessera::detail {

inline constexpr std::uint64_t attention_golden = 0x9e3779b97f4a7c15ull;

/// splitmix64's output function (a bijective 64-bit mix).
TS_HD constexpr std::uint64_t attention_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// The dropout probability p as a threshold on 32 random bits: an element is kept when its bits are >= the threshold.
TS_HD constexpr std::uint64_t attention_dropout_threshold(double p) {
  if (!(p > 0.0)) return 0;
  if (p >= 1.0) return std::uint64_t(1) << 32;
  return std::uint64_t(p * 4294967296.0);
}

/// The key of query row i of head (b, h) for a seed.
TS_HD constexpr std::uint64_t attention_dropout_row(std::uint64_t seed, index_t b, index_t h, index_t i) {
  std::uint64_t z = attention_mix(seed + attention_golden * (std::uint64_t(b) + 1));
  z = attention_mix(z + attention_golden * (std::uint64_t(h) + 1));
  return attention_mix(z + attention_golden * (std::uint64_t(i) + 1));
}

/// Is weight j of the row with key `row` kept (probability 1 - threshold / 2^32)?
TS_HD constexpr bool attention_dropout_keep(std::uint64_t row, index_t j, std::uint64_t threshold) {
  return (attention_mix(row + attention_golden * (std::uint64_t(j) + 1)) >> 32) >= threshold;
}

}  // namespace tessera::detail
