// dist::pipeline against the unsplit model: every rank trains the whole model on the whole batch by itself (the
// reference) and its pipeline stage beside it, from the same parameters, and compares its stage's parameters (by
// their whole-model names) and the returned loss after each of 3 SGD steps (lr 0.1, momentum 0.9). On 2 ranks the
// model is cut in 2 stages, on 3 ranks in 3. Both schedules, float and double, equal and unequal micro-batches,
// a cut inside a fused Linear + ReLU group; the stage's parameter names; the seeded constructor; the errors of a
// wrong world size and of bad batches (thrown on every rank alike).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dist_support.hpp"
#include <tessera/autodiff/loss_ops.hpp>
#include <tessera/dist/pipeline.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>


namespace {
// odd extents: 13 x 11 images, pooled to 6 x 5 (the last row and column dropped), 17 hidden units, 5 classes
using Net = nn::Sequential<ts::Shape<dyn, 1, 13, 11>, nn::Conv2d<1, 8, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                           nn::MaxPool2d<2>, nn::Flatten, nn::Linear<8 * 6 * 5, 17>, nn::ReLU, nn::Linear<17, 5>>;
using NetD = Net::on<ts::cpu, double>;

template <class C>
struct cuts_tag {
  using type = C;
};
/// f(cuts_tag<...>) with the cuts of this world: 2 stages on 2 ranks, 3 on 3.
template <class F>
void with_world_cuts(F&& f) {
  if (world() == 2) f(cuts_tag<dist::cuts<3>>{});
  else if (world() == 3) f(cuts_tag<dist::cuts<3, 5>>{});
  else FAIL("test_pipeline runs on 2 or 3 ranks, not " << world());
}

template <class T>
ts::Tensor<T, ts::Shape<dyn, 1, 13, 11>> images(index_t n) {
  ts::Tensor<T, ts::Shape<dyn, 1, 13, 11>> x(n);
  for (index_t i = 0; i < n; ++i)
    for (index_t h = 0; h < 13; ++h)
      for (index_t w = 0; w < 11; ++w) x(i, 0, h, w) = T(std::sin(0.37 * double(i) + 0.23 * double(h * w) + 0.05 * double(h)));
  return x;
}
ts::Tensor<std::int64_t, ts::Shape<dyn>> labels(index_t n) {
  ts::Tensor<std::int64_t, ts::Shape<dyn>> y(n);
  for (index_t i = 0; i < n; ++i) y(i) = (7 * i + 3) % 5;
  return y;
}

/// The largest |a - b| over a parameter divided by the largest |b| of it, over every parameter of this stage.
template <class Pipe, class Model>
double max_relative_difference(Pipe& pipe, Model& full, int& matched) {
  double worst = 0;
  matched = 0;
  pipe.for_each_parameter([&](const std::string& name, auto& v) {
    full.for_each_parameter([&](const std::string& n, auto& u) {
      if (n != name) return;
      ++matched;
      const auto a = v.value().to_vector(), b = u.value().to_vector();
      if (a.size() != b.size()) {
        worst = 1e300;
        return;
      }
      double diff = 0, scale = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
        scale = std::max(scale, std::abs(double(b[i])));
      }
      worst = std::max(worst, diff / std::max(scale, 1e-30));
    });
  });
  return worst;
}

/// 3 SGD steps of the pipeline and of the unsplit model on the same batch; parameters and losses compared.
/// poison: the ranks that must not read x (all but the first) and y (all but the last) pass NaN images and
/// out-of-range labels to the pipeline.
template <class Model, class Cuts>
void check_against_unsplit(index_t batch, int micro, dist::schedule sched, double tol, bool poison = false) {
  using T = typename Model::value_type;
  auto& g = dist_test::ctx().group();
  Model full(11);
  dist::pipeline<Model, Cuts> pipe(g, full, {.micro_batches = micro, .schedule = sched});
  CHECK(pipe.stage() == rank());
  const auto x = images<T>(batch);
  const auto y = labels(batch);
  auto px = x;
  auto py = y;
  if (poison && rank() != 0) px = T(std::nan(""));
  if (poison && rank() != world() - 1) py = std::int64_t{-7};
  ts::optim::SGD<T> opt_full(full.parameters(), {.lr = 0.1, .momentum = 0.9});
  // a stage of parameterless layers (a ReLU alone) has nothing to optimize (SGD refuses an empty list)
  std::optional<ts::optim::SGD<T>> opt_pipe;
  if (!pipe.parameters().empty()) opt_pipe.emplace(pipe.parameters(), ts::optim::sgd_options{.lr = 0.1, .momentum = 0.9});
  for (int step = 0; step < 3; ++step) {
    opt_full.zero_grad();
    auto loss = ad::cross_entropy(full.forward(x), y);
    loss.backward();
    opt_full.step();
    const double expected = double(loss.value().to_vector()[0]);

    pipe.zero_grad();
    const double got = pipe.train_step(px, py, [](auto& out, auto& t) { return ad::cross_entropy(out, t); });
    if (opt_pipe) opt_pipe->step();
    INFO("step " << step << ", batch " << batch << ", " << micro << " micro-batches, rank " << rank());
    CHECK(std::abs(got - expected) <= tol * std::abs(expected));
    int matched = 0;
    const double diff = max_relative_difference(pipe, full, matched);
    CHECK(matched == int(pipe.parameters().size()));
    CHECK(diff <= tol);
  }
  // the steps changed the parameters (so the comparison above compared trained parameters, not the initial ones)
  Model fresh(11);
  int matched = 0;
  if (opt_pipe) CHECK(max_relative_difference(pipe, fresh, matched) > 1e-3);
}
}  // namespace

TEST_CASE("pipeline: stages hold the whole model's parameters under its names; the seeded constructor", "[dist][pipeline]") {
  auto& g = dist_test::ctx().group();
  with_world_cuts([&]<class C>(cuts_tag<C>) {
    using Pipe = dist::pipeline<Net, C>;
    Net full(5);
    Pipe pipe(g, std::uint64_t{5}, {.micro_batches = 2});
    CHECK(pipe.stage() == rank());
    CHECK(int(Pipe::stages) == world());
    // every parameter of this stage is the model's of the same name, bit for bit, from a layer of this stage
    int count = 0;
    pipe.for_each_parameter([&](const std::string& name, auto& v) {
      ++count;
      const std::size_t layer = std::stoul(name.substr(0, name.find('.')));
      CHECK(layer >= Pipe::first_layer(std::size_t(rank())));
      CHECK(layer < Pipe::first_layer(std::size_t(rank()) + 1));
      bool same = false;
      full.for_each_parameter([&](const std::string& n, auto& u) {
        if (n == name) same = v.value().to_vector() == u.value().to_vector();
      });
      CHECK(same);
    });
    // and the stages together hold every parameter of the model once
    int total = 0;
    full.for_each_parameter([&](const std::string&, auto&) { ++total; });
    CHECK(g.all_reduce_value(count) == total);
    CHECK(count > 0);
  });
}

TEST_CASE("pipeline: 3 SGD steps equal the unsplit model's, float, both schedules", "[dist][pipeline]") {
  with_world_cuts([&]<class C>(cuts_tag<C>) {
    for (const auto sched : {dist::schedule::gpipe, dist::schedule::one_f_one_b}) {
      INFO("schedule " << (sched == dist::schedule::gpipe ? "gpipe" : "1f1b"));
      check_against_unsplit<Net, C>(32, 4, sched, 1e-5);
    }
  });
}

TEST_CASE("pipeline: only the first stage reads the inputs, only the last the targets", "[dist][pipeline]") {
  with_world_cuts([&]<class C>(cuts_tag<C>) {
    check_against_unsplit<Net, C>(21, 4, dist::schedule::one_f_one_b, 1e-5, true);
  });
}

TEST_CASE("pipeline: 3 SGD steps equal the unsplit model's, double, both schedules", "[dist][pipeline]") {
  with_world_cuts([&]<class C>(cuts_tag<C>) {
    for (const auto sched : {dist::schedule::gpipe, dist::schedule::one_f_one_b}) {
      INFO("schedule " << (sched == dist::schedule::gpipe ? "gpipe" : "1f1b"));
      check_against_unsplit<NetD, C>(32, 4, sched, 1e-12);
    }
  });
}

TEST_CASE("pipeline: unequal micro-batches (30 rows in 4, 7 rows in 7, more micro-batches than stages need)", "[dist][pipeline]") {
  with_world_cuts([&]<class C>(cuts_tag<C>) {
    for (const auto sched : {dist::schedule::gpipe, dist::schedule::one_f_one_b}) {
      check_against_unsplit<NetD, C>(30, 4, sched, 1e-12);
      check_against_unsplit<NetD, C>(7, 7, sched, 1e-12);
      check_against_unsplit<NetD, C>(9, 1, sched, 1e-12);
    }
  });
}

TEST_CASE("pipeline: a cut inside a fused group (Linear | ReLU) and a stage of one parameterless layer", "[dist][pipeline]") {
  if (world() == 2) {
    check_against_unsplit<NetD, dist::cuts<5>>(19, 3, dist::schedule::one_f_one_b, 1e-12);
    check_against_unsplit<NetD, dist::cuts<6>>(19, 5, dist::schedule::gpipe, 1e-12);
  } else {
    check_against_unsplit<NetD, dist::cuts<1, 5>>(19, 3, dist::schedule::one_f_one_b, 1e-12);  // stage 1: ReLU..Linear
    check_against_unsplit<NetD, dist::cuts<5, 6>>(19, 4, dist::schedule::gpipe, 1e-12);       // stage 1: ReLU alone
  }
}

TEST_CASE("pipeline: a group whose size is not the number of stages is refused on every rank", "[dist][pipeline]") {
  auto& g = dist_test::ctx().group();
  auto expect_refusal = [&]<class C>(cuts_tag<C>, const std::string& stages) {
    bool threw = false;
    try {
      dist::pipeline<Net, C> pipe(g, std::uint64_t{0});
    } catch (const dist::error& e) {
      threw = true;
      const std::string what = e.what();
      INFO(what);
      CHECK(what.find("cut into " + stages + " stages") != std::string::npos);
      CHECK(what.find("group has " + std::to_string(world()) + " ranks") != std::string::npos);
    }
    CHECK(threw);
  };
  if (world() == 2) expect_refusal(cuts_tag<dist::cuts<3, 5>>{}, "3");
  else expect_refusal(cuts_tag<dist::cuts<3>>{}, "2");
  expect_refusal(cuts_tag<dist::cuts<1, 3, 5>>{}, "4");
}

TEST_CASE("pipeline: bad batches and options are refused on every rank alike", "[dist][pipeline]") {
  auto& g = dist_test::ctx().group();
  with_world_cuts([&]<class C>(cuts_tag<C>) {
    using Pipe = dist::pipeline<Net, C>;
    auto loss = [](auto& out, auto& t) { return ad::cross_entropy(out, t); };
    Pipe pipe(g, std::uint64_t{0}, {.micro_batches = 4});
    CHECK_THROWS_AS(pipe.train_step(images<float>(3), labels(3), loss), dist::error);       // 3 rows, 4 micro-batches
    CHECK_THROWS_AS(pipe.train_step(images<float>(8), labels(9), loss), ts::shape_error);   // batch sizes differ
    CHECK_THROWS_AS(Pipe(g, std::uint64_t{0}, {.micro_batches = 0}), dist::error);
    // the pipeline still works after refusing
    const double l = pipe.train_step(images<float>(8), labels(8), loss);
    CHECK(std::isfinite(l));
    CHECK(l > 0);
  });
}
