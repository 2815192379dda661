#!/usr/bin/env bash
# The CPU kernel paths chosen at run time, each one run: the bf16 GEMM (portable, avx2, avx512_bf16, amx_bf16) and the
# int8 GEMM (portable, avx2, avx2_u7, avx512_vnni, amx). The tests below run once with no cap (every path up to the best this
# CPU has) and once under each cap this CPU can honour (TESSERA_BF16_ISA, TESSERA_INT8_ISA), so that a machine with
# AVX512-BF16 or AMX — a Zen 4 or Sapphire Rapids guest, or the host of a lent GPU machine — verifies the paths that
# an AVX2-only machine can only compile. Prints which paths the CPU has, a line per run, and exits 1 on any failure.
#
#   scripts/isa_check.sh [--bench]
#
#   --bench           also run bench_gemm_bf16 and bench_gemm_s8 briefly (JSON into $BUILD_DIR/isa_check/)
#   BUILD_DIR=DIR     the build folder (default build-isa: Release, tests on; configured if it is not)
#   TESSERA_SKIP_DEPS=1 is the default: no Debian packages are checked (scripts/test.sh installs them)
#
# On the GPU machine, in the same call as the GPU check: `scripts/gpu_check.sh; scripts/isa_check.sh`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

bench=0
for arg in "$@"; do
  case $arg in
    --bench) bench=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "isa_check: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
build=${BUILD_DIR:-build-isa}
out=$build/isa_check
jobs=$(nproc 2>/dev/null || echo 2)
tests=(test_gemm_bf16 test_conv_bf16 test_autocast test_gemm_s8 test_gemm_s8_u7 test_gemm_blocking test_quant test_quant_model test_quant_reduce_range test_qat)
benches=(bench_gemm_bf16 bench_gemm_s8)

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2)
has() { [[ " $flags " == *" $1 "* ]]; }
bf16_caps=(portable) int8_caps=(portable)
has avx2 && { bf16_caps+=(avx2); int8_caps+=(avx2 avx2_u7); }
has avx512_bf16 && bf16_caps+=(avx512_bf16)
has amx_bf16 && has amx_tile && bf16_caps+=(amx_bf16)
has avx512_vnni && int8_caps+=(avx512_vnni)
has amx_int8 && has amx_tile && int8_caps+=(amx)

echo "isa_check: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs"
echo "isa_check: bf16 paths this CPU can run: ${bf16_caps[*]}; int8 paths: ${int8_caps[*]}"

if [[ ! -f $build/CMakeCache.txt ]]; then
  gen=(); command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DTESSERA_BUILD_TESTS=ON \
    -DTESSERA_BUILD_BENCHMARKS=$([[ $bench == 1 ]] && echo ON || echo OFF) -DTESSERA_BUILD_EXAMPLES=OFF \
    -DTESSERA_ENABLE_CUDA=OFF > /dev/null || { echo "isa_check: configure failed" >&2; exit 1; }
fi
targets=("${tests[@]}")
[[ $bench == 1 ]] && targets+=("${benches[@]}")
cmake --build "$build" -j "$jobs" --target "${targets[@]}" > /dev/null || { echo "isa_check: build failed" >&2; exit 1; }
mkdir -p "$out/log"

status=0
# run NAME ENV...: one test binary under the given environment; a line with its verdict
run() {
  local t=$1 label log
  shift
  label=${*:-no cap}
  log=$out/log/$t${1:+.${1//=/-}}.log
  if env "$@" "$build/tests/$t" > "$log" 2>&1; then
    printf '  %-20s %-32s passed%s\n' "$t" "$label" "$(grep -m1 -o 'SKIPPED.*' "$log" | sed 's/^/  (/; s/$/)/')"
  else
    printf '  %-20s %-32s FAILED (%s)\n' "$t" "$label" "$log"
    status=1
  fi
}
for t in "${tests[@]}"; do run "$t"; done
for c in "${bf16_caps[@]}"; do
  for t in test_gemm_bf16 test_conv_bf16 test_autocast; do run "$t" "TESSERA_BF16_ISA=$c"; done
done
for c in "${int8_caps[@]}"; do
  for t in test_gemm_s8 test_quant test_quant_model test_quant_reduce_range; do run "$t" "TESSERA_INT8_ISA=$c"; done
done
if [[ $bench == 1 ]]; then
  for b in "${benches[@]}"; do
    "$build/bench/$b" --benchmark_min_time=0.1 "--benchmark_out=$out/$b.json" --benchmark_out_format=json \
      > "$out/log/$b.log" 2>&1 && echo "  $b: $out/$b.json" || { echo "  $b FAILED ($out/log/$b.log)"; status=1; }
  done
fi
echo "isa_check: $([[ $status == 0 ]] && echo passed || echo FAILED)"
exit $status
