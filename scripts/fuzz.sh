#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang++ (in build-fuzz/) and runs each for a while.
#   scripts/fuzz.sh [SECONDS] [NAME...]   SECONDS per fuzzer (default 600); NAME: fuzz_idx, fuzz_checkpoint, ...
#   FUZZ_BUILD_DIR=...                    build folder (default build-fuzz)
#   TESSERA_SKIP_DEPS=1                   do not check/install Debian packages
# Each fuzzer starts from a seed corpus its _seeds program writes with the library's own writers
# (build-fuzz/corpus/<name>/); new inputs found are kept there. A crash leaves build-fuzz/crash-<name>-* and fails
# the script. CI runs every fuzzer for 60 s (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
TESSERA_PACKAGES+=("${TESSERA_CHECK_PACKAGES[@]}")
tessera_install_deps

seconds=${1:-600}
shift || true
build_dir=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=$(nproc 2>/dev/null || echo 2)

configure_args=(-S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++
                -DTESSERA_BUILD_FUZZERS=ON -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_EXAMPLES=OFF
                -DTESSERA_BUILD_BENCHMARKS=OFF -DTESSERA_ENABLE_CUDA=OFF -DTESSERA_WITH_OPENMP=OFF -DTESSERA_INSTALL=OFF)
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  configure_args+=(-G Ninja)
fi
cmake "${configure_args[@]}" >/dev/null

names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
  for f in tests/fuzz/fuzz_*.cpp; do names+=("$(basename "$f" .cpp)"); done
fi
targets=()
for n in "${names[@]}"; do targets+=("$n" "${n}_seeds"); done
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"

status=0
for n in "${names[@]}"; do
  corpus="$build_dir/corpus/$n"
  mkdir -p "$corpus"
  "$build_dir/tests/fuzz/${n}_seeds" "$corpus"
  echo "==> $n: ${seconds}s from $(find "$corpus" -type f | wc -l) inputs"
  start=$SECONDS
  if "$build_dir/tests/fuzz/$n" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
       -artifact_prefix="$build_dir/crash-$n-" "$corpus" >"$build_dir/$n.log" 2>&1; then
    echo "==> $n: no finding in $((SECONDS - start))s ($(grep -h '^stat::number_of_executed_units' "$build_dir/$n.log" | awk '{print $2}') runs, corpus $(find "$corpus" -type f | wc -l))"
  else
    echo "==> $n: FAILED (see $build_dir/$n.log)" >&2
    tail -40 "$build_dir/$n.log" >&2
    status=1
  fi
done
exit "$status"
