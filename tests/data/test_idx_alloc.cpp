// The IDX reader's memory bound: a header's claim does not decide how much it allocates. A tiny gzip file whose
// header claims 2^32 - 1 labels must fail with "truncated" without allocating anything like 4 GiB (or a large
// first guess at it). This file replaces the global operator new/delete to measure the peak of the bytes held
// through them while the reader runs (it is its own executable so that no other test pays for the counting).
#include <zlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <tessera/data/idx.hpp>
#include <unistd.h>
#include <vector>

#include "file_support.hpp"

namespace {
using tst::temp_dir;
using tst::write_file;
using tst::write_gzip;
// Each block carries its size in a 16-byte header (which keeps the alignment malloc gives).
constexpr std::size_t header = 16;
std::atomic<std::int64_t> live{0};  // bytes held now
std::atomic<std::int64_t> peak{0};  // most bytes held since reset_peak()

void* counted_new(std::size_t n) {
  void* p = std::malloc(n + header);
  if (!p) throw std::bad_alloc();
  *static_cast<std::size_t*>(p) = n;
  const std::int64_t now = live.fetch_add(std::int64_t(n)) + std::int64_t(n);
  std::int64_t old = peak.load();
  while (now > old && !peak.compare_exchange_weak(old, now)) {
  }
  return static_cast<char*>(p) + header;
}
void counted_delete(void* q) noexcept {
  if (!q) return;
  void* p = static_cast<char*>(q) - header;
  live.fetch_sub(std::int64_t(*static_cast<std::size_t*>(p)));
  std::free(p);
}
/// The peak counts from the bytes held now.
void reset_peak() { peak.store(live.load()); }
}  // namespace

void* operator new(std::size_t n) { return counted_new(n); }
void* operator new[](std::size_t n) { return counted_new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { counted_delete(p); }
void operator delete[](void* p) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_delete(p); }

namespace ts = tessera;
namespace fs = std::filesystem;
using Catch::Contains;
using bytes = std::vector<unsigned char>;

namespace {
bytes label_header(std::uint32_t n) {
  return {0, 0, 8, 1, static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
          static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
}
/// The peak bytes held through operator new while f runs, above what was held before.
template <class F>
std::int64_t peak_bytes_during(F&& f) {
  const std::int64_t before = live.load();
  reset_peak();
  f();
  return peak.load() - before;
}
}  // namespace

TEST_CASE("the counting operator new sees a vector's buffer", "[idx][alloc]") {
  const auto p = peak_bytes_during([] {
    std::vector<unsigned char> v(5u << 20);
    v[12345] = 1;
    REQUIRE(v[12345] == 1);
  });
  CHECK(p >= std::int64_t(5u << 20));
  CHECK(p < std::int64_t(6u << 20));
}

TEST_CASE("a tiny IDX file claiming 2^32-1 labels fails as truncated without allocating for the claim", "[idx][alloc]") {
  const fs::path dir = fs::temp_directory_path() / ("tessera_idx_alloc_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  constexpr std::int64_t bound = 4 << 20;  // a few MiB: the reader's chunk, not the 4 GiB the header claims

  bytes content = label_header(0xffffffffu);
  for (int k = 0; k < 6; ++k) content.push_back(static_cast<unsigned char>(k));
  write_gzip(dir / "claims.gz", content, "wb9");
  REQUIRE(fs::file_size(dir / "claims.gz") < 64);  // the 34-byte file of the report, give or take zlib's framing
  write_file(dir / "claims", content);

  for (const char* name : {"claims.gz", "claims"}) {
    INFO(name);
    const auto path = dir / name;
    const auto peak_labels = peak_bytes_during([&] {
      CHECK_THROWS_WITH(ts::load_idx_labels(path), Contains(path.string()) &&
                                                        Contains("truncated: expected 4294967295 bytes of data") &&
                                                        Contains("found 6"));
    });
    CHECK(peak_labels < bound);
    const auto peak_raw = peak_bytes_during([&] { CHECK_THROWS_AS(ts::read_idx<std::uint8_t>(path), ts::io_error); });
    CHECK(peak_raw < bound);
  }

  // a larger claim of float64 elements over a little real data: still bounded by the data, which reads back whole
  bytes f64 = {0, 0, 0x0E, 1, 0, 0, 0x40, 0};  // 16384 doubles = 128 KiB
  for (int k = 0; k < 16384 * 8; ++k) f64.push_back(static_cast<unsigned char>(k % 7 == 0 ? 0x3f : 0));
  write_gzip(dir / "f64.gz", f64, "wb9");
  const auto peak_ok = peak_bytes_during([&] { CHECK(ts::read_idx<double>(dir / "f64.gz").size() == 16384); });
  CHECK(peak_ok < bound);

  std::error_code ec;
  fs::remove_all(dir, ec);
}
