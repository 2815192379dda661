// Size arithmetic: extents whose element or byte count does not fit are refused with an error naming them,
// before anything is allocated or written (issue: hardening, item 1); the host block cache hands aligned_alloc
// sizes that are multiples of the alignment (item 4).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
// The message of the exception `f` throws (of type E), or "" when it throws nothing.
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("a tensor whose byte count wraps is refused before allocating", "[tensor][sizes]") {
  // 2^62 floats are 2^64 bytes: the byte count wrapped to 0 and a 64-byte block came back
  const index_t n = index_t(1) << 62;
  const auto msg = message_of<std::length_error>([&] { ts::Tensor<float, Shape<dyn>> t(n); });
  REQUIRE_THAT(msg, Catch::Contains(std::to_string(n)));
  // doubles and static extents mixed with dynamic ones
  REQUIRE_THROWS_AS((ts::Tensor<double, Shape<dyn, 4>>(index_t(1) << 61)), std::length_error);
}

TEST_CASE("a tensor whose element count wraps is refused, naming both extents", "[tensor][sizes]") {
  const index_t e = index_t(1) << 32;  // 2^32 x 2^32 = 2^64 elements: the signed product overflowed to 0
  const auto msg = message_of<std::length_error>([&] { ts::Tensor<float, Shape<dyn, dyn>> t(e, e); });
  REQUIRE_THAT(msg, Catch::Contains("[4294967296, 4294967296]"));
  REQUIRE_THROWS_AS((ts::Tensor<std::int8_t, Shape<dyn, dyn, dyn>>(e, e, 7)), std::length_error);
  // empty, but its row-major strides (2^64 for the first axis) would wrap
  REQUIRE_THROWS_AS((ts::Tensor<std::int8_t, Shape<dyn, dyn, dyn>>(0, e, e)), std::length_error);
  REQUIRE((ts::Tensor<float, Shape<dyn, dyn, dyn>>(0, e, 7)).size() == 0);
  // the largest count that fits is not refused by the count check (the allocation itself then fails)
  REQUIRE_THROWS_AS((ts::Tensor<std::uint8_t, Shape<dyn>>(index_t(1) << 62)), std::bad_alloc);
}

TEST_CASE("views and reshapes whose extents wrap are refused", "[view][sizes]") {
  float one = 1.0f;
  const index_t e = index_t(1) << 32;
  // a zero-stride map is a legal broadcast of one element; its element count must still be countable
  REQUIRE_THROWS_AS((ts::map<Shape<dyn, dyn>>(&one, {e, e}, {0, 0})), std::length_error);
  REQUIRE_THROWS_AS((ts::map<Shape<dyn>>(&one, {-1})), ts::shape_error);
  // reshape: (2^60 + 1) x 16 = 2^64 + 16 wrapped to 16, matched the 16 elements, and the reshape returned a view
  // claiming 2^64 + 16 elements over 16 of them
  ts::Tensor<std::uint8_t, Shape<dyn>> t(16);
  const index_t big = (index_t(1) << 60) + 1;
  const auto msg = message_of<std::length_error>([&] { ts::reshape<Shape<dyn, dyn>>(t, {big, 16}); });
  REQUIRE_THAT(msg, Catch::Contains("reshape") && Catch::Contains("[" + std::to_string(big) + ", 16]"));
}

TEST_CASE("an expression whose broadcast shape wraps cannot be evaluated into a tensor", "[expr][sizes]") {
  float one = 1.0f;
  const index_t e = index_t(1) << 32;
  auto col = ts::map<Shape<dyn, 1>>(&one, {e, 1}, {0, 0});  // 2^32 x 1, all the same element
  auto row = ts::map<Shape<1, dyn>>(&one, {1, e}, {0, 0});  // 1 x 2^32
  REQUIRE_THROWS_AS((ts::Tensor<float, Shape<dyn, dyn>>(col + row)), std::length_error);
}

TEST_CASE("the host block cache allocates multiples of the alignment", "[memory][sizes]") {
  // aligned_alloc(64, n) needs n % 64 == 0; the LSTM asks the cache for n * sizeof(T) bytes directly
  auto& cache = ts::detail::host_block_cache::instance();
  for (std::size_t bytes : {std::size_t(1), std::size_t(100), std::size_t(4 * 7), std::size_t(1) << 18,
                            (std::size_t(1) << 18) + 12}) {
    void* p = cache.allocate(bytes);
    REQUIRE(p != nullptr);
    REQUIRE(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
    const std::size_t total = *reinterpret_cast<std::size_t*>(static_cast<char*>(p) - ts::detail::host_block_cache::header);
    CHECK(total % 64 == 0);
    CHECK(total >= bytes + ts::detail::host_block_cache::header);
    std::memset(p, 0xab, bytes);  // the whole request is usable
    cache.deallocate(p);
  }
  REQUIRE_THROWS_AS(cache.allocate(~std::size_t(0) - 8), std::bad_alloc);
}
