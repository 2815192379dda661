// Recurrent operations (host policies):
//   lstm(x, layers, opts, h0, c0, rng, training)   a multi-layer LSTM over a sequence with PyTorch's semantics and
//       parameter layout (per layer weight_ih [4H, I], weight_hh [4H, H], bias_ih [4H], bias_hh [4H]; gates i, f, g, o;
//       c' = f*c + i*g, h' = o*tanh(c')). Input [B, T, I] (batch_first) or [T, B, I]; returns the output sequence in the
//       same layout and the final (h, c) [L, B, H]. Dropout (inverted) between layers in training, not after the last.
//       Per layer: the input projection of all time steps is one GEMM (biases as its initial value); each step is one
//       recurrent GEMM accumulating into that step's gates and one fused pass for the nonlinearities and the c/h update.
//       Backward through time: per step one fused pointwise pass and one GEMM (dh_{t-1} = dgates W_hh); the weight
//       gradients afterwards as large GEMMs over all steps at once. The whole stack is one recorded node.
//   select_last_step(y)   [N, T, H] -> [N, H], the last time step.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/autodiff/nn_ops.hpp"
#include "tessera/core/math.hpp"
#include "tessera/core/random.hpp"
#include "tessera/kernels/cpu/gemm.hpp"

namespace tessera {

/// Hyper-parameters of a (stacked) LSTM, as PyTorch's nn.LSTM: nn::LSTM<28, 128, {.num_layers = 2, .dropout = 0.2}>.
struct lstm_options {
  int num_layers = 1;
  double dropout = 0.0;  ///< between layers (not after the last), in training only
  bool batch_first = true;
};

namespace ad {

/// One layer's parameters in PyTorch's layout.
template <class T, class P>
struct lstm_layer_params {
  Var<T, 2, P> weight_ih;  ///< [4H, I]
  Var<T, 2, P> weight_hh;  ///< [4H, H]
  Var<T, 1, P> bias_ih;    ///< [4H]
  Var<T, 1, P> bias_hh;    ///< [4H]
};

template <class T, class P>
struct lstm_result {
  Var<T, 3, P> output;  ///< [B, T, H] (batch_first) or [T, B, H]
  Var<T, 3, P> h_n;     ///< [L, B, H]
  Var<T, 3, P> c_n;     ///< [L, B, H]
};

namespace detail {

template <class T>
inline T lstm_sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

/// A buffer whose elements start uninitialised (every element is written before it is read: zero-filling the
/// gate buffers cost 5 % of a forward pass).
template <class T>
class uninit_vector {
 public:
  uninit_vector() = default;
  uninit_vector(const uninit_vector& o) { *this = o; }
  uninit_vector& operator=(const uninit_vector& o) {
    if (this != &o) {
      resize(o.n_);
      if (n_) std::memcpy(p_.get(), o.p_.get(), n_ * sizeof(T));
    }
    return *this;
  }
  uninit_vector(uninit_vector&&) noexcept = default;
  uninit_vector& operator=(uninit_vector&&) noexcept = default;
  void resize(std::size_t n) {
    if (n != n_) {
      p_.reset(n ? new T[n] : nullptr);
      n_ = n;
    }
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T& operator[](std::size_t i) { return p_[i]; }
  const T& operator[](std::size_t i) const { return p_[i]; }
  T* begin() { return p_.get(); }
  T* end() { return p_.get() + n_; }
  const T* begin() const { return p_.get(); }
  const T* end() const { return p_.get() + n_; }

 private:
  std::unique_ptr<T[]> p_;
  std::size_t n_ = 0;
};

/// What backward needs of one layer (all time-major: row t*B + b).
template <class T>
struct lstm_layer_saved {
  uninit_vector<T> x;     ///< the layer's input [T*B, I] (after dropout)
  uninit_vector<T> gate;  ///< gate activations [T*B, 4H]: i, f, g, o
  uninit_vector<T> c;     ///< cell states [T*B, H]
  uninit_vector<T> y;     ///< hidden states [T*B, H]
  uninit_vector<T> mask;  ///< dropout mask applied to the previous layer's output (empty: none)
  index_t in = 0;
};

/// [D0, D1, K] -> [D1, D0, K] (swap of the first two axes).
template <class T>
inline void swap01(const T* src, T* dst, index_t D0, index_t D1, index_t K) {
  for (index_t i = 0; i < D0; ++i)
    for (index_t j = 0; j < D1; ++j) std::memcpy(dst + (j * D0 + i) * K, src + (i * D1 + j) * K, std::size_t(K) * sizeof(T));
}

/// The gradient buffer of a Var, zero-filled when fresh (then always accumulated into).
template <class V>
auto* zeroed_grad(const V& v) {
  bool acc;
  auto& g = fresh_or_grad(v, acc);
  if (!acc) std::fill(g.data(), g.data() + g.size(), typename V::value_type(0));
  return g.data();
}

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

/// Runs body.template operator()<V>(j) over j = 0 .. H: SIMD packets (float: the vectorised exp/tanh of
/// core/math.hpp), then scalars.
template <class T, class F>
TS_INLINE void lstm_columns(index_t H, F&& body) {
  index_t j = 0;
#if TESSERA_SIMD
  constexpr int N = simd::lanes_for<sizeof(T)>;
  for (; j + N <= H; j += N) body.template operator()<simd::vec<T, N>>(j);
#endif
  for (; j < H; ++j) body.template operator()<T>(j);
}

/// Forward of one step's pointwise part: gates (pre-activations in, activations out), c and h for B rows.
template <class T>
inline void lstm_step_forward(T* gates, const T* cprev, T* c, T* h, index_t B, index_t H, int nt = 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * H >= 8192)
#endif
  for (index_t b = 0; b < B; ++b) {
    T* g = gates + b * 4 * H;
    const T* cp = cprev ? cprev + b * H : nullptr;
    T* cb = c + b * H;
    T* hb = h + b * H;
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
}

/// Backward of one step's pointwise part: from dh and dc (updated in place to dc_{t-1}) to the gates'
/// pre-activation gradients.
template <class T>
inline void lstm_step_backward(const T* gates, const T* c, const T* cprev, const T* dh, T* dc, T* dgates, index_t B, index_t H,
                               int nt = 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B > 1 && B * H >= 8192)
#endif
  for (index_t b = 0; b < B; ++b) {
    const T* g = gates + b * 4 * H;
    T* dg = dgates + b * 4 * H;
    const T* cb = c + b * H;
    const T* cp = cprev ? cprev + b * H : nullptr;
    const T* dhb = dh + b * H;
    T* dcb = dc + b * H;
    lstm_columns<T>(H, [&]<class V>(index_t j) {
      const V i = lstm_ld<V>(g + j), f = lstm_ld<V>(g + H + j), gg = lstm_ld<V>(g + 2 * H + j), o = lstm_ld<V>(g + 3 * H + j);
      const V tc = math::tanh(lstm_ld<V>(cb + j)), dhj = lstm_ld<V>(dhb + j);
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
}
}  // namespace detail

/// A multi-layer LSTM (see the top of this file). h0, c0 [L, B, H] may be empty Vars (zeros). Dropout between layers
/// needs `rng` when opts.dropout > 0 and training.
template <class T, class P>
lstm_result<T, P> lstm(const Var<T, 3, P>& x, const std::vector<lstm_layer_params<T, P>>& layers, const lstm_options& opts,
                       const Var<T, 3, P>& h0 = {}, const Var<T, 3, P>& c0 = {}, Rng* rng = nullptr, bool training = false) {
  static_assert(!P::on_device, "tessera: ad::lstm: only host policies are supported so far");
  using V1 = Var<T, 1, P>;
  using V3 = Var<T, 3, P>;
  const index_t L = index_t(layers.size());
  if (L < 1 || opts.num_layers != int(L))
    throw std::invalid_argument("tessera: lstm: " + std::to_string(L) + " layers of parameters given, options say " +
                                std::to_string(opts.num_layers));
  const auto xd = x.dims();
  const index_t B = opts.batch_first ? xd[0] : xd[1];
  const index_t Tn = opts.batch_first ? xd[1] : xd[0];
  const index_t I0 = xd[2];
  const index_t H = layers[0].weight_hh.dims()[1];
  const index_t G4 = 4 * H;
  for (index_t l = 0; l < L; ++l) {
    const auto& p = layers[std::size_t(l)];
    const index_t in = l == 0 ? I0 : H;
    if (p.weight_ih.dims() != dims_t<2>{G4, in} || p.weight_hh.dims() != dims_t<2>{G4, H} || p.bias_ih.dims()[0] != G4 ||
        p.bias_hh.dims()[0] != G4)
      throw shape_error("tessera: lstm: the parameters of layer " + std::to_string(l) + " do not fit input size " +
                        std::to_string(in) + " and hidden size " + std::to_string(H));
  }
  const dims_t<3> state_dims{L, B, H};
  if (h0.defined() && h0.dims() != state_dims)
    throw shape_error("tessera: lstm: h0 " + tessera::detail::format_dims(h0.dims()) + " should be " + tessera::detail::format_dims(state_dims));
  if (c0.defined() && c0.dims() != state_dims)
    throw shape_error("tessera: lstm: c0 " + tessera::detail::format_dims(c0.dims()) + " should be " + tessera::detail::format_dims(state_dims));
  const bool drop = training && opts.dropout > 0.0 && L > 1;
  if (drop && (opts.dropout >= 1.0)) throw std::invalid_argument("tessera: lstm: dropout must be in [0, 1)");
  if (drop && !rng) throw std::logic_error("tessera: lstm: dropout in training needs a random number generator");

  const int nt = P::num_threads();
  const index_t TB = Tn * B;
  auto saved = std::make_shared<std::vector<detail::lstm_layer_saved<T>>>(std::size_t(L));
  const T* h0p = h0.defined() ? h0.value().data() : nullptr;
  const T* c0p = c0.defined() ? c0.value().data() : nullptr;

  // layer 0's input, time-major
  (*saved)[0].in = I0;
  (*saved)[0].x.resize(std::size_t(TB * I0));
  if (opts.batch_first) detail::swap01(x.value().data(), (*saved)[0].x.data(), B, Tn, I0);
  else std::copy(x.value().data(), x.value().data() + TB * I0, (*saved)[0].x.data());

  for (index_t l = 0; l < L; ++l) {
    auto& s = (*saved)[std::size_t(l)];
    const auto& p = layers[std::size_t(l)];
    const index_t in = s.in;
    s.gate.resize(std::size_t(TB * G4));
    s.c.resize(std::size_t(TB * H));
    s.y.resize(std::size_t(TB * H));
    T* G = s.gate.data();
    // gates = x W_ih^T + b_ih + b_hh for all steps: one GEMM onto the biases
    const T* bi = p.bias_ih.value().data();
    const T* bh = p.bias_hh.value().data();
    if (TB > 0)
      for (index_t j = 0; j < G4; ++j) G[j] = bi[j] + bh[j];
    for (index_t r = 1; r < TB; ++r) std::memcpy(G + r * G4, G, std::size_t(G4) * sizeof(T));
    const T* Wih = p.weight_ih.value().data();
    const T* Whh = p.weight_hh.value().data();
    tessera::detail::cpu_gemm<T>(TB, G4, in, {s.x.data(), in, 1}, {Wih, 1, in}, G, G4, true, nt);
    const tessera::detail::packed_b<T> whh_t({Whh, 1, H}, H, G4);  // W_hh^T packed once for every step
    for (index_t t = 0; t < Tn; ++t) {
      const T* hprev = t > 0 ? s.y.data() + (t - 1) * B * H : (h0p ? h0p + l * B * H : nullptr);
      const T* cprev = t > 0 ? s.c.data() + (t - 1) * B * H : (c0p ? c0p + l * B * H : nullptr);
      T* Gt = G + t * B * G4;
      if (hprev) tessera::detail::cpu_gemm<T>(B, G4, H, {hprev, H, 1}, {Whh, 1, H}, Gt, G4, true, nt, {}, &whh_t);
      detail::lstm_step_forward<T>(Gt, cprev, s.c.data() + t * B * H, s.y.data() + t * B * H, B, H, nt);
    }
    if (l + 1 < L) {
      auto& nx = (*saved)[std::size_t(l + 1)];
      nx.in = H;
      nx.x = s.y;
      if (drop) {
        nx.mask.resize(std::size_t(TB * H));
        const T keep = T(1.0 / (1.0 - opts.dropout));
        for (auto& m : nx.mask) m = rng->uniform_double() < opts.dropout ? T(0) : keep;
        for (std::size_t i = 0; i < nx.x.size(); ++i) nx.x[i] *= nx.mask[i];
      }
    }
  }

  // packed value: output (caller's layout), h_n, c_n
  const index_t n_out = TB * H, n_state = L * B * H;
  typename V1::tensor packed_v(n_out + 2 * n_state);
  T* pk = packed_v.data();
  const auto& ytop = (*saved)[std::size_t(L - 1)].y;
  if (opts.batch_first) detail::swap01(ytop.data(), pk, Tn, B, H);
  else std::copy(ytop.begin(), ytop.end(), pk);
  for (index_t l = 0; l < L; ++l) {
    const auto& s = (*saved)[std::size_t(l)];
    const index_t last = Tn > 0 ? (Tn - 1) * B * H : 0;
    if (Tn > 0) {
      std::copy(s.y.data() + last, s.y.data() + last + B * H, pk + n_out + l * B * H);
      std::copy(s.c.data() + last, s.c.data() + last + B * H, pk + n_out + n_state + l * B * H);
    }
  }

  V1 packed(std::move(packed_v), false);
  bool need = grad_mode() && (x.requires_grad() || (h0.defined() && h0.requires_grad()) || (c0.defined() && c0.requires_grad()));
  for (const auto& p : layers)
    need = need || (grad_mode() && (p.weight_ih.requires_grad() || p.weight_hh.requires_grad() || p.bias_ih.requires_grad() ||
                                    p.bias_hh.requires_grad()));
  if (need) {
    auto& nd = packed.node();
    nd.requires_grad = true;
    nd.is_leaf = false;
    nd.inputs.push_back(x.ptr());
    if (h0.defined()) nd.inputs.push_back(h0.ptr());
    if (c0.defined()) nd.inputs.push_back(c0.ptr());
    for (const auto& p : layers) {
      nd.inputs.push_back(p.weight_ih.ptr());
      nd.inputs.push_back(p.weight_hh.ptr());
      nd.inputs.push_back(p.bias_ih.ptr());
      nd.inputs.push_back(p.bias_hh.ptr());
    }
    nd.backward_fn = [self = &nd, saved, x, h0, c0, layers, B, Tn, H, L, bf = opts.batch_first, nt]() {
      const index_t G4 = 4 * H, TB = Tn * B, n_out = TB * H, n_state = L * B * H;
      const T* g = self->grad_buffer().data();
      // gradient at the top layer's output, time-major
      std::vector<T> dy(std::size_t(TB * H));
      if (bf) detail::swap01(g, dy.data(), B, Tn, H);
      else std::copy(g, g + n_out, dy.data());
      const T* h0p = h0.defined() ? h0.value().data() : nullptr;
      const T* c0p = c0.defined() ? c0.value().data() : nullptr;
      std::vector<T> dG, dX, dh(std::size_t(B * H)), dc(std::size_t(B * H));
      for (index_t l = L - 1; l >= 0; --l) {
        auto& s = (*saved)[std::size_t(l)];
        const auto& p = layers[std::size_t(l)];
        const index_t in = s.in;
        dG.assign(std::size_t(TB * G4), T(0));
        std::copy(g + n_out + l * B * H, g + n_out + (l + 1) * B * H, dh.data());
        std::copy(g + n_out + n_state + l * B * H, g + n_out + n_state + (l + 1) * B * H, dc.data());
        const T* Whh = p.weight_hh.value().data();
        const tessera::detail::packed_b<T> whh({Whh, H, 1}, G4, H);  // W_hh packed once for every step
        for (index_t t = Tn - 1; t >= 0; --t) {
          for (index_t k = 0; k < B * H; ++k) dh[std::size_t(k)] += dy[std::size_t(t * B * H + k)];
          const T* cprev = t > 0 ? s.c.data() + (t - 1) * B * H : (c0p ? c0p + l * B * H : nullptr);
          T* dGt = dG.data() + t * B * G4;
          detail::lstm_step_backward<T>(s.gate.data() + t * B * G4, s.c.data() + t * B * H, cprev, dh.data(), dc.data(), dGt, B, H, nt);
          tessera::detail::cpu_gemm<T>(B, H, G4, {dGt, G4, 1}, {Whh, H, 1}, dh.data(), H, false, nt, {}, &whh);  // dh_{t-1} = dgates W_hh
        }
        if (h0.defined() && h0.requires_grad()) {
          T* gh = detail::zeroed_grad(h0) + l * B * H;
          for (index_t k = 0; k < B * H; ++k) gh[k] += dh[std::size_t(k)];
        }
        if (c0.defined() && c0.requires_grad()) {
          T* gc = detail::zeroed_grad(c0) + l * B * H;
          for (index_t k = 0; k < B * H; ++k) gc[k] += dc[std::size_t(k)];
        }
        if (p.weight_hh.requires_grad()) {
          T* gw = detail::zeroed_grad(p.weight_hh);
          // steps 1..T-1 at once: dgates[1..]^T h[0..T-2]; step 0 against h0
          if (Tn > 1)
            tessera::detail::cpu_gemm<T>(G4, H, (Tn - 1) * B, {dG.data() + B * G4, 1, G4}, {s.y.data(), H, 1}, gw, H, true, nt);
          if (h0p) tessera::detail::cpu_gemm<T>(G4, H, B, {dG.data(), 1, G4}, {h0p + l * B * H, H, 1}, gw, H, true, nt);
        }
        if (p.weight_ih.requires_grad())
          tessera::detail::cpu_gemm<T>(G4, in, TB, {dG.data(), 1, G4}, {s.x.data(), in, 1}, detail::zeroed_grad(p.weight_ih), in, true, nt);
        if (p.bias_ih.requires_grad() || p.bias_hh.requires_grad()) {
          std::vector<T> db(std::size_t(G4), T(0));
          for (index_t r = 0; r < TB; ++r) {
            const T* row = dG.data() + r * G4;
            for (index_t j = 0; j < G4; ++j) db[std::size_t(j)] += row[j];
          }
          if (p.bias_ih.requires_grad()) {
            T* gb = detail::zeroed_grad(p.bias_ih);
            for (index_t j = 0; j < G4; ++j) gb[j] += db[std::size_t(j)];
          }
          if (p.bias_hh.requires_grad()) {
            T* gb = detail::zeroed_grad(p.bias_hh);
            for (index_t j = 0; j < G4; ++j) gb[j] += db[std::size_t(j)];
          }
        }
        const bool want_dx = l > 0 || x.requires_grad();
        if (want_dx) {
          dX.assign(std::size_t(TB * in), T(0));
          tessera::detail::cpu_gemm<T>(TB, in, G4, {dG.data(), G4, 1}, {p.weight_ih.value().data(), in, 1}, dX.data(), in, false, nt);
          if (l > 0) {
            dy = dX;
            if (!s.mask.empty())
              for (std::size_t i = 0; i < dy.size(); ++i) dy[i] *= s.mask[i];
          } else {
            T* gx = detail::zeroed_grad(x);
            if (bf) {
              for (index_t b = 0; b < B; ++b)
                for (index_t t = 0; t < Tn; ++t) {
                  const T* src = dX.data() + (t * B + b) * in;
                  T* dst = gx + (b * Tn + t) * in;
                  for (index_t k = 0; k < in; ++k) dst[k] += src[k];
                }
            } else {
              for (index_t k = 0; k < TB * in; ++k) gx[k] += dX[std::size_t(k)];
            }
          }
        }
      }
      for (auto& s : *saved) s = detail::lstm_layer_saved<T>{};  // free what backward needed
    };
  }

  // the three results as views of the packed node
  auto piece = [&](index_t offset, const dims_t<3>& d) {
    typename V3::tensor v(d);
    std::copy(packed.value().data() + offset, packed.value().data() + offset + v.size(), v.data());
    return V3::make(std::move(v), [packed, offset](const auto& gr) {
      T* dst = packed.node().grad_buffer().data() + offset;
      const T* src = gr.data();
      for (index_t k = 0; k < gr.size(); ++k) dst[k] += src[k];
    }, packed);
  };
  lstm_result<T, P> r;
  r.output = piece(0, opts.batch_first ? dims_t<3>{B, Tn, H} : dims_t<3>{Tn, B, H});
  r.h_n = piece(n_out, state_dims);
  r.c_n = piece(n_out + n_state, state_dims);
  return r;
}

/// [N, T, H] -> [N, H]: the last time step (of a batch-first sequence).
template <class T, class P>
Var<T, 2, P> select_last_step(const Var<T, 3, P>& y) {
  static_assert(!P::on_device, "tessera: ad::select_last_step: only host policies are supported so far");
  using V2 = Var<T, 2, P>;
  const auto d = y.dims();
  const index_t N = d[0], Tn = d[1], H = d[2];
  if (Tn < 1) throw shape_error("tessera: select_last_step: the sequence is empty");
  typename V2::tensor v(N, H);
  const T* src = y.value().data();
  for (index_t n = 0; n < N; ++n) std::copy(src + (n * Tn + Tn - 1) * H, src + (n * Tn + Tn) * H, v.data() + n * H);
  return V2::make(std::move(v), [y, N, Tn, H](const auto& g) {
    T* gy = detail::zeroed_grad(y);
    const T* gs = g.data();
    for (index_t n = 0; n < N; ++n)
      for (index_t k = 0; k < H; ++k) gy[(n * Tn + Tn - 1) * H + k] += gs[n * H + k];
  }, y);
}

}  // namespace ad
}  // namespace tessera
