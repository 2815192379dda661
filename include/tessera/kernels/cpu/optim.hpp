// host_optim_ops<P>: the optim part of backend<cpu> / backend<cpu_threads> (see kernels/cpu/backend.hpp): the SGD
// and Adam updates of optim/optim.hpp over a parameter's elements, with the names and arguments of cuda_optim_ops
// (kernels/cuda/optim.hpp):
//   sgd_update(p, g, buf, n, sgd_args<T>)      buf: the momentum buffer, or null without momentum
//   adam_update(p, g, m, v, n, adam_args<T>)   Adam and AdamW (adam_args::decay)
// Each update is written once as an operation on one element or one SIMD packet (GCC vector extensions, the same
// IEEE arithmetic lane by lane; see optim_kernels::lanes), since GCC 12 at -O2 auto-vectorises no loop of unknown trip
// count, nor std::sqrt while it may set errno. A parameter with more than 2^16 elements is split over two OpenMP
// threads when OpenMP is enabled; the split (at a multiple of 64 elements) changes no result bit.
#pragma once
#include <cmath>
#include <type_traits>
#include <utility>

#include "tessera/config.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/kernels/backend.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if TESSERA_SIMD && (defined(__AVX__) || defined(__SSE2__))
#include <immintrin.h>  // the packet square roots
#endif

namespace tessera::detail {

namespace optim_kernels {

/// Parameters with more elements than this are updated by two OpenMP threads.
inline constexpr index_t parallel_min_elements = index_t(1) << 16;
inline constexpr int parallel_threads = 2;

/// f(begin, end) over [0, n): in one call, or in two halves (cut at a multiple of 64 elements) on two threads.
template <class F>
void for_range(index_t n, F&& f) {
#if defined(_OPENMP)
  if (n > parallel_min_elements && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    const index_t half = (n / 2 + 63) / 64 * 64;
#pragma omp parallel for num_threads(parallel_threads) schedule(static)
    for (int c = 0; c < parallel_threads; ++c) {
      if (c == 0) f(index_t(0), half);
      else f(half, n);
    }
    return;
  }
#endif
  f(index_t(0), n);
}

/// Square root of one element or, lane by lane, of a packet (the IEEE square root either way).
template <class V>
TS_INLINE V vsqrt(V x) {
  if constexpr (std::is_floating_point_v<V>) {
    return std::sqrt(x);
  } else {
#if TESSERA_SIMD && defined(__AVX512F__)
    // the maskz forms: _mm512_sqrt_ps passes _mm512_undefined_ps() through, which GCC 12 flags as uninitialised
    if constexpr (sizeof(V) == 64 && std::is_same_v<simd::elem_t<V>, float>)
      return (V)_mm512_maskz_sqrt_ps(__mmask16(0xffff), (__m512)x);
    if constexpr (sizeof(V) == 64 && std::is_same_v<simd::elem_t<V>, double>)
      return (V)_mm512_maskz_sqrt_pd(__mmask8(0xff), (__m512d)x);
#endif
#if TESSERA_SIMD && defined(__AVX__)
    if constexpr (sizeof(V) == 32 && std::is_same_v<simd::elem_t<V>, float>) return (V)_mm256_sqrt_ps((__m256)x);
    if constexpr (sizeof(V) == 32 && std::is_same_v<simd::elem_t<V>, double>) return (V)_mm256_sqrt_pd((__m256d)x);
#endif
#if TESSERA_SIMD && defined(__SSE2__)
    if constexpr (sizeof(V) == 16 && std::is_same_v<simd::elem_t<V>, float>) return (V)_mm_sqrt_ps((__m128)x);
    if constexpr (sizeof(V) == 16 && std::is_same_v<simd::elem_t<V>, double>) return (V)_mm_sqrt_pd((__m128d)x);
#endif
    constexpr int n = int(sizeof(V) / sizeof(x[0]));
    for (int i = 0; i < n; ++i) x[i] = std::sqrt(x[i]);
    return x;
  }
}

template <class Ptr>
inline constexpr bool writable_v = !std::is_const_v<std::remove_pointer_t<Ptr>>;

/// One element (N == 1) or a packet of N.
template <class T, int N>
struct lane_value {
  using type = T;
};
#if TESSERA_SIMD
template <class T, int N>
  requires(N > 1)
struct lane_value<T, N> {
  using type = simd::vec<T, N>;
};
#endif

/// Element (N == 1) or packet (N lanes) access to an array of T.
template <class T, int N>
struct lane_access {
  using value = typename lane_value<T, N>::type;
  static TS_INLINE value load(const T* p) {
    if constexpr (N == 1) return *p;
#if TESSERA_SIMD
    else return simd::load<T, N>(p);
#endif
  }
  template <class Ptr>
  static TS_INLINE void store_if_writable(Ptr p, const value& v) {
    if constexpr (writable_v<Ptr>) {
      if constexpr (N == 1) *p = v;
#if TESSERA_SIMD
      else simd::store<T, N>(p, v);
#endif
    }
  }
};

template <class T, int N, class Op, class... Ptr, std::size_t... K>
TS_INLINE void lanes_at(const Op& op, index_t i, std::index_sequence<K...>, Ptr... ptr) {
  using A = lane_access<T, N>;
  typename A::value v[sizeof...(Ptr)] = {A::load(ptr + i)...};
  op(v[K]...);
  (A::store_if_writable(ptr + i, v[K]), ...);
}

/// op(v...) over elements [0, n) of the arrays ptr... (each T* or const T*), the T* ones written back: full SIMD
/// packets first, then single elements. Every element gets the same arithmetic either way.
template <class T, class Op, class... Ptr>
void lanes(index_t n, const Op& op, Ptr... ptr) {
  static_assert((std::is_same_v<std::remove_const_t<std::remove_pointer_t<Ptr>>, T> && ...));
  using seq = std::index_sequence_for<Ptr...>;
  index_t i = 0;
#if TESSERA_SIMD
  constexpr int N = simd::lanes_for<sizeof(T)>;
  if constexpr (N > 1)
    for (; i + N <= n; i += N) lanes_at<T, N>(op, i, seq{}, ptr...);
#endif
  for (; i < n; ++i) lanes_at<T, 1>(op, i, seq{}, ptr...);
}

/// SGD without momentum: p -= lr * (g + wd * p).   op(p, g)
template <class T, bool Decay>
struct sgd_plain_op {
  T neg_lr, wd;
  template <class V>
  TS_INLINE void operator()(V& p, const V& g) const {
    V d = g;
    if constexpr (Decay) d = d + wd * p;
    p = p + neg_lr * d;
  }
};

/// SGD with momentum. d = g + wd * p; buf = d at the first update, else buf = momentum * buf + (1 - dampening) * d;
/// d = nesterov ? d + momentum * buf : buf; p -= lr * d.   op(p, g, buf)
template <class T, bool Decay, bool First, bool Nesterov>
struct sgd_momentum_op {
  T neg_lr, wd, momentum, one_minus_dampening;
  template <class V>
  TS_INLINE void operator()(V& p, const V& g, V& buf) const {
    V d = g;
    if constexpr (Decay) d = d + wd * p;
    if constexpr (First) buf = d;
    else buf = buf * momentum + one_minus_dampening * d;
    if constexpr (Nesterov) d = d + momentum * buf;
    else d = buf;
    p = p + neg_lr * d;
  }
};

/// One Adam step (PyTorch's arithmetic): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g;
/// p += -step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps), step_size = lr / bias_correction1.
/// op(p, g, m, v)
template <class T, adam_decay Decay>
struct adam_op {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps, wd, keep;
  template <class V>
  TS_INLINE void operator()(V& p, const V& g, V& m, V& v) const {
    V gi = g;
    if constexpr (Decay == adam_decay::decoupled) p = p * keep;
    if constexpr (Decay == adam_decay::l2) gi = gi + wd * p;
    m = m * beta1 + one_minus_beta1 * gi;
    v = v * beta2 + one_minus_beta2 * gi * gi;
    const V denom = vsqrt(v) / bias_correction2_sqrt + eps;
    p = p + neg_step_size * m / denom;
  }
};

/// f(bool_constant...) for the three run-time flags of a momentum update.
template <class F>
void dispatch(bool a, bool b, bool c, F&& f) {
  using t = std::true_type;
  using u = std::false_type;
  if (a) {
    if (b) c ? f(t{}, t{}, t{}) : f(t{}, t{}, u{});
    else c ? f(t{}, u{}, t{}) : f(t{}, u{}, u{});
  } else {
    if (b) c ? f(u{}, t{}, t{}) : f(u{}, t{}, u{});
    else c ? f(u{}, u{}, t{}) : f(u{}, u{}, u{});
  }
}

}  // namespace optim_kernels

template <class P>
struct host_optim_ops {
  /// One SGD update of n elements (see sgd_args); buf: the momentum buffer, or null without momentum.
  template <class T>
  static void sgd_update(T* p, const T* g, T* buf, index_t n, const sgd_args<T>& a) {
    using namespace optim_kernels;
    if (!buf) {
      for_range(n, [&](index_t b, index_t e) {
        if (a.decay) lanes<T>(e - b, sgd_plain_op<T, true>{a.neg_lr, a.wd}, p + b, g + b);
        else lanes<T>(e - b, sgd_plain_op<T, false>{a.neg_lr, a.wd}, p + b, g + b);
      });
      return;
    }
    for_range(n, [&](index_t b, index_t e) {
      dispatch(a.decay, a.first, a.nesterov, [&](auto D, auto F, auto N) {
        using op = sgd_momentum_op<T, decltype(D)::value, decltype(F)::value, decltype(N)::value>;
        lanes<T>(e - b, op{a.neg_lr, a.wd, a.momentum, a.one_minus_dampening}, p + b, g + b, buf + b);
      });
    });
  }

  /// One Adam / AdamW update of n elements (see adam_args): m and v are the moment buffers.
  template <class T>
  static void adam_update(T* p, const T* g, T* m, T* v, index_t n, const adam_args<T>& a) {
    using namespace optim_kernels;
    for_range(n, [&](index_t b, index_t e) {
      auto run = [&](auto op) { lanes<T>(e - b, op, p + b, g + b, m + b, v + b); };
      switch (a.decay) {
        case adam_decay::none: run(adam_op<T, adam_decay::none>{a.beta1, a.one_minus_beta1, a.beta2, a.one_minus_beta2, a.neg_step_size, a.bias_correction2_sqrt, a.eps, a.wd, a.keep}); break;
        case adam_decay::l2: run(adam_op<T, adam_decay::l2>{a.beta1, a.one_minus_beta1, a.beta2, a.one_minus_beta2, a.neg_step_size, a.bias_correction2_sqrt, a.eps, a.wd, a.keep}); break;
        case adam_decay::decoupled: run(adam_op<T, adam_decay::decoupled>{a.beta1, a.one_minus_beta1, a.beta2, a.one_minus_beta2, a.neg_step_size, a.bias_correction2_sqrt, a.eps, a.wd, a.keep}); break;
      }
    });
  }
};

}  // namespace tessera::detail
