// host_attention_ops<P>: the attention part of backend<cpu> / backend<cpu_threads> (kernels/cpu/backend.hpp), the
// kernels of autodiff/attention_ops.hpp on raw pointers and an attention_desc (kernels/backend.hpp):
//   attention_forward    O = softmax(Q K^T * scale + mask) V, flash-attention style: per (batch, head) and block of
//                        query rows, the scores of one block of keys at a time, an online softmax (running maximum
//                        and sum, the output rescaled when the maximum grows) and the value product; the T x S
//                        matrix is never formed. Each row's log-sum-exp is kept for the backward.
//   attention_backward   flash-attention-2's backward: per block of keys, the scores of each block of queries are
//                        recomputed from the log-sum-exp, and dV += P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO O)),
//                        dQ += dS K * scale, dK += dS^T Q * scale.
// The block products run on the GEMM's register micro-tile (kernels/cpu/gemm.hpp) over zero-padded blocks packed
// per (batch, head); exponentials on SIMD packets (core/math.hpp). Threads split the (batch, head) pairs. A row whose
// keys are all masked gives NaN (its log-sum-exp is NaN), as PyTorch's MultiheadAttention; its NaN reaches the
// gradients of that (batch, head) as it does in PyTorch. A float mask is added to each block's scores. Attention-weight
// dropout zeroes and rescales the exponentials after the online sum (the log-sum-exp is the undropped softmax's); the
// backward regenerates each block's keep/drop decisions from the hash of kernels/attention_dropout.hpp, and
// rowsum(dO O) is still the softmax backward's correction term (O is the dropped output).
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tessera/core/math.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/kernels/attention_dropout.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/gemm.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tessera::detail {

namespace attn {

template <class T>
struct sizes {
  static constexpr index_t mr = gemm_blocking<T>::mr, nr = gemm_blocking<T>::nr;
  static constexpr index_t br = 4 * mr;  // query rows per block
  static constexpr index_t bc = 4 * nr;  // keys per block (measured: 2 * nr was 20% slower at T = 128, d = 32)
};
inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

/// C[m x n] (+)= A[m x k] B[k x n], all row-major with unit column stride; m a multiple of MR, n of NR (padded blocks).
template <class T>
void tiles(index_t m, index_t n, index_t k, const T* a, index_t lda, const T* b, index_t ldb, T* c, index_t ldc, bool acc) {
  constexpr index_t MR = gemm_blocking<T>::mr, NR = gemm_blocking<T>::nr;
  for (index_t j = 0; j < n; j += NR)
    for (index_t i = 0; i < m; i += MR) micro_tile<T>(k, rowmajor_a<T>{a + i * lda, lda}, b + j, ldb, c + i * ldc + j, ldc, acc);
}

/// A^T read in place for the micro-tile: element (i, k) of A^T at a[k * ld + i] (A row-major, row stride ld).
template <class T>
struct transposed_a {
  const T* __restrict a;
  index_t ld;
  TS_INLINE const T* at(index_t k) const { return a + k * ld; }
  static constexpr index_t offset(int i) { return i; }
};

/// C[m x n] (+)= A^T B for A [k x lda] row-major (its first m columns; m a multiple of MR, and up to MR - 1 columns past
/// them may be read: rows of C that are not kept), B and C as in tiles.
template <class T>
void tiles_at(index_t m, index_t n, index_t k, const T* a, index_t lda, const T* b, index_t ldb, T* c, index_t ldc, bool acc) {
  constexpr index_t MR = gemm_blocking<T>::mr, NR = gemm_blocking<T>::nr;
  for (index_t j = 0; j < n; j += NR)
    for (index_t i = 0; i < m; i += MR) micro_tile<T>(k, transposed_a<T>{a + i, lda}, b + j, ldb, c + i * ldc + j, ldc, acc);
}

/// s[j] = exp(s[j] - shift) over n elements (n a multiple of the packet); returns their sum.
template <class T>
T exp_shifted(T* s, index_t n, T shift) {
  index_t j = 0;
  T sum = 0;
#if TESSERA_SIMD
  constexpr int L = simd::lanes_for<sizeof(T)>;
  using V = simd::vec<T, L>;
  V acc{};
  const V sh = simd::splat<T, L>(shift);
  for (; j + L <= n; j += L) {
    const V e = math::exp(simd::load<T, L>(s + j) - sh);
    simd::store<T, L>(s + j, e);
    acc += e;
  }
  sum = simd::reduce_add<T, L>(acc);
#endif
  for (; j < n; ++j) {
    s[j] = math::exp(s[j] - shift);
    sum += s[j];
  }
  return sum;
}

/// Is key s masked for query t of batch b? (and the float mask added to the scores)
template <class T>
struct masker {
  const attention_desc<T>& d;
  index_t b, h;
  bool any() const { return d.causal || d.mask || d.key_padding || d.mask_add; }
  /// Adds the float mask to the scores of row t (keys j0 .. j0 + n), then sets the masked ones to -inf.
  void apply(T* s, index_t t, index_t j0, index_t n) const {
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    if (d.mask_add) {
      const T* m = d.mask_add + b * d.mask_bs + h * d.mask_hs + t * d.S + j0;
      for (index_t j = 0; j < n; ++j) s[j] += m[j];
    }
    if (d.causal)
      for (index_t j = std::max<index_t>(0, t + 1 - j0); j < n; ++j) s[j] = ninf;
    if (d.mask) {
      const bool* m = d.mask + b * d.mask_bs + h * d.mask_hs + t * d.S + j0;
      for (index_t j = 0; j < n; ++j)
        if (m[j]) s[j] = ninf;
    }
    if (d.key_padding) {
      const bool* m = d.key_padding + b * d.S + j0;
      for (index_t j = 0; j < n; ++j)
        if (m[j]) s[j] = ninf;
    }
  }
};

/// Attention-weight dropout on the weights p of row t (keys j0 .. j0 + n): kept ones times d.dropout_scale, the
/// others zero (the same decisions in the forward and the backward: kernels/attention_dropout.hpp).
template <class T>
void drop_row(const attention_desc<T>& d, index_t b, index_t h, index_t t, index_t j0, index_t n, T* p) {
  const std::uint64_t row = attention_dropout_row(d.dropout_seed, b, h, t);
  for (index_t j = 0; j < n; ++j) p[j] = attention_dropout_keep(row, j0 + j, d.dropout_threshold) ? p[j] * d.dropout_scale : T(0);
}

/// Rows [0, rows) x cols [0, cols) of src (row stride rs, unit columns, times f) into dst [.. x ld], zeros elsewhere in
/// dst's first prows rows and ld columns.
template <class T>
void pack_rows(const T* src, index_t rs, index_t rows, index_t cols, T f, T* dst, index_t prows, index_t ld) {
  for (index_t r = 0; r < prows; ++r) {
    T* o = dst + r * ld;
    index_t c = 0;
    if (r < rows)
      for (; c < cols; ++c) o[c] = src[r * rs + c] * f;
    for (; c < ld; ++c) o[c] = T(0);
  }
}
/// The transpose: dst[c * ld + r] = src[r * rs + c] for r < rows, c < cols; zeros for r in [rows, pcols).
template <class T>
void pack_transposed(const T* src, index_t rs, index_t rows, index_t cols, T* dst, index_t ld, index_t prows) {
  for (index_t c = 0; c < cols; ++c) {
    T* o = dst + c * ld;
    for (index_t r = 0; r < rows; ++r) o[r] = src[r * rs + c];
    for (index_t r = rows; r < prows; ++r) o[r] = T(0);
  }
}

template <class T>
void forward_head(const attention_desc<T>& d, index_t b, index_t h, std::vector<T>& ws) {
  using Z = sizes<T>;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const index_t Tq = d.Tq, S = d.S, D = d.D, Dv = d.Dv;
  const index_t Dp = round_up(D, Z::nr), Dvp = round_up(Dv, Z::nr), Sp = round_up(S, Z::bc);
  const std::size_t need = std::size_t(D * Sp + Sp * Dvp + Z::br * Dp + Z::br * Z::bc + Z::br * Dvp + 2 * Z::br);
  if (ws.size() < need) ws.resize(need);
  T* kt = ws.data();      // K^T [D x Sp]
  T* vb = kt + D * Sp;    // V [Sp x Dvp]
  T* qb = vb + Sp * Dvp;  // scale * Q block [br x Dp]
  T* sb = qb + Z::br * Dp;
  T* ob = sb + Z::br * Z::bc;
  T* mx = ob + Z::br * Dvp;
  T* ls = mx + Z::br;
  const T* q = d.q + b * d.qs[0] + h * d.qs[1];
  const T* k = d.k + b * d.ks[0] + h * d.ks[1];
  const T* v = d.v + b * d.vs[0] + h * d.vs[1];
  T* o = d.o + b * d.os[0] + h * d.os[1];
  T* lse = d.lse + (b * d.H + h) * Tq;
  pack_transposed(k, d.ks[2], S, D, kt, Sp, Sp);
  pack_rows(v, d.vs[2], S, Dv, T(1), vb, Sp, Dvp);
  const masker<T> mk{d, b, h};
  for (index_t i0 = 0; i0 < Tq; i0 += Z::br) {
    const index_t rows = std::min(Z::br, Tq - i0), mrows = round_up(rows, Z::mr);
    pack_rows(q + i0 * d.qs[2], d.qs[2], rows, D, d.scale, qb, mrows, Dp);
    std::fill(ob, ob + mrows * Dvp, T(0));
    std::fill(mx, mx + Z::br, ninf);
    std::fill(ls, ls + Z::br, T(0));
    const index_t jend = d.causal ? std::min(S, i0 + rows) : S;  // causal: later keys are masked for every row here
    for (index_t j0 = 0; j0 < jend; j0 += Z::bc) {
      const index_t cols = std::min(Z::bc, S - j0), ncols = round_up(cols, Z::nr);
      tiles(mrows, ncols, D, qb, Dp, kt + j0, Sp, sb, Z::bc, false);
      for (index_t r = 0; r < mrows; ++r) {
        T* s = sb + r * Z::bc;
        if (r >= rows) {  // padding rows: kept at zero
          std::fill(s, s + ncols, T(0));
          continue;
        }
        for (index_t j = cols; j < ncols; ++j) s[j] = ninf;
        if (mk.any()) mk.apply(s, i0 + r, j0, cols);
        T m = ninf;
        for (index_t j = 0; j < ncols; ++j) m = std::max(m, s[j]);
        const T mnew = std::max(mx[r], m);
        if (mnew == ninf) {  // every key so far masked
          std::fill(s, s + ncols, T(0));
          continue;
        }
        const T alpha = math::exp(mx[r] - mnew);  // 0 while the row had no key
        ls[r] = ls[r] * alpha + exp_shifted(s, ncols, mnew);  // the softmax's sum: before dropout
        mx[r] = mnew;
        if (d.dropout) drop_row(d, b, h, i0 + r, j0, cols, s);
        if (alpha != T(1))
          for (index_t c = 0; c < Dvp; ++c) ob[r * Dvp + c] *= alpha;
      }
      tiles(mrows, Dvp, ncols, sb, Z::bc, vb + j0 * Dvp, Dvp, ob, Dvp, true);
    }
    for (index_t r = 0; r < rows; ++r) {
      T* orow = o + (i0 + r) * d.os[2];
      if (ls[r] == T(0)) {  // all keys masked: NaN as PyTorch's softmax over -inf
        for (index_t c = 0; c < Dv; ++c) orow[c] = std::numeric_limits<T>::quiet_NaN();
        lse[i0 + r] = std::numeric_limits<T>::quiet_NaN();
        continue;
      }
      const T inv = T(1) / ls[r];
      for (index_t c = 0; c < Dv; ++c) orow[c] = ob[r * Dvp + c] * inv;
      lse[i0 + r] = mx[r] + std::log(ls[r]);
    }
  }
}

template <class T>
void backward_head(const attention_desc<T>& d, index_t b, index_t h, std::vector<T>& ws) {
  using Z = sizes<T>;
  const index_t Tq = d.Tq, S = d.S, D = d.D, Dv = d.Dv;
  const index_t Dp = round_up(D, Z::nr), Dvp = round_up(Dv, Z::nr), Sp = round_up(S, Z::bc), Tp = round_up(Tq, Z::br);
  const index_t bcm = round_up(Z::bc, Z::mr);
  const std::size_t need = std::size_t(D * Sp + Sp * Dp + Dv * Sp + Tp * Dp + Tp * Dvp + 2 * Tp + Tp * Dp + bcm * Dp +
                                       bcm * Dvp + 2 * Z::br * Z::bc + bcm);
  if (ws.size() < need) ws.resize(need);
  T* kt = ws.data();          // K^T [D x Sp]
  T* kb = kt + D * Sp;        // K [Sp x Dp]
  T* vt = kb + Sp * Dp;       // V^T [Dv x Sp]
  T* qs = vt + Dv * Sp;       // scale * Q [Tp x Dp]
  T* go = qs + Tp * Dp;       // dO [Tp x Dvp]
  T* dd = go + Tp * Dvp;      // rowsum(dO * O) [Tp]
  T* lz = dd + Tp;            // log-sum-exp [Tp]
  T* dqa = lz + Tp;           // dQ / scale [Tp x Dp]
  T* dka = dqa + Tp * Dp;     // dK block [bcm x Dp]
  T* dva = dka + bcm * Dp;    // dV block [bcm x Dvp]
  T* pb = dva + bcm * Dvp;      // P block [br x bc]
  T* dsb = pb + Z::br * Z::bc;  // dS block [br x bc], then bcm elements that tiles_at may read past it
  const T* q = d.q + b * d.qs[0] + h * d.qs[1];
  const T* k = d.k + b * d.ks[0] + h * d.ks[1];
  const T* v = d.v + b * d.vs[0] + h * d.vs[1];
  const T* o = d.o + b * d.os[0] + h * d.os[1];
  const T* g = d.dout + b * d.os[0] + h * d.os[1];
  const T* lse = d.lse + (b * d.H + h) * Tq;
  pack_transposed(k, d.ks[2], S, D, kt, Sp, Sp);
  pack_rows(k, d.ks[2], S, D, T(1), kb, Sp, Dp);
  pack_transposed(v, d.vs[2], S, Dv, vt, Sp, Sp);
  pack_rows(q, d.qs[2], Tq, D, d.scale, qs, Tp, Dp);
  pack_rows(g, d.os[2], Tq, Dv, T(1), go, Tp, Dvp);
  for (index_t t = 0; t < Tp; ++t) {
    T s = 0;
    if (t < Tq)
      for (index_t c = 0; c < Dv; ++c) s += g[t * d.os[2] + c] * o[t * d.os[2] + c];
    dd[t] = s;
    lz[t] = t < Tq ? lse[t] : T(0);
  }
  if (d.dq) std::fill(dqa, dqa + Tp * Dp, T(0));
  const masker<T> mk{d, b, h};
  for (index_t j0 = 0; j0 < S; j0 += Z::bc) {
    const index_t cols = std::min(Z::bc, S - j0), ncols = round_up(cols, Z::nr), mcols = round_up(cols, Z::mr);
    std::fill(dka, dka + mcols * Dp, T(0));
    std::fill(dva, dva + mcols * Dvp, T(0));
    const index_t istart = d.causal ? j0 / Z::br * Z::br : 0;  // causal: earlier queries see none of these keys
    for (index_t i0 = istart; i0 < Tq; i0 += Z::br) {
      const index_t rows = std::min(Z::br, Tq - i0), mrows = round_up(rows, Z::mr);
      tiles(mrows, ncols, D, qs + i0 * Dp, Dp, kt + j0, Sp, pb, Z::bc, false);
      tiles(mrows, ncols, Dv, go + i0 * Dvp, Dvp, vt + j0, Sp, dsb, Z::bc, false);  // dP
      for (index_t r = 0; r < mrows; ++r) {
        T* p = pb + r * Z::bc;
        T* ds = dsb + r * Z::bc;
        if (r >= rows) {
          std::fill(p, p + ncols, T(0));
          std::fill(ds, ds + ncols, T(0));
          continue;
        }
        for (index_t j = cols; j < ncols; ++j) p[j] = -std::numeric_limits<T>::infinity();
        if (mk.any()) mk.apply(p, i0 + r, j0, cols);
        exp_shifted(p, ncols, lz[i0 + r]);  // P = exp(s - lse); NaN lse (all masked): the row NaN
        const T di = dd[i0 + r];
        index_t j1 = 0;
        if (d.dropout) {  // O = (P o Z) V, Z the kept weights' scale (0 where dropped): dP = Z o dO V^T, P o Z into dV
          const std::uint64_t key = attention_dropout_row(d.dropout_seed, b, h, i0 + r);
          for (; j1 < cols; ++j1) {
            const T z = attention_dropout_keep(key, j0 + j1, d.dropout_threshold) ? d.dropout_scale : T(0);
            ds[j1] = p[j1] * (z * ds[j1] - di);
            p[j1] *= z;
          }
        }
        for (index_t j = j1; j < ncols; ++j) ds[j] = p[j] * (ds[j] - di);
      }
      // dV += P^T dO and dK += dS^T (scale Q), P and dS read transposed in place (key rows past cols are dropped)
      if (d.dv) tiles_at(mcols, Dvp, mrows, pb, Z::bc, go + i0 * Dvp, Dvp, dva, Dvp, true);
      if (d.dq) tiles(mrows, Dp, ncols, dsb, Z::bc, kb + j0 * Dp, Dp, dqa + i0 * Dp, Dp, true);
      if (d.dk) tiles_at(mcols, Dp, mrows, dsb, Z::bc, qs + i0 * Dp, Dp, dka, Dp, true);
    }
    if (d.dk) {
      T* out = d.dk + b * d.ks[0] + h * d.ks[1] + j0 * d.ks[2];
      for (index_t j = 0; j < cols; ++j)
        for (index_t c = 0; c < D; ++c) out[j * d.ks[2] + c] = d.acc_k ? out[j * d.ks[2] + c] + dka[j * Dp + c] : dka[j * Dp + c];
    }
    if (d.dv) {
      T* out = d.dv + b * d.vs[0] + h * d.vs[1] + j0 * d.vs[2];
      for (index_t j = 0; j < cols; ++j)
        for (index_t c = 0; c < Dv; ++c) out[j * d.vs[2] + c] = d.acc_v ? out[j * d.vs[2] + c] + dva[j * Dvp + c] : dva[j * Dvp + c];
    }
  }
  if (d.dq) {
    T* out = d.dq + b * d.qs[0] + h * d.qs[1];
    for (index_t t = 0; t < Tq; ++t)
      for (index_t c = 0; c < D; ++c) {
        const T x = dqa[t * Dp + c] * d.scale;
        out[t * d.qs[2] + c] = d.acc_q ? out[t * d.qs[2] + c] + x : x;
      }
  }
}

}  // namespace attn

template <class P>
struct host_attention_ops {
  /// d.o and d.lse from d.q, d.k, d.v and the masks (see attention_desc).
  template <class T>
  static void attention_forward(const attention_desc<T>& d) {
    if (d.B == 0 || d.H == 0 || d.Tq == 0) return;
    run(d, [&d](index_t b, index_t h, std::vector<T>& ws) { attn::forward_head(d, b, h, ws); });
  }
  /// d.dq, d.dk, d.dv (those not null) from d.dout, the forward's d.o and d.lse, and the inputs.
  template <class T>
  static void attention_backward(const attention_desc<T>& d) {
    if (d.B == 0 || d.H == 0) return;
    if (d.Tq == 0 || d.S == 0) {  // nothing flows: the gradients are zero
      zero_grads(d);
      return;
    }
    run(d, [&d](index_t b, index_t h, std::vector<T>& ws) { attn::backward_head(d, b, h, ws); });
  }

 private:
  template <class T, class F>
  static void run(const attention_desc<T>& d, F&& f) {
    const index_t n = d.B * d.H;
    // a thread per (batch, head) pair once there is work enough to pay for waking the threads
    const double work = double(n) * double(d.Tq) * double(d.S) * double(d.D + d.Dv);
    const int nt = n > 1 && work >= 2e5 ? std::max(1, P::num_threads()) : 1;
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
      std::vector<T> ws;  // this thread's packed blocks, reused across its (batch, head) pairs
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (index_t i = 0; i < n; ++i) f(i / d.H, i % d.H, ws);
    }
  }
  template <class T>
  static void zero_grads(const attention_desc<T>& d) {
    auto zero = [&](T* p, const index_t* s, index_t rows, index_t cols, bool acc) {
      if (!p || acc) return;
      for (index_t b = 0; b < d.B; ++b)
        for (index_t h = 0; h < d.H; ++h)
          for (index_t r = 0; r < rows; ++r)
            for (index_t c = 0; c < cols; ++c) p[b * s[0] + h * s[1] + r * s[2] + c] = T(0);
    };
    zero(d.dq, d.qs, d.Tq, d.D, d.acc_q);
    zero(d.dk, d.ks, d.S, d.D, d.acc_k);
    zero(d.dv, d.vs, d.S, d.Dv, d.acc_v);
  }
};

}  // namespace tessera::detail
