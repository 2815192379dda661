// int8 GEMM, part 1: which path the CPU offers and the packed operands every path reads (kernels/cpu/gemm_s8.hpp
// holds the register-tile kernels and the driver, and describes the layouts).
//   int8_isa, int8_isa_name/supported/active, set_int8_isa_limit   the run-time choice (TESSERA_INT8_ISA caps it)
//   int8_a_below_128                                                a scope: the thread's uint8 A operands are <= 127
//   packed_b_s8                                                     B (the weights) packed once, with column sums
//   detail::s8_pack_a_group, s8_pack_b_panel, s8_panel_sums         the packing of A groups and B panels
// Guarantees: packing is exact (int8 A is stored as a + 128 and corrected later); padding is zero, so padded k and
// rows contribute nothing to any path.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/core/types.hpp"
#include "tessera/kernels/cpu/gemm.hpp"
#include "tessera/kernels/loop.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && !defined(TESSERA_NO_SIMD)
#define TESSERA_INT8_X86 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#else
#define TESSERA_INT8_X86 0
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tessera {

/// The int8 GEMM's instruction paths, in increasing order of speed. avx2_u7 is avx2 plus vpmaddubsw for uint8 A whose
/// values are all <= 127 (7-bit activations, PyTorch's reduce_range): any AVX2 CPU offers it; other A still runs avx2.
enum class int8_isa : int { portable = 0, avx2 = 1, avx2_u7 = 2, avx512_vnni = 3, amx = 4 };

inline constexpr std::string_view int8_isa_name(int8_isa i) {
  switch (i) {
    case int8_isa::portable: return "portable";
    case int8_isa::avx2: return "avx2";
    case int8_isa::avx2_u7: return "avx2_u7";
    case int8_isa::avx512_vnni: return "avx512_vnni";
    case int8_isa::amx: return "amx";
  }
  return "?";
}

namespace detail::s8 {

#if TESSERA_INT8_X86
inline bool os_grants_amx() {
#if defined(__linux__)
  constexpr long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;  // Linux 5.16+: ask once per process
  return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
#else
  return false;
#endif
}

inline int8_isa detect() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return int8_isa::portable;
  const bool osxsave = (c >> 27) & 1;
  if (!osxsave) return int8_isa::portable;
  unsigned lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  const bool os_avx = (lo & 0x6) == 0x6, os_avx512 = (lo & 0xe6) == 0xe6, os_amx = ((lo >> 17) & 3) == 3;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return int8_isa::portable;
  const bool avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, vnni = (c >> 11) & 1;
  const bool amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1;
  if (amx_tile && amx_int8 && os_amx && os_avx512 && avx512bw && vnni && os_grants_amx()) return int8_isa::amx;
  if (avx512f && avx512bw && vnni && os_avx512) return int8_isa::avx512_vnni;
  if (avx2 && os_avx) return int8_isa::avx2_u7;
  return int8_isa::portable;
}
#else
inline int8_isa detect() { return int8_isa::portable; }
#endif

inline int8_isa limit_from_env() {
  const char* e = std::getenv("TESSERA_INT8_ISA");
  if (!e) return int8_isa::amx;
  for (int i = 0; i <= int(int8_isa::amx); ++i)
    if (int8_isa_name(int8_isa(i)) == e) return int8_isa(i);
  return int8_isa::amx;
}

inline std::atomic<int>& limit() {
  static std::atomic<int> l{int(limit_from_env())};
  return l;
}

}  // namespace detail::s8

/// The best int8 path this CPU and OS offer.
inline int8_isa int8_isa_supported() {
  static const int8_isa best = detail::s8::detect();
  return best;
}
/// The path the int8 kernels take: the supported one, capped by set_int8_isa_limit / TESSERA_INT8_ISA.
inline int8_isa int8_isa_active() { return int8_isa(std::min(int(int8_isa_supported()), detail::s8::limit().load())); }
/// Caps the int8 path (tests and benchmarks run each path the machine has with it).
inline void set_int8_isa_limit(int8_isa i) { detail::s8::limit().store(int(i)); }

namespace detail::s8 {
inline int& a_below_128_depth() {
  thread_local int d = 0;
  return d;
}
}  // namespace detail::s8

/// A scope in which the calling thread states that the uint8 A operands of its int8 GEMMs hold values <= 127 only
/// (activations quantized to 7 bits: quant_max 127, PyTorch's reduce_range): on the avx2_u7 path they then take
/// vpmaddubsw without the check of A it otherwise makes. Nests; int8 (signed) A ignores it. A value above 127 in
/// such an A is the caller's error: vpmaddubsw then saturates (results would be wrong, not undefined).
struct int8_a_below_128 {
  bool on;
  explicit int8_a_below_128(bool on_ = true) : on(on_) {
    if (on) ++detail::s8::a_below_128_depth();
  }
  ~int8_a_below_128() {
    if (on) --detail::s8::a_below_128_depth();
  }
  int8_a_below_128(const int8_a_below_128&) = delete;
  int8_a_below_128& operator=(const int8_a_below_128&) = delete;
  /// Is the calling thread inside such a scope?
  static bool active() { return detail::s8::a_below_128_depth() > 0; }
};

namespace detail {

inline constexpr index_t s8_kq = 64;  ///< K padding: one AMX tile row of A holds 64 k
inline constexpr int s8_np = 16;      ///< columns per B panel
inline constexpr int s8_mg = 16;      ///< rows per A group

inline index_t s8_kpad(index_t K) { return (K + s8_kq - 1) / s8_kq * s8_kq; }

/// 64-byte aligned byte buffer.
struct s8_buffer {
  std::unique_ptr<std::uint8_t[], decltype(&std::free)> p{nullptr, &std::free};
  std::size_t size = 0;
  std::uint8_t* grow(std::size_t n) {
    if (n > size) {
      p.reset(static_cast<std::uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64)));
      if (!p) throw std::bad_alloc();
      size = n;
    }
    return p.get();
  }
};

/// Packs quads [q0, q1) (rows 4 q0 .. 4 q1 of B, rows past K zero) of panel p (columns 16 p .. 16 p + 16, columns
/// past N zero) of a K x N int8 matrix into the panel's layout at out.
inline void s8_pack_b_panel(mat_ref<std::int8_t> b, index_t K, index_t N, index_t p, index_t q0, index_t q1, std::int8_t* out) {
  const index_t j0 = p * s8_np, cols = std::min<index_t>(s8_np, N - j0);
  index_t q = q0;
#if TESSERA_INT8_X86
  if (cols == s8_np && b.cs == 1)  // 4 x 16 byte transposes: rows k..k+3 into column quads
    for (; q < q1 && 4 * q + 3 < K; ++q) {
      const std::int8_t* r = b.p + 4 * q * b.rs + j0;
      const __m128i r0 = _mm_loadu_si128((const __m128i*)r), r1 = _mm_loadu_si128((const __m128i*)(r + b.rs)),
                    r2 = _mm_loadu_si128((const __m128i*)(r + 2 * b.rs)), r3 = _mm_loadu_si128((const __m128i*)(r + 3 * b.rs));
      const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
      const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
      __m128i* o = (__m128i*)(out + q * 64);
      _mm_storeu_si128(o, _mm_unpacklo_epi16(t0, t2));
      _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(t0, t2));
      _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(t1, t3));
      _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(t1, t3));
    }
#endif
  for (; q < q1; ++q)
    for (index_t r = 0; r < 4; ++r)
      for (index_t j = 0; j < s8_np; ++j) {
        const index_t k = 4 * q + r;
        out[q * 64 + j * 4 + r] = (k < K && j < cols) ? b(k, j0 + j) : std::int8_t(0);
      }
}

/// Column sums of a packed panel (16 columns), from its quads.
#if TESSERA_INT8_X86
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline void s8_panel_sums_vnni(const std::int8_t* panel, index_t Kp,
                                                                                     std::int32_t* sums) {
  __m512i acc = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi8(1);
  for (index_t q = 0; q < Kp / 4; ++q) acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(panel + q * 64));
  _mm512_storeu_si512(sums, acc);
}
/// The same with AVX2: vpmaddubsw of ones by a quad row (int16 pair sums, |b0 + b1| <= 256), vpmaddwd with ones.
__attribute__((target("avx2"))) inline void s8_panel_sums_avx2(const std::int8_t* panel, index_t Kp, std::int32_t* sums) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (index_t q = 0; q < Kp / 4; ++q) {
    const __m256i b0 = _mm256_loadu_si256((const __m256i*)(panel + q * 64)), b1 = _mm256_loadu_si256((const __m256i*)(panel + q * 64 + 32));
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, b0), ones16));
    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, b1), ones16));
  }
  _mm256_storeu_si256((__m256i*)sums, acc0);
  _mm256_storeu_si256((__m256i*)(sums + 8), acc1);
}
#endif
inline void s8_panel_sums(const std::int8_t* panel, index_t Kp, std::int32_t* sums) {
#if TESSERA_INT8_X86
  if (int8_isa_supported() >= int8_isa::avx512_vnni) return s8_panel_sums_vnni(panel, Kp, sums);
  if (int8_isa_supported() >= int8_isa::avx2) return s8_panel_sums_avx2(panel, Kp, sums);
#endif
  for (int j = 0; j < s8_np; ++j) sums[j] = 0;
  for (index_t q = 0; q < Kp / 4; ++q)
    for (int j = 0; j < s8_np; ++j)
      for (int r = 0; r < 4; ++r) sums[j] += panel[q * 64 + j * 4 + r];
}

}  // namespace detail

/// B (K x N int8: weights) packed for the int8 GEMM once, with its column sums (for zero points and int8 A).
struct packed_b_s8 {
  index_t K = 0, N = 0, Kp = 0, panels = 0;
  detail::s8_buffer buf;
  std::vector<std::int32_t> col_sums;

  packed_b_s8() = default;
  packed_b_s8(detail::mat_ref<std::int8_t> b, index_t K_, index_t N_, int nthreads = 1) { pack(b, K_, N_, nthreads); }
  const std::int8_t* panel(index_t p) const { return reinterpret_cast<const std::int8_t*>(buf.p.get()) + p * Kp * detail::s8_np; }

  void pack(detail::mat_ref<std::int8_t> b, index_t K_, index_t N_, int nthreads = 1) {
    K = K_, N = N_, Kp = detail::s8_kpad(K), panels = (N + detail::s8_np - 1) / detail::s8_np;
    auto* out = reinterpret_cast<std::int8_t*>(buf.grow(std::size_t(std::max<index_t>(1, panels * Kp * detail::s8_np))));
    const int nt = double(K) * double(N) < 1e6 ? 1 : std::max(1, nthreads);
    col_sums.assign(std::size_t(panels * detail::s8_np), 0);  // padded to whole panels
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static, 1) if (nt > 1)
#endif
    for (int t = 0; t < nt; ++t) {  // each thread its range of panels, swept 64 rows of B at a time (rows in cache)
      const index_t p0 = panels * t / nt, p1 = panels * (t + 1) / nt;
      for (index_t q = 0; q < Kp / 4; q += 16)
        for (index_t p = p0; p < p1; ++p) detail::s8_pack_b_panel(b, K, N, p, q, q + 16, out + p * Kp * detail::s8_np);
      for (index_t p = p0; p < p1; ++p)
        detail::s8_panel_sums(out + p * Kp * detail::s8_np, Kp, col_sums.data() + p * detail::s8_np);
    }
  }
};

namespace detail {

/// Walks group g's layout: for each of its 16 rows r and each 64-wide chunk kc of K, write(r, kc, n, out) fills the
/// n = the chunk's valid k (0 past M and past K) bytes at out; the chunk's padding after them is zeroed here.
template <class Write>
void s8_pack_group_rows(index_t M, index_t K, index_t Kp, index_t g, std::uint8_t* out, Write&& write) {
  for (index_t i = 0; i < s8_mg; ++i) {
    const index_t r = g * s8_mg + i;
    for (index_t kc = 0; kc < Kp; kc += s8_kq) {
      std::uint8_t* o = out + kc * s8_mg + i * s8_kq;
      const index_t n = r < M ? std::clamp<index_t>(K - kc, 0, s8_kq) : 0;
      if (n > 0) write(r, kc, n, o);
      // padding is 0 in the stored form too (its products with B's zero padding vanish either way)
      if (n < s8_kq) std::memset(o + n, 0, std::size_t(s8_kq - n));
    }
  }
}

/// Packs rows [16 g, 16 g + 16) of A (M x K, row stride lda) into group g's layout; rows past M are zero.
/// Signed A is stored as a + 128 (flipping the sign bit).
template <class TA>
void s8_pack_a_group(const TA* a, index_t lda, index_t M, index_t K, index_t Kp, index_t g, std::uint8_t* out) {
  s8_pack_group_rows(M, K, Kp, g, out, [&](index_t r, index_t kc, index_t n, std::uint8_t* o) {
    const auto* src = reinterpret_cast<const std::uint8_t*>(a + r * lda + kc);
    if constexpr (std::is_signed_v<TA>) {
      for (index_t k = 0; k < n; ++k) o[k] = std::uint8_t(src[k] ^ 0x80);
    } else {
      std::memcpy(o, src, std::size_t(n));
    }
  });
}

}  // namespace detail
}  // namespace tessera
