#!/usr/bin/env bash
# conv2d + bias + ReLU on the SimpleCNN's layers (batch 64, 2 threads), tessera against PyTorch 1.13 (oneDNN) in
# one run: the Google Benchmark binary (medians of 5), then the same layers in PyTorch (best of 20).
#   bench/conv_report.sh [build-dir]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
bin="$build/bench/bench_conv"
[[ -x $bin ]] || { echo "no $bin: cmake --build $build --target bench_conv" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bin" --benchmark_filter=fused --benchmark_repetitions=5 --benchmark_report_aggregates_only=true --benchmark_format=csv 2>/dev/null |
  grep '_median' > "$out"
us() { awk -F, -v n="$1" '{gsub(/"/, "", $1); if (index($1, n) == 1) {print $3; exit}}' "$out"; }
t1=$(us "BM_conv_bias_relu_fused/n:64/c:1/k:32/hw:28/"); t2=$(us "BM_conv_bias_relu_fused/n:64/c:32/k:64/hw:14/")
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  printf 'tessera: 1->32 on 28x28 %.0f us, 32->64 on 14x14 %.0f us; PyTorch not installed (python3-torch)\n' "$t1" "$t2"
  exit 0
fi
read -r p1 p2 < <(/usr/bin/python3 - <<'PY'
import time, torch, torch.nn as nn
torch.set_num_threads(2); torch.manual_seed(0)
r = []
for (c, k, hw) in [(1, 32, 28), (32, 64, 14)]:
    conv = nn.Conv2d(c, k, 3, 1, 1); a = torch.randn(64, c, hw, hw); best = 1e9
    with torch.no_grad():
        for _ in range(20):
            t = time.perf_counter(); torch.relu(conv(a)); best = min(best, time.perf_counter() - t)
    r.append(best * 1e6)
print(f"{r[0]:.0f} {r[1]:.0f}")
PY
)
for row in "1 32 28 $t1 $p1" "32 64 14 $t2 $p2"; do
  read -r c k hw t p <<<"$row"
  awk -v c="$c" -v k="$k" -v hw="$hw" -v t="$t" -v p="$p" 'BEGIN {
    f = 2 * 64 * k * hw * hw * c * 9
    printf "conv2d 64x%dx%dx%d -> %d, 3x3 pad 1, + bias + ReLU: tessera %.0f us (%.0f GFLOP/s), PyTorch %.0f us (%.0f GFLOP/s): %.2fx PyTorch'"'"'s speed\n",
           c, hw, hw, k, t, f / t / 1e3, p, f / p / 1e3, p / t }'
done
