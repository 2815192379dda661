// Scaled dot-product attention on Vars, written once for every policy:
//   scaled_dot_product_attention(q, k, v, opt)   softmax(q k^T * scale + mask) v for q [B, H, T, D], k [B, H, S, D],
//                                                v [B, H, S, Dv] -> [B, H, T, Dv], as torch.nn.functional's (boolean
//                                                masks, true = masked out, or float masks added to the scores;
//                                                opt.is_causal; scale 1/sqrt(D) by default; dropout_p on the weights)
//   detail::attention_core                       the same on heads laid out by strides inside any Vars (q, k and v
//                                                may be column ranges of one projection): nn::MultiheadAttention's
// The forward keeps each row's log-sum-exp, never the T x S weights; the backward recomputes them block by block
// (backend<P>::attention_forward / _backward: kernels/cpu/attention.hpp, kernels/cuda/attention.hpp). A query row
// whose keys are all masked gives NaN, as PyTorch's MultiheadAttention (and its softmax over -inf scores). A float
// mask is a constant: it gets no gradient. Attention-weight dropout keeps weight (b, h, t, s) by a counter-based hash
// of (seed, b, h, t, s) (kernels/attention_dropout.hpp), the seed drawn once per call from an Rng, so the backward
// regenerates the forward's mask without storing it.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "tessera/autodiff/ops.hpp"
#include "tessera/kernels/attention_dropout.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif

namespace tessera::ad {

/// A mask for attention given by a tensor in the Vars' memory: empty (no mask) or any rank 2 to 4, of bools (true =
/// masked out) or of floats added to the scaled scores (-inf = masked out; float or double, q's element type, as
/// PyTorch's). The attention copies it (backward reads it again), so it need not outlive the call.
struct attention_mask {
  const bool* data = nullptr;      ///< a boolean mask
  const void* values = nullptr;    ///< a float mask (float or double: value_bytes)
  int value_bytes = 0;
  int rank = 0;
  index_t dims[4]{};
  bool on_device = false;
  attention_mask() = default;
  template <class E, class S, class P>
  attention_mask(const Tensor<E, S, P>& t) : rank(S::rank), on_device(P::on_device) {  // NOLINT: implicit
    static_assert(S::rank >= 2 && S::rank <= 4, "tessera: attention: a mask has rank 2 to 4");
    static_assert(std::is_same_v<E, bool> || std::is_same_v<E, float> || std::is_same_v<E, double>,
                  "tessera: attention: a mask holds bools (true = masked out) or floats (added to the scores)");
    if constexpr (std::is_same_v<E, bool>) data = t.data();
    else values = t.data(), value_bytes = int(sizeof(E));
    for (int i = 0; i < S::rank; ++i) dims[i] = t.dims()[i];
  }
  bool defined() const { return data != nullptr || values != nullptr; }
  bool additive() const { return values != nullptr; }
  index_t size() const {
    index_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  std::string format() const {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
  }
};

/// Options of scaled_dot_product_attention (torch.nn.functional.scaled_dot_product_attention's, with the key padding
/// mask of MultiheadAttention added).
struct sdpa_options {
  attention_mask mask;              ///< [T, S], [B, T, S] or [B, H, T, S] (extents 1 broadcast): bools, true = masked
                                    ///< out, or floats (q's type) added to the scores
  attention_mask key_padding_mask;  ///< [B, S] bools: true = that key is padding
  bool is_causal = false;           ///< key s masked for query t when s > t (top-left aligned, as PyTorch's)
  double dropout_p = 0.0;           ///< attention-weight dropout in [0, 1], applied whenever > 0 (as PyTorch's); needs rng
  double scale = 0.0;               ///< 0: 1 / sqrt(D)
  Rng* rng = nullptr;               ///< draws the dropout's seed (one draw per call)
};

namespace detail {

/// The masks' copies (in P's memory) and their strides for an attention of B x H heads of T x S scores.
template <class T, class P>
struct attention_masks {
  Tensor<bool, dyn_shape_t<1>, P> mask, pad;
  Tensor<T, dyn_shape_t<1>, P> add;  // the float mask
  index_t mask_bs = 0, mask_hs = 0;
  bool has_mask = false, has_pad = false, has_add = false;
};

template <class V, class P>
std::shared_ptr<attention_masks<V, P>> copy_masks(const sdpa_options& o, index_t B, index_t H, index_t T, index_t S,
                                                  const char* op) {
  auto m = std::make_shared<attention_masks<V, P>>();
  auto check_policy = [&](const attention_mask& a) {
    if (a.on_device != P::on_device)
      throw std::invalid_argument(std::string("tessera: ") + op + ": the mask must live in the same memory as q, k and v");
  };
  if (o.mask.defined()) {
    check_policy(o.mask);
    const attention_mask& a = o.mask;
    const int r = a.rank;
    const index_t mt = a.dims[r - 2], ms = a.dims[r - 1];
    const index_t mb = r >= 3 ? a.dims[0] : 1, mh = r == 4 ? a.dims[1] : 1;
    if (mt != T || ms != S || (mb != 1 && mb != B) || (mh != 1 && mh != H))
      throw shape_error(std::string("tessera: ") + op + ": the mask " + a.format() + " does not broadcast to the scores [" +
                        std::to_string(B) + ", " + std::to_string(H) + ", " + std::to_string(T) + ", " + std::to_string(S) + "]");
    if (a.additive()) {
      if (a.value_bytes != int(sizeof(V)))
        throw std::invalid_argument(std::string("tessera: ") + op + ": a float mask must have the element type of q, k and v");
      m->add = Tensor<V, dyn_shape_t<1>, P>(a.size());
      backend<P>::copy(m->add.data(), static_cast<const V*>(a.values), a.size());
      m->has_add = true;
    } else {
      m->mask = Tensor<bool, dyn_shape_t<1>, P>(a.size());
      backend<P>::copy(m->mask.data(), a.data, a.size());
      m->has_mask = true;
    }
    m->mask_hs = mh == 1 ? 0 : T * S;
    m->mask_bs = mb == 1 ? 0 : mh * T * S;
  }
  if (o.key_padding_mask.defined()) {
    check_policy(o.key_padding_mask);
    const attention_mask& a = o.key_padding_mask;
    if (a.additive()) throw std::invalid_argument(std::string("tessera: ") + op + ": the key padding mask must hold bools");
    if (a.rank != 2 || a.dims[0] != B || a.dims[1] != S)
      throw shape_error(std::string("tessera: ") + op + ": the key padding mask " + a.format() + " is not [batch, keys] = [" +
                        std::to_string(B) + ", " + std::to_string(S) + "]");
    m->pad = Tensor<bool, dyn_shape_t<1>, P>(a.size());
    backend<P>::copy(m->pad.data(), a.data, a.size());
    m->has_pad = true;
  }
  return m;
}

/// Where the heads of q, k, v and the output live: element (b, h, t, c) of q at q.data() + qoff + b * qs[0] + h * qs[1]
/// + t * qs[2] + c, and so on; `covers`: the regions read from each distinct Var tile it exactly, without overlap (its
/// gradient is then written, not zeroed and added to).
struct attention_layout {
  index_t B, H, T, S, D, Dv;
  index_t qoff, koff, voff;
  index_t qs[3], ks[3], vs[3], os[3];
  bool covers;
};

/// Attention-weight dropout of one call: probability p (0: none) and the seed of its keep/drop hash.
struct attention_dropout_args {
  double p = 0.0;
  std::uint64_t seed = 0;
};

/// The dropout of one call with probability p (in [0, 1]; 0: none), its seed drawn from rng (needed when p > 0).
inline attention_dropout_args draw_attention_dropout(double p, Rng* rng, const char* op) {
  if (!(p >= 0.0 && p <= 1.0)) throw std::invalid_argument(std::string("tessera: ") + op + ": dropout must be in [0, 1]");
  if (p == 0.0) return {};
  if (!rng) throw std::logic_error(std::string("tessera: ") + op + ": dropout needs a random number generator");
  return {p, (*rng)()};
}

/// softmax(q k^T * scale + masks) v on heads laid out as L says, into a new Var of dims od (laid out by L.os), with
/// the weights dropped out as drop says.
template <int RO, class T, int RQ, int RK, int RV, class P>
Var<T, RO, P> attention_core(const Var<T, RQ, P>& q, const Var<T, RK, P>& k, const Var<T, RV, P>& v, const attention_layout& L,
                             const dims_t<RO>& od, T scale, bool causal, std::shared_ptr<attention_masks<T, P>> masks,
                             attention_dropout_args drop = {}) {
  using V = Var<T, RO, P>;
  tessera::detail::attention_desc<T> d;
  d.B = L.B, d.H = L.H, d.Tq = L.T, d.S = L.S, d.D = L.D, d.Dv = L.Dv;
  for (int i = 0; i < 3; ++i) d.qs[i] = L.qs[i], d.ks[i] = L.ks[i], d.vs[i] = L.vs[i], d.os[i] = L.os[i];
  d.scale = scale;
  d.causal = causal;
  d.mask = masks->has_mask ? masks->mask.data() : nullptr;
  d.mask_bs = masks->mask_bs, d.mask_hs = masks->mask_hs;
  d.key_padding = masks->has_pad ? masks->pad.data() : nullptr;
  d.mask_add = masks->has_add ? masks->add.data() : nullptr;
  if (drop.p > 0.0) {  // p = 1: nothing kept, the output zero (as PyTorch's)
    d.dropout = true;
    d.dropout_seed = drop.seed;
    d.dropout_threshold = tessera::detail::attention_dropout_threshold(drop.p);
    d.dropout_scale = drop.p >= 1.0 ? T(0) : T(1.0 / (1.0 - drop.p));
  }
  auto lse = std::make_shared<Tensor<T, dyn_shape_t<1>, P>>(L.B * L.H * L.T);
  d.lse = lse->data();
  d.q = q.value().data() + L.qoff;
  d.k = k.value().data() + L.koff;
  d.v = v.value().data() + L.voff;
  typename V::tensor y(od);
  d.o = y.data();
  backend<P>::attention_forward(d);
  auto back = [q, k, v, L, d0 = d, lse, masks](const auto& g, const auto& out) {
    auto d = d0;
    d.o = const_cast<T*>(out.data());  // read only by the backward
    d.dout = g.data();
    // one gradient buffer per distinct Var, zeroed first (then added to) unless the regions read tile it exactly
    auto buffer = [&](const auto& var, bool& acc) -> T* {
      T* p = grad_of(var, acc);
      if (p && !acc && !L.covers) {
        backend<P>::zero(p, var.size());
        acc = true;
      }
      return p;
    };
    const bool kq = k.ptr().get() == static_cast<const void*>(q.ptr().get());
    const bool vq = v.ptr().get() == static_cast<const void*>(q.ptr().get());
    const bool vk = v.ptr().get() == static_cast<const void*>(k.ptr().get());
    bool aq = false, ak = false, av = false;
    T* gq = buffer(q, aq);
    T* gk = kq ? gq : buffer(k, ak);
    if (kq) ak = aq;
    T* gv = vq ? gq : (vk ? gk : buffer(v, av));
    if (vq) av = aq;
    else if (vk) av = ak;
    d.dq = gq ? gq + L.qoff : nullptr;
    d.dk = gk ? gk + L.koff : nullptr;
    d.dv = gv ? gv + L.voff : nullptr;
    d.acc_q = aq, d.acc_k = ak, d.acc_v = av;
    if (!q.requires_grad()) d.dq = nullptr;
    if (!k.requires_grad()) d.dk = nullptr;
    if (!v.requires_grad()) d.dv = nullptr;
    backend<P>::attention_backward(d);
  };
  const void* nq = q.ptr().get();
  const void* nk = k.ptr().get();
  const void* nv = v.ptr().get();
  if (nk == nq && nv == nq) return V::make(std::move(y), back, q);
  if (nk == nq) return V::make(std::move(y), back, q, v);
  if (nv == nq || nv == nk) return V::make(std::move(y), back, q, k);
  return V::make(std::move(y), back, q, k, v);
}

}  // namespace detail

/// softmax(q k^T * scale + masks) v for q [B, H, T, D], k [B, H, S, D], v [B, H, S, Dv]: [B, H, T, Dv].
template <class T, class P>
Var<T, 4, P> scaled_dot_product_attention(const Var<T, 4, P>& q, const Var<T, 4, P>& k, const Var<T, 4, P>& v,
                                          const sdpa_options& opt = {}) {
  const auto &qd = q.dims(), &kd = k.dims(), &vd = v.dims();
  auto fail = [&](const char* why, const auto& a, const auto& b) {
    throw shape_error(std::string("tessera: scaled_dot_product_attention: ") + why + ": " + tessera::detail::format_dims(a) +
                      " and " + tessera::detail::format_dims(b));
  };
  if (qd[0] != kd[0] || qd[1] != kd[1] || qd[3] != kd[3]) fail("q and k differ in batch, heads or width", qd, kd);
  if (vd[0] != kd[0] || vd[1] != kd[1] || vd[2] != kd[2]) fail("k and v differ in batch, heads or length", kd, vd);
  const index_t B = qd[0], H = qd[1], T_ = qd[2], D = qd[3], S = kd[2], Dv = vd[3];
  const T scale = opt.scale != 0.0 ? T(opt.scale) : T(1.0 / std::sqrt(double(D > 0 ? D : 1)));
  auto masks = detail::copy_masks<T, P>(opt, B, H, T_, S, "scaled_dot_product_attention");
  const auto drop = detail::draw_attention_dropout(opt.dropout_p, opt.rng, "scaled_dot_product_attention");
  const bool distinct = q.ptr().get() != static_cast<const void*>(k.ptr().get()) &&
                        q.ptr().get() != static_cast<const void*>(v.ptr().get()) &&
                        k.ptr().get() != static_cast<const void*>(v.ptr().get());
  detail::attention_layout L{B, H, T_, S, D, Dv, 0, 0, 0, {H * T_ * D, T_ * D, D}, {H * S * D, S * D, D},
                             {H * S * Dv, S * Dv, Dv}, {H * T_ * Dv, T_ * Dv, Dv}, distinct};
  return detail::attention_core<4>(q, k, v, L, dims_t<4>{B, H, T_, Dv}, scale, opt.is_causal, std::move(masks), drop);
}

}  // namespace tessera::ad
