// Adaptive average pooling on the host (PyTorch's AdaptiveAvgPool2d): output cell (i, j) of an OH x OW output is
// the mean of input rows [floor(i*H/OH), ceil((i+1)*H/OH)) and columns [floor(j*W/OW), ceil((j+1)*W/OW)); windows
// may overlap or differ in size. Forward reads x through strides; the backward spreads each output's gradient over
// its window. A plane per task over the threads.
#pragma once
#include <algorithm>

#include "tessera/core/shape.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/backend.hpp"

namespace tessera::detail {

/// First input index of adaptive window i of `out` windows over `in` cells: floor(i * in / out).
constexpr index_t adaptive_start(index_t i, index_t in, index_t out) { return i * in / out; }
/// One past the last input index of window i: ceil((i + 1) * in / out).
constexpr index_t adaptive_end(index_t i, index_t in, index_t out) { return ((i + 1) * in + out - 1) / out; }

/// y [N, C, OH, OW] (contiguous) = the adaptive average pooling of x [N, C, H, W] (strides xs).
template <class T>
void cpu_adaptive_avg_pool2d(const pool2d_geometry& g, const T* x, const index_t* xs, T* y, int nthreads) {
  const index_t planes = g.N * g.C, out = g.OH * g.OW;
  if (planes * out == 0) return;
  stats::count_pass();
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && planes * g.H * g.W >= 65536)
#endif
  for (index_t pl = 0; pl < planes; ++pl) {
    const T* in = x + (pl / g.C) * xs[0] + (pl % g.C) * xs[1];
    T* o = y + pl * out;
    for (index_t i = 0; i < g.OH; ++i) {
      const index_t h0 = adaptive_start(i, g.H, g.OH), h1 = adaptive_end(i, g.H, g.OH);
      for (index_t j = 0; j < g.OW; ++j) {
        const index_t w0 = adaptive_start(j, g.W, g.OW), w1 = adaptive_end(j, g.W, g.OW);
        double acc = 0;  // as the other host pools: the sum in double
        for (index_t h = h0; h < h1; ++h)
          for (index_t w = w0; w < w1; ++w) acc += double(in[h * xs[2] + w * xs[3]]);
        o[i * g.OW + j] = T(acc / double((h1 - h0) * (w1 - w0)));
      }
    }
  }
}

/// dx [N, C, H, W] (contiguous; added to when accumulate) = the gradient of adaptive average pooling from dy
/// [N, C, OH, OW] (contiguous): each dy spread evenly over its window.
template <class T>
void cpu_adaptive_avg_pool2d_backward(const pool2d_geometry& g, const T* dy, T* dx, bool accumulate, int nthreads) {
  const index_t planes = g.N * g.C, plane = g.H * g.W;
  if (planes * plane == 0) return;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && planes * plane >= 65536)
#endif
  for (index_t pl = 0; pl < planes; ++pl) {
    T* d = dx + pl * plane;
    const T* gp = dy + pl * g.OH * g.OW;
    if (!accumulate) std::fill(d, d + plane, T(0));
    for (index_t i = 0; i < g.OH; ++i) {
      const index_t h0 = adaptive_start(i, g.H, g.OH), h1 = adaptive_end(i, g.H, g.OH);
      for (index_t j = 0; j < g.OW; ++j) {
        const index_t w0 = adaptive_start(j, g.W, g.OW), w1 = adaptive_end(j, g.W, g.OW);
        const T share = gp[i * g.OW + j] / T((h1 - h0) * (w1 - w0));
        for (index_t h = h0; h < h1; ++h)
          for (index_t w = w0; w < w1; ++w) d[h * g.W + w] += share;
      }
    }
  }
}

}  // namespace tessera::detail
