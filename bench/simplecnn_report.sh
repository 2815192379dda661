#!/usr/bin/env bash
# Issue 4's figures in one run: one training epoch of the SimpleCNN on Fashion-MNIST (batch 64, 2 threads) and the
# inference over the 10k test images, tessera against PyTorch on the same machine, back to back.
#   bench/simplecnn_report.sh [build-dir]    (build the fashion_mnist example first; needs dataset-fashion-mnist,
#                                             and python3-torch for the peer)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
bin="$build/examples/fashion_mnist"
[[ -x $bin ]] || { echo "no $bin: cmake --build $build --target fashion_mnist" >&2; exit 1; }
ckpt=$(mktemp)
trap 'rm -f "$ckpt"' EXIT
ours=$("$bin" 1 2 "$ckpt" | tr '\r' '\n' | grep '^epoch 1:')
echo "tessera: $ours"
t_train=$(sed -E 's/.*train ([0-9.]+) s.*/\1/' <<<"$ours")
t_inf=$(sed -E 's/.*images: ([0-9.]+) s.*/\1/' <<<"$ours")
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  theirs=$(/usr/bin/python3 bench/torch_simplecnn.py 2 1 | grep '^epoch 1:')
  echo "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'): $theirs"
  p_train=$(sed -E 's/.*train ([0-9.]+) s.*/\1/' <<<"$theirs")
  p_inf=$(sed -E 's/.*inference ([0-9.]+) s.*/\1/' <<<"$theirs")
  awk -v a="$t_train" -v b="$p_train" -v c="$t_inf" -v d="$p_inf" \
    'BEGIN{printf "epoch: tessera %.1f s / PyTorch %.1f s = %.2fx the time;  inference over 10k: %.2f s / %.2f s = %.2fx the time\n", a, b, a/b, c, d, c/d}'
else
  echo "PyTorch not installed (apt-get install python3-torch): no peer figure"
fi
