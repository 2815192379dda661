#!/usr/bin/env bash
# Data-parallel training from a fresh machine: installs what is missing (OpenMPI: libopenmpi-dev, openmpi-bin; Debian's
# dataset-fashion-mnist), builds examples/fashion_mnist_ddp in Release and trains the SimpleCNN with mpirun on RANKS
# processes of this machine, one thread each, batch 32 per rank: rank 0 prints the progress, the loss and the test
# accuracy (reduced over the ranks) after each epoch and writes the checkpoint; then it resumes from that checkpoint
# for one more epoch on a different number of ranks.
#   scripts/demo_dist.sh [epochs = 3] [ranks = 2]        BUILD_DIR=... build folder (default: build)
# mpirun runs as root only when told (--allow-run-as-root) and refuses more ranks than cores unless told
# (--oversubscribe): both are passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
TESSERA_PACKAGES+=(dataset-fashion-mnist)
tessera_install_deps

epochs=${1:-3} ranks=${2:-2}
build_dir=${BUILD_DIR:-build}
tessera_build_examples "$build_dir" fashion_mnist_ddp
mpirun=(mpirun --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1)
ckpt=$build_dir/simplecnn_ddp.ckpt

echo "==> ${mpirun[*]} -np $ranks $build_dir/examples/fashion_mnist_ddp $epochs 32 1 $ckpt"
"${mpirun[@]}" -np "$ranks" "$build_dir/examples/fashion_mnist_ddp" "$epochs" 32 1 "$ckpt"
other=$(( ranks == 1 ? 2 : ranks - 1 ))
echo
echo "==> resuming from $ckpt on $other rank(s) for epoch $((epochs + 1))"
"${mpirun[@]}" -np "$other" "$build_dir/examples/fashion_mnist_ddp" "$((epochs + 1))" 32 1 "$ckpt" --resume
