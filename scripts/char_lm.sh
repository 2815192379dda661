#!/usr/bin/env bash
# The character-level language models: installs what is missing (Debian's fortunes package among it), builds in
# Release and trains examples/char_lm.cpp (an LSTM) on the fortunes (held-out bits per character after each phase,
# samples at the end).
#   scripts/char_lm.sh [steps = 3000, or seconds: 300s] [threads = 2] [batch = 32] [chunk = 64] [lr = 0.01] [seed = 0]
#   scripts/char_lm.sh transformer [seconds = 300] [threads = 2]
#       examples/char_transformer.cpp (two pre-norm Transformer encoder layers, causal) and then the LSTM, each for
#       the same seconds of training on the same threads, their held-out bits per character side by side
#   BUILD_DIR=... build folder (default: build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
TESSERA_PACKAGES+=(fortunes)
tessera_install_deps

build_dir=${BUILD_DIR:-build}
if [[ ${1:-} == transformer ]]; then
  seconds=${2:-300}
  threads=${3:-2}
  tessera_build_examples "$build_dir" char_transformer char_lm
  echo "==> $build_dir/examples/char_transformer ${seconds}s $threads"
  "$build_dir/examples/char_transformer" "${seconds}s" "$threads" | tee "$build_dir/char_transformer.log"
  echo "==> $build_dir/examples/char_lm ${seconds}s $threads"
  "$build_dir/examples/char_lm" "${seconds}s" "$threads" | tee "$build_dir/char_lm.log"
  echo "==> held-out bits per character after ${seconds} s of training on $threads thread(s):"
  echo "    Transformer: $(grep -o 'held-out bits/char [0-9.]*' "$build_dir/char_transformer.log" | tail -1 | awk '{print $3}')"
  echo "    LSTM:        $(grep -o 'held-out bits/char [0-9.]*' "$build_dir/char_lm.log" | tail -1 | awk '{print $3}')"
  exit 0
fi
tessera_build_examples "$build_dir" char_lm

echo "==> $build_dir/examples/char_lm $*"
"$build_dir/examples/char_lm" "$@"
