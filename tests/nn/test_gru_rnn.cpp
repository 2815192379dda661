// nn::GRU and nn::RNN (ad::recurrence): forward against plain per-step loops of PyTorch's formulas (multi-layer,
// batch_first, bidirectional, tanh and relu, no bias, odd sizes, float and double, cpu and cpu_threads), h_n,
// gradients of the input and every parameter by central differences in double, dropout between layers in training
// only, PyTorch's parameter names, count and initialisation range, static shapes, and the shape errors.
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
constexpr auto relu = ad::rnn_nonlinearity::relu;

using GruDeep = nn::GRU<3, 7, ts::gru_options{.num_layers = 2, .bidirectional = true}>;
using GruTiny = nn::GRU<5, 1>;
using GruWide = nn::GRU<4, 33, ts::gru_options{.batch_first = true}>;
using GruNoBias = nn::GRU<3, 5, ts::gru_options{.num_layers = 2, .bias = false, .batch_first = true, .bidirectional = true}>;
using RnnDeepRelu = nn::RNN<3, 7, ts::rnn_options{.num_layers = 2, .nonlinearity = relu, .bidirectional = true}>;
using RnnWide = nn::RNN<4, 33, ts::rnn_options{.batch_first = true}>;
using RnnTinyRelu = nn::RNN<2, 1, ts::rnn_options{.nonlinearity = relu, .bias = false}>;

template <class T, class P>
void forward_all(index_t Tn, index_t N) {
  rref::check_forward<GruDeep, 3, 7, 2, 2, false, T, P>(kind::gru, Tn, N);
  rref::check_forward<GruTiny, 5, 1, 1, 1, false, T, P>(kind::gru, Tn, N);
  rref::check_forward<GruWide, 4, 33, 1, 1, true, T, P>(kind::gru, Tn, N);
  rref::check_forward<GruNoBias, 3, 5, 2, 2, true, T, P>(kind::gru, Tn, N);
  rref::check_forward<RnnDeepRelu, 3, 7, 2, 2, false, T, P>(kind::rnn_relu, Tn, N);
  rref::check_forward<RnnWide, 4, 33, 1, 1, true, T, P>(kind::rnn_tanh, Tn, N);
  rref::check_forward<RnnTinyRelu, 2, 1, 1, 1, false, T, P>(kind::rnn_relu, Tn, N);
}

/// Every parameter and the input by central differences; loss = sum(out * k1) + sum(h_n * k2).
template <class Layer, bool BatchFirst>
void gradcheck_layer(index_t Tn, index_t N, int I, int LD, int H, int DH) {
  using P = ts::cpu_threads;
  ts::Rng rng(11);
  typename Layer::template state<double, P> st(rng);
  const ts::dims_t<3> xd = BatchFirst ? ts::dims_t<3>{N, Tn, I} : ts::dims_t<3>{Tn, N, I};
  ad::Var<double, 3, P> x(gc::values<3, P>(xd, 1), true);
  const ts::dims_t<3> od = BatchFirst ? ts::dims_t<3>{N, Tn, DH} : ts::dims_t<3>{Tn, N, DH};
  ad::Var<double, 3, P> k1(gc::values<3, P>(od, 2), false), k2(gc::values<3, P>({LD, N, H}, 3), false);
  nn::context ctx{true, &rng};  // dropout 0: training changes nothing
  auto loss = [&] {
    const auto r = st.forward_with_state(x, ctx);
    return ad::sum(r.output * k1) + ad::sum(r.h_n * k2);
  };
  gc::check(loss, x);
  int n = 0;
  st.for_each_parameter("", [&](const std::string& name, auto& p) {
    INFO(name);
    gc::check(loss, p);
    ++n;
  });
  CHECK(n > 0);
}
}  // namespace

TEST_CASE("GRU and RNN forward against per-step loops", "[nn][rnn][gru]") {
  for (auto [Tn, N] : {std::pair<index_t, index_t>{1, 1}, {7, 3}, {2, 1}}) {
    INFO("T " << Tn << " N " << N);
    forward_all<double, ts::cpu>(Tn, N);
    forward_all<float, ts::cpu_threads>(Tn, N);
  }
  forward_all<float, ts::cpu>(7, 3);
  forward_all<double, ts::cpu_threads>(7, 3);
}

TEST_CASE("GRU and RNN gradients by central differences", "[nn][rnn][gru]") {
  gradcheck_layer<nn::GRU<3, 4, ts::gru_options{.num_layers = 2, .bidirectional = true}>, false>(3, 2, 3, 4, 4, 8);
  gradcheck_layer<nn::GRU<2, 3, ts::gru_options{.bias = false, .batch_first = true}>, true>(4, 3, 2, 1, 3, 3);
  gradcheck_layer<nn::GRU<2, 3>, false>(1, 2, 2, 1, 3, 3);  // one step: W_hh's gradient is zero
  gradcheck_layer<nn::RNN<3, 4, ts::rnn_options{.num_layers = 2, .bidirectional = true}>, false>(3, 2, 3, 4, 4, 8);
  gradcheck_layer<nn::RNN<2, 5, ts::rnn_options{.nonlinearity = relu, .batch_first = true, .bidirectional = true}>, true>(4, 2, 2, 2,
                                                                                                                          5, 10);
}

TEST_CASE("GRU and RNN dropout between layers in training only", "[nn][rnn][gru]") {
  using Deep = nn::GRU<3, 6, ts::gru_options{.num_layers = 2, .dropout = 0.5}>;
  using Shallow = nn::RNN<3, 6, ts::rnn_options{.dropout = 0.5}>;  // one layer: no layer to drop between
  ts::Rng rng(5);
  Deep::state<double, ts::cpu> deep(rng);
  Shallow::state<double, ts::cpu> shallow(rng);
  ad::Var<double, 3, ts::cpu> x(gc::values<3>({4, 2, 3}, 1), false);
  nn::context eval{false, &rng}, train{true, &rng};
  auto same = [](const auto& a, const auto& b) {
    for (index_t i = 0; i < a.size(); ++i)
      if (a.value().data()[i] != b.value().data()[i]) return false;
    return true;
  };
  const auto e1 = deep.forward(x, eval), e2 = deep.forward(x, eval);
  CHECK(same(e1, e2));
  CHECK(!same(e1, deep.forward(x, train)));  // the second layer reads a masked first-layer output
  CHECK(same(shallow.forward(x, eval), shallow.forward(x, train)));
  // evaluation equals the reference without dropout
  std::vector<double> xt(x.value().data(), x.value().data() + x.size());
  const auto ref = rref::forward(kind::gru, xt, 4, 2, 3, 6, 2, 1, rref::read_params(deep));
  for (index_t i = 0; i < e1.size(); ++i) CHECK(e1.value().data()[i] == Approx(ref.out[std::size_t(i)]).epsilon(1e-12));
}

TEST_CASE("GRU gradients through the dropout mask between bidirectional layers", "[nn][rnn][gru]") {
  using P = ts::cpu_threads;
  using L = nn::GRU<2, 3, ts::gru_options{.num_layers = 2, .dropout = 0.5, .bidirectional = true}>;
  ts::Rng init(6);
  L::state<double, P> st(init);
  ad::Var<double, 3, P> x(gc::values<3, P>({4, 2, 2}, 1), true);
  ad::Var<double, 3, P> k1(gc::values<3, P>({4, 2, 6}, 2), false);
  auto loss = [&] {
    ts::Rng rng(8);  // the same masks on every call: a fixed function to differentiate
    nn::context ctx{true, &rng};
    return ad::sum(st.forward(x, ctx) * k1);
  };
  gc::check(loss, x, st.layers[0].weight_ih, st.layers[1].bias_hh, st.layers[2].weight_ih, st.layers[3].weight_hh);
  ts::Rng a(8), b(8), c(9);
  nn::context ca{true, &a}, cb{true, &b}, cc{true, &c};
  const auto ya = st.forward(x, ca), yb = st.forward(x, cb), yc = st.forward(x, cc);
  bool differ = false;
  for (index_t i = 0; i < ya.size(); ++i) {
    CHECK(ya.value().data()[i] == yb.value().data()[i]);  // a seed gives the same masks
    differ = differ || ya.value().data()[i] != yc.value().data()[i];
  }
  CHECK(differ);
}

TEST_CASE("GRU and RNN parameters: PyTorch's names, count and initialisation", "[nn][rnn][gru]") {
  ts::Rng rng(1);
  GruDeep::state<float, ts::cpu> g(rng);
  std::vector<std::string> names;
  std::size_t count = 0;
  const float bound = 1.0f / std::sqrt(7.0f);
  g.for_each_parameter("gru.", [&](const std::string& n, auto& v) {
    names.push_back(n);
    count += std::size_t(v.size());
    for (index_t i = 0; i < v.size(); ++i) {
      CHECK(v.value().data()[i] >= -bound);
      CHECK(v.value().data()[i] <= bound);
    }
  });
  CHECK(names == std::vector<std::string>{"gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0",
                                          "gru.weight_ih_l0_reverse", "gru.weight_hh_l0_reverse", "gru.bias_ih_l0_reverse",
                                          "gru.bias_hh_l0_reverse", "gru.weight_ih_l1", "gru.weight_hh_l1", "gru.bias_ih_l1",
                                          "gru.bias_hh_l1", "gru.weight_ih_l1_reverse", "gru.weight_hh_l1_reverse",
                                          "gru.bias_ih_l1_reverse", "gru.bias_hh_l1_reverse"});
  // PyTorch: nn.GRU(3, 7, num_layers=2, bidirectional=True) has 2 * (21*3 + 21*7 + 42) + 2 * (21*14 + 21*7 + 42) parameters
  CHECK(count == 2 * (21 * 3 + 21 * 7 + 42) + 2 * (21 * 14 + 21 * 7 + 42));
  CHECK(g.layers[2].weight_ih.dims() == ts::dims_t<2>{21, 14});  // layer 1 takes both directions' outputs
  RnnTinyRelu::state<float, ts::cpu> r(rng);
  names.clear();
  r.for_each_parameter("", [&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"weight_ih_l0", "weight_hh_l0"});
  RnnDeepRelu::state<float, ts::cpu> rd(rng);
  CHECK(rd.layers.size() == 4);
  CHECK(rd.layers[3].bias_hh.dims() == ts::dims_t<1>{7});
}

TEST_CASE("GRU and RNN static shapes and shape errors", "[nn][rnn][gru]") {
  STATIC_REQUIRE(std::is_same_v<GruDeep::output<Shape<9, dyn, 3>>, Shape<9, dyn, 14>>);
  STATIC_REQUIRE(std::is_same_v<RnnWide::output<Shape<dyn, 5, 4>>, Shape<dyn, 5, 33>>);
  STATIC_REQUIRE(GruDeep::accepts<Shape<dyn, dyn, 3>>);
  STATIC_REQUIRE(!GruDeep::accepts<Shape<dyn, dyn, 4>>);
  STATIC_REQUIRE(!RnnWide::accepts<Shape<dyn, 4>>);
  using Net = nn::Sequential<Shape<dyn, 6, 3>, nn::GRU<3, 8, ts::gru_options{.batch_first = true, .bidirectional = true}>, nn::LastStep,
                             nn::Linear<16, 2>>;
  STATIC_REQUIRE(Net::shapes_fit);
  STATIC_REQUIRE(std::is_same_v<Net::output_shape, Shape<dyn, 2>>);
  Net net(2);
  ts::Tensor<float, Shape<dyn, 6, 3>, ts::cpu> xs(5);
  for (index_t i = 0; i < xs.size(); ++i) xs.data()[i] = float(rref::value(i, 1));
  CHECK(net.predict(xs).dims() == ts::dims_t<2>{5, 2});

  // ad::recurrence directly: parameters that do not fit, and an empty sequence
  ts::Rng rng(3);
  GruTiny::state<double, ts::cpu> g(rng);
  ad::Var<double, 3, ts::cpu> wrong(gc::values<3>({4, 2, 6}, 1), false), empty(ts::Tensor<double, ts::dyn_shape_t<3>, ts::cpu>(ts::dims_t<3>{0, 2, 5}), false);
  CHECK_THROWS_AS(ad::recurrence(wrong, g.layers, ad::recurrence_kind::gru, {}), ts::shape_error);
  CHECK_THROWS_AS(ad::recurrence(empty, g.layers, ad::recurrence_kind::gru, {}), ts::shape_error);
  CHECK_THROWS_AS(ad::recurrence(wrong, g.layers, ad::recurrence_kind::gru, {.num_layers = 2}), std::invalid_argument);
}
