// SIMD packets as GCC vector extensions: one source for AVX-512, AVX2 and SSE, chosen by the target flags.
// A packet of N lanes of T is vec<T, N>; booleans travel as int32 masks (all ones or zero).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tessera/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/types.hpp"

#if TESSERA_SIMD && defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace tessera::simd {

/// Element type of a packet (the type itself for a scalar).
template <class V>
struct elem_of { using type = V; };
template <class V>
  requires requires(V v) { v[0]; }
struct elem_of<V> { using type = std::remove_cvref_t<decltype(std::declval<V>()[0])>; };
template <class V>
using elem_t = typename elem_of<V>::type;
template <class V>
inline constexpr bool is_packet_v = requires(V v) { v[0]; };


#if TESSERA_SIMD
template <class T, int N>
struct vec_impl {
  typedef T type __attribute__((vector_size(N * sizeof(T))));  // an attribute on an alias template would be ignored
};
template <class T, int N>
using vec = typename vec_impl<T, N>::type;

/// Lane type of a packet of T: booleans are int32 masks.
template <class T>
using lane_t = std::conditional_t<std::is_same_v<T, bool>, std::int32_t, T>;

/// Packet of N lanes holding elements of type T.
template <class T, int N>
using packet = vec<lane_t<T>, N>;

/// Lanes of a packet when the widest lane in an expression is MaxLane bytes (one vector register for it).
template <std::size_t MaxLane>
inline constexpr int lanes_for = TESSERA_VECTOR_BYTES / int(MaxLane) > 0 ? TESSERA_VECTOR_BYTES / int(MaxLane) : 1;

/// Can expressions over T take the SIMD path? (bfloat16 computes lane by lane in float.)
template <class T>
inline constexpr bool packable_v = !std::is_same_v<T, bfloat16>;

template <std::size_t S>
using sint_of_size = std::conditional_t<S == 1, std::int8_t, std::conditional_t<S == 2, std::int16_t,
                     std::conditional_t<S == 4, std::int32_t, std::int64_t>>>;

template <class T, int N>
TS_INLINE vec<T, N> splat(T x) {
  return vec<T, N>{} + x;
}

template <class T, int N>
TS_INLINE packet<T, N> load(const T* p) {
  if constexpr (std::is_same_v<T, bool>) {
    vec<std::uint8_t, N> b;
    std::memcpy(&b, p, N);
    return __builtin_convertvector(b != 0, vec<std::int32_t, N>);  // true lanes become all ones
  } else {
    vec<T, N> v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
}

template <class T, int N>
TS_INLINE packet<T, N> gather(const T* p, index_t s) {
  packet<T, N> v;
  for (int i = 0; i < N; ++i) {
    if constexpr (std::is_same_v<T, bool>) v[i] = p[i * s] ? -1 : 0;
    else v[i] = p[i * s];
  }
  return v;
}

template <class T, int N>
TS_INLINE packet<T, N> broadcast(const T* p) {
  if constexpr (std::is_same_v<T, bool>) return splat<std::int32_t, N>(*p ? -1 : 0);
  else return splat<T, N>(*p);
}

template <class T, int N>
TS_INLINE void store(T* p, packet<T, N> v) {
  if constexpr (std::is_same_v<T, bool>) {
    auto b = __builtin_convertvector(v & 1, vec<std::uint8_t, N>);
    std::memcpy(p, &b, N);
  } else {
    std::memcpy(p, &v, sizeof v);
  }
}

template <class T, int N>
TS_INLINE void scatter(T* p, index_t s, packet<T, N> v) {
  for (int i = 0; i < N; ++i) p[i * s] = static_cast<T>(v[i]);
}

/// Non-temporal store of a full 64-byte packet at a 64-byte aligned address (bypasses the caches).
template <class T, int N>
TS_INLINE void store_stream(T* p, packet<T, N> v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(v) == 64 && !std::is_same_v<T, bool>) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), reinterpret_cast<__m512i&>(v));
    return;
  }
#endif
  store<T, N>(p, v);
}

inline void stream_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

/// Convert a packet of From elements to To elements (C++ conversion semantics lane by lane; bool ↔ mask).
template <class To, class From, int N>
TS_INLINE packet<To, N> convert(packet<From, N> v) {
  if constexpr (std::is_same_v<To, From>) return v;
  else if constexpr (std::is_same_v<From, bool>) return __builtin_convertvector(v & 1, packet<To, N>);
  else if constexpr (std::is_same_v<To, bool>) return __builtin_convertvector(v != 0, vec<std::int32_t, N>);
  else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To> && sizeof(To) < 4)
    return __builtin_convertvector(__builtin_convertvector(v, vec<std::int32_t, N>), packet<To, N>);
  else return __builtin_convertvector(v, packet<To, N>);
}

/// Turn a bool mask (int32 lanes) into a mask as wide as T's lanes, for select.
template <class T, int N>
TS_INLINE auto widen_mask(vec<std::int32_t, N> m) {
  using I = sint_of_size<sizeof(lane_t<T>)>;
  return __builtin_convertvector(m, vec<I, N>);
}

template <class T, int N>
TS_INLINE packet<T, N> select(vec<std::int32_t, N> m, packet<T, N> a, packet<T, N> b) {
  return widen_mask<T, N>(m) ? a : b;
}

/// Comparison result of two packets as a bool packet (int32 mask).
template <class V>
TS_INLINE auto to_mask(V cmp) {
  constexpr int N = sizeof(V) / sizeof(cmp[0]);
  return __builtin_convertvector(cmp, vec<std::int32_t, N>);
}

template <class T, int N>
TS_INLINE T reduce_add(vec<T, N> v) {
  if constexpr (N == 1) return v[0];
  else {
    T s = v[0];
    for (int i = 1; i < N; ++i) s += v[i];
    return s;
  }
}
#else
template <class T>
inline constexpr bool packable_v = false;
// Declared so that packet branches (discarded without SIMD) still name something.
template <class V>
V to_mask(V v);
template <class T, int N, class M>
M widen_mask(M m);
#endif

}  // namespace tessera::simd
