#!/usr/bin/env bash
# the elementwise chains beside Eigen Tensor, PyTorch and the triad: now the workload "elementwise" of
# bench/compare, which builds, runs and prints its tables (this name is kept for habit). Options as bench/compare's,
# e.g. --quick or --build-dir DIR.
exec "$(dirname "${BASH_SOURCE[0]}")/compare" --only elementwise "$@"
