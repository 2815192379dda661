#!/usr/bin/env bash
# The character-level language model: installs what is missing (Debian's fortunes package among it), builds in
# Release and trains examples/char_lm.cpp on the fortunes (held-out bits per character after each phase, samples at
# the end).
#   scripts/char_lm.sh [steps = 3000] [threads = 2] [batch = 32] [chunk = 64] [lr = 0.01] [seed = 0]
#   BUILD_DIR=... build folder (default: build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
TESSERA_PACKAGES+=(fortunes)
tessera_install_deps

build_dir=${BUILD_DIR:-build}
tessera_build_examples "$build_dir" char_lm

echo "==> $build_dir/examples/char_lm $*"
"$build_dir/examples/char_lm" "$@"
