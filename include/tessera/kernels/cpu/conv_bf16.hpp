// bf16 convolution on the CPU: conv2d (NCHW) and its two gradients with bfloat16 operands and fp32 accumulation,
// on top of the bf16 GEMM (kernels/cpu/gemm_bf16.hpp), for the mixed-precision (autocast) mode.
//
//   detail::cpu_to_bf16(src, dst, n, nthreads)                         fp32 -> bf16, as bfloat16(float)
//   detail::cpu_conv2d_bf16(g, x, w, y, nthreads, epi)                 y = conv2d(x, w)             (fp32 y)
//   detail::cpu_conv2d_bf16_backward_data(g, dy, w, dx, acc, nthreads)   dx (+)= the input's gradient (fp32 dx)
//   detail::cpu_conv2d_bf16_backward_weight(g, x, dy, dw, acc, nthreads) dw (+)= the weights' gradient (fp32 dw)
//   backend<cpu> / backend<cpu_threads>::to_bf16, conv2d_bf16, conv2d_bf16_backward_data / _weight call them.
//
// Shapes (conv_geometry, kernels/backend.hpp): x [N, C, H, W], w [K, C/groups, R, S], y and dy [N, K, OH, OW], all
// contiguous; any stride, padding, dilation and groups. Each image and group is a GEMM on an im2col matrix
// (col [Cg*R*S x P], P = OH*OW, zero where a tap falls in the padding):
//   forward          Y_n,g [Kg x P]   = W_g [Kg x Cg*R*S] * col_n,g        (col gathered in bf16)
//   backward data    col  [Cg*R*S x P] = W_g^T * dY_n,g (fp32), then added back into the input positions (col2im)
//   backward weight  dW_g [Kg x Cg*R*S] += dY_n,g * col_n,g^T             (col re-gathered in bf16 from x; or the
//                    transpose col * dY^T where that fills the GEMM's register tiles better: few taps, many channels)
// col is formed in blocks of whole output rows (at most ~1M elements) in a scratch buffer of the thread's own.
// On the avx2 path (bf16 widened to fp32, then fp32 FMA) the forward and the weight gradient instead widen their
// operands whole (fp32 copies in scratch kept by the calling thread) and run conv.hpp's fp32 kernels where that was
// measured faster (conv_bf16_widens: im2col's volume at least twice the widened one, and no groups for the weight
// gradient); conv_bf16_route_setting() can force the GEMM.
// Threads: with at least as many images as threads, images are split between the threads (each with one-thread
// GEMMs; the weight gradient in one fp32 partial per thread, added at the end in a fixed order); otherwise the
// images run one after another with GEMMs on all the threads. One thread below 2e6 flops.
// Guarantees: every product is exact in fp32 (bf16 x bf16), the only rounding is fp32 accumulation (GEMM order, then
// col2im's sum over the taps): within about (terms) * 2^-24 * sum |products| of the exact result. The epilogue
// epi(n, k0, krows, p0, pcols) runs once on every element of y, after it is final (as cpu_conv2d's). The bf16
// path (avx512_bf16, avx2 widening, portable) is the GEMM's, chosen at run time (TESSERA_BF16_ISA caps it).
// Errors: negative extents, stride or dilation < 1, negative padding, groups not dividing C and K, or OH / OW not
// the output extents of the geometry throw shape_error naming the shapes. No bias here: its gradient is summed from
// fp32 dy by cpu_conv2d_backward_bias (conv.hpp).
#pragma once
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/types.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/conv.hpp"
#include "tessera/kernels/cpu/gemm_bf16.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tessera::detail {

/// dst[i] = bfloat16(src[i]) for i < n: round to nearest even, NaN kept a NaN (the quiet bit set), exactly as the
/// bfloat16(float) constructor; bit operations in a loop the compiler vectorises, threads from 2^16 elements.
inline void cpu_to_bf16(const float* __restrict src, bfloat16* __restrict dst, index_t n, int nthreads) {
  if (n <= 0) return;
  auto run = [&](index_t i0, index_t i1) {
    std::uint16_t* __restrict d = &dst[0].bits;  // (bfloat16 is its one uint16_t member)
#if defined(_OPENMP)
#pragma omp simd
#endif
    for (index_t i = i0; i < i1; ++i) {
      const std::uint32_t u = std::bit_cast<std::uint32_t>(src[i]);
      const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u >> 16) | 0x40u;
      d[i] = std::uint16_t((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    }
  };
  const int nt = n >= (index_t(1) << 16) ? std::max(1, nthreads) : 1;
  if (nt == 1) return run(0, n);
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
  {
    const index_t me = omp_get_thread_num(), team = omp_get_num_threads();
    // whole blocks of 64 elements per thread (no two threads write one cache line)
    const index_t blocks = (n + 63) / 64, b0 = blocks * me / team, b1 = blocks * (me + 1) / team;
    run(std::min(n, b0 * 64), std::min(n, b1 * 64));
  }
#else
  run(0, n);
#endif
}

/// d[i] = s[i] as the float it is (exact), i < n; threads from 2^16 elements.
inline void conv_bf16_widen(const bfloat16* __restrict s, float* __restrict d, index_t n, int nthreads) {
  [[maybe_unused]] const int nt = n >= (index_t(1) << 16) ? std::max(1, nthreads) : 1;
#if defined(_OPENMP)
#pragma omp parallel for simd num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t i = 0; i < n; ++i) d[i] = std::bit_cast<float>(std::uint32_t(s[i].bits) << 16);
}

/// Which way the forward and the weight gradient run where the bf16 GEMM's path is avx2 (bf16 widened to fp32, then
/// fp32 FMA): `automatic` widens the whole operands to fp32 and runs conv.hpp's fp32 kernels (they read the input
/// in place and pack the weights once per call) where im2col would gather at least twice the elements widened (and,
/// for the weight gradient, without groups), else im2col + the bf16 GEMM; `gemm` always takes im2col + the bf16 GEMM
/// (the tests run both). Every other path always takes the GEMM. The rule fits ten measurements on Zen 3 (2 threads;
/// the faster route by 8 % to 2.1x): SimpleCNN's layers at batch 64 (widen: both forwards, the second's weight
/// gradient at ratio 3; GEMM: the first's weight gradient, ratio 0.27, its dy being large), a 1 x 1 convolution
/// (GEMM: ratio 1 forward, 0.5 weight), groups 2 and depthwise (widen forward; GEMM for their weight gradients,
/// where conv.hpp's kernel was 1.1x and 2.1x slower).
enum class conv_bf16_route { automatic, gemm };
inline std::atomic<int>& conv_bf16_route_setting() {
  static std::atomic<int> r{0};
  return r;
}
/// Does the forward (weight: the weight gradient) of g widen its operands and run conv.hpp's kernel?
inline bool conv_bf16_widens(const conv_geometry& g, bool weight) {
  if (bf16_isa_active() != bf16_isa::avx2 || conv_bf16_route(conv_bf16_route_setting().load()) != conv_bf16_route::automatic)
    return false;
  if (weight && g.groups != 1) return false;
  const index_t Kd = (g.groups > 0 ? g.C / g.groups : 0) * g.R * g.S, P = g.OH * g.OW;
  const double gathered = double(g.N) * double(g.C) * double(g.R * g.S) * double(P);
  return gathered >= 2.0 * double(g.N * g.C * g.H * g.W + (weight ? g.N * g.K * P : g.K * Kd));
}

/// Throws shape_error unless g is a valid convolution (see the top of the file); fn names the caller.
inline void conv_bf16_check(const char* fn, const conv_geometry& g) {
  auto shape = [](index_t a, index_t b, index_t c, index_t d) {
    return "[" + std::to_string(a) + ", " + std::to_string(b) + ", " + std::to_string(c) + ", " + std::to_string(d) + "]";
  };
  auto fail = [&](const std::string& why) {
    throw shape_error(std::string("tessera: ") + fn + ": x " + shape(g.N, g.C, g.H, g.W) + " * w " +
                      shape(g.K, g.groups > 0 ? g.C / g.groups : g.C, g.R, g.S) + " -> y " + shape(g.N, g.K, g.OH, g.OW) +
                      " (stride " + std::to_string(g.stride.h) + "x" + std::to_string(g.stride.w) + ", padding " +
                      std::to_string(g.pad.h) + "x" + std::to_string(g.pad.w) + ", dilation " + std::to_string(g.dilation.h) +
                      "x" + std::to_string(g.dilation.w) + ", groups " + std::to_string(g.groups) + "): " + why);
  };
  if (g.N < 0 || g.C < 0 || g.H < 0 || g.W < 0 || g.K < 0 || g.R < 0 || g.S < 0 || g.OH < 0 || g.OW < 0)
    fail("extents must be >= 0");
  if (g.stride.h < 1 || g.stride.w < 1 || g.dilation.h < 1 || g.dilation.w < 1 || g.pad.h < 0 || g.pad.w < 0 || g.groups < 1)
    fail("needs stride >= 1, dilation >= 1, padding >= 0 (on both axes) and groups >= 1");
  if (g.C % g.groups != 0 || g.K % g.groups != 0)
    fail("the input channels (" + std::to_string(g.C) + ") and output channels (" + std::to_string(g.K) +
         ") must be multiples of groups (" + std::to_string(g.groups) + ")");
  auto extent = [](index_t in, index_t k, index_t s, index_t p, index_t d) {
    const index_t span = in + 2 * p - d * (k - 1) - 1;
    return span < 0 ? index_t(0) : span / s + 1;
  };
  const index_t oh = extent(g.H, g.R, g.stride.h, g.pad.h, g.dilation.h), ow = extent(g.W, g.S, g.stride.w, g.pad.w, g.dilation.w);
  if (g.OH != oh || g.OW != ow)
    fail("the output is " + std::to_string(oh) + "x" + std::to_string(ow) + " for this input and kernel, not " +
         std::to_string(g.OH) + "x" + std::to_string(g.OW));
}

/// Output rows per block of col: whole rows, at most ~1M elements of col (at least one row).
inline index_t conv_bf16_rows(const conv_geometry& g, index_t Kd) {
  const index_t per_row = std::max<index_t>(1, Kd * g.OW);
  return std::clamp<index_t>((index_t(1) << 20) / per_row, 1, std::max<index_t>(1, g.OH));
}

/// The valid output columns of a tap at horizontal offset dw (iw = ow * stride + dw): [lo, hi) within [0, OW).
inline void conv_bf16_cols(const conv_geometry& g, index_t dw, index_t& lo, index_t& hi) {
  const index_t sw = g.stride.w;
  lo = dw >= 0 ? 0 : (-dw + sw - 1) / sw;
  hi = g.W - 1 - dw < 0 ? 0 : (g.W - 1 - dw) / sw + 1;
  lo = std::min(lo, g.OW);
  hi = std::clamp(hi, lo, g.OW);
}

/// col [Cg*R*S x (oh1-oh0)*OW] (row stride ld) = the taps of output rows [oh0, oh1) of one image and group, whose
/// first input channel is xg ([Cg][H][W]); zero where a tap falls in the padding. Channels split between nt threads
/// where there is enough to do.
inline void conv_bf16_im2col(const conv_geometry& g, const bfloat16* __restrict xg, index_t oh0, index_t oh1,
                             bfloat16* __restrict col, index_t ld, int nt = 1) {
  const index_t Cg = g.C / g.groups, sh = g.stride.h, sw = g.stride.w, OW = g.OW;
  const bfloat16 zero{};
  [[maybe_unused]] const bool par = nt > 1 && Cg > 1 && Cg * g.R * g.S * (oh1 - oh0) * OW >= 65536;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
#endif
  for (index_t c = 0; c < Cg; ++c)  // (channel c's taps touch only its own plane)
    for (index_t r = 0, kd = c * g.R * g.S; r < g.R; ++r)
      for (index_t s = 0; s < g.S; ++s, ++kd) {
        const index_t dh = r * g.dilation.h - g.pad.h, dw = s * g.dilation.w - g.pad.w;
        index_t lo, hi;
        conv_bf16_cols(g, dw, lo, hi);
        bfloat16* out = col + kd * ld;
        for (index_t oh = oh0; oh < oh1; ++oh, out += OW) {
          const index_t ih = oh * sh + dh;
          if (ih < 0 || ih >= g.H) {
            std::fill(out, out + OW, zero);
            continue;
          }
          const bfloat16* row = xg + (c * g.H + ih) * g.W;  // input column ow * sw + dw
          std::fill(out, out + lo, zero);
          if (sw == 1) std::memcpy(out + lo, row + lo + dw, std::size_t(hi - lo) * sizeof(bfloat16));
          else
            for (index_t ow = lo; ow < hi; ++ow) out[ow] = row[ow * sw + dw];
          std::fill(out + hi, out + OW, zero);
        }
      }
}

/// dxg ([Cg][H][W], fp32) += col [Cg*R*S x (oh1-oh0)*OW] (row stride ld) added back at the input positions its
/// taps came from (the adjoint of conv_bf16_im2col; taps in the padding are dropped); channels split as there.
inline void conv_bf16_col2im(const conv_geometry& g, const float* __restrict col, index_t ld, index_t oh0, index_t oh1,
                             float* __restrict dxg, int nt = 1) {
  const index_t Cg = g.C / g.groups, sh = g.stride.h, sw = g.stride.w, OW = g.OW;
  [[maybe_unused]] const bool par = nt > 1 && Cg > 1 && Cg * g.R * g.S * (oh1 - oh0) * OW >= 65536;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
#endif
  for (index_t c = 0; c < Cg; ++c)  // (channel c's taps touch only its own plane)
    for (index_t r = 0, kd = c * g.R * g.S; r < g.R; ++r)
      for (index_t s = 0; s < g.S; ++s, ++kd) {
        const index_t dh = r * g.dilation.h - g.pad.h, dw = s * g.dilation.w - g.pad.w;
        index_t lo, hi;
        conv_bf16_cols(g, dw, lo, hi);
        const float* in = col + kd * ld;
        for (index_t oh = oh0; oh < oh1; ++oh, in += OW) {
          const index_t ih = oh * sh + dh;
          if (ih < 0 || ih >= g.H) continue;
          float* row = dxg + (c * g.H + ih) * g.W;  // input column ow * sw + dw
          if (sw == 1)
            for (index_t ow = lo; ow < hi; ++ow) row[ow + dw] += in[ow];
          else
            for (index_t ow = lo; ow < hi; ++ow) row[ow * sw + dw] += in[ow];
        }
      }
}

/// The threads of a convolution of this many flops: none beyond one below 2e6; team > 1 when the images are split
/// between the threads (each running one-thread GEMMs), else inner threads for each GEMM.
struct conv_bf16_threads {
  int team = 1, inner = 1;
  conv_bf16_threads(const conv_geometry& g, double flops, int nthreads) {
#if defined(_OPENMP)
    const int nt = flops < 2e6 ? 1 : std::max(1, nthreads);
#else
    const int nt = 1;
    (void)flops, (void)nthreads;
#endif
    if (nt > 1 && g.N >= nt) team = nt;
    else inner = nt;
  }
};

/// The share of the bf16 GEMM's register tiles that a product of M x N fills on the active path (1 where the path
/// has none): picks the weight gradient's orientation.
inline double conv_bf16_tiles_filled(index_t M, index_t N) {
  index_t mr = bf16_path_widen::mr, nr = bf16_path_widen::nr;
  switch (bf16_isa_active()) {
    case bf16_isa::portable: return 1.0;
    case bf16_isa::avx512_bf16: mr = bf16_pairs_layout<true>::mr, nr = bf16_pairs_layout<true>::nr; break;
    case bf16_isa::amx_bf16: mr = bf16_amx_layout<true>::mr, nr = bf16_amx_layout<true>::nr; break;
    default: break;
  }
  auto fill = [](index_t n, index_t r) { return n <= 0 ? 1.0 : double(n) / double((n + r - 1) / r * r); };
  return fill(M, mr) * fill(N, nr);
}

/// for n in [0, N): body(n) on a team of `team` threads (dynamic schedule, one image at a time).
template <class Body>
void conv_bf16_images(index_t N, int team, const Body& body) {
  if (team > 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(team) schedule(dynamic, 1)
#endif
    for (index_t n = 0; n < N; ++n) body(n);
  } else {
    for (index_t n = 0; n < N; ++n) body(n);
  }
}

/// The GEMM's epilogue for the block of image n's channels from k0 and pixels from p0: its tile (i0, j0, rows, cols)
/// is epi(n, k0 + i0, rows, p0 + j0, cols).
template <class Epi>
struct conv_bf16_tile_epilogue {
  static constexpr bool active = true;
  const Epi& epi;
  index_t n, k0, p0;
  void operator()(index_t i0, index_t j0, index_t rows, index_t cols) const { epi(n, k0 + i0, rows, p0 + j0, cols); }
};

/// y [N, K, OH, OW] (fp32) = conv2d(x [N, C, H, W], w [K, C/groups, R, S]) with bf16 operands, all contiguous.
/// An active epilogue is called as epi(n, k0, krows, p0, pcols) on each block of y once it is final (each element
/// exactly once): the GEMM's tiles, channels k0 .. k0+krows of pixels p0 .. p0+pcols of image n.
template <class Epi = no_epilogue>
void cpu_conv2d_bf16(const conv_geometry& g, const bfloat16* x, const bfloat16* w, float* y, int nthreads, const Epi& epi = {}) {
  conv_bf16_check("cpu_conv2d_bf16", g);
  const index_t Cg = g.C / g.groups, Kg = g.K / g.groups, Kd = Cg * g.R * g.S, P = g.OH * g.OW;
  if (g.N == 0 || g.K == 0 || P == 0) return;
  if (conv_bf16_widens(g, false)) {
    float* const xf = conv_scratch<float, 10>::get(std::size_t(g.N * g.C * g.H * g.W));
    float* const wf = conv_scratch<float, 11>::get(std::size_t(std::max<index_t>(1, g.K * Kd)));
    conv_bf16_widen(x, xf, g.N * g.C * g.H * g.W, nthreads);
    conv_bf16_widen(w, wf, g.K * Kd, nthreads);
    const index_t xs[4] = {g.C * g.H * g.W, g.H * g.W, g.W, 1}, ws[4] = {Kd, g.R * g.S, g.S, 1};
    return cpu_conv2d<float>(g, xf, xs, wf, ws, y, g.K * P, P, nthreads, epi);
  }
  const conv_bf16_threads th(g, 2.0 * double(g.N) * double(g.K) * double(P) * double(Kd), nthreads);
  const index_t rows = conv_bf16_rows(g, Kd);
  conv_bf16_images(g.N, th.team, [&](index_t n) {
    bfloat16* const col = conv_scratch<bfloat16, 0>::get(std::size_t(std::max<index_t>(1, Kd * rows * g.OW)));
    for (index_t grp = 0; grp < g.groups; ++grp)
      for (index_t oh0 = 0; oh0 < g.OH; oh0 += rows) {
        const index_t oh1 = std::min(g.OH, oh0 + rows), pc = (oh1 - oh0) * g.OW, p0 = oh0 * g.OW, k0 = grp * Kg;
        conv_bf16_im2col(g, x + (n * g.C + grp * Cg) * g.H * g.W, oh0, oh1, col, pc, th.inner);
        float* yb = y + (n * g.K + k0) * P + p0;
        if constexpr (Epi::active) {
          const conv_bf16_tile_epilogue<Epi> tile{epi, n, k0, p0};
          cpu_gemm_bf16(Kg, pc, Kd, {w + k0 * Kd, Kd, 1}, {col, pc, 1}, yb, P, false, th.inner, tile);
        } else {
          cpu_gemm_bf16(Kg, pc, Kd, {w + k0 * Kd, Kd, 1}, {col, pc, 1}, yb, P, false, th.inner);
        }
      }
  });
}

/// dx [N, C, H, W] (fp32) = (accumulate: +=) the gradient of conv2d's input for the output gradient dy
/// [N, K, OH, OW] (bf16) and weights w (bf16): per image and group col = W_g^T * dY_n,g (fp32), then col2im.
inline void cpu_conv2d_bf16_backward_data(const conv_geometry& g, const bfloat16* dy, const bfloat16* w, float* dx,
                                          bool accumulate, int nthreads) {
  conv_bf16_check("cpu_conv2d_bf16_backward_data", g);
  const index_t Cg = g.C / g.groups, Kg = g.K / g.groups, Kd = Cg * g.R * g.S, P = g.OH * g.OW, HW = g.H * g.W;
  if (!accumulate) std::fill(dx, dx + g.N * g.C * HW, 0.0f);
  if (g.N == 0 || g.K == 0 || P == 0 || Kd == 0) return;
  const conv_bf16_threads th(g, 2.0 * double(g.N) * double(g.K) * double(P) * double(Kd), nthreads);
  const index_t rows = conv_bf16_rows(g, Kd);
  conv_bf16_images(g.N, th.team, [&](index_t n) {
    float* const col = conv_scratch<float, 8>::get(std::size_t(Kd * rows * g.OW));
    for (index_t grp = 0; grp < g.groups; ++grp)
      for (index_t oh0 = 0; oh0 < g.OH; oh0 += rows) {
        const index_t oh1 = std::min(g.OH, oh0 + rows), pc = (oh1 - oh0) * g.OW, k0 = grp * Kg;
        cpu_gemm_bf16(Kd, pc, Kg, {w + k0 * Kd, 1, Kd}, {dy + (n * g.K + k0) * P + oh0 * g.OW, P, 1}, col, pc, false, th.inner);
        conv_bf16_col2im(g, col, pc, oh0, oh1, dx + (n * g.C + grp * Cg) * HW, th.inner);
      }
  });
}

/// dw [K, C/groups, R, S] (fp32) = (accumulate: +=) the gradient of conv2d's weights: the sum over images of
/// dY_n,g [Kg x P] * col_n,g^T, x and dy bf16, accumulated in fp32.
inline void cpu_conv2d_bf16_backward_weight(const conv_geometry& g, const bfloat16* x, const bfloat16* dy, float* dw,
                                            bool accumulate, int nthreads) {
  conv_bf16_check("cpu_conv2d_bf16_backward_weight", g);
  const index_t Cg = g.C / g.groups, Kg = g.K / g.groups, Kd = Cg * g.R * g.S, P = g.OH * g.OW, size = g.K * Kd;
  if (!accumulate) std::fill(dw, dw + size, 0.0f);
  if (g.N == 0 || size == 0 || P == 0) return;
  if (conv_bf16_widens(g, true)) {
    float* const xf = conv_scratch<float, 10>::get(std::size_t(g.N * g.C * g.H * g.W));
    float* const dyf = conv_scratch<float, 11>::get(std::size_t(g.N * g.K * P));
    conv_bf16_widen(x, xf, g.N * g.C * g.H * g.W, nthreads);
    conv_bf16_widen(dy, dyf, g.N * g.K * P, nthreads);
    return cpu_conv2d_backward_weight<float>(g, xf, dyf, dw, nullptr, true, nthreads);
  }
  const conv_bf16_threads th(g, 2.0 * double(g.N) * double(g.K) * double(P) * double(Kd), nthreads);
  const index_t rows = conv_bf16_rows(g, Kd);
  // dW_g [Kg x Kd] += dY_n,g col^T, or its transpose col dY_n,g^T [Kd x Kg] (into transposed parts) where that fills
  // the GEMM's register tiles better (few taps and many channels: 9 x 32 in SimpleCNN's first layer)
  const bool tr = conv_bf16_tiles_filled(Kd, Kg) > conv_bf16_tiles_filled(Kg, Kd);
  // thread t of the team adds its images into part t (in the calling thread's scratch); one thread and no transpose:
  // straight into dw
  const bool direct = th.team == 1 && !tr;
  float* const parts = direct ? dw : conv_scratch<float, 9>::get(std::size_t(th.team) * std::size_t(size));
  std::vector<char> used(std::size_t(th.team), 0);
  auto image = [&](index_t n, float* d, bool acc) {
    bfloat16* const col = conv_scratch<bfloat16, 1>::get(std::size_t(Kd * rows * g.OW));
    for (index_t grp = 0; grp < g.groups; ++grp)
      for (index_t oh0 = 0, first = 1; oh0 < g.OH; oh0 += rows, first = 0) {
        const index_t oh1 = std::min(g.OH, oh0 + rows), pc = (oh1 - oh0) * g.OW, k0 = grp * Kg;
        const bfloat16* dyb = dy + (n * g.K + k0) * P + oh0 * g.OW;
        conv_bf16_im2col(g, x + (n * g.C + grp * Cg) * g.H * g.W, oh0, oh1, col, pc, th.inner);
        if (tr) cpu_gemm_bf16(Kd, Kg, pc, {col, pc, 1}, {dyb, 1, P}, d + k0 * Kd, Kg, acc || !first, th.inner);
        else cpu_gemm_bf16(Kg, Kd, pc, {dyb, P, 1}, {col, 1, pc}, d + k0 * Kd, Kd, acc || !first, th.inner);
      }
  };
  if (direct) {
    for (index_t n = 0; n < g.N; ++n) image(n, dw, true);
    return;
  }
  if (th.team == 1) {
    for (index_t n = 0; n < g.N; ++n) image(n, parts, n > 0);
    used[0] = 1;
  } else {
#if defined(_OPENMP)
#pragma omp parallel num_threads(th.team)
    {
      const index_t me = omp_get_thread_num(), team = omp_get_num_threads();
      const index_t n0 = g.N * me / team, n1 = g.N * (me + 1) / team;
      for (index_t n = n0; n < n1; ++n) image(n, parts + me * size, n > n0);
      used[std::size_t(me)] = n1 > n0;
    }
#endif
  }
  // the parts added in thread order (the same result for the same team); part t's element of dw (grp, k, kd) at
  // grp*Kg*Kd + k*Kd + kd, or grp*Kd*Kg + kd*Kg + k transposed
  [[maybe_unused]] const int nt = size >= 65536 ? th.team : 1;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t i = 0; i < size; ++i) {
    const index_t grp = i / (Kg * Kd), k = i / Kd % Kg, kd = i % Kd, at = tr ? grp * Kg * Kd + kd * Kg + k : i;
    float s = dw[i];
    for (int t = 0; t < th.team; ++t)
      if (used[std::size_t(t)]) s += parts[t * size + at];
    dw[i] = s;
  }
}

}  // namespace tessera::detail
