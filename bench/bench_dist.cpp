// All-reduce through tessera's MPI process group against MPI_Allreduce called directly, in the same binary, on the
// same ranks (and MPI_Iallreduce, the non-blocking form): bus bandwidth 2(n-1)/n * S / t (the bytes each rank's link carries in a ring all-reduce, per second:
// NCCL's and PyTorch's figure of merit), 4 KB to 64 MB of floats. Run under mpirun (bench/compare's dist workload):
//   mpirun -np 2 build-bench/bench/bench_dist [--benchmark_filter=...]
// Every rank runs every benchmark with the same fixed iteration count (collectives must match); rank 0 reports.
// Wall-clock time (UseRealTime): the caller sleeps while the group's communication thread works.
#include <benchmark/benchmark.h>
#include <mpi.h>

#include <cstring>
#include <string>
#include <vector>

#include <tessera/dist/mpi.hpp>

namespace ts = tessera;
namespace dist = tessera::dist;

namespace {
dist::context* g_ctx = nullptr;

std::int64_t iterations_for(std::int64_t bytes) {
  const std::int64_t it = (std::int64_t(1) << 28) / bytes;  // about 256 MB moved per benchmark (at least 30 calls)
  return std::max<std::int64_t>(30, std::min<std::int64_t>(it, 20000));
}
void set_counters(benchmark::State& state, std::int64_t bytes) {
  const int n = g_ctx->world_size();
  state.counters["busbw"] = benchmark::Counter(2.0 * (n - 1) / n * double(bytes) * double(state.iterations()),
                                               benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
  state.counters["ranks"] = n;
  state.SetBytesProcessed(std::int64_t(state.iterations()) * bytes);
}

void BM_allreduce_tessera(benchmark::State& state) {
  const std::int64_t bytes = state.range(0);
  ts::Tensor<float, ts::Shape<ts::dyn>> t(bytes / 4);
  t = 1.0f;
  auto& g = g_ctx->group();
  g.barrier();
  for (auto _ : state) {
    g.all_reduce(t);
    benchmark::DoNotOptimize(t.data());
  }
  set_counters(state, bytes);
}
void BM_allreduce_tessera_async(benchmark::State& state) {
  const std::int64_t bytes = state.range(0);
  ts::Tensor<float, ts::Shape<ts::dyn>> t(bytes / 4);
  t = 1.0f;
  auto& g = g_ctx->group();
  g.barrier();
  for (auto _ : state) {
    dist::work w = g.all_reduce_async(t, dist::reduce_op::avg);
    w.wait();
  }
  set_counters(state, bytes);
}
void BM_allreduce_mpi(benchmark::State& state) {
  const std::int64_t bytes = state.range(0);
  std::vector<float> v(std::size_t(bytes / 4), 1.0f);
  MPI_Barrier(MPI_COMM_WORLD);
  for (auto _ : state) {
    MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    benchmark::DoNotOptimize(v.data());
  }
  set_counters(state, bytes);
}

// OpenMPI's non-blocking all-reduce (libnbc), waited for at once: why the group's thread calls the blocking one
void BM_allreduce_mpi_iallreduce(benchmark::State& state) {
  const std::int64_t bytes = state.range(0);
  std::vector<float> v(std::size_t(bytes / 4), 1.0f);
  MPI_Barrier(MPI_COMM_WORLD);
  for (auto _ : state) {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
    benchmark::DoNotOptimize(v.data());
  }
  set_counters(state, bytes);
}

void register_all() {
  for (std::int64_t bytes = 4096; bytes <= (std::int64_t(64) << 20); bytes *= 4) {
    const auto it = iterations_for(bytes);
    // the peer first, then tessera, at each size: the same moment of the machine for both
    benchmark::RegisterBenchmark("BM_allreduce_mpi", BM_allreduce_mpi)->ArgName("bytes")->Arg(bytes)->Iterations(it)->UseRealTime();
    benchmark::RegisterBenchmark("BM_allreduce_tessera", BM_allreduce_tessera)->ArgName("bytes")->Arg(bytes)->Iterations(it)->UseRealTime();
    benchmark::RegisterBenchmark("BM_allreduce_tessera_async", BM_allreduce_tessera_async)->ArgName("bytes")->Arg(bytes)->Iterations(it)->UseRealTime();
    benchmark::RegisterBenchmark("BM_allreduce_mpi_iallreduce", BM_allreduce_mpi_iallreduce)->ArgName("bytes")->Arg(bytes)->Iterations(it)->UseRealTime();
  }
}
}  // namespace

int main(int argc, char** argv) {
  dist::context ctx(argc, argv);
  g_ctx = &ctx;
  // ranks other than 0 run silently and write no file
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i)
    if (ctx.is_root() || std::strncmp(argv[i], "--benchmark_out", 15) != 0) args.push_back(argv[i]);
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  register_all();
  if (ctx.is_root()) {
    benchmark::AddCustomContext("ranks", std::to_string(ctx.world_size()));
    benchmark::RunSpecifiedBenchmarks();
  } else {
    struct silent : benchmark::BenchmarkReporter {
      bool ReportContext(const Context&) override { return true; }
      void ReportRuns(const std::vector<Run>&) override {}
    } quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
}
