// Embedding's max_norm / norm_type (PyTorch's torch.embedding_renorm_ before the lookup): the rows looked up whose
// norm exceeds max_norm are renormalised in the weight and the others left bit for bit (p = 1, 2, 3, infinity, odd
// sizes, float and double, cpu and cpu_threads), the forward returns the renormalised rows, numbers computed by
// torch 1.13, the weight's gradient (no gradient through the renorm: the plain scatter-add of the output's
// gradient), and the bad options.
#include <tessera/nn/embedding.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::index_t;

namespace {
double pnorm(const double* r, index_t dim, double p) {
  double s = 0;
  if (std::isinf(p)) {
    for (index_t j = 0; j < dim; ++j) s = std::max(s, std::abs(r[j]));
    return s;
  }
  for (index_t j = 0; j < dim; ++j) s += std::pow(std::abs(r[j]), p);
  return std::pow(s, 1.0 / p);
}

/// Looks up indices [N, T] through ad::embedding with max_norm and checks the weight and the output against loops.
template <class T, class P>
void check_renorm(index_t num, index_t dim, index_t N, index_t Tn, double max_norm, double p) {
  std::vector<double> w0(std::size_t(num * dim));
  const auto v = gc::values<1>({num * dim}, 7, -2.0, 2.0);
  for (index_t i = 0; i < num * dim; ++i) w0[std::size_t(i)] = double(T(v.data()[i]));
  ts::Tensor<std::int64_t, ts::dyn_shape_t<2>> idx(ts::dims_t<2>{N, Tn});
  std::vector<bool> looked(std::size_t(num), false);
  for (index_t i = 0; i < idx.size(); ++i) {
    idx.data()[i] = (i * 3 + 1) % num;  // duplicates when N * T > num; some rows never looked up
    looked[std::size_t(idx.data()[i])] = true;
  }
  std::vector<T> wt(w0.begin(), w0.end());
  ad::Var<T, 2, P> W(ts::Tensor<T, ts::dyn_shape_t<2>, P>(wt, ts::dims_t<2>{num, dim}), true);
  const auto y = ad::embedding(W, idx, -1, max_norm, p);
  // the weight: looked-up rows over max_norm scaled by max_norm / (norm + 1e-7), every other row unchanged
  const T* w = W.value().data();
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  int scaled = 0;
  for (index_t r = 0; r < num; ++r) {
    const double n = pnorm(w0.data() + r * dim, dim, p);
    const bool renorm = looked[std::size_t(r)] && n > max_norm;
    scaled += renorm;
    for (index_t j = 0; j < dim; ++j) {
      INFO("row " << r << " column " << j << " norm " << n);
      const double before = w0[std::size_t(r * dim + j)];
      if (renorm) CHECK(double(w[r * dim + j]) == Approx(before * max_norm / (n + 1e-7)).epsilon(tol).margin(tol));
      else CHECK(double(w[r * dim + j]) == before);  // untouched, bit for bit
    }
    if (renorm) CHECK(pnorm(std::vector<double>(w + r * dim, w + (r + 1) * dim).data(), dim, p) <= max_norm * (1 + tol));
  }
  CHECK(scaled > 0);  // the case renormalises something
  // the output: the (renormalised) rows
  for (index_t i = 0; i < idx.size(); ++i)
    for (index_t j = 0; j < dim; ++j) CHECK(y.value().data()[i * dim + j] == w[idx.data()[i] * dim + j]);
}
}  // namespace

TEMPLATE_TEST_CASE("embedding max_norm renormalises the rows looked up, in place", "[nn][embedding]", ts::cpu, ts::cpu_threads) {
  using P = TestType;
  for (double p : {2.0, 1.0, 3.0, std::numeric_limits<double>::infinity()}) {
    INFO("norm_type " << p);
    check_renorm<double, P>(7, 5, 2, 3, 1.0, p);
    check_renorm<float, P>(7, 5, 2, 3, 1.0, p);
    check_renorm<float, P>(33, 65, 3, 7, 1.5, p);
    check_renorm<double, P>(65, 1, 7, 1, 0.5, p);
    check_renorm<float, P>(1, 33, 1, 1, 0.25, p);
  }
}

TEST_CASE("Embedding max_norm: PyTorch's numbers", "[nn][embedding]") {
  // w = [[1,2,2],[0.1,0.2,0.2],[-3,0,4],[0.5,-0.5,0.5],[2,-1,0]]; e = nn.Embedding.from_pretrained(w, freeze=False,
  // max_norm=mn, norm_type=p); e(torch.tensor([[2, 0], [2, 3]])); e.weight.flatten().tolist()
  const std::vector<double> w0 = {1.0, 2.0, 2.0, 0.1, 0.2, 0.2, -3.0, 0.0, 4.0, 0.5, -0.5, 0.5, 2.0, -1.0, 0.0};
  struct expect {
    double max_norm, p;
    std::vector<double> w;
  };
  const std::vector<expect> cases = {
      {1.5, 2.0, {0.4999999833333339, 0.9999999666666678, 0.9999999666666678, 0.1, 0.2, 0.2, -0.8999999820000003, 0.0,
                  1.1999999760000004, 0.5, -0.5, 0.5, 2.0, -1.0, 0.0}},
      {1.0, 1.0, {0.19999999600000007, 0.39999999200000014, 0.39999999200000014, 0.1, 0.2, 0.2, -0.42857142244897967, 0.0,
                  0.5714285632653062, 0.3333333111111126, -0.3333333111111126, 0.3333333111111126, 2.0, -1.0, 0.0}},
      {2.5, std::numeric_limits<double>::infinity(),
       {1.0, 2.0, 2.0, 0.1, 0.2, 0.2, -1.874999953125001, 0.0, 2.4999999375000015, 0.5, -0.5, 0.5, 2.0, -1.0, 0.0}},
      {1.2, 3.0, {0.4666933243291621, 0.9333866486583242, 0.9333866486583242, 0.1, 0.2, 0.2, -0.8003661149801731, 0.0,
                  1.067154819973564, 0.5, -0.5, 0.5, 2.0, -1.0, 0.0}},
  };
  ts::Tensor<std::int64_t, ts::dyn_shape_t<2>> idx({2, 0, 2, 3}, ts::dims_t<2>{2, 2});
  for (const auto& c : cases) {
    INFO("max_norm " << c.max_norm << " norm_type " << c.p);
    ad::Var<double, 2, ts::cpu> W(ts::Tensor<double, ts::dyn_shape_t<2>, ts::cpu>(w0, ts::dims_t<2>{5, 3}), true);
    ad::embedding(W, idx, -1, c.max_norm, c.p);
    for (std::size_t i = 0; i < c.w.size(); ++i) CHECK(W.value().data()[i] == Approx(c.w[i]).epsilon(1e-14).margin(1e-15));
  }
}

TEST_CASE("Embedding max_norm through the layer: values and the weight's gradient", "[nn][embedding]") {
  ts::Rng rng(5);
  nn::Embedding<9, 4, nn::embedding_options{.max_norm = 1.0}>::state<double, ts::cpu_threads> e(rng);  // N(0, 1) rows
  nn::context ctx;
  const std::vector<double> w0(e.weight.value().data(), e.weight.value().data() + 36);
  ts::Tensor<int, ts::dyn_shape_t<2>> idx({1, 4, 4, 7, 1, 2}, ts::dims_t<2>{2, 3});
  auto y = e.forward(idx, ctx);
  const ts::Tensor<double, ts::dyn_shape_t<3>, ts::cpu_threads> k(gc::values<3, ts::cpu_threads>({2, 3, 4}, 3));
  ad::sum(y * ad::Var<double, 3, ts::cpu_threads>(k, false)).backward();
  // the gradient is the plain scatter-add of the output's gradient (none through the renorm)
  std::vector<double> ref(36, 0.0);
  for (index_t i = 0; i < 6; ++i)
    for (index_t j = 0; j < 4; ++j) ref[std::size_t(idx.data()[i] * 4 + j)] += k.data()[i * 4 + j];
  for (index_t i = 0; i < 36; ++i) CHECK(e.weight.grad().data()[i] == Approx(ref[std::size_t(i)]).epsilon(1e-15).margin(1e-15));
  for (index_t r = 0; r < 9; ++r) {
    const bool looked = r == 1 || r == 2 || r == 4 || r == 7;
    const double n = pnorm(w0.data() + r * 4, 4, 2.0);
    if (!looked || n <= 1.0)
      for (index_t j = 0; j < 4; ++j) CHECK(e.weight.value().data()[r * 4 + j] == w0[std::size_t(r * 4 + j)]);
    else CHECK(pnorm(e.weight.value().data() + r * 4, 4, 2.0) == Approx(1.0).epsilon(1e-6));
  }
  // a second lookup of already renormalised rows changes nothing
  const std::vector<double> w1(e.weight.value().data(), e.weight.value().data() + 36);
  e.forward(idx, ctx);
  for (index_t i = 0; i < 36; ++i) CHECK(e.weight.value().data()[i] == w1[std::size_t(i)]);
}

TEST_CASE("Embedding max_norm: bad options", "[nn][embedding]") {
  ad::Var<double, 2, ts::cpu> W(gc::values<2>({4, 3}, 1), true);
  ts::Tensor<std::int64_t, ts::dyn_shape_t<1>> idx({1, 2}, ts::dims_t<1>{2});
  CHECK_THROWS_AS(ad::embedding(W, idx, -1, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(ad::embedding(W, idx, -1, 1.0, 0.0), std::invalid_argument);
  CHECK_NOTHROW(ad::embedding(W, idx, -1, 0.0, 0.0));  // max_norm 0: off, norm_type unused
}
