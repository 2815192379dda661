// tessera: header-only C++20 tensors with fused lazy expressions on CPU and CUDA. This header brings tensors,
// every expression and the planner that runs them (with the CUDA backend when nvcc compiles the file); autodiff,
// models, optimizers, int8, data and checkpoints have headers of their own (docs/api.md names them).
#pragma once
#include "tessera/config.hpp"
#include "tessera/core/policy.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"
#include "tessera/expr/conv.hpp"
#include "tessera/expr/elementwise.hpp"
#include "tessera/expr/matmul.hpp"
#include "tessera/expr/pool.hpp"
#include "tessera/expr/reduce.hpp"
#include "tessera/expr/views.hpp"
#include "tessera/policy/planner.hpp"
#include "tessera/policy/transfer.hpp"
