// The cuda policy's planner pieces: the device backend (kernels/cuda/backend.hpp) and the contractions handed
// to cuBLASLt and cuDNN (policy/cuda_contractions.hpp). Compiled only by nvcc; tessera.hpp includes it there.
#pragma once
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda_contractions.hpp"
#endif  // __CUDACC__
