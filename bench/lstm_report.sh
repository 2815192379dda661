#!/usr/bin/env bash
# The LSTM benchmark of the recurrent issue in one run: T=100, B=64, I=128, H=256, 2 layers, 2 threads, forward and
# forward+backward, tessera (bench_lstm, medians of 3) then PyTorch 1.13 (best of 5 / 3), with the ratios.
#   bench/lstm_report.sh [build-dir]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
bin="$build/bench/bench_lstm"
[[ -x $bin ]] || { echo "no $bin: cmake --build $build --target bench_lstm" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bin" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true --benchmark_format=csv 2>/dev/null | grep '_median' > "$out"
ms() { awk -F, -v n="$1" '{gsub(/"/, "", $1); if (index($1, n) == 1) {print $3; exit}}' "$out"; }
f=$(ms "BM_lstm_forward/"); fb=$(ms "BM_lstm_forward_backward/")
echo "tessera: forward $f ms, forward+backward $fb ms"
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then echo "PyTorch not installed (python3-torch): no peer figure"; exit 0; fi
read -r pf pfb < <(/usr/bin/python3 - <<'PY'
import time, torch, torch.nn as nn
torch.set_num_threads(2); torch.manual_seed(0)
def best(f, reps):
    b = 1e9
    for _ in range(reps):
        t = time.perf_counter(); f(); b = min(b, time.perf_counter() - t)
    return b * 1e3
lstm = nn.LSTM(128, 256, 2); x = torch.randn(100, 64, 128)
with torch.no_grad(): tf = best(lambda: lstm(x), 5)
def fb():
    lstm.zero_grad(); out, _ = lstm(x); out.sum().backward()
print(f"{tf:.1f} {best(fb, 3):.1f}")
PY
)
echo "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'): forward $pf ms, forward+backward $pfb ms"
awk -v a="$f" -v b="$pf" -v c="$fb" -v d="$pfb" 'BEGIN{printf "tessera is %.2fx faster forward, %.2fx faster forward+backward\n", b/a, d/c}'
