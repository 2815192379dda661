// max_pool2d and avg_pool2d over NCHW tensors as expression nodes. Kernel, stride and padding are template
// arguments, so static heights and widths give a static output shape. At the top of an assignment the pool
// writes the destination directly, and an elementwise tree around it runs on each plane as it is finished;
// inside any other expression it is evaluated once into a temporary.
#pragma once
#include <limits>
#include <memory>
#include <string>
#include <type_traits>

#include "tessera/expr/matmul.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/kernels/cpu/pool2x2.hpp"

namespace tessera {

namespace op {
struct max_pool2d {
  static constexpr const char* name = "max_pool2d";
  template <class T>
  static constexpr bool accepts = !std::is_same_v<T, bool>;
};
/// Average over the window, padding counted as zeros (PyTorch's default count_include_pad=True).
struct avg_pool2d {
  static constexpr const char* name = "avg_pool2d";
  template <class T>
  static constexpr bool accepts = std::is_floating_point_v<T>;
};
}  // namespace op

namespace detail {

constexpr extent_t pooled_extent(extent_t e, int k, int s, int p) { return e == dyn ? dyn : (e + 2 * p - k) / s + 1; }

#if defined(__AVX512F__)
/// One output row of a 2x2 stride-2 max-pool: out[j] = max(r0[2j], r0[2j+1], r1[2j], r1[2j+1]); masked at the end.
/// A NaN cell makes its window NaN, as the scalar loop (op::max_reduce::combine) and PyTorch.
inline void max_pool2x2_row(const float* r0, const float* r1, float* out, index_t OW) {
  // m = max(m, v) taking v when m < v or v is NaN (a NaN m is never replaced by a number)
  auto take = [](__m512 m, __m512 v) {
    return _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(m, v, _CMP_LT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
  };
  for (index_t ow = 0; ow < OW; ow += 16) {
    const pool2x2_step w(r0, r1, ow, OW);
    _mm512_mask_storeu_ps(out + ow, w.out, take(take(take(w.a, w.b), w.c), w.d));
  }
}
#endif

template <class C, int K, int S, int P>
using pool_shape_t = Shape<C::shape_type::extents[0], C::shape_type::extents[1], pooled_extent(C::shape_type::extents[2], K, S, P),
                           pooled_extent(C::shape_type::extents[3], K, S, P)>;

template <class Op, class C, int K, int S, int P>
struct pool_node : contraction_node_base<pool_node<Op, C, K, S, P>, typename C::value_type, pool_shape_t<C, K, S, P>, typename C::policy> {
  using value_type = typename C::value_type;
  using shape_type = pool_shape_t<C, K, S, P>;
  using policy = typename C::policy;
  static constexpr int rank = 4;
  static constexpr bool nchw_epilogue_ok = true;  // an elementwise tree around it runs on each finished plane
  static constexpr bool is_max = std::is_same_v<Op, op::max_pool2d>;
  static constexpr int kernel = K, stride = S, padding = P;

  C src;
  dims_t<4> dims_;

  explicit pool_node(C c) : src(std::move(c)) {
    const auto d = src.dims();
    if (d[2] + 2 * P < K || d[3] + 2 * P < K)
      throw shape_error(std::string("tessera: ") + Op::name + ": the input " + format_dims(d) + " is smaller than the " +
                        std::to_string(K) + "x" + std::to_string(K) + " window (padding " + std::to_string(P) + ")");
    dims_ = {d[0], d[1], (d[2] + 2 * P - K) / S + 1, (d[3] + 2 * P - K) / S + 1};
  }
  const dims_t<4>& expr_dims() const { return dims_; }
  template <class F>
  void for_each_operand(F&& f) const { f(src); }

  /// dst = pool(src) on the host; `epi(n, c, 1, 0, OH*OW)` runs on each finished plane (the epilogue needs
  /// contiguous planes).
  template <class DV, class Epi>
  void run_on_host(const DV& dst, const Epi& epi) const {
    using Pol = typename DV::policy;
    using T = value_type;
    constexpr bool is_avg = std::is_same_v<Op, op::avg_pool2d>;
    using A = std::conditional_t<is_avg, double, T>;
    const auto d = src.dims();
    const auto ss = src.strides();
    const auto os = dst.strides();
    const index_t planes = d[0] * d[1], H = d[2], W = d[3], OH = dims_[2], OW = dims_[3];
    if (planes * OH * OW == 0) return;
    stats::count_pass();
    const T* base = src.data();
    T* out = dst.data();
#if defined(_OPENMP)
#pragma omp parallel for num_threads(Pol::num_threads()) schedule(static) if (planes * OH * OW * K * K >= 65536)
#endif
    for (index_t pl = 0; pl < planes; ++pl) {
      const index_t n = pl / d[1], c = pl % d[1];
      const T* in = base + n * ss[0] + c * ss[1];
      T* o = out + n * os[0] + c * os[1];
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float> && !is_avg && K == 2 && S == 2 && P == 0) {
        if (ss[3] == 1 && os[3] == 1) {  // 2x2 max of a contiguous row pair, 16 outputs a step
          for (index_t oh = 0; oh < OH; ++oh) max_pool2x2_row(in + 2 * oh * ss[2], in + (2 * oh + 1) * ss[2], o + oh * os[2], OW);
          if constexpr (Epi::active) epi(n, c, 1, 0, OH * OW);
          continue;
        }
      }
#endif
      for (index_t oh = 0; oh < OH; ++oh) {
        const index_t h0 = oh * S - P;
        const bool rows_inside = h0 >= 0 && h0 + K <= H;
        for (index_t ow = 0; ow < OW; ++ow) {
          const index_t w0 = ow * S - P;
          A acc = is_avg ? A(0) : op::max_reduce::identity<A>();
          auto take = [&acc](T v) {
            if constexpr (is_avg) acc += A(v);
            else acc = op::max_reduce::combine(acc, v);
          };
          if (rows_inside && w0 >= 0 && w0 + K <= W) {  // interior window: no bounds checks, K known at compile time
            const T* q = in + h0 * ss[2] + w0 * ss[3];
            for (int kh = 0; kh < K; ++kh)
              for (int kw = 0; kw < K; ++kw) take(q[kh * ss[2] + kw * ss[3]]);
          } else {
            for (index_t kh = 0; kh < K; ++kh) {
              const index_t h = h0 + kh;
              if (h < 0 || h >= H) continue;
              for (index_t kw = 0; kw < K; ++kw) {
                const index_t w = w0 + kw;
                if (w >= 0 && w < W) take(in[h * ss[2] + w * ss[3]]);
              }
            }
          }
          if constexpr (is_avg) o[oh * os[2] + ow * os[3]] = T(acc / A(K * K));
          else o[oh * os[2] + ow * os[3]] = acc;
        }
      }
      if constexpr (Epi::active) epi(n, c, 1, 0, OH * OW);
    }
  }
};

template <class Op, int K, int S, int P, class X>
auto make_pool(X&& x) {
  static_assert(K >= 1 && S >= 1 && P >= 0 && 2 * P <= K, "tessera: pooling needs kernel >= 1, stride >= 1 and 0 <= padding <= kernel/2");
  auto e = contraction_operand(std::forward<X>(x));
  using E = decltype(e);
  static_assert(E::rank == 4, "tessera: pooling takes an NCHW tensor (rank 4)");
  (void)error::element_type_not_supported<Op, typename E::value_type>::ok;
  return pool_node<Op, E, K, S, P>(std::move(e));
}
}  // namespace detail

/// Max over K x K windows of an NCHW tensor, stride S (default K), padding P (padded cells never win).
template <int K, int S = K, int P = 0, detail::TensorLike X>
auto max_pool2d(X&& x) {
  return detail::make_pool<op::max_pool2d, K, S, P>(std::forward<X>(x));
}
/// Mean over K x K windows of an NCHW tensor, stride S (default K), padding P counted as zeros.
template <int K, int S = K, int P = 0, detail::TensorLike X>
auto avg_pool2d(X&& x) {
  return detail::make_pool<op::avg_pool2d, K, S, P>(std::forward<X>(x));
}

}  // namespace tessera
