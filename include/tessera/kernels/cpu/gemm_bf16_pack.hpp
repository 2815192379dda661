// bf16 GEMM, part 1: which path the CPU offers and the packing of A and B for each path (kernels/cpu/gemm_bf16.hpp
// holds the register-tile kernels and the driver, and says what each path computes).
//   bf16_isa, bf16_isa_name/supported/active, set_bf16_isa_limit   the run-time choice (TESSERA_BF16_ISA caps it)
//   detail::bf16_widen                                              a bfloat16 as the float it is (exact)
//   detail::bf16_pack_a_pairs, bf16_pack_b_pairs                    bf16 pairs along K (the avx512_bf16 path)
//   detail::bf16_pack_a_amx                                         A's pairs in AMX tile rows (the amx_bf16 path)
//   detail::bf16_pack_a_widen, bf16_pack_b_widen                    fp32 panels in gemm.hpp's layouts (the avx2 path)
// Guarantees: packing is exact (pairs are copies of the bits; widening a bf16 to fp32 is exact); padding (rows past
// M, columns past N, the second half of the last pair when K is odd) is zero, so it contributes nothing.
#pragma once
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "tessera/core/types.hpp"
#include "tessera/kernels/backend.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && !defined(TESSERA_NO_SIMD)
#define TESSERA_BF16_X86 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#else
#define TESSERA_BF16_X86 0
#endif

namespace tessera {

/// The bf16 GEMM's instruction paths, in increasing order of speed:
///   portable     plain loops in fp32
///   avx2         bf16 widened to fp32 while packing, then gemm.hpp's fp32 micro-kernel as this build compiles it
///                (6 x 16 AVX2 FMA under -march=x86-64-v3 / znver3; every build has this path)
///   avx512_bf16  vdpbf16ps on pairs of bf16 along K, a 14 x 32 fp32 register tile (Zen 4, Sapphire Rapids, ...)
///   amx_bf16     Intel AMX tiles (tdpbf16ps): a 32 x 32 block of C in four 16 x 16 tiles (Sapphire Rapids, ...)
enum class bf16_isa : int { portable = 0, avx2 = 1, avx512_bf16 = 2, amx_bf16 = 3 };

inline constexpr std::string_view bf16_isa_name(bf16_isa i) {
  switch (i) {
    case bf16_isa::portable: return "portable";
    case bf16_isa::avx2: return "avx2";
    case bf16_isa::avx512_bf16: return "avx512_bf16";
    case bf16_isa::amx_bf16: return "amx_bf16";
  }
  return "?";
}

namespace detail::bf16 {

/// The best path implemented here.
inline constexpr bf16_isa implemented = bf16_isa::amx_bf16;

#if TESSERA_BF16_X86
/// Linux 5.16+ hands out the AMX tile data state only on request (once per process); false: no AMX.
inline bool os_grants_amx() {
#if defined(__linux__)
  constexpr long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
  return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
#else
  return false;
#endif
}

/// What the CPU and the OS offer: AVX512-BF16 is CPUID.(EAX=7,ECX=1):EAX bit 5, with AVX-512 F/BW/VL/DQ and the OS
/// saving the ZMM state (XCR0 bits 1, 2, 5, 6, 7); AMX-BF16 is CPUID.(7,0):EDX bit 22 with AMX-TILE (bit 24), the OS
/// saving the tile state (XCR0 bits 17, 18) and granting it (arch_prctl), on top of AVX512-BF16 (its packing uses
/// AVX-512); the widening path needs nothing beyond what this build runs on.
inline bf16_isa detect() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return bf16_isa::avx2;
  if (!((c >> 27) & 1)) return bf16_isa::avx2;  // no OSXSAVE: no xgetbv, no AVX state
  unsigned lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  const bool os_avx512 = (lo & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return bf16_isa::avx2;
  const unsigned max_subleaf = a;
  const bool avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
  const bool amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1, os_amx = ((lo >> 17) & 3) == 3;
  bool avx512bf16 = false;
  if (max_subleaf >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) avx512bf16 = (a >> 5) & 1;
  if (!(avx512f && avx512dq && avx512bw && avx512vl && avx512bf16 && os_avx512)) return bf16_isa::avx2;
  if (amx_bf16 && amx_tile && os_amx && os_grants_amx()) return bf16_isa::amx_bf16;
  return bf16_isa::avx512_bf16;
}
#else
inline bf16_isa detect() { return bf16_isa::avx2; }
#endif

/// TESSERA_BF16_ISA (portable, avx2, avx512_bf16, amx_bf16): a cap on the path; unset or unknown: no cap.
inline bf16_isa limit_from_env() {
  const char* e = std::getenv("TESSERA_BF16_ISA");
  if (!e) return bf16_isa::amx_bf16;
  for (int i = 0; i <= 3; ++i)
    if (bf16_isa_name(bf16_isa(i)) == e) return bf16_isa(i);
  return bf16_isa::amx_bf16;
}

inline std::atomic<int>& limit() {
  static std::atomic<int> l{int(limit_from_env())};
  return l;
}

}  // namespace detail::bf16

/// The best bf16 path this CPU, this OS and this build offer.
inline bf16_isa bf16_isa_supported() {
  static const bf16_isa best = bf16_isa(std::min(int(detail::bf16::detect()), int(detail::bf16::implemented)));
  return best;
}
/// The path the bf16 GEMM takes: the supported one, capped by set_bf16_isa_limit / TESSERA_BF16_ISA.
inline bf16_isa bf16_isa_active() { return bf16_isa(std::min(int(bf16_isa_supported()), detail::bf16::limit().load())); }
/// Caps the bf16 path (tests and benchmarks run each path the machine has with it; amx_bf16: no cap).
inline void set_bf16_isa_limit(bf16_isa i) { detail::bf16::limit().store(int(i)); }

namespace detail {

/// The float a bfloat16 holds (its bits are float's upper half): exact.
TS_INLINE float bf16_widen(bfloat16 x) { return std::bit_cast<float>(std::uint32_t(x.bits) << 16); }

/// Two bfloat16 as one 32-bit word, lo (the even k) in the low half: the element of a vdpbf16ps operand.
TS_INLINE std::uint32_t bf16_pair(bfloat16 lo, bfloat16 hi) { return std::uint32_t(lo.bits) | std::uint32_t(hi.bits) << 16; }

// ---- pairs along K (the avx512_bf16 path). A block of kc k starting at an even k holds np = (kc + 1) / 2 pairs;
// pair t of row (column) x is (x[2t], x[2t + 1]), the second 0 past kc.

/// A[i0 .. i0+rows) x [p0 .. p0+kc) into an MR-row panel of pairs: pair t of row i at out[t * MR + i]; rows past
/// `rows` are zero.
template <int MR>
void bf16_pack_a_pairs(mat_ref<bfloat16> a, index_t i0, index_t p0, index_t rows, index_t kc, std::uint32_t* out) {
  const index_t np = (kc + 1) / 2, full = kc / 2;
  for (index_t i = 0; i < rows; ++i) {
    const bfloat16* r = a.p + (i0 + i) * a.rs + p0 * a.cs;
    if (a.cs == 1)  // a row in place: each pair is one unaligned 32-bit word
      for (index_t t = 0; t < full; ++t) std::memcpy(out + t * MR + i, r + 2 * t, 4);
    else
      for (index_t t = 0; t < full; ++t) out[t * MR + i] = bf16_pair(r[2 * t * a.cs], r[(2 * t + 1) * a.cs]);
    if (full < np) out[full * MR + i] = bf16_pair(r[2 * full * a.cs], bfloat16{});
  }
  for (index_t i = rows; i < MR; ++i)
    for (index_t t = 0; t < np; ++t) out[t * MR + i] = 0;
}

/// A[i0 .. i0+rows) x [p0 .. p0+kc) as AMX A tiles: pairs in chunks of 16 (an AMX tile row: 64 bytes), pair t of
/// row i at out[((t / 16) * MR + i) * 16 + t % 16]; np16 = pairs rounded up to 16. Rows past `rows` and pairs past
/// the block's are zero.
template <int MR>
void bf16_pack_a_amx(mat_ref<bfloat16> a, index_t i0, index_t p0, index_t rows, index_t kc, index_t np16, std::uint32_t* out) {
  const index_t np = (kc + 1) / 2, full = kc / 2;
  auto at = [&](index_t i, index_t t) -> std::uint32_t& { return out[((t / 16) * MR + i) * 16 + t % 16]; };
  for (index_t i = 0; i < rows; ++i) {
    const bfloat16* r = a.p + (i0 + i) * a.rs + p0 * a.cs;
    if (a.cs == 1)
      for (index_t t = 0; t < full; ++t) std::memcpy(&at(i, t), r + 2 * t, 4);
    else
      for (index_t t = 0; t < full; ++t) at(i, t) = bf16_pair(r[2 * t * a.cs], r[(2 * t + 1) * a.cs]);
    if (full < np) at(i, full) = bf16_pair(r[2 * full * a.cs], bfloat16{});
    for (index_t t = np; t < np16; ++t) at(i, t) = 0;
  }
  for (index_t i = rows; i < MR; ++i)
    for (index_t t = 0; t < np16; ++t) at(i, t) = 0;
}

#if TESSERA_BF16_X86
/// 32 contiguous columns of B (row r at b + r * rs), kc rows, into pairs: two rows interleaved by vpermt2w.
__attribute__((target("avx512f,avx512bw"))) inline void bf16_pack_b_pairs_avx512(const bfloat16* b, index_t rs, index_t kc,
                                                                               std::uint32_t* out) {
  alignas(64) std::uint16_t idx[2][32];
  for (int j = 0; j < 16; ++j) {  // words 2j, 2j+1 of the output: column j of row 0 (index j), of row 1 (32 + j)
    idx[0][2 * j] = std::uint16_t(j), idx[0][2 * j + 1] = std::uint16_t(32 + j);
    idx[1][2 * j] = std::uint16_t(16 + j), idx[1][2 * j + 1] = std::uint16_t(48 + j);
  }
  const __m512i lo = _mm512_load_si512(idx[0]), hi = _mm512_load_si512(idx[1]);
  for (index_t t = 0; 2 * t < kc; ++t) {
    const __m512i r0 = _mm512_loadu_si512(b + 2 * t * rs);
    const __m512i r1 = 2 * t + 1 < kc ? _mm512_loadu_si512(b + (2 * t + 1) * rs) : _mm512_setzero_si512();
    _mm512_storeu_si512(out + t * 32, _mm512_permutex2var_epi16(r0, lo, r1));
    _mm512_storeu_si512(out + t * 32 + 16, _mm512_permutex2var_epi16(r0, hi, r1));
  }
}
#endif

/// B[p0 .. p0+kc) x [j0 .. j0+cols) into an NR-column panel of pairs: pair t of column j at out[t * NR + j]; columns
/// past `cols` are zero. avx512: the CPU has AVX-512 BW (the avx512_bf16 path), for whole panels of row-major B.
template <int NR>
void bf16_pack_b_pairs(mat_ref<bfloat16> b, index_t p0, index_t j0, index_t kc, index_t cols, std::uint32_t* out, bool avx512) {
  const index_t np = (kc + 1) / 2, full = kc / 2;
  const bfloat16* base = b.p + p0 * b.rs + j0 * b.cs;
#if TESSERA_BF16_X86
  if constexpr (NR == 32)
    if (avx512 && b.cs == 1 && cols == NR) return bf16_pack_b_pairs_avx512(base, b.rs, kc, out);
#endif
  (void)avx512;
  if (b.rs == 1) {  // B's columns contiguous along K (a Linear's weight read as W^T): a column's pairs are words
    for (index_t j = 0; j < cols; ++j) {
      const bfloat16* col = base + j * b.cs;
      for (index_t t = 0; t < full; ++t) std::memcpy(out + t * NR + j, col + 2 * t, 4);
      if (full < np) out[full * NR + j] = bf16_pair(col[2 * full], bfloat16{});
    }
  } else {
    for (index_t t = 0; t < np; ++t) {
      const bfloat16* r0 = base + 2 * t * b.rs;
      const bool second = 2 * t + 1 < kc;
      for (index_t j = 0; j < cols; ++j) out[t * NR + j] = bf16_pair(r0[j * b.cs], second ? r0[b.rs + j * b.cs] : bfloat16{});
    }
  }
  for (index_t t = 0; t < np; ++t)
    for (index_t j = cols; j < NR; ++j) out[t * NR + j] = 0;
}

// ---- widened to fp32 (the avx2 path), in the layouts of gemm.hpp's pack_a / pack_b_panel

/// A[i0 .. i0+rows) x [p0 .. p0+kc) as floats into an MR-tall panel, k-major (element (i, k) at out[k * MR + i]);
/// rows past `rows` are zero.
template <int MR>
void bf16_pack_a_widen(mat_ref<bfloat16> a, index_t i0, index_t p0, index_t rows, index_t kc, float* out) {
  for (index_t i = 0; i < rows; ++i) {  // along A's rows (contiguous when A is row-major), writes MR apart in L1
    const bfloat16* r = a.p + (i0 + i) * a.rs + p0 * a.cs;
    if (a.cs == 1)
      for (index_t k = 0; k < kc; ++k) out[k * MR + i] = bf16_widen(r[k]);
    else
      for (index_t k = 0; k < kc; ++k) out[k * MR + i] = bf16_widen(r[k * a.cs]);
  }
  for (index_t k = 0; k < kc; ++k)
    for (index_t i = rows; i < MR; ++i) out[k * MR + i] = 0.0f;
}

/// B[p0 .. p0+kc) x [j0 .. j0+cols) as floats into an NR-wide panel, k-major (element (k, j) at out[k * NR + j]);
/// columns past `cols` are zero.
template <int NR>
void bf16_pack_b_widen(mat_ref<bfloat16> b, index_t p0, index_t j0, index_t kc, index_t cols, float* out) {
  const bfloat16* base = b.p + p0 * b.rs + j0 * b.cs;
  if (b.cs == 1) {
    for (index_t k = 0; k < kc; ++k) {
      const bfloat16* r = base + k * b.rs;
      for (index_t j = 0; j < cols; ++j) out[k * NR + j] = bf16_widen(r[j]);
    }
  } else {  // along B's columns (contiguous in a Linear's weight read as W^T)
    for (index_t j = 0; j < cols; ++j) {
      const bfloat16* col = base + j * b.cs;
      for (index_t k = 0; k < kc; ++k) out[k * NR + j] = bf16_widen(col[k * b.rs]);
    }
  }
  if (cols < NR)
    for (index_t k = 0; k < kc; ++k)
      for (index_t j = cols; j < NR; ++j) out[k * NR + j] = 0.0f;
}

}  // namespace detail
}  // namespace tessera
