// Initial states of the sequence layers (PyTorch's forward(input, h0) and forward(input, (h0, c0))): nn::GRU, nn::RNN
// and nn::LSTM (unidirectional through ad::lstm, bidirectional through ad::recurrence) from a non-zero h0 (and c0)
// against the plain per-step loop of recurrence_reference.hpp (multi-layer, bidirectional, batch_first, odd sizes,
// float and double, cpu and cpu_threads); gradients of h0, c0, the input and every parameter by central differences
// in double; an empty Var meaning zeros; and the shape errors naming both shapes.
#include <tessera/nn/recurrent.hpp>

#include "../autodiff/gradcheck.hpp"
#include "recurrence_reference.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using rref::kind;
using ts::index_t;

namespace {
constexpr auto relu = ad::rnn_nonlinearity::relu;

/// Runs Layer from h0 (and c0 for the LSTM) on [T, N, I] ([N, T, I] when batch_first) and compares output, h_n and
/// c_n with the reference loop started from the same states.
template <class Layer, int I, int H, int L, int D, bool BatchFirst, class T, class P>
void check_from_state(kind k, index_t Tn, index_t N) {
  ts::Rng rng(5);
  typename Layer::template state<T, P> st(rng);
  const auto ps = rref::read_params(st);
  std::vector<double> xt(std::size_t(Tn * N * I)), h0(std::size_t(L * D * N * H)), c0;
  ts::Tensor<T, ts::dyn_shape_t<3>, ts::cpu> xh(BatchFirst ? ts::dims_t<3>{N, Tn, I} : ts::dims_t<3>{Tn, N, I});
  for (index_t t = 0; t < Tn; ++t)
    for (index_t b = 0; b < N; ++b)
      for (index_t j = 0; j < I; ++j) {
        const double v = rref::value((t * N + b) * I + j, 3);
        xt[std::size_t((t * N + b) * I + j)] = v;
        xh.data()[BatchFirst ? (b * Tn + t) * I + j : (t * N + b) * I + j] = T(v);
      }
  const ts::dims_t<3> sd{L * D, N, H};
  ts::Tensor<T, ts::dyn_shape_t<3>, ts::cpu> h0h(sd), c0h(sd);
  for (index_t i = 0; i < L * D * N * H; ++i) {
    h0[std::size_t(i)] = 0.9 * rref::value(i, 8);  // non-zero, both signs
    h0h.data()[i] = T(h0[std::size_t(i)]);
  }
  if (k == kind::lstm) {
    c0.resize(h0.size());
    for (index_t i = 0; i < L * D * N * H; ++i) {
      c0[std::size_t(i)] = 1.5 * rref::value(i, 9);
      c0h.data()[i] = T(c0[std::size_t(i)]);
    }
  }
  const auto ref = rref::forward(k, xt, Tn, N, I, H, L, D, ps, h0, c0);
  ad::Var<T, 3, P> x(ts::to<P>(xh), false), vh0(ts::to<P>(h0h), false), vc0(ts::to<P>(c0h), false);
  nn::context ctx{false, &rng};
  ad::recurrence_result<T, P> r;
  if constexpr (requires { st.forward_with_state(x, ctx, vh0, vc0); }) r = st.forward_with_state(x, ctx, vh0, vc0);
  else r = st.forward_with_state(x, ctx, vh0);
  REQUIRE(r.output.dims() == (BatchFirst ? ts::dims_t<3>{N, Tn, D * H} : ts::dims_t<3>{Tn, N, D * H}));
  REQUIRE(r.h_n.dims() == sd);
  const auto out = ts::to<ts::cpu>(r.output.value());
  const auto hn = ts::to<ts::cpu>(r.h_n.value());
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
    const auto cn = ts::to<ts::cpu>(r.c_n.value());
    for (index_t i = 0; i < cn.size(); ++i) {
      INFO("c_n element " << i);
      CHECK(double(cn.data()[i]) == Approx(ref.cn[std::size_t(i)]).epsilon(tol).margin(tol));
    }
  }
  // the same states through a reference started from zeros differ (the states are used at all)
  const auto ref0 = rref::forward(k, xt, Tn, N, I, H, L, D, ps);
  double diff = 0;
  for (std::size_t i = 0; i < ref0.out.size(); ++i) diff += std::abs(ref0.out[i] - ref.out[i]);
  CHECK(diff > 1e-3);
}

using GruDeep = nn::GRU<3, 7, ts::gru_options{.num_layers = 2, .bidirectional = true}>;
using GruWide = nn::GRU<4, 33, ts::gru_options{.batch_first = true}>;
using GruNoBias = nn::GRU<3, 5, ts::gru_options{.num_layers = 2, .bias = false, .batch_first = true, .bidirectional = true}>;
using RnnDeepRelu = nn::RNN<3, 7, ts::rnn_options{.num_layers = 2, .nonlinearity = relu, .bidirectional = true}>;
using RnnWide = nn::RNN<4, 33, ts::rnn_options{.batch_first = true}>;
using RnnTiny = nn::RNN<2, 1>;
using LstmBi = nn::LSTM<3, 7, ts::lstm_options{.num_layers = 2, .batch_first = false, .bidirectional = true}>;
using LstmUni = nn::LSTM<4, 5, ts::lstm_options{.num_layers = 2}>;

template <class T, class P>
void forward_all(index_t Tn, index_t N) {
  check_from_state<GruDeep, 3, 7, 2, 2, false, T, P>(kind::gru, Tn, N);
  check_from_state<GruWide, 4, 33, 1, 1, true, T, P>(kind::gru, Tn, N);
  check_from_state<GruNoBias, 3, 5, 2, 2, true, T, P>(kind::gru, Tn, N);
  check_from_state<RnnDeepRelu, 3, 7, 2, 2, false, T, P>(kind::rnn_relu, Tn, N);
  check_from_state<RnnWide, 4, 33, 1, 1, true, T, P>(kind::rnn_tanh, Tn, N);
  check_from_state<RnnTiny, 2, 1, 1, 1, false, T, P>(kind::rnn_tanh, Tn, N);
  check_from_state<LstmBi, 3, 7, 2, 2, false, T, P>(kind::lstm, Tn, N);
  check_from_state<LstmUni, 4, 5, 2, 1, true, T, P>(kind::lstm, Tn, N);
}

/// h0 (c0), the input and every parameter by central differences; loss = sum(out * k1) + sum(h_n * k2) (+ c_n * k3).
template <class Layer, bool BatchFirst, bool Lstm, class P>
void gradcheck_from_state(index_t Tn, index_t N, int I, int LD, int H, int DH) {
  ts::Rng rng(13);
  typename Layer::template state<double, P> st(rng);
  const ts::dims_t<3> xd = BatchFirst ? ts::dims_t<3>{N, Tn, I} : ts::dims_t<3>{Tn, N, I};
  const ts::dims_t<3> od = BatchFirst ? ts::dims_t<3>{N, Tn, DH} : ts::dims_t<3>{Tn, N, DH};
  const ts::dims_t<3> sd{LD, N, H};
  ad::Var<double, 3, P> x(gc::values<3, P>(xd, 1), true), h0(gc::values<3, P>(sd, 4), true), c0(gc::values<3, P>(sd, 5), true);
  ad::Var<double, 3, P> k1(gc::values<3, P>(od, 2), false), k2(gc::values<3, P>(sd, 3), false), k3(gc::values<3, P>(sd, 6), false);
  nn::context ctx{false, &rng};
  auto loss = [&] {
    if constexpr (Lstm) {
      const auto r = st.forward_with_state(x, ctx, h0, c0);
      return ad::sum(r.output * k1) + ad::sum(r.h_n * k2) + ad::sum(r.c_n * k3);
    } else {
      const auto r = st.forward_with_state(x, ctx, h0);
      return ad::sum(r.output * k1) + ad::sum(r.h_n * k2);
    }
  };
  {
    INFO("h0");
    gc::check(loss, h0);
  }
  if constexpr (Lstm) {
    INFO("c0");
    gc::check(loss, c0);
  }
  gc::check(loss, x);
  st.for_each_parameter("", [&](const std::string& name, auto& p) {
    INFO(name);
    gc::check(loss, p);
  });
}
}  // namespace

TEST_CASE("GRU, RNN and LSTM from initial states against per-step loops", "[nn][rnn][initial_state]") {
  for (auto [Tn, N] : {std::pair<index_t, index_t>{1, 1}, {7, 3}, {2, 1}}) {
    INFO("T " << Tn << " N " << N);
    forward_all<double, ts::cpu>(Tn, N);
    forward_all<float, ts::cpu_threads>(Tn, N);
  }
  forward_all<float, ts::cpu>(7, 3);
  forward_all<double, ts::cpu_threads>(7, 3);
}

TEST_CASE("gradients of the initial states by central differences", "[nn][rnn][initial_state]") {
  gradcheck_from_state<nn::GRU<3, 4, ts::gru_options{.num_layers = 2, .bidirectional = true}>, false, false, ts::cpu_threads>(
      3, 2, 3, 4, 4, 8);
  gradcheck_from_state<nn::GRU<2, 3, ts::gru_options{.bias = false, .batch_first = true}>, true, false, ts::cpu>(1, 2, 2, 1, 3, 3);
  gradcheck_from_state<nn::RNN<3, 4, ts::rnn_options{.num_layers = 2, .bidirectional = true}>, false, false, ts::cpu>(3, 2, 3, 4,
                                                                                                                     4, 8);
  gradcheck_from_state<nn::RNN<2, 3, ts::rnn_options{.nonlinearity = relu, .batch_first = true}>, true, false, ts::cpu_threads>(
      4, 1, 2, 1, 3, 3);
  gradcheck_from_state<nn::LSTM<3, 4, ts::lstm_options{.num_layers = 2, .bidirectional = true}>, true, true, ts::cpu_threads>(
      3, 2, 3, 4, 4, 8);
  gradcheck_from_state<nn::LSTM<2, 3, ts::lstm_options{.batch_first = false, .bidirectional = true}>, false, true, ts::cpu>(
      1, 2, 2, 2, 3, 6);
}

TEST_CASE("an empty initial state is the zero state", "[nn][rnn][initial_state]") {
  ts::Rng rng(3);
  nn::GRU<3, 5, ts::gru_options{.bidirectional = true}>::state<double, ts::cpu> st(rng);
  nn::context ctx{false, &rng};
  ad::Var<double, 3, ts::cpu> x(gc::values<3>({4, 2, 3}, 1), false);
  ts::Tensor<double, ts::dyn_shape_t<3>, ts::cpu> zh(ts::dims_t<3>{2, 2, 5});
  for (index_t i = 0; i < zh.size(); ++i) zh.data()[i] = 0.0;
  ad::Var<double, 3, ts::cpu> zeros(zh, false);
  const auto a = st.forward_with_state(x, ctx, {});
  const auto b = st.forward_with_state(x, ctx, zeros);
  for (index_t i = 0; i < a.output.value().size(); ++i) CHECK(a.output.value().data()[i] == b.output.value().data()[i]);
  for (index_t i = 0; i < a.h_n.value().size(); ++i) CHECK(a.h_n.value().data()[i] == b.h_n.value().data()[i]);
}

TEST_CASE("initial states of the wrong shape name both shapes", "[nn][rnn][initial_state]") {
  ts::Rng rng(3);
  nn::context ctx{false, &rng};
  ad::Var<double, 3, ts::cpu> x(gc::values<3>({4, 2, 3}, 1), false);
  ad::Var<double, 3, ts::cpu> bad(gc::values<3>({1, 2, 5}, 2), false);
  nn::GRU<3, 5, ts::gru_options{.bidirectional = true}>::state<double, ts::cpu> gru(rng);
  CHECK_THROWS_AS(gru.forward_with_state(x, ctx, bad), ts::shape_error);
  const auto msg = gc::message_of([&] { gru.forward_with_state(x, ctx, bad); });
  CHECK(msg.find("[1, 2, 5]") != std::string::npos);
  CHECK(msg.find("[2, 2, 5]") != std::string::npos);
  nn::RNN<3, 5, ts::rnn_options{.num_layers = 2}>::state<double, ts::cpu> rnn(rng);
  CHECK_THROWS_AS(rnn.forward_with_state(x, ctx, bad), ts::shape_error);
  nn::LSTM<3, 5, ts::lstm_options{.batch_first = false, .bidirectional = true}>::state<double, ts::cpu> bi(rng);
  const auto msg_c = gc::message_of([&] { bi.forward_with_state(x, ctx, {}, bad); });
  CHECK(msg_c.find("c0 [1, 2, 5]") != std::string::npos);
  CHECK(msg_c.find("[2, 2, 5]") != std::string::npos);
  nn::LSTM<3, 5, ts::lstm_options{.num_layers = 2, .batch_first = false}>::state<double, ts::cpu> uni(rng);
  const auto msg_u = gc::message_of([&] { uni.forward_with_state(x, ctx, bad); });
  CHECK(msg_u.find("[1, 2, 5]") != std::string::npos);
  CHECK(msg_u.find("[2, 2, 5]") != std::string::npos);
  // c0 on a recurrence without a cell state
  ad::Var<double, 3, ts::cpu> h0(gc::values<3>({2, 2, 5}, 2), false);
  CHECK_THROWS_AS(ad::recurrence(x, gru.layers, ad::recurrence_kind::gru, {.bidirectional = true}, h0, h0), std::invalid_argument);
}
