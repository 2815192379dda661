// layer_norm: the fused forward against plain loops (ranks 2 and 3, over the last one or two axes, with and without
// weight and bias, rows of 1 to 65 elements, float and double, cpu and cpu_threads), gradients of x, weight and bias
// against central finite differences in double, shape errors, and nn::LayerNorm (PyTorch's names, initial values and
// a Sequential over [N, T, E]).
#include <tessera/autodiff/norm_ops.hpp>
#include <tessera/nn/layer_norm.hpp>
#include <tessera/nn/sequential.hpp>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {

/// (x - mean) / sqrt(var + eps) * w + b over rows of `cols` (biased variance), in double.
std::vector<double> reference(const std::vector<double>& x, index_t cols, const double* w, const double* b, double eps) {
  std::vector<double> y(x.size());
  for (std::size_t r = 0; r * std::size_t(cols) < x.size(); ++r) {
    const double* xr = x.data() + r * std::size_t(cols);
    double mean = 0, var = 0;
    for (index_t c = 0; c < cols; ++c) mean += xr[c] / double(cols);
    for (index_t c = 0; c < cols; ++c) var += (xr[c] - mean) * (xr[c] - mean) / double(cols);
    for (index_t c = 0; c < cols; ++c)
      y[r * std::size_t(cols) + std::size_t(c)] = (xr[c] - mean) / std::sqrt(var + eps) * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
  }
  return y;
}

template <class T, class P, int R, int K>
void check_forward(const dims_t<R>& d, bool affine) {
  INFO("dims " << ts::detail::format_dims(d) << " K=" << K << " affine=" << affine << " double=" << (std::is_same_v<T, double>));
  ts::Tensor<T, ts::dyn_shape_t<R>, P> xt(d);
  std::vector<double> x(std::size_t(xt.size()));
  for (index_t i = 0; i < xt.size(); ++i) xt.data()[i] = T(x[std::size_t(i)] = std::sin(0.77 * double(i)) * 2 + 0.3);
  dims_t<K> nd{};
  index_t cols = 1;
  for (int i = 0; i < K; ++i) cols *= nd[i] = d[R - K + i];
  ts::Tensor<T, ts::dyn_shape_t<K>, P> wt(nd), bt(nd);
  std::vector<double> w(static_cast<std::size_t>(cols)), b(static_cast<std::size_t>(cols));
  for (index_t i = 0; i < cols; ++i) {
    wt.data()[i] = T(w[std::size_t(i)] = 0.5 + 0.01 * double(i));
    bt.data()[i] = T(b[std::size_t(i)] = 0.1 * double(i % 7) - 0.2);
  }
  const auto want = reference(x, cols, affine ? w.data() : nullptr, affine ? b.data() : nullptr, 1e-5);
  ad::Var<T, R, P> xv(xt, false);
  auto y = affine ? ad::layer_norm(xv, ad::Var<T, K, P>(wt, true), ad::Var<T, K, P>(bt, true)) : ad::layer_norm<K>(xv);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(double(y.value().data()[i]) == Approx(want[std::size_t(i)]).margin(tol));
}

template <class T, class P>
void forward_suite() {
  for (bool affine : {true, false}) {
    check_forward<T, P, 2, 1>({7, 33}, affine);
    check_forward<T, P, 2, 1>({5, 1}, affine);  // one element: y = bias
    check_forward<T, P, 3, 1>({2, 5, 65}, affine);
    check_forward<T, P, 3, 2>({3, 7, 16}, affine);
    check_forward<T, P, 2, 1>({600, 65}, affine);  // enough rows for the threads
  }
}

}  // namespace

TEST_CASE("layer_norm: forward against plain loops", "[autodiff][layer_norm]") {
  ts::cpu_threads::set_num_threads(2);
  forward_suite<float, ts::cpu>();
  forward_suite<double, ts::cpu>();
  forward_suite<float, ts::cpu_threads>();
  forward_suite<double, ts::cpu_threads>();
}

TEST_CASE("layer_norm: gradients of x, weight and bias against finite differences", "[autodiff][layer_norm]") {
  ts::cpu_threads::set_num_threads(2);
  using V3 = ad::Var<double, 3, ts::cpu_threads>;
  using V1 = ad::Var<double, 1, ts::cpu_threads>;
  using V2 = ad::Var<double, 2, ts::cpu_threads>;
  for (index_t e : {1, 7, 33}) {
    INFO("width " << e);
    V3 x(gc::values<3, ts::cpu_threads>({2, 3, e}, 1), true);
    V1 w(gc::values<1, ts::cpu_threads>({e}, 2), true);
    V1 b(gc::values<1, ts::cpu_threads>({e}, 3), true);
    V3 c(gc::values<3, ts::cpu_threads>({2, 3, e}, 4), false);
    gc::check([&] { return ad::sum(ad::layer_norm(x, w, b) * c); }, x, w, b);
    gc::check([&] { return ad::sum(ad::layer_norm<1>(x) * c); }, x);
    gc::check([&] { return ad::sum(ad::layer_norm(x, w, V1{}, 1e-3) * c); }, x, w);
    // x used twice: layer_norm's gradient is added to the other one's
    gc::check([&] { return ad::sum((ad::layer_norm(x, w, b) + x) * c); }, x, w, b);
  }
  V3 x(gc::values<3, ts::cpu_threads>({2, 3, 5}, 5), true);
  V2 w(gc::values<2, ts::cpu_threads>({3, 5}, 6), true);
  V2 b(gc::values<2, ts::cpu_threads>({3, 5}, 7), true);
  V3 c(gc::values<3, ts::cpu_threads>({2, 3, 5}, 8), false);
  gc::check([&] { return ad::sum(ad::layer_norm(x, w, b) * c); }, x, w, b);  // over the last two axes
}

TEST_CASE("layer_norm: threaded gradients match the single-threaded ones", "[autodiff][layer_norm]") {
  ts::cpu_threads::set_num_threads(2);
  auto run = [](auto tag) {
    using P = decltype(tag);
    ts::Tensor<double, ts::dyn_shape_t<2>, P> xt(dims_t<2>{700, 65});
    for (index_t i = 0; i < xt.size(); ++i) xt.data()[i] = std::cos(0.3 * double(i));
    ad::Var<double, 2, P> x(xt, true);
    ts::Tensor<double, ts::dyn_shape_t<1>, P> wt(dims_t<1>{65});
    for (index_t i = 0; i < 65; ++i) wt.data()[i] = 1.0 + 0.01 * double(i);
    ad::Var<double, 1, P> w(wt, true), b(wt, true);
    ad::sum(ad::layer_norm(x, w, b) * x.detach()).backward();
    std::vector<double> all = x.grad().to_vector();
    for (const auto& t : {w.grad().to_vector(), b.grad().to_vector()}) all.insert(all.end(), t.begin(), t.end());
    return all;
  };
  const auto a = run(ts::cpu{}), t = run(ts::cpu_threads{});
  REQUIRE(a.size() == t.size());
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(t[i] == Approx(a[i]).epsilon(1e-12).margin(1e-12));
}

TEST_CASE("layer_norm: shape errors name both shapes", "[autodiff][layer_norm]") {
  ad::Var<float, 2> x(ts::Tensor<float, ts::dyn_shape_t<2>>(dims_t<2>{4, 6}), false);
  ad::Var<float, 1> w(ts::Tensor<float, ts::dyn_shape_t<1>>(dims_t<1>{5}), true);
  CHECK_THROWS_WITH(ad::layer_norm(x, w), Catch::Contains("[5]") && Catch::Contains("[4, 6]"));
}

TEST_CASE("nn::LayerNorm: PyTorch's parameters and values, in a Sequential over [N, T, E]", "[nn][layer_norm]") {
  using Net = ts::nn::Sequential<ts::Shape<ts::dyn, 5, 8>, ts::nn::LayerNorm<8>>;
  Net net(1);
  std::vector<std::string> names;
  net.for_each_parameter([&](const std::string& n, auto& p) {
    names.push_back(n);
    for (index_t i = 0; i < p.size(); ++i) CHECK(p.value().data()[i] == (n.find("weight") != std::string::npos ? 1.0f : 0.0f));
  });
  REQUIRE(names.size() == 2);
  CHECK(names[0].find("weight") != std::string::npos);
  CHECK(names[1].find("bias") != std::string::npos);
  ts::Tensor<float, ts::Shape<ts::dyn, 5, 8>> x(3);
  std::vector<double> xv(std::size_t(x.size()));
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(xv[std::size_t(i)] = double(i % 11) - 4.0);
  const auto want = reference(xv, 8, nullptr, nullptr, 1e-5);
  auto y = net.predict(x);
  for (index_t i = 0; i < y.size(); ++i) CHECK(y.data()[i] == Approx(want[std::size_t(i)]).margin(1e-5));
  static_assert(!ts::nn::LayerNorm<8>::accepts<ts::Shape<ts::dyn, 5, 7>>);
  static_assert(std::is_same_v<ts::nn::LayerNorm<8>::expected<ts::Shape<ts::dyn, 5, 7>>, ts::Shape<ts::dyn, 5, 8>>);
  ts::Rng rng(1);
  ts::nn::LayerNorm<4, ts::layer_norm_options{.elementwise_affine = false}>::state<double, ts::cpu> plain(rng);
  int count = 0;
  plain.for_each_parameter("", [&](const std::string&, auto&) { ++count; });
  CHECK(count == 0);
}
