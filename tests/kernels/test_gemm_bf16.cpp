// The bf16 GEMM (kernels/cpu/gemm_bf16.hpp): C (fp32) = A (bf16) * B (bf16) on every path this CPU has, against a
// reference summed in double from the same bf16 values (so the only error allowed is fp32 accumulation: 1e-5 times
// sum_k |a_ik b_kj|). Paths the CPU lacks are reported and skipped; the avx512_bf16 and amx_bf16 paths' layouts
// (packing, blocking, tile shapes) run everywhere through the same driver with scalar stand-ins for their instructions.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <tessera/kernels/cpu/backend.hpp>
#include <tessera/kernels/cpu/gemm_bf16.hpp>

#include "bf16_paths.hpp"
namespace ts = tessera;
using ts::bfloat16;
using ts::index_t;

namespace {

std::vector<ts::bf16_isa> paths() { return bf16_test::paths("test_gemm_bf16", " (its layout and blocking run below with a scalar tile)"); }
using bf16_test::isa_scope;

/// A matrix of bf16 values in [-1, 1) (rounded from floats), rows x cols at row stride ld and column stride cs.
struct bmat {
  index_t rows, cols, rs, cs;
  std::vector<bfloat16> v;
  bmat(index_t r, index_t c, index_t rs_, index_t cs_, std::mt19937& rng) : rows(r), cols(c), rs(rs_), cs(cs_) {
    v.assign(std::size_t(std::max<index_t>(1, (r - 1) * rs + (c - 1) * cs + 1)), bfloat16(99.0f));  // gaps hold 99
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j) v[std::size_t(i * rs + j * cs)] = bfloat16(u(rng));
  }
  double at(index_t i, index_t j) const { return double(float(v[std::size_t(i * rs + j * cs)])); }
  ts::detail::mat_ref<bfloat16> ref() const { return {v.data(), rs, cs}; }
};

/// C = A B in double, and sum_k |a_ik b_kj| (the scale of the allowed error).
void reference(const bmat& a, const bmat& b, std::vector<double>& c, std::vector<double>& mag) {
  const index_t M = a.rows, K = a.cols, N = b.cols;
  c.assign(std::size_t(M * N), 0.0);
  mag.assign(std::size_t(M * N), 0.0);
  for (index_t i = 0; i < M; ++i)
    for (index_t k = 0; k < K; ++k) {
      const double x = a.at(i, k);
      for (index_t j = 0; j < N; ++j) {
        c[std::size_t(i * N + j)] += x * b.at(k, j);
        mag[std::size_t(i * N + j)] += std::abs(x * b.at(k, j));
      }
    }
}

/// |got - want| <= 1e-5 * mag (plus a floor for magnitudes near 0) for every element; counts the failures.
int mismatches(const float* c, index_t ldc, index_t M, index_t N, const std::vector<double>& want, const std::vector<double>& mag,
               double base = 0.0) {
  int bad = 0;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      const double w = want[std::size_t(i * N + j)] + base, m = mag[std::size_t(i * N + j)] + std::abs(base);
      if (!(std::abs(double(c[i * ldc + j]) - w) <= 1e-5 * m + 1e-30)) ++bad;
    }
  return bad;
}

/// An epilogue that adds a bias per column and applies ReLU, counting the visits of every element.
struct bias_relu {
  static constexpr bool active = true;
  float* c;
  index_t ldc;
  const float* bias;
  std::atomic<int>* visits;
  index_t N;
  void operator()(index_t i0, index_t j0, index_t rows, index_t cols) const {
    for (index_t i = i0; i < i0 + rows; ++i)
      for (index_t j = j0; j < j0 + cols; ++j) {
        float& x = c[i * ldc + j];
        x = std::max(0.0f, x + bias[j]);
        visits[i * N + j].fetch_add(1);
      }
  }
};

/// One product on every path, 1 and 2 threads: plain (C = A B into a C with a gap after each row), accumulate
/// (C += A B), and with the bias + ReLU epilogue.
void check_all(const bmat& a, const bmat& b, const char* what) {
  const index_t M = a.rows, K = a.cols, N = b.cols, ldc = N + 5;
  std::vector<double> want, mag;
  reference(a, b, want, mag);
  std::vector<float> bias(static_cast<std::size_t>(N));
  for (index_t j = 0; j < N; ++j) bias[std::size_t(j)] = float(j % 7) * 0.25f - 0.75f;
  for (const auto isa : paths())
    for (int threads : {1, 2}) {
      isa_scope scope(isa);
      INFO(what << ": M " << M << " N " << N << " K " << K << ", path " << ts::bf16_isa_name(isa) << ", threads " << threads);
      std::vector<float> c(std::size_t(M * ldc), -7.0f);
      ts::detail::cpu_gemm_bf16(M, N, K, a.ref(), b.ref(), c.data(), ldc, false, threads);
      CHECK(mismatches(c.data(), ldc, M, N, want, mag) == 0);
      bool gaps = true;  // the columns past N of each row are left alone
      for (index_t i = 0; i < M; ++i)
        for (index_t j = N; j < ldc; ++j) gaps = gaps && c[std::size_t(i * ldc + j)] == -7.0f;
      CHECK(gaps);
      std::vector<float> c2(std::size_t(M * ldc), 0.5f);
      ts::detail::cpu_gemm_bf16(M, N, K, a.ref(), b.ref(), c2.data(), ldc, true, threads);
      CHECK(mismatches(c2.data(), ldc, M, N, want, mag, 0.5) == 0);
      std::vector<float> c3(std::size_t(M * ldc), 3.0f);
      std::vector<std::atomic<int>> visits(std::size_t(M * N));
      ts::detail::cpu_gemm_bf16(M, N, K, a.ref(), b.ref(), c3.data(), ldc, false, threads,
                                bias_relu{c3.data(), ldc, bias.data(), visits.data(), N});
      int bad = 0, twice = 0;
      for (index_t i = 0; i < M; ++i)
        for (index_t j = 0; j < N; ++j) {
          const double w = std::max(0.0, want[std::size_t(i * N + j)] + bias[std::size_t(j)]);
          if (!(std::abs(double(c3[std::size_t(i * ldc + j)]) - w) <= 1e-5 * (mag[std::size_t(i * N + j)] + 1.0))) ++bad;
          if (visits[std::size_t(i * N + j)].load() != 1) ++twice;
        }
      CHECK(bad == 0);
      CHECK(twice == 0);
    }
}

}  // namespace

TEST_CASE("bf16 GEMM: odd sizes, row-major and transposed B, every path and 1 and 2 threads", "[gemm_bf16]") {
  std::mt19937 rng(20);
  for (index_t M : {1, 7, 33, 65, 127})
    for (index_t N : {1, 7, 33, 65, 127})
      for (index_t K : {1, 2, 7, 33, 64, 65, 127}) {
        const bmat a(M, K, K, 1, rng);
        check_all(a, bmat(K, N, N, 1, rng), "B row-major");
        check_all(a, bmat(K, N, 1, K, rng), "B = W^T, W [N, K] row-major");
      }
}

TEST_CASE("bf16 GEMM: strided operands (row gaps, column strides on A and B)", "[gemm_bf16]") {
  std::mt19937 rng(21);
  for (index_t K : {5, 66, 129}) {
    check_all(bmat(45, K, K + 3, 1, rng), bmat(K, 70, 70 + 9, 1, rng), "A and B with gaps after their rows");
    check_all(bmat(45, K, 1, 47, rng), bmat(K, 70, 2 * 70 + 1, 2, rng), "A column-major, B every other column");
    check_all(bmat(45, K, 3 * K, 2, rng), bmat(K, 70, 1, K + 4, rng), "A every other element, B = W^T with gaps");
  }
}

TEST_CASE("bf16 GEMM: several K, M and N blocks", "[gemm_bf16]") {
  std::mt19937 rng(22);
  check_all(bmat(37, 1100, 1100, 1, rng), bmat(1100, 70, 70, 1, rng), "two K blocks of the fp32 path, three of pairs");
  check_all(bmat(29, 1025, 1025, 1, rng), bmat(1025, 40, 1, 1025, rng), "odd K over K blocks (the last pair padded)");
  check_all(bmat(500, 1100, 1100, 1, rng), bmat(1100, 40, 40, 1, rng), "several M blocks on every path");
  check_all(bmat(3, 5, 5, 1, rng), bmat(5, 4200, 4200, 1, rng), "two N blocks");
}

TEST_CASE("bf16 GEMM: the skinny path (up to 16 rows, no packing) over column strips and threads", "[gemm_bf16]") {
  std::mt19937 rng(27);
  for (index_t M : {1, 4, 8, 13, 16, 17})
    for (index_t K : {3, 9, 203}) {
      check_all(bmat(M, K, K, 1, rng), bmat(K, 130, 1, K + 2, rng), "B = W^T (dot products)");
      check_all(bmat(M, K, K + 1, 1, rng), bmat(K, 130, 131, 1, rng), "B row-major (sums of rows)");
    }
}

TEST_CASE("bf16 GEMM: K = 0 and empty products", "[gemm_bf16]") {
  for (const auto isa : paths()) {
    isa_scope scope(isa);
    std::vector<bfloat16> none(1);
    std::vector<float> c(6, 4.0f);
    std::vector<std::atomic<int>> visits(6);
    const std::vector<float> bias(3, 1.0f);
    ts::detail::cpu_gemm_bf16(2, 3, 0, {none.data(), 0, 1}, {none.data(), 3, 1}, c.data(), 3, true, 2);
    CHECK(c == std::vector<float>(6, 4.0f));
    ts::detail::cpu_gemm_bf16(2, 3, 0, {none.data(), 0, 1}, {none.data(), 3, 1}, c.data(), 3, false, 2,
                              bias_relu{c.data(), 3, bias.data(), visits.data(), 3});
    CHECK(c == std::vector<float>(6, 1.0f));
    for (auto& v : visits) CHECK(v.load() == 1);
    ts::detail::cpu_gemm_bf16(0, 3, 4, {none.data(), 4, 1}, {none.data(), 3, 1}, c.data(), 3, false, 2);  // nothing to do
    CHECK(c == std::vector<float>(6, 1.0f));
  }
  std::vector<bfloat16> a(4);
  std::vector<float> c(4);
  CHECK_THROWS_AS(ts::detail::cpu_gemm_bf16(2, 2, 2, {a.data(), 2, 1}, {a.data(), 2, 1}, c.data(), 1, false, 1), ts::shape_error);
}

TEST_CASE("bf16 GEMM: NaN and infinity propagate", "[gemm_bf16]") {
  std::mt19937 rng(23);
  for (const auto isa : paths()) {
    isa_scope scope(isa);
    bmat a(20, 40, 40, 1, rng), b(40, 50, 50, 1, rng);
    a.v[3] = bfloat16(std::numeric_limits<float>::quiet_NaN());                 // row 0
    a.v[40 * 5 + 1] = bfloat16(std::numeric_limits<float>::infinity());       // row 5
    for (index_t j = 0; j < 50; ++j) b.v[std::size_t(1 * 50 + j)] = bfloat16(0.5f);  // row 1 of B > 0: +inf in row 5
    std::vector<float> c(20 * 50);
    ts::detail::cpu_gemm_bf16(20, 50, 40, a.ref(), b.ref(), c.data(), 50, false, 2);
    INFO("path " << ts::bf16_isa_name(isa));
    int nan0 = 0, inf5 = 0, finite = 0;
    for (index_t j = 0; j < 50; ++j) {
      nan0 += std::isnan(c[std::size_t(j)]);
      inf5 += c[std::size_t(5 * 50 + j)] == std::numeric_limits<float>::infinity();
      finite += std::isfinite(c[std::size_t(7 * 50 + j)]);
    }
    CHECK(nan0 == 50);
    CHECK(inf5 == 50);
    CHECK(finite == 50);
  }
}

namespace {
float half(std::uint32_t w, int h) {
  bfloat16 x;
  x.bits = std::uint16_t(w >> (16 * h));
  return float(x);
}
/// The avx512_bf16 path's layout (packing, blocking, tile shape) with a scalar stand-in for vdpbf16ps (lane j +=
/// a_odd b_odd, then a_even b_even, from the pairs), run through the same driver: what the real path does except
/// the instruction itself and the AVX-512 interleaving of row-major B panels (bf16_pack_b_pairs_avx512).
struct pairs_emulated : ts::detail::bf16_pairs_layout<false> {
  static void tile(index_t kc, const std::uint32_t* a, const std::uint32_t* b, float* c, index_t ldc, bool acc) {
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j) {
        float s = 0.0f;
        for (index_t p = 0; p < steps(kc); ++p) {
          const std::uint32_t x = a[p * mr + i], y = b[p * nr + j];
          s += half(x, 1) * half(y, 1);
          s += half(x, 0) * half(y, 0);
        }
        c[i * ldc + j] = acc ? c[i * ldc + j] + s : s;
      }
  }
};
/// The amx_bf16 path's layout with a scalar stand-in for its four tdpbf16ps tiles: A row i's pair t at
/// a[((t / 16) * 32 + i) * 16 + t % 16], B's at b[t * 32 + j], over the block's pairs rounded up to 16.
struct amx_emulated : ts::detail::bf16_amx_layout<false> {
  static void tile(index_t kc, const std::uint32_t* a, const std::uint32_t* b, float* c, index_t ldc, bool acc) {
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j) {
        float s = acc ? c[i * ldc + j] : 0.0f;  // the tiles start from C (tileloadd) or from zero
        for (index_t t = 0; t < steps(kc); ++t) {
          const std::uint32_t x = a[((t / 16) * mr + i) * 16 + t % 16], y = b[t * nr + j];
          s += half(x, 1) * half(y, 1);
          s += half(x, 0) * half(y, 0);
        }
        c[i * ldc + j] = s;
      }
  }
  static inline std::atomic<int> begun{0}, ended{0};
  static void begin() { begun.fetch_add(1); }
  static void end() { ended.fetch_add(1); }
};

template <class Path>
void check_layout(const char* name, std::mt19937& rng) {
  struct shape {
    index_t M, N, K;
    bool bt;
  };
  for (const shape s : {shape{1, 1, 1, false}, {7, 33, 7, true}, {33, 65, 65, false}, {15, 31, 127, true}, {29, 40, 1025, false},
                        {40, 29, 1025, true}, {400, 33, 700, false}, {70, 20, 2100, true}})
    for (int threads : {1, 2}) {
      const bmat a(s.M, s.K, s.K + 1, 1, rng);
      const bmat b = s.bt ? bmat(s.K, s.N, 1, s.K, rng) : bmat(s.K, s.N, s.N, 1, rng);
      std::vector<double> want, mag;
      reference(a, b, want, mag);
      std::vector<float> c(std::size_t(s.M * s.N), -1.0f);
      ts::detail::bf16_gemm_packed<Path>(s.M, s.N, s.K, a.ref(), b.ref(), c.data(), s.N, false, threads, ts::detail::no_epilogue{});
      INFO(name << ": M " << s.M << " N " << s.N << " K " << s.K << (s.bt ? " B = W^T" : "") << ", threads " << threads);
      CHECK(mismatches(c.data(), s.N, s.M, s.N, want, mag) == 0);
      std::vector<float> c2(std::size_t(s.M * s.N), 0.5f);
      ts::detail::bf16_gemm_packed<Path>(s.M, s.N, s.K, a.ref(), b.ref(), c2.data(), s.N, true, threads, ts::detail::no_epilogue{});
      CHECK(mismatches(c2.data(), s.N, s.M, s.N, want, mag, 0.5) == 0);
    }
}
}  // namespace

TEST_CASE("bf16 GEMM: the amx_bf16 path's layout, blocking and tile hooks with a scalar tdpbf16ps", "[gemm_bf16]") {
  std::mt19937 rng(26);
  check_layout<amx_emulated>("AMX layout", rng);
  CHECK(amx_emulated::begun.load() > 0);
  CHECK(amx_emulated::begun.load() == amx_emulated::ended.load());  // every thread that configured the tiles released them
  // the packed A words: row i's pair t at ((t / 16) * 32 + i) * 16 + t % 16, zero past K, past the rows and up to 16 pairs
  const bmat a(3, 37, 37, 1, rng);
  std::vector<std::uint32_t> pa(2 * 32 * 16, 0xdeadbeefu);
  ts::detail::bf16_pack_a_amx<32>(a.ref(), 0, 0, 3, 37, 32, pa.data());
  for (index_t t = 0; t < 32; ++t)
    for (index_t i = 0; i < 32; ++i) {
      std::uint32_t w = 0;
      if (i < 3 && 2 * t < 37) w = std::uint32_t(a.v[std::size_t(i * 37 + 2 * t)].bits);
      if (i < 3 && 2 * t + 1 < 37) w |= std::uint32_t(a.v[std::size_t(i * 37 + 2 * t + 1)].bits) << 16;
      CHECK(pa[std::size_t(((t / 16) * 32 + i) * 16 + t % 16)] == w);
    }
  CHECK(ts::detail::bf16_kc(1100, 1024, 32) == 576);  // two blocks of whole 16-pair chunks, the last one short
  CHECK(ts::detail::bf16_kc(1025, 512, 2) == 342);
}

TEST_CASE("bf16 GEMM: the pairs layout (avx512_bf16's packing and blocking) with a scalar vdpbf16ps", "[gemm_bf16]") {
  std::mt19937 rng(24);
  check_layout<pairs_emulated>("pairs layout", rng);
  // the packed words themselves: pair t of row / column x is (x[2t], x[2t+1]), 0 past K, zero rows and columns
  const bmat a(3, 5, 5, 1, rng), b(5, 3, 3, 1, rng);
  std::vector<std::uint32_t> pa(3 * 14), pb(3 * 32);
  ts::detail::bf16_pack_a_pairs<14>(a.ref(), 0, 0, 3, 5, pa.data());
  ts::detail::bf16_pack_b_pairs<32>(b.ref(), 0, 0, 5, 3, pb.data(), false);
  for (index_t t = 0; t < 3; ++t)
    for (index_t x = 0; x < 14; ++x) {
      const std::uint32_t wa = x < 3 ? std::uint32_t(a.v[std::size_t(x * 5 + 2 * t)].bits) |
                                           (2 * t + 1 < 5 ? std::uint32_t(a.v[std::size_t(x * 5 + 2 * t + 1)].bits) << 16 : 0u)
                                     : 0u;
      const std::uint32_t wb = x < 3 ? std::uint32_t(b.v[std::size_t(2 * t * 3 + x)].bits) |
                                           (2 * t + 1 < 5 ? std::uint32_t(b.v[std::size_t((2 * t + 1) * 3 + x)].bits) << 16 : 0u)
                                     : 0u;
      CHECK(pa[std::size_t(t * 14 + x)] == wa);
      CHECK(pb[std::size_t(t * 32 + x)] == wb);
    }
}

TEST_CASE("bf16 GEMM: the path choice, its names and its cap", "[gemm_bf16]") {
  CHECK(ts::bf16_isa_name(ts::bf16_isa::portable) == "portable");
  CHECK(ts::bf16_isa_name(ts::bf16_isa::avx2) == "avx2");
  CHECK(ts::bf16_isa_name(ts::bf16_isa::avx512_bf16) == "avx512_bf16");
  CHECK(ts::bf16_isa_name(ts::bf16_isa::amx_bf16) == "amx_bf16");
  CHECK(int(ts::bf16_isa_supported()) >= int(ts::bf16_isa::avx2));  // the widening path runs wherever the program does
  const char* env = std::getenv("TESSERA_BF16_ISA");
  std::printf("test_gemm_bf16: CPU offers %s, TESSERA_BF16_ISA=%s, path taken %s\n",
              std::string(ts::bf16_isa_name(ts::bf16_isa_supported())).c_str(), env ? env : "(unset)",
              std::string(ts::bf16_isa_name(ts::bf16_isa_active())).c_str());
  if (env)
    for (int i = 0; i <= 3; ++i)
      if (ts::bf16_isa_name(ts::bf16_isa(i)) == env) CHECK(int(ts::bf16_isa_active()) <= i);
  {
    isa_scope scope(ts::bf16_isa::portable);
    CHECK(ts::bf16_isa_active() == ts::bf16_isa::portable);
    CHECK(ts::detail::bf16_isa_for(64, 64, 64) == ts::bf16_isa::portable);
  }
  CHECK(ts::detail::bf16_isa_for(4, 64, 64) != ts::bf16_isa::amx_bf16);  // AMX wants 8 rows and 32 k at least
  CHECK(ts::detail::bf16_isa_for(64, 64, 16) != ts::bf16_isa::amx_bf16);
}

TEST_CASE("bf16 GEMM through backend<cpu> and backend<cpu_threads>", "[gemm_bf16]") {
  std::mt19937 rng(25);
  const bmat a(33, 65, 65, 1, rng), b(65, 40, 1, 65, rng);
  std::vector<double> want, mag;
  reference(a, b, want, mag);
  std::vector<float> c(33 * 40), c2(33 * 40);
  ts::backend<ts::cpu>::gemm_bf16(33, 40, 65, a.ref(), b.ref(), c.data(), 40, false);
  CHECK(mismatches(c.data(), 40, 33, 40, want, mag) == 0);
  std::vector<std::atomic<int>> visits(33 * 40);
  const std::vector<float> bias(40, 0.0f);
  ts::backend<ts::cpu_threads>::gemm_bf16(33, 40, 65, a.ref(), b.ref(), c2.data(), 40, false,
                                          bias_relu{c2.data(), 40, bias.data(), visits.data(), 40});
  int bad = 0;
  for (std::size_t i = 0; i < c2.size(); ++i) bad += !(std::abs(double(c2[i]) - std::max(0.0, want[i])) <= 1e-5 * (mag[i] + 1.0));
  CHECK(bad == 0);
}

TEST_CASE("bfloat16 from float: round to nearest even, NaN kept, hand values", "[gemm_bf16][types]") {
  auto bits = [](float f) { return bfloat16(f).bits; };
  auto from = [](std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  CHECK(bits(1.0f) == 0x3f80);
  CHECK(bits(-2.0f) == 0xc000);
  CHECK(bits(from(0x3f808000u)) == 0x3f80);  // a tie, the lower neighbour even: stays
  CHECK(bits(from(0x3f818000u)) == 0x3f82);  // a tie, the lower neighbour odd: rounds up to even
  CHECK(bits(from(0x3f808001u)) == 0x3f81);  // just above the tie: up
  CHECK(bits(from(0x3f807fffu)) == 0x3f80);  // just below: down
  CHECK(bits(from(0xbf818000u)) == 0xbf82);  // negative ties alike
  CHECK(bits(from(0x7f7fffffu)) == 0x7f80);  // float's largest rounds to infinity
  CHECK(bits(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(bits(-0.0f) == 0x8000);
  CHECK(bits(from(0x00018000u)) == 0x0002);  // a denormal tie rounds to even too
  const std::uint16_t nan = bits(from(0x7f800001u));  // a NaN whose payload is only in the low bits stays a NaN
  CHECK((nan & 0x7f80) == 0x7f80);
  CHECK((nan & 0x007f) != 0);
  CHECK(bits(from(0xffc00000u)) == 0xffc0);
  CHECK(ts::detail::bf16_widen(bfloat16(3.140625f)) == 3.140625f);
}
