// The int8 GEMM (kernels/cpu/gemm_s8.hpp) on every path this machine has, bit-exact against plain int64 loops.
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

/// The paths to test: every one up to what the CPU offers (the limit is restored afterwards).
std::vector<ts::int8_isa> paths() {
  std::vector<ts::int8_isa> v;
  for (int i = 0; i <= int(ts::int8_isa_supported()); ++i) v.push_back(ts::int8_isa(i));
  return v;
}
struct isa_scope {
  explicit isa_scope(ts::int8_isa i) { ts::set_int8_isa_limit(i); }
  ~isa_scope() { ts::set_int8_isa_limit(ts::int8_isa::amx); }
};

template <class TA>
std::vector<std::int32_t> reference(index_t M, index_t N, index_t K, const std::vector<TA>& a, index_t lda,
                                    const std::vector<std::int8_t>& b, index_t brs, index_t bcs) {
  std::vector<std::int32_t> c(std::size_t(M * N));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      std::int64_t s = 0;
      for (index_t k = 0; k < K; ++k) s += std::int64_t(a[std::size_t(i * lda + k)]) * std::int64_t(b[std::size_t(k * brs + j * bcs)]);
      c[std::size_t(i * N + j)] = std::int32_t(s);
    }
  return c;
}

template <class TA>
void check_product(index_t M, index_t N, index_t K, bool transposed_b, int threads, std::mt19937& rng) {
  const index_t lda = K + 3;  // rows of A with a gap between them
  std::vector<TA> a(std::size_t(M * lda));
  std::vector<std::int8_t> b(std::size_t(K * N));
  for (auto& x : a) x = TA(rng() % 256);
  for (auto& x : b) x = std::int8_t(rng() % 256);
  const index_t brs = transposed_b ? 1 : N, bcs = transposed_b ? K : 1;  // B read as the transpose of an N x K matrix
  const auto want = reference(M, N, K, a, lda, b, brs, bcs);
  std::vector<std::int32_t> c(std::size_t(M * N), 7);
  ts::detail::cpu_gemm_s8(M, N, K, a.data(), lda, ts::detail::mat_ref<std::int8_t>{b.data(), brs, bcs}, c.data(), N, false, threads);
  CHECK(c == want);
  // accumulate: C += A * B on top of what is there
  std::vector<std::int32_t> c2(std::size_t(M * N));
  for (std::size_t i = 0; i < c2.size(); ++i) c2[i] = std::int32_t(i % 1000) - 500;
  auto want2 = want;
  for (std::size_t i = 0; i < c2.size(); ++i) want2[i] += c2[i];
  const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), brs, bcs}, K, N, threads);
  ts::detail::cpu_gemm_s8(M, N, K, a.data(), lda, pb, c2.data(), N, true, threads);
  CHECK(c2 == want2);
}

struct record_blocks {  // an epilogue that counts the blocks it is given and checks they are final
  static constexpr bool active = true;
  std::vector<int>* seen;
  const std::vector<std::int32_t>* c;
  const std::vector<std::int32_t>* want;
  index_t N;
  bool* ok;
  void operator()(index_t i0, index_t j0, index_t rows, index_t cols) const {
#pragma omp critical
    for (index_t i = i0; i < i0 + rows; ++i)
      for (index_t j = j0; j < j0 + cols; ++j) {
        ++(*seen)[std::size_t(i * N + j)];
        if ((*c)[std::size_t(i * N + j)] != (*want)[std::size_t(i * N + j)]) *ok = false;
      }
  }
};

}  // namespace

TEST_CASE("int8 GEMM matches int64 loops at odd sizes on every path", "[quant][gemm_s8]") {
  std::mt19937 rng(42);
  for (auto isa : paths()) {
    isa_scope scope(isa);
    INFO("path " << ts::int8_isa_name(isa));
    for (index_t M : {1, 7, 33, 65, 127})
      for (index_t N : {1, 7, 33, 65})
        for (index_t K : {1, 7, 65, 127}) {
          INFO("M " << M << " N " << N << " K " << K);
          check_product<std::uint8_t>(M, N, K, false, 2, rng);
          check_product<std::int8_t>(M, N, K, (M + N) % 2 == 0, 1, rng);
        }
  }
}

TEST_CASE("int8 GEMM: larger products, several K blocks, both thread splits", "[quant][gemm_s8]") {
  std::mt19937 rng(7);
  for (auto isa : paths()) {
    isa_scope scope(isa);
    INFO("path " << ts::int8_isa_name(isa));
    check_product<std::uint8_t>(300, 200, 4100, false, 2, rng);  // K past one 4096 block
    check_product<std::uint8_t>(20, 300, 500, false, 2, rng);    // threads split the columns
    check_product<std::int8_t>(300, 20, 500, true, 2, rng);      // threads split the rows
  }
}

TEST_CASE("int8 GEMM saturation cases: 255 x 127 and 255 x -128 over long K stay exact", "[quant][gemm_s8]") {
  for (auto isa : paths()) {
    isa_scope scope(isa);
    INFO("path " << ts::int8_isa_name(isa));
    for (std::int8_t bv : {std::int8_t(127), std::int8_t(-128)}) {
      const index_t M = 33, N = 17, K = 8191;  // |sum| up to 8191 * 255 * 128 = 2.67e8: fits int32, not int16 pairs
      std::vector<std::uint8_t> a(std::size_t(M * K), 255);
      std::vector<std::int8_t> b(std::size_t(K * N), bv);
      std::vector<std::int32_t> c(std::size_t(M * N));
      ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, c.data(), N, false, 2);
      for (auto x : c) REQUIRE(x == std::int32_t(K * 255 * std::int32_t(bv)));
      // signed A at its extremes
      std::vector<std::int8_t> as(std::size_t(M * K), -128);
      ts::detail::cpu_gemm_s8(M, N, K, as.data(), K, ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, c.data(), N, false, 2);
      for (auto x : c) REQUIRE(x == std::int32_t(K * -128 * std::int32_t(bv)));
    }
  }
}

TEST_CASE("int8 GEMM epilogue sees every block of C once, after it is final", "[quant][gemm_s8]") {
  std::mt19937 rng(3);
  for (auto isa : paths()) {
    isa_scope scope(isa);
    for (auto [M, N, K] : {std::tuple<index_t, index_t, index_t>{300, 70, 300}, {33, 200, 65}, {1, 1, 1}}) {
      std::vector<std::uint8_t> a(std::size_t(M * K));
      std::vector<std::int8_t> b(std::size_t(K * N));
      for (auto& x : a) x = std::uint8_t(rng());
      for (auto& x : b) x = std::int8_t(rng());
      const auto want = reference(M, N, K, a, K, b, N, 1);
      std::vector<std::int32_t> c(std::size_t(M * N));
      std::vector<int> seen(std::size_t(M * N));
      bool ok = true;
      ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, c.data(), N, false, 2,
                              record_blocks{&seen, &c, &want, N, &ok});
      CHECK(ok);
      CHECK(std::count(seen.begin(), seen.end(), 1) == M * N);
    }
  }
}

TEST_CASE("int8 GEMM rejects a packed B of another shape, naming both", "[quant][gemm_s8]") {
  std::vector<std::int8_t> b(6, 1);
  const ts::packed_b_s8 pb(ts::detail::mat_ref<std::int8_t>{b.data(), 3, 1}, 2, 3);
  std::vector<std::uint8_t> a(8, 1);
  std::vector<std::int32_t> c(8);
  CHECK_THROWS_WITH(ts::detail::cpu_gemm_s8(2, 4, 2, a.data(), 2, pb, c.data(), 4, false, 1),
                    Catch::Contains("2 x 3") && Catch::Contains("2 x 4"));
}
