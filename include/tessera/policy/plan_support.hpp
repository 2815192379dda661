// What the planners share: the aliasing checks (does reading an expression while writing a destination risk reading
// an element already overwritten? byte ranges of views, compared leaf by leaf) and library_plan, the customisation
// point of a backend that hands contractions and their epilogues to libraries (policy/cuda_contractions.hpp).
#pragma once
#include <type_traits>
#include <utility>

#include "tessera/core/tensor.hpp"

namespace tessera {
/// Contractions a backend without block epilogues hands to its libraries with their own epilogues (matmul + bias
/// + ReLU as cuBLASLt's, conv2d + bias + ReLU as cuDNN's): policy/cuda_contractions.hpp defines library_plan<cuda>.
template <class P>
struct library_plan;
}  // namespace tessera

namespace tessera::detail {

template <class V>
std::pair<const char*, const char*> byte_range(const V& v) {
  using E = std::remove_const_t<typename V::element_type>;
  const char* base = reinterpret_cast<const char*>(v.data());
  index_t lo = 0, hi = 0;
  for (int i = 0; i < V::rank; ++i) {
    if (v.dims()[i] == 0) return {base, base};
    const index_t span = (v.dims()[i] - 1) * v.strides()[i];
    (span < 0 ? lo : hi) += span;
  }
  return {base + lo * index_t(sizeof(E)), base + (hi + 1) * index_t(sizeof(E))};
}

/// Does reading `e` while writing `dst` risk reading an element already overwritten?
/// Safe when a leaf is disjoint from dst, or reads exactly the element being written at each position.
template <class DV, class E>
bool reads_overlap(const DV& dst, const E& e, bool element_for_element_ok = true) {
  // named, not a structured binding: the lambda below captures them (clang 14 rejects captured bindings)
  const auto drange = byte_range(dst);
  const auto dlo = drange.first, dhi = drange.second;
  if (dlo == dhi) return false;
  bool overlap = false;
  e.for_each_leaf([&](const auto& leaf) {
    const auto [lo, hi] = byte_range(leaf);
    if (hi <= dlo || lo >= dhi || lo == hi) return;
    using LE = std::remove_const_t<typename std::remove_cvref_t<decltype(leaf)>::element_type>;
    using DE = std::remove_const_t<typename DV::element_type>;
    bool same = element_for_element_ok && sizeof(LE) == sizeof(DE) && static_cast<const void*>(leaf.data()) == static_cast<const void*>(dst.data());
    if constexpr (std::remove_cvref_t<decltype(leaf)>::rank <= DV::rank) {
      if (same) {
        auto s = aligned_strides<DV::rank>(leaf.dims(), leaf.strides(), dst.dims());
        for (int i = 0; i < DV::rank; ++i)
          if (dst.dims()[i] != 1 && s[i] != dst.strides()[i]) same = false;
      }
    } else {
      same = false;  // a reduction's source: any overlap is unsafe
    }
    if (!same) overlap = true;
  });
  return overlap;
}

template <class E>
concept Reduction = requires { requires std::remove_cvref_t<E>::is_reduction; };
template <class E>
concept Contraction = requires { requires std::remove_cvref_t<E>::is_contraction; };

/// Does any operand of a contraction overlap the destination? (A product reads whole rows and columns.)
template <class DV, class E>
bool contraction_overlaps(const DV& dst, const E& e) {
  bool overlap = false;
  e.for_each_operand([&](const auto& v) { overlap = overlap || reads_overlap(dst, v, false); });
  return overlap;
}

}  // namespace tessera::detail
