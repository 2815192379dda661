// Plain-loop references for the sequence recurrences (PyTorch's formulas step by step, in double) and a runner that
// compares a layer's forward_with_state against them. Shared by test_gru_rnn.cpp and test_bidirectional.cpp.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <tessera/nn/recurrent.hpp>
#include <vector>

namespace rref {
namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::index_t;

enum class kind { gru, rnn_tanh, rnn_relu, lstm };

/// One layer-direction's parameters as plain row-major vectors (biases empty: none).
struct params {
  std::vector<double> wih, whh, bih, bhh;
};

inline double sig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

/// The references' result: out [T][N][D*H] time-major, h_n and (LSTM) c_n [L*D][N][H].
struct result {
  std::vector<double> out, hn, cn;
};

/// x time-major [T][N][I]; ps[l*D + d]; h0, c0 [L*D][N][H] the initial states (empty: zeros). Dropout: none
/// (evaluation).
inline result forward(kind k, const std::vector<double>& x, index_t T, index_t N, index_t I, index_t H, int L, int D,
                      const std::vector<params>& ps, const std::vector<double>& h0 = {}, const std::vector<double>& c0 = {}) {
  const index_t G = k == kind::gru ? 3 : k == kind::lstm ? 4 : 1;
  std::vector<double> in = x;
  index_t width = I;
  result r;
  r.hn.assign(std::size_t(L * D * N * H), 0.0);
  r.cn.assign(std::size_t(L * D * N * H), 0.0);
  for (int l = 0; l < L; ++l) {
    std::vector<double> out(std::size_t(T * N * D * H), 0.0);
    for (int d = 0; d < D; ++d) {
      const params& p = ps[std::size_t(l * D + d)];
      for (index_t b = 0; b < N; ++b) {
        std::vector<double> h(std::size_t(H), 0.0), c(std::size_t(H), 0.0);
        const std::size_t s0 = std::size_t(((l * D + d) * N + b) * H);
        for (index_t j = 0; j < H; ++j) {
          if (!h0.empty()) h[std::size_t(j)] = h0[s0 + std::size_t(j)];
          if (!c0.empty()) c[std::size_t(j)] = c0[s0 + std::size_t(j)];
        }
        for (index_t s = 0; s < T; ++s) {
          const index_t t = d == 0 ? s : T - 1 - s;
          const double* xt = in.data() + (t * N + b) * width;
          // gi = W_ih x + b_ih, gh = W_hh h + b_hh, every gate row
          std::vector<double> gi(std::size_t(G * H)), gh(std::size_t(G * H));
          for (index_t q = 0; q < G * H; ++q) {
            double a = p.bih.empty() ? 0.0 : p.bih[std::size_t(q)];
            for (index_t j = 0; j < width; ++j) a += p.wih[std::size_t(q * width + j)] * xt[j];
            double e = p.bhh.empty() ? 0.0 : p.bhh[std::size_t(q)];
            for (index_t j = 0; j < H; ++j) e += p.whh[std::size_t(q * H + j)] * h[std::size_t(j)];
            gi[std::size_t(q)] = a;
            gh[std::size_t(q)] = e;
          }
          std::vector<double> hnew(std::size_t(H), 0.0);
          for (index_t j = 0; j < H; ++j) {
            const auto u = std::size_t(j), uh = std::size_t(H);
            if (k == kind::gru) {
              const double rr = sig(gi[u] + gh[u]);
              const double z = sig(gi[uh + u] + gh[uh + u]);
              const double n = std::tanh(gi[2 * uh + u] + rr * gh[2 * uh + u]);
              hnew[u] = (1 - z) * n + z * h[u];
            } else if (k == kind::lstm) {
              const double i = sig(gi[u] + gh[u]), f = sig(gi[uh + u] + gh[uh + u]);
              const double g = std::tanh(gi[2 * uh + u] + gh[2 * uh + u]), o = sig(gi[3 * uh + u] + gh[3 * uh + u]);
              c[u] = f * c[u] + i * g;
              hnew[u] = o * std::tanh(c[u]);
            } else {
              const double v = gi[u] + gh[u];
              hnew[u] = k == kind::rnn_tanh ? std::tanh(v) : std::max(v, 0.0);
            }
          }
          h = hnew;
          for (index_t j = 0; j < H; ++j) out[std::size_t((t * N + b) * D * H + d * H + j)] = h[std::size_t(j)];
        }
        for (index_t j = 0; j < H; ++j) {
          r.hn[std::size_t(((l * D + d) * N + b) * H + j)] = h[std::size_t(j)];
          r.cn[std::size_t(((l * D + d) * N + b) * H + j)] = c[std::size_t(j)];
        }
      }
    }
    in = std::move(out);
    width = D * H;
  }
  r.out = std::move(in);
  return r;
}

/// The parameters of a layer state (layers[l*D + d]) as plain vectors.
template <class State>
std::vector<params> read_params(const State& st) {
  std::vector<params> ps;
  auto vec = [](const auto& v) {
    std::vector<double> o;
    if (!v.defined()) return o;
    auto host = ts::to<ts::cpu>(v.value());
    for (index_t i = 0; i < host.size(); ++i) o.push_back(double(host.data()[i]));
    return o;
  };
  for (const auto& p : st.layers) ps.push_back({vec(p.weight_ih), vec(p.weight_hh), vec(p.bias_ih), vec(p.bias_hh)});
  return ps;
}

/// Deterministic input values in [-1, 1).
inline double value(index_t i, int salt) { return double((i * 7919 + salt * 104729 + 17) % 1000) / 500.0 - 1.0; }

/// Runs Layer's forward_with_state on [T, N, I] (or [N, T, I] when batch_first) in evaluation and compares output and
/// h_n against the reference.
template <class Layer, int I, int H, int L, int D, bool BatchFirst, class T, class P>
void check_forward(kind k, index_t Tn, index_t N, std::uint64_t seed = 7) {
  ts::Rng rng(seed);
  typename Layer::template state<T, P> st(rng);
  const auto ps = read_params(st);
  std::vector<double> xt(std::size_t(Tn * N * I));  // time-major reference input
  ts::Tensor<T, ts::dyn_shape_t<3>, ts::cpu> xh(BatchFirst ? ts::dims_t<3>{N, Tn, I} : ts::dims_t<3>{Tn, N, I});
  for (index_t t = 0; t < Tn; ++t)
    for (index_t b = 0; b < N; ++b)
      for (index_t j = 0; j < I; ++j) {
        const double v = value((t * N + b) * I + j, 3);
        xt[std::size_t((t * N + b) * I + j)] = v;
        xh.data()[BatchFirst ? (b * Tn + t) * I + j : (t * N + b) * I + j] = T(v);
      }
  const auto ref = forward(k, xt, Tn, N, I, H, L, D, ps);
  ad::Var<T, 3, P> x(ts::to<P>(xh), false);
  nn::context ctx{false, &rng};
  const auto r = st.forward_with_state(x, ctx);
  const auto out = ts::to<ts::cpu>(r.output.value());
  const auto hn = ts::to<ts::cpu>(r.h_n.value());
  REQUIRE(r.output.dims() == (BatchFirst ? ts::dims_t<3>{N, Tn, D * H} : ts::dims_t<3>{Tn, N, D * H}));
  REQUIRE(r.h_n.dims() == ts::dims_t<3>{L * D, N, H});
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  for (index_t t = 0; t < Tn; ++t)
    for (index_t b = 0; b < N; ++b)
      for (index_t j = 0; j < D * H; ++j) {
        const double got = double(out.data()[BatchFirst ? (b * Tn + t) * D * H + j : (t * N + b) * D * H + j]);
        INFO("output step " << t << " batch " << b << " feature " << j);
        CHECK(got == Approx(ref.out[std::size_t((t * N + b) * D * H + j)]).epsilon(tol).margin(tol));
      }
  for (index_t i = 0; i < hn.size(); ++i) {
    INFO("h_n element " << i);
    CHECK(double(hn.data()[i]) == Approx(ref.hn[std::size_t(i)]).epsilon(tol).margin(tol));
  }
  if (k == kind::lstm) {
    REQUIRE(r.c_n.dims() == ts::dims_t<3>{L * D, N, H});
    const auto cn = ts::to<ts::cpu>(r.c_n.value());
    for (index_t i = 0; i < cn.size(); ++i) {
      INFO("c_n element " << i);
      CHECK(double(cn.data()[i]) == Approx(ref.cn[std::size_t(i)]).epsilon(tol).margin(tol));
    }
  } else {
    CHECK(!r.c_n.defined());
  }
}

}  // namespace rref
