// nn::Embedding and ad::embedding: the lookup against plain loops for int32 and int64 indices of rank 1 and 2,
// PyTorch's initialisation (N(0, 1), padding row zero), the weight's gradient against finite differences (double,
// duplicate indices) and against the scatter-add written as loops (padding_idx: no gradient for its row; a second
// backward accumulates), out-of-range indices, and a Sequential that takes integer indices.
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/sequential.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
/// Indices [N, T] with duplicates: (i * 5 + 3) % num.
template <class I>
ts::Tensor<I, ts::dyn_shape_t<2>> indices(index_t N, index_t T, index_t num) {
  ts::Tensor<I, ts::dyn_shape_t<2>> t(ts::dims_t<2>{N, T});
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = I((i * 5 + 3) % num);
  return t;
}
}  // namespace

TEMPLATE_TEST_CASE("embedding forward against loops (int32 and int64, [N] and [N, T])", "[nn][embedding]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  ts::Rng rng(3);
  typename nn::Embedding<7, 5>::template state<float, P> e(rng);
  nn::context ctx;
  const auto& w = e.weight.value();
  auto idx64 = indices<std::int64_t>(4, 3, 7);
  auto y = e.forward(idx64, ctx);
  STATIC_REQUIRE(decltype(y)::rank == 3);
  REQUIRE(y.dims() == ts::dims_t<3>{4, 3, 5});
  for (index_t n = 0; n < 4; ++n)
    for (index_t t = 0; t < 3; ++t)
      for (index_t j = 0; j < 5; ++j) CHECK(y.value()(n, t, j) == w(index_t(idx64(n, t)), j));
  ts::Tensor<std::int32_t, Shape<dyn>> idx32(ts::dims_t<1>{33});
  for (index_t i = 0; i < 33; ++i) idx32.data()[i] = std::int32_t((i * 3) % 7);
  auto y1 = e.forward(idx32, ctx);
  REQUIRE(y1.dims() == ts::dims_t<2>{33, 5});
  for (index_t n = 0; n < 33; ++n)
    for (index_t j = 0; j < 5; ++j) CHECK(y1.value()(n, j) == w((n * 3) % 7, j));
  // a non-contiguous index view (every other column)
  auto tr = ts::transpose(idx64.cview());
  auto y2 = e.forward(ts::Tensor<std::int64_t, ts::dyn_shape_t<2>>(tr), ctx);
  for (index_t n = 0; n < 3; ++n)
    for (index_t t = 0; t < 4; ++t)
      for (index_t j = 0; j < 5; ++j) CHECK(y2.value()(n, t, j) == w(index_t(idx64(t, n)), j));
}

TEST_CASE("embedding initialisation: N(0, 1), the padding row zero", "[nn][embedding]") {
  ts::Rng rng(1);
  nn::Embedding<1000, 16, nn::embedding_options{.padding_idx = 3}>::state<double, ts::cpu> e(rng);
  const auto& w = e.weight.value();
  double s = 0, s2 = 0;
  for (index_t i = 0; i < w.size(); ++i) s += w.data()[i], s2 += w.data()[i] * w.data()[i];
  const double mean = s / double(w.size()), var = s2 / double(w.size()) - mean * mean;
  CHECK(std::abs(mean) < 0.03);  // 16000 draws: the standard error of the mean is 0.008
  CHECK(var == Approx(1.0).margin(0.05));
  for (index_t j = 0; j < 16; ++j) CHECK(w(3, j) == 0.0);
  CHECK(w(4, 0) != 0.0);
  std::vector<std::string> names;
  e.for_each_parameter("2.", [&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"2.weight"});
}

TEMPLATE_TEST_CASE("embedding gradient: finite differences and the scatter-add by loops", "[nn][embedding]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  const index_t num = 7, dim = 3, N = 5, T = 4;  // 20 indices into 7 rows: duplicates
  ad::Var<double, 2, P> W(gc::values<2, P>({num, dim}, 1), true);
  auto idx = indices<std::int64_t>(N, T, num);
  ad::Var<double, 3, P> c(gc::values<3, P>({N, T, dim}, 4), false);  // the loss's weights: sum(c * emb)
  SECTION("finite differences, duplicates accumulate") {
    gc::check([&] { return ad::sum(ad::embedding(W, idx) * c); }, W);
  }
  SECTION("padding_idx: its row gets no gradient, the others the sum of their rows; a second backward accumulates") {
    const index_t pad = 3;
    W.zero_grad();
    ad::sum(ad::embedding(W, idx, pad) * c).backward();
    std::vector<double> want(std::size_t(num * dim), 0.0);
    for (index_t i = 0; i < N * T; ++i) {
      const index_t r = index_t(idx.data()[i]);
      if (r == pad) continue;
      for (index_t j = 0; j < dim; ++j) want[std::size_t(r * dim + j)] += c.value().data()[i * dim + j];
    }
    for (index_t k = 0; k < num * dim; ++k) CHECK(W.grad().data()[k] == Approx(want[std::size_t(k)]).epsilon(1e-12).margin(1e-14));
    for (index_t j = 0; j < dim; ++j) CHECK(W.grad()(pad, j) == 0.0);
    ad::sum(ad::embedding(W, idx, pad) * c).backward();
    for (index_t k = 0; k < num * dim; ++k) CHECK(W.grad().data()[k] == Approx(2 * want[std::size_t(k)]).epsilon(1e-12).margin(1e-14));
  }
}

TEST_CASE("embedding: an index outside [0, Num) throws, naming the index and Num", "[nn][embedding]") {
  ts::Rng rng(2);
  nn::Embedding<7, 2>::state<float, ts::cpu> e(rng);
  nn::context ctx;
  ts::Tensor<std::int64_t, Shape<3>> bad;
  bad.data()[0] = 1, bad.data()[1] = 7, bad.data()[2] = 0;
  CHECK_THROWS_AS(e.forward(bad, ctx), std::out_of_range);
  CHECK_THROWS_WITH(e.forward(bad, ctx), Catch::Contains("index 7") && Catch::Contains("[0, 7)"));
  bad.data()[1] = -1;
  CHECK_THROWS_WITH(e.forward(bad, ctx), Catch::Contains("index -1") && Catch::Contains("position 1"));
  ad::Var<float, 2> W(ts::Tensor<float, Shape<dyn, dyn>>(ts::dims_t<2>{7, 2}), true);
  ts::Tensor<std::int32_t, Shape<1>> ok;
  ok.data()[0] = 2;
  CHECK_THROWS_AS(ad::embedding(W, ok, 7), std::out_of_range);  // padding_idx past the table
}

TEMPLATE_TEST_CASE("a Sequential that takes integer indices", "[nn][embedding]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  using Net = typename nn::Sequential<Shape<dyn, 3>, nn::Embedding<10, 4>, nn::Flatten, nn::Linear<12, 2>>::template on<P, double>;
  STATIC_REQUIRE(Net::takes_indices);
  STATIC_REQUIRE(std::is_same_v<typename Net::output_shape, Shape<dyn, 2>>);
  Net net(5);
  std::vector<std::string> names;
  net.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names == std::vector<std::string>{"0.weight", "2.weight", "2.bias"});
  auto idx = indices<std::int64_t>(6, 3, 10);
  const auto y = net.predict(idx);
  REQUIRE(y.dims() == ts::dims_t<2>{6, 2});
  const auto& E = net.template layer<0>().weight.value();
  const auto& L = net.template layer<2>().weight.value();
  const auto& b = net.template layer<2>().bias.value();
  for (index_t n = 0; n < 6; ++n)
    for (index_t o = 0; o < 2; ++o) {
      double s = b(o);
      for (index_t t = 0; t < 3; ++t)
        for (index_t j = 0; j < 4; ++j) s += E(index_t(idx(n, t)), j) * L(o, t * 4 + j);
      CHECK(y(n, o) == Approx(s).epsilon(1e-12));
    }
  // int32 indices give the same; the gradients reach the table
  ts::Tensor<std::int32_t, ts::dyn_shape_t<2>> idx32(ts::cast<std::int32_t>(idx));
  const auto y32 = net.predict(idx32);
  for (index_t i = 0; i < y.size(); ++i) CHECK(y32.data()[i] == y.data()[i]);
  net.zero_grad();
  ad::sum(net.forward(idx32)).backward();
  REQUIRE(net.template layer<0>().weight.has_grad());
  CHECK(net.template layer<0>().weight.grad()(index_t(idx(0, 0)), 0) != 0.0);
  ts::Tensor<std::int64_t, Shape<dyn, 4>> wrong(ts::dims_t<2>{2, 4});
  wrong = std::int64_t(0);
  CHECK_THROWS_AS(net.predict(ts::Tensor<std::int64_t, ts::dyn_shape_t<2>>(wrong)), ts::shape_error);  // 4 steps, not 3
}
