// Batch normalisation on the host over x [N, C, HW] (BatchNorm2d: HW = H*W; BatchNorm1d: HW = L or 1), per channel c:
//   cpu_batch_norm_stats     mean[c], invstd[c]: the batch's in training (two passes: the mean, then the squared
//                            deviations from it, so no cancellation), the running ones otherwise; updates the running
//                            statistics in training (variance unbiased) as PyTorch
//   cpu_batch_norm_apply     y = gamma * (x - mean) * invstd + beta, as a * (x - mean) + beta
//   cpu_batch_norm_backward  sum(g) and sum(g * (x - mean)) per channel, the gamma and beta gradients, then dx
// and, for synchronised batch norm (SyncBatchNorm: the sums of every rank added up by a reducer between the steps):
//   cpu_batch_norm_local_sums     sum(x) and sum(x^2) per channel in double (a local two-pass: the local mean, then
//                                 the deviations from it; only the combination of the ranks' sums is one-pass, in double)
//   cpu_batch_norm_global_stats   mean, invstd and the running statistics from the reduced [sum, sumsq, count]
//   cpu_batch_norm_backward_sums  sum(g) and sum(g * xhat) per channel, the (local) gamma and beta gradients
//   cpu_batch_norm_backward_dx    dx from the reduced [sum(g), sum(g * xhat)] and the global count
// Channels (or planes, for the apply) are shared among nthreads threads. Each run of a plane is summed in float
// vectors, runs of at most 1024 values, and the runs' sums in double: vectorised, and as accurate as the double loop
// it replaced within float rounding of a 1024-value run.
#pragma once
#include <algorithm>
#include <cmath>

#include "tessera/core/simd.hpp"
#include "tessera/core/types.hpp"

namespace tessera::detail {

/// Sums over x[0 .. n), added to s0 and s1: without y, sum(x - c) and sum((x - c)^2); WithY, sum(y) and
/// sum((x - c) * y). Float-vectorised in runs of 1024 whose sums are added in double.
template <class T, bool WithY>
void bn_run_sums(const T* __restrict x, const T* __restrict y, index_t n, T c, double& s0, double& s1) {
  for (index_t r0 = 0; r0 < n; r0 += 1024) {
    const index_t r1 = std::min(n, r0 + 1024);
    index_t i = r0;
    T a0 = 0, a1 = 0;
#if TESSERA_SIMD
    constexpr int L = simd::lanes_for<sizeof(T)>;
    using V = simd::vec<T, L>;
    V v0{}, v1{};
    const V cv = simd::splat<T, L>(c);
    for (; i + L <= r1; i += L) {
      const V d = simd::load<T, L>(x + i) - cv;
      if constexpr (WithY) {
        const V yv = simd::load<T, L>(y + i);
        v0 += yv;
        v1 += d * yv;
      } else {
        v0 += d;
        v1 += d * d;
      }
    }
    a0 = simd::reduce_add<T, L>(v0);
    a1 = simd::reduce_add<T, L>(v1);
#endif
    for (; i < r1; ++i) {
      const T d = x[i] - c;
      if constexpr (WithY) {
        a0 += y[i];
        a1 += d * y[i];
      } else {
        a0 += d;
        a1 += d * d;
      }
    }
    s0 += double(a0);
    s1 += double(a1);
  }
}

/// The number of threads for a pass over `elements` values in `items` independent pieces.
inline int bn_threads(index_t elements, index_t items, int nthreads) {
  return elements >= 32768 ? int(std::max<index_t>(1, std::min<index_t>(std::max(1, nthreads), items))) : 1;
}

/// One channel's normalisation: with `batch`, from its batch mean and biased variance over M values, the running
/// statistics moved towards them (the unbiased variance, M - 1); otherwise the running statistics as they are.
/// Writes mean and invstd = 1 / sqrt(variance + eps). (The per-rank and the synchronised statistics share it.)
template <class T>
void bn_finish_channel(bool batch, double mu, double var, double M, double momentum, double eps, T& running_mean, T& running_var,
                       T& mean, T& invstd) {
  T m, v;
  if (batch) {
    m = T(mu);
    v = T(var);
    running_mean = T((1 - momentum) * double(running_mean) + momentum * mu);
    running_var = T((1 - momentum) * double(running_var) + momentum * (M > 1 ? var * M / (M - 1) : var));
  } else {
    m = running_mean;
    v = running_var;
  }
  mean = m;
  invstd = T(1.0 / std::sqrt(double(v) + eps));
}

template <class T>
void cpu_batch_norm_stats(const T* x, index_t N, index_t C, index_t HW, bool training, double momentum, double eps, T* running_mean,
                          T* running_var, T* mean, T* invstd, int nthreads) {
  const index_t M = N * HW;
  [[maybe_unused]] const int nt = bn_threads(M * C, C, nthreads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t c = 0; c < C; ++c) {
    const bool batch = training && M > 0;
    double mu = 0, var = 0;
    if (batch) {
      double s = 0, unused = 0;
      for (index_t n = 0; n < N; ++n) bn_run_sums<T, false>(x + (n * C + c) * HW, nullptr, HW, T(0), s, unused);
      mu = s / double(M);
      double dev = 0, s2 = 0;  // sum(x - mu) (rounding only) and sum((x - mu)^2)
      for (index_t n = 0; n < N; ++n) bn_run_sums<T, false>(x + (n * C + c) * HW, nullptr, HW, T(mu), dev, s2);
      var = std::max(0.0, s2 / double(M) - (dev / double(M)) * (dev / double(M)));
    }
    bn_finish_channel(batch, mu, var, double(M), momentum, eps, running_mean[c], running_var[c], mean[c], invstd[c]);
  }
}

template <class T>
void cpu_batch_norm_apply(const T* x, const T* gamma, const T* beta, const T* mean, const T* invstd, T* y, index_t N, index_t C,
                          index_t HW, int nthreads) {
  [[maybe_unused]] const int nt = bn_threads(N * C * HW, N * C, nthreads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t q = 0; q < N * C; ++q) {
    const index_t c = q % C;
    const T a = gamma[c] * invstd[c], m = mean[c], b = beta[c];  // a * (x - m) + b: no cancellation far from zero
    const T* __restrict xs = x + q * HW;
    T* __restrict ys = y + q * HW;
#if defined(_OPENMP)
#pragma omp simd
#endif
    for (index_t i = 0; i < HW; ++i) ys[i] = a * (xs[i] - m) + b;
  }
}

template <class T>
void cpu_batch_norm_backward(const T* x, const T* g, const T* gamma, const T* mean, const T* invstd, T* dg, T* dbeta, T* dx, index_t N,
                             index_t C, index_t HW, bool training, bool acc_g, bool acc_b, bool acc_x, int nthreads) {
  const index_t M = N * HW;
  [[maybe_unused]] const int nt = bn_threads(M * C, C, nthreads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t c = 0; c < C; ++c) {
    const T mu = mean[c], is = invstd[c], gam = gamma[c];
    double sg = 0, sgd = 0;  // sum(g), sum(g * (x - mean))
    for (index_t n = 0; n < N; ++n) bn_run_sums<T, true>(x + (n * C + c) * HW, g + (n * C + c) * HW, HW, mu, sg, sgd);
    const double sgx = sgd * double(is);  // sum(g * xhat)
    if (dg) dg[c] = (acc_g ? dg[c] : T(0)) + T(sgx);
    if (dbeta) dbeta[c] = (acc_b ? dbeta[c] : T(0)) + T(sg);
    if (!dx) continue;
    // training: dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)) = k * g + kx * (x - mean) + k0
    const T k = gam * is;
    const T mg = training && M > 0 ? T(sg / double(M)) : T(0), mgx = training && M > 0 ? T(sgx / double(M)) : T(0);
    const T kx = -k * is * mgx, k0 = -k * mg;
    for (index_t n = 0; n < N; ++n) {
      const T* __restrict xs = x + (n * C + c) * HW;
      const T* __restrict gs = g + (n * C + c) * HW;
      T* __restrict ds = dx + (n * C + c) * HW;
      if (acc_x) {
#if defined(_OPENMP)
#pragma omp simd
#endif
        for (index_t i = 0; i < HW; ++i) ds[i] += k * gs[i] + kx * (xs[i] - mu) + k0;
      } else {
#if defined(_OPENMP)
#pragma omp simd
#endif
        for (index_t i = 0; i < HW; ++i) ds[i] = k * gs[i] + kx * (xs[i] - mu) + k0;
      }
    }
  }
}

// ---- synchronised batch norm: the local sums, the statistics of the reduced sums, the backward in two steps ----

/// sums[c] = sum(x), sums[C + c] = sum(x^2) per channel over this rank's (N, HW), in double. Each is taken around the
/// local mean (two passes, as cpu_batch_norm_stats) and shifted back, so that a float input far from zero loses no
/// more than the double combination across ranks does (relative error ~1e-16 * mean^2 / var in the variance).
template <class T>
void cpu_batch_norm_local_sums(const T* x, index_t N, index_t C, index_t HW, double* sums, int nthreads) {
  const index_t M = N * HW;
  [[maybe_unused]] const int nt = bn_threads(M * C, C, nthreads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t c = 0; c < C; ++c) {
    if (M == 0) {
      sums[c] = sums[C + c] = 0;
      continue;
    }
    double s = 0, unused = 0;
    for (index_t n = 0; n < N; ++n) bn_run_sums<T, false>(x + (n * C + c) * HW, nullptr, HW, T(0), s, unused);
    const T mu = T(s / double(M));
    double dev = 0, s2 = 0;  // sum(x - mu), sum((x - mu)^2)
    for (index_t n = 0; n < N; ++n) bn_run_sums<T, false>(x + (n * C + c) * HW, nullptr, HW, mu, dev, s2);
    const double m = double(mu);
    sums[c] = double(M) * m + dev;
    sums[C + c] = s2 + 2 * m * dev + double(M) * m * m;
  }
}

/// From the sums of every rank, sums = [sum(x) (C), sum(x^2) (C), count]: mean[c] and invstd[c] of the biased global
/// variance, and the running statistics updated with the global mean and the unbiased global variance (count - 1),
/// as PyTorch's SyncBatchNorm. A count of 0 leaves the running statistics as they are and returns them.
template <class T>
void cpu_batch_norm_global_stats(const double* sums, index_t C, double momentum, double eps, T* running_mean, T* running_var, T* mean,
                                 T* invstd) {
  const double M = sums[2 * C];
  for (index_t c = 0; c < C; ++c) {
    const double mu = M > 0 ? sums[c] / M : 0, var = M > 0 ? std::max(0.0, sums[C + c] / M - mu * mu) : 0;
    bn_finish_channel(M > 0, mu, var, M, momentum, eps, running_mean[c], running_var[c], mean[c], invstd[c]);
  }
}

/// sums[c] = sum(g), sums[C + c] = sum(g * xhat) (xhat = (x - mean) * invstd) per channel over this rank's values, in
/// double; the gamma and beta gradients (when asked for) are these local sums, written or added (acc_g, acc_b).
template <class T>
void cpu_batch_norm_backward_sums(const T* x, const T* g, const T* mean, const T* invstd, T* dg, T* dbeta, double* sums, index_t N,
                                  index_t C, index_t HW, bool acc_g, bool acc_b, int nthreads) {
  [[maybe_unused]] const int nt = bn_threads(N * HW * C, C, nthreads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t c = 0; c < C; ++c) {
    double sg = 0, sgd = 0;  // sum(g), sum(g * (x - mean))
    for (index_t n = 0; n < N; ++n) bn_run_sums<T, true>(x + (n * C + c) * HW, g + (n * C + c) * HW, HW, mean[c], sg, sgd);
    const double sgx = sgd * double(invstd[c]);
    sums[c] = sg;
    sums[C + c] = sgx;
    if (dg) dg[c] = (acc_g ? dg[c] : T(0)) + T(sgx);
    if (dbeta) dbeta[c] = (acc_b ? dbeta[c] : T(0)) + T(sg);
  }
}

/// dx = gamma * invstd * (g - sum(g) / count - xhat * sum(g * xhat) / count) from the reduced sums = [sum(g) (C),
/// sum(g * xhat) (C)] of every rank and the global count (count > 0), written or added (acc_x).
template <class T>
void cpu_batch_norm_backward_dx(const T* x, const T* g, const T* gamma, const T* mean, const T* invstd, const double* sums, double count,
                                T* dx, index_t N, index_t C, index_t HW, bool acc_x, int nthreads) {
  [[maybe_unused]] const int nt = bn_threads(N * HW * C, C, nthreads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (index_t c = 0; c < C; ++c) {
    const T mu = mean[c], is = invstd[c];
    const T k = gamma[c] * is, mg = T(sums[c] / count), mgx = T(sums[C + c] / count);
    const T kx = -k * is * mgx, k0 = -k * mg;  // dx = k * g + kx * (x - mean) + k0
    for (index_t n = 0; n < N; ++n) {
      const T* __restrict xs = x + (n * C + c) * HW;
      const T* __restrict gs = g + (n * C + c) * HW;
      T* __restrict ds = dx + (n * C + c) * HW;
      if (acc_x) {
        for (index_t i = 0; i < HW; ++i) ds[i] += k * gs[i] + kx * (xs[i] - mu) + k0;
      } else {
        for (index_t i = 0; i < HW; ++i) ds[i] = k * gs[i] + kx * (xs[i] - mu) + k0;
      }
    }
  }
}

}  // namespace tessera::detail
