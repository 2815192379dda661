#!/usr/bin/env bash
# Extra checks of the CPU code, beside scripts/test.sh (CUDA off in both configurations):
#   scripts/check.sh sanitize [all|ci]   g++ with -fsanitize=address,undefined (any finding fails the test) and
#                                        TESSERA_DEBUG (index checks on), in build-sanitize/: every CPU test ("all",
#                                        the default), or the subset CI runs ("ci": the tests of the hardening work
#                                        and the file readers)
#   scripts/check.sh clang               clang++ (Debian's), in build-clang/: every header compiles on its own, and
#                                        the core, expr and autodiff tests build and pass
#   scripts/check.sh fuzz [SECONDS]      every libFuzzer harness for SECONDS (default 60): scripts/fuzz.sh
#   scripts/check.sh ci                  what .ci/run adds to scripts/test.sh: clang, sanitize ci, every fuzzer
#                                        for 60 s
# TESSERA_SKIP_DEPS=1 skips the package check; TESSERA_CHECK_TESTS="test_a test_b" picks the sanitizer's tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)

# The CPU tests: tests/<folder>/test_<name>.cpp, as tests/CMakeLists.txt builds them.
cpu_tests() {
  find tests -path tests/cuda -prune -o -path tests/compile_fail -prune -o -path tests/install -prune -o \
       -path tests/fuzz -prune -o -name 'test_*.cpp' -print | sed 's|.*/||; s|\.cpp$||' | sort
}
# The sanitized subset CI runs (the rest: scripts/check.sh sanitize all).
ci_sanitize_tests=(test_sizes test_debug_checks test_tensor test_anomaly test_idx test_idx_alloc test_loader
                   test_checkpoint test_checkpoint_hostile test_checkpoint_faults test_omp_teams test_nan
                   test_quant_rounding test_batchnorm_edge)

configure() {  # configure DIR extra-args...
  local dir=$1
  shift
  local args=(-S . -B "$dir" -DTESSERA_BUILD_TESTS=ON -DTESSERA_ENABLE_CUDA=OFF -DTESSERA_BUILD_BENCHMARKS=OFF
              -DTESSERA_BUILD_EXAMPLES=OFF -DTESSERA_INSTALL=OFF "$@")
  [[ -f "$dir/CMakeCache.txt" ]] || args+=("${generator[@]}")
  mkdir -p "$dir"
  cmake "${args[@]}" >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; return 1; }
}

# build_and_run DIR TEST...: builds the tests that exist (keeps going past a failed one), runs them with ctest.
build_and_run() {
  local dir=$1
  shift
  local want=() t
  for t in "$@"; do
    [[ -n $(find tests -name "$t.cpp" -not -path 'tests/cuda/*' | head -1) ]] && want+=("$t")
  done
  local status=0
  echo "==> $dir: building ${#want[@]} tests"
  cmake --build "$dir" -j "$jobs" --target "${want[@]}" -- -k 0 || status=$?
  local regex
  regex="^($(IFS='|'; echo "${want[*]}"))\$"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" -R "$regex") || status=$?
  return $status
}

run_sanitize() {
  local which=${1:-all} tests
  if [[ -n ${TESSERA_CHECK_TESTS:-} ]]; then
    read -r -a tests <<<"$TESSERA_CHECK_TESTS"
  elif [[ $which == ci ]]; then
    tests=("${ci_sanitize_tests[@]}")
  else
    mapfile -t tests < <(cpu_tests)
  fi
  local dir=build-sanitize
  # -g1: line tables for the reports at a fraction of -g's compile time; TESSERA_DEBUG: index checks on
  configure "$dir" -DCMAKE_BUILD_TYPE=Release -DTESSERA_TEST_OPT=-O1 \
    "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g1 -DTESSERA_DEBUG" \
    "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"
  sanitizer_env
  build_and_run "$dir" "${tests[@]}"
}

sanitizer_env() {
  # leaks: the OpenMP runtime's thread pool is never freed by design; everything else must be clean
  # allocator_may_return_null: an impossible allocation returns null and the library's std::bad_alloc is tested,
  # as without the sanitizer
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1:strict_string_checks=1:detect_stack_use_after_return=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
}

# clang++ at -O1 (a check that the code builds and the tests pass with a second compiler, not a speed test; -O1
# compiles 2.5x quicker). clang takes the scalar loops where g++ takes the SIMD ones.
run_clang() {
  command -v clang++ >/dev/null 2>&1 || { echo "check: clang++ not found (apt-get install clang)" >&2; return 1; }
  local dir=build-clang status=0
  configure "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ -DTESSERA_TEST_OPT=-O1
  echo "==> $dir: every header on its own"
  cmake --build "$dir" -j "$jobs" --target tessera_header_check -- -k 0 || status=$?
  local tests
  mapfile -t tests < <(find tests/core tests/expr tests/autodiff -name 'test_*.cpp' | sed 's|.*/||; s|\.cpp$||' | sort)
  build_and_run "$dir" "${tests[@]}" || status=$?
  return $status
}

TESSERA_PACKAGES+=("${TESSERA_CHECK_PACKAGES[@]}")
tessera_install_deps

mode=${1:-ci}
shift || true
start=$SECONDS
status=0
case "$mode" in
  sanitize) run_sanitize "$@" || status=$? ;;
  clang) run_clang || status=$? ;;
  fuzz) bash scripts/fuzz.sh "${1:-60}" || status=$? ;;
  ci)
    run_clang || status=$?
    run_sanitize ci || status=$?
    TESSERA_SKIP_DEPS=1 bash scripts/fuzz.sh 60 || status=$?
    echo "==> the GPU check's plan (its dry run; the real run needs a GPU)"
    bash scripts/gpu_check.sh --dry-run || status=$?
    ;;
  *) echo "usage: scripts/check.sh sanitize [all|ci] | clang | fuzz [SECONDS] | ci" >&2; exit 2 ;;
esac
echo "==> check $mode: $((SECONDS - start)) s, $([[ $status == 0 ]] && echo passed || echo FAILED)"
exit $status
