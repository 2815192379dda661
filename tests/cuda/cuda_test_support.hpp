// What the CUDA test executables share: a main that exits 77 with a "SKIPPED: ..." line when there is no device
// (ctest reports the test as skipped), a status check, and a device buffer that starts as NaN (all bits set) so that
// any element a kernel forgets shows. Include it once, after <catch2/catch.hpp> with CATCH_CONFIG_RUNNER defined.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
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

/// a (a host reference) and b (a device result, or any tensor) agree element by element:
/// |a - b| <= rel (|a| + 0.1 max|a|) + 1e-6 (the scale of the tensor's largest magnitude near zero).
template <class TA, class TB>
void require_close(const TA& a_any, const TB& b_any, const std::string& what, double rel = 1e-4) {
  const auto a = tessera::to<tessera::cpu>(a_any);
  const auto b = tessera::to<tessera::cpu>(b_any);
  INFO(what);
  REQUIRE(a.dims() == b.dims());
  double scale = 0;
  for (tessera::index_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::abs(double(a.data()[i])));
  for (tessera::index_t i = 0; i < a.size(); ++i) {
    const double x = double(a.data()[i]), y = double(b.data()[i]);
    INFO("element " << i << " of " << a.size() << ": host " << x << ", device " << y);
    REQUIRE(std::abs(x - y) <= rel * (std::abs(x) + 0.1 * scale) + 1e-6);
  }
}

}  // namespace cuda_test
