// host_rnn_ops<P>: the rnn part of backend<cpu> / backend<cpu_threads> (see kernels/cpu/backend.hpp). The LSTM's
// kernels, with the same names and arguments as cuda_rnn_ops (kernels/cuda/rnn.hpp), and the GRU cell's step passes:
//   rnn_bias_rows          G[r, :] = b1 + b2 (null: zeros), the initial value of a gate product
//   lstm_prepare_weight_hh W_hh of one layer prepared for its per-step products (here: packed once for the GEMM)
//   lstm_recurrent_forward / _backward   gates_t += h_{t-1} W_hh^T, dh_{t-1} = dgates_t W_hh
//   lstm_step_forward / _backward        one step's gate nonlinearities and c / h update, and their backward
//   rnn_bias_grads, rnn_swap01, rnn_add, rnn_mul   column sums into bias gradients, layout changes, pointwise passes
//   rnn_prepare_weight_hh, rnn_recurrent_forward / _backward   the same products for G*H gates (GRU: 3H, RNN: H)
//   rnn_copy_cols          a block of columns between row-major buffers (the two directions' halves of a layer output)
//   rnn_step_forward / _backward         the plain RNN's step (tanh or relu) and its backward
//   gru_step_forward, gru_step_backward, gru_seq_step_backward   the GRU's step (cell and sequence) and its backward
// The step passes run a row (batch entry) at a time in SIMD packets (the vectorised exp / tanh of core/math.hpp),
// rows split over P::num_threads() OpenMP threads when a step is large.
#pragma once
#include <cstring>
#include <type_traits>
#include <vector>

#include "tessera/config.hpp"
#include "tessera/core/math.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/gemm.hpp"

namespace tessera::detail {

/// Vector (or scalar, V = T) loads and stores for the step passes.
template <class V, class T>
TS_INLINE V lstm_ld(const T* p) {
  if constexpr (std::is_same_v<V, T>) return *p;
#if TESSERA_SIMD
  else return simd::load<T, int(sizeof(V) / sizeof(T))>(p);
#endif
}
template <class V, class T>
TS_INLINE void lstm_st(T* p, V v) {
  if constexpr (std::is_same_v<V, T>) *p = v;
#if TESSERA_SIMD
  else simd::store<T, int(sizeof(V) / sizeof(T))>(p, v);
#endif
}

/// Runs body.template operator()<V>(j) over j = 0 .. H: SIMD packets, then scalars.
template <class T, class F>
TS_INLINE void lstm_columns(index_t H, F&& body) {
  index_t j = 0;
#if TESSERA_SIMD
  constexpr int N = simd::lanes_for<sizeof(T)>;
  for (; j + N <= H; j += N) body.template operator()<simd::vec<T, N>>(j);
#endif
  for (; j < H; ++j) body.template operator()<T>(j);
}

/// Forward of one row's pointwise part: g (the row's 4H pre-activations in, activations out), c and h of the row
/// (cp: c_{t-1}'s row, null for the zero state). Also the int8 LSTM's step (quant/qlstm.hpp).
template <class T>
TS_INLINE void lstm_row_forward(T* g, const T* cp, T* cb, T* hb, index_t H) {
  lstm_columns<T>(H, [&]<class V>(index_t j) {
    const V i = math::sigmoid(lstm_ld<V>(g + j));
    const V f = math::sigmoid(lstm_ld<V>(g + H + j));
    const V gg = math::tanh(lstm_ld<V>(g + 2 * H + j));
    const V o = math::sigmoid(lstm_ld<V>(g + 3 * H + j));
    lstm_st(g + j, i);
    lstm_st(g + H + j, f);
    lstm_st(g + 2 * H + j, gg);
    lstm_st(g + 3 * H + j, o);
    const V cn = cp ? f * lstm_ld<V>(cp + j) + i * gg : i * gg;
    lstm_st(cb + j, cn);
    lstm_st(hb + j, o * math::tanh(cn));
  });
}

/// Backward of one row: dh (+ dy, the output's gradient at this step, when not null) and dc (replaced by dc_{t-1})
/// to the gates' pre-activation gradients dg.
template <class T>
TS_INLINE void lstm_row_backward(const T* g, const T* cb, const T* cp, const T* dhb, const T* dyb, T* dcb, T* dg, index_t H) {
  lstm_columns<T>(H, [&]<class V>(index_t j) {
    const V i = lstm_ld<V>(g + j), f = lstm_ld<V>(g + H + j), gg = lstm_ld<V>(g + 2 * H + j), o = lstm_ld<V>(g + 3 * H + j);
    const V tc = math::tanh(lstm_ld<V>(cb + j));
    const V dhj = dyb ? lstm_ld<V>(dhb + j) + lstm_ld<V>(dyb + j) : lstm_ld<V>(dhb + j);
    const V one = V{} + T(1);
    const V dct = lstm_ld<V>(dcb + j) + dhj * o * (one - tc * tc);
    const V cpj = cp ? lstm_ld<V>(cp + j) : V{};
    lstm_st(dg + j, dct * gg * i * (one - i));
    lstm_st(dg + H + j, dct * cpj * f * (one - f));
    lstm_st(dg + 2 * H + j, dct * i * (one - gg * gg));
    lstm_st(dg + 3 * H + j, dhj * tc * o * (one - o));
    lstm_st(dcb + j, dct * f);
  });
}

/// f(b) for the rows b < B of a step, over nt threads when the step is large.
template <class F>
inline void rnn_rows(index_t B, index_t H, int nt, F&& f) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * H >= 8192)
#endif
  for (index_t b = 0; b < B; ++b) f(b);
  (void)H, (void)nt;
}

/// W_hh [4H, H] of one layer packed once for all its steps: as the B operand of h W_hh^T (forward) or of
/// dgates W_hh (backward).
template <class T>
struct host_lstm_weight_hh {
  const T* w;
  index_t H;
  packed_b<T> packed;
};

/// W_hh [GW, H] (GW = gates * H) of one layer-direction packed once for all its steps, as lstm's.
template <class T>
struct host_rnn_weight_hh {
  const T* w;
  index_t GW, H;
  packed_b<T> packed;
};

template <class P>
struct host_rnn_ops {
  /// G[r, :] = b1 + b2 for the rows r < rows of G [rows, GW]; a null bias counts as zeros.
  template <class T>
  static void rnn_bias_rows(T* G, const T* b1, const T* b2, index_t rows, index_t GW) {
    if (rows <= 0) return;
    for (index_t j = 0; j < GW; ++j) G[j] = (b1 ? b1[j] : T(0)) + (b2 ? b2[j] : T(0));
    for (index_t r = 1; r < rows; ++r) std::memcpy(G + r * GW, G, std::size_t(GW) * sizeof(T));
  }

  template <class T>
  static host_lstm_weight_hh<T> lstm_prepare_weight_hh(const T* w_hh, index_t H, bool backward) {
    if (backward) return {w_hh, H, packed_b<T>({w_hh, H, 1}, 4 * H, H)};
    return {w_hh, H, packed_b<T>({w_hh, 1, H}, H, 4 * H)};
  }
  /// gates [B, 4H] += hprev [B, H] W_hh^T.
  template <class T>
  static void lstm_recurrent_forward(T* gates, const T* hprev, const host_lstm_weight_hh<T>& w, index_t B) {
    const index_t H = w.H;
    cpu_gemm<T>(B, 4 * H, H, {hprev, H, 1}, {w.w, 1, H}, gates, 4 * H, true, P::num_threads(), {}, &w.packed);
  }
  /// dh [B, H] = dgates [B, 4H] W_hh.
  template <class T>
  static void lstm_recurrent_backward(T* dh, const T* dgates, const host_lstm_weight_hh<T>& w, index_t B) {
    const index_t H = w.H;
    cpu_gemm<T>(B, H, 4 * H, {dgates, 4 * H, 1}, {w.w, H, 1}, dh, H, false, P::num_threads(), {}, &w.packed);
  }

  template <class T>
  static host_rnn_weight_hh<T> rnn_prepare_weight_hh(const T* w_hh, index_t GW, index_t H, bool backward) {
    if (backward) return {w_hh, GW, H, packed_b<T>({w_hh, H, 1}, GW, H)};
    return {w_hh, GW, H, packed_b<T>({w_hh, 1, H}, H, GW)};
  }
  /// gates [B, GW] += hprev [B, H] W_hh^T.
  template <class T>
  static void rnn_recurrent_forward(T* gates, const T* hprev, const host_rnn_weight_hh<T>& w, index_t B) {
    cpu_gemm<T>(B, w.GW, w.H, {hprev, w.H, 1}, {w.w, 1, w.H}, gates, w.GW, true, P::num_threads(), {}, &w.packed);
  }
  /// dh [B, H] (+)= dgates [B, GW] W_hh.
  template <class T>
  static void rnn_recurrent_backward(T* dh, const T* dgates, const host_rnn_weight_hh<T>& w, index_t B, bool accumulate) {
    cpu_gemm<T>(B, w.H, w.GW, {dgates, w.GW, 1}, {w.w, w.H, 1}, dh, w.H, accumulate, P::num_threads(), {}, &w.packed);
  }

  /// One step's pointwise forward for B rows: gates [B, 4H] (pre-activations in, activations i, f, g, o out),
  /// c = f * cprev + i * g (cprev null: the zero state), h = o * tanh(c).
  template <class T>
  static void lstm_step_forward(T* gates, const T* cprev, T* c, T* h, index_t B, index_t H) {
    rnn_rows(B, H, P::num_threads(), [&](index_t b) {
      lstm_row_forward<T>(gates + b * 4 * H, cprev ? cprev + b * H : nullptr, c + b * H, h + b * H, H);
    });
  }
  /// One step's pointwise backward: dh + dy (dy: the output's gradient at this step, may be null) and dc (the
  /// gradient at c_t, replaced by the one at c_{t-1}) to the gates' pre-activation gradients dgates [B, 4H].
  template <class T>
  static void lstm_step_backward(const T* gates, const T* c, const T* cprev, const T* dh, const T* dy, T* dc, T* dgates, index_t B,
                                 index_t H) {
    rnn_rows(B, H, P::num_threads(), [&](index_t b) {
      lstm_row_backward<T>(gates + b * 4 * H, c + b * H, cprev ? cprev + b * H : nullptr, dh + b * H, dy ? dy + b * H : nullptr,
                           dc + b * H, dgates + b * 4 * H, H);
    });
  }

  /// db1 and db2 (either may be null) += the column sums of dG [rows, GW], summed row by row.
  template <class T>
  static void rnn_bias_grads(T* db1, T* db2, const T* dG, index_t rows, index_t GW) {
    if (!db1 && !db2) return;
    std::vector<T> db(std::size_t(GW), T(0));
    for (index_t r = 0; r < rows; ++r) {
      const T* row = dG + r * GW;
      for (index_t j = 0; j < GW; ++j) db[std::size_t(j)] += row[j];
    }
    for (T* gb : {db1, db2})
      if (gb)
        for (index_t j = 0; j < GW; ++j) gb[j] += db[std::size_t(j)];
  }
  /// src [D0, D1, K] written to (add: added to) dst as [D1, D0, K].
  template <class T>
  static void rnn_swap01(const T* src, T* dst, index_t D0, index_t D1, index_t K, bool add) {
    for (index_t i = 0; i < D0; ++i)
      for (index_t j = 0; j < D1; ++j) {
        const T* s = src + (i * D1 + j) * K;
        T* d = dst + (j * D0 + i) * K;
        if (add)
          for (index_t k = 0; k < K; ++k) d[k] += s[k];
        else
          std::memcpy(d, s, std::size_t(K) * sizeof(T));
      }
  }
  /// a += b over n elements.
  template <class T>
  static void rnn_add(T* a, const T* b, index_t n) {
    for (index_t k = 0; k < n; ++k) a[k] += b[k];
  }
  /// dst = a * b over n elements.
  template <class T>
  static void rnn_mul(T* dst, const T* a, const T* b, index_t n) {
    for (index_t k = 0; k < n; ++k) dst[k] = a[k] * b[k];
  }

  /// A GRU step's pointwise forward for B rows: gi [B, 3H] (x W_ih^T + b_ih, replaced by the activations r, z, n),
  /// gh [B, 3H] (h W_hh^T + b_hh, read), h' = (1 - z) n + z h (hprev null: zeros).
  template <class T>
  static void gru_step_forward(T* gi, const T* gh, const T* hprev, T* hout, index_t B, index_t H) {
    rnn_rows(B, H, P::num_threads(), [&](index_t b) {
      T* a = gi + b * 3 * H;
      const T* q = gh + b * 3 * H;
      const T* hp = hprev ? hprev + b * H : nullptr;
      T* hb = hout + b * H;
      lstm_columns<T>(H, [&]<class V>(index_t j) {
        const V r = math::sigmoid(lstm_ld<V>(a + j) + lstm_ld<V>(q + j));
        const V z = math::sigmoid(lstm_ld<V>(a + H + j) + lstm_ld<V>(q + H + j));
        const V n = math::tanh(lstm_ld<V>(a + 2 * H + j) + r * lstm_ld<V>(q + 2 * H + j));
        lstm_st(a + j, r);
        lstm_st(a + H + j, z);
        lstm_st(a + 2 * H + j, n);
        const V h = hp ? lstm_ld<V>(hp + j) : V{};
        lstm_st(hb + j, n + z * (h - n));
      });
    });
  }
  /// Its backward: from dh' to the pre-activation gradients of the input side (dgi) and the recurrent side (dgh,
  /// which differs in the n gate: r * dn); dhprev (may be null) += dh' * z.
  template <class T>
  static void gru_step_backward(const T* act, const T* gh, const T* hprev, const T* dh, T* dgi, T* dgh, T* dhprev, index_t B,
                                index_t H) {
    rnn_rows(B, H, P::num_threads(), [&](index_t b) {
      const T* a = act + b * 3 * H;
      const T* q = gh + b * 3 * H;
      const T* hp = hprev ? hprev + b * H : nullptr;
      const T* dhb = dh + b * H;
      T* di = dgi + b * 3 * H;
      T* dq = dgh + b * 3 * H;
      T* dp = dhprev ? dhprev + b * H : nullptr;
      lstm_columns<T>(H, [&]<class V>(index_t j) {
        const V one = V{} + T(1);
        const V r = lstm_ld<V>(a + j), z = lstm_ld<V>(a + H + j), n = lstm_ld<V>(a + 2 * H + j);
        const V d = lstm_ld<V>(dhb + j);
        const V h = hp ? lstm_ld<V>(hp + j) : V{};
        const V dn = d * (one - z) * (one - n * n);
        const V dz = d * (h - n) * z * (one - z);
        const V dr = dn * lstm_ld<V>(q + 2 * H + j) * r * (one - r);
        lstm_st(di + j, dr);
        lstm_st(di + H + j, dz);
        lstm_st(di + 2 * H + j, dn);
        lstm_st(dq + j, dr);
        lstm_st(dq + H + j, dz);
        lstm_st(dq + 2 * H + j, dn * r);
        if (dp) lstm_st(dp + j, lstm_ld<V>(dp + j) + d * z);
      });
    });
  }
  /// dst[r * ldd + c] = src[r * lds + c] for r < rows, c < cols.
  template <class T>
  static void rnn_copy_cols(T* dst, index_t ldd, const T* src, index_t lds, index_t rows, index_t cols) {
    for (index_t r = 0; r < rows; ++r) std::memcpy(dst + r * ldd, src + r * lds, std::size_t(cols) * sizeof(T));
  }

  /// The plain RNN's step nonlinearity over n elements: y = tanh(z), or relu(z) (NaN stays NaN, as PyTorch).
  template <class T>
  static void rnn_step_forward(const T* z, T* y, index_t n, bool relu) {
    if (relu) {
      for (index_t k = 0; k < n; ++k) y[k] = z[k] < T(0) ? T(0) : z[k];
      return;
    }
    lstm_columns<T>(n, [&]<class V>(index_t j) { lstm_st(y + j, V(math::tanh(lstm_ld<V>(z + j)))); });
  }
  /// Its backward: dz = (dh + dy) * f'(from y) (dy may be null); 1 - y^2 for tanh, y > 0 for relu.
  template <class T>
  static void rnn_step_backward(const T* y, const T* dy, const T* dh, T* dz, index_t n, bool relu) {
    for (index_t k = 0; k < n; ++k) {
      const T d = dy ? dh[k] + dy[k] : dh[k];
      dz[k] = relu ? (y[k] > T(0) ? d : T(0)) : d * (T(1) - y[k] * y[k]);
    }
  }

  /// A sequence GRU step's backward: d = dh + dy (dy, the output's gradient at this step, may be null) to the
  /// pre-activation gradients dgi, dgh (as gru_step_backward); dh is replaced by d * z, the part of the gradient at
  /// h_{t-1} that skips W_hh (the caller adds dgh W_hh).
  template <class T>
  static void gru_seq_step_backward(const T* act, const T* gh, const T* hprev, T* dh, const T* dy, T* dgi, T* dgh, index_t B,
                                    index_t H) {
    rnn_rows(B, H, P::num_threads(), [&](index_t b) {
      const T* a = act + b * 3 * H;
      const T* q = gh + b * 3 * H;
      const T* hp = hprev ? hprev + b * H : nullptr;
      T* dhb = dh + b * H;
      const T* dyb = dy ? dy + b * H : nullptr;
      T* di = dgi + b * 3 * H;
      T* dq = dgh + b * 3 * H;
      lstm_columns<T>(H, [&]<class V>(index_t j) {
        const V one = V{} + T(1);
        const V r = lstm_ld<V>(a + j), z = lstm_ld<V>(a + H + j), n = lstm_ld<V>(a + 2 * H + j);
        const V d = dyb ? lstm_ld<V>(dhb + j) + lstm_ld<V>(dyb + j) : lstm_ld<V>(dhb + j);
        const V h = hp ? lstm_ld<V>(hp + j) : V{};
        const V dn = d * (one - z) * (one - n * n);
        const V dz = d * (h - n) * z * (one - z);
        const V dr = dn * lstm_ld<V>(q + 2 * H + j) * r * (one - r);
        lstm_st(di + j, dr);
        lstm_st(di + H + j, dz);
        lstm_st(di + 2 * H + j, dn);
        lstm_st(dq + j, dr);
        lstm_st(dq + H + j, dz);
        lstm_st(dq + 2 * H + j, dn * r);
        lstm_st(dhb + j, d * z);
      });
    });
  }
};

}  // namespace tessera::detail
