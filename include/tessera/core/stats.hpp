// Test-build instrumentation: passes over memory, kernel launches and temporary allocations.
// Define TESSERA_INSTRUMENT before including tessera to turn the counters on; otherwise they cost nothing.
#pragma once
#include <atomic>

namespace tessera::stats {

struct counters {
  long passes = 0;        ///< loops over a destination (elementwise or reduction), CPU or CUDA
  long launches = 0;      ///< CUDA kernel launches
  long allocations = 0;   ///< buffers allocated by tessera (tensors and temporaries)
};

#ifdef TESSERA_INSTRUMENT
inline std::atomic<long>& passes_counter() { static std::atomic<long> c{0}; return c; }
inline std::atomic<long>& launches_counter() { static std::atomic<long> c{0}; return c; }
inline std::atomic<long>& allocations_counter() { static std::atomic<long> c{0}; return c; }
inline void count_pass() { ++passes_counter(); }
inline void count_launch() { ++launches_counter(); }
inline void count_allocation() { ++allocations_counter(); }
inline void reset() { passes_counter() = 0; launches_counter() = 0; allocations_counter() = 0; }
inline counters read() { return {passes_counter().load(), launches_counter().load(), allocations_counter().load()}; }
inline constexpr bool enabled = true;
#else
inline void count_pass() {}
inline void count_launch() {}
inline void count_allocation() {}
inline void reset() {}
inline counters read() { return {}; }
inline constexpr bool enabled = false;
#endif

}  // namespace tessera::stats
