// operator<< and to_string for tensors, views and Vars (core/print.hpp, autodiff/print.hpp), and item().
// The expected strings are PyTorch 1.13's: each tensor body was printed by torch's own formatter
// (torch._tensor_str._tensor_str) for the same values, element type and view, and placed with torch's
// _add_suffixes using tessera's suffixes (shape, dtype, policy) instead of torch's, then copied here
// (torch prints e.g. `tensor([ 1., -2., 30.,  0.])` where tessera adds `, shape=[4], dtype=float32, policy=cpu`).
#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <tessera/autodiff/ops.hpp>
#include <tessera/autodiff/print.hpp>
#include <tessera/core/print.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::index_t;
using bf16 = ts::bfloat16;

namespace {
constexpr double nan_ = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_ = std::numeric_limits<double>::infinity();

template <class T>
T element(double v) {
  if constexpr (std::is_same_v<T, bf16>) return bf16(float(v));
  else return T(v);
}
/// A tensor of T under P holding `values` (row-major) with extents `dims`.
template <class T, class P, int R>
ts::Tensor<T, ts::dyn_shape_t<R>, P> make(std::vector<double> values, ts::dims_t<R> dims) {
  ts::Tensor<T, ts::dyn_shape_t<R>, P> t(dims);
  REQUIRE(index_t(values.size()) == t.size());
  for (std::size_t i = 0; i < values.size(); ++i) t.data()[i] = element<T>(values[i]);
  return t;
}
template <class T, class P, int R>
ts::Tensor<T, ts::dyn_shape_t<R>, P> make_from(index_t n, const std::function<double(index_t)>& f, ts::dims_t<R> dims) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) v[std::size_t(i)] = f(i);
  return make<T, P, R>(v, dims);
}
/// Restores the print options when the test ends (pass or fail).
struct options_scope {
  ts::print_options saved = ts::get_printoptions();
  ~options_scope() { ts::set_printoptions(saved); }
};
}  // namespace

TEST_CASE("print: fixed", "[print]") {
  const auto t = make<float, ts::cpu, 2>({1.0, 2.5, 3.0, 4.0, 5.0, 6.0}, {2, 3});
  CHECK(ts::to_string(t) ==
        "tensor([[1.0000, 2.5000, 3.0000],\n"
        "        [4.0000, 5.0000, 6.0000]], shape=[2, 3], dtype=float32, policy=cpu)");
}

TEST_CASE("print: whole numbers", "[print]") {
  const auto t = make<float, ts::cpu, 1>({1.0, -2.0, 30.0, 0.0}, {4});
  CHECK(ts::to_string(t) ==
        "tensor([ 1., -2., 30.,  0.], shape=[4], dtype=float32, policy=cpu)");
}

TEST_CASE("print: negative zero and fractions", "[print]") {
  const auto t = make<float, ts::cpu, 1>({-0.0, 0.25, -1.125}, {3});
  CHECK(ts::to_string(t) ==
        "tensor([-0.0000,  0.2500, -1.1250], shape=[3], dtype=float32, policy=cpu)");
}

TEST_CASE("print: scientific: small magnitudes", "[print]") {
  const auto t = make<float, ts::cpu, 1>({1e-05, 1.0, 100.0}, {3});
  CHECK(ts::to_string(t) ==
        "tensor([1.0000e-05, 1.0000e+00, 1.0000e+02], shape=[3], dtype=float32,\n"
        "       policy=cpu)");
}

TEST_CASE("print: scientific: wide range of whole numbers", "[print]") {
  const auto t = make<float, ts::cpu, 1>({1.0, 2000.0, -3.0}, {3});
  CHECK(ts::to_string(t) ==
        "tensor([ 1.0000e+00,  2.0000e+03, -3.0000e+00], shape=[3], dtype=float32,\n"
        "       policy=cpu)");
}

TEST_CASE("print: scientific: above 1e8", "[print]") {
  const auto t = make<double, ts::cpu, 1>({123456789.0, 2.0}, {2});
  CHECK(ts::to_string(t) ==
        "tensor([1.2346e+08, 2.0000e+00], shape=[2], dtype=float64, policy=cpu)");
}

TEST_CASE("print: nan and inf", "[print]") {
  const auto t = make<float, ts::cpu, 1>({nan_, inf_, -inf_, 0.0, 1.5}, {5});
  CHECK(ts::to_string(t) ==
        "tensor([   nan,    inf,   -inf, 0.0000, 1.5000], shape=[5], dtype=float32,\n"
        "       policy=cpu)");
}

TEST_CASE("print: nan and inf among whole numbers", "[print]") {
  const auto t = make<double, ts::cpu, 1>({1.0, nan_, inf_, -inf_, 20.0}, {5});
  CHECK(ts::to_string(t) ==
        "tensor([ 1., nan, inf, -inf, 20.], shape=[5], dtype=float64, policy=cpu)");
}

TEST_CASE("print: only nan, inf and zero", "[print]") {
  const auto t = make<float, ts::cpu, 1>({nan_, 0.0, -inf_}, {3});
  CHECK(ts::to_string(t) ==
        "tensor([nan, 0., -inf], shape=[3], dtype=float32, policy=cpu)");
}

TEST_CASE("print: double", "[print]") {
  const auto t = make<double, ts::cpu, 2>({0.1, 0.2, 0.30000000000000004, 0.3333333333333333}, {2, 2});
  CHECK(ts::to_string(t) ==
        "tensor([[0.1000, 0.2000],\n"
        "        [0.3000, 0.3333]], shape=[2, 2], dtype=float64, policy=cpu)");
}

TEST_CASE("print: bfloat16", "[print]") {
  const auto t = make<bf16, ts::cpu, 2>({1.5, -2.25, 3.140625, 100.0}, {2, 2});
  CHECK(ts::to_string(t) ==
        "tensor([[  1.5000,  -2.2500],\n"
        "        [  3.1406, 100.0000]], shape=[2, 2], dtype=bfloat16, policy=cpu)");
}

TEST_CASE("print: int8", "[print]") {
  const auto t = make<std::int8_t, ts::cpu, 1>({-128, 127, 0, 5}, {4});
  CHECK(ts::to_string(t) ==
        "tensor([-128,  127,    0,    5], shape=[4], dtype=int8, policy=cpu)");
}

TEST_CASE("print: uint8", "[print]") {
  const auto t = make<std::uint8_t, ts::cpu, 1>({0, 255, 7}, {3});
  CHECK(ts::to_string(t) ==
        "tensor([  0, 255,   7], shape=[3], dtype=uint8, policy=cpu)");
}

TEST_CASE("print: int32", "[print]") {
  const auto t = make<std::int32_t, ts::cpu, 2>({-1, 20, 300, 4, 5, 6}, {2, 3});
  CHECK(ts::to_string(t) ==
        "tensor([[ -1,  20, 300],\n"
        "        [  4,   5,   6]], shape=[2, 3], dtype=int32, policy=cpu)");
}

TEST_CASE("print: int64", "[print]") {
  const auto t = make<std::int64_t, ts::cpu, 1>({-9000000000, 1, 2}, {3});
  CHECK(ts::to_string(t) ==
        "tensor([-9000000000,           1,           2], shape=[3], dtype=int64,\n"
        "       policy=cpu)");
}

TEST_CASE("print: bool", "[print]") {
  const auto t = make<bool, ts::cpu, 2>({true, false, true, true}, {2, 2});
  CHECK(ts::to_string(t) ==
        "tensor([[ True, False],\n"
        "        [ True,  True]], shape=[2, 2], dtype=bool, policy=cpu)");
}

TEST_CASE("print: rank 0", "[print]") {
  const auto t = make<float, ts::cpu, 0>({3.5}, {});
  CHECK(ts::to_string(t) ==
        "tensor(3.5000, shape=[], dtype=float32, policy=cpu)");
}

TEST_CASE("print: empty [0]", "[print]") {
  const auto t = make<float, ts::cpu, 1>({}, {0});
  CHECK(ts::to_string(t) ==
        "tensor([], shape=[0], dtype=float32, policy=cpu)");
}

TEST_CASE("print: empty [0, 3]", "[print]") {
  const auto t = make<std::int32_t, ts::cpu, 2>({}, {0, 3});
  CHECK(ts::to_string(t) ==
        "tensor([], shape=[0, 3], dtype=int32, policy=cpu)");
}

TEST_CASE("print: rank 4", "[print]") {
  const auto t = make_from<float, ts::cpu, 4>(16, [](index_t i) { return double(i) * 0.25; }, {2, 2, 2, 2});
  CHECK(ts::to_string(t) ==
        "tensor([[[[0.0000, 0.2500],\n"
        "          [0.5000, 0.7500]],\n"
        "\n"
        "         [[1.0000, 1.2500],\n"
        "          [1.5000, 1.7500]]],\n"
        "\n"
        "\n"
        "        [[[2.0000, 2.2500],\n"
        "          [2.5000, 2.7500]],\n"
        "\n"
        "         [[3.0000, 3.2500],\n"
        "          [3.5000, 3.7500]]]], shape=[2, 2, 2, 2], dtype=float32, policy=cpu)");
}

TEST_CASE("print: a long row wraps", "[print]") {
  const auto t = make_from<float, ts::cpu_threads, 1>(30, [](index_t i) { return double(i) * 1.5 - 7.0; }, {30});
  CHECK(ts::to_string(t) ==
        "tensor([-7.0000, -5.5000, -4.0000, -2.5000, -1.0000,  0.5000,  2.0000,  3.5000,\n"
        "         5.0000,  6.5000,  8.0000,  9.5000, 11.0000, 12.5000, 14.0000, 15.5000,\n"
        "        17.0000, 18.5000, 20.0000, 21.5000, 23.0000, 24.5000, 26.0000, 27.5000,\n"
        "        29.0000, 30.5000, 32.0000, 33.5000, 35.0000, 36.5000], shape=[30],\n"
        "       dtype=float32, policy=cpu_threads)");
}

TEST_CASE("print: summarised rows", "[print]") {
  const auto t = make_from<float, ts::cpu, 2>(2000, [](index_t i) { return double(i) * 0.5; }, {40, 50});
  CHECK(ts::to_string(t) ==
        "tensor([[0.0000e+00, 5.0000e-01, 1.0000e+00,  ..., 2.3500e+01, 2.4000e+01,\n"
        "         2.4500e+01],\n"
        "        [2.5000e+01, 2.5500e+01, 2.6000e+01,  ..., 4.8500e+01, 4.9000e+01,\n"
        "         4.9500e+01],\n"
        "        [5.0000e+01, 5.0500e+01, 5.1000e+01,  ..., 7.3500e+01, 7.4000e+01,\n"
        "         7.4500e+01],\n"
        "        ...,\n"
        "        [9.2500e+02, 9.2550e+02, 9.2600e+02,  ..., 9.4850e+02, 9.4900e+02,\n"
        "         9.4950e+02],\n"
        "        [9.5000e+02, 9.5050e+02, 9.5100e+02,  ..., 9.7350e+02, 9.7400e+02,\n"
        "         9.7450e+02],\n"
        "        [9.7500e+02, 9.7550e+02, 9.7600e+02,  ..., 9.9850e+02, 9.9900e+02,\n"
        "         9.9950e+02]], shape=[40, 50], dtype=float32, policy=cpu)");
}

TEST_CASE("print: summarised vector", "[print]") {
  const auto t = make_from<std::int32_t, ts::cpu, 1>(1001, [](index_t i) { return double(i); }, {1001});
  CHECK(ts::to_string(t) ==
        "tensor([   0,    1,    2,  ...,  998,  999, 1000], shape=[1001], dtype=int32,\n"
        "       policy=cpu)");
}

TEST_CASE("print: summarised 3-D", "[print]") {
  const auto t = make_from<std::int64_t, ts::cpu, 3>(1320, [](index_t i) { return double(i * 7 % 1000); }, {10, 11, 12});
  CHECK(ts::to_string(t) ==
        "tensor([[[  0,   7,  14,  ...,  63,  70,  77],\n"
        "         [ 84,  91,  98,  ..., 147, 154, 161],\n"
        "         [168, 175, 182,  ..., 231, 238, 245],\n"
        "         ...,\n"
        "         [672, 679, 686,  ..., 735, 742, 749],\n"
        "         [756, 763, 770,  ..., 819, 826, 833],\n"
        "         [840, 847, 854,  ..., 903, 910, 917]],\n"
        "\n"
        "        [[924, 931, 938,  ..., 987, 994,   1],\n"
        "         [  8,  15,  22,  ...,  71,  78,  85],\n"
        "         [ 92,  99, 106,  ..., 155, 162, 169],\n"
        "         ...,\n"
        "         [596, 603, 610,  ..., 659, 666, 673],\n"
        "         [680, 687, 694,  ..., 743, 750, 757],\n"
        "         [764, 771, 778,  ..., 827, 834, 841]],\n"
        "\n"
        "        [[848, 855, 862,  ..., 911, 918, 925],\n"
        "         [932, 939, 946,  ..., 995,   2,   9],\n"
        "         [ 16,  23,  30,  ...,  79,  86,  93],\n"
        "         ...,\n"
        "         [520, 527, 534,  ..., 583, 590, 597],\n"
        "         [604, 611, 618,  ..., 667, 674, 681],\n"
        "         [688, 695, 702,  ..., 751, 758, 765]],\n"
        "\n"
        "        ...,\n"
        "\n"
        "        [[468, 475, 482,  ..., 531, 538, 545],\n"
        "         [552, 559, 566,  ..., 615, 622, 629],\n"
        "         [636, 643, 650,  ..., 699, 706, 713],\n"
        "         ...,\n"
        "         [140, 147, 154,  ..., 203, 210, 217],\n"
        "         [224, 231, 238,  ..., 287, 294, 301],\n"
        "         [308, 315, 322,  ..., 371, 378, 385]],\n"
        "\n"
        "        [[392, 399, 406,  ..., 455, 462, 469],\n"
        "         [476, 483, 490,  ..., 539, 546, 553],\n"
        "         [560, 567, 574,  ..., 623, 630, 637],\n"
        "         ...,\n"
        "         [ 64,  71,  78,  ..., 127, 134, 141],\n"
        "         [148, 155, 162,  ..., 211, 218, 225],\n"
        "         [232, 239, 246,  ..., 295, 302, 309]],\n"
        "\n"
        "        [[316, 323, 330,  ..., 379, 386, 393],\n"
        "         [400, 407, 414,  ..., 463, 470, 477],\n"
        "         [484, 491, 498,  ..., 547, 554, 561],\n"
        "         ...,\n"
        "         [988, 995,   2,  ...,  51,  58,  65],\n"
        "         [ 72,  79,  86,  ..., 135, 142, 149],\n"
        "         [156, 163, 170,  ..., 219, 226, 233]]], shape=[10, 11, 12],\n"
        "       dtype=int64, policy=cpu)");
}

TEST_CASE("print: transposed view", "[print]") {
  const auto t = make<float, ts::cpu, 2>({0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5}, {3, 4});
  CHECK(ts::to_string(ts::transpose(t.cview())) ==
        "tensor([[ 0.5000,  4.5000,  8.5000],\n"
        "        [ 1.5000,  5.5000,  9.5000],\n"
        "        [ 2.5000,  6.5000, 10.5000],\n"
        "        [ 3.5000,  7.5000, 11.5000]], shape=[4, 3], dtype=float32, policy=cpu)");
}

TEST_CASE("print: sliced view with a step", "[print]") {
  const auto t = make<std::int32_t, ts::cpu, 2>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, {3, 7});
  CHECK(ts::to_string(ts::slice<1>(t.cview(), 1, 6, 2)) ==
        "tensor([[ 1,  3,  5],\n"
        "        [ 8, 10, 12],\n"
        "        [15, 17, 19]], shape=[3, 3], dtype=int32, policy=cpu)");
}

TEST_CASE("print: summarised transposed view", "[print]") {
  const auto t = make_from<float, ts::cpu, 2>(2000, [](index_t i) { return double(i) * 0.5; }, {40, 50});
  CHECK(ts::to_string(ts::transpose(t.cview())) ==
        "tensor([[0.0000e+00, 2.5000e+01, 5.0000e+01,  ..., 9.2500e+02, 9.5000e+02,\n"
        "         9.7500e+02],\n"
        "        [5.0000e-01, 2.5500e+01, 5.0500e+01,  ..., 9.2550e+02, 9.5050e+02,\n"
        "         9.7550e+02],\n"
        "        [1.0000e+00, 2.6000e+01, 5.1000e+01,  ..., 9.2600e+02, 9.5100e+02,\n"
        "         9.7600e+02],\n"
        "        ...,\n"
        "        [2.3500e+01, 4.8500e+01, 7.3500e+01,  ..., 9.4850e+02, 9.7350e+02,\n"
        "         9.9850e+02],\n"
        "        [2.4000e+01, 4.9000e+01, 7.4000e+01,  ..., 9.4900e+02, 9.7400e+02,\n"
        "         9.9900e+02],\n"
        "        [2.4500e+01, 4.9500e+01, 7.4500e+01,  ..., 9.4950e+02, 9.7450e+02,\n"
        "         9.9950e+02]], shape=[50, 40], dtype=float32, policy=cpu)");
}

TEST_CASE("print: broadcast view", "[print]") {
  const auto t = make<double, ts::cpu, 1>({1.0, 2.5, -3.0}, {3});
  CHECK(ts::to_string(ts::broadcast_to<ts::dyn_shape_t<2>>(t.cview(), ts::dims_t<2>{2, 3})) ==
        "tensor([[ 1.0000,  2.5000, -3.0000],\n"
        "        [ 1.0000,  2.5000, -3.0000]], shape=[2, 3], dtype=float64, policy=cpu)");
}

TEST_CASE("print: options: precision, threshold, edgeitems, linewidth", "[print]") {
  options_scope scope;
  ts::set_printoptions({.precision = 2, .threshold = 5, .edgeitems = 1, .linewidth = 40});
  const auto t = make_from<float, ts::cpu, 2>(24, [](index_t i) { return double(i) / 3.0; }, {4, 6});
  CHECK(ts::to_string(t) ==
        "tensor([[0.00,  ..., 1.67],\n"
        "        ...,\n"
        "        [6.00,  ..., 7.67]],\n"
        "       shape=[4, 6], dtype=float32,\n"
        "       policy=cpu)");
}

TEST_CASE("print: options: sci_mode forced", "[print]") {
  options_scope scope;
  ts::set_printoptions({.sci_mode = true});
  const auto t = make<float, ts::cpu, 1>({1.0, 2.5}, {2});
  CHECK(ts::to_string(t) ==
        "tensor([1.0000e+00, 2.5000e+00], shape=[2], dtype=float32, policy=cpu)");
}

TEST_CASE("print: options: fixed forced", "[print]") {
  options_scope scope;
  ts::set_printoptions({.sci_mode = false});
  const auto t = make<float, ts::cpu, 1>({1e-06, 2.5}, {2});
  CHECK(ts::to_string(t) ==
        "tensor([    0.0000,     2.5000], shape=[2], dtype=float32, policy=cpu)");
}

TEST_CASE("print: options: edgeitems 0", "[print]") {
  // torch >= 2.0's output (`[...]`): torch 1.13 printed " ..." followed by every element, since its self[-0:] is the
  // whole row; tessera follows the corrected behaviour
  options_scope scope;
  ts::set_printoptions({.threshold = 4, .edgeitems = 0});
  const auto t = make_from<float, ts::cpu, 1>(12, [](index_t i) { return double(i); }, {12});
  CHECK(ts::to_string(t) == "tensor([...], shape=[12], dtype=float32, policy=cpu)");
  const auto m = make_from<float, ts::cpu, 2>(12, [](index_t i) { return double(i); }, {3, 4});
  CHECK(ts::to_string(m) == "tensor([...], shape=[3, 4], dtype=float32, policy=cpu)");
}

TEST_CASE("print: operator<< writes to_string, for tensors of static shape and their views", "[print]") {
  ts::Tensor<float, ts::Shape<2, 2>> t;
  t(0, 0) = 1.0f, t(0, 1) = 2.0f, t(1, 0) = 3.0f, t(1, 1) = 4.5f;
  std::ostringstream os;
  os << t << "|" << t.view();
  const std::string s = "tensor([[1.0000, 2.0000],\n"
                        "        [3.0000, 4.5000]], shape=[2, 2], dtype=float32, policy=cpu)";
  CHECK(os.str() == s + "|" + s);
  CHECK(ts::to_string(ts::select<0>(t.cview(), 1)) == "tensor([3.0000, 4.5000], shape=[2], dtype=float32, policy=cpu)");
}

TEST_CASE("print: options are checked and the defaults are torch's", "[print]") {
  options_scope scope;
  const ts::print_options d{};
  CHECK(d.precision == 4);
  CHECK(d.threshold == 1000);
  CHECK(d.edgeitems == 3);
  CHECK(d.linewidth == 80);
  CHECK(!d.sci_mode.has_value());
  CHECK_THROWS_WITH(ts::set_printoptions({.precision = -1}), Catch::Contains("precision -1"));
  CHECK_THROWS_AS(ts::set_printoptions({.linewidth = 0}), std::invalid_argument);
  ts::set_printoptions({.precision = 1});
  CHECK(ts::get_printoptions().precision == 1);
  CHECK(ts::to_string(make<double, ts::cpu, 1>({0.25, 1.5}, {2})) == "tensor([0.2, 1.5], shape=[2], dtype=float64, policy=cpu)");
}

TEST_CASE("print: Vars show requires_grad, grad_fn and a stored gradient", "[print][autodiff]") {
  auto w = ad::parameter(make<float, ts::cpu, 1>({0.5, 1.0}, {2}));
  // suffixes placed by torch's _add_suffixes: a new line once the line would pass 80 characters
  CHECK(ts::ad::to_string(w) ==
        "tensor([0.5000, 1.0000], shape=[2], dtype=float32, policy=cpu,\n"
        "       requires_grad=True)");
  auto loss = ad::sum(ad::square(w));
  std::ostringstream os;
  os << loss;
  CHECK(os.str() ==
        "tensor(1.2500, shape=[], dtype=float32, policy=cpu, requires_grad=True,\n"
        "       grad_fn=<sum>)");
  loss.backward();
  CHECK(ts::ad::to_string(w) ==
        "tensor([0.5000, 1.0000], shape=[2], dtype=float32, policy=cpu,\n"
        "       requires_grad=True, has_grad=True)");
  auto c = ad::constant(make<std::int32_t, ts::cpu_threads, 1>({3, -4}, {2}));
  CHECK(ts::ad::to_string(c) == "tensor([ 3, -4], shape=[2], dtype=int32, policy=cpu_threads)");
  CHECK(ts::ad::to_string(ad::Var<float, 1>()) == "Var(undefined)");
}

TEST_CASE("item: the one element of a tensor, view or Var; any other size names the shape", "[print][item]") {
  ts::Tensor<float, ts::Shape<>> s;
  s.data()[0] = 2.5f;
  CHECK(s.item() == 2.5f);
  const auto t = make<std::int64_t, ts::cpu_threads, 3>({7}, {1, 1, 1});
  CHECK(t.item() == 7);
  const auto m = make<double, ts::cpu, 2>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(ts::select<0>(ts::select<1>(m.cview(), 2), 1).item() == 6.0);  // a strided view of one element
  CHECK_THROWS_AS(m.item(), ts::shape_error);
  CHECK_THROWS_WITH(m.item(), Catch::Contains("[2, 3]") && Catch::Contains("6 elements"));
  CHECK_THROWS_WITH(ts::slice<1>(m.cview(), 1, 2).item(), Catch::Contains("[2, 1]"));
  const auto e = make<float, ts::cpu, 1>({}, {0});
  CHECK_THROWS_WITH(e.item(), Catch::Contains("[0]") && Catch::Contains("0 elements"));
  ts::Tensor<bool, ts::Shape<1>> b;
  b.data()[0] = true;
  CHECK(b.item() == true);
  auto x = ad::parameter(make<float, ts::cpu, 1>({1.0, 2.0, 4.0}, {3}));
  auto loss = ad::mean(ad::square(x));
  CHECK(loss.item() == 7.0f);  // (1 + 4 + 16) / 3
  CHECK_THROWS_WITH(x.item(), Catch::Contains("[3]"));
}
