// Policy types: where a tensor's memory lives and how an assignment runs.
//   cpu          one thread, SIMD loops
//   cpu_threads  the same loops split over OpenMP threads
//   cuda         device memory, one CUDA kernel per fused expression (needs nvcc: backend<cuda> in kernels/cuda/backend.hpp)
#pragma once
#include <cstdlib>
#include <map>
#include <mutex>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "tessera/core/cpu_load.hpp"
#include "tessera/core/stats.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tessera {

struct cpu {
  static constexpr const char* name = "cpu";
  static constexpr bool on_device = false;
  static int num_threads() { return 1; }
};

struct cpu_threads {
  static constexpr const char* name = "cpu_threads";
  static constexpr bool on_device = false;
  /// Threads used by assignments under this policy: set_num_threads(n) if called, else OpenMP's default. 1 inside
  /// a parallel region where a nested one gets a single thread anyway (nesting is off by default), so that the
  /// kernels plan for the team they will get. (A kernel still works with any team smaller than it asked for.)
  /// While other processes keep some of this process's CPUs busy, fewer: the adaptive team (core/cpu_load.hpp).
  static int num_threads() {
#if defined(_OPENMP)
    if (omp_get_active_level() >= omp_get_max_active_levels()) return 1;
    return detail::adaptive_team::instance().cap(requested() > 0 ? requested() : omp_get_max_threads());
#else
    return 1;
#endif
  }
  static void set_num_threads(int n) { requested() = n; }
  /// The adaptive team on (the default; TESSERA_ADAPTIVE_THREADS=0 in the environment starts it off) or off (always
  /// the requested team).
  static void set_adaptive(bool on) { detail::adaptive_team::instance().set_enabled(on); }
  static bool adaptive() { return detail::adaptive_team::instance().enabled(); }
  /// The cores the adaptive team currently counts as free for this process (all allowed CPUs on a quiet machine).
  static int adaptive_cap() { return detail::adaptive_team::instance().cores(); }

 private:
  static int& requested() {
    static int n = 0;
    return n;
  }
};

struct cuda {
  static constexpr const char* name = "cuda";
  static constexpr bool on_device = true;
};

template <class P>
concept Policy = std::is_same_v<P, cpu> || std::is_same_v<P, cpu_threads> || std::is_same_v<P, cuda>;

template <class P>
inline constexpr bool is_host_policy_v = std::is_same_v<P, cpu> || std::is_same_v<P, cpu_threads>;

namespace detail {
/// Freed host blocks of 256 KiB and more kept for reuse, by exact size (training allocates the same activation
/// and gradient sizes every step; returning them to the system and faulting them in again costs more than the
/// work on small models). At most 1 GiB of blocks is kept, headers and rounding not counted (a 1 GiB tensor fits).
/// Every block carries its size in a 64-byte header. Blocks of huge_bytes and more start on a 2 MiB boundary and span
/// whole 2 MiB pages (where the system gives transparent huge pages to all memory, they can be huge pages); with
/// TESSERA_HUGE_PAGES=1 in the environment they are also marked for huge pages (Linux madvise): the first write to a
/// fresh 1 GiB tensor then takes 512 page faults instead of 262144, but on a system whose free memory is fragmented
/// that first write waits for the kernel to compact memory, which measured slower than the small pages' faults
/// (docs/performance-notes.md, "The large-array bandwidth anomaly"), so it is not the default.
class host_block_cache {
 public:
  static constexpr std::size_t header = 64;
  static constexpr std::size_t min_bytes = std::size_t(1) << 18;
  static constexpr std::size_t max_cached = std::size_t(1) << 30;
  static constexpr std::size_t huge_page = std::size_t(2) << 20;
  static constexpr std::size_t huge_bytes = std::size_t(32) << 20;
  static host_block_cache& instance() {
    static host_block_cache* c = new host_block_cache;  // never destroyed: tensors may outlive static destruction
    return *c;
  }
  void* allocate(std::size_t bytes) {
    // aligned_alloc wants a size that is a multiple of the alignment (a strict allocator returns null otherwise):
    // round up, and refuse sizes whose rounding would wrap
    if (bytes > ~std::size_t(0) - 2 * header - huge_page) throw std::bad_alloc();
    std::size_t total = (bytes + 2 * header - 1) / header * header;
    const std::size_t align = total >= huge_bytes ? huge_page : header;
    total = (total + align - 1) / align * align;
    if (total >= min_bytes) {
      std::lock_guard<std::mutex> lock(m_);
      auto it = blocks_.find(total);
      if (it != blocks_.end()) {
        void* p = it->second;
        blocks_.erase(it);
        cached_ -= counted(total);
        return static_cast<char*>(p) + header;
      }
    }
    void* p = std::aligned_alloc(align, total);
    if (!p) {
      release_all();  // cached blocks may be what is missing
      p = std::aligned_alloc(align, total);
      if (!p) throw std::bad_alloc();
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == huge_page && advise_huge_) ::madvise(p, total, MADV_HUGEPAGE);  // advice only: none is no error
#endif
    *static_cast<std::size_t*>(p) = total;
    return static_cast<char*>(p) + header;
  }
  void deallocate(void* q) {
    if (!q) return;
    void* p = static_cast<char*>(q) - header;
    const std::size_t total = *static_cast<std::size_t*>(p);
    if (total >= min_bytes) {
      std::lock_guard<std::mutex> lock(m_);
      if (cached_ + counted(total) <= max_cached) {
        blocks_.emplace(total, p);
        cached_ += counted(total);
        return;
      }
    }
    std::free(p);
  }
  /// Return every cached block to the system.
  void release_all() {
    std::lock_guard<std::mutex> lock(m_);
    for (auto& b : blocks_) std::free(b.second);
    blocks_.clear();
    cached_ = 0;
  }
  std::size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(m_);
    return cached_;
  }

 private:
  host_block_cache() {
    const char* e = std::getenv("TESSERA_HUGE_PAGES");
    advise_huge_ = e && e[0] == '1';
  }
  /// The bytes a block of `total` counts against max_cached: its size less its header and rounding.
  static std::size_t counted(std::size_t total) { return total - (total >= huge_bytes ? huge_page : header); }
  std::mutex m_;
  std::multimap<std::size_t, void*> blocks_;
  std::size_t cached_ = 0;
  bool advise_huge_ = false;
};
}  // namespace detail

/// Memory of a policy: allocate, free, copy. The cuda specialisation is in kernels/cuda/memory.hpp.
template <class P>
struct memory {
  static constexpr std::size_t alignment = 64;
  static_assert(!P::on_device, "tessera: cuda tensors need this file compiled by nvcc (a .cu file) so that kernels/cuda/memory.hpp is included (tessera/tessera.hpp does it there)");
  template <class T>
  static T* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    if (n > (~std::size_t(0) - alignment) / sizeof(T))
      throw std::length_error("tessera: allocation of " + std::to_string(n) + " elements of " +
                              std::to_string(sizeof(T)) + " bytes: more than the address space holds");
    stats::count_allocation();
    const std::size_t bytes = (n * sizeof(T) + alignment - 1) / alignment * alignment;
    return static_cast<T*>(detail::host_block_cache::instance().allocate(bytes));
  }
  template <class T>
  static void deallocate(T* p) { detail::host_block_cache::instance().deallocate(const_cast<std::remove_const_t<T>*>(p)); }
};

namespace detail {
template <class A, class B>
struct common_policy {
  static_assert(std::is_void_v<A> || std::is_void_v<B> || std::is_same_v<A, B>,
                "tessera: an expression mixes two policies (for example cpu and cuda); move one operand first with "
                "tessera::to<Policy>(tensor)");
  using type = std::conditional_t<std::is_void_v<A>, B, A>;
};
}  // namespace detail
/// The policy shared by two operands (void stands for a scalar, which has none); a compile error if they differ.
template <class A, class B>
using common_policy_t = typename detail::common_policy<A, B>::type;

}  // namespace tessera
