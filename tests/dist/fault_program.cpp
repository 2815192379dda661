// The program of the fault tests (dist_fault_*: tests/dist/run_fault.cmake runs it under mpirun and checks how
// the job ends). Rank 1 misbehaves after a first all_reduce that every rank completes:
//   die    rank 1 exits at once without MPI_Finalize (a crash); rank 0 waits in an all_reduce
//   hang   rank 1 stops calling collectives (sleeps 600 s); rank 0's all_reduce times out after 3 s
// Rank 0 prints what it saw; a dist::error ends it with "rank 0: error: ..." and exit code 3.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <tessera/dist/mpi.hpp>

namespace ts = tessera;
namespace dist = tessera::dist;

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "die";
  dist::context ctx(argc, argv, {.timeout = std::chrono::seconds(3)});
  ts::Tensor<float, ts::Shape<ts::dyn>> t(1000);
  t = 1.0f;
  ctx.group().all_reduce(t);
  std::printf("rank %d: first all_reduce done (%g)\n", ctx.rank(), double(t(0)));
  std::fflush(stdout);
  if (ctx.rank() == 1) {
    if (std::strcmp(mode, "die") == 0) std::_Exit(9);
    std::this_thread::sleep_for(std::chrono::seconds(600));
    return 0;
  }
  try {
    for (int i = 0; i < 5; ++i) ctx.group().all_reduce(t);
    std::printf("rank %d: unexpectedly completed\n", ctx.rank());
    return 0;
  } catch (const dist::error& e) {
    std::printf("rank %d: error: %s\n", ctx.rank(), e.what());
    std::fflush(stdout);
    return 3;  // ~context ends the job (MPI_Abort): the group is broken
  }
}
