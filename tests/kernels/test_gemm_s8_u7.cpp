// The int8 GEMM's avx2_u7 path (kernels/cpu/gemm_s8.hpp: vpmaddubsw + vpmaddwd with ones, for uint8 A <= 127),
// bit-exact against plain int64 loops: odd sizes, K not a multiple of 2 or 4, A at 0 and 127, B at -128 and 127
// (127 * -128 * 2 must not saturate), strided A rows, accumulate, an epilogue, 1 and 2 threads, stated
// (int8_a_below_128) and checked A; A with a value above 127 never takes it; the isa limit excludes it.
// On a CPU without AVX2 the path is absent: the cases then check the portable path and say so.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <random>
#include <vector>

#include <tessera/kernels/cpu/gemm_s8.hpp>

namespace ts = tessera;
using ts::index_t;

namespace {

const bool have_u7 = ts::int8_isa_supported() >= ts::int8_isa::avx2_u7 && ts::int8_isa_supported() < ts::int8_isa::avx512_vnni;

struct isa_scope {
  explicit isa_scope(ts::int8_isa i) { ts::set_int8_isa_limit(i); }
  ~isa_scope() { ts::set_int8_isa_limit(ts::int8_isa::amx); }
};

long u7_blocks() { return ts::detail::s8::u7_blocks().load(); }

std::vector<std::int32_t> reference(index_t M, index_t N, index_t K, const std::vector<std::uint8_t>& a, index_t lda,
                                    const std::vector<std::int8_t>& b) {
  std::vector<std::int32_t> c(std::size_t(M * N));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      std::int64_t s = 0;
      for (index_t k = 0; k < K; ++k) s += std::int64_t(a[std::size_t(i * lda + k)]) * std::int64_t(b[std::size_t(k * N + j)]);
      c[std::size_t(i * N + j)] = std::int32_t(s);
    }
  return c;
}

/// A in [0, 127] (a third of the values at 0 or 127), B anywhere (a third at -128 or 127); lda = K + 5.
void fill(std::vector<std::uint8_t>& a, std::vector<std::int8_t>& b, std::mt19937& rng) {
  for (auto& x : a) {
    const unsigned r = rng() % 6;
    x = r == 0 ? 0 : r == 1 ? 127 : std::uint8_t(rng() % 128);
  }
  for (auto& x : b) {
    const unsigned r = rng() % 6;
    x = r == 0 ? std::int8_t(-128) : r == 1 ? std::int8_t(127) : std::int8_t(rng() % 256);
  }
}

/// C = A B and C += A B on the active path, stated (or not) to have A <= 127; returns whether both were exact.
bool product_exact(index_t M, index_t N, index_t K, int threads, bool stated, std::mt19937& rng) {
  const index_t lda = K + 5;
  std::vector<std::uint8_t> a(std::size_t(M * lda));
  std::vector<std::int8_t> b(std::size_t(K * N));
  fill(a, b, rng);
  const auto want = reference(M, N, K, a, lda, b);
  const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, K, N, threads);
  ts::int8_a_below_128 scope(stated);
  std::vector<std::int32_t> c(std::size_t(M * N), 7);
  ts::detail::cpu_gemm_s8(M, N, K, a.data(), lda, pb, c.data(), N, false, threads);
  std::vector<std::int32_t> c2(std::size_t(M * N)), want2 = want;
  for (std::size_t i = 0; i < c2.size(); ++i) c2[i] = std::int32_t(i % 1000) - 500, want2[i] += c2[i];
  ts::detail::cpu_gemm_s8(M, N, K, a.data(), lda, pb, c2.data(), N, true, threads);
  return c == want && c2 == want2;
}

}  // namespace

TEST_CASE("avx2_u7: exact at odd sizes, stated and checked A, 1 and 2 threads", "[kernels][gemm_s8][u7]") {
  if (!have_u7) WARN("this CPU has no avx2_u7 path (" << ts::int8_isa_name(ts::int8_isa_supported()) << "): checking its best path");
  std::mt19937 rng(11);
  isa_scope scope(ts::int8_isa::avx2_u7);
  const long before = u7_blocks();
  for (index_t M : {1, 7, 33, 65, 127})
    for (index_t N : {1, 7, 33, 65, 127})
      for (index_t K : {1, 2, 3, 5, 7, 33, 65, 127}) {
        INFO("M " << M << " N " << N << " K " << K);
        CHECK(product_exact(M, N, K, 1 + int((M + N + K) % 2), (M + K) % 2 == 0, rng));
      }
  if (have_u7) CHECK(u7_blocks() > before);
}

TEST_CASE("avx2_u7: several K blocks and both thread splits", "[kernels][gemm_s8][u7]") {
  std::mt19937 rng(5);
  isa_scope scope(ts::int8_isa::avx2_u7);
  for (bool stated : {true, false}) {
    const long before = u7_blocks();
    CHECK(product_exact(300, 200, 4100, 2, stated, rng));  // K past one 4096 block and four 1024-k blocks
    CHECK(product_exact(20, 300, 1500, 2, stated, rng));   // threads split the columns (A packed whole, shared)
    CHECK(product_exact(300, 20, 500, 2, stated, rng));    // threads split the rows (each packs its own)
    CHECK(product_exact(300, 20, 500, 1, stated, rng));
    if (have_u7) CHECK(u7_blocks() > before);
  }
}

TEST_CASE("avx2_u7: the worst cases 127 x -128 and 127 x 127 over long K stay exact", "[kernels][gemm_s8][u7]") {
  isa_scope scope(ts::int8_isa::avx2_u7);
  ts::int8_a_below_128 stated;
  for (std::int8_t bv : {std::int8_t(-128), std::int8_t(127)}) {
    const index_t M = 37, N = 19, K = 8191;  // |pair| 127 * 128 * 2 = 32512 (int16 holds it), |sum| 1.3e8
    std::vector<std::uint8_t> a(std::size_t(M * K), 127);
    std::vector<std::int8_t> b(std::size_t(K * N), bv);
    std::vector<std::int32_t> c(std::size_t(M * N));
    const long before = u7_blocks();
    ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, c.data(), N, false, 2);
    for (auto x : c) REQUIRE(x == std::int32_t(K * 127 * std::int32_t(bv)));
    if (have_u7) CHECK(u7_blocks() > before);
  }
}

TEST_CASE("avx2_u7: A with a value above 127 runs avx2 (exact); the limit avx2 and int8 A exclude the path", "[kernels][gemm_s8][u7]") {
  const index_t M = 40, N = 33, K = 301;
  std::vector<std::uint8_t> a(std::size_t(M * K), 127);
  std::vector<std::int8_t> b(std::size_t(K * N), 127);
  std::vector<std::int32_t> c(std::size_t(M * N));
  const ts::detail::mat_ref<std::int8_t> bm{b.data(), N, 1};
  isa_scope scope(ts::int8_isa::avx2_u7);
  for (index_t pos : {index_t(0), M * K / 2, M * K - 1}) {  // one 255 (255 * 127 * 2 would saturate int16)
    INFO("255 at " << pos);
    a[std::size_t(pos)] = 255;
    for (int threads : {1, 2}) {
      const long before = u7_blocks();
      ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, bm, c.data(), N, false, threads);
      CHECK(c == reference(M, N, K, a, K, b));
      if (threads == 1) CHECK(u7_blocks() == before);  // one block of rows: checked, refused
    }
    a[std::size_t(pos)] = 127;
  }
  // int8 A (stored as a + 128) never takes the path, even when stated
  std::vector<std::int8_t> as(std::size_t(M * K), -128);
  {
    ts::int8_a_below_128 stated;
    const long before = u7_blocks();
    ts::detail::cpu_gemm_s8(M, N, K, as.data(), K, bm, c.data(), N, false, 2);
    for (auto x : c) REQUIRE(x == std::int32_t(K * -128 * 127));
    CHECK(u7_blocks() == before);
  }
  // the limit avx2 excludes it
  {
    isa_scope s2(ts::int8_isa::avx2);
    ts::int8_a_below_128 stated;
    const long before = u7_blocks();
    ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, bm, c.data(), N, false, 2);
    CHECK(c == reference(M, N, K, a, K, b));
    CHECK(u7_blocks() == before);
    CHECK(ts::int8_isa_name(ts::int8_isa::avx2_u7) == "avx2_u7");
  }
}

namespace {
struct add_block_sums {  // an epilogue: sums every element of each finished block, once
  static constexpr bool active = true;
  const std::int32_t* c;
  index_t ldc;
  std::int64_t* total;
  std::vector<int>* seen;
  void operator()(index_t i0, index_t j0, index_t rows, index_t cols) const {
#pragma omp critical
    for (index_t i = i0; i < i0 + rows; ++i)
      for (index_t j = j0; j < j0 + cols; ++j) *total += c[i * ldc + j], ++(*seen)[std::size_t(i * ldc + j)];
  }
};
}  // namespace

TEST_CASE("avx2_u7: the epilogue sees every finished block once", "[kernels][gemm_s8][u7]") {
  std::mt19937 rng(9);
  isa_scope scope(ts::int8_isa::avx2_u7);
  ts::int8_a_below_128 stated;
  for (int threads : {1, 2})
    for (auto [M, N, K] : {std::tuple<index_t, index_t, index_t>{127, 65, 333}, {33, 200, 65}, {7, 7, 7}}) {
      std::vector<std::uint8_t> a(std::size_t(M * K));
      std::vector<std::int8_t> b(std::size_t(K * N));
      fill(a, b, rng);
      const auto want = reference(M, N, K, a, K, b);
      std::int64_t want_total = 0;
      for (auto x : want) want_total += x;
      std::vector<std::int32_t> c(std::size_t(M * N));
      std::int64_t total = 0;
      std::vector<int> seen(std::size_t(M * N), 0);
      const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, K, N, 1);
      ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, pb, c.data(), N, false, threads, add_block_sums{c.data(), N, &total, &seen});
      CHECK(c == want);
      CHECK(total == want_total);
      CHECK(std::count(seen.begin(), seen.end(), 1) == std::ptrdiff_t(seen.size()));
    }
}

TEST_CASE("packed B's column sums equal plain sums (B at -128 and 127, odd sizes)", "[kernels][gemm_s8]") {
  std::mt19937 rng(13);
  for (index_t K : {1, 3, 65, 127, 4099})
    for (index_t N : {1, 7, 33}) {
      std::vector<std::int8_t> b(std::size_t(K * N));
      for (auto& x : b) {
        const unsigned r = rng() % 4;
        x = r == 0 ? std::int8_t(-128) : r == 1 ? std::int8_t(127) : std::int8_t(rng() % 256);
      }
      const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, K, N, 2);
      INFO("K " << K << " N " << N);
      for (index_t j = 0; j < N; ++j) {
        std::int32_t s = 0;
        for (index_t k = 0; k < K; ++k) s += b[std::size_t(k * N + j)];
        CHECK(pb.col_sums[std::size_t(j)] == s);
      }
      for (std::size_t j = std::size_t(N); j < pb.col_sums.size(); ++j) CHECK(pb.col_sums[j] == 0);
    }
  // all -128 over a long K: 4099 * -128 (int16 pair sums of ones by -128: -256, no saturation)
  std::vector<std::int8_t> b(std::size_t(4099 * 17), std::int8_t(-128));
  const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), 17, 1}, 4099, 17, 1);
  for (index_t j = 0; j < 17; ++j) CHECK(pb.col_sums[std::size_t(j)] == 4099 * -128);
}
