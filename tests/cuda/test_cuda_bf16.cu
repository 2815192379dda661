// The CUDA bf16 path (kernels/cuda/gemm_bf16.hpp, backend<cuda>::gemm_bf16 and ::to_bf16) against plain host loops:
// cuda_gemm_bf16 at odd sizes (1, 7, 33, 65, 127; odd K), B row-major and B = W^T (a Linear's [N, K] weight), rows
// with gaps (lda > K, ldb > N, ldw > K, ldc > N: the gaps of C left untouched), column-major A read in place,
// operands without a unit stride (every other column, a broadcast row, reversed rows: copied first), C = AB and
// C += AB, K = 0, NaN and infinity, the errors; cuda_to_bf16 bit for bit against the host's bfloat16(float) (ties
// both ways, negative ties, denormals, overflow, infinities, NaNs with sign and payload, a sweep of every exponent
// and sign with the rounding-critical low halves, unaligned pointers and odd lengths); and the backend's two
// functions on Tensor<bfloat16, ..., cuda> memory. Without a GPU the executable prints "SKIPPED: ..." and exits 77
// (ctest: skipped).
//
// Tolerance: A and B are bf16 values, so every product is exact in fp32 and the reference (double sums of the same
// bf16 values) differs from cuBLASLt's fp32 accumulation only by its roundings:
// |c - ref| <= (1e-5 + 2 (K + 2) FLT_EPSILON) * (sum_k |a_ik b_kj| + |c0|) (the host bf16 test's 1e-5, plus the
// classic gamma_K bound the fp32 CUDA test uses, which also covers tensor cores' truncating accumulation).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tessera/kernels/cuda/gemm_bf16.hpp>
#include <tessera/tessera.hpp>
#include <type_traits>
#include <vector>

namespace ts = tessera;
using ts::bfloat16;
using ts::index_t;
using cuda_test::cuda_ok;
using cuda_test::dbuf;

namespace {

struct stream_t {
  cudaStream_t s = nullptr;
  stream_t() { cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~stream_t() { cudaStreamDestroy(s); }
};

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
constexpr std::uint32_t c_sentinel = 0xffffffffu;  // dbuf's fill: a NaN no product writes
constexpr std::uint16_t bf_sentinel = 0xffff;

/// A bf16 operand of rows x cols: element (r, c) at base + r * rs + c * cs of h (any strides, negative too); every
/// other element of h (the gaps) is a NaN, so that a read of a gap shows in the result.
struct operand {
  index_t rows, cols, rs, cs, base = 0;
  std::vector<bfloat16> h;
  operand(index_t r, index_t c, index_t rs_, index_t cs_, std::mt19937& rng) : rows(r), cols(c), rs(rs_), cs(cs_) {
    index_t hi = 0, lo = 0;
    for (auto [n, s] : {std::pair{r, rs}, std::pair{c, cs}})
      if (n > 0) (s >= 0 ? hi : lo) += (n - 1) * s;
    base = -lo;
    bfloat16 nan;
    nan.bits = 0x7fc1;
    h.assign(std::size_t(hi - lo + 1), nan);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j) h[std::size_t(base + i * rs + j * cs)] = bfloat16(u(rng));
  }
  float at(index_t i, index_t j) const { return float(h[std::size_t(base + i * rs + j * cs)]); }
};

enum class a_kind { row_major, padded, col_major, every_other_column, reversed_rows };
enum class b_kind { row_major, padded, wt, wt_padded, every_other_column, broadcast_row };

operand make_a(a_kind k, index_t M, index_t K, std::mt19937& rng) {
  switch (k) {
    case a_kind::row_major: return operand(M, K, K, 1, rng);
    case a_kind::padded: return operand(M, K, K + 3, 1, rng);
    case a_kind::col_major: return operand(M, K, 1, M + 2, rng);
    case a_kind::every_other_column: return operand(M, K, 2 * K + 1, 2, rng);
    case a_kind::reversed_rows: return operand(M, K, -K, 1, rng);
  }
  throw std::logic_error("a_kind");
}
operand make_b(b_kind k, index_t K, index_t N, std::mt19937& rng) {
  switch (k) {
    case b_kind::row_major: return operand(K, N, N, 1, rng);
    case b_kind::padded: return operand(K, N, N + 5, 1, rng);
    case b_kind::wt: return operand(K, N, 1, K, rng);  // W [N, K] row-major, read as W^T
    case b_kind::wt_padded: return operand(K, N, 1, K + 2, rng);
    case b_kind::every_other_column: return operand(K, N, 2 * N, 2, rng);
    case b_kind::broadcast_row: return operand(K, N, 0, 1, rng);  // every row of B the same
  }
  throw std::logic_error("b_kind");
}

/// C (M x N, row stride ldc = N + cpad) = A B or C0 + A B on the device, checked element by element against double
/// sums of the same bf16 values; the gaps of C must keep their sentinel bits.
void check_product(cudaStream_t s, index_t M, index_t N, index_t K, const operand& A, const operand& B, index_t cpad,
                   bool accumulate, std::mt19937& rng) {
  const index_t ldc = N + cpad;
  std::vector<float> c0(std::size_t(M * ldc), float_of(c_sentinel));
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  if (accumulate)
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < N; ++j) c0[std::size_t(i * ldc + j)] = u(rng);
  dbuf<bfloat16> da(A.h), db(B.h);
  dbuf<float> dc(c0);
  ts::cuda_gemm_bf16(s, M, N, K, {da.p + A.base, A.rs, A.cs}, {db.p + B.base, B.rs, B.cs}, dc.p, ldc, accumulate);
  const auto c = dc.get(s);
  for (index_t i = 0; i < M; ++i) {
    for (index_t j = 0; j < N; ++j) {
      const double start = accumulate ? double(c0[std::size_t(i * ldc + j)]) : 0.0;
      double ref = start, mag = std::abs(start);
      for (index_t k = 0; k < K; ++k) {
        const double p = double(A.at(i, k)) * double(B.at(k, j));
        ref += p;
        mag += std::abs(p);
      }
      const double got = c[std::size_t(i * ldc + j)];
      const double tol = (1e-5 + 2.0 * double(K + 2) * FLT_EPSILON) * mag;
      if (!(std::abs(got - ref) <= tol)) {
        INFO("M " << M << " N " << N << " K " << K << " accumulate " << accumulate << ": C(" << i << ", " << j
                  << ") = " << got << ", reference " << ref << ", tolerance " << tol);
        REQUIRE(std::abs(got - ref) <= tol);
      }
    }
    for (index_t j = N; j < ldc; ++j) {
      INFO("the gap of row " << i << " of C, column " << j);
      REQUIRE(bits_of(c[std::size_t(i * ldc + j)]) == c_sentinel);
    }
  }
}

/// The bits of the device's conversion of `in` (src at element offset src_off, dst at dst_off; the element after
/// the last must keep its sentinel).
std::vector<std::uint16_t> device_to_bf16(cudaStream_t s, const std::vector<float>& in, index_t src_off, index_t dst_off) {
  const index_t n = index_t(in.size());
  std::vector<float> padded(std::size_t(n + src_off), 0.0f);
  std::copy(in.begin(), in.end(), padded.begin() + src_off);
  dbuf<float> src(padded);
  dbuf<bfloat16> dst(std::size_t(n + dst_off + 1));
  ts::cuda_to_bf16(s, src.p + src_off, dst.p + dst_off, n);
  const auto out = dst.get(s);
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) bits[std::size_t(i)] = out[std::size_t(dst_off + i)].bits;
  for (index_t i = 0; i < dst_off; ++i) REQUIRE(out[std::size_t(i)].bits == bf_sentinel);
  REQUIRE(out[std::size_t(dst_off + n)].bits == bf_sentinel);
  return bits;
}

template <class B>
constexpr bool has_to_bf16 = requires { &B::to_bf16; };
/// The host's signatures (kernels/cpu/backend.hpp): a function converts to these pointer types only if it has them.
using gemm_bf16_fn = void (*)(index_t, index_t, index_t, ts::detail::mat_ref<bfloat16>, ts::detail::mat_ref<bfloat16>,
                              float*, index_t, bool, const ts::detail::no_epilogue&);
using to_bf16_fn = void (*)(const float*, bfloat16*, index_t);
/// backend<cuda>::to_bf16 has the host's signature (checked against the host's once the host has one).
template <class Host, class Dev>
constexpr bool same_to_bf16() {
  constexpr to_bf16_fn dev_fn = &Dev::to_bf16;
  if constexpr (has_to_bf16<Host>) {
    constexpr to_bf16_fn host_fn = &Host::to_bf16;
    return dev_fn != nullptr && host_fn != nullptr;
  }
  return dev_fn != nullptr;
}

}  // namespace

TEST_CASE("CUDA bf16 GEMM: odd sizes, B row-major and B = W^T", "[cuda][bf16]") {
  stream_t st;
  std::mt19937 rng(20);
  for (index_t M : {1, 7, 33, 65, 127})
    for (index_t N : {1, 7, 33, 65, 127})
      for (index_t K : {1, 2, 7, 33, 65, 127})
        for (b_kind bk : {b_kind::row_major, b_kind::wt}) {
          const operand A = make_a(a_kind::row_major, M, K, rng), B = make_b(bk, K, N, rng);
          check_product(st.s, M, N, K, A, B, 0, false, rng);
        }
}

TEST_CASE("CUDA bf16 GEMM: rows with gaps, C += AB, column-major A", "[cuda][bf16]") {
  stream_t st;
  std::mt19937 rng(21);
  for (index_t M : {1, 33, 127})
    for (index_t N : {7, 65})
      for (index_t K : {1, 33, 127})
        for (a_kind ak : {a_kind::padded, a_kind::col_major})
          for (b_kind bk : {b_kind::padded, b_kind::wt_padded})
            for (bool acc : {false, true}) {
              const operand A = make_a(ak, M, K, rng), B = make_b(bk, K, N, rng);
              check_product(st.s, M, N, K, A, B, 3, acc, rng);
            }
}

TEST_CASE("CUDA bf16 GEMM: operands without a unit stride are copied first", "[cuda][bf16]") {
  stream_t st;
  std::mt19937 rng(22);
  for (index_t M : {1, 7, 65})
    for (index_t N : {1, 33})
      for (index_t K : {7, 127}) {
        for (a_kind ak : {a_kind::every_other_column, a_kind::reversed_rows})
          check_product(st.s, M, N, K, make_a(ak, M, K, rng), make_b(b_kind::wt, K, N, rng), 1, true, rng);
        for (b_kind bk : {b_kind::every_other_column, b_kind::broadcast_row})
          check_product(st.s, M, N, K, make_a(a_kind::row_major, M, K, rng), make_b(bk, K, N, rng), 0, false, rng);
      }
}

TEST_CASE("CUDA bf16 GEMM: K = 0 zeroes C, or leaves it when accumulating", "[cuda][bf16]") {
  stream_t st;
  const index_t M = 7, N = 33, ldc = 35;
  std::vector<float> c0(std::size_t(M * ldc), float_of(c_sentinel));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) c0[std::size_t(i * ldc + j)] = float(i - j) + 0.5f;
  dbuf<bfloat16> a(std::size_t(1));  // never read
  for (bool acc : {false, true}) {
    INFO("accumulate " << acc);
    dbuf<float> c(c0);
    ts::cuda_gemm_bf16(st.s, M, N, 0, {a.p, 0, 1}, {a.p, N, 1}, c.p, ldc, acc);
    const auto h = c.get(st.s);
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < ldc; ++j) {
        const std::size_t at = std::size_t(i * ldc + j);
        const std::uint32_t want = j >= N ? c_sentinel : (acc ? bits_of(c0[at]) : 0u);  // +0.0f
        REQUIRE(bits_of(h[at]) == want);
      }
  }
}

TEST_CASE("CUDA bf16 GEMM: NaN and infinity propagate", "[cuda][bf16]") {
  stream_t st;
  const index_t M = 9, N = 11, K = 13;
  std::vector<bfloat16> a(std::size_t(M * K)), w(std::size_t(N * K));  // B = W^T
  for (index_t i = 0; i < M * K; ++i) a[std::size_t(i)] = bfloat16(float((i * 7) % 5 + 1) / 8.0f);  // all > 0
  for (index_t i = 0; i < N * K; ++i) w[std::size_t(i)] = bfloat16(float((i * 3) % 7) / 4.0f - 0.75f);
  a[std::size_t(4 * K + 2)] = bfloat16(std::numeric_limits<float>::quiet_NaN());  // row 4 of C: NaN
  w[std::size_t(6 * K + 5)] = bfloat16(std::numeric_limits<float>::infinity());   // column 6 of C: +inf
  dbuf<bfloat16> da(a), dw(w);
  dbuf<float> dc(std::size_t(M * N));
  ts::cuda_gemm_bf16(st.s, M, N, K, {da.p, K, 1}, {dw.p, 1, K}, dc.p, N, false);
  const auto c = dc.get(st.s);
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      INFO("C(" << i << ", " << j << ") = " << c[std::size_t(i * N + j)]);
      const float v = c[std::size_t(i * N + j)];
      if (i == 4) REQUIRE(std::isnan(v));
      else if (j == 6) REQUIRE((std::isinf(v) && v > 0));
      else {
        double ref = 0;
        for (index_t k = 0; k < K; ++k) ref += double(float(a[std::size_t(i * K + k)])) * double(float(w[std::size_t(j * K + k)]));
        REQUIRE(std::abs(double(v) - ref) <= 1e-5 * (std::abs(ref) + 1.0));
      }
    }
}

TEST_CASE("CUDA bf16 GEMM: errors name the shapes", "[cuda][bf16]") {
  dbuf<bfloat16> a(std::size_t(64));
  dbuf<float> c(std::size_t(64));
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_AS(ts::cuda_gemm_bf16(nullptr, -1, 4, 5, {a.p, 5, 1}, {a.p, 4, 1}, c.p, 4, false), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::cuda_gemm_bf16(nullptr, 3, 4, -5, {a.p, 5, 1}, {a.p, 4, 1}, c.p, 4, false),
                      Contains("negative extent") && Contains("A 3 x -5"));
  REQUIRE_THROWS_AS(ts::cuda_gemm_bf16(nullptr, 3, 4, 5, {a.p, 5, 1}, {a.p, 4, 1}, c.p, 3, false), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::cuda_gemm_bf16(nullptr, 3, 4, 5, {a.p, 5, 1}, {a.p, 4, 1}, c.p, 3, false),
                      Contains("A 3 x 5, B 5 x 4, C 3 x 4 (ldc 3)"));
  REQUIRE_THROWS_AS(ts::cuda_to_bf16(nullptr, c.p, a.p, -1), ts::shape_error);
}

TEST_CASE("cuda_to_bf16: bit for bit the host's bfloat16(float)", "[cuda][bf16]") {
  stream_t st;
  // hand values: float bits -> bf16 bits (round to nearest even; NaN keeps sign and top payload, quiet bit set)
  const std::vector<std::pair<std::uint32_t, std::uint16_t>> hand = {
      {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81},
      {0x3f807fffu, 0x3f80}, {0xbf808000u, 0xbf80}, {0xbf818000u, 0xbf82}, {0x00008000u, 0x0000},
      {0x00018000u, 0x0002}, {0x80018000u, 0x8002}, {0x80008000u, 0x8000}, {0x007fffffu, 0x0080},
      {0x00000001u, 0x0000}, {0x7f7fffffu, 0x7f80}, {0xff7fffffu, 0xff80}, {0x7f7f7fffu, 0x7f7f},
      {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, {0x7fc00000u, 0x7fc0}, {0x7f800001u, 0x7fc0},
      {0xffa12345u, 0xffe1}, {0x7fffffffu, 0x7fff}, {0xff800001u, 0xffc0}, {0x80000000u, 0x8000},
      {0x00000000u, 0x0000}};
  std::vector<float> in;
  for (auto [f, b] : hand) {
    in.push_back(float_of(f));
    INFO("host bfloat16(float) of 0x" << std::hex << f);
    REQUIRE(bfloat16(float_of(f)).bits == b);  // the rule itself, before comparing the device with it
  }
  // every sign and exponent (and NaN/inf), each with the low halves around the rounding point
  for (std::uint32_t hi = 0; hi < 0x10000u; hi += 1)
    for (std::uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) in.push_back(float_of(hi << 16 | lo));
  std::mt19937 rng(23);
  for (int i = 0; i < 1 << 20; ++i) in.push_back(float_of(std::uint32_t(rng())));
  in.push_back(1.0f);  // an odd length: the scalar tail after the groups of four
  REQUIRE(in.size() % 4 != 0);

  for (auto [src_off, dst_off] : {std::pair<index_t, index_t>{0, 0}, {1, 0}, {0, 1}, {3, 2}}) {  // aligned and not
    INFO("source offset " << src_off << ", destination offset " << dst_off);
    const auto got = device_to_bf16(st.s, in, src_off, dst_off);
    for (std::size_t i = 0; i < in.size(); ++i) {
      const std::uint16_t want = bfloat16(in[i]).bits;
      if (got[i] != want) {
        INFO("element " << i << ": float bits 0x" << std::hex << bits_of(in[i]) << ", device 0x" << got[i] << ", host 0x" << want);
        REQUIRE(got[i] == want);
      }
    }
  }
  for (index_t n : {1, 2, 3, 5, 7}) {  // short lengths: only the tail, or one group and a tail
    const std::vector<float> few(in.begin(), in.begin() + n);
    const auto got = device_to_bf16(st.s, few, 0, 0);
    for (index_t i = 0; i < n; ++i) REQUIRE(got[std::size_t(i)] == bfloat16(few[std::size_t(i)]).bits);
  }
}

TEST_CASE("backend<cuda>: gemm_bf16 and to_bf16 on Tensor<bfloat16, ..., cuda> memory", "[cuda][bf16]") {
  using dev = ts::backend<ts::cuda>;
  using host = ts::backend<ts::cpu>;
  constexpr gemm_bf16_fn dev_gemm = &dev::gemm_bf16<ts::detail::no_epilogue>;  // the same signature as the host's
  constexpr gemm_bf16_fn host_gemm = &host::gemm_bf16<ts::detail::no_epilogue>;
  static_assert(dev_gemm != host_gemm, "two backends, one signature");
  static_assert(same_to_bf16<host, dev>(), "backend<cuda>::to_bf16 has the host's signature");
  const index_t M = 33, N = 65, K = 127;  // y [M, N] = x [M, K] W^T, W [N, K]: a Linear
  ts::Tensor<float, ts::dyn_shape_t<2>> x(M, K), w(N, K);
  std::mt19937 rng(24);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = u(rng);
  for (index_t i = 0; i < w.size(); ++i) w.data()[i] = u(rng);
  const auto dx = ts::to<ts::cuda>(x), dw = ts::to<ts::cuda>(w);
  ts::Tensor<bfloat16, ts::dyn_shape_t<2>, ts::cuda> xb(M, K), wb(N, K);  // bf16 device memory
  ts::Tensor<float, ts::dyn_shape_t<2>, ts::cuda> y(M, N);
  dev::to_bf16(dx.data(), xb.data(), xb.size());
  dev::to_bf16(dw.data(), wb.data(), wb.size());
  dev::gemm_bf16(M, N, K, {xb.data(), K, 1}, {wb.data(), 1, K}, y.data(), N, false);
  const auto hxb = ts::to<ts::cpu>(xb), hwb = ts::to<ts::cpu>(wb);
  const auto hy = ts::to<ts::cpu>(y);
  for (index_t i = 0; i < x.size(); ++i) REQUIRE(hxb.data()[i].bits == bfloat16(x.data()[i]).bits);
  for (index_t i = 0; i < w.size(); ++i) REQUIRE(hwb.data()[i].bits == bfloat16(w.data()[i]).bits);
  std::vector<double> ref(std::size_t(M * N)), tol(std::size_t(M * N));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      double r = 0, mag = 0;
      for (index_t k = 0; k < K; ++k) {
        const double p = double(float(bfloat16(x(i, k)))) * double(float(bfloat16(w(j, k))));
        r += p;
        mag += std::abs(p);
      }
      ref[std::size_t(i * N + j)] = r;
      tol[std::size_t(i * N + j)] = (1e-5 + 2.0 * double(K + 2) * FLT_EPSILON) * mag;
      INFO("y(" << i << ", " << j << ")");
      REQUIRE(std::abs(double(hy(i, j)) - r) <= tol[std::size_t(i * N + j)]);
    }
  // accumulate: y += x W^T through the same call, so y = 2 x W^T
  dev::gemm_bf16(M, N, K, {xb.data(), K, 1}, {wb.data(), 1, K}, y.data(), N, true);
  const auto hy2 = ts::to<ts::cpu>(y);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO("element " << i << " of y after y += x W^T");
    REQUIRE(std::abs(double(hy2.data()[i]) - 2.0 * ref[i]) <= 2.0 * tol[i] + 4.0 * FLT_EPSILON * std::abs(ref[i]));
  }
}
