// nn::Linear on inputs of rank 3 and 4 ([*, In] -> [*, Out] over the last axis, as PyTorch's): values against plain
// loops (odd sizes, with and without bias, each fused activation, float and double, cpu and cpu_threads), gradients
// of the input, weight and bias by central differences, the static shapes (accepts / output), a Sequential with
// Linear and its fused ReLU after a [N, T, F] layer, and the shape error naming both shapes.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <tessera/nn/recurrent.hpp>
#include <tessera/nn/sequential.hpp>
#include <type_traits>
#include <vector>

#include "../autodiff/gradcheck.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
double act_ref(double v, ad::activation a) {
  switch (a) {
    case ad::activation::relu: return v > 0 ? v : 0.0;
    case ad::activation::tanh: return std::tanh(v);
    case ad::activation::sigmoid: return 1.0 / (1.0 + std::exp(-v));
    default: return v;
  }
}

/// y[m, o] = act(sum_i x[m, i] W[o, i] + b[o]) over the rows m of the leading axes, in double.
std::vector<double> linear_ref(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b, index_t M,
                               index_t I, index_t O, ad::activation a) {
  std::vector<double> y(std::size_t(M * O));
  for (index_t m = 0; m < M; ++m)
    for (index_t o = 0; o < O; ++o) {
      double s = b.empty() ? 0.0 : b[std::size_t(o)];
      for (index_t i = 0; i < I; ++i) s += x[std::size_t(m * I + i)] * w[std::size_t(o * I + i)];
      y[std::size_t(m * O + o)] = act_ref(s, a);
    }
  return y;
}

template <class V>
std::vector<double> host_values(const V& v) {
  std::vector<double> o;
  if (!v.defined()) return o;
  const auto h = ts::to<ts::cpu>(v.value());
  for (index_t i = 0; i < h.size(); ++i) o.push_back(double(h.data()[i]));
  return o;
}

template <int In, int Out, bool Bias, int R, class T, class P>
void check_values(const ts::dims_t<R>& xd, ad::activation a) {
  ts::Rng rng(17);
  typename nn::Linear<In, Out, Bias>::template state<T, P> st(rng);
  ts::Tensor<T, ts::dyn_shape_t<R>, ts::cpu> xh(xd);
  std::vector<double> xr(std::size_t(xh.size()));
  for (index_t i = 0; i < xh.size(); ++i) {
    xr[std::size_t(i)] = double(T(gc::values<1>({xh.size()}, 4).data()[i]));
    xh.data()[i] = T(xr[std::size_t(i)]);
  }
  ad::Var<T, R, P> x(ts::to<P>(xh), false);
  nn::context ctx{false, &rng};
  const auto y = st.forward(x, ctx, a);
  ts::dims_t<R> yd = xd;
  yd[R - 1] = Out;
  REQUIRE(y.dims() == yd);
  const index_t M = xh.size() / In;
  const auto ref = linear_ref(xr, host_values(st.weight), host_values(st.bias), M, In, Out, a);
  const auto got = host_values(y);
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  for (std::size_t k = 0; k < ref.size(); ++k) {
    INFO("element " << k);
    CHECK(got[k] == Approx(ref[k]).epsilon(tol).margin(tol));
  }
}

template <class T, class P>
void values_all() {
  for (auto a : {ad::activation::none, ad::activation::relu, ad::activation::tanh, ad::activation::sigmoid}) {
    INFO("activation " << int(a));
    check_values<7, 5, true, 3, T, P>({2, 3, 7}, a);
    check_values<7, 5, false, 3, T, P>({1, 1, 7}, a);
    check_values<33, 65, true, 3, T, P>({3, 7, 33}, a);
    check_values<1, 1, true, 4, T, P>({2, 3, 1, 1}, a);
    check_values<65, 7, true, 4, T, P>({2, 1, 3, 65}, a);
    check_values<3, 33, false, 4, T, P>({7, 2, 1, 3}, a);
  }
}

template <int In, int Out, bool Bias, int R, class P>
void check_gradients(const ts::dims_t<R>& xd, ad::activation a) {
  ts::Rng rng(19);
  typename nn::Linear<In, Out, Bias>::template state<double, P> st(rng);
  ad::Var<double, R, P> x(gc::values<R, P>(xd, 1), true);
  nn::context ctx{true, &rng};
  auto loss = [&] { return gc::weighted(st.forward(x, ctx, a), 2); };
  gc::check(loss, x);
  gc::check(loss, st.weight);
  if constexpr (Bias) gc::check(loss, st.bias);
}
}  // namespace

TEST_CASE("Linear over the last axis of rank-3 and rank-4 inputs against loops", "[nn][linear]") {
  values_all<double, ts::cpu>();
  values_all<float, ts::cpu_threads>();
  values_all<float, ts::cpu>();
  values_all<double, ts::cpu_threads>();
}

TEST_CASE("Linear on rank 3 and 4: gradients by central differences", "[nn][linear]") {
  check_gradients<3, 4, true, 3, ts::cpu>({2, 3, 3}, ad::activation::none);
  check_gradients<3, 4, true, 3, ts::cpu_threads>({2, 3, 3}, ad::activation::tanh);
  check_gradients<5, 2, false, 4, ts::cpu>({2, 1, 3, 5}, ad::activation::sigmoid);
  check_gradients<2, 7, true, 4, ts::cpu_threads>({1, 2, 3, 2}, ad::activation::relu);
}

TEST_CASE("Linear's static shapes for rank 2 and more", "[nn][linear]") {
  using L = nn::Linear<7, 5>;
  STATIC_REQUIRE(L::accepts<Shape<dyn, 7>>);
  STATIC_REQUIRE(L::accepts<Shape<dyn, 4, 7>>);
  STATIC_REQUIRE(L::accepts<Shape<2, dyn, 3, dyn>>);
  STATIC_REQUIRE(!L::accepts<Shape<dyn, 7, 4>>);
  STATIC_REQUIRE(!L::accepts<Shape<7>>);
  STATIC_REQUIRE(std::is_same_v<L::output<Shape<dyn, 7>>, Shape<dyn, 5>>);
  STATIC_REQUIRE(std::is_same_v<L::output<Shape<dyn, 4, 7>>, Shape<dyn, 4, 5>>);
  STATIC_REQUIRE(std::is_same_v<L::output<Shape<2, dyn, 3, dyn>>, Shape<2, dyn, 3, 5>>);
  STATIC_REQUIRE(std::is_same_v<L::expected<Shape<dyn, 4, 9>>, Shape<dyn, 4, 7>>);
}

TEST_CASE("a Sequential with Linear after a [N, T, F] layer", "[nn][linear]") {
  // GRU [N, T, 3] -> [N, T, 8]; Linear and its fused ReLU on [N, T, 8]; Linear -> [N, T, 2]
  using Net = nn::Sequential<Shape<dyn, 6, 3>, nn::GRU<3, 8, ts::gru_options{.batch_first = true}>, nn::Linear<8, 4>, nn::ReLU,
                             nn::Linear<4, 2>>;
  static_assert(Net::shapes_fit, "a Linear after a sequence layer fits");
  static_assert(std::is_same_v<Net::output_shape, Shape<dyn, 6, 2>>, "Linear keeps the leading axes");
  using NetD = Net::on<ts::cpu, double>;
  NetD net(5);
  net.eval();
  std::vector<std::vector<double>> p;
  net.for_each_parameter([&](const std::string&, auto& v) { p.push_back(host_values(v)); });
  REQUIRE(p.size() == 8);  // GRU: 4; two Linears: weight and bias each
  // the GRU's output from a separately built state with the same parameters
  ts::Rng rng(1);
  nn::GRU<3, 8, ts::gru_options{.batch_first = true}>::state<double, ts::cpu> gru(rng);
  std::size_t k = 0;
  gru.for_each_parameter("", [&](const std::string&, auto& v) {
    auto h = ts::to<ts::cpu>(v.value());
    for (index_t i = 0; i < h.size(); ++i) h.data()[i] = p[k][std::size_t(i)];
    v = std::remove_cvref_t<decltype(v)>(h, true);
    ++k;
  });
  const index_t N = 5, Tn = 6;
  ad::Var<double, 3, ts::cpu> x(gc::values<3>({N, Tn, 3}, 7), true);
  nn::context ctx{false, &rng};
  const auto hseq = host_values(gru.forward(x, ctx));
  const auto z = linear_ref(hseq, p[4], p[5], N * Tn, 8, 4, ad::activation::relu);
  const auto ref = linear_ref(z, p[6], p[7], N * Tn, 4, 2, ad::activation::none);
  const auto y = net.forward(x);
  REQUIRE(y.dims() == ts::dims_t<3>{N, Tn, 2});
  const auto got = host_values(y);
  for (std::size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == Approx(ref[i]).epsilon(1e-12).margin(1e-12));
  // the gradient reaches the input through both Linears and the GRU
  ad::sum(y).backward();
  double gsum = 0;
  for (double v : host_values(ad::Var<double, 3, ts::cpu>(x.grad(), false))) gsum += std::abs(v);
  CHECK(gsum > 0);
}

TEST_CASE("Linear on rank 3: the shape error names both shapes", "[nn][linear]") {
  ts::Rng rng(3);
  nn::Linear<4, 2>::state<double, ts::cpu> st(rng);
  nn::context ctx{false, &rng};
  ad::Var<double, 3, ts::cpu> x(gc::values<3>({2, 3, 5}, 1), false);
  CHECK_THROWS_AS(st.forward(x, ctx), ts::shape_error);
  const auto msg = gc::message_of([&] { st.forward(x, ctx); });
  CHECK(msg.find("[2, 3, 5]") != std::string::npos);
  CHECK(msg.find("[2, 4]") != std::string::npos);
}
