// What the distributed tests share: the process's dist::context (made by dist_main.cpp), and the namespace names
// and using-declarations every one of them spells the same way.
#pragma once
#include <cstdio>
#include <tessera/dist/mpi.hpp>

namespace dist_test {
inline tessera::dist::context*& context_slot() {
  static tessera::dist::context* c = nullptr;
  return c;
}
inline void set_context(tessera::dist::context& c) { context_slot() = &c; }
/// The context of this rank.
inline tessera::dist::context& ctx() { return *context_slot(); }
inline int rank() { return ctx().rank(); }
inline int world() { return ctx().world_size(); }
}  // namespace dist_test

// what every distributed test spells the same way
namespace tessera::nn {}
namespace tessera::ad {}
namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
namespace dist = tessera::dist;
using dist_test::rank;
using dist_test::world;
using ts::dyn;
using ts::index_t;
