// host_rnn_ops<P>: the rnn part of backend<cpu> / backend<cpu_threads> (see kernels/cpu/backend.hpp).
#pragma once
#include "tessera/core/policy.hpp"
#include "tessera/kernels/backend.hpp"

namespace tessera::detail {

template <class P>
struct host_rnn_ops {};

}  // namespace tessera::detail
