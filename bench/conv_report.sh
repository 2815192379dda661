#!/usr/bin/env bash
# the conv2d + bias + ReLU layers beside PyTorch: now the workload "conv" of bench/compare, which builds, runs and
# prints its tables (this name is kept for habit). Options as bench/compare's, e.g. --quick or --build-dir DIR.
exec "$(dirname "${BASH_SOURCE[0]}")/compare" --only conv "$@"
