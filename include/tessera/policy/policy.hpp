// Policy types: where a tensor's memory lives and how an assignment runs.
//   cpu          one thread, SIMD loops
//   cpu_threads  the same loops split over OpenMP threads
//   cuda         device memory, one CUDA kernel per fused expression (needs nvcc; see policy/cuda.hpp)
#pragma once
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "tessera/core/stats.hpp"

#if defined(_OPENMP)
#include <omp.h>
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
  /// Threads used by assignments under this policy: set_num_threads(n) if called, else OpenMP's default.
  static int num_threads() {
#if defined(_OPENMP)
    return requested() > 0 ? requested() : omp_get_max_threads();
#else
    return 1;
#endif
  }
  static void set_num_threads(int n) { requested() = n; }

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

/// Memory of a policy: allocate, free, copy. The cuda specialisation is in policy/cuda.hpp.
template <class P>
struct memory {
  static constexpr std::size_t alignment = 64;
  static_assert(!P::on_device, "tessera: cuda tensors need this file compiled by nvcc (a .cu file) so that tessera/policy/cuda.hpp is included");
  template <class T>
  static T* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    stats::count_allocation();
    const std::size_t bytes = (n * sizeof(T) + alignment - 1) / alignment * alignment;
    void* p = std::aligned_alloc(alignment, bytes);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  template <class T>
  static void deallocate(T* p) { std::free(p); }
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
