#!/usr/bin/env bash
# One training epoch of the row LSTM on Fashion-MNIST (2 layers, hidden 128, batch 64, Adam, 2 threads), tessera's
# example against the same model in PyTorch (bench/torch_row_lstm.py), back to back.
#   bench/row_lstm_report.sh [build-dir]    (build the fashion_mnist_lstm example first; needs dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
bin="$build/examples/fashion_mnist_lstm"
[[ -x $bin ]] || { echo "no $bin: cmake --build $build --target fashion_mnist_lstm" >&2; exit 1; }
ours=$("$bin" 1 2 | tr '\r' '\n' | grep '^epoch 1:')
echo "tessera: $ours"
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then echo "PyTorch not installed (python3-torch): no peer figure"; exit 0; fi
theirs=$(/usr/bin/python3 bench/torch_row_lstm.py 2 1 | grep '^epoch 1:')
echo "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'): $theirs"
a=$(sed -E 's/.*train ([0-9.]+) s.*/\1/' <<<"$ours"); b=$(sed -E 's/.*train ([0-9.]+) s.*/\1/' <<<"$theirs")
awk -v a="$a" -v b="$b" 'BEGIN{printf "epoch: tessera %.1f s / PyTorch %.1f s: %.2fx faster\n", a, b, b/a}'
