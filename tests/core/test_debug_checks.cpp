// Debug checks (config.hpp's TESSERA_DEBUG_CHECKS: on without NDEBUG or with TESSERA_DEBUG): element access out
// of a tensor's or view's extents throws std::out_of_range naming the index and the shape. This file turns them on
// in the Release test build; Release code without TESSERA_DEBUG compiles them out.
#define TESSERA_DEBUG 1
#include <catch2/catch.hpp>

#include <stdexcept>
#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using ts::Shape;

static_assert(TESSERA_DEBUG_CHECKS == 1, "this test needs the debug checks");

TEST_CASE("debug builds check element indices", "[tensor][debug]") {
  ts::Tensor<float, Shape<4, 3>> t;
  t = 1.0f;
  // before: t(10, 0) read 18 floats past a 12-float block, in every build
  REQUIRE_THROWS_AS(t(10, 0), std::out_of_range);
  REQUIRE_THROWS_WITH(t(10, 0), Catch::Contains("[10, 0]") && Catch::Contains("[4, 3]"));
  REQUIRE_THROWS_AS(t(0, 3), std::out_of_range);
  REQUIRE_THROWS_AS(t(-1, 0), std::out_of_range);
  REQUIRE(t(3, 2) == 1.0f);
  // views: a transposed view's extents are its own
  auto v = ts::transpose(t.view());
  REQUIRE(v(2, 3) == 1.0f);
  REQUIRE_THROWS_AS(v(3, 2), std::out_of_range);
  ts::Tensor<double, Shape<dyn>> e(0);
  REQUIRE_THROWS_AS(e(0), std::out_of_range);
}
