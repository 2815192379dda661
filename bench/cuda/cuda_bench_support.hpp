// What the CUDA benchmarks share: whether a device is there, and a CUDA status check that throws.
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <tessera/tessera.hpp>

namespace cuda_bench {
inline bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw tessera::device_error(std::string(what) + ": " + cudaGetErrorString(e));
}
}  // namespace cuda_bench
