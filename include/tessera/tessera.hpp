// tessera: header-only C++20 tensors with fused lazy expressions on CPU and CUDA.
#pragma once
#include "tessera/config.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/types.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/expr/elementwise.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/expr/views.hpp"
#include "tessera/expr/matmul.hpp"
#include "tessera/expr/pool.hpp"
#include "tessera/expr/conv.hpp"
#if defined(__CUDACC__)
#include "tessera/policy/cuda.hpp"
#endif
#include "tessera/policy/transfer.hpp"
