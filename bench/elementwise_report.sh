#!/usr/bin/env bash
# Runs the elementwise benchmarks and the PyTorch peer in one go and prints the ratios the core issue asks for.
#   bench/elementwise_report.sh [build-dir]      (build with scripts/test.sh or cmake --build first)
# Needs python3-torch for the PyTorch figure (Debian's /usr/bin/python3); skipped with a note if absent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
bin="$build/bench/bench_elementwise"
[[ -x $bin ]] || { echo "no $bin: build the benchmarks first (cmake --build $build --target bench_elementwise)" >&2; exit 1; }
out=$(mktemp)
"$bin" --benchmark_filter='/n:(16777216|67108864)/threads:(1|2)' --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true --benchmark_format=csv 2>/dev/null | grep '_median' > "$out"
# median rows: "NAME_median",iterations,real_time(us),cpu_time,unit,bytes_per_second,...
ms() { awk -F, -v n="$1_median" '{gsub(/"/, "", $1); if ($1 == n) {print $3 / 1000; exit}}' "$out"; }
gbs() { awk -F, -v n="$1_median" '{gsub(/"/, "", $1); if ($1 == n) {print $6 / 1e9; exit}}' "$out"; }
for n in 16777216 67108864; do
  for t in 2 1; do
    k="n:$n/threads:$t/real_time"
    printf 'n=%-9s threads=%s  fused %7.2f ms  eager %8.2f ms  eigen %7.2f ms  | arith %6.2f ms %5.1f GB/s  triad %5.1f GB/s\n' \
      "$n" "$t" "$(ms "BM_chain_fused/$k")" "$(ms "BM_chain_eager/$k")" "$(ms "BM_chain_eigen/$k")" \
      "$(ms "BM_arith_fused/$k")" "$(gbs "BM_arith_fused/$k")" "$(gbs "BM_triad/$k")"
  done
done
k="n:16777216/threads:2/real_time"
fused=$(ms "BM_chain_fused/$k"); eigen=$(ms "BM_chain_eigen/$k"); arith=$(gbs "BM_arith_fused/$k"); triad=$(gbs "BM_triad/$k")
echo "16M floats, 2 threads: fused chain vs Eigen Tensor: $(awk -v a="$eigen" -v b="$fused" 'BEGIN{printf "%.2fx", a/b}') faster;" \
     "arithmetic chain at $(awk -v a="$arith" -v b="$triad" 'BEGIN{printf "%.0f%%", 100*a/b}') of the triad's bytes/s"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  torch_ms=$(/usr/bin/python3 - <<'PY'
import time, torch
torch.set_num_threads(2)
N = 1 << 24
x, y, z = torch.rand(N), torch.rand(N), torch.rand(N)
b = 1e9
for _ in range(5):
    t = time.perf_counter(); torch.tanh(x * y + 0.5 * z) * torch.sigmoid(x - z); b = min(b, time.perf_counter() - t)
print(f"{b*1e3:.1f}")
PY
)
  echo "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') eager, 2 threads, same chain: $torch_ms ms;" \
       "fused tessera is $(awk -v a="$torch_ms" -v b="$fused" 'BEGIN{printf "%.1fx", a/b}') faster"
else
  echo "PyTorch not installed (apt-get install python3-torch): no PyTorch figure"
fi
rm -f "$out"
