#!/usr/bin/env bash
# Everything that needs a GPU, in one call (for a machine lent with an NVIDIA GPU): builds the CUDA tests and
# benchmarks in build-gpu/ (Release, CUDA on; the CPU tests are not rebuilt), runs every CUDA test, then the CUDA
# benchmarks briefly. Writes its log (and the benchmarks' JSON) under $OUT when set, else build-gpu/gpu_check/.
#   GPU_ARCH=90      CUDA architecture (90: H100/H200)
#   TESSERA_SKIP_DEPS=1
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-build-gpu/gpu_check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1

TESSERA_SKIP_DEPS=${TESSERA_SKIP_DEPS:-1} source scripts/deps.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not available"
start=$SECONDS
jobs=$(nproc 2>/dev/null || echo 2)
args=(-S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTESSERA_ENABLE_CUDA=ON -DTESSERA_BUILD_TESTS=ON
      -DTESSERA_BUILD_BENCHMARKS=ON -DTESSERA_BUILD_EXAMPLES=OFF -DCMAKE_CUDA_ARCHITECTURES="${GPU_ARCH:-90}")
[[ -f build-gpu/CMakeCache.txt ]] || ! command -v ninja >/dev/null || args+=(-G Ninja)
cmake "${args[@]}" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }

mapfile -t tests < <(ls tests/cuda/test_*.cu | sed 's|.*/||; s|\.cu$||')
mapfile -t benches < <(ls bench/cuda/bench_*.cu | sed 's|.*/||; s|\.cu$||')
status=0
echo "==> build: ${tests[*]} ${benches[*]}"
cmake --build build-gpu -j "$jobs" --target "${tests[@]}" "${benches[@]}" -- -k 0 || status=1
echo "==> build took $((SECONDS - start)) s"

echo "==> CUDA tests"
(cd build-gpu && ctest -L cuda --output-on-failure --timeout 300) || status=1

echo "==> CUDA benchmarks (short)"
for b in "${benches[@]}"; do
  [[ -x build-gpu/bench/$b ]] || { echo "$b: not built"; status=1; continue; }
  build-gpu/bench/"$b" --benchmark_min_time=0.05 --benchmark_out="$out/$b.json" --benchmark_out_format=json || status=1
done
echo "==> gpu_check: $((SECONDS - start)) s, $([[ $status == 0 ]] && echo passed || echo FAILED)"
exit $status
