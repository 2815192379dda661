// host_norm_ops<P>: the layer-normalisation part of backend<cpu> / backend<cpu_threads> (kernels/cpu/backend.hpp), the
// kernels of autodiff/norm_ops.hpp on raw pointers (no Vars). Rows of `cols` contiguous elements are normalised:
//   layer_norm_forward    y = (x - mean) * rstd * w + b in one pass over each row (statistics summed in double), the
//                         row's mean and rstd = 1 / sqrt(var + eps) kept for the backward (var biased, as PyTorch)
//   layer_norm_backward   dx, dw and db in one pass over x and g: each thread sums dw and db over its rows in a
//                         buffer of its own, and the buffers are added in thread order (the same bits for a thread
//                         count)
// w and b may be null (no affine parameters); a null gradient pointer is not computed. The same names and argument
// lists as cuda_norm_ops (kernels/cuda/norm.hpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "tessera/core/policy.hpp"
#include "tessera/kernels/backend.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tessera::detail {

template <class P>
struct host_norm_ops {
  /// y[r] = (x[r] - mean[r]) * rstd[r] * w + b for rows x [rows, cols]; mean and rstd [rows] are written.
  template <class T>
  static void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, index_t rows, index_t cols,
                                 double eps) {
    const int nt = rows * cols >= 32768 ? std::max(1, P::num_threads()) : 1;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
    for (index_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      double s = 0;
      for (index_t c = 0; c < cols; ++c) s += double(xr[c]);
      const double mu = cols > 0 ? s / double(cols) : 0.0;
      double v = 0;  // two passes over a row in cache: no cancellation as in E[x^2] - E[x]^2
      for (index_t c = 0; c < cols; ++c) {
        const double d = double(xr[c]) - mu;
        v += d * d;
      }
      const double rs = 1.0 / std::sqrt((cols > 0 ? v / double(cols) : 0.0) + eps);
      const T m = T(mu), is = T(rs);
      mean[r] = m;
      rstd[r] = is;
      if (w && b)
        for (index_t c = 0; c < cols; ++c) yr[c] = (xr[c] - m) * is * w[c] + b[c];
      else if (w)
        for (index_t c = 0; c < cols; ++c) yr[c] = (xr[c] - m) * is * w[c];
      else if (b)
        for (index_t c = 0; c < cols; ++c) yr[c] = (xr[c] - m) * is + b[c];
      else
        for (index_t c = 0; c < cols; ++c) yr[c] = (xr[c] - m) * is;
    }
  }

  /// From g = dL/dy: dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)), dw = sum over rows of g xhat, db = sum
  /// of g (xhat = (x - mean) * rstd). Each output is written, or added to when its acc flag says so; null: skipped.
  template <class T>
  static void layer_norm_backward(const T* x, const T* g, const T* w, const T* mean, const T* rstd, T* dx, bool acc_x, T* dw,
                                  bool acc_w, T* db, bool acc_b, index_t rows, index_t cols) {
    const int nt = rows * cols >= 32768 ? std::max(1, P::num_threads()) : 1;
    const bool params = dw || db;
    std::vector<T> part(params ? std::size_t(nt) * std::size_t(2 * cols) : 0, T(0));
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
#if defined(_OPENMP)
      const int me = omp_get_thread_num();
#else
      const int me = 0;
#endif
      T* pw = params ? part.data() + std::size_t(me) * std::size_t(2 * cols) : nullptr;
      T* pb = params ? pw + cols : nullptr;
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (index_t r = 0; r < rows; ++r) {
        const T* xr = x + r * cols;
        const T* gr = g + r * cols;
        const T m = mean[r], is = rstd[r];
        if (params)
          for (index_t c = 0; c < cols; ++c) {
            pw[c] += gr[c] * (xr[c] - m) * is;
            pb[c] += gr[c];
          }
        if (!dx) continue;
        T s1 = 0, s2 = 0;  // sum(g w), sum(g w xhat)
        for (index_t c = 0; c < cols; ++c) {
          const T gw = w ? gr[c] * w[c] : gr[c];
          s1 += gw;
          s2 += gw * (xr[c] - m) * is;
        }
        const T a = s1 / T(cols), bq = s2 / T(cols);
        T* dr = dx + r * cols;
        for (index_t c = 0; c < cols; ++c) {
          const T gw = w ? gr[c] * w[c] : gr[c];
          const T d = is * (gw - a - (xr[c] - m) * is * bq);
          dr[c] = acc_x ? dr[c] + d : d;
        }
      }
    }
    if (!params) return;
    for (index_t c = 0; c < cols; ++c) {
      T sw = 0, sb = 0;
      for (int t = 0; t < nt; ++t) {
        sw += part[std::size_t(t) * std::size_t(2 * cols) + std::size_t(c)];
        sb += part[std::size_t(t) * std::size_t(2 * cols) + std::size_t(cols + c)];
      }
      if (dw) dw[c] = acc_w ? dw[c] + sw : sw;
      if (db) db[c] = acc_b ? db[c] + sb : sb;
    }
  }
};

}  // namespace tessera::detail
