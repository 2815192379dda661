// Shared pieces of the raw-pointer CUDA kernels (kernels/cuda/gemm.hpp, conv.hpp, pool.hpp): status checks that
// turn every failure into a tessera::device_error naming the call, launch geometry for grid-stride kernels, the
// current device, and pointer alignment. Compiled only by nvcc, like every kernels/cuda header.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "tessera/config.hpp"
#include "tessera/core/error.hpp"

namespace tessera::cuda_kernels {

/// Throws device_error("tessera: cuda: <what>: <CUDA's message>") unless e is cudaSuccess.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw device_error(std::string("tessera: cuda: ") + what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

/// Checks that the kernel just launched was accepted (bad configuration, no device, ...).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline int current_device() {
  int d = 0;
  check_cuda(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

/// Blocks for a grid-stride loop over `total` items: enough to fill the device, never more than the items need.
inline unsigned grid_for(index_t total, int block = 256) {
  const index_t blocks = (total + block - 1) / block;
  constexpr index_t cap = 16384;  // 4M threads in flight; grid-stride loops cover the rest
  return unsigned(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

/// The largest power of two (at most `cap`) that divides the address: what a library may assume about it.
inline std::uint32_t pointer_alignment(const void* p, std::uint32_t cap = 256) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if (a == 0) return cap;
  std::uint32_t al = 1;
  while (al < cap && (a & al) == 0) al <<= 1;
  return al;
}
/// Alignment that holds for every element offset that is a multiple of `stride` elements of `bytes` bytes.
inline std::uint32_t stride_alignment(index_t stride, std::size_t bytes, std::uint32_t cap = 256) {
  if (stride == 0) return cap;
  const auto s = static_cast<std::uint64_t>(stride < 0 ? -stride : stride) * bytes;
  std::uint32_t al = 1;
  while (al < cap && (s & al) == 0) al <<= 1;
  return al;
}

inline bool fits_int(index_t v) { return v >= 0 && v <= index_t(0x7fffffff); }

/// e^v in the precision of T (expf for float) on the device.
template <class T>
__device__ __forceinline__ T dexp(T v) {
  if constexpr (std::is_same_v<T, float>) return ::expf(v);
  else return ::exp(v);
}

}  // namespace tessera::cuda_kernels
#endif  // __CUDACC__
