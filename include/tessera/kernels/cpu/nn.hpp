// host_nn_ops<P>: the nn part of backend<cpu> / backend<cpu_threads> (see kernels/cpu/backend.hpp).
#pragma once
#include "tessera/core/policy.hpp"
#include "tessera/kernels/backend.hpp"

namespace tessera::detail {

template <class P>
struct host_nn_ops {};

}  // namespace tessera::detail
