// cuda_nn_ops: the nn part of backend<cuda> (see kernels/cuda/backend.hpp). Compiled only by nvcc.
#pragma once
#if defined(__CUDACC__)
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera::detail {

struct cuda_nn_ops {};

}  // namespace tessera::detail
#endif  // __CUDACC__
