// Shapes: static extents, broadcasting at compile time, run-time checks of dynamic extents.
#include <catch2/catch.hpp>

#include <type_traits>
#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using ts::Shape;

// ---- compile time ----
static_assert(Shape<>::rank == 0 && Shape<2, 3>::rank == 2);
static_assert(Shape<2, 3>::is_static && !Shape<dyn, 3>::is_static);
static_assert(Shape<dyn, 3, dyn>::num_dyn == 2);
static_assert(Shape<1, 2, 3, 4, 5, 6, 7, 8>::rank == 8);
static_assert(std::is_same_v<ts::broadcast_t<ts::op::add, Shape<4, 3>, Shape<3>>, Shape<4, 3>>);
static_assert(std::is_same_v<ts::broadcast_t<ts::op::add, Shape<4, 1>, Shape<1, 5>>, Shape<4, 5>>);
static_assert(std::is_same_v<ts::broadcast_t<ts::op::add, Shape<dyn, 3>, Shape<3>>, Shape<dyn, 3>>);
static_assert(std::is_same_v<ts::broadcast_t<ts::op::add, Shape<dyn, 1>, Shape<1, 7>>, Shape<dyn, 7>>);
// a dynamic extent against a static one other than 1 must turn out to be that extent (or 1)
static_assert(std::is_same_v<ts::broadcast_t<ts::op::add, Shape<dyn>, Shape<5>>, Shape<5>>);
static_assert(std::is_same_v<ts::broadcast_t<ts::op::add, Shape<dyn>, Shape<1>>, Shape<dyn>>);
static_assert(std::is_same_v<ts::broadcast_t<ts::op::mul, Shape<>, Shape<2, 2>>, Shape<2, 2>>);
static_assert(!ts::detail::broadcast_extents<Shape<4, 3>, Shape<5, 3>>().ok);
static_assert(ts::shapes_compatible_v<Shape<4, 3>, Shape<dyn, 3>>);
static_assert(!ts::shapes_compatible_v<Shape<4, 3>, Shape<5, dyn>>);
static_assert(!ts::shapes_compatible_v<Shape<4, 3>, Shape<4, 3, 1>>);

// expression shapes are computed at compile time
using M = ts::Tensor<float, Shape<dyn, 3>>;
using R = ts::Tensor<float, Shape<3>>;
using C = ts::Tensor<float, Shape<4, 1>>;
static_assert(std::is_same_v<decltype(std::declval<M&>() + std::declval<R&>())::shape_type, Shape<dyn, 3>>);
static_assert(std::is_same_v<decltype(std::declval<C&>() * std::declval<R&>())::shape_type, Shape<4, 3>>);
static_assert(std::is_same_v<decltype(ts::sum<1>(std::declval<M&>()))::shape_type, Shape<dyn>>);
static_assert(std::is_same_v<decltype(ts::sum<0>(std::declval<M&>(), ts::keepdim))::shape_type, Shape<1, 3>>);
static_assert(std::is_same_v<decltype(ts::sum(std::declval<M&>()))::shape_type, Shape<>>);
static_assert(std::is_same_v<decltype(ts::transpose(std::declval<M&>()))::shape_type, Shape<3, dyn>>);
static_assert(std::is_same_v<decltype(std::declval<M&>() < 1.0f)::value_type, bool>);
static_assert(std::is_same_v<decltype(ts::sum(std::declval<ts::Tensor<std::int8_t, Shape<4>>&>()))::value_type, std::int64_t>);

TEST_CASE("dynamic extents that cannot broadcast throw shape_error naming both shapes", "[shape]") {
  ts::Tensor<float, Shape<dyn, 3>> a(4), b(5);
  REQUIRE_THROWS_AS(a + b, ts::shape_error);
  REQUIRE_THROWS_WITH(a + b, Catch::Contains("[4, 3]") && Catch::Contains("[5, 3]") && Catch::Contains("add"));
  ts::Tensor<float, Shape<dyn>> v(7), w(1);
  REQUIRE_NOTHROW(v * w);  // extent 1 stretches
  ts::Tensor<float, Shape<dyn>> u(6);
  REQUIRE_THROWS_WITH(ts::tanh(v) - u, Catch::Contains("[7]") && Catch::Contains("[6]") && Catch::Contains("sub"));
}

TEST_CASE("a destination checks the expression's extents", "[shape]") {
  ts::Tensor<float, Shape<dyn, 3>> a(4), b(4);
  ts::Tensor<float, Shape<5, 3>> fixed;
  REQUIRE_THROWS_WITH(fixed = a + b, Catch::Contains("[4, 3]") && Catch::Contains("[5, 3]"));
  auto v = fixed.view();
  REQUIRE_THROWS_WITH(v = a * 2.0f, Catch::Contains("[4, 3]") && Catch::Contains("[5, 3]"));
  // static extents are checked when a dynamic tensor is viewed as static
  REQUIRE_THROWS_AS((ts::as_static<Shape<5, 3>>(a)), ts::shape_error);
  REQUIRE_NOTHROW((ts::as_static<Shape<4, 3>>(a)));
}

TEST_CASE("static and dynamic shapes convert both ways", "[shape]") {
  ts::Tensor<int, Shape<2, 3>> s;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) s(i, j) = i * 3 + j;
  ts::Tensor<int, Shape<dyn, dyn>> d = s;  // static -> dynamic
  REQUIRE(d.dims() == ts::dims_t<2>{2, 3});
  ts::Tensor<int, Shape<2, dyn>> back = d;  // dynamic -> partly static, checked at run time
  REQUIRE(back(1, 2) == 5);
  ts::Tensor<int, Shape<dyn, dyn>> wrong(3, 3);
  REQUIRE_THROWS_AS((ts::Tensor<int, Shape<2, dyn>>(wrong)), ts::shape_error);
  auto dv = ts::as_dynamic(s);
  static_assert(std::is_same_v<decltype(dv)::shape_type, Shape<dyn, dyn>>);
  REQUIRE(dv(1, 1) == 4);
}

TEST_CASE("tensors of every rank from 0 to 8", "[shape]") {
  ts::Tensor<float, Shape<>> s0;
  s0 = 2.5f;
  REQUIRE(s0() == 2.5f);
  ts::Tensor<float, Shape<2, 1, 2, 1, 2, 1, 2, 3>> s8;
  s8 = 1.0f;
  ts::Tensor<float, Shape<2, 1, 2, 1, 2, 1, 2, 3>> r8 = s8 * 2.0f + s0;
  REQUIRE(r8(1, 0, 1, 0, 1, 0, 1, 2) == 4.5f);
  ts::Tensor<float, Shape<>> total = ts::sum(r8);
  REQUIRE(total() == Approx(4.5f * 48));
}
