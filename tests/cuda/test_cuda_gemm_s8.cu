// cuda_gemm_s8 (kernels/cuda/gemm_s8.hpp) against plain host loops: exact int32 sums at odd sizes for uint8 and int8
// A, B given as a transposed view (PyTorch's [out, in] weights), the saturation case 255 x 127 over a long K, and
// the fused epilogues (dequantize + bias + ReLU to float; and requantized to uint8). Without a GPU: SKIPPED, exit 77.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <tessera/kernels/cuda/gemm_s8.hpp>
#include <vector>

namespace ts = tessera;
namespace ck = tessera::cuda_kernels;
using ts::index_t;
using cuda_test::cuda_ok;
using cuda_test::dbuf;

namespace {
template <class TA>
std::vector<std::int32_t> reference(index_t M, index_t N, index_t K, const std::vector<TA>& a, const std::vector<std::int8_t>& b,
                                    index_t rs, index_t cs) {
  std::vector<std::int32_t> c(std::size_t(M * N));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      std::int64_t s = 0;
      for (index_t k = 0; k < K; ++k) s += std::int64_t(a[std::size_t(i * K + k)]) * b[std::size_t(k * rs + j * cs)];
      c[std::size_t(i * N + j)] = std::int32_t(s);
    }
  return c;
}

template <class TA>
void check_sizes(index_t M, index_t N, index_t K, bool weights_layout, std::mt19937& rng) {
  std::vector<TA> a(std::size_t(M * K));
  std::vector<std::int8_t> b(std::size_t(K * N));
  for (auto& x : a) x = TA(rng());
  for (auto& x : b) x = std::int8_t(rng());
  const index_t rs = weights_layout ? 1 : N, cs = weights_layout ? K : 1;  // [N, K] read as its transpose
  const auto want = reference(M, N, K, a, b, rs, cs);
  dbuf<TA> da(a);
  dbuf<std::int8_t> db(b);
  dbuf<std::int32_t> dc(std::size_t(M * N));
  ck::cuda_packed_b_s8 pb(nullptr, db.p, K, N, rs, cs);
  ck::cuda_gemm_s8(nullptr, M, N, K, da.p, K, pb, ck::s8_store_int32{dc.p, N});
  CHECK(dc.get(nullptr) == want);
}
}  // namespace

TEST_CASE("CUDA int8 GEMM: exact sums at odd sizes, uint8 and int8 A", "[cuda][gemm_s8]") {
  std::mt19937 rng(1);
  for (index_t M : {1, 7, 33, 65, 127})
    for (index_t N : {1, 7, 65})
      for (index_t K : {1, 7, 33, 127}) {
        INFO("M " << M << " N " << N << " K " << K);
        check_sizes<std::uint8_t>(M, N, K, false, rng);
        check_sizes<std::int8_t>(M, N, K, true, rng);
      }
  check_sizes<std::uint8_t>(300, 257, 1000, true, rng);
}

TEST_CASE("CUDA int8 GEMM: 255 x 127 and 255 x -128 over K = 8191 stay exact", "[cuda][gemm_s8]") {
  for (std::int8_t bv : {std::int8_t(127), std::int8_t(-128)}) {
    const index_t M = 33, N = 17, K = 8191;
    dbuf<std::uint8_t> da(std::vector<std::uint8_t>(std::size_t(M * K), 255));
    dbuf<std::int8_t> db(std::vector<std::int8_t>(std::size_t(K * N), bv));
    dbuf<std::int32_t> dc(std::size_t(M * N));
    ck::cuda_packed_b_s8 pb(nullptr, db.p, K, N, N, 1);
    ck::cuda_gemm_s8(nullptr, M, N, K, da.p, K, pb, ck::s8_store_int32{dc.p, N});
    for (auto x : dc.get(nullptr)) REQUIRE(x == std::int32_t(K * 255 * std::int32_t(bv)));
  }
}

TEST_CASE("CUDA int8 GEMM: dequantize + bias + ReLU (+ requantize) in the kernel", "[cuda][gemm_s8]") {
  std::mt19937 rng(2);
  const index_t M = 37, N = 29, K = 70;
  std::vector<std::uint8_t> a(std::size_t(M * K));
  std::vector<std::int8_t> b(std::size_t(K * N));
  for (auto& x : a) x = std::uint8_t(rng());
  for (auto& x : b) x = std::int8_t(rng());
  std::vector<float> scale(N), offset(N), bias(N);
  const float sx = 0.02f;
  const int zx = 120;
  std::vector<std::int32_t> colsum(N);
  for (index_t j = 0; j < N; ++j) {
    for (index_t k = 0; k < K; ++k) colsum[std::size_t(j)] += b[std::size_t(k * N + j)];
    scale[std::size_t(j)] = sx * 0.01f * float(j + 1);
    offset[std::size_t(j)] = float(zx) * float(colsum[std::size_t(j)]);
    bias[std::size_t(j)] = 0.1f * float(j % 7) - 0.3f;
  }
  const auto sums = reference(M, N, K, a, b, N, 1);
  dbuf<std::uint8_t> da(a);
  dbuf<std::int8_t> db(b);
  dbuf<float> ds(scale);
  dbuf<float> doff(offset);
  dbuf<float> dbias(bias);
  dbuf<float> dy{std::size_t(M * N)};
  dbuf<std::uint8_t> dq(std::size_t(M * N));
  ck::cuda_packed_b_s8 pb(nullptr, db.p, K, N, N, 1);
  const ck::s8_dequant_f32 deq{dy.p, N, ds.p, doff.p, dbias.p, true};
  ck::cuda_gemm_s8(nullptr, M, N, K, da.p, K, pb, deq);
  const float out_scale = 0.05f, out_zp = 3.0f;
  ck::cuda_gemm_s8(nullptr, M, N, K, da.p, K, pb, ck::s8_requant_u8{deq, dq.p, N, 1.0f / out_scale, out_zp});
  const auto y = dy.get(nullptr);
  const auto q = dq.get(nullptr);
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      const double real = std::max(0.0, (double(sums[std::size_t(i * N + j)]) - offset[std::size_t(j)]) * scale[std::size_t(j)] +
                                            bias[std::size_t(j)]);
      CHECK(y[std::size_t(i * N + j)] == Approx(real).margin(1e-4));
      const double want = std::min(255.0, std::max(0.0, std::nearbyint(real / out_scale) + out_zp));
      CHECK(std::abs(int(q[std::size_t(i * N + j)]) - int(want)) <= 1);
    }
}
