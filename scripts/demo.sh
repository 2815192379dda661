#!/usr/bin/env bash
# The main job: installs what is missing (Debian's dataset-fashion-mnist among it), builds in Release and trains the
# SimpleCNN on Fashion-MNIST (batch 64, 2 threads) with a live progress line, test accuracy after each epoch, a
# checkpoint, and the inference time over the 10k test images; it ends by quantizing the trained model to int8
# (calibrated on 1000 training images) and printing both accuracies and both inference times. The quickstart runs
# first. The training is monitored into a run directory: a TensorBoard event file (per step loss, batch accuracy,
# learning rate, images/s and step time; per epoch test accuracy, histograms of the weights and gradients, the first
# convolution's filters and misclassified test images), steps.csv and epochs.csv, and curves.png, the training curves
# drawn by gnuplot (skipped, with a message, when gnuplot is absent).
#   scripts/demo.sh [epochs = 3]        BUILD_DIR=... build folder (default: build)
#                                       RUN_DIR=... run directory (default: runs/fashion_mnist-<date>-<time>)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
TESSERA_PACKAGES+=(dataset-fashion-mnist)
tessera_install_deps

build_dir=${BUILD_DIR:-build}
run_dir=${RUN_DIR:-runs/fashion_mnist-$(date +%Y%m%d-%H%M%S)}
tessera_build_examples "$build_dir" quickstart fashion_mnist

# idle OpenMP threads sleep instead of spinning (unless you chose otherwise): the demo often runs beside other work,
# where spinning threads cost most of the speed (docs/performance-notes.md, "Under contention"); quiet, it costs nothing
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
echo "==> $build_dir/examples/quickstart"
"$build_dir/examples/quickstart"
echo
echo "==> $build_dir/examples/fashion_mnist ${1:-3} 2 $build_dir/simplecnn.ckpt --logdir $run_dir"
"$build_dir/examples/fashion_mnist" "${1:-3}" 2 "$build_dir/simplecnn.ckpt" --logdir "$run_dir"

# training curves: the loss per step (and its exponential moving average, as TensorBoard smooths) and the test accuracy per epoch
echo
if command -v gnuplot >/dev/null 2>&1; then
  gnuplot <<EOF
set terminal pngcairo size 1200,500 noenhanced
set output '$run_dir/curves.png'
set datafile separator ','
set key autotitle columnhead
set multiplot layout 1,2 title 'SimpleCNN on Fashion-MNIST ($run_dir)'
set xlabel 'step (batches of 64)'
set ylabel 'training loss'
set logscale y
ema = NaN
ema_of(x) = (ema = (ema != ema) ? x : 0.98 * ema + 0.02 * x)
plot '$run_dir/steps.csv' using 'step':'loss' with lines lc rgb '#b0c4de' title 'loss per step', \
     '' using 'step':(ema_of(column('loss'))) with lines lw 2 lc rgb '#1f4e99' title 'smoothed (EMA 0.98)'
unset logscale y
set xlabel 'epoch'
set ylabel 'test accuracy (%)'
set xtics 1
plot '$run_dir/epochs.csv' using 'epoch':(100 * column('test_accuracy')) with linespoints lw 2 pt 7 title 'test accuracy'
unset multiplot
EOF
  echo "training curves: $run_dir/curves.png"
else
  echo "gnuplot is not installed: no curves.png (Debian: apt-get install gnuplot-nox; scripts/deps.sh installs it)"
fi
echo "the run is in $run_dir (steps.csv, epochs.csv, the TensorBoard event file); to watch it:"
echo "  tensorboard --logdir $run_dir"
