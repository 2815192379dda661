#!/usr/bin/env bash
# one row-LSTM training epoch on Fashion-MNIST beside PyTorch: now the workload "row_lstm_epoch" of bench/compare,
# which builds, runs and prints its tables (this name is kept for habit). Options as bench/compare's, e.g. --quick
# or --build-dir DIR.
exec "$(dirname "${BASH_SOURCE[0]}")/compare" --only row_lstm_epoch "$@"
