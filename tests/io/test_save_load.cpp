// tessera::save / tessera::load (io/save.hpp): every layer type with parameters or buffers and every optimizer
// round-trips bit for bit, and training resumed from the file goes on exactly as the uninterrupted run; a model of
// another shape is refused with the names and both shapes and left untouched; the checkpoint pattern of
// docs/data-and-checkpoints.md (add_model / read_model) keeps BatchNorm's running statistics.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <tessera/io/save.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/batchnorm1d.hpp>
#include <tessera/nn/composition.hpp>
#include <tessera/nn/conv1d.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/layer_norm.hpp>
#include <tessera/nn/recurrent.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/nn/transformer.hpp>
#include <tessera/optim/optim.hpp>

#include "file_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
namespace optim = tessera::optim;
using Catch::Contains;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {

/// Every parameter, buffer and (when given) optimizer state tensor as (name, bytes), in visiting order.
struct snapshot {
  std::vector<std::string> names;
  std::vector<std::vector<unsigned char>> bytes;
  template <class Tensorish>
  void add(const std::string& name, const Tensorish& t) {
    const auto* p = reinterpret_cast<const unsigned char*>(t.data());
    names.push_back(name);
    bytes.emplace_back(p, p + std::size_t(t.size()) * sizeof(*t.data()));
  }
  bool operator==(const snapshot&) const = default;
};

template <class Net>
snapshot model_snapshot(Net& net) {
  snapshot s;
  net.for_each_parameter([&](const std::string& n, auto& v) { s.add("p." + n, v.value()); });
  net.for_each_buffer([&](const std::string& n, auto& t) { s.add("b." + n, t); });
  return s;
}
template <class Opt>
snapshot optim_snapshot(Opt& opt) {
  snapshot s;
  opt.for_each_state([&](const std::string& n, auto& t) { s.add(n, t); });
  return s;
}

/// Inputs of the model's input shape (dyn extents = batch) with values from a fixed pattern.
template <class Net>
auto input_of(index_t batch, int salt) {
  using In = typename Net::input_shape;
  ts::dims_t<In::rank> d{};
  d[0] = batch;
  for (int i = 1; i < In::rank; ++i) d[i] = In::extents[i];
  ts::Tensor<float, ts::dyn_shape_t<In::rank>, ts::cpu_threads> x(d);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(((i + salt) * 37) % 23) / 23.0f - 0.4f;
  return x;
}

/// One training step: loss = mean of squares of the outputs (every output element gets a gradient).
template <class Net, class Opt, class X>
float train_step(Net& net, Opt& opt, const X& x) {
  net.train();
  opt.zero_grad();
  auto y = net.forward(x);
  auto loss = ad::mean(y * y);
  loss.backward();
  opt.step();
  return loss.value()();
}

/// Trains `a` two steps, saves it with its optimizer, loads both into a model and optimizer built from another
/// seed, checks every tensor bit for bit, then one more step on each must give the same bits again.
template <class Net, class Opt, class Options>
void round_trip(const std::string& tag, const Options& options) {
  tst::temp_dir dir("save_" + tag);
  const auto file = dir / "run.ckpt";
  Net a(/*seed=*/1), b(/*seed=*/2);
  Opt oa(a.parameters(), options), ob(b.parameters(), options);
  ob.set_lr(options.lr * 3);  // restored from the file
  const auto x0 = input_of<Net>(3, 0), x1 = input_of<Net>(3, 5), x2 = input_of<Net>(3, 9);
  train_step(a, oa, x0);
  train_step(a, oa, x1);
  REQUIRE_FALSE(model_snapshot(a) == model_snapshot(b));
  ts::save(file, a, oa);
  ts::load(file, b, ob);
  CHECK(model_snapshot(a) == model_snapshot(b));
  CHECK(optim_snapshot(oa) == optim_snapshot(ob));
  CHECK(ob.lr() == oa.lr());
  CHECK(ob.steps() == 2);
  const float la = train_step(a, oa, x2), lb = train_step(b, ob, x2);
  CHECK(std::memcmp(&la, &lb, sizeof la) == 0);
  CHECK(model_snapshot(a) == model_snapshot(b));
  a.eval();
  b.eval();
  const auto ya = a.predict(x2), yb = b.predict(x2);
  REQUIRE(ya.size() == yb.size());
  CHECK(std::memcmp(ya.data(), yb.data(), std::size_t(ya.size()) * sizeof(float)) == 0);
}

using Cnn = nn::Sequential<Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 3, 3, {.padding = 1}>, nn::BatchNorm2d<3>, nn::ReLU,
                           nn::MaxPool2d<2>, nn::Flatten, nn::Dropout<0.25>, nn::Linear<48, 7>>;
using Recurrent = nn::Sequential<Shape<dyn, 4, 6>, nn::LSTM<6, 5, {.num_layers = 2, .batch_first = true}>,
                                 nn::GRU<5, 3, {.batch_first = true}>, nn::RNN<3, 4, {.batch_first = true}>,
                                 nn::LastStep, nn::LayerNorm<4>, nn::Linear<4, 3>>;
using Sequence = nn::Sequential<Shape<dyn, 3, 9>, nn::Conv1d<3, 4, 3, {.padding = 1}>, nn::BatchNorm1d<4>, nn::ReLU,
                                nn::Flatten, nn::Linear<36, 5>, nn::BatchNorm1d<5>>;
using Attention = nn::Sequential<Shape<dyn, 5, 8>, nn::TransformerEncoderLayer<8, 2, 16>, nn::MultiheadAttention<8, 4>>;
using Res = nn::Sequential<Shape<dyn, 2, 5, 5>,
                           nn::Residual<nn::Seq<nn::Conv2d<2, 4, 3, {.stride = 2, .padding = 1}>, nn::BatchNorm2d<4>, nn::ReLU>,
                                        nn::Seq<nn::Conv2d<2, 4, 1, {.stride = 2}>, nn::BatchNorm2d<4>>>,
                           nn::Flatten, nn::Linear<36, 2>>;

}  // namespace

TEST_CASE("save/load round-trips every layer type and optimizer bit for bit; training goes on identically", "[save]") {
  SECTION("Conv2d, BatchNorm2d, Dropout, Linear; Adam") { round_trip<Cnn, optim::Adam<float>>("cnn", optim::adam_options{.lr = 1e-2}); }
  SECTION("Conv2d, BatchNorm2d; SGD with momentum") {
    round_trip<Cnn, optim::SGD<float>>("cnn_sgd", optim::sgd_options{.lr = 0.05, .momentum = 0.9, .nesterov = true});
  }
  SECTION("LSTM (2 layers), GRU, RNN, LayerNorm; AdamW") {
    round_trip<Recurrent, optim::AdamW<float>>("rnn", optim::adamw_options{.lr = 1e-2, .weight_decay = 0.1});
  }
  SECTION("Conv1d, BatchNorm1d (num_batches_tracked); SGD") {
    round_trip<Sequence, optim::SGD<float>>("seq", optim::sgd_options{.lr = 0.1});
  }
  SECTION("TransformerEncoderLayer, MultiheadAttention; Adam") {
    round_trip<Attention, optim::Adam<float>>("attn", optim::adam_options{.lr = 1e-3});
  }
  SECTION("Residual with a projection; Adam") { round_trip<Res, optim::Adam<float>>("res", optim::adam_options{.lr = 1e-2}); }
}

TEST_CASE("save(path, net) holds the buffers: a BatchNorm model's outputs come back exactly", "[save]") {
  tst::temp_dir dir("save_bn");
  Cnn a(3), b(4);
  a.train();
  for (int i = 0; i < 3; ++i) a.predict(input_of<Cnn>(5, i));  // moves the running statistics
  a.eval();
  const auto x = input_of<Cnn>(4, 11);
  const auto ya = a.predict(x);
  ts::save(dir / "net.ckpt", a);
  ts::load(dir / "net.ckpt", b);
  b.eval();
  const auto yb = b.predict(x);
  CHECK(std::memcmp(ya.data(), yb.data(), std::size_t(ya.size()) * sizeof(float)) == 0);
  ts::checkpoint_reader r(dir / "net.ckpt");
  CHECK(r.names() == std::vector<std::string>{"format", "model.0.weight", "model.0.bias", "model.1.weight", "model.1.bias",
                                              "model.6.weight", "model.6.bias", "model.1.running_mean", "model.1.running_var", "rng"});
  // a file with the model only cannot restore an optimizer
  optim::Adam<float> opt(b.parameters(), {.lr = 1e-3});
  CHECK_THROWS_WITH(ts::load(dir / "net.ckpt", b, opt), Contains("holds no optimizer"));
}

TEST_CASE("load refuses a model of another shape, names every difference and changes nothing", "[save]") {
  tst::temp_dir dir("save_mismatch");
  Cnn a(1);
  ts::save(dir / "cnn.ckpt", a);
  using Wider = nn::Sequential<Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3, {.padding = 1}>, nn::BatchNorm2d<4>, nn::ReLU,
                               nn::MaxPool2d<2>, nn::Flatten, nn::Dropout<0.25>, nn::Linear<64, 7>>;
  Wider w(2);
  const auto before = model_snapshot(w);
  CHECK_THROWS_WITH(ts::load(dir / "cnn.ckpt", w),
                    Contains((dir / "cnn.ckpt").string()) && Contains("nothing was read") &&
                        Contains("model.0.weight has shape [3, 1, 3, 3] (float) in the file but [4, 1, 3, 3] (float) in the model") &&
                        Contains("model.6.weight has shape [7, 48] (float) in the file but [7, 64] (float) in the model") &&
                        Contains("model.1.running_var has shape [3]"));
  CHECK(model_snapshot(w) == before);

  // fewer layers in the model: the file's extra entries are named
  using Shorter = nn::Sequential<Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 3, 3, {.padding = 1}>, nn::BatchNorm2d<3>>;
  Shorter s(2);
  CHECK_THROWS_WITH(ts::load(dir / "cnn.ckpt", s), Contains("entry model.6.weight in the file matches no parameter"));
  // more layers in the model: the missing ones are named
  using Longer = nn::Sequential<Shape<dyn, 1, 8, 8>, nn::Conv2d<1, 3, 3, {.padding = 1}>, nn::BatchNorm2d<3>, nn::ReLU,
                                nn::MaxPool2d<2>, nn::Flatten, nn::Dropout<0.25>, nn::Linear<48, 7>, nn::Linear<7, 2>>;
  Longer l(2);
  CHECK_THROWS_WITH(ts::load(dir / "cnn.ckpt", l), Contains("no parameter named model.7.weight in the file (shape [2, 7], float"));

  // an optimizer of another kind: its state names differ, the model is left alone too
  Cnn c(5), d(6);
  optim::Adam<float> adam(c.parameters(), {.lr = 1e-2});
  train_step(c, adam, input_of<Cnn>(2, 0));
  ts::save(dir / "adam.ckpt", c, adam);
  optim::SGD<float> sgd(d.parameters(), {.lr = 0.1, .momentum = 0.9});
  const auto d_before = model_snapshot(d);
  CHECK_THROWS_WITH(ts::load(dir / "adam.ckpt", d, sgd), Contains("optim.state.0.weight.exp_avg") && Contains("nothing was read"));
  CHECK(model_snapshot(d) == d_before);

  // not a file of save()
  ts::checkpoint_writer other;
  other.add_scalar("epoch", 1);
  other.write(dir / "other.ckpt");
  CHECK_THROWS_WITH(ts::load(dir / "other.ckpt", d), Contains("not a file written by tessera::save"));
}

TEST_CASE("the documented checkpoint pattern (add_model / read_model) round-trips a BatchNorm model", "[save][checkpoint]") {
  // As docs/data-and-checkpoints.md writes it.
  tst::temp_dir dir("ckpt_pattern");
  Cnn net(7), restored(8);
  optim::Adam<float> opt(net.parameters(), {.lr = 1e-3}), opt2(restored.parameters(), {.lr = 1e-3});
  train_step(net, opt, input_of<Cnn>(4, 1));

  ts::checkpoint_writer w;
  w.add_model(net, "model.");  // parameters and buffers
  w.add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.");
  w.add_scalar("epoch", 3);
  w.write(dir / "run.ckpt");

  ts::checkpoint_reader r(dir / "run.ckpt");
  r.read_model(restored, "model.", ts::unmatched_entries::error);
  r.read_all([&](auto&& f) { opt2.for_each_state(f); }, "optim.", ts::unmatched_entries::error);
  CHECK(r.scalar<int>("epoch") == 3);
  CHECK(model_snapshot(net) == model_snapshot(restored));
  CHECK(optim_snapshot(opt) == optim_snapshot(opt2));

  // parameters alone (add_parameters) leave the running statistics behind: read_buffers says what is missing
  ts::checkpoint_writer params_only;
  params_only.add_parameters(net, "model.");
  params_only.write(dir / "params.ckpt");
  ts::checkpoint_reader pr(dir / "params.ckpt");
  Cnn third(9);
  CHECK_THROWS_WITH(pr.read_buffers(third, "model."), Contains("no parameter named model.1.running_mean"));
  CHECK(pr.read_parameters(third, "model.", ts::unmatched_entries::error) == 6);
}
