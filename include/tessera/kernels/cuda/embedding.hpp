// cuda_embedding_ops: the embedding part of backend<cuda> (kernels/cuda/backend.hpp), the same names and argument
// lists as host_embedding_ops (kernels/cpu/embedding.hpp):
//   embedding_forward   one thread per output element
//   embedding_backward  a block per weight row that occurs, its threads over the row's elements, each adding the
//                       row's gradient rows in the listed order (no atomics: the same result every run)
// Every kernel runs on tessera's stream. Compiled only by nvcc.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera::detail {

namespace cuda_embedding {
template <class T>
__global__ void forward_kernel(const T* w, const index_t* idx, T* y, index_t n, index_t dim) {
  const index_t total = n * dim, step = index_t(gridDim.x) * blockDim.x;
  for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const index_t i = e / dim, j = e - i * dim;
    y[e] = w[idx[i] * dim + j];
  }
}
template <class T>
__global__ void backward_kernel(const T* g, const index_t* rows, const index_t* offsets, const index_t* positions, index_t nrows,
                                index_t dim, T* dw) {
  for (index_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    T* d = dw + rows[r] * dim;
    for (index_t j = threadIdx.x; j < dim; j += blockDim.x) {
      T acc = d[j];
      for (index_t k = offsets[r]; k < offsets[r + 1]; ++k) acc += g[positions[k] * dim + j];
      d[j] = acc;
    }
  }
}
}  // namespace cuda_embedding

struct cuda_embedding_ops {
  template <class T>
  static void embedding_forward(const T* w, const index_t* idx, T* y, index_t n, index_t dim) {
    if (n * dim == 0) return;
    cuda_embedding::forward_kernel<T><<<tessera::cuda_kernels::grid_for(n * dim), 256, 0, tessera::cuda_detail::stream()>>>(
        w, idx, y, n, dim);
    tessera::cuda_kernels::check_launch("tessera: embedding kernel launch");
  }
  template <class T>
  static void embedding_backward(const T* g, const index_t* rows, const index_t* offsets, const index_t* positions, index_t nrows,
                                 index_t dim, T* dw) {
    if (nrows == 0 || dim == 0) return;
    const unsigned blocks = unsigned(nrows < 65535 ? nrows : 65535);
    const unsigned threads = unsigned(dim < 256 ? ((dim + 31) / 32) * 32 : 256);
    cuda_embedding::backward_kernel<T><<<blocks, threads, 0, tessera::cuda_detail::stream()>>>(g, rows, offsets, positions, nrows,
                                                                                               dim, dw);
    tessera::cuda_kernels::check_launch("tessera: embedding backward kernel launch");
  }
};

}  // namespace tessera::detail
#endif
