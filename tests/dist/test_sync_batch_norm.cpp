// Synchronised batch normalisation (PyTorch's SyncBatchNorm: basic_sequential::set_batch_norm_reducer, the layers'
// context.batch_norm_reducer, ad::sync_batch_norm) on 2 and 3 ranks. A seeded batch of world * b rows (b = 7) is
// known to every rank; rank r trains on rows [r * b, (r + 1) * b), whose values are shifted and scaled by r so that the
// ranks' statistics differ. The reference is the same model (same seed) run on every rank over the whole batch: the
// outputs of this rank's rows, the running statistics and the parameter gradients (all-reduced and averaged over the
// ranks here, as data parallel does) must equal it, in float (1e-5 of the largest value) and in double (1e-12), for
// Conv2d-BatchNorm2d-ReLU-Flatten-Linear, BatchNorm1d on features and on sequences (first layer: no input gradient,
// no backward reduction), BatchNorm2d inside a Residual, and BatchNorm2d alone against plain loops over the
// concatenated batch. Without a reducer each rank's own statistics are used (plain loops over its rows; the output
// differs from the whole batch's). Also: how often and on what the reducer is called, evaluation mode, ranks holding
// no rows, and one value over all ranks refused on every rank alike.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dist_support.hpp"
#include <tessera/tessera.hpp>
#include <tessera/nn/batchnorm1d.hpp>
#include <tessera/nn/composition.hpp>
#include <tessera/nn/sequential.hpp>

using ts::Shape;
using P = ts::cpu_threads;

namespace {
constexpr index_t b = 7;  // rows per rank

/// Element k of row `row` of the seeded batch: uniform in [-1, 1), shifted and scaled by the row's rank block.
double input_value(index_t row, index_t k, index_t row_size) {
  ts::Rng rng(std::uint64_t(1000 + row * row_size + k));
  const double blk = double(row / b);
  return (rng.uniform_double() * 2 - 1) * (1 + 0.5 * blk) + 0.7 * blk;
}
double target_value(index_t row, index_t k) { return std::sin(0.37 * double(row) + 0.91 * double(k)); }

/// Rows [row0, row0 + n) of the batch as a tensor of the model's input shape.
template <class T, class In>
ts::Tensor<T, In, P> rows_of(index_t row0, index_t n) {
  ts::Tensor<T, In, P> x(n);
  const index_t rs = n > 0 ? x.size() / n : 0;
  for (index_t r = 0; r < n; ++r)
    for (index_t k = 0; k < rs; ++k) x.data()[r * rs + k] = T(input_value(row0 + r, k, rs));
  return x;
}

template <class Tn>
std::vector<double> as_vector(const Tn& t) {
  std::vector<double> v(std::size_t(t.size()));
  for (index_t i = 0; i < t.size(); ++i) v[std::size_t(i)] = double(t.data()[i]);
  return v;
}
/// max |a - b| over the largest |b| or `floor` if larger (0 when both are empty; 1 when the sizes differ).
double rel_err(const std::vector<double>& a, const std::vector<double>& ref, double floor = 0) {
  if (a.size() != ref.size()) return 1;
  double e = 0, m = floor;
  for (std::size_t i = 0; i < a.size(); ++i) e = std::max(e, std::abs(a[i] - ref[i])), m = std::max(m, std::abs(ref[i]));
  return m > 0 ? e / m : e;
}
std::vector<double> slice(const std::vector<double>& v, std::size_t from, std::size_t n) {
  return {v.begin() + std::ptrdiff_t(from), v.begin() + std::ptrdiff_t(from + n)};
}

/// What a training step leaves: the output, every parameter's gradient, every buffer.
struct step_result {
  std::vector<double> out;
  std::vector<std::vector<double>> grads, buffers;
  std::vector<std::string> buffer_names;
};
/// One forward and backward in training of the mean squared error against the targets of rows [row0, row0 + n).
template <class Net>
step_result train_step(Net& net, index_t row0, index_t n) {
  using T = typename Net::value_type;
  net.train();
  net.zero_grad();
  auto y = net.forward(rows_of<T, typename Net::input_shape>(row0, n));
  typename decltype(y)::tensor t(y.dims());
  const index_t rs = n > 0 ? t.size() / n : 0;
  for (index_t r = 0; r < n; ++r)
    for (index_t k = 0; k < rs; ++k) t.data()[r * rs + k] = T(target_value(row0 + r, k));
  auto loss = ad::mse_loss(y, decltype(y)(t, false));
  loss.backward();
  step_result s;
  s.out = as_vector(y.value());
  for (auto& p : net.parameters()) {
    const T* g = p.grad();
    s.grads.emplace_back(std::size_t(p.size), 0.0);
    for (index_t i = 0; g && i < p.size; ++i) s.grads.back()[std::size_t(i)] = double(g[i]);
  }
  net.for_each_buffer([&](const std::string& name, auto& buf) {
    s.buffer_names.push_back(name);
    s.buffers.push_back(as_vector(buf));
  });
  return s;
}

/// A reducer summing over the test's process group, counting its calls and their lengths.
struct counting_reducer {
  int calls = 0;
  std::vector<index_t> lengths;
  nn::stat_reducer fn() {
    return [this](double* v, index_t n) {
      ++calls;
      lengths.push_back(n);
      dist_test::ctx().group().all_reduce_raw(v, std::size_t(n), dist::dtype::f64, dist::reduce_op::sum, true).wait();
    };
  }
};

/// The data-parallel model (rank r's rows, reducer set) against the whole-batch model on every rank: outputs of this
/// rank's rows, running statistics, averaged gradients. Returns the distributed step (for further checks).
template <class Net>
step_result check_against_whole_batch(counting_reducer& red, int fwd_calls, int bwd_calls) {
  using T = typename Net::value_type;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  const int W = world(), r = rank();
  Net whole(42), part(42);
  part.set_batch_norm_reducer(red.fn());
  CHECK(part.has_batch_norm_reducer());
  const auto ref = train_step(whole, 0, W * b);
  const auto got = train_step(part, r * b, b);
  CHECK(red.calls == fwd_calls + bwd_calls);
  const std::size_t row = ref.out.size() / std::size_t(W * b);
  INFO("rank " << r << " of " << W);
  CHECK(rel_err(got.out, slice(ref.out, std::size_t(r * b) * row, std::size_t(b) * row)) <= tol);
  REQUIRE(got.buffers.size() == ref.buffers.size());
  for (std::size_t i = 0; i < ref.buffers.size(); ++i) {
    INFO("buffer " << ref.buffer_names[i]);
    CHECK(rel_err(got.buffers[i], ref.buffers[i]) <= tol);
  }
  REQUIRE(got.grads.size() == ref.grads.size());
  double gmax = 0;  // a gradient that is zero but for rounding (a bias before BatchNorm) is compared on the model's scale
  for (const auto& g : ref.grads)
    for (double v : g) gmax = std::max(gmax, std::abs(v));
  for (std::size_t i = 0; i < ref.grads.size(); ++i) {
    auto g = got.grads[i];
    dist_test::ctx().group().all_reduce_raw(g.data(), g.size(), dist::dtype::f64, dist::reduce_op::sum, true).wait();
    for (auto& v : g) v /= W;
    INFO("parameter " << i);
    CHECK(rel_err(g, ref.grads[i], gmax) <= tol);
  }
  // evaluation: the running statistics, no reduction, the whole-batch model's rows
  const int calls = red.calls;
  whole.eval();
  part.eval();
  const auto ye = as_vector(part.predict(rows_of<T, typename Net::input_shape>(r * b, b)));
  const auto we = as_vector(whole.predict(rows_of<T, typename Net::input_shape>(0, W * b)));
  CHECK(red.calls == calls);
  CHECK(rel_err(ye, slice(we, std::size_t(r * b) * row, std::size_t(b) * row)) <= tol);
  return got;
}

/// Per channel of rows [row0, row0 + n) of an [N, C, HW] batch: the mean and the biased variance, by loops.
void channel_stats(index_t row0, index_t n, index_t C, index_t HW, std::vector<double>& mean, std::vector<double>& var) {
  mean.assign(std::size_t(C), 0.0);
  var.assign(std::size_t(C), 0.0);
  const double M = double(n * HW);
  for (index_t c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (index_t r = row0; r < row0 + n; ++r)
      for (index_t i = 0; i < HW; ++i) s += input_value(r, c * HW + i, C * HW);
    const double mu = s / M;
    for (index_t r = row0; r < row0 + n; ++r)
      for (index_t i = 0; i < HW; ++i) q += (input_value(r, c * HW + i, C * HW) - mu) * (input_value(r, c * HW + i, C * HW) - mu);
    mean[std::size_t(c)] = mu;
    var[std::size_t(c)] = q / M;
  }
}
/// BatchNorm2d<3> alone (weight 1, bias 0) on rank r's rows of [N, 3, 5, 5]: y = (x - mean) / sqrt(var + eps) with the
/// statistics of rows [row0, row0 + n), and the running statistics after one step from (0, 1).
template <class T>
void check_bn_alone(const step_result& got, index_t row0, index_t n, double tol) {
  const index_t C = 3, HW = 25, r = rank();
  std::vector<double> mean, var;
  channel_stats(row0, n, C, HW, mean, var);
  std::vector<double> want(std::size_t(b * C * HW));
  for (index_t i = 0; i < b; ++i)
    for (index_t c = 0; c < C; ++c)
      for (index_t k = 0; k < HW; ++k)
        want[std::size_t((i * C + c) * HW + k)] =
            (input_value(r * b + i, c * HW + k, C * HW) - mean[std::size_t(c)]) / std::sqrt(var[std::size_t(c)] + 1e-5);
  CHECK(rel_err(got.out, want) <= tol);
  const auto Cs = std::size_t(C);
  std::vector<double> rm(Cs), rv(Cs);
  const double M = double(n * HW);
  for (std::size_t c = 0; c < Cs; ++c) rm[c] = 0.1 * mean[c], rv[c] = 0.9 + 0.1 * var[c] * M / (M - 1);
  REQUIRE(got.buffers.size() == 2);
  CHECK(rel_err(got.buffers[0], rm) <= tol);
  CHECK(rel_err(got.buffers[1], rv) <= tol);
}

template <class T>
using CNN = typename nn::Sequential<Shape<dyn, 3, 5, 5>, nn::Conv2d<3, 4, 3, {.padding = 1}>, nn::BatchNorm2d<4>, nn::ReLU, nn::Flatten,
                                    nn::Linear<100, 5>>::template on<P, T>;
template <class T>
using MLP = typename nn::Sequential<Shape<dyn, 6>, nn::Linear<6, 5>, nn::BatchNorm1d<5>, nn::ReLU, nn::Linear<5, 3>>::template on<P, T>;
template <class T>
using SeqNet = typename nn::Sequential<Shape<dyn, 4, 6>, nn::BatchNorm1d<4>, nn::Flatten, nn::Linear<24, 3>>::template on<P, T>;
template <class T>
using ResNet = typename nn::Sequential<Shape<dyn, 3, 5, 5>, nn::Residual<nn::Seq<nn::Conv2d<3, 3, 3, {.padding = 1}>, nn::BatchNorm2d<3>>>,
                                       nn::Flatten, nn::Linear<75, 2>>::template on<P, T>;
template <class T>
using BNOnly = typename nn::Sequential<Shape<dyn, 3, 5, 5>, nn::BatchNorm2d<3>>::template on<P, T>;
}  // namespace

TEMPLATE_TEST_CASE("SyncBatchNorm: Conv2d-BatchNorm2d-ReLU-Flatten-Linear on every rank's rows equals the whole batch", "[dist][sbn]",
                   float, double) {
  counting_reducer red;
  check_against_whole_batch<CNN<TestType>>(red, 1, 1);
  CHECK(red.lengths == std::vector<index_t>{2 * 4 + 1, 2 * 4});  // [sum, sumsq, count], then [sum(g), sum(g * xhat)]
}

TEMPLATE_TEST_CASE("SyncBatchNorm: BatchNorm1d on features, on sequences (first layer), inside a Residual", "[dist][sbn]", float,
                   double) {
  {
    counting_reducer red;
    const auto got = check_against_whole_batch<MLP<TestType>>(red, 1, 1);
    CHECK(red.lengths == std::vector<index_t>{2 * 5 + 1, 2 * 5});
    REQUIRE(got.buffers.size() == 3);
    CHECK(got.buffers[2] == std::vector<double>{1.0});  // num_batches_tracked
  }
  {
    counting_reducer red;  // the input takes no gradient: no reduction in the backward (as SyncBatchNorm.backward)
    check_against_whole_batch<SeqNet<TestType>>(red, 1, 0);
    CHECK(red.lengths == std::vector<index_t>{2 * 4 + 1});
  }
  {
    counting_reducer red;
    check_against_whole_batch<ResNet<TestType>>(red, 1, 1);
  }
}

TEMPLATE_TEST_CASE("SyncBatchNorm: BatchNorm2d alone against plain loops over the concatenated batch", "[dist][sbn]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  counting_reducer red;
  BNOnly<T> net(3);
  net.set_batch_norm_reducer(red.fn());
  const auto got = train_step(net, rank() * b, b);
  check_bn_alone<T>(got, 0, world() * b, tol);
}

TEMPLATE_TEST_CASE("SyncBatchNorm: without a reducer each rank normalises with its own statistics", "[dist][sbn]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  const int r = rank();
  {
    BNOnly<T> net(3);
    CHECK(!net.has_batch_norm_reducer());
    check_bn_alone<T>(train_step(net, r * b, b), r * b, b, tol);
  }
  {
    counting_reducer red;  // set, then removed with an empty function
    CNN<T> whole(42), part(42);
    part.set_batch_norm_reducer(red.fn());
    part.set_batch_norm_reducer({});
    CHECK(!part.has_batch_norm_reducer());
    const auto ref = train_step(whole, 0, world() * b);
    const auto got = train_step(part, r * b, b);
    CHECK(red.calls == 0);
    const std::size_t row = ref.out.size() / std::size_t(world() * b);
    CHECK(rel_err(got.out, slice(ref.out, std::size_t(r * b) * row, std::size_t(b) * row)) > 1e-2);
    CHECK(rel_err(got.buffers[0], ref.buffers[0]) > 1e-2);  // running_mean
  }
}

TEMPLATE_TEST_CASE("sync_batch_norm: ranks without rows take part; one value over all ranks is refused on every rank", "[dist][sbn]",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  counting_reducer red;
  const auto reduce = red.fn();
  const index_t C = 3;
  auto params = [&] {
    ts::Tensor<T, Shape<dyn>, P> w(C), bb(C);
    for (index_t c = 0; c < C; ++c) w(c) = T(0.5 + 0.25 * double(c)), bb(c) = T(0.1 * double(c) - 0.1);
    return std::pair{ad::Var<T, 1, P>(w, true), ad::Var<T, 1, P>(bb, true)};
  };
  auto features = [&](index_t n) {
    ts::Tensor<T, Shape<dyn, 3>, P> x(n);
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = T(input_value(i / C, i % C, C));
    return x;
  };
  auto weights = [&](index_t n) {  // the loss sum(y * weights): a gradient of y far from anything BN cancels
    ts::Tensor<T, Shape<dyn, 3>, P> c(n);
    for (index_t i = 0; i < c.size(); ++i) c.data()[i] = T(target_value(i / C, i % C));
    return ad::Var<T, 2, P>(c, false);
  };
  {  // rank 0 holds 5 rows, the others none: rank 0 gets its own batch norm, the running statistics agree everywhere
    const index_t n = rank() == 0 ? 5 : 0;
    auto [w, bb] = params();
    ts::Tensor<T, Shape<dyn>, P> rm(C), rv(C);
    rm = T(0);
    rv = T(1);
    ad::Var<T, 2, P> x(features(n), true);
    auto y = ad::sync_batch_norm(x, w, bb, rm, rv, reduce);
    ad::sum(y * weights(n)).backward();

    auto [w0, b0] = params();
    ts::Tensor<T, Shape<dyn>, P> rm0(C), rv0(C);
    rm0 = T(0);
    rv0 = T(1);
    ad::Var<T, 2, P> x0(features(5), true);
    auto y0 = ad::batch_norm1d(x0, w0, b0, rm0, rv0, true);
    ad::sum(y0 * weights(5)).backward();
    CHECK(red.calls == 2);
    CHECK(rel_err(as_vector(rm), as_vector(rm0)) <= tol);
    CHECK(rel_err(as_vector(rv), as_vector(rv0)) <= tol);
    if (rank() == 0) {
      CHECK(rel_err(as_vector(y.value()), as_vector(y0.value())) <= tol);
      CHECK(rel_err(as_vector(x.grad()), as_vector(x0.grad())) <= tol);
      CHECK(rel_err(as_vector(w.grad()), as_vector(w0.grad())) <= tol);
      CHECK(rel_err(as_vector(bb.grad()), as_vector(b0.grad())) <= tol);
    } else {
      CHECK(y.value().size() == 0);
      CHECK(as_vector(w.grad()) == std::vector<double>(std::size_t(C), 0.0));
    }
  }
  {  // one value per channel over all ranks: refused after the reduction, so on every rank alike
    const index_t n = rank() == 0 ? 1 : 0;
    auto [w, bb] = params();
    ts::Tensor<T, Shape<dyn>, P> rm(C), rv(C);
    rm = T(0);
    rv = T(1);
    ad::Var<T, 2, P> x(features(n), true);
    CHECK_THROWS_AS(ad::sync_batch_norm(x, w, bb, rm, rv, reduce), ts::shape_error);
    CHECK(as_vector(rm) == std::vector<double>(std::size_t(C), 0.0));
    // the channel check comes before any reduction (alike on every rank)
    ad::Var<T, 2, P> x4(ts::Tensor<T, ts::dyn_shape_t<2>, P>(ts::dims_t<2>{4, 4}), false);
    const int calls = red.calls;
    CHECK_THROWS_AS(ad::sync_batch_norm(x4, w, bb, rm, rv, reduce), ts::shape_error);
    CHECK(red.calls == calls);
  }
}
