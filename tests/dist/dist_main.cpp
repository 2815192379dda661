// The main of every distributed test (tests/dist): dist::context first (MPI_Init on each rank mpirun started), then
// Catch2 on every rank, running the same test cases in the same order (their collectives must match). The exit
// code is the largest over the ranks, so that mpirun and ctest see a failure on any rank.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "dist_support.hpp"

int main(int argc, char** argv) {
  // a wait longer than this is a bug (a hang): the test fails with dist::timeout_error instead of ctest's timeout
  tessera::dist::context ctx(argc, argv, {.timeout = std::chrono::seconds(120)});
  dist_test::set_context(ctx);
  Catch::Session session;
  int rc = session.applyCommandLine(argc, argv);
  if (rc == 0) rc = session.run();
  rc = ctx.group().all_reduce_value(rc, tessera::dist::reduce_op::max);
  if (ctx.is_root()) std::printf("dist test on %d ranks: %s\n", ctx.world_size(), rc == 0 ? "passed on every rank" : "FAILED on some rank");
  return rc;
}
