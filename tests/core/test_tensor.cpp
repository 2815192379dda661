// Tensor construction, ownership, element types, std::vector and Eigen bridges, policy moves.
#include <catch2/catch.hpp>

#include <cstdint>
#include <numeric>
#include <tessera/interop/eigen.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
using ts::dyn;
using ts::Shape;

TEST_CASE("tensors are 64-byte aligned, row-major and deep-copied", "[tensor]") {
  ts::Tensor<float, Shape<dyn, 5>> a(7);
  REQUIRE(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
  REQUIRE(a.strides() == ts::dims_t<2>{5, 1});
  for (int i = 0; i < 35; ++i) a.data()[i] = float(i);
  REQUIRE(a(3, 2) == 17.0f);
  auto b = a;
  b(0, 0) = -1.0f;
  REQUIRE(a(0, 0) == 0.0f);
  auto c = std::move(b);
  REQUIRE(c(0, 0) == -1.0f);
  REQUIRE(b.size() == 0);
  REQUIRE_THROWS_AS((ts::Tensor<float, Shape<dyn>>(ts::dims_t<1>{-1})), ts::shape_error);
}

TEST_CASE("std::vector in and out; zero-copy map over caller memory", "[tensor]") {
  std::vector<double> v(12);
  std::iota(v.begin(), v.end(), 0.0);
  ts::Tensor<double, Shape<3, 4>> t(v, {3, 4});
  REQUIRE(t(2, 1) == 9.0);
  REQUIRE(t.to_vector() == v);
  REQUIRE_THROWS_WITH((ts::Tensor<double, Shape<dyn>>(v, {5})), Catch::Contains("12 values"));
  auto m = ts::map<Shape<dyn, 4>>(v.data(), {3, 4});
  m = m * 2.0;  // writes through to the vector
  REQUIRE(v[11] == 22.0);
  REQUIRE(m.data() == v.data());
}

TEST_CASE("Eigen matrices and tensors are viewed without copies, either layout", "[tensor][eigen]") {
  Eigen::MatrixXf cm(3, 5);  // column-major
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) cm(i, j) = float(10 * i + j);
  auto v = ts::from_eigen(cm);
  REQUIRE(v.data() == cm.data());
  REQUIRE(v.dims() == ts::dims_t<2>{3, 5});
  REQUIRE(v(2, 4) == 24.0f);
  ts::Tensor<float, Shape<dyn, dyn>> doubled = v * 2.0f;
  REQUIRE(doubled(1, 3) == 26.0f);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm(2, 2);
  rm << 1, 2, 3, 4;
  REQUIRE(ts::from_eigen(rm)(1, 0) == 3.0f);

  auto back = ts::to_eigen(doubled);
  REQUIRE(back(2, 4) == 48.0f);
  REQUIRE(back.data() == doubled.data());
  auto tr = ts::to_eigen(ts::transpose(doubled));  // strided map
  REQUIRE(tr(4, 2) == 48.0f);

  Eigen::Tensor<float, 3> et(2, 3, 4);  // column-major
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) et(i, j, k) = float(100 * i + 10 * j + k);
  auto ev = ts::from_eigen(et);
  REQUIRE(ev(1, 2, 3) == 123.0f);
  ts::Tensor<float, Shape<2, 3, 4>> copy = ev;
  auto map = ts::to_eigen_tensor(copy);
  REQUIRE(map(1, 2, 3) == 123.0f);
  REQUIRE_THROWS_AS(ts::to_eigen_tensor(ts::transpose(copy)), ts::shape_error);
}

TEST_CASE("bfloat16 rounds to nearest even and keeps NaN", "[tensor][types]") {
  REQUIRE(float(ts::bfloat16(1.0f)) == 1.0f);
  REQUIRE(float(ts::bfloat16(3.140625f)) == 3.140625f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0)
  REQUIRE(float(ts::bfloat16(1.0f + 1.0f / 256)) == 1.0f);
  REQUIRE(float(ts::bfloat16(1.0f + 3.0f / 256)) == 1.0f + 1.0f / 64);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  REQUIRE(std::isnan(float(ts::bfloat16(nan))));
  ts::Tensor<ts::bfloat16, Shape<dyn>> b(33);
  for (int i = 0; i < 33; ++i) b(i) = ts::bfloat16(float(i) * 0.5f);
  ts::Tensor<ts::bfloat16, Shape<dyn>> c = b * ts::bfloat16(2.0f) + ts::bfloat16(1.0f);
  for (int i = 0; i < 33; ++i) REQUIRE(float(c(i)) == float(i) + 1.0f);
  ts::Tensor<float, Shape<dyn>> f = ts::cast<float>(b);
  REQUIRE(f(5) == 2.5f);
}

TEST_CASE("moves between host policies copy the elements", "[tensor][policy]") {
  ts::Tensor<std::int8_t, Shape<dyn, 3>> a(5);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 3; ++j) a(i, j) = std::int8_t(i - j);
  auto t = ts::to<ts::cpu_threads>(a);
  static_assert(std::is_same_v<decltype(t)::policy, ts::cpu_threads>);
  REQUIRE(t.data() != a.data());
  REQUIRE(t(4, 2) == 2);
  auto back = ts::to<ts::cpu>(ts::transpose(t));  // a view is made contiguous first
  REQUIRE(back.dims() == ts::dims_t<2>{3, 5});
  REQUIRE(back(2, 4) == 2);
}
