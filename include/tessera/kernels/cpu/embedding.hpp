// host_embedding_ops: the embedding part of backend<P> for the host policies (kernels/cpu/backend.hpp), the same
// names and argument lists as cuda_embedding_ops (kernels/cuda/embedding.hpp):
//   embedding_forward   y[i, :] = w[idx[i], :] (rows of dim elements; the indices are checked by the caller)
//   embedding_backward  dw[rows[r], :] += the g rows listed for r (CSR: positions[offsets[r] .. offsets[r + 1])),
//                       each weight row summed in the listed order by one worker: the same result every run
#pragma once
#include <cstring>

#include "tessera/core/policy.hpp"
#include "tessera/kernels/backend.hpp"

namespace tessera::detail {

template <class P>
struct host_embedding_ops {
  template <class T>
  static void embedding_forward(const T* w, const index_t* idx, T* y, index_t n, index_t dim) {
    for (index_t i = 0; i < n; ++i)
      if (dim > 0) std::memcpy(y + i * dim, w + idx[i] * dim, std::size_t(dim) * sizeof(T));
  }
  template <class T>
  static void embedding_backward(const T* g, const index_t* rows, const index_t* offsets, const index_t* positions, index_t nrows,
                                 index_t dim, T* dw) {
    for (index_t r = 0; r < nrows; ++r) {
      T* d = dw + rows[r] * dim;
      for (index_t k = offsets[r]; k < offsets[r + 1]; ++k) {
        const T* s = g + positions[k] * dim;
        for (index_t j = 0; j < dim; ++j) d[j] += s[j];
      }
    }
  }
};

}  // namespace tessera::detail
