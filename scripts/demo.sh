#!/usr/bin/env bash
# The main job: installs what is missing (Debian's dataset-fashion-mnist among it), builds in Release and trains the
# SimpleCNN on Fashion-MNIST (batch 64, 2 threads) with a live progress line, test accuracy after each epoch, a
# checkpoint, and the inference time over the 10k test images; it ends by quantizing the trained model to int8
# (calibrated on 1000 training images) and printing both accuracies and both inference times. The quickstart runs
# first.
#   scripts/demo.sh [epochs = 3]        BUILD_DIR=... build folder (default: build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
TESSERA_PACKAGES+=(dataset-fashion-mnist)
tessera_install_deps

build_dir=${BUILD_DIR:-build}
tessera_build_examples "$build_dir" quickstart fashion_mnist

echo "==> $build_dir/examples/quickstart"
"$build_dir/examples/quickstart"
echo
echo "==> $build_dir/examples/fashion_mnist ${1:-3} 2 $build_dir/simplecnn.ckpt"
"$build_dir/examples/fashion_mnist" "${1:-3}" 2 "$build_dir/simplecnn.ckpt"
