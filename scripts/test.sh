#!/usr/bin/env bash
# Configure, build and test tessera in build/ (what CI runs, via .ci/run).
#   BUILD_DIR=...            build folder (default: build)
#   TESSERA_CMAKE_ARGS="..." extra configure arguments, e.g. "-DTESSERA_ENABLE_CUDA=OFF"
#   TESSERA_SKIP_DEPS=1      do not check/install Debian packages
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh

start=$SECONDS
tessera_install_deps

build_dir=${BUILD_DIR:-build}
jobs=$(nproc 2>/dev/null || echo 2)

configure_args=(-S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DTESSERA_BUILD_TESTS=ON)
# Ninja when available, unless build_dir was already configured with another generator.
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  configure_args+=(-G Ninja)
fi
# shellcheck disable=SC2206  # word splitting of the extra arguments is intended
configure_args+=(${TESSERA_CMAKE_ARGS:-})

echo "==> configure: cmake ${configure_args[*]}"
cmake "${configure_args[@]}"
t_configure=$((SECONDS - start))

# Keep going past a failed target, so that every test that can be built still runs; the script fails at the end.
keep_going=()
generator=$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$build_dir/CMakeCache.txt")
case "$generator" in
  Ninja*) keep_going=(-- -k 0) ;;
  *Makefiles*) keep_going=(-- -k) ;;
esac
echo "==> build: cmake --build $build_dir -j $jobs"
build_status=0
cmake --build "$build_dir" -j "$jobs" "${keep_going[@]}" || build_status=$?
t_build=$((SECONDS - start))

echo "==> test: ctest --output-on-failure -j2"
test_status=0
(cd "$build_dir" && ctest --output-on-failure -j2) || test_status=$?
# ctest does not show a skipped test's output: show why (the tests print a line starting with SKIPPED).
if compgen -G "$build_dir/Testing/Temporary/LastTest*.log" >/dev/null; then
  grep -h "^SKIPPED" "$build_dir"/Testing/Temporary/LastTest*.log 2>/dev/null | sort -u | sed 's/^/    /' || true
fi
t_total=$((SECONDS - start))

echo "==> times: configure $((t_configure))s, build $((t_build - t_configure))s, test $((t_total - t_build))s, total ${t_total}s"
if [[ $build_status -ne 0 ]]; then
  echo "==> FAILED: the build failed (exit $build_status); see the errors above" >&2
  exit "$build_status"
fi
exit "$test_status"
