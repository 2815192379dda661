// ad::lstm against a plain-loop reference (forward), central finite differences in double (backward), dropout
// reproducibility; ad::select_last_step.
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
