// cuda_rnn_ops: the rnn part of backend<cuda> (see kernels/cuda/backend.hpp). Compiled only by nvcc. The LSTM's
// kernels with the names and arguments of host_rnn_ops (kernels/cpu/rnn.hpp), on tessera's stream:
//   rnn_bias_rows, lstm_step_forward / _backward, rnn_swap01, rnn_add, rnn_mul   grid-stride kernels, one element
//                                                     (one (row, unit) pair for a step) per thread
//   lstm_prepare_weight_hh, lstm_recurrent_forward / _backward   cuBLASLt products (cuda_gemm, plans cached)
//   rnn_prepare_weight_hh, rnn_recurrent_forward / _backward     the same for G*H gates (GRU, RNN)
//   gru_step_forward, gru_seq_step_backward, rnn_step_forward / _backward, rnn_copy_cols   the GRU's and the plain
//                                                     RNN's steps and a column block copy, grid-stride as above
//   rnn_bias_grads                                    a block per column summing in a fixed order (no atomics: the
//                                                     same result every run)
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <type_traits>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/gemm.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera::detail {

namespace cuda_rnn_kernels {

inline constexpr int block = 256;  // every kernel below runs 256-thread blocks (column_sums depends on it)

using cuda_kernels::dexp;
template <class T>
__device__ __forceinline__ T sigmoid(T v) {
  return T(1) / (T(1) + dexp(-v));
}
template <class T>
__device__ __forceinline__ T dtanh(T v) {
  if constexpr (std::is_same_v<T, float>) return ::tanhf(v);
  else return ::tanh(v);
}

#define TESSERA_RNN_GRID_STRIDE(k, n) \
  for (index_t k = index_t(blockIdx.x) * blockDim.x + threadIdx.x; k < (n); k += index_t(gridDim.x) * blockDim.x)

template <class T>
__global__ void step_forward(T* gates, const T* cprev, T* c, T* h, index_t B, index_t H) {
  TESSERA_RNN_GRID_STRIDE(k, B * H) {
    const index_t b = k / H, j = k - b * H;
    T* g = gates + b * 4 * H;
    const T i = sigmoid(g[j]), f = sigmoid(g[H + j]), gg = dtanh(g[2 * H + j]), o = sigmoid(g[3 * H + j]);
    g[j] = i, g[H + j] = f, g[2 * H + j] = gg, g[3 * H + j] = o;
    const T cn = cprev ? f * cprev[k] + i * gg : i * gg;
    c[k] = cn;
    h[k] = o * dtanh(cn);
  }
}

template <class T>
__global__ void step_backward(const T* gates, const T* c, const T* cprev, const T* dh, const T* dy, T* dc, T* dgates, index_t B,
                              index_t H) {
  TESSERA_RNN_GRID_STRIDE(k, B * H) {
    const index_t b = k / H, j = k - b * H;
    const T* g = gates + b * 4 * H;
    T* dg = dgates + b * 4 * H;
    const T i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
    const T tc = dtanh(c[k]), d = dy ? dh[k] + dy[k] : dh[k];
    const T dct = dc[k] + d * o * (T(1) - tc * tc);
    const T cp = cprev ? cprev[k] : T(0);
    dg[j] = dct * gg * i * (T(1) - i);
    dg[H + j] = dct * cp * f * (T(1) - f);
    dg[2 * H + j] = dct * i * (T(1) - gg * gg);
    dg[3 * H + j] = d * tc * o * (T(1) - o);
    dc[k] = dct * f;
  }
}

template <class T>
__global__ void bias_rows(T* G, const T* b1, const T* b2, index_t rows, index_t GW) {
  TESSERA_RNN_GRID_STRIDE(k, rows * GW) {
    const index_t j = k % GW;
    G[k] = (b1 ? b1[j] : T(0)) + (b2 ? b2[j] : T(0));
  }
}

/// A block per column j: threads sum rows r = tid, tid + 256, ... in order, then a fixed tree over the block.
template <class T>
__global__ void column_sums(T* db1, T* db2, const T* dG, index_t rows, index_t GW) {
  __shared__ T part[block];
  for (index_t j = blockIdx.x; j < GW; j += gridDim.x) {
    T s = T(0);
    for (index_t r = threadIdx.x; r < rows; r += block) s += dG[r * GW + j];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = block / 2; w > 0; w >>= 1) {
      if (int(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      if (db1) db1[j] += part[0];
      if (db2) db2[j] += part[0];
    }
    __syncthreads();
  }
}

/// dst [D1, D0, K] (+)= src [D0, D1, K] with its first two axes swapped; one dst element per thread.
template <class T>
__global__ void swap01(const T* src, T* dst, index_t D0, index_t D1, index_t K, bool add) {
  TESSERA_RNN_GRID_STRIDE(k, D0 * D1 * K) {
    const index_t e = k % K, q = k / K, i = q % D0, j = q / D0;  // dst row q = j * D0 + i
    const T v = src[(i * D1 + j) * K + e];
    dst[k] = add ? dst[k] + v : v;
  }
}

template <class T>
__global__ void add(T* a, const T* b, index_t n) {
  TESSERA_RNN_GRID_STRIDE(k, n) a[k] += b[k];
}

template <class T>
__global__ void mul(T* dst, const T* a, const T* b, index_t n) {
  TESSERA_RNN_GRID_STRIDE(k, n) dst[k] = a[k] * b[k];
}

template <class T>
__global__ void gru_forward(T* gi, const T* gh, const T* hprev, T* hout, index_t B, index_t H) {
  TESSERA_RNN_GRID_STRIDE(k, B * H) {
    const index_t b = k / H, j = k - b * H;
    T* a = gi + b * 3 * H;
    const T* q = gh + b * 3 * H;
    const T r = sigmoid(a[j] + q[j]), z = sigmoid(a[H + j] + q[H + j]);
    const T n = dtanh(a[2 * H + j] + r * q[2 * H + j]);
    a[j] = r, a[H + j] = z, a[2 * H + j] = n;
    const T h = hprev ? hprev[k] : T(0);
    hout[k] = n + z * (h - n);
  }
}

template <class T>
__global__ void gru_seq_backward(const T* act, const T* gh, const T* hprev, T* dh, const T* dy, T* dgi, T* dgh, index_t B,
                                 index_t H) {
  TESSERA_RNN_GRID_STRIDE(k, B * H) {
    const index_t b = k / H, j = k - b * H;
    const T* a = act + b * 3 * H;
    const T r = a[j], z = a[H + j], n = a[2 * H + j];
    const T d = dy ? dh[k] + dy[k] : dh[k];
    const T h = hprev ? hprev[k] : T(0);
    const T dn = d * (T(1) - z) * (T(1) - n * n);
    const T dz = d * (h - n) * z * (T(1) - z);
    const T dr = dn * gh[b * 3 * H + 2 * H + j] * r * (T(1) - r);
    T* di = dgi + b * 3 * H;
    T* dq = dgh + b * 3 * H;
    di[j] = dr, di[H + j] = dz, di[2 * H + j] = dn;
    dq[j] = dr, dq[H + j] = dz, dq[2 * H + j] = dn * r;
    dh[k] = d * z;
  }
}

template <class T>
__global__ void plain_forward(const T* z, T* y, index_t n, bool relu) {
  TESSERA_RNN_GRID_STRIDE(k, n) y[k] = relu ? (z[k] < T(0) ? T(0) : z[k]) : dtanh(z[k]);
}

template <class T>
__global__ void plain_backward(const T* y, const T* dy, const T* dh, T* dz, index_t n, bool relu) {
  TESSERA_RNN_GRID_STRIDE(k, n) {
    const T d = dy ? dh[k] + dy[k] : dh[k];
    dz[k] = relu ? (y[k] > T(0) ? d : T(0)) : d * (T(1) - y[k] * y[k]);
  }
}

template <class T>
__global__ void copy_cols(T* dst, index_t ldd, const T* src, index_t lds, index_t rows, index_t cols) {
  TESSERA_RNN_GRID_STRIDE(k, rows * cols) {
    const index_t r = k / cols, c = k - r * cols;
    dst[r * ldd + c] = src[r * lds + c];
  }
}

#undef TESSERA_RNN_GRID_STRIDE

inline unsigned grid(index_t n) { return tessera::cuda_kernels::grid_for(n, block); }
inline cudaStream_t stream() { return tessera::cuda_detail::stream(); }

}  // namespace cuda_rnn_kernels

/// W_hh [4H, H] of one layer for its per-step products (cuBLASLt reads it in place).
template <class T>
struct cuda_lstm_weight_hh {
  const T* w;
  index_t H;
};

/// W_hh [GW, H] of one layer-direction (GW = gates * H; cuBLASLt reads it in place).
template <class T>
struct cuda_rnn_weight_hh {
  const T* w;
  index_t GW, H;
};

struct cuda_rnn_ops {
  template <class T>
  static void rnn_bias_rows(T* G, const T* b1, const T* b2, index_t rows, index_t GW) {
    namespace k = cuda_rnn_kernels;
    if (rows <= 0 || GW <= 0) return;
    k::bias_rows<T><<<k::grid(rows * GW), k::block, 0, k::stream()>>>(G, b1, b2, rows, GW);
    cuda_kernels::check_launch("tessera: rnn: bias kernel launch");
  }

  template <class T>
  static cuda_lstm_weight_hh<T> lstm_prepare_weight_hh(const T* w_hh, index_t H, bool) {
    return {w_hh, H};
  }
  /// gates [B, 4H] += hprev [B, H] W_hh^T.
  template <class T>
  static void lstm_recurrent_forward(T* gates, const T* hprev, const cuda_lstm_weight_hh<T>& w, index_t B) {
    const index_t H = w.H;
    if (B <= 0) return;
    cuda_gemm<T>(cuda_rnn_kernels::stream(), B, 4 * H, H, hprev, H, 1, w.w, 1, H, gates, 4 * H, gemm_epilogue::none, nullptr, 1,
                 0, 0, 0, true);
  }
  /// dh [B, H] = dgates [B, 4H] W_hh.
  template <class T>
  static void lstm_recurrent_backward(T* dh, const T* dgates, const cuda_lstm_weight_hh<T>& w, index_t B) {
    const index_t H = w.H;
    if (B <= 0) return;
    cuda_gemm<T>(cuda_rnn_kernels::stream(), B, H, 4 * H, dgates, 4 * H, 1, w.w, H, 1, dh, H);
  }

  template <class T>
  static cuda_rnn_weight_hh<T> rnn_prepare_weight_hh(const T* w_hh, index_t GW, index_t H, bool) {
    return {w_hh, GW, H};
  }
  /// gates [B, GW] += hprev [B, H] W_hh^T.
  template <class T>
  static void rnn_recurrent_forward(T* gates, const T* hprev, const cuda_rnn_weight_hh<T>& w, index_t B) {
    if (B <= 0) return;
    cuda_gemm<T>(cuda_rnn_kernels::stream(), B, w.GW, w.H, hprev, w.H, 1, w.w, 1, w.H, gates, w.GW, gemm_epilogue::none, nullptr, 1,
                 0, 0, 0, true);
  }
  /// dh [B, H] (+)= dgates [B, GW] W_hh.
  template <class T>
  static void rnn_recurrent_backward(T* dh, const T* dgates, const cuda_rnn_weight_hh<T>& w, index_t B, bool accumulate) {
    if (B <= 0) return;
    cuda_gemm<T>(cuda_rnn_kernels::stream(), B, w.H, w.GW, dgates, w.GW, 1, w.w, w.H, 1, dh, w.H, gemm_epilogue::none, nullptr, 1,
                 0, 0, 0, accumulate);
  }

  template <class T>
  static void lstm_step_forward(T* gates, const T* cprev, T* c, T* h, index_t B, index_t H) {
    namespace k = cuda_rnn_kernels;
    if (B * H <= 0) return;
    k::step_forward<T><<<k::grid(B * H), k::block, 0, k::stream()>>>(gates, cprev, c, h, B, H);
    cuda_kernels::check_launch("tessera: lstm: step kernel launch");
  }
  template <class T>
  static void lstm_step_backward(const T* gates, const T* c, const T* cprev, const T* dh, const T* dy, T* dc, T* dgates, index_t B,
                                 index_t H) {
    namespace k = cuda_rnn_kernels;
    if (B * H <= 0) return;
    k::step_backward<T><<<k::grid(B * H), k::block, 0, k::stream()>>>(gates, c, cprev, dh, dy, dc, dgates, B, H);
    cuda_kernels::check_launch("tessera: lstm: step backward kernel launch");
  }

  template <class T>
  static void rnn_bias_grads(T* db1, T* db2, const T* dG, index_t rows, index_t GW) {
    namespace k = cuda_rnn_kernels;
    if ((!db1 && !db2) || rows <= 0 || GW <= 0) return;
    const unsigned blocks = unsigned(GW < 16384 ? GW : 16384);
    k::column_sums<T><<<blocks, k::block, 0, k::stream()>>>(db1, db2, dG, rows, GW);
    cuda_kernels::check_launch("tessera: rnn: bias gradient kernel launch");
  }
  template <class T>
  static void rnn_swap01(const T* src, T* dst, index_t D0, index_t D1, index_t K, bool add) {
    namespace k = cuda_rnn_kernels;
    const index_t n = D0 * D1 * K;
    if (n <= 0) return;
    k::swap01<T><<<k::grid(n), k::block, 0, k::stream()>>>(src, dst, D0, D1, K, add);
    cuda_kernels::check_launch("tessera: rnn: layout kernel launch");
  }
  template <class T>
  static void rnn_add(T* a, const T* b, index_t n) {
    namespace k = cuda_rnn_kernels;
    if (n <= 0) return;
    k::add<T><<<k::grid(n), k::block, 0, k::stream()>>>(a, b, n);
    cuda_kernels::check_launch("tessera: rnn: add kernel launch");
  }
  template <class T>
  static void rnn_mul(T* dst, const T* a, const T* b, index_t n) {
    namespace k = cuda_rnn_kernels;
    if (n <= 0) return;
    k::mul<T><<<k::grid(n), k::block, 0, k::stream()>>>(dst, a, b, n);
    cuda_kernels::check_launch("tessera: rnn: multiply kernel launch");
  }

  template <class T>
  static void gru_step_forward(T* gi, const T* gh, const T* hprev, T* hout, index_t B, index_t H) {
    namespace k = cuda_rnn_kernels;
    if (B * H <= 0) return;
    k::gru_forward<T><<<k::grid(B * H), k::block, 0, k::stream()>>>(gi, gh, hprev, hout, B, H);
    cuda_kernels::check_launch("tessera: gru: step kernel launch");
  }
  template <class T>
  static void gru_seq_step_backward(const T* act, const T* gh, const T* hprev, T* dh, const T* dy, T* dgi, T* dgh, index_t B,
                                    index_t H) {
    namespace k = cuda_rnn_kernels;
    if (B * H <= 0) return;
    k::gru_seq_backward<T><<<k::grid(B * H), k::block, 0, k::stream()>>>(act, gh, hprev, dh, dy, dgi, dgh, B, H);
    cuda_kernels::check_launch("tessera: gru: step backward kernel launch");
  }
  template <class T>
  static void rnn_step_forward(const T* z, T* y, index_t n, bool relu) {
    namespace k = cuda_rnn_kernels;
    if (n <= 0) return;
    k::plain_forward<T><<<k::grid(n), k::block, 0, k::stream()>>>(z, y, n, relu);
    cuda_kernels::check_launch("tessera: rnn: step kernel launch");
  }
  template <class T>
  static void rnn_step_backward(const T* y, const T* dy, const T* dh, T* dz, index_t n, bool relu) {
    namespace k = cuda_rnn_kernels;
    if (n <= 0) return;
    k::plain_backward<T><<<k::grid(n), k::block, 0, k::stream()>>>(y, dy, dh, dz, n, relu);
    cuda_kernels::check_launch("tessera: rnn: step backward kernel launch");
  }
  template <class T>
  static void rnn_copy_cols(T* dst, index_t ldd, const T* src, index_t lds, index_t rows, index_t cols) {
    namespace k = cuda_rnn_kernels;
    if (rows * cols <= 0) return;
    k::copy_cols<T><<<k::grid(rows * cols), k::block, 0, k::stream()>>>(dst, ldd, src, lds, rows, cols);
    cuda_kernels::check_launch("tessera: rnn: column copy kernel launch");
  }
};

}  // namespace tessera::detail
#endif  // __CUDACC__
