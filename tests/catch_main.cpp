// The one Catch2 main shared by every test executable (built once as tessera_catch_main).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <cstdlib>

// Tests ask for fixed teams (test_omp_teams, the threaded kernels' splits): the adaptive team of cpu_threads, which
// shrinks while other processes (a parallel ctest) keep cores busy, is off unless the environment says otherwise;
// test_adaptive_threads turns it on itself.
static const int tessera_fixed_teams = setenv("TESSERA_ADAPTIVE_THREADS", "0", 0);
