// backend<cuda>: the device's side of the vocabulary of kernels/backend.hpp (compiled only by nvcc). Every kernel
// runs on the stream of kernels/cuda/memory.hpp; a function returns once its work is queued (copies to and from
// the host wait for it). Its parts live beside their kernels:
//   here                   memory, gemm (cuBLASLt, kernels/cuda/gemm.hpp)
//   kernels/cuda/nn.hpp    cuda_nn_ops: the layer operations' kernels
//   kernels/cuda/rnn.hpp   cuda_rnn_ops: the LSTM step
//   kernels/cuda/optim.hpp cuda_optim_ops: the optimizer updates
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/gemm.hpp"
#include "tessera/kernels/cuda/memory.hpp"
#include "tessera/kernels/cuda/nn.hpp"
#include "tessera/kernels/cuda/optim.hpp"
#include "tessera/kernels/cuda/rnn.hpp"

namespace tessera {

template <>
struct backend<cuda> : detail::cuda_nn_ops, detail::cuda_rnn_ops, detail::cuda_optim_ops {
  using policy = cuda;
  static constexpr bool on_device = true;
  static int threads() { return 1; }
  static cudaStream_t stream() { return cuda_detail::stream(); }

  // ---- memory ----
  template <class T>
  static T* allocate(index_t n) { return memory<cuda>::template allocate<T>(std::size_t(n)); }
  template <class T>
  static void deallocate(T* p) { memory<cuda>::deallocate(p); }
  template <class T>
  static void copy(T* dst, const T* src, index_t n) { if (n > 0) memory<cuda>::copy_device_to_device(dst, src, std::size_t(n)); }
  template <class T>
  static void to_host(T* dst, const T* src, index_t n) { if (n > 0) memory<cuda>::copy_to_host(dst, src, std::size_t(n)); }
  template <class T>
  static void from_host(T* dst, const T* src, index_t n) { if (n > 0) memory<cuda>::copy_to_device(dst, src, std::size_t(n)); }
  template <class T>
  static void zero(T* p, index_t n) {
    if (n > 0)
      cuda_kernels::check_cuda(cudaMemsetAsync(p, 0, std::size_t(n) * sizeof(T), stream()), "cudaMemsetAsync");
  }

  // ---- gemm ----
  /// C (+)= A B through cuBLASLt (operands whose strides cuBLASLt cannot take are packed first).
  template <class T>
  static void gemm(const detail::gemm_desc<T>& d) {
    cuda_gemm<T>(stream(), d.M, d.N, d.K, d.a.p, d.a.rs, d.a.cs, d.b.p, d.b.rs, d.b.cs, d.c, d.ldc, gemm_epilogue::none,
                 nullptr, 1, 0, 0, 0, d.accumulate);
  }
};

}  // namespace tessera
#endif  // __CUDACC__
