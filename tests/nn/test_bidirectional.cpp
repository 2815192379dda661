// Bidirectional recurrences: nn::LSTM with .bidirectional = true against a per-step loop of PyTorch's formulas (the
// reverse direction over the reversed sequence, outputs [forward | reverse] along features, the next layer taking
// 2H inputs), h_n and c_n, gradients of the input and every parameter by central differences in double (c_n
// included), PyTorch's names and count, LastStep on a bidirectional output (PyTorch's out[:, -1]), and that the
// unidirectional LSTM is unchanged.
#include <tessera/nn/recurrent.hpp>
#include <tessera/nn/sequential.hpp>

#include "../autodiff/gradcheck.hpp"
#include "recurrence_reference.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using rref::kind;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
using BiDeep = nn::LSTM<3, 7, ts::lstm_options{.num_layers = 2, .batch_first = false, .bidirectional = true}>;
using BiWide = nn::LSTM<4, 33, ts::lstm_options{.bidirectional = true}>;  // batch_first by default here
using BiTiny = nn::LSTM<2, 1, ts::lstm_options{.bidirectional = true}>;

template <class T, class P>
void forward_all(index_t Tn, index_t N) {
  rref::check_forward<BiDeep, 3, 7, 2, 2, false, T, P>(kind::lstm, Tn, N);
  rref::check_forward<BiWide, 4, 33, 1, 2, true, T, P>(kind::lstm, Tn, N);
  rref::check_forward<BiTiny, 2, 1, 1, 2, true, T, P>(kind::lstm, Tn, N);
  // the unidirectional LSTM (ad::lstm) against the same loop
  rref::check_forward<nn::LSTM<3, 7, ts::lstm_options{.num_layers = 2}>, 3, 7, 2, 1, true, T, P>(kind::lstm, Tn, N);
}
}  // namespace

TEST_CASE("bidirectional LSTM forward against a per-step loop", "[nn][rnn][bidirectional]") {
  for (auto [Tn, N] : {std::pair<index_t, index_t>{1, 1}, {7, 3}, {2, 1}}) {
    INFO("T " << Tn << " N " << N);
    forward_all<double, ts::cpu>(Tn, N);
    forward_all<float, ts::cpu_threads>(Tn, N);
  }
  forward_all<float, ts::cpu>(7, 3);
  forward_all<double, ts::cpu_threads>(7, 3);
}

TEST_CASE("bidirectional LSTM: the reverse direction's h_n is its output at step 0", "[nn][rnn][bidirectional]") {
  ts::Rng rng(4);
  BiTiny::state<double, ts::cpu> st(rng);
  ad::Var<double, 3, ts::cpu> x(gc::values<3>({2, 5, 2}, 1), false);  // [N, T, I]
  nn::context ctx{false, &rng};
  const auto r = st.forward_with_state(x, ctx);
  const auto& y = r.output.value();  // [N, T, 2]
  for (index_t b = 0; b < 2; ++b) {
    CHECK(r.h_n.value()(0, b, 0) == y(b, 4, 0));  // forward: the last step
    CHECK(r.h_n.value()(1, b, 0) == y(b, 0, 1));  // reverse: step 0
    CHECK(y(b, 4, 1) != y(b, 0, 1));
  }
  // ad::lstm runs one direction: a bidirectional option is refused there, not silently ignored
  CHECK_THROWS_AS(ad::lstm(x, st.layers, ts::lstm_options{.bidirectional = true}), std::invalid_argument);
}

TEST_CASE("bidirectional LSTM gradients by central differences", "[nn][rnn][bidirectional]") {
  using P = ts::cpu_threads;
  using L = nn::LSTM<3, 4, ts::lstm_options{.num_layers = 2, .batch_first = false, .bidirectional = true}>;
  ts::Rng rng(9);
  L::state<double, P> st(rng);
  ad::Var<double, 3, P> x(gc::values<3, P>({3, 2, 3}, 1), true);
  ad::Var<double, 3, P> k1(gc::values<3, P>({3, 2, 8}, 2), false), k2(gc::values<3, P>({4, 2, 4}, 3), false),
      k3(gc::values<3, P>({4, 2, 4}, 4), false);
  nn::context ctx{true, &rng};
  auto loss = [&] {
    const auto r = st.forward_with_state(x, ctx);
    return ad::sum(r.output * k1) + ad::sum(r.h_n * k2) + ad::sum(r.c_n * k3);
  };
  gc::check(loss, x);
  std::vector<std::string> names;
  st.for_each_parameter("", [&](const std::string& name, auto& p) {
    INFO(name);
    names.push_back(name);
    gc::check(loss, p);
  });
  CHECK(names == std::vector<std::string>{"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse",
                                          "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse", "weight_ih_l1",
                                          "weight_hh_l1", "bias_ih_l1", "bias_hh_l1", "weight_ih_l1_reverse", "weight_hh_l1_reverse",
                                          "bias_ih_l1_reverse", "bias_hh_l1_reverse"});
}

TEST_CASE("LastStep on a bidirectional output and a bidirectional model", "[nn][rnn][bidirectional]") {
  using Net = nn::Sequential<Shape<dyn, 6, 3>, nn::LSTM<3, 5, ts::lstm_options{.bidirectional = true}>, nn::LastStep,
                             nn::Linear<10, 2>>;
  STATIC_REQUIRE(Net::shapes_fit);
  STATIC_REQUIRE(std::is_same_v<Net::output_shape, Shape<dyn, 2>>);
  STATIC_REQUIRE(std::is_same_v<BiDeep::output<Shape<4, dyn, 3>>, Shape<4, dyn, 14>>);
  STATIC_REQUIRE(!BiDeep::accepts<Shape<4, dyn, 2>>);
  Net net(3);
  std::size_t count = 0;
  net.for_each_parameter([&](const std::string&, auto& v) { count += std::size_t(v.size()); });
  CHECK(count == 2 * (20 * 3 + 20 * 5 + 40) + 22);  // PyTorch: nn.LSTM(3, 5, bidirectional=True) + nn.Linear(10, 2)

  // LastStep = out[:, -1]: the forward direction's last state and the reverse direction's output at the last step
  ts::Rng rng(2);
  BiTiny::state<double, ts::cpu> st(rng);
  ad::Var<double, 3, ts::cpu> x(gc::values<3>({3, 4, 2}, 5), true);
  nn::context ctx{false, &rng};
  const auto y = st.forward(x, ctx);
  nn::LastStep::state<double, ts::cpu> last(rng);
  const auto z = last.forward(y, ctx);
  REQUIRE(z.dims() == ts::dims_t<2>{3, 2});
  for (index_t b = 0; b < 3; ++b)
    for (index_t j = 0; j < 2; ++j) CHECK(z.value()(b, j) == y.value()(b, 3, j));
  // and gradients flow through it into both directions
  ad::sum(z).backward();
  st.for_each_parameter("", [&](const std::string& n, auto& v) {
    INFO(n);
    CHECK(v.has_grad());
  });
}
