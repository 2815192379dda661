// What the CUDA test executables share: a main that exits 77 with a "SKIPPED: ..." line when there is no device
// (ctest reports the test as skipped), a status check, and a device buffer that starts as NaN (all bits set) so that
// any element a kernel forgets shows. Include it once, after <catch2/catch.hpp> with CATCH_CONFIG_RUNNER defined.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <tessera/tessera.hpp>
#include <vector>

int main(int argc, char** argv) {
  if (!tessera::cuda_runtime::available()) {
    std::printf("SKIPPED: CUDA tests need a GPU: %s\n", tessera::cuda_runtime::unavailable_reason().c_str());
    return 77;
  }
  return Catch::Session().run(argc, argv);
}

namespace cuda_test {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) FAIL(what << ": " << cudaGetErrorString(e));
}

/// A device buffer, filled with NaN (all bits set; -1 for integers) unless given contents.
template <class T>
struct dbuf {
  T* p = nullptr;
  std::size_t n = 0;
  explicit dbuf(std::size_t count) : n(count) {
    if (n) {
      cuda_ok(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
      cuda_ok(cudaMemset(p, 0xFF, n * sizeof(T)), "cudaMemset");
    }
  }
  explicit dbuf(const std::vector<T>& h) : dbuf(h.size()) { put(h); }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  ~dbuf() {
    if (p) cudaFree(p);
  }
  void put(const std::vector<T>& h) {
    if (n) cuda_ok(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  std::vector<T> get(cudaStream_t s) const {
    cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    std::vector<T> h(n);
    if (n) cuda_ok(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return h;
  }
};

}  // namespace cuda_test
