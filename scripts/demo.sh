#!/usr/bin/env bash
# Build tessera's examples in Release and run the quickstart.
#   BUILD_DIR=...  build folder (default: build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
tessera_install_deps

build_dir=${BUILD_DIR:-build}
jobs=$(nproc 2>/dev/null || echo 2)
configure_args=(-S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DTESSERA_BUILD_EXAMPLES=ON)
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  configure_args+=(-G Ninja)
fi
cmake "${configure_args[@]}"
cmake --build "$build_dir" -j "$jobs" --target tessera_examples

echo "==> $build_dir/examples/quickstart"
"$build_dir/examples/quickstart"
