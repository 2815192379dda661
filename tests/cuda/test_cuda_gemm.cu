// cuda_gemm (kernels/cuda/gemm.hpp) against plain host loops in double: odd sizes, transposed and strided
// operands, batches, every epilogue, float and double. Without a GPU the executable prints
// "SKIPPED: no CUDA device" and exits 77, which ctest reports as skipped.
//
// Tolerances: cuda_gemm asks cuBLASLt for CUBLAS_COMPUTE_32F (full FP32, no TF32), so each result is within the
// classic bound |c - ref| <= gamma_K * sum_k |a_ik b_kj| (gamma_K ~ K eps, any summation order, with or without
// FMA). The tests use 2 (K + 2) eps times that sum (plus |bias|): far tighter than TF32's 2^-11 per product would
// pass, and one test checks directly that an input bit below TF32's mantissa survives.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <tessera/kernels/cuda/gemm.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
using ts::gemm_epilogue;
using ts::index_t;

namespace {

using cuda_test::cuda_ok;
using cuda_test::dbuf;

struct stream_t {
  cudaStream_t s = nullptr;
  stream_t() { cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~stream_t() { cudaStreamDestroy(s); }
};

/// Deterministic values in [-1, 1) with full mantissas (so that rounding to TF32 would show).
struct lcg {
  std::uint64_t x;
  explicit lcg(std::uint64_t seed) : x(seed * 6364136223846793005ull + 1442695040888963407ull) {}
  double next() {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return double(x >> 11) / double(1ull << 53) * 2.0 - 1.0;
  }
};

/// A strided operand: `rows x cols` values at r * rs + c * cs (+ b * bs for batch b) in a buffer of `size`.
template <class T>
struct operand {
  index_t rows, cols, rs, cs, bs, batch;
  std::vector<T> h;
  operand(index_t r, index_t c, index_t rs_, index_t cs_, index_t batch_, index_t bs_, std::uint64_t seed)
      : rows(r), cols(c), rs(rs_), cs(cs_), bs(bs_), batch(batch_) {
    index_t hi = 0, lo = 0;  // extent of addressed elements, relative to the first
    auto span = [&](index_t n, index_t s) {
      if (n > 0) (s >= 0 ? hi : lo) += (n - 1) * s;
    };
    span(r, rs);
    span(c, cs);
    span(batch, bs);
    h.assign(std::size_t(hi - lo + 1), T(0));
    base = -lo;
    lcg g(seed);
    for (auto& v : h) v = T(g.next());
  }
  index_t base = 0;
  T at(index_t b, index_t r, index_t c) const { return h[std::size_t(base + b * bs + r * rs + c * cs)]; }
};

template <class T>
constexpr double eps() {
  return std::numeric_limits<T>::epsilon();
}

double act(gemm_epilogue e, double v) {
  switch (e) {
    case gemm_epilogue::relu:
    case gemm_epilogue::bias_relu: return v > 0 ? v : 0;
    case gemm_epilogue::gelu:
    case gemm_epilogue::bias_gelu: return 0.5 * v * (1.0 + std::erf(v * 0.70710678118654752440));
    default: return v;
  }
}
bool uses_bias(gemm_epilogue e) {
  return e == gemm_epilogue::bias || e == gemm_epilogue::bias_relu || e == gemm_epilogue::bias_gelu;
}
const char* name(gemm_epilogue e) {
  const char* n[] = {"none", "bias", "relu", "bias_relu", "gelu", "bias_gelu"};
  return n[int(e)];
}

/// Runs one cuda_gemm and compares every element (and the untouched padding of C) with the host loop.
template <class T>
void check_gemm(cudaStream_t s, index_t M, index_t N, index_t K, bool a_t, bool b_t, index_t ldc_pad, gemm_epilogue epi,
                index_t batch = 1, bool share_a = false, std::uint64_t seed = 1) {
  // A: M x K, row-major (rs = K + 1, cs = 1) or transposed storage (rs = 1, cs = M + 2); B likewise.
  const index_t a_rs = a_t ? 1 : K + 1, a_cs = a_t ? M + 2 : 1;
  const index_t b_rs = b_t ? 1 : N + 3, b_cs = b_t ? K + 1 : 1;
  const index_t a_mat = a_t ? (K - 1) * a_cs + M : (M - 1) * a_rs + K;
  const index_t b_mat = b_t ? (N - 1) * b_cs + K : (K - 1) * b_rs + N;
  const index_t a_bs = share_a ? 0 : a_mat + 5, b_bs = b_mat + 1;
  operand<T> A(M, K, a_rs, a_cs, batch, a_bs, seed), B(K, N, b_rs, b_cs, batch, b_bs, seed + 7);
  const index_t ldc = N + ldc_pad, c_bs = M * ldc + 2;  // a gap after each product's padded rows
  std::vector<T> bias(static_cast<std::size_t>(N));
  lcg g(seed + 13);
  for (auto& v : bias) v = T(g.next());
  dbuf<T> dA(A.h), dB(B.h), dbias(bias), dC{std::size_t((batch - 1) * c_bs + (M - 1) * ldc + N)};
  ts::cuda_gemm<T>(s, M, N, K, dA.p + A.base, a_rs, a_cs, dB.p + B.base, b_rs, b_cs, dC.p, ldc, epi,
                   uses_bias(epi) ? dbias.p : nullptr, batch, a_bs, b_bs, c_bs);
  const auto C = dC.get(s);
  INFO("M " << M << " N " << N << " K " << K << " a_t " << a_t << " b_t " << b_t << " ldc " << ldc << " epilogue "
            << name(epi) << " batch " << batch << " share_a " << share_a);
  for (index_t b = 0; b < batch; ++b)
    for (index_t i = 0; i < M; ++i) {
      for (index_t j = 0; j < N; ++j) {
        double ref = 0, mag = 0;
        for (index_t k = 0; k < K; ++k) {
          const double p = double(A.at(b, i, k)) * double(B.at(b, k, j));
          ref += p;
          mag += std::fabs(p);
        }
        if (uses_bias(epi)) {
          ref += double(bias[std::size_t(j)]);
          mag += std::fabs(double(bias[std::size_t(j)]));
        }
        const double want = act(epi, ref);
        const double tol = 1.2 * 2.0 * double(K + 2) * eps<T>() * mag + 16 * eps<T>() * std::max(1.0, std::fabs(want));
        const double got = double(C[std::size_t(b * c_bs + i * ldc + j)]);
        if (!(std::fabs(got - want) <= tol)) {
          INFO("C[" << b << "][" << i << "][" << j << "] = " << got << ", expected " << want << " (tolerance " << tol << ")");
          REQUIRE(std::fabs(got - want) <= tol);
        }
      }
      for (index_t j = N; j < ldc && (i + 1 < M || b + 1 < batch); ++j)  // padding between rows: never written
        REQUIRE(std::isnan(double(C[std::size_t(b * c_bs + i * ldc + j)])));
    }
}

}  // namespace

TEMPLATE_TEST_CASE("cuda_gemm: odd sizes, every operand orientation", "[cuda][gemm]", float, double) {
  using T = TestType;
  stream_t st;
  const index_t sizes[] = {1, 7, 33, 65, 127};
  for (index_t M : sizes)
    for (index_t N : sizes)
      for (index_t K : sizes)
        for (int layout = 0; layout < 4; ++layout) check_gemm<T>(st.s, M, N, K, layout & 1, layout & 2, 0, gemm_epilogue::none);
}

TEMPLATE_TEST_CASE("cuda_gemm: every epilogue, with a padded ldc and transposed operands", "[cuda][gemm]", float, double) {
  using T = TestType;
  stream_t st;
  const gemm_epilogue all[] = {gemm_epilogue::none, gemm_epilogue::bias,  gemm_epilogue::relu,
                               gemm_epilogue::bias_relu, gemm_epilogue::gelu, gemm_epilogue::bias_gelu};
  struct shape {
    index_t M, N, K;
  };
  const shape shapes[] = {{1, 1, 1}, {7, 33, 65}, {65, 7, 33}, {127, 65, 127}, {1, 127, 33}, {33, 1, 7}, {256, 192, 64}};
  for (auto e : all)
    for (auto sh : shapes)
      for (int layout = 0; layout < 4; ++layout)
        for (index_t pad : {0, 5}) check_gemm<T>(st.s, sh.M, sh.N, sh.K, layout & 1, layout & 2, pad, e);
}

TEMPLATE_TEST_CASE("cuda_gemm: strided batches, a shared operand, epilogues on every product", "[cuda][gemm]", float,
                   double) {
  using T = TestType;
  stream_t st;
  for (auto e : {gemm_epilogue::none, gemm_epilogue::bias_relu, gemm_epilogue::bias_gelu, gemm_epilogue::relu})
    for (int layout = 0; layout < 4; ++layout) {
      check_gemm<T>(st.s, 7, 33, 65, layout & 1, layout & 2, 0, e, 3);
      check_gemm<T>(st.s, 33, 7, 1, layout & 1, layout & 2, 3, e, 5, true);
      check_gemm<T>(st.s, 65, 127, 33, layout & 1, layout & 2, 1, e, 2, true);
    }
}

TEMPLATE_TEST_CASE("cuda_gemm: operands with no unit stride are packed first", "[cuda][gemm]", float, double) {
  using T = TestType;
  stream_t st;
  // A every other row and column of a bigger matrix; B broadcast along rows (rs = 0) or walked backwards.
  const index_t M = 33, N = 65, K = 7;
  for (int variant = 0; variant < 3; ++variant) {
    const index_t a_rs = 2 * (2 * K), a_cs = 2;
    const index_t b_rs = variant == 0 ? 0 : (variant == 1 ? -N : 2 * N), b_cs = variant == 2 ? 2 : 1;
    operand<T> A(M, K, a_rs, a_cs, 2, (M - 1) * a_rs + (K - 1) * a_cs + 1, 3);
    operand<T> B(K, N, b_rs, b_cs, 2, variant == 1 ? K * N : (K - 1) * std::abs(b_rs) + (N - 1) * b_cs + 1, 4);
    std::vector<T> bias(std::size_t(N), T(0.25));
    const index_t ldc = N, c_bs = M * N;
    dbuf<T> dA(A.h), dB(B.h), dbias(bias), dC{std::size_t(2 * M * N)};
    ts::cuda_gemm<T>(st.s, M, N, K, dA.p + A.base, a_rs, a_cs, dB.p + B.base, b_rs, b_cs, dC.p, ldc, gemm_epilogue::bias,
                     dbias.p, 2, A.bs, B.bs, c_bs);
    const auto C = dC.get(st.s);
    for (index_t b = 0; b < 2; ++b)
      for (index_t i = 0; i < M; ++i)
        for (index_t j = 0; j < N; ++j) {
          double ref = 0.25, mag = 0.25;
          for (index_t k = 0; k < K; ++k) {
            ref += double(A.at(b, i, k)) * double(B.at(b, k, j));
            mag += std::fabs(double(A.at(b, i, k)) * double(B.at(b, k, j)));
          }
          INFO("variant " << variant << " C[" << b << "][" << i << "][" << j << "]");
          REQUIRE(std::fabs(double(C[std::size_t(b * c_bs + i * ldc + j)]) - ref) <= 2.4 * (K + 2) * eps<T>() * mag);
        }
  }
}

TEMPLATE_TEST_CASE("cuda_gemm: K = 0 gives the epilogue of zero (plus bias)", "[cuda][gemm]", float, double) {
  using T = TestType;
  stream_t st;
  const index_t M = 7, N = 33;
  std::vector<T> bias(static_cast<std::size_t>(N));
  for (index_t j = 0; j < N; ++j) bias[std::size_t(j)] = T(j % 5) - T(2);
  dbuf<T> dbias(bias), dC{std::size_t(M * N)};
  for (auto e : {gemm_epilogue::none, gemm_epilogue::bias, gemm_epilogue::bias_relu, gemm_epilogue::bias_gelu}) {
    ts::cuda_gemm<T>(st.s, M, N, 0, static_cast<const T*>(nullptr), 1, 1, static_cast<const T*>(nullptr), 1, 1, dC.p, N,
                     e, dbias.p);
    const auto C = dC.get(st.s);
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < N; ++j)
        REQUIRE(double(C[std::size_t(i * N + j)]) ==
                Approx(act(e, uses_bias(e) ? double(bias[std::size_t(j)]) : 0.0)).margin(1e-6));
  }
}

TEST_CASE("cuda_gemm: float runs in full FP32, not TF32", "[cuda][gemm]") {
  // a = 1 + 2^-20 is exact in FP32 but rounds to 1 in TF32 (10 mantissa bits); so does the bias 2^-21.
  stream_t st;
  const float a = 1.0f + std::ldexp(1.0f, -20), b = 1.0f, bias = std::ldexp(1.0f, -21);
  dbuf<float> dA(std::vector<float>{a, a}), dB(std::vector<float>{b, b}), dbias(std::vector<float>{bias}), dC(1);
  ts::cuda_gemm<float>(st.s, 1, 1, 2, dA.p, 2, 1, dB.p, 1, 1, dC.p, 1);
  REQUIRE(dC.get(st.s)[0] == 2.0f * a);
  ts::cuda_gemm<float>(st.s, 1, 1, 1, dA.p, 1, 1, dB.p, 1, 1, dC.p, 1, gemm_epilogue::bias_relu, dbias.p);
  REQUIRE(dC.get(st.s)[0] == a + bias);
  // A larger product with full-mantissa inputs: the RMS error relative to the RMS result is ~sqrt(K) eps in FP32
  // (about 1e-6 here), ~1e-3 with TF32's 10-bit inputs.
  const index_t M = 96, N = 80, K = 512;
  operand<float> A(M, K, K, 1, 1, 0, 21), B(K, N, N, 1, 1, 0, 22);
  dbuf<float> dA2(A.h), dB2(B.h), dC2{std::size_t(M * N)};
  ts::cuda_gemm<float>(st.s, M, N, K, dA2.p, K, 1, dB2.p, N, 1, dC2.p, N);
  const auto C = dC2.get(st.s);
  double err2 = 0, ref2 = 0;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      double ref = 0;
      for (index_t k = 0; k < K; ++k) ref += double(A.at(0, i, k)) * double(B.at(0, k, j));
      err2 += (double(C[std::size_t(i * N + j)]) - ref) * (double(C[std::size_t(i * N + j)]) - ref);
      ref2 += ref * ref;
    }
  CHECK(std::sqrt(err2 / ref2) < 2e-5);
}

TEST_CASE("cuda_gemm: plans are cached, not rebuilt per call", "[cuda][gemm]") {
  stream_t st;
  auto& state = ts::cuda_kernels::gemm_detail::global();
  check_gemm<float>(st.s, 19, 23, 29, false, true, 0, gemm_epilogue::bias_relu);
  const std::size_t plans = state.plans.size();
  for (int i = 0; i < 3; ++i) check_gemm<float>(st.s, 19, 23, 29, false, true, 0, gemm_epilogue::bias_relu, 1, false, 5 + i);
  CHECK(state.plans.size() == plans);
  check_gemm<float>(st.s, 19, 23, 31, false, true, 0, gemm_epilogue::bias_relu);
  CHECK(state.plans.size() == plans + 1);
}

TEST_CASE("cuda_gemm: bad arguments throw before anything runs", "[cuda][gemm]") {
  stream_t st;
  dbuf<float> d(64);
  CHECK_THROWS_AS(ts::cuda_gemm<float>(st.s, 4, 4, 4, d.p, 4, 1, d.p, 4, 1, d.p, 3), ts::shape_error);  // ldc < N
  CHECK_THROWS_AS(ts::cuda_gemm<float>(st.s, 4, 4, 4, d.p, 4, 1, d.p, 4, 1, d.p, 4, gemm_epilogue::bias), std::invalid_argument);
  CHECK_THROWS_AS(ts::cuda_gemm<float>(st.s, 2, 2, 2, d.p, 2, 1, d.p, 2, 1, d.p, 2, gemm_epilogue::none, nullptr, 2, 4, 4, 1),
                  ts::shape_error);  // the batch's outputs overlap
}
