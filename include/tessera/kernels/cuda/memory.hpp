// Device memory and the stream every tessera kernel and copy runs on: memory<cuda> (allocate, free, copies) and
// cuda_runtime (is there a device, wait for tessera's work). Compiled only by nvcc.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "tessera/core/error.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/core/stats.hpp"

namespace tessera {

namespace cuda_detail {
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw device_error(std::string("tessera: cuda: ") + what + ": " + cudaGetErrorString(e));
}
/// The stream every tessera kernel and copy runs on.
inline cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t t = nullptr;
    check(cudaStreamCreateWithFlags(&t, cudaStreamNonBlocking), "cudaStreamCreate");
    return t;
  }();
  return s;
}
inline int sm_count() {
  static int n = [] {
    int dev = 0, c = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    return c;
  }();
  return n;
}
}  // namespace cuda_detail

namespace cuda_runtime {
/// Is there a usable CUDA device (and a driver)?
inline bool available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
/// Why there is no device, in words (empty when there is one).
inline std::string unavailable_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return cudaGetErrorString(e);
  return n > 0 ? std::string() : std::string("no CUDA device found");
}
/// Wait for all of tessera's queued work.
inline void synchronize() { cuda_detail::check(cudaStreamSynchronize(cuda_detail::stream()), "cudaStreamSynchronize"); }
}  // namespace cuda_runtime

template <>
struct memory<cuda> {
  static constexpr std::size_t alignment = 256;  ///< cudaMalloc's guarantee
  template <class T>
  static T* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    if (n > (~std::size_t(0) - alignment) / sizeof(T))
      throw std::length_error("tessera: cuda allocation of " + std::to_string(n) + " elements of " +
                              std::to_string(sizeof(T)) + " bytes: more than the address space holds");
    stats::count_allocation();
    void* p = nullptr;
    cuda_detail::check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
    return static_cast<T*>(p);
  }
  template <class T>
  static void deallocate(T* p) {
    if (p) cudaFree(p);
  }
  template <class T>
  static void copy_to_device(T* dst, const T* src, std::size_t n) {
    cuda_detail::check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, cuda_detail::stream()), "copy to device");
    cuda_runtime::synchronize();
  }
  template <class T>
  static void copy_to_host(T* dst, const T* src, std::size_t n) {
    cuda_detail::check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, cuda_detail::stream()), "copy to host");
    cuda_runtime::synchronize();
  }
  template <class T>
  static void copy_device_to_device(T* dst, const T* src, std::size_t n) {
    cuda_detail::check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, cuda_detail::stream()), "device copy");
  }
};

}  // namespace tessera
#endif  // __CUDACC__
