// ad::recurrence (GRU, RNN tanh / relu, bidirectional LSTM) on the cuda policy against the same operation on
// cpu_threads (whose values and gradients test_gru_rnn and test_bidirectional check against loops and finite
// differences): output, h_n, c_n and the gradients of the input and every parameter, at odd sizes, batch-first and
// time-major, one and two layers, one and two directions, with and without biases, with dropout between layers (the
// same seed draws the same mask on both policies), from zero and from given initial states h0 / c0 (their gradients
// compared too), in float and double; a Sequential with nn::Linear on the [N, T, F] sequence output.
// Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <string>
#include <tessera/autodiff/recurrence_ops.hpp>
#include <type_traits>
#include <tessera/nn/recurrent.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dims_t;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {

/// Deterministic values in [-1, 1), varied by salt.
template <class T, int R>
ts::Tensor<T, ts::dyn_shape_t<R>> values(const dims_t<R>& d, int salt) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(double((i * 7919 + salt * 104729 + 17) % 1000) / 500.0 - 1.0);
  return t;
}

using cuda_test::require_close;

struct rec_case {
  ad::recurrence_kind kind;
  index_t B, T, I, H;
  int layers;
  bool bidirectional, batch_first, bias;
  double dropout;
  bool initial_state = false;  ///< start from h0 (and c0 for the LSTM) that require gradients
};

template <class T>
struct rec_run {
  ts::Tensor<T, ts::dyn_shape_t<3>> out, hn, cn, gx, gh0, gc0;
  std::vector<ts::Tensor<T, ts::dyn_shape_t<2>>> gw;
  std::vector<ts::Tensor<T, ts::dyn_shape_t<1>>> gb;
};

/// recurrence on policy P; loss = sum(out * c1) + sum(h_n * c2) (+ sum(c_n * c3)).
template <class T, class P>
rec_run<T> run(const rec_case& k) {
  using V3 = ad::Var<T, 3, P>;
  const dims_t<3> xd = k.batch_first ? dims_t<3>{k.B, k.T, k.I} : dims_t<3>{k.T, k.B, k.I};
  V3 x(ts::to<P>(values<T, 3>(xd, 1)), true);
  const index_t G = ad::recurrence_gates(k.kind), D = k.bidirectional ? 2 : 1;
  std::vector<ad::recurrence_params<T, P>> layers;
  for (int l = 0; l < k.layers; ++l)
    for (index_t d = 0; d < D; ++d) {
      const index_t in = l == 0 ? k.I : D * k.H;
      const int s = int(l * D + d);
      auto scaled = [&](auto t) {  // weights around 1/sqrt(H), as the layers initialise them
        for (index_t i = 0; i < t.size(); ++i) t.data()[i] *= T(0.6);
        return t;
      };
      ad::recurrence_params<T, P> p;
      p.weight_ih = ad::Var<T, 2, P>(ts::to<P>(scaled(values<T, 2>({G * k.H, in}, 10 + s))), true);
      p.weight_hh = ad::Var<T, 2, P>(ts::to<P>(scaled(values<T, 2>({G * k.H, k.H}, 20 + s))), true);
      if (k.bias) {
        p.bias_ih = ad::Var<T, 1, P>(ts::to<P>(values<T, 1>({G * k.H}, 30 + s)), true);
        p.bias_hh = ad::Var<T, 1, P>(ts::to<P>(values<T, 1>({G * k.H}, 40 + s)), true);
      }
      layers.push_back(p);
    }
  ts::Rng rng(5);
  const ad::recurrence_options o{k.layers, k.batch_first, k.dropout, k.bidirectional};
  const dims_t<3> sd{k.layers * D, k.B, k.H};
  V3 h0, c0;
  if (k.initial_state) {
    h0 = V3(ts::to<P>(values<T, 3>(sd, 61)), true);
    if (k.kind == ad::recurrence_kind::lstm) c0 = V3(ts::to<P>(values<T, 3>(sd, 62)), true);
  }
  auto r = ad::recurrence(x, layers, k.kind, o, h0, c0, &rng, k.dropout > 0);
  auto c1 = V3(ts::to<P>(values<T, 3>(r.output.dims(), 51)), false);
  auto c2 = V3(ts::to<P>(values<T, 3>(r.h_n.dims(), 52)), false);
  const auto loss = ad::sum(r.output * c1) + ad::sum(r.h_n * c2);
  if (r.c_n.defined()) (loss + ad::sum(r.c_n * V3(ts::to<P>(values<T, 3>(r.c_n.dims(), 53)), false))).backward();
  else loss.backward();
  rec_run<T> res;
  res.out = ts::to<ts::cpu>(r.output.value());
  res.hn = ts::to<ts::cpu>(r.h_n.value());
  if (r.c_n.defined()) res.cn = ts::to<ts::cpu>(r.c_n.value());
  res.gx = ts::to<ts::cpu>(x.grad());
  if (h0.defined()) res.gh0 = ts::to<ts::cpu>(h0.grad());
  if (c0.defined()) res.gc0 = ts::to<ts::cpu>(c0.grad());
  for (auto& p : layers) {
    res.gw.push_back(ts::to<ts::cpu>(p.weight_ih.grad()));
    res.gw.push_back(ts::to<ts::cpu>(p.weight_hh.grad()));
    if (k.bias) {
      res.gb.push_back(ts::to<ts::cpu>(p.bias_ih.grad()));
      res.gb.push_back(ts::to<ts::cpu>(p.bias_hh.grad()));
    }
  }
  return res;
}

template <class T>
void check(const rec_case& k, double rel) {
  static const char* kinds[] = {"gru", "rnn tanh", "rnn relu", "lstm"};
  const std::string name = std::string(sizeof(T) == 4 ? "float " : "double ") + kinds[int(k.kind)] + " B=" + std::to_string(k.B) +
                           " T=" + std::to_string(k.T) + " I=" + std::to_string(k.I) + " H=" + std::to_string(k.H) +
                           " layers=" + std::to_string(k.layers) + (k.bidirectional ? " bidirectional" : "") +
                           (k.batch_first ? " batch-first" : " time-major") + (k.bias ? "" : " no bias") +
                           (k.dropout > 0 ? " dropout" : "") + (k.initial_state ? " from h0" : "");
  const auto h = run<T, ts::cpu_threads>(k);
  const auto d = run<T, ts::cuda>(k);
  require_close(h.out, d.out, name + ": output", rel);
  require_close(h.hn, d.hn, name + ": h_n", rel);
  if (k.kind == ad::recurrence_kind::lstm) require_close(h.cn, d.cn, name + ": c_n", rel);
  require_close(h.gx, d.gx, name + ": gradient of x", rel);
  if (k.initial_state) require_close(h.gh0, d.gh0, name + ": gradient of h0", rel);
  if (k.initial_state && k.kind == ad::recurrence_kind::lstm) require_close(h.gc0, d.gc0, name + ": gradient of c0", rel);
  for (std::size_t i = 0; i < h.gw.size(); ++i) require_close(h.gw[i], d.gw[i], name + ": weight gradient " + std::to_string(i), rel);
  for (std::size_t i = 0; i < h.gb.size(); ++i) require_close(h.gb[i], d.gb[i], name + ": bias gradient " + std::to_string(i), rel);
}

const std::vector<rec_case> cases = {
    {ad::recurrence_kind::gru, 3, 7, 5, 33, 2, true, false, true, 0.0},
    {ad::recurrence_kind::gru, 1, 1, 3, 1, 1, false, true, false, 0.0},
    {ad::recurrence_kind::gru, 4, 6, 3, 7, 2, false, true, true, 0.3},
    {ad::recurrence_kind::rnn_tanh, 3, 7, 5, 33, 2, true, true, true, 0.0},
    {ad::recurrence_kind::rnn_relu, 2, 5, 4, 7, 1, true, false, false, 0.0},
    {ad::recurrence_kind::lstm, 3, 7, 5, 33, 2, true, false, true, 0.0},
    {ad::recurrence_kind::lstm, 2, 4, 3, 7, 2, true, true, true, 0.4},
    {ad::recurrence_kind::gru, 3, 7, 5, 33, 2, true, false, true, 0.0, true},
    {ad::recurrence_kind::gru, 1, 1, 3, 1, 1, false, true, false, 0.0, true},
    {ad::recurrence_kind::rnn_tanh, 3, 7, 5, 33, 2, true, true, true, 0.0, true},
    {ad::recurrence_kind::rnn_relu, 2, 5, 4, 7, 1, false, false, false, 0.0, true},
    {ad::recurrence_kind::lstm, 3, 7, 5, 33, 2, true, false, true, 0.0, true},
};

}  // namespace

TEST_CASE("cuda recurrence: GRU, RNN and bidirectional LSTM match cpu_threads", "[cuda][rnn]") {
  for (const auto& k : cases) {
    check<double>(k, 1e-9);
    check<float>(k, 2e-4);
  }
}

TEST_CASE("cuda recurrence: nn::GRU and nn::RNN layers run on the cuda policy", "[cuda][rnn]") {
  using Net = nn::Sequential<Shape<dyn, 6, 3>, nn::GRU<3, 8, ts::gru_options{.batch_first = true, .bidirectional = true}>,
                             nn::LastStep, nn::Linear<16, 2>>;
  typename Net::template on<ts::cpu_threads> host(4);
  typename Net::template on<ts::cuda> dev(4);  // the same seed: the same parameters
  ts::Tensor<float, Shape<dyn, 6, 3>> x(5);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 13) / 13.0f - 0.5f;
  require_close(host.forward(x).value(), dev.forward(x).value(), "GRU model forward", 1e-4);
  ts::Rng rng(1);
  nn::RNN<3, 4, ts::rnn_options{.nonlinearity = ad::rnn_nonlinearity::relu}>::state<float, ts::cuda> rnn(rng);
  ad::Var<float, 3, ts::cuda> xs(ts::to<ts::cuda>(values<float, 3>({5, 2, 3}, 7)), false);
  nn::context ctx{false, nullptr};
  CHECK(rnn.forward_with_state(xs, ctx).h_n.dims() == dims_t<3>{1, 2, 4});
  ad::Var<float, 3, ts::cuda> h0(ts::to<ts::cuda>(values<float, 3>({1, 2, 4}, 8)), false);
  CHECK(rnn.forward_with_state(xs, ctx, h0).h_n.dims() == dims_t<3>{1, 2, 4});
  // nn::Linear (and its fused ReLU) on the [N, T, F] output of a sequence layer
  using Tagger = nn::Sequential<Shape<dyn, 6, 3>, nn::GRU<3, 8, ts::gru_options{.batch_first = true}>, nn::Linear<8, 5>, nn::ReLU,
                                nn::Linear<5, 2>>;
  static_assert(std::is_same_v<Tagger::output_shape, Shape<dyn, 6, 2>>);
  typename Tagger::template on<ts::cpu_threads> th(6);
  typename Tagger::template on<ts::cuda> td(6);
  require_close(th.forward(x).value(), td.forward(x).value(), "GRU -> Linear [N, T, F] forward", 1e-4);
}
