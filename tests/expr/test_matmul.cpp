// matmul against a plain triple loop: odd sizes, transposed and strided operands, float and double, both
// CPU policies, products inside expressions, aliasing, shape errors.
#include <catch2/catch.hpp>

#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
template <class T, class P>
using Mat = ts::Tensor<T, Shape<dyn, dyn>, P>;

template <class T, class P>
Mat<T, P> filled(index_t r, index_t c, int seed) {
  Mat<T, P> m(r, c);
  for (index_t i = 0; i < r; ++i)
    for (index_t j = 0; j < c; ++j) m(i, j) = T((i * 7 + j * 3 + seed) % 17) / T(4) - T(2);
  return m;
}

// Reference: C[i][j] = sum_k A(i, k) * B(k, j), read through any accessor.
template <class FA, class FB>
std::vector<double> reference(index_t m, index_t n, index_t k, FA a, FB b) {
  std::vector<double> c(std::size_t(m * n), 0.0);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t p = 0; p < k; ++p) s += double(a(i, p)) * double(b(p, j));
      c[std::size_t(i * n + j)] = s;
    }
  return c;
}

template <class T, class V>
void check(const V& got, const std::vector<double>& want, index_t m, index_t n, index_t k) {
  const double tol = (std::is_same_v<T, float> ? 1e-5 : 1e-12) * double(k + 1);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      const double w = want[std::size_t(i * n + j)];
      if (std::abs(double(got(i, j)) - w) > tol * (1 + std::abs(w))) {
        FAIL("mismatch at (" << i << ", " << j << "): " << double(got(i, j)) << " vs " << w << " (m=" << m
                             << " n=" << n << " k=" << k << ")");
      }
    }
}
}  // namespace

TEMPLATE_PRODUCT_TEST_CASE("matmul matches a triple loop", "[matmul]", std::pair, ((float, ts::cpu), (float, ts::cpu_threads),
                                                                                  (double, ts::cpu), (double, ts::cpu_threads))) {
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  ts::cpu_threads::set_num_threads(2);
  const std::vector<index_t> sizes = {1, 7, 33, 65, 127};
  for (index_t m : sizes)
    for (index_t k : {index_t(1), index_t(33), index_t(127), index_t(400)})
      for (index_t n : {index_t(1), index_t(65), index_t(127)}) {
        auto a = filled<T, P>(m, k, 1);
        auto b = filled<T, P>(k, n, 2);
        Mat<T, P> c = ts::matmul(a, b);
        REQUIRE(c.dims() == ts::dims_t<2>{m, n});
        check<T>(c, reference(m, n, k, [&](index_t i, index_t p) { return a(i, p); }, [&](index_t p, index_t j) { return b(p, j); }), m, n, k);
      }
  // a product large enough to cross several K, M and N blocks of the GEMM (K 1100: floats in two blocks of 550,
  // doubles in three of 367, 367 and 366)
  auto a = filled<T, P>(300, 1100, 3);
  auto b = filled<T, P>(1100, 260, 4);
  Mat<T, P> c = ts::matmul(a, b);
  check<T>(c, reference(300, 260, 1100, [&](index_t i, index_t p) { return a(i, p); }, [&](index_t p, index_t j) { return b(p, j); }), 300, 260, 1100);
  // K blocks of unequal size (float: 1025 = 513 + 512; double: 1025 = 342 + 342 + 341) and more columns than one N
  // block (4096): the threads pack their own B panels without waiting for each other, which must stay correct
  {
    auto a2 = filled<T, P>(20, 1025, 7);
    auto b2 = filled<T, P>(1025, 4200, 8);
    Mat<T, P> c2 = ts::matmul(a2, b2);
    check<T>(c2, reference(20, 4200, 1025, [&](index_t i, index_t p) { return a2(i, p); }, [&](index_t p, index_t j) { return b2(p, j); }), 20,
             4200, 1025);
  }
  // up to 800 rows of row-major A are read in place, more are packed: both, with A's rows further apart than K
  // (columns 3 .. 3+530 of a wider matrix) and an edge tile of rows and columns
  for (index_t m : {index_t(799), index_t(830)}) {
    auto wide = filled<T, P>(m, 540, 5);
    auto as = ts::slice<1>(wide, 3, 533);
    auto bk = filled<T, P>(530, 75, 6);
    Mat<T, P> cs = ts::matmul(as, bk);
    check<T>(cs, reference(m, 75, 530, [&](index_t i, index_t p) { return wide(i, p + 3); }, [&](index_t p, index_t j) { return bk(p, j); }), m, 75,
             530);
  }
}

TEMPLATE_TEST_CASE("transposed and strided operands are read in place", "[matmul]", float, double) {
  using T = TestType;
  using P = ts::cpu_threads;
  auto a = filled<T, P>(65, 33, 5);   // used as a^T: 33 x 65
  auto b = filled<T, P>(127, 90, 6);  // every other column: 127 x 45
  auto bs = ts::slice<1>(b, 0, 90, 2);
  Mat<T, P> c = ts::matmul(ts::transpose(a), ts::slice<0>(bs, 0, 65));
  check<T>(c, reference(33, 45, 65, [&](index_t i, index_t p) { return a(p, i); }, [&](index_t p, index_t j) { return b(p, 2 * j); }), 33, 45, 65);
  // a strided destination (every other column of a wider tensor)
  Mat<T, P> wide(33, 90);
  wide = T(7);
  ts::slice<1>(wide, 0, 90, 2) = ts::matmul(ts::transpose(a), ts::slice<0>(bs, 0, 65));
  for (index_t i = 0; i < 33; ++i)
    for (index_t j = 0; j < 45; ++j) {
      REQUIRE(wide(i, 2 * j) == c(i, j));
      REQUIRE(wide(i, 2 * j + 1) == T(7));
    }
}

TEMPLATE_PRODUCT_TEST_CASE("a few rows times a weight read as its transpose (a batch-1 Linear), with and without an epilogue",
                           "[matmul]", std::pair, ((float, ts::cpu), (float, ts::cpu_threads), (double, ts::cpu_threads))) {
  // up to 8 rows of A take the unpacked path: dot products along K when B's columns are contiguous (W^T), in
  // blocks of 4 rows, sums of B's rows otherwise; 9 rows take the packed GEMM
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  ts::cpu_threads::set_num_threads(2);
  for (index_t m : {1, 2, 3, 4, 5, 8, 9})
    for (index_t k : {index_t(1), index_t(7), index_t(33), index_t(400)})
      for (index_t n : {index_t(1), index_t(5), index_t(65), index_t(130), index_t(1000)}) {
        auto x = filled<T, P>(m, k, 7);
        auto w = filled<T, P>(n, k, 8);  // [out, in]
        ts::Tensor<T, Shape<dyn>, P> bias(n);
        for (index_t j = 0; j < n; ++j) bias(j) = T(0.125) * T(j % 11) - T(0.5);
        const auto ref = reference(m, n, k, [&](index_t i, index_t p) { return x(i, p); }, [&](index_t p, index_t j) { return w(j, p); });
        Mat<T, P> y = ts::matmul(x, ts::transpose(w));
        check<T>(y, ref, m, n, k);
        Mat<T, P> z(m, n);
        z = ts::relu(ts::matmul(x, ts::transpose(w)) + bias);
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j) {
            const double v = ref[std::size_t(i * n + j)] + double(bias(j));
            REQUIRE(double(z(i, j)) == Approx(v > 0 ? v : 0).epsilon(1e-5).margin(1e-4));
          }
      }
}

TEST_CASE("a product inside an expression, and of an expression", "[matmul]") {
  using P = ts::cpu;
  auto a = filled<float, P>(33, 65, 7);
  auto b = filled<float, P>(65, 7, 8);
  ts::Tensor<float, Shape<7>, P> bias;
  for (int j = 0; j < 7; ++j) bias(j) = float(j) - 3.0f;
  Mat<float, P> y = ts::relu(ts::matmul(a, b) + bias);
  auto ref = reference(33, 7, 65, [&](index_t i, index_t p) { return a(i, p); }, [&](index_t p, index_t j) { return b(p, j); });
  for (index_t i = 0; i < 33; ++i)
    for (index_t j = 0; j < 7; ++j) {
      const double v = ref[std::size_t(i * 7 + j)] + bias(j);
      REQUIRE(y(i, j) == Approx(v > 0 ? v : 0).epsilon(1e-5).margin(1e-4));
    }
  // matmul(relu(matmul(a, b)), c): the inner product is materialised, the result stays right
  auto c = filled<float, P>(7, 5, 9);
  Mat<float, P> z = ts::matmul(ts::relu(ts::matmul(a, b)), c);
  for (index_t i = 0; i < 33; ++i)
    for (index_t j = 0; j < 5; ++j) {
      double s = 0;
      for (index_t p = 0; p < 7; ++p) {
        const double h = ref[std::size_t(i * 7 + p)];
        s += (h > 0 ? h : 0) * double(c(p, j));
      }
      REQUIRE(z(i, j) == Approx(s).epsilon(1e-5).margin(1e-3));
    }
}

TEST_CASE("a product into one of its operands goes through a temporary", "[matmul][alias]") {
  using P = ts::cpu;
  auto a = filled<double, P>(33, 33, 1);
  auto b = filled<double, P>(33, 33, 2);
  const auto ref = reference(33, 33, 33, [&](index_t i, index_t p) { return a(i, p); }, [&](index_t p, index_t j) { return b(p, j); });
  a = ts::matmul(a, b);
  check<double>(a, ref, 33, 33, 33);
}

TEST_CASE("mismatched inner extents throw shape_error naming both shapes", "[matmul]") {
  Mat<float, ts::cpu> a(4, 5), b(6, 3);
  REQUIRE_THROWS_AS(ts::matmul(a, b), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::matmul(a, b), Catch::Contains("[4, 5]") && Catch::Contains("[6, 3]"));
  static_assert(std::is_same_v<decltype(ts::matmul(std::declval<ts::Tensor<float, Shape<4, 5>>&>(),
                                                  std::declval<ts::Tensor<float, Shape<5, dyn>>&>()))::shape_type,
                               Shape<4, dyn>>);
}

TEMPLATE_TEST_CASE("bias, activation and residual run as the GEMM's epilogue: one pass, no temporary", "[matmul][fusion]",
                   ts::cpu, ts::cpu_threads) {
  using P = TestType;
  ts::cpu_threads::set_num_threads(2);
  for (index_t m : {1, 7, 65, 127, 300}) {
    const index_t k = 129, n = 97;
    auto x = filled<float, P>(m, k, 1);
    auto w = filled<float, P>(k, n, 2);
    auto res = filled<float, P>(m, n, 3);
    ts::Tensor<float, Shape<dyn>, P> bias(n);
    for (index_t j = 0; j < n; ++j) bias(j) = 0.25f * float(j % 9) - 1.0f;
    Mat<float, P> y(m, n);
    ts::stats::reset();
    y = ts::relu(ts::matmul(x, w) + bias) * 0.5f + res;
    CHECK(ts::stats::read().passes == 1);
    CHECK(ts::stats::read().allocations == 0);
    const auto ref = reference(m, n, k, [&](index_t i, index_t p) { return x(i, p); }, [&](index_t p, index_t j) { return w(p, j); });
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        const double v = ref[std::size_t(i * n + j)] + bias(j);
        REQUIRE(y(i, j) == Approx((v > 0 ? v : 0) * 0.5 + res(i, j)).epsilon(1e-5).margin(1e-4));
      }
    // the residual is the destination itself: it must be read before the product overwrites it, so no fusion
    Mat<float, P> r2 = res;
    r2 = r2 + ts::matmul(x, w);
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) REQUIRE(r2(i, j) == Approx(ref[std::size_t(i * n + j)] + res(i, j)).epsilon(1e-5).margin(1e-4));
  }
}

TEMPLATE_TEST_CASE("batched products broadcast their batch dimensions; matrix-vector products", "[matmul][batched]",
                   ts::cpu, ts::cpu_threads) {
  using P = TestType;
  ts::cpu_threads::set_num_threads(2);
  using T3 = ts::Tensor<double, Shape<dyn, dyn, dyn>, P>;
  const index_t B = 5, m = 33, k = 65, n = 7;
  T3 a(B, m, k), b(B, k, n), b1(1, k, n);
  for (index_t q = 0; q < B; ++q)
    for (index_t i = 0; i < m; ++i)
      for (index_t p = 0; p < k; ++p) a(q, i, p) = double((q * 13 + i * 7 + p * 3) % 19) - 9;
  for (index_t q = 0; q < B; ++q)
    for (index_t p = 0; p < k; ++p)
      for (index_t j = 0; j < n; ++j) b(q, p, j) = double((q * 5 + p * 11 + j) % 17) - 8;
  for (index_t p = 0; p < k; ++p)
    for (index_t j = 0; j < n; ++j) b1(0, p, j) = double((p * 3 + j * 5) % 7) - 3;
  auto expect = [&](auto&& got, auto&& bat, bool bcast) {
    for (index_t q = 0; q < B; ++q)
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
          double s = 0;
          for (index_t p = 0; p < k; ++p) s += a(q, i, p) * bat(bcast ? 0 : q, p, j);
          REQUIRE(got(q, i, j) == Approx(s).epsilon(1e-12));
        }
  };
  T3 c = ts::matmul(a, b);
  REQUIRE(c.dims() == ts::dims_t<3>{B, m, n});
  expect(c, b, false);
  T3 c1 = ts::matmul(a, b1);  // the right operand's batch of 1 is broadcast
  expect(c1, b1, true);
  auto w = ts::select<0>(b1, 0);  // one matrix for every batch: [k, n]
  T3 c2 = ts::matmul(a, w);
  expect(c2, b1, true);
  // matrix-vector: [m, k] x [k] -> [m], and a batch of them
  ts::Tensor<double, Shape<dyn>, P> v(k);
  for (index_t p = 0; p < k; ++p) v(p) = double(p % 5) - 2;
  auto a0 = ts::select<0>(a, 2);
  ts::Tensor<double, Shape<dyn>, P> mv = ts::matmul(a0, v);
  ts::Tensor<double, Shape<dyn, dyn>, P> bmv = ts::matmul(a, v);
  for (index_t i = 0; i < m; ++i) {
    double s = 0;
    for (index_t p = 0; p < k; ++p) s += a(2, i, p) * v(p);
    REQUIRE(mv(i) == Approx(s).epsilon(1e-12));
    REQUIRE(bmv(2, i) == Approx(s).epsilon(1e-12));
  }
  T3 bad(3, k, n);
  REQUIRE_THROWS_WITH(ts::matmul(a, bad), Catch::Contains("batch") && Catch::Contains("[5, 33, 65]"));
  static_assert(std::is_same_v<decltype(ts::matmul(std::declval<ts::Tensor<float, Shape<8, 1, 4, 5>>&>(),
                                                  std::declval<ts::Tensor<float, Shape<3, 5, 6>>&>()))::shape_type,
                               Shape<8, 3, 4, 6>>);
  static_assert(std::is_same_v<decltype(ts::matmul(std::declval<ts::Tensor<float, Shape<4, 5>>&>(),
                                                  std::declval<ts::Tensor<float, Shape<5>>&>()))::shape_type,
                               Shape<4>>);
}
