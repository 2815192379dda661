// The GEMM kernels' blocking edges (kernels/cpu/gemm.hpp, gemm_s8.hpp) against plain loops: SGEMM at sizes that
// straddle the K block (KC), the A block (MC), the micro-tile (6 x 16 with AVX2, 14 x 32 with AVX-512) and the
// small / skinny / packed paths, on 1 and 2 threads; the int8 GEMM's widened AVX2 path (blocks of 512 k, 6- and
// 3-row tiles, partial panels) on every path this machine has. Results must not depend on the thread count.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include <tessera/kernels/cpu/gemm.hpp>
#include <tessera/kernels/cpu/gemm_s8.hpp>

namespace ts = tessera;
using ts::index_t;

namespace {

/// C = A * B in double from plain loops; A M x K row-major (row stride lda), B read at b[k * brs + j * bcs].
std::vector<double> sgemm_reference(index_t M, index_t N, index_t K, const std::vector<float>& a, index_t lda,
                                    const std::vector<float>& b, index_t brs, index_t bcs) {
  std::vector<double> c(std::size_t(M * N), 0.0);
  for (index_t i = 0; i < M; ++i)
    for (index_t k = 0; k < K; ++k) {
      const double x = a[std::size_t(i * lda + k)];
      for (index_t j = 0; j < N; ++j) c[std::size_t(i * N + j)] += x * double(b[std::size_t(k * brs + j * bcs)]);
    }
  return c;
}

void check_sgemm(index_t M, index_t N, index_t K, bool transposed_b, std::mt19937& rng) {
  INFO("M " << M << " N " << N << " K " << K << (transposed_b ? " B transposed" : ""));
  const index_t lda = K + 5;
  std::vector<float> a(std::size_t(M * lda)), b(std::size_t(K * N));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& x : a) x = u(rng);
  for (auto& x : b) x = u(rng);
  const index_t brs = transposed_b ? 1 : N, bcs = transposed_b ? K : 1;
  const auto want = sgemm_reference(M, N, K, a, lda, b, brs, bcs);
  const index_t ldc = N + 3;  // C rows with a gap: the gap must stay untouched
  std::vector<float> c1(std::size_t(M * ldc), -7.f), c2 = c1;
  ts::detail::cpu_gemm<float>(M, N, K, {a.data(), lda, 1}, {b.data(), brs, bcs}, c1.data(), ldc, false, 1);
  ts::detail::cpu_gemm<float>(M, N, K, {a.data(), lda, 1}, {b.data(), brs, bcs}, c2.data(), ldc, false, 2);
  const double tol = 1e-5 * double(K) + 1e-5;
  index_t bad = 0;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < ldc; ++j) {
      const std::size_t at = std::size_t(i * ldc + j);
      if (j >= N) {
        bad += c1[at] != -7.f || c2[at] != -7.f;
        continue;
      }
      const double w = want[std::size_t(i * N + j)];
      bad += std::abs(c1[at] - w) > tol || std::abs(c2[at] - w) > tol;
    }
  CHECK(bad == 0);
  // accumulate: C += A * B on top of C (every K block after the first adds to C)
  std::vector<float> c3(std::size_t(M * ldc), 0.5f);
  ts::detail::cpu_gemm<float>(M, N, K, {a.data(), lda, 1}, {b.data(), brs, bcs}, c3.data(), ldc, true, 2);
  bad = 0;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) bad += std::abs(c3[std::size_t(i * ldc + j)] - (want[std::size_t(i * N + j)] + 0.5)) > tol;
  CHECK(bad == 0);
}

std::vector<std::int32_t> s8_reference(index_t M, index_t N, index_t K, const std::vector<std::uint8_t>& a, const std::vector<std::int8_t>& b) {
  std::vector<std::int32_t> c(std::size_t(M * N));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      std::int64_t s = 0;
      for (index_t k = 0; k < K; ++k) s += std::int64_t(a[std::size_t(i * K + k)]) * b[std::size_t(k * N + j)];
      c[std::size_t(i * N + j)] = std::int32_t(s);
    }
  return c;
}

}  // namespace

TEST_CASE("SGEMM across the blocking edges matches plain loops on 1 and 2 threads", "[gemm][blocking]") {
  std::mt19937 rng(5);
  // skinny (M <= 8), small in place (up to ~200^3), packed; K across 384 / 512 / 1024-wide K blocks; M across the
  // 6- and 14-row tiles and the A blocks (144 .. 224 rows); N across 16- and 32-wide panels
  for (index_t M : {1, 5, 8, 9, 13, 50})
    for (index_t N : {1, 17, 33, 70})
      for (index_t K : {1, 31, 300}) {
        check_sgemm(M, N, K, false, rng);
        check_sgemm(M, N, K, true, rng);
      }
  check_sgemm(7, 300, 1100, true, rng);     // a Linear at batch 7, K past a K block
  check_sgemm(151, 67, 385, false, rng);    // past one 384-k block and one 144-row A block
  check_sgemm(301, 129, 1031, false, rng);  // several K and A blocks, edge tiles on both sides
  check_sgemm(256, 130, 513, true, rng);    // transposed B through the packed path
  check_sgemm(803, 45, 97, false, rng);     // A too tall to be read in place: A packed
}

TEST_CASE("int8 GEMM's widened AVX2 blocks: row remainders, partial panels, 512-k blocks, both splits", "[gemm][gemm_s8][blocking]") {
  std::mt19937 rng(11);
  for (int i = 0; i <= int(ts::int8_isa_supported()); ++i) {
    const auto isa = ts::int8_isa(i);
    ts::set_int8_isa_limit(isa);
    INFO("path " << ts::int8_isa_name(isa));
    // rows 8 .. 23 cover 6-row tiles with 0 .. 5 left over; K 511 / 513 / 1100 cross the 512-k widened blocks
    for (index_t M : {8, 9, 10, 11, 12, 13, 17, 23, 40})
      for (index_t N : {16, 21, 50})
        for (index_t K : {15, 511, 513, 1100}) {
          INFO("M " << M << " N " << N << " K " << K);
          std::vector<std::uint8_t> a(std::size_t(M * K));
          std::vector<std::int8_t> b(std::size_t(K * N));
          for (auto& x : a) x = std::uint8_t(rng() % 256);
          for (auto& x : b) x = std::int8_t(rng() % 256);
          const auto want = s8_reference(M, N, K, a, b);
          for (int threads : {1, 2}) {
            std::vector<std::int32_t> c(std::size_t(M * N), 9);
            ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, c.data(), N, false, threads);
            CHECK(c == want);
          }
        }
    // tall (threads split rows) and wide (threads split columns) products over several 512-k blocks, accumulating
    for (auto [M, N] : {std::pair<index_t, index_t>{301, 20}, {40, 333}}) {
      const index_t K = 1500;
      std::vector<std::uint8_t> a(std::size_t(M * K));
      std::vector<std::int8_t> b(std::size_t(K * N));
      for (auto& x : a) x = std::uint8_t(rng() % 256);
      for (auto& x : b) x = std::int8_t(rng() % 256);
      auto want = s8_reference(M, N, K, a, b);
      std::vector<std::int32_t> c(std::size_t(M * N));
      for (std::size_t e = 0; e < c.size(); ++e) c[e] = std::int32_t(e % 77) - 30, want[e] += c[e];
      const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, K, N, 2);
      ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, pb, c.data(), N, true, 2);
      CHECK(c == want);
    }
  }
  ts::set_int8_isa_limit(ts::int8_isa::amx);
}
