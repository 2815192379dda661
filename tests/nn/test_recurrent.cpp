// nn::LSTM and nn::LastStep in a Sequential: static shapes, libtorch parameter names and PyTorch's count and
// initialisation range, whole-model gradients in double, and a small model that learns with SGD and Adam.
#include <tessera/nn/recurrent.hpp>
#include <tessera/io/checkpoint.hpp>
#include <tessera/optim/optim.hpp>

#include <unistd.h>

#include <filesystem>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;

using RowLSTM = nn::Sequential<Shape<dyn, 28, 28>, nn::LSTM<28, 128, {.num_layers = 2, .dropout = 0.2, .batch_first = true}>,
                               nn::LastStep, nn::Linear<128, 10>>;

TEST_CASE("LSTM model: static shapes, names, parameter count, initialisation", "[nn][rnn]") {
  STATIC_REQUIRE(RowLSTM::shapes_fit);
  STATIC_REQUIRE(std::is_same_v<RowLSTM::output_shape, Shape<dyn, 10>>);
  STATIC_REQUIRE(std::is_same_v<nn::LSTM<28, 128>::output<Shape<dyn, 28, 28>>, Shape<dyn, 28, 128>>);
  STATIC_REQUIRE(!nn::LSTM<28, 128>::accepts<Shape<dyn, 28, 27>>);
  STATIC_REQUIRE(!nn::LastStep::accepts<Shape<dyn, 28>>);
  RowLSTM net(1);
  std::vector<std::string> names;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.weight_ih_l0", "0.weight_hh_l0", "0.bias_ih_l0", "0.bias_hh_l0", "0.weight_ih_l1",
                                          "0.weight_hh_l1", "0.bias_ih_l1", "0.bias_hh_l1", "2.weight", "2.bias"});
  CHECK(net.num_parameters() == 80896 + 132096 + 1290);  // PyTorch's count
  const float bound = 1.0f / std::sqrt(128.0f);
  net.for_each_parameter([&](const std::string& n, auto& v) {
    if (n.rfind("0.", 0) != 0) return;
    float lo = 1, hi = -1;
    for (index_t i = 0; i < v.size(); ++i) {
      lo = std::min(lo, v.value().data()[i]);
      hi = std::max(hi, v.value().data()[i]);
    }
    INFO(n);
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > bound);  // spread over the range
  });
  ts::Tensor<float, Shape<dyn, 28, 28>, ts::cpu_threads> x(3);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 17) / 17.0f;
  auto y = net.predict(x);
  CHECK(y.dims() == ts::dims_t<2>{3, 10});
  // evaluation is deterministic, training draws dropout masks
  net.eval();
  auto e1 = net.predict(x), e2 = net.predict(x);
  for (index_t i = 0; i < e1.size(); ++i) CHECK(e1.data()[i] == e2.data()[i]);
  net.train();
  auto out = net.forward(x);
  auto loss = ad::sum(out * out);
  loss.backward();
  net.for_each_parameter([&](const std::string& n, auto& v) {
    INFO(n);
    CHECK(v.has_grad());
  });
}

TEST_CASE("LSTM model gradients in double", "[nn][rnn]") {
  using Small = nn::Sequential<Shape<dyn, 4, 3>, nn::LSTM<3, 5, {.num_layers = 2}>, nn::LastStep, nn::Linear<5, 2>>::on<ts::cpu_threads, double>;
  Small net(3);
  ad::Var<double, 3, ts::cpu_threads> x(gc::values<3, ts::cpu_threads>({2, 4, 3}, 1), true);
  ad::Var<double, 2, ts::cpu_threads> k(gc::values<2, ts::cpu_threads>({2, 2}, 2), false);
  auto loss = [&] { return ad::sum(net.forward(x) * k); };
  auto& lstm = net.layer<0>();
  gc::check(loss, x, lstm.layers[0].weight_ih, lstm.layers[0].weight_hh, lstm.layers[1].weight_ih, lstm.layers[1].bias_hh);
}

namespace {
/// Sequences of 28 steps of 28 features; the class is which of 4 features carries a bump late in the sequence.
struct toy {
  ts::Tensor<float, Shape<dyn, 28, 28>, ts::cpu_threads> x;
  ts::Tensor<int, Shape<dyn>, ts::cpu_threads> y;
  explicit toy(index_t n) : x(n), y(n) {
    ts::Rng rng(5);
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = 0.1f * (rng.uniform() - 0.5f);
    for (index_t b = 0; b < n; ++b) {
      const int c = int(rng.below(4));
      y(b) = c;
      for (index_t t = 20; t < 28; ++t) x(b, t, 3 * c) += 1.0f;
    }
  }
};

template <class Opt>
void learns(Opt make_opt) {
  ts::cpu_threads::set_num_threads(2);
  RowLSTM net(11);
  auto opt = make_opt(net);
  toy d(32);
  float first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    opt.zero_grad();
    auto loss = ad::cross_entropy(net.forward(d.x), d.y);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.value()();
    last = loss.value()();
  }
  INFO("first loss " << first << ", last " << last);
  CHECK(last < 0.8f * first);
}
}  // namespace

TEST_CASE("LSTM model learns a toy problem with SGD and Adam", "[nn][rnn]") {
  learns([](RowLSTM& net) { return ts::optim::SGD<float>(net.parameters(), {.lr = 0.5, .momentum = 0.9}); });
  learns([](RowLSTM& net) { return ts::optim::Adam<float>(net.parameters(), {.lr = 0.01}); });
}

// ---- cells ----

namespace {
using PT = ts::cpu_threads;
using D2 = ad::Var<double, 2, PT>;

template <class Cell>
std::vector<std::string> names_of(Cell& c) {
  std::vector<std::string> n;
  c.for_each_parameter("", [&](const std::string& s, auto&) { n.push_back(s); });
  return n;
}
template <class Cell>
index_t count_of(Cell& c) {
  index_t n = 0;
  c.for_each_parameter("", [&](const std::string&, auto& v) { n += v.size(); });
  return n;
}
void require_same(const ad::Var<double, 2, PT>& a, const ad::Var<double, 2, PT>& b) {
  REQUIRE(a.dims() == b.dims());
  for (index_t i = 0; i < a.size(); ++i) REQUIRE(a.value().data()[i] == b.value().data()[i]);
}
}  // namespace

TEST_CASE("cell layers: static shapes, libtorch's names, counts and initialisation", "[nn][rnn][cell]") {
  using Net = nn::Sequential<Shape<dyn, 5>, nn::GRUCell<5, 33>, nn::Linear<33, 2>>;
  STATIC_REQUIRE(Net::shapes_fit);
  STATIC_REQUIRE(std::is_same_v<Net::output_shape, Shape<dyn, 2>>);
  STATIC_REQUIRE(std::is_same_v<nn::LSTMCell<5, 33>::output<Shape<7, 5>>, Shape<7, 33>>);
  STATIC_REQUIRE(!nn::RNNCell<5, 3>::accepts<Shape<dyn, 4>>);
  STATIC_REQUIRE(!nn::LSTMCell<5, 3>::accepts<Shape<dyn, 2, 5>>);
  STATIC_REQUIRE(nn::GRUCell<5, 3>::accepts<Shape<dyn, dyn>>);

  ts::Rng rng(3);
  nn::RNNCell<5, 33>::state<float, PT> rnn(rng);
  nn::RNNCell<5, 33, {.bias = false}>::state<float, PT> rnn_nb(rng);
  nn::LSTMCell<5, 33>::state<float, PT> lstm(rng);
  nn::GRUCell<5, 33>::state<float, PT> gru(rng);
  nn::GRUCell<5, 33, false>::state<float, PT> gru_nb(rng);
  const std::vector<std::string> all{"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
  CHECK(names_of(rnn) == all);
  CHECK(names_of(lstm) == all);
  CHECK(names_of(gru) == all);
  CHECK(names_of(rnn_nb) == std::vector<std::string>{"weight_ih", "weight_hh"});
  CHECK(names_of(gru_nb) == std::vector<std::string>{"weight_ih", "weight_hh"});
  // PyTorch's counts: G*H*(I + H) + 2*G*H
  CHECK(count_of(rnn) == 33 * 5 + 33 * 33 + 2 * 33);
  CHECK(count_of(rnn_nb) == 33 * 5 + 33 * 33);
  CHECK(count_of(lstm) == 4 * (33 * 5 + 33 * 33 + 2 * 33));
  CHECK(count_of(gru) == 3 * (33 * 5 + 33 * 33 + 2 * 33));
  CHECK(gru.weight_hh.dims() == ts::dims_t<2>{99, 33});
  CHECK(lstm.bias_ih.dims() == ts::dims_t<1>{132});
  const float bound = 1.0f / std::sqrt(33.0f);
  lstm.for_each_parameter("", [&](const std::string& n, auto& v) {
    float lo = 1, hi = -1;
    for (index_t i = 0; i < v.size(); ++i) {
      lo = std::min(lo, v.value().data()[i]);
      hi = std::max(hi, v.value().data()[i]);
    }
    INFO(n);
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > bound);
  });
  Net net(0);
  std::vector<std::string> names;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.weight_ih", "0.weight_hh", "0.bias_ih", "0.bias_hh", "1.weight", "1.bias"});
}

TEST_CASE("cell layers: forward with and without a state is the free function's", "[nn][rnn][cell]") {
  PT::set_num_threads(2);
  ts::Rng rng(4);
  const index_t B = 7;
  D2 x(gc::values<2, PT>({B, 5}, 1), false), h(gc::values<2, PT>({B, 3}, 2), false), c(gc::values<2, PT>({B, 3}, 3), false);
  nn::context ctx{false, &rng};
  {
    nn::RNNCell<5, 3, {.nonlinearity = ad::rnn_nonlinearity::relu}>::state<double, PT> cell(rng);
    require_same(cell.forward(x, h), ad::rnn_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                                  ad::rnn_nonlinearity::relu));
    require_same(cell.forward(x), ad::rnn_cell(x, D2(), cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                               ad::rnn_nonlinearity::relu));
    require_same(cell.forward(x, ctx), cell.forward(x));
    nn::RNNCell<5, 3>::state<double, PT> tcell(rng);  // tanh: the outputs lie in (-1, 1) and differ from relu's
    require_same(tcell.forward(x, h), ad::rnn_cell(x, h, tcell.weight_ih, tcell.weight_hh, tcell.bias_ih, tcell.bias_hh));
  }
  {
    nn::LSTMCell<5, 3>::state<double, PT> cell(rng);
    auto s = cell.forward(x, {h, c});
    auto r = ad::lstm_cell(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh);
    require_same(s.h, r.h);
    require_same(s.c, r.c);
    auto z = cell.forward(x);
    auto rz = ad::lstm_cell(x, D2(), D2(), cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh);
    require_same(z.h, rz.h);
    require_same(z.c, rz.c);
    require_same(cell.forward(x, ctx), z.h);
  }
  {
    nn::GRUCell<5, 3, false>::state<double, PT> cell(rng);
    REQUIRE(!cell.bias_ih.defined());
    require_same(cell.forward(x, h), ad::gru_cell(x, h, cell.weight_ih, cell.weight_hh));
    require_same(cell.forward(x), ad::gru_cell(x, D2(), cell.weight_ih, cell.weight_hh));
  }
  // a bad state is the free function's shape_error
  nn::GRUCell<5, 3>::state<double, PT> gcell(rng);
  CHECK_THROWS_AS(gcell.forward(x, D2(gc::values<2, PT>({B, 4}, 5), false)), ts::shape_error);
}

TEST_CASE("cell layers: gradients in double, in a Sequential and stepped by hand", "[nn][rnn][cell]") {
  PT::set_num_threads(2);
  using Small = nn::Sequential<Shape<dyn, 5>, nn::LSTMCell<5, 3>, nn::Linear<3, 2>>::on<PT, double>;
  Small net(5);
  D2 x(gc::values<2, PT>({7, 5}, 1), true);
  D2 k(gc::values<2, PT>({7, 2}, 2), false);
  auto& cell = net.layer<0>();
  gc::check([&] { return ad::sum(net.forward(x) * k); }, x, cell.weight_ih, cell.bias_hh, net.layer<1>().weight);
  // two steps of a GRUCell from a given state
  ts::Rng rng(6);
  nn::GRUCell<5, 3>::state<double, PT> gru(rng);
  D2 h0(gc::values<2, PT>({7, 3}, 3), true);
  D2 k3(gc::values<2, PT>({7, 3}, 4), false);
  gc::check([&] { return ad::sum(gru.forward(x, gru.forward(x, h0)) * k3); }, x, h0, gru.weight_ih, gru.weight_hh, gru.bias_ih,
            gru.bias_hh);
}

TEST_CASE("cell layers: optimizers and checkpoints see their parameters", "[nn][rnn][cell]") {
  PT::set_num_threads(2);
  using Net = nn::Sequential<Shape<dyn, 5>, nn::RNNCell<5, 4>, nn::Linear<4, 3>>;
  Net net(7);
  auto params = net.parameters();
  REQUIRE(params.size() == 6);
  CHECK(params[0].name == "0.weight_ih");
  CHECK(params[1].dims == std::vector<index_t>{4, 4});
  std::vector<std::vector<float>> before;
  for (auto& p : params) before.emplace_back(p.value(), p.value() + p.size);
  ts::optim::Adam<float> opt(params, {.lr = 0.01});
  ts::Tensor<float, Shape<dyn, 5>, PT> x(6);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 7) / 7.0f - 0.4f;
  ts::Tensor<int, Shape<dyn>, PT> y(6);
  for (index_t i = 0; i < 6; ++i) y(i) = int(i % 3);
  // two steps by hand through the model's own layers (from the zero state W_hh gets a zero gradient, as in libtorch)
  opt.zero_grad();
  nn::context ctx{true, &net.rng()};
  auto& cell = net.layer<0>();
  ad::Var<float, 2, PT> xv(x, false);
  ad::cross_entropy(net.layer<1>().forward(cell.forward(xv, cell.forward(xv)), ctx), y).backward();
  opt.step();
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    bool changed = false;
    for (index_t j = 0; j < params[i].size; ++j) changed = changed || params[i].value()[j] != before[i][std::size_t(j)];
    CHECK(changed);
  }
  // checkpoint round trip into a model of another seed
  const auto file = std::filesystem::temp_directory_path() / ("tessera_cells_" + std::to_string(::getpid()) + ".ckpt");
  ts::checkpoint_writer w;
  net.for_each_parameter([&](const std::string& name, auto& v) { w.add(name, v.value()); });
  w.write(file);
  Net other(99);
  ts::checkpoint_reader r(file);
  std::size_t read = 0;
  other.for_each_parameter([&](const std::string& name, auto& v) {
    r.read_into(name, v.mutable_value());
    ++read;
  });
  std::filesystem::remove(file);
  CHECK(read == 6);
  auto a = net.predict(x), b = other.predict(x);
  for (index_t i = 0; i < a.size(); ++i) CHECK(a.data()[i] == b.data()[i]);
}

namespace {
/// A classifier stepped by hand through a cell over the toy sequences above, then Linear on the last h.
template <class Cell>
void cell_learns(const char* what) {
  PT::set_num_threads(2);
  INFO(what);
  ts::Rng rng(12);
  typename Cell::template state<float, PT> cell(rng);
  nn::Linear<16, 4>::state<float, PT> head(rng);
  std::vector<ts::nn::parameter_ref<float>> ps;
  cell.for_each_parameter("cell.", [&](const std::string& n, auto& v) { ps.push_back(nn::make_parameter_ref(n, v)); });
  head.for_each_parameter("head.", [&](const std::string& n, auto& v) { ps.push_back(nn::make_parameter_ref(n, v)); });
  ts::optim::Adam<float> opt(ps, {.lr = 0.02});
  toy d(32);
  nn::context ctx{true, &rng};
  float first = 0, last = 0;
  for (int step = 0; step < 12; ++step) {
    opt.zero_grad();
    using F2 = ad::Var<float, 2, PT>;
    auto run = [&] {
      if constexpr (requires { cell.forward(F2(), ad::lstm_cell_state<float, PT>{}).c; }) {
        ad::lstm_cell_state<float, PT> s;
        for (index_t t = 0; t < 28; ++t) s = cell.forward(F2(ts::Tensor<float, ts::dyn_shape_t<2>, PT>(ts::select<1>(d.x, t)), false), s);
        return s.h;
      } else {
        F2 h;
        for (index_t t = 0; t < 28; ++t) h = cell.forward(F2(ts::Tensor<float, ts::dyn_shape_t<2>, PT>(ts::select<1>(d.x, t)), false), h);
        return h;
      }
    };
    auto loss = ad::cross_entropy(head.forward(run(), ctx), d.y);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.value()();
    last = loss.value()();
  }
  INFO("first loss " << first << ", last " << last);
  CHECK(last < 0.7f * first);
}
}  // namespace

TEST_CASE("cell layers stepped through a sequence learn a toy problem", "[nn][rnn][cell]") {
  cell_learns<nn::RNNCell<28, 16>>("RNNCell");
  cell_learns<nn::LSTMCell<28, 16>>("LSTMCell");
  cell_learns<nn::GRUCell<28, 16>>("GRUCell");
}
