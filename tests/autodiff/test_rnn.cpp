// ad::lstm against a plain-loop reference (forward), central finite differences in double (backward), dropout
// reproducibility; ad::select_last_step. The cells (ad::rnn_cell, lstm_cell, gru_cell) against plain loops in double
// and float, their gradients (input, state, every parameter) against finite differences at odd sizes, bad shapes,
// and lstm_cell stepped through a sequence against ad::lstm.
#include <tessera/autodiff/rnn_ops.hpp>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {
using P = ts::cpu_threads;
using V1 = ad::Var<double, 1, P>;
using V2 = ad::Var<double, 2, P>;
using V3 = ad::Var<double, 3, P>;

std::vector<ad::lstm_layer_params<double, P>> make_layers(index_t L, index_t I, index_t H, int salt) {
  std::vector<ad::lstm_layer_params<double, P>> ls;
  for (index_t l = 0; l < L; ++l) {
    const index_t in = l == 0 ? I : H;
    ad::lstm_layer_params<double, P> p;
    p.weight_ih = V2(gc::values<2, P>({4 * H, in}, salt + 10 * int(l) + 1, -0.6, 0.6), true);
    p.weight_hh = V2(gc::values<2, P>({4 * H, H}, salt + 10 * int(l) + 2, -0.6, 0.6), true);
    p.bias_ih = V1(gc::values<1, P>({4 * H}, salt + 10 * int(l) + 3, -0.5, 0.5), true);
    p.bias_hh = V1(gc::values<1, P>({4 * H}, salt + 10 * int(l) + 4, -0.5, 0.5), true);
    ls.push_back(p);
  }
  return ls;
}

double sig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

/// Plain loops, PyTorch's equations. x indexed [b][t][i] through xat(b, t, i). Returns out[b][t][h] (batch-first),
/// hn[l][b][h], cn[l][b][h].
struct ref_result {
  std::vector<double> out, hn, cn;
};
ref_result reference(const std::vector<double>& xbf, index_t B, index_t T, index_t I, index_t H,
                     const std::vector<ad::lstm_layer_params<double, P>>& ls, const std::vector<double>* h0,
                     const std::vector<double>* c0) {
  const index_t L = index_t(ls.size());
  std::vector<double> in = xbf;  // [B, T, in]
  index_t insz = I;
  ref_result r;
  r.hn.assign(std::size_t(L * B * H), 0.0);
  r.cn.assign(std::size_t(L * B * H), 0.0);
  for (index_t l = 0; l < L; ++l) {
    const auto& p = ls[std::size_t(l)];
    const double* wi = p.weight_ih.value().data();
    const double* wh = p.weight_hh.value().data();
    const double* bi = p.bias_ih.value().data();
    const double* bh = p.bias_hh.value().data();
    std::vector<double> out(std::size_t(B * T * H));
    for (index_t b = 0; b < B; ++b) {
      std::vector<double> h(std::size_t(H), 0.0), c(std::size_t(H), 0.0);
      if (h0)
        for (index_t k = 0; k < H; ++k) h[std::size_t(k)] = (*h0)[std::size_t((l * B + b) * H + k)];
      if (c0)
        for (index_t k = 0; k < H; ++k) c[std::size_t(k)] = (*c0)[std::size_t((l * B + b) * H + k)];
      for (index_t t = 0; t < T; ++t) {
        std::vector<double> z(std::size_t(4 * H));
        for (index_t r_ = 0; r_ < 4 * H; ++r_) {
          double s = bi[r_] + bh[r_];
          for (index_t k = 0; k < insz; ++k) s += wi[r_ * insz + k] * in[std::size_t((b * T + t) * insz + k)];
          for (index_t k = 0; k < H; ++k) s += wh[r_ * H + k] * h[std::size_t(k)];
          z[std::size_t(r_)] = s;
        }
        for (index_t k = 0; k < H; ++k) {
          const double ig = sig(z[std::size_t(k)]), fg = sig(z[std::size_t(H + k)]), gg = std::tanh(z[std::size_t(2 * H + k)]),
                       og = sig(z[std::size_t(3 * H + k)]);
          c[std::size_t(k)] = fg * c[std::size_t(k)] + ig * gg;
          h[std::size_t(k)] = og * std::tanh(c[std::size_t(k)]);
          out[std::size_t((b * T + t) * H + k)] = h[std::size_t(k)];
        }
      }
      for (index_t k = 0; k < H; ++k) {
        r.hn[std::size_t((l * B + b) * H + k)] = h[std::size_t(k)];
        r.cn[std::size_t((l * B + b) * H + k)] = c[std::size_t(k)];
      }
    }
    in = out;
    insz = H;
  }
  r.out = in;
  return r;
}

void require_close(const double* a, const std::vector<double>& b, const char* what) {
  for (std::size_t i = 0; i < b.size(); ++i) {
    INFO(what << " element " << i);
    REQUIRE(a[i] == Approx(b[i]).epsilon(1e-12).margin(1e-12));
  }
}
}  // namespace

TEST_CASE("lstm forward matches a plain-loop reference", "[autodiff][rnn]") {
  P::set_num_threads(2);
  const index_t I = 5;
  for (index_t L : {1, 2})
    for (index_t B : {1, 3})
      for (index_t T : {1, 7})
        for (index_t H : {4, 7})
          for (bool bf : {true, false})
            for (bool init : {false, true}) {
              INFO("L=" << L << " B=" << B << " T=" << T << " H=" << H << " batch_first=" << bf << " init=" << init);
              auto ls = make_layers(L, I, H, 20);
              auto xbf = gc::values<3, P>({B, T, I}, 5);
              ts::Tensor<double, ts::dyn_shape_t<3>, P> xin = bf ? xbf : ts::Tensor<double, ts::dyn_shape_t<3>, P>(T, B, I);
              if (!bf)
                for (index_t b = 0; b < B; ++b)
                  for (index_t t = 0; t < T; ++t)
                    for (index_t i = 0; i < I; ++i) xin(t, b, i) = xbf(b, t, i);
              V3 h0, c0;
              std::vector<double> h0v, c0v;
              if (init) {
                h0 = V3(gc::values<3, P>({L, B, H}, 6), false);
                c0 = V3(gc::values<3, P>({L, B, H}, 7), false);
                h0v.assign(h0.value().data(), h0.value().data() + h0.size());
                c0v.assign(c0.value().data(), c0.value().data() + c0.size());
              }
              auto res = ad::lstm(V3(xin, false), ls, ts::lstm_options{.num_layers = int(L), .batch_first = bf}, h0, c0);
              const auto ref = reference(std::vector<double>(xbf.data(), xbf.data() + xbf.size()), B, T, I, H, ls,
                                         init ? &h0v : nullptr, init ? &c0v : nullptr);
              if (bf) {
                REQUIRE(res.output.dims() == dims_t<3>{B, T, H});
                require_close(res.output.value().data(), ref.out, "output");
              } else {
                REQUIRE(res.output.dims() == dims_t<3>{T, B, H});
                std::vector<double> tm(ref.out.size());
                for (index_t b = 0; b < B; ++b)
                  for (index_t t = 0; t < T; ++t)
                    for (index_t k = 0; k < H; ++k) tm[std::size_t((t * B + b) * H + k)] = ref.out[std::size_t((b * T + t) * H + k)];
                require_close(res.output.value().data(), tm, "output");
              }
              REQUIRE(res.h_n.dims() == dims_t<3>{L, B, H});
              require_close(res.h_n.value().data(), ref.hn, "h_n");
              require_close(res.c_n.value().data(), ref.cn, "c_n");
            }
}

TEST_CASE("lstm gradients against finite differences", "[autodiff][rnn]") {
  P::set_num_threads(2);
  const index_t I = 5;
  struct cfg { index_t L, B, T, H; bool bf; };
  for (auto c : {cfg{1, 3, 7, 4, true}, cfg{2, 3, 7, 4, false}, cfg{2, 1, 1, 7, true}, cfg{1, 1, 7, 7, false}, cfg{2, 3, 1, 4, true}}) {
    INFO("L=" << c.L << " B=" << c.B << " T=" << c.T << " H=" << c.H << " batch_first=" << c.bf);
    auto ls = make_layers(c.L, I, c.H, 40);
    V3 x(gc::values<3, P>(c.bf ? dims_t<3>{c.B, c.T, I} : dims_t<3>{c.T, c.B, I}, 8), true);
    V3 h0(gc::values<3, P>({c.L, c.B, c.H}, 9, -0.5, 0.5), true);
    V3 c0(gc::values<3, P>({c.L, c.B, c.H}, 10, -0.5, 0.5), true);
    V3 k1(gc::values<3, P>(c.bf ? dims_t<3>{c.B, c.T, c.H} : dims_t<3>{c.T, c.B, c.H}, 11), false);
    V3 k2(gc::values<3, P>({c.L, c.B, c.H}, 12), false);
    V3 k3(gc::values<3, P>({c.L, c.B, c.H}, 13), false);
    const ts::lstm_options o{.num_layers = int(c.L), .batch_first = c.bf};
    auto loss = [&] {
      auto r = ad::lstm(x, ls, o, h0, c0);
      return ad::sum(r.output * k1) + ad::sum(r.h_n * k2) + ad::sum(r.c_n * k3);
    };
    for (auto& p : ls) gc::check(loss, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh);
    gc::check(loss, x, h0, c0);
    // zero initial state (no h0, c0)
    auto loss0 = [&] {
      auto r = ad::lstm(x, ls, o);
      return ad::sum(r.output * k1) + ad::sum(r.h_n * k2);
    };
    gc::check(loss0, x);
    for (auto& p : ls) gc::check(loss0, p.weight_ih, p.weight_hh, p.bias_hh);
  }
}

TEST_CASE("lstm dropout between layers: reproducible, training only, differentiable", "[autodiff][rnn]") {
  P::set_num_threads(2);
  const index_t B = 3, T = 7, I = 5, H = 4;
  auto ls = make_layers(2, I, H, 60);
  V3 x(gc::values<3, P>({B, T, I}, 14), true);
  const ts::lstm_options o{.num_layers = 2, .dropout = 0.4, .batch_first = true};
  ts::Rng r1(123), r2(123);
  auto a = ad::lstm(x, ls, o, {}, {}, &r1, true);
  auto b = ad::lstm(x, ls, o, {}, {}, &r2, true);
  for (index_t i = 0; i < a.output.size(); ++i) REQUIRE(a.output.value().data()[i] == b.output.value().data()[i]);
  auto e = ad::lstm(x, ls, o, {}, {}, &r1, false);  // evaluation: no dropout
  auto nodrop = ad::lstm(x, ls, ts::lstm_options{.num_layers = 2, .batch_first = true});
  for (index_t i = 0; i < e.output.size(); ++i) REQUIRE(e.output.value().data()[i] == nodrop.output.value().data()[i]);
  bool differs = false;
  for (index_t i = 0; i < a.output.size(); ++i) differs = differs || a.output.value().data()[i] != e.output.value().data()[i];
  REQUIRE(differs);
  REQUIRE_THROWS(ad::lstm(x, ls, o, {}, {}, nullptr, true));
  // with the same mask each time (a fresh Rng of the same seed), the gradient is exact
  V3 k1(gc::values<3, P>({B, T, H}, 15), false);
  auto loss = [&] {
    ts::Rng r(7);
    return ad::sum(ad::lstm(x, ls, o, {}, {}, &r, true).output * k1);
  };
  gc::check(loss, x, ls[0].weight_ih, ls[1].weight_hh);
}

TEST_CASE("select_last_step", "[autodiff][rnn]") {
  V3 y(gc::values<3, P>({3, 5, 4}, 16), true);
  auto s = ad::select_last_step(y);
  REQUIRE(s.dims() == dims_t<2>{3, 4});
  for (index_t n = 0; n < 3; ++n)
    for (index_t k = 0; k < 4; ++k) REQUIRE(s.value()(n, k) == y.value()(n, 4, k));
  V2 k(gc::values<2, P>({3, 4}, 17), false);
  gc::check([&] { return ad::sum(ad::select_last_step(y) * k); }, y);
}

// ---- cells ----

namespace {
struct cell_params {
  V2 w_ih, w_hh;
  V1 b_ih, b_hh;  // empty: no bias
};

cell_params make_cell(index_t G, index_t I, index_t H, int salt, bool bias) {
  cell_params p;
  p.w_ih = V2(gc::values<2, P>({G * H, I}, salt + 1, -0.6, 0.6), true);
  p.w_hh = V2(gc::values<2, P>({G * H, H}, salt + 2, -0.6, 0.6), true);
  if (bias) {
    p.b_ih = V1(gc::values<1, P>({G * H}, salt + 3, -0.5, 0.5), true);
    p.b_hh = V1(gc::values<1, P>({G * H}, salt + 4, -0.5, 0.5), true);
  }
  return p;
}

/// Row b of the two projections, plain loops: gi = W_ih x_b + b_ih, gh = W_hh h_b + b_hh (h null: zeros).
struct projections {
  std::vector<double> gi, gh;
};
template <class T>
projections project(const cell_params& p, const T* x, const T* h, index_t b, index_t I, index_t H, index_t G) {
  projections r{std::vector<double>(std::size_t(G * H)), std::vector<double>(std::size_t(G * H))};
  for (index_t q = 0; q < G * H; ++q) {
    double si = p.b_ih.defined() ? p.b_ih.value()(q) : 0.0, sh = p.b_hh.defined() ? p.b_hh.value()(q) : 0.0;
    for (index_t k = 0; k < I; ++k) si += p.w_ih.value()(q, k) * double(x[b * I + k]);
    if (h)
      for (index_t k = 0; k < H; ++k) sh += p.w_hh.value()(q, k) * double(h[b * H + k]);
    r.gi[std::size_t(q)] = si;
    r.gh[std::size_t(q)] = sh;
  }
  return r;
}

/// Plain-loop cells (libtorch's equations) over B rows; x [B, I], h and c [B, H] (null: zeros).
template <class T>
std::vector<double> ref_rnn(const cell_params& p, const T* x, const T* h, index_t B, index_t I, index_t H, bool relu) {
  std::vector<double> out(std::size_t(B * H));
  for (index_t b = 0; b < B; ++b) {
    const auto pr = project(p, x, h, b, I, H, 1);
    for (index_t k = 0; k < H; ++k) {
      const double z = pr.gi[std::size_t(k)] + pr.gh[std::size_t(k)];
      out[std::size_t(b * H + k)] = relu ? std::max(z, 0.0) : std::tanh(z);
    }
  }
  return out;
}
template <class T>
std::pair<std::vector<double>, std::vector<double>> ref_lstm(const cell_params& p, const T* x, const T* h, const T* c, index_t B,
                                                             index_t I, index_t H) {
  std::vector<double> ho(std::size_t(B * H)), co(std::size_t(B * H));
  for (index_t b = 0; b < B; ++b) {
    const auto pr = project(p, x, h, b, I, H, 4);
    auto z = [&](index_t q) { return pr.gi[std::size_t(q)] + pr.gh[std::size_t(q)]; };
    for (index_t k = 0; k < H; ++k) {
      const double ig = sig(z(k)), fg = sig(z(H + k)), gg = std::tanh(z(2 * H + k)), og = sig(z(3 * H + k));
      const double cp = c ? double(c[b * H + k]) : 0.0;
      const double cn = fg * cp + ig * gg;
      co[std::size_t(b * H + k)] = cn;
      ho[std::size_t(b * H + k)] = og * std::tanh(cn);
    }
  }
  return {ho, co};
}
template <class T>
std::vector<double> ref_gru(const cell_params& p, const T* x, const T* h, index_t B, index_t I, index_t H) {
  std::vector<double> out(std::size_t(B * H));
  for (index_t b = 0; b < B; ++b) {
    const auto pr = project(p, x, h, b, I, H, 3);
    for (index_t k = 0; k < H; ++k) {
      const double r = sig(pr.gi[std::size_t(k)] + pr.gh[std::size_t(k)]);
      const double z = sig(pr.gi[std::size_t(H + k)] + pr.gh[std::size_t(H + k)]);
      const double n = std::tanh(pr.gi[std::size_t(2 * H + k)] + r * pr.gh[std::size_t(2 * H + k)]);
      const double hp = h ? double(h[b * H + k]) : 0.0;
      out[std::size_t(b * H + k)] = (1 - z) * n + z * hp;
    }
  }
  return out;
}

/// The same parameters in float.
template <class Q>
struct float_params {
  ad::Var<float, 2, Q> w_ih, w_hh;
  ad::Var<float, 1, Q> b_ih, b_hh;
};
template <class Q, int R>
ad::Var<float, R, Q> to_float(const ad::Var<double, R, P>& v) {
  if (!v.defined()) return {};
  ts::Tensor<float, ts::dyn_shape_t<R>, Q> t(v.dims());
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = float(v.value().data()[i]);
  return ad::Var<float, R, Q>(std::move(t), true);
}
template <class Q>
float_params<Q> to_float(const cell_params& p) {
  return {to_float<Q>(p.w_ih), to_float<Q>(p.w_hh), to_float<Q>(p.b_ih), to_float<Q>(p.b_hh)};
}
/// The float parameters' values back in double (the reference runs on exactly the float inputs).
template <class Q>
cell_params widened(const float_params<Q>& f) {
  auto w = [](const auto& v) {
    using VD = ad::Var<double, std::remove_cvref_t<decltype(v)>::rank, P>;
    if (!v.defined()) return VD{};
    typename VD::tensor t(v.dims());
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = double(v.value().data()[i]);
    return VD(std::move(t), false);
  };
  return {w(f.w_ih), w(f.w_hh), w(f.b_ih), w(f.b_hh)};
}

template <class T>
void require_near(const T* a, const std::vector<double>& b, double tol, const char* what) {
  for (std::size_t i = 0; i < b.size(); ++i) {
    INFO(what << " element " << i);
    REQUIRE(double(a[i]) == Approx(b[i]).epsilon(tol).margin(tol));
  }
}

struct cell_size {
  index_t B, H;
};
constexpr cell_size cell_sizes[] = {{1, 3}, {7, 3}, {1, 33}, {7, 33}};
constexpr index_t cell_I = 5;
}  // namespace

TEST_CASE("rnn_cell, lstm_cell, gru_cell forward match plain loops (double)", "[autodiff][rnn][cell]") {
  P::set_num_threads(2);
  const index_t I = cell_I;
  for (auto sz : cell_sizes)
    for (bool with_state : {false, true})
      for (bool bias : {true, false}) {
        const index_t B = sz.B, H = sz.H;
        INFO("B=" << B << " H=" << H << " state=" << with_state << " bias=" << bias);
        V2 x(gc::values<2, P>({B, I}, 3), false);
        V2 h = with_state ? V2(gc::values<2, P>({B, H}, 4), false) : V2();
        V2 c = with_state ? V2(gc::values<2, P>({B, H}, 5), false) : V2();
        const double* hp = with_state ? h.value().data() : nullptr;
        const double* cp = with_state ? c.value().data() : nullptr;
        for (bool relu : {false, true}) {
          auto p = make_cell(1, I, H, 100, bias);
          auto y = ad::rnn_cell(x, h, p.w_ih, p.w_hh, p.b_ih, p.b_hh, relu ? ad::rnn_nonlinearity::relu : ad::rnn_nonlinearity::tanh);
          REQUIRE(y.dims() == dims_t<2>{B, H});
          require_near(y.value().data(), ref_rnn(p, x.value().data(), hp, B, I, H, relu), 1e-12, relu ? "rnn relu" : "rnn tanh");
        }
        {
          auto p = make_cell(4, I, H, 200, bias);
          auto s = ad::lstm_cell(x, h, c, p.w_ih, p.w_hh, p.b_ih, p.b_hh);
          REQUIRE(s.h.dims() == dims_t<2>{B, H});
          REQUIRE(s.c.dims() == dims_t<2>{B, H});
          const auto [rh, rc] = ref_lstm(p, x.value().data(), hp, cp, B, I, H);
          require_near(s.h.value().data(), rh, 1e-12, "lstm h");
          require_near(s.c.value().data(), rc, 1e-12, "lstm c");
        }
        {
          auto p = make_cell(3, I, H, 300, bias);
          auto y = ad::gru_cell(x, h, p.w_ih, p.w_hh, p.b_ih, p.b_hh);
          REQUIRE(y.dims() == dims_t<2>{B, H});
          require_near(y.value().data(), ref_gru(p, x.value().data(), hp, B, I, H), 1e-12, "gru");
        }
      }
}

TEMPLATE_TEST_CASE("cells in float match plain loops", "[autodiff][rnn][cell]", ts::cpu, ts::cpu_threads) {
  using Q = TestType;
  using F2 = ad::Var<float, 2, Q>;
  ts::cpu_threads::set_num_threads(2);
  const index_t I = cell_I;
  for (auto sz : cell_sizes) {
    const index_t B = sz.B, H = sz.H;
    INFO("B=" << B << " H=" << H);
    auto xf = to_float<Q>(V2(gc::values<2, P>({B, I}, 6), false));
    auto hf = to_float<Q>(V2(gc::values<2, P>({B, H}, 7), false));
    auto cf = to_float<Q>(V2(gc::values<2, P>({B, H}, 8), false));
    const float *x = xf.value().data(), *h = hf.value().data(), *c = cf.value().data();
    const double tol = 2e-5;  // float GEMM accumulation and the vectorised float tanh/sigmoid
    {
      auto f = to_float<Q>(make_cell(1, I, H, 400, true));
      F2 y = ad::rnn_cell(xf, hf, f.w_ih, f.w_hh, f.b_ih, f.b_hh);
      require_near(y.value().data(), ref_rnn(widened(f), x, h, B, I, H, false), tol, "rnn");
    }
    {
      auto f = to_float<Q>(make_cell(4, I, H, 500, true));
      auto s = ad::lstm_cell(xf, hf, cf, f.w_ih, f.w_hh, f.b_ih, f.b_hh);
      const auto [rh, rc] = ref_lstm(widened(f), x, h, c, B, I, H);
      require_near(s.h.value().data(), rh, tol, "lstm h");
      require_near(s.c.value().data(), rc, tol, "lstm c");
      // and a backward pass runs in float (its values are checked in double below)
      ad::sum(s.h * s.c).backward();
      REQUIRE(f.w_hh.has_grad());
    }
    {
      auto f = to_float<Q>(make_cell(3, I, H, 600, true));
      F2 y = ad::gru_cell(xf, hf, f.w_ih, f.w_hh, f.b_ih, f.b_hh);
      require_near(y.value().data(), ref_gru(widened(f), x, h, B, I, H), tol, "gru");
    }
  }
}

TEST_CASE("cell gradients against finite differences", "[autodiff][rnn][cell]") {
  P::set_num_threads(2);
  const index_t I = cell_I;
  for (auto sz : cell_sizes) {
    const index_t B = sz.B, H = sz.H;
    INFO("B=" << B << " H=" << H);
    V2 x(gc::values<2, P>({B, I}, 20), true);
    V2 h(gc::values<2, P>({B, H}, 21, -0.8, 0.8), true);
    V2 c(gc::values<2, P>({B, H}, 22, -0.8, 0.8), true);
    V2 k1(gc::values<2, P>({B, H}, 23), false);
    V2 k2(gc::values<2, P>({B, H}, 24), false);
    {  // rnn_cell
      for (bool relu : {false, true}) {
        INFO("relu " << relu);
        auto p = make_cell(1, I, H, 700, true);
        const auto nl = relu ? ad::rnn_nonlinearity::relu : ad::rnn_nonlinearity::tanh;
        gc::check([&] { return ad::sum(ad::rnn_cell(x, h, p.w_ih, p.w_hh, p.b_ih, p.b_hh, nl) * k1); }, x, h, p.w_ih, p.w_hh,
                  p.b_ih, p.b_hh);
        // zero state: W_hh's gradient is zero (libtorch's), the rest as usual
        gc::check([&] { return ad::sum(ad::rnn_cell(x, V2(), p.w_ih, p.w_hh, p.b_ih, p.b_hh, nl) * k1); }, x, p.w_ih, p.w_hh,
                  p.b_hh);
      }
    }
    {  // lstm_cell
      auto p = make_cell(4, I, H, 800, true);
      auto loss = [&] {
        auto s = ad::lstm_cell(x, h, c, p.w_ih, p.w_hh, p.b_ih, p.b_hh);
        return ad::sum(s.h * k1) + ad::sum(s.c * k2);
      };
      gc::check(loss, x, h, c, p.w_ih, p.w_hh, p.b_ih, p.b_hh);
      // only h' used; zero cell state; zero hidden state; no biases
      gc::check([&] { return ad::sum(ad::lstm_cell(x, h, V2(), p.w_ih, p.w_hh, p.b_ih, p.b_hh).h * k1); }, x, h, p.w_ih, p.b_ih);
      gc::check([&] { return ad::sum(ad::lstm_cell(x, V2(), c, p.w_ih, p.w_hh).c * k2); }, x, c, p.w_ih, p.w_hh);
    }
    {  // gru_cell
      auto p = make_cell(3, I, H, 900, true);
      gc::check([&] { return ad::sum(ad::gru_cell(x, h, p.w_ih, p.w_hh, p.b_ih, p.b_hh) * k1); }, x, h, p.w_ih, p.w_hh, p.b_ih,
                p.b_hh);
      gc::check([&] { return ad::sum(ad::gru_cell(x, V2(), p.w_ih, p.w_hh, p.b_ih, p.b_hh) * k1); }, x, p.w_ih, p.w_hh, p.b_ih,
                p.b_hh);
    }
  }
}

TEST_CASE("cells through several steps: gradients, and lstm_cell against the sequence lstm", "[autodiff][rnn][cell]") {
  P::set_num_threads(2);
  const index_t B = 7, T = 4, I = cell_I, H = 3;
  V3 xs(gc::values<3, P>({B, T, I}, 30), true);
  auto ls = make_layers(1, I, H, 31);
  auto& l0 = ls[0];
  auto step_x = [&](index_t t) {  // x[:, t, :] as its own differentiable Var
    auto flat = ad::reshape<2>(xs, dims_t<2>{B, T * I});
    V2 sel(gc::values<2, P>({T * I, I}, 0), false);
    auto& sv = sel.mutable_value();
    sv = 0.0;
    for (index_t i = 0; i < I; ++i) sv(t * I + i, i) = 1.0;
    return ad::matmul(flat, sel);
  };
  V2 k(gc::values<2, P>({B, H}, 32), false);
  // lstm_cell over T steps equals ad::lstm's output and final state
  ad::lstm_cell_state<double, P> s;
  std::vector<V2> hs;
  for (index_t t = 0; t < T; ++t) {
    s = ad::lstm_cell(step_x(t), s.h, s.c, l0.weight_ih, l0.weight_hh, l0.bias_ih, l0.bias_hh);
    hs.push_back(s.h);
  }
  auto seq = ad::lstm(xs, ls, ts::lstm_options{});
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t j = 0; j < H; ++j) REQUIRE(hs[std::size_t(t)].value()(b, j) == Approx(seq.output.value()(b, t, j)).epsilon(1e-12));
  for (index_t b = 0; b < B; ++b)
    for (index_t j = 0; j < H; ++j) REQUIRE(s.c.value()(b, j) == Approx(seq.c_n.value()(0, b, j)).epsilon(1e-12));
  // gradients through the unrolled steps of each cell
  auto lstm_loss = [&] {
    ad::lstm_cell_state<double, P> st;
    for (index_t t = 0; t < T; ++t) st = ad::lstm_cell(step_x(t), st.h, st.c, l0.weight_ih, l0.weight_hh, l0.bias_ih, l0.bias_hh);
    return ad::sum(st.h * k);
  };
  gc::check(lstm_loss, xs, l0.weight_hh, l0.bias_ih);
  auto g = make_cell(3, I, H, 33, true);
  auto gru_loss = [&] {
    V2 hh;
    for (index_t t = 0; t < T; ++t) hh = ad::gru_cell(step_x(t), hh, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
    return ad::sum(hh * k);
  };
  gc::check(gru_loss, xs, g.w_hh, g.b_hh);
  auto r = make_cell(1, I, H, 34, true);
  auto rnn_loss = [&] {
    V2 hh;
    for (index_t t = 0; t < T; ++t) hh = ad::rnn_cell(step_x(t), hh, r.w_ih, r.w_hh, r.b_ih, r.b_hh);
    return ad::sum(hh * k);
  };
  gc::check(rnn_loss, xs, r.w_hh, r.w_ih);
}

TEST_CASE("cells reject bad shapes, naming both shapes", "[autodiff][rnn][cell]") {
  using Catch::Contains;
  const index_t B = 7, I = 5, H = 3;
  V2 x(gc::values<2, P>({B, I}, 40), false);
  V2 h(gc::values<2, P>({B, H}, 41), false);
  auto p = make_cell(4, I, H, 42, true);
  V2 w_ih_bad(gc::values<2, P>({4 * H, 4}, 43), false);
  CHECK_THROWS_AS(ad::lstm_cell(x, h, h, w_ih_bad, p.w_hh, p.b_ih, p.b_hh), ts::shape_error);
  CHECK_THROWS_WITH(ad::lstm_cell(x, h, h, w_ih_bad, p.w_hh, p.b_ih, p.b_hh),
                    Contains("lstm_cell") && Contains("weight_ih [12, 4]") && Contains("[7, 5]"));
  V2 h_bad(gc::values<2, P>({6, H}, 44), false);
  CHECK_THROWS_WITH(ad::lstm_cell(x, h_bad, h, p.w_ih, p.w_hh), Contains("hidden state [6, 3]") && Contains("[7, 5]"));
  V2 c_bad(gc::values<2, P>({B, 4}, 45), false);
  CHECK_THROWS_WITH(ad::lstm_cell(x, h, c_bad, p.w_ih, p.w_hh), Contains("cell state [7, 4]") && Contains("[7, 5]"));
  V1 b_bad(gc::values<1, P>({11}, 46), false);
  CHECK_THROWS_WITH(ad::lstm_cell(x, h, h, p.w_ih, p.w_hh, b_bad, p.b_hh), Contains("bias_ih [11]") && Contains("[12, 3]"));
  CHECK_THROWS_WITH(ad::lstm_cell(x, h, h, p.w_ih, p.w_hh, p.b_ih, b_bad), Contains("bias_hh [11]") && Contains("[12, 3]"));
  // weight_hh of a GRU given to an LSTM cell: [9, 3] is not [4 * 3, 3]
  auto g = make_cell(3, I, H, 47, true);
  CHECK_THROWS_WITH(ad::lstm_cell(x, h, h, g.w_ih, g.w_hh), Contains("weight_hh [9, 3]") && Contains("[12, 3]"));
  CHECK_THROWS_WITH(ad::gru_cell(x, h, p.w_ih, p.w_hh), Contains("gru_cell") && Contains("weight_hh [12, 3]") && Contains("[9, 3]"));
  CHECK_THROWS_WITH(ad::gru_cell(x, h_bad, g.w_ih, g.w_hh), Contains("[6, 3]") && Contains("[7, 5]"));
  auto r = make_cell(1, I, H, 48, true);
  V2 x_bad(gc::values<2, P>({B, 6}, 49), false);
  CHECK_THROWS_WITH(ad::rnn_cell(x_bad, h, r.w_ih, r.w_hh), Contains("rnn_cell") && Contains("[3, 5]") && Contains("[7, 6]"));
  CHECK_NOTHROW(ad::rnn_cell(x, h, r.w_ih, r.w_hh));
}
