// The layers of nn/embedding.hpp, nn/batchnorm1d.hpp and nn/composition.hpp on the cuda policy against the same
// operations on cpu_threads: ad::embedding's rows and its weight gradient (duplicate indices, padding_idx; the
// device's scatter-add sums each row's gradient rows in input order, so the results are equal to rounding),
// ad::embedding with max_norm (the rows renormalised in the weight), ad::batch_norm1d in training and evaluation,
// and a Residual model's output and parameter gradients. float; values compared to 1e-5 relative. Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <tessera/nn/batchnorm1d.hpp>
#include <tessera/nn/composition.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
using ts::dims_t;
using ts::dyn;
using ts::index_t;

namespace {
template <int R>
ts::Tensor<float, ts::dyn_shape_t<R>> values(const dims_t<R>& d, int salt) {
  ts::Tensor<float, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) {
    double v = -1.0 + 2.0 * double((i * 7919 + salt * 104729 + 17) % 1000) / 1000.0;
    if (v > -0.05 && v < 0.05) v += 0.1;
    t.data()[i] = float(v);
  }
  return t;
}
template <class A, class B>
void check_close(const A& host, const B& device, const char* what) {
  const auto d = ts::to<ts::cpu>(device);
  REQUIRE(host.dims() == d.dims());
  for (index_t i = 0; i < host.size(); ++i) {
    INFO(what << " element " << i);
    CHECK(d.data()[i] == Approx(host.data()[i]).epsilon(1e-5).margin(1e-6));
  }
}
}  // namespace

TEST_CASE("cuda: embedding rows and weight gradient equal the host's", "[cuda][embedding]") {
  ts::Tensor<std::int64_t, ts::dyn_shape_t<2>> idx(dims_t<2>{9, 7});
  for (index_t i = 0; i < idx.size(); ++i) idx.data()[i] = (i * 5 + 3) % 11;  // duplicates, row 4 among them
  const auto w = values<2>({11, 33}, 1);
  const auto c = values<3>({9, 7, 33}, 2);
  for (index_t pad : {index_t(-1), index_t(4)}) {
    INFO("padding_idx " << pad);
    ad::Var<float, 2, ts::cpu_threads> wh(ts::to<ts::cpu_threads>(w), true);
    ad::Var<float, 2, ts::cuda> wd(ts::to<ts::cuda>(w), true);
    auto yh = ad::embedding(wh, idx, pad);
    auto yd = ad::embedding(wd, idx, pad);
    check_close(yh.value(), yd.value(), "rows");
    ad::sum(yh * ad::Var<float, 3, ts::cpu_threads>(ts::to<ts::cpu_threads>(c), false)).backward();
    ad::sum(yd * ad::Var<float, 3, ts::cuda>(ts::to<ts::cuda>(c), false)).backward();
    check_close(wh.grad(), wd.grad(), "weight gradient");
  }
  ts::Tensor<std::int32_t, ts::Shape<1>> bad;
  bad.data()[0] = 11;
  ad::Var<float, 2, ts::cuda> wd(ts::to<ts::cuda>(w), true);
  CHECK_THROWS_AS(ad::embedding(wd, bad), std::out_of_range);
}

TEST_CASE("cuda: embedding max_norm renormalises the same rows as the host", "[cuda][embedding]") {
  ts::Tensor<std::int64_t, ts::dyn_shape_t<2>> idx(dims_t<2>{9, 7});
  for (index_t i = 0; i < idx.size(); ++i) idx.data()[i] = (i * 5 + 3) % 13;  // rows 0 .. 12 of 17: some never looked up
  const auto w = values<2>({17, 33}, 3);
  const auto c = values<3>({9, 7, 33}, 4);
  for (double p : {2.0, 1.0, 3.0}) {
    INFO("norm_type " << p);
    ad::Var<float, 2, ts::cpu_threads> wh(ts::to<ts::cpu_threads>(w), true);
    ad::Var<float, 2, ts::cuda> wd(ts::to<ts::cuda>(w), true);
    auto yh = ad::embedding(wh, idx, -1, 2.0, p);
    auto yd = ad::embedding(wd, idx, -1, 2.0, p);
    check_close(wh.value(), wd.value(), "renormalised weight");
    check_close(yh.value(), yd.value(), "rows");
    ad::sum(yh * ad::Var<float, 3, ts::cpu_threads>(ts::to<ts::cpu_threads>(c), false)).backward();
    ad::sum(yd * ad::Var<float, 3, ts::cuda>(ts::to<ts::cuda>(c), false)).backward();
    check_close(wh.grad(), wd.grad(), "weight gradient");
  }
}

TEST_CASE("cuda: batch_norm1d equals the host's (train and eval, [N, C] and [N, C, L])", "[cuda][batchnorm1d]") {
  const auto x2 = values<2>({33, 5}, 3);
  const auto x3 = values<3>({7, 5, 9}, 4);
  const auto g = values<1>({5}, 5), b = values<1>({5}, 6);
  for (bool training : {true, false}) {
    INFO("training " << training);
    auto run = [&](auto pol, const auto& xh) {
      using P = decltype(pol);
      constexpr int R = std::remove_cvref_t<decltype(xh)>::rank;
      ad::Var<float, R, P> x(ts::to<P>(xh), true);
      ad::Var<float, 1, P> gv(ts::to<P>(g), true), bv(ts::to<P>(b), true);
      ts::Tensor<float, ts::Shape<dyn>, P> rm(ts::to<P>(values<1>({5}, 7))), rv(ts::to<P>(values<1>({5}, 8)));
      rv = ts::abs(rv) + 0.5f;
      auto y = ad::batch_norm1d(x, gv, bv, rm, rv, training);
      ad::sum(y * ad::Var<float, R, P>(ts::to<P>(values<R>(y.dims(), 9)), false)).backward();
      return std::make_tuple(ts::to<ts::cpu>(y.value()), ts::to<ts::cpu>(x.grad()), ts::to<ts::cpu>(gv.grad()),
                             ts::to<ts::cpu>(rm), ts::to<ts::cpu>(rv));
    };
    const auto h2 = run(ts::cpu_threads{}, x2);
    const auto d2 = run(ts::cuda{}, x2);
    check_close(std::get<0>(h2), std::get<0>(d2), "y [N, C]");
    check_close(std::get<1>(h2), std::get<1>(d2), "dx [N, C]");
    check_close(std::get<2>(h2), std::get<2>(d2), "dgamma [N, C]");
    check_close(std::get<3>(h2), std::get<3>(d2), "running_mean");
    check_close(std::get<4>(h2), std::get<4>(d2), "running_var");
    const auto h3 = run(ts::cpu_threads{}, x3);
    const auto d3 = run(ts::cuda{}, x3);
    check_close(std::get<0>(h3), std::get<0>(d3), "y [N, C, L]");
    check_close(std::get<1>(h3), std::get<1>(d3), "dx [N, C, L]");
  }
}

TEST_CASE("cuda: a Residual model with BatchNorm1d equals the host's (output and parameter gradients)", "[cuda][residual]") {
  using Net = nn::Sequential<ts::Shape<dyn, 7>,
                             nn::Residual<nn::Seq<nn::Linear<7, 9>, nn::BatchNorm1d<9>, nn::ReLU, nn::Linear<9, 9>>, nn::Linear<7, 9>>,
                             nn::Linear<9, 3>>;
  typename Net::on<ts::cpu_threads> host(3);
  typename Net::on<ts::cuda> dev(3);  // the same seed: the same parameters (drawn on the host)
  const auto x = values<2>({17, 7}, 10);
  auto yh = host.forward(ts::to<ts::cpu_threads>(x));
  auto yd = dev.forward(ts::to<ts::cuda>(x));
  check_close(yh.value(), yd.value(), "logits");
  ad::sum(yh).backward();
  ad::sum(yd).backward();
  std::vector<std::vector<float>> gh;
  host.for_each_parameter([&](const std::string&, auto& v) { gh.emplace_back(v.grad().data(), v.grad().data() + v.size()); });
  std::size_t k = 0;
  dev.for_each_parameter([&](const std::string& name, auto& v) {
    INFO(name);
    auto h = ts::to<ts::cpu>(v.grad());
    for (index_t i = 0; i < v.size(); ++i) CHECK(h.data()[i] == Approx(gh[k][std::size_t(i)]).epsilon(1e-4).margin(1e-5));
    ++k;
  });
  CHECK(k == gh.size());
}
