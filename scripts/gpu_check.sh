#!/usr/bin/env bash
# Every CUDA path of tessera in one run, for a machine with an NVIDIA GPU: configures build-gpu/ (Release, CUDA,
# tests, benchmarks and examples on), builds only the CUDA targets (tests/cuda/test_*.cu, bench/cuda/bench_*.cu and
# the examples/*.cu programs), runs every CUDA test (ctest -L cuda), each CUDA benchmark briefly (JSON out) and each
# CUDA example for one short epoch, then prints one summary (every step with its status and seconds, the GPU, the
# total and the verdict) and writes it to summary.md, for docs/performance.md's GPU section.
#
# Budget: 8 minutes (480 s) in all on the lent GPU machine (16 cores). Each step has its own limit (configure 120 s,
# build 300 s, ctest 300 s with 120 s a test, 60 s a benchmark, 90 s an example) and none runs past the budget: a
# step the budget no longer allows is reported as not run. On a machine with a GPU, a test or example that skips (exit 77: no usable
# device) counts as a failure: the run is there to prove the CUDA paths work.
#
#   scripts/gpu_check.sh [--dry-run] [--force] [--help]
#
#   --dry-run   print what a real run would do (configure command, targets, the test, benchmark and example
#               command lines, the data the examples would use) and exit 0; nothing is built or run. This is also
#               what happens when `nvidia-smi -L` lists no GPU.
#   --force     build and run even though no GPU is listed (CUDA steps then skip; they do not fail the run)
#   GPU_ARCH=90             CUDA architecture (90: H100/H200)
#   TESSERA_SKIP_DEPS=1     the default: do not check Debian packages (0: scripts/deps.sh installs the missing ones)
#   GPU_CHECK_BUDGET=480    seconds for the whole run
#   OUT=DIR                 where summary.md, gpu_check.log, log/ and the benchmarks' JSON go (else build-gpu/gpu_check)
#
# The examples read Fashion-MNIST ($TESSERA_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist): they train
# one epoch on its first 6400 training and 1000 test images, copied to OUT/fashion-mnist. When it is not there they
# train on synthetic files of the same format (random images and labels: the CUDA code runs, the accuracy means
# nothing), and the summary says so. Nothing is downloaded.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

dry=0 force=0
for arg in "$@"; do
  case $arg in
    --dry-run|-n) dry=1 ;;
    --force) force=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

build="build-gpu"
out=${OUT:-$build/gpu_check}
arch=${GPU_ARCH:-90}
budget=${GPU_CHECK_BUDGET:-480}
skip_deps=${TESSERA_SKIP_DEPS:-1}
jobs=$(nproc 2>/dev/null || echo 2)
limit_configure=120 limit_build=300 limit_ctest=300 limit_test=120 limit_bench=60 limit_example=90
fmnist_train=6400 fmnist_test=1000
t_start=$SECONDS

# ---- is there a GPU -------------------------------------------------------------------------------------------------
gpu_list=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_list=$(nvidia-smi -L 2>/dev/null | grep '^GPU' || true)
  no_gpu_why="nvidia-smi -L lists no GPU"
else
  no_gpu_why="nvidia-smi not found"
fi
have_gpu=0
[[ -n $gpu_list ]] && have_gpu=1
dry_why="--dry-run"
if [[ $dry == 0 && $have_gpu == 0 && $force == 0 ]]; then
  dry=1 dry_why="no GPU ($no_gpu_why); --force builds and runs anyway"
fi

# ---- what there is to build and run: discovered from the source tree as the CMakeLists.txt files do ----------------
stem() { local f=${1##*/}; echo "${f%.*}"; }
tests=() benches=() examples=() example_srcs=()
for f in tests/cuda/test_*.cu; do [[ -f $f ]] && tests+=("$(stem "$f")"); done
for f in bench/cuda/bench_*.cu; do [[ -f $f ]] && benches+=("$(stem "$f")"); done
for f in examples/*.cu; do  # examples/CMakeLists.txt: NAME.cu is target NAME_cuda when NAME.cpp exists
  [[ -f $f ]] || continue
  n=$(stem "$f")
  [[ -f examples/$n.cpp ]] && n=${n}_cuda
  examples+=("$n") example_srcs+=("$f")
done
targets=("${tests[@]}" "${benches[@]}" "${examples[@]}")

# An example reads Fashion-MNIST when it, or an examples/ header it includes, calls load_fashion_mnist.
reads_fmnist() {
  local src=$1 h
  grep -q load_fashion_mnist "$src" && return 0
  while read -r h; do
    [[ -f examples/$h ]] && grep -q load_fashion_mnist "examples/$h" && return 0
  done < <(sed -nE 's/^#include "([^"]+)".*/\1/p' "$src")
  return 1
}
# The arguments of a short run: one epoch (and the checkpoint under OUT, not in the repository).
example_args() {
  case $1 in
    fashion_mnist_cuda) echo "1 2 $out/simplecnn_cuda.ckpt" ;;
    amp_simplecnn_cuda) echo "1 2" ;;  # one epoch in fp32 and one under autocast (bf16): two trainings, 2 host threads
    *) if reads_fmnist "$2"; then echo 1; fi ;;
  esac
}

fmnist_src=${TESSERA_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
fmnist_dir=$out/fashion-mnist
idx_names=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# fmnist_file NAME: the file NAME in $fmnist_src as tessera's reader finds it (plain or .gz, '-' or '.' before idx)
fmnist_file() {
  local stem=${1%-idx*} kind=${1##*-idx} n e
  for n in "$stem-idx$kind" "$stem.idx$kind"; do
    for e in "" .gz; do [[ -f $fmnist_src/$n$e ]] && { echo "$fmnist_src/$n$e"; return 0; }; done
  done
  return 1
}
have_fmnist=1
for n in "${idx_names[@]}"; do fmnist_file "$n" >/dev/null || have_fmnist=0; done

# ---- the commands: the dry run prints these strings, the real run executes the same strings --------------------------
q() { printf '%q ' "$@" | sed 's/ $//'; }
configure_args=(-S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTESSERA_ENABLE_CUDA=ON -DTESSERA_BUILD_TESTS=ON
                -DTESSERA_BUILD_BENCHMARKS=ON -DTESSERA_BUILD_EXAMPLES=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch"
                "-DTESSERA_TEST_TIMEOUT=$limit_test")
generator=$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null)
if [[ -z $generator ]]; then
  generator="Unix Makefiles"
  command -v ninja >/dev/null 2>&1 && { configure_args+=(-G Ninja); generator=Ninja; }
fi
keep_going=(-- -k)
[[ $generator == Ninja* ]] && keep_going=(-- -k 0)
configure_cmd=$(q cmake "${configure_args[@]}")
build_cmd_for() { q cmake --build "$build" -j "$jobs" --target "$@" "${keep_going[@]}"; }
ctest_cmd=$(q ctest --test-dir "$build" -L cuda --output-on-failure)
bench_cmd() {
  q "$build/bench/$1" --benchmark_min_time=0.05 "--benchmark_out=$out/$1.json" --benchmark_out_format=json
}
example_cmd() {
  local args
  read -ra args <<<"$(example_args "$1" "$2")"
  if reads_fmnist "$2"; then q env "TESSERA_FASHION_MNIST_DIR=$fmnist_dir" "$build/examples/$1" "${args[@]}"
  else q "$build/examples/$1" "${args[@]}"; fi
}
if [[ $have_fmnist == 1 ]]; then
  data_plan="Fashion-MNIST from $fmnist_src: its first $fmnist_train training and $fmnist_test test images, copied to $fmnist_dir"
else
  data_plan="Fashion-MNIST not found in $fmnist_src: synthetic files of its format in $fmnist_dir ($fmnist_train training and $fmnist_test test images, random pixels and labels; the CUDA code runs, the accuracy means nothing)"
fi

# ---- dry run ----------------------------------------------------------------------------------------------------------
if [[ $dry == 1 ]]; then
  echo "gpu_check: DRY RUN ($dry_why). Nothing is built or run; a real run would do this, in at most $budget s:"
  echo
  if [[ $skip_deps == 1 ]]; then echo "0. packages: not checked (TESSERA_SKIP_DEPS=1)"
  else echo "0. packages: scripts/deps.sh installs the missing ones (TESSERA_SKIP_DEPS=0)"; fi
  echo "1. configure ($build/, at most $limit_configure s):"
  echo "     $configure_cmd"
  echo "2. build ${#targets[@]} targets, only these (at most $limit_build s; -j is nproc: $jobs here, 16 on the GPU machine):"
  echo "     $(build_cmd_for "${targets[@]}")"
  echo "     tests      (tests/cuda/test_*.cu, ${#tests[@]}):  ${tests[*]}"
  echo "     benchmarks (bench/cuda/bench_*.cu, ${#benches[@]}): ${benches[*]}"
  echo "     examples   (examples/*.cu, ${#examples[@]}):     ${examples[*]}"
  echo "     (a target that configure leaves out is reported, not built: test_cuda_conv needs cuDNN,"
  echo "     test_dist_nccl needs NCCL, the benchmarks need Google Benchmark)"
  echo "3. the CUDA tests, one ctest run (at most $limit_ctest s, $limit_test s a test; exit 77, skipped, is a failure"
  echo "   on a GPU machine):"
  echo "     $ctest_cmd"
  echo "     runs: ${tests[*]}"
  echo "4. the CUDA benchmarks, briefly (at most $limit_bench s each), JSON in $out/:"
  for b in "${benches[@]}"; do echo "     $(bench_cmd "$b")"; done
  echo "5. the CUDA examples, one short epoch each (at most $limit_example s each):"
  for i in "${!examples[@]}"; do echo "     $(example_cmd "${examples[$i]}" "${example_srcs[$i]}")"; done
  echo "   data: $data_plan"
  echo "6. the summary: every step with its status and seconds, the GPU (nvidia-smi), the total and the verdict,"
  echo "   printed and written to $out/summary.md (logs: $out/gpu_check.log and $out/log/)"
  exit 0
fi

# ---- the real run -----------------------------------------------------------------------------------------------------
mkdir -p "$out/log"
rm -f "$out"/log/*.log "$out/summary.md"
for b in "${benches[@]}"; do rm -f "$out/$b.json"; done
exec > >(tee "$out/gpu_check.log") 2>&1
if [[ $have_gpu == 0 ]]; then
  echo "gpu_check: --force without a GPU ($no_gpu_why): building and running anyway; CUDA steps will skip"
fi
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
set +e  # (deps.sh sets -e: here a failed step is recorded, not fatal)
TESSERA_SKIP_DEPS=$skip_deps tessera_install_deps || echo "gpu_check: some packages could not be installed; going on"

rows=() failed=() not_run=0 synthetic=0
# row STEP STATUS SECONDS COUNTS: one line of the summary; COUNTS=1 when it fails the run
row() {
  rows+=("| $1 | $2 | $3 |")
  [[ $4 == 1 ]] && failed+=("$1")
  return 0
}
# run_step NAME LIMIT CMD: runs the command line CMD with its output in $out/log/NAME.log, for at most LIMIT s and
# never past the budget. Sets rc (124: its limit; -1: not started, the budget is spent), secs and log.
run_step() {
  local name=$1 limit=$2 cmd=$3 left t0=$SECONDS
  log=$out/log/$name.log secs=0
  left=$((budget - (SECONDS - t_start)))
  if ((left < 10)); then
    rc=-1
    echo "==> $name: not run, the $budget s budget is spent"
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "==> $name (at most $limit s): $cmd"
  timeout -k 10 "$limit" bash -c "$cmd" >"$log" 2>&1
  rc=$? secs=$((SECONDS - t0))
  [[ $rc == 0 ]] || { echo "    exit $rc after $secs s; the end of $log:"; tail -15 "$log" | sed 's/^/    | /'; }
  return 0
}
# failed_status: the status of a failed step from rc, log and the step's limit
failed_status() {
  if [[ $rc == -1 ]]; then echo "FAILED (not run: the $budget s budget was spent)"
  elif [[ $rc == 124 || $rc == 137 ]]; then echo "FAILED (timed out after $secs s; log/${log##*/})"
  else echo "FAILED (exit $rc; log/${log##*/})"; fi
}

# configure
run_step configure "$limit_configure" "$configure_cmd"
if [[ $rc != 0 ]]; then
  row configure "$(failed_status)" "$secs" 1
else
  row configure passed "$secs" 0
fi
configured=$rc
cuda_line=$(grep -m1 'tessera: CUDA enabled' "$out/log/configure.log" 2>/dev/null | sed 's/^-- //')

# which targets configure made (a missing one: cuDNN, NCCL or Google Benchmark not found)
cmake --build "$build" --target help >"$out/log/targets.txt" 2>/dev/null
have_target() { grep -qE "(^|[ ./])$1(:| |$)" "$out/log/targets.txt"; }
why_missing() {
  case $1 in
    test_cuda_conv) echo "cuDNN not found" ;;
    test_dist_nccl) echo "NCCL not found" ;;
    bench_*) echo "Google Benchmark not found" ;;
    *) echo "see log/configure.log" ;;
  esac
}
declare -A missing=()
to_build=()
for t in "${targets[@]}"; do
  if [[ $configured == 0 ]] && have_target "$t"; then to_build+=("$t"); else missing[$t]=1; fi
done

# build
declare -A build_failed=()
if [[ ${#to_build[@]} -gt 0 ]]; then
  run_step build "$limit_build" "$(build_cmd_for "${to_build[@]}")"
  if [[ $rc == 0 ]]; then
    row "build (${#to_build[@]} targets)" passed "$secs" 0
  else
    not_built=()
    for t in "${to_build[@]}"; do
      if grep -qE "CMakeFiles/$t\.dir/|^FAILED: ([^ ]*/)?$t( |$)" "$log" || ! compgen -G "$build/*/$t" >/dev/null; then
        build_failed[$t]=1 not_built+=("$t")
      fi
    done
    row "build (${#to_build[@]} targets)" "$(failed_status | sed "s/)\$/; not built: ${not_built[*]})/")" "$secs" 1
  fi
elif [[ $configured == 0 ]]; then
  row build "FAILED (no CUDA target configured)" 0 1
fi
# A target configure left out or the build failed: its step is not run (a failure on a GPU machine).
unrunnable() {
  if [[ -n ${missing[$1]:-} ]]; then
    if [[ $configured == -1 ]]; then echo "not run: configure did not run"
    elif [[ $configured != 0 ]]; then echo "not run: configure failed"; else echo "not run: not configured ($(why_missing "$1"))"; fi
  elif [[ -n ${build_failed[$1]:-} ]]; then echo "not run: build failed"
  else return 1; fi
}
skip_counts=$have_gpu  # a skip (exit 77, no usable device) fails the run only where there is a GPU

# tests: one ctest run; a line per test, from its output, in the order of tests/cuda/
declare -A test_result=() test_secs=()
ctest_rc=-2
if ((${#to_build[@]} > 0)) && [[ $configured == 0 ]]; then
  run_step ctest "$limit_ctest" "$ctest_cmd"
  ctest_rc=$rc ctest_secs=$secs
  while IFS='|' read -r name result tsecs; do
    [[ -n $name ]] || continue
    test_result[$name]=$result test_secs[$name]=$tsecs
    [[ " ${tests[*]} " == *" $name "* ]] || tests+=("$name")  # (a cuda-labelled test of another name)
  done < <(tr '\r' '\n' <"$out/log/ctest.log" |
           sed -nE 's/^ *[0-9]+\/[0-9]+ +Test +#[0-9]+: +([^ ]+) \.* *(\*\*\*)?(.*[^ ]) +([0-9.]+) sec.*$/\1|\3|\4/p')
  if [[ $ctest_rc != 0 && ${#test_result[@]} == 0 ]]; then
    row "ctest -L cuda" "$(rc=$ctest_rc secs=$ctest_secs failed_status)" "$ctest_secs" 1
  fi
fi
for t in "${tests[@]}"; do
  result=${test_result[$t]:-} tsecs=${test_secs[$t]:-0}
  if why=$(unrunnable "$t"); then row "test $t" "FAILED ($why)" "$tsecs" 1; continue; fi
  case $result in
    Passed) row "test $t" passed "$tsecs" 0 ;;
    Skipped)
      if [[ $skip_counts == 1 ]]; then row "test $t" "FAILED (skipped, exit 77, on a GPU machine; log/ctest.log)" "$tsecs" 1
      else row "test $t" "skipped (exit 77: no GPU)" "$tsecs" 0; fi ;;
    Failed) row "test $t" "FAILED (log/ctest.log)" "$tsecs" 1 ;;
    ?*) row "test $t" "FAILED ($result; log/ctest.log)" "$tsecs" 1 ;;
    *)
      if [[ $ctest_rc == -1 ]]; then row "test $t" "FAILED (not run: the $budget s budget was spent)" 0 1
      else row "test $t" "FAILED (not run: ctest stopped or did not list it; log/ctest.log)" 0 1; fi ;;
  esac
done

# benchmarks
for b in "${benches[@]}"; do
  if why=$(unrunnable "$b"); then row "bench $b" "FAILED ($why)" 0 1; continue; fi
  run_step "$b" "$limit_bench" "$(bench_cmd "$b")"
  if [[ $rc != 0 ]]; then row "bench $b" "$(failed_status)" "$secs" 1
  elif [[ ! -s $out/$b.json ]]; then row "bench $b" "FAILED (no $b.json written; log/$b.log)" "$secs" 1
  elif grep -q '"error_occurred": *true' "$out/$b.json" 2>/dev/null; then
    if [[ $skip_counts == 1 ]]; then row "bench $b" "FAILED (a benchmark reported an error; log/$b.log)" "$secs" 1
    else row "bench $b" "skipped (no GPU: every benchmark reports it)" "$secs" 0; fi
  else row "bench $b" "passed ($b.json)" "$secs" 0; fi
done

# examples: the data first (only when an example that reads it is to run)
# idx_write DST N [SRC]: an IDX file of N items (28x28 images when DST names images, else labels): the first N items
# of the IDX file SRC (plain or gzip), or random ones without SRC
label_map=$(for b in {0..255}; do printf '\\%03o' $((b % 10)); done)
# shellcheck disable=SC2059  # the format is the bytes
be32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"; }
idx_write() {
  local dst=$1 n=$2 src=${3:-} dims=1 row_bytes=1
  [[ $dst == *images* ]] && dims=3 row_bytes=784
  {
    printf '\x00\x00\x08'
    # shellcheck disable=SC2059  # the format is the byte
    printf "$(printf '\\x%02x' "$dims")"
    be32 "$n"
    if ((dims == 3)); then be32 28; be32 28; fi
    if [[ -n $src ]]; then gzip -cdf "$src" | tail -c +$((5 + 4 * dims)) | head -c $((n * row_bytes))
    elif ((dims == 3)); then head -c $((n * row_bytes)) /dev/urandom
    else head -c "$n" /dev/urandom | tr '\000-\377' "$label_map"; fi
  } >"$dst"
  [[ $(stat -c %s "$dst") == $((4 + 4 * dims + n * row_bytes)) ]]
}
data_ready=-1
prepare_data() {
  mkdir -p "$fmnist_dir"
  local name n src
  for name in "${idx_names[@]}"; do
    n=$fmnist_train
    [[ $name == t10k-* ]] && n=$fmnist_test
    src=""
    [[ $have_fmnist == 1 ]] && src=$(fmnist_file "$name")
    idx_write "$fmnist_dir/$name" "$n" "$src" || { echo "gpu_check: could not write $fmnist_dir/$name"; return 1; }
  done
  [[ $have_fmnist == 1 ]] || synthetic=1
  echo "==> data: $data_plan"
}
for i in "${!examples[@]}"; do
  e=${examples[$i]} src=${example_srcs[$i]}
  if why=$(unrunnable "$e"); then row "example $e" "FAILED ($why)" 0 1; continue; fi
  data_note=""
  if reads_fmnist "$src"; then
    if [[ $data_ready == -1 ]]; then
      data_ready=0
      if prepare_data; then data_ready=1; fi
    fi
    if [[ $data_ready == 0 && $have_fmnist == 0 ]]; then
      row "example $e" "not run: dataset missing (and the synthetic files could not be written)" 0 0
      not_run=$((not_run + 1))
      continue
    elif [[ $data_ready == 0 ]]; then
      row "example $e" "FAILED (not run: the Fashion-MNIST subset could not be copied to $fmnist_dir)" 0 1
      continue
    fi
    if [[ $have_fmnist == 1 ]]; then data_note="Fashion-MNIST, $fmnist_train images"
    else data_note="synthetic data, Fashion-MNIST missing; accuracy means nothing"; fi
  fi
  run_step "$e" "$limit_example" "$(example_cmd "$e" "$src")"
  epoch=$(tr '\r' '\n' <"$log" | grep -m1 '^epoch 1:' || true)
  result=$(grep -m1 '^result ' "$log" 2>/dev/null || true)
  if [[ -n $result && $result == *bf16_accuracy=* ]]; then  # amp_simplecnn: fp32 and bf16 side by side
    kv() { sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$result"; }
    data_note+="${data_note:+: }accuracy fp32 $(kv fp32_accuracy)% / bf16 $(kv bf16_accuracy)%, epoch fp32 $(kv fp32_epoch_s) s / bf16 $(kv bf16_epoch_s) s"
  elif [[ -n $epoch ]]; then
    train_s=$(sed -nE 's/.*train ([0-9.]+) s.*/\1/p' <<<"$epoch")
    acc=$(sed -nE 's/.*accuracy ([0-9.]+)%.*/\1/p' <<<"$epoch")
    data_note+="${data_note:+: }1 epoch, train ${train_s:-?} s, test accuracy ${acc:-?}%"
  fi
  if [[ $rc == 0 ]]; then row "example $e" "passed${data_note:+ ($data_note)}" "$secs" 0
  elif [[ $rc == 77 && $skip_counts == 0 ]]; then row "example $e" "skipped (exit 77: no GPU)" "$secs" 0
  elif [[ $rc == 77 ]]; then row "example $e" "FAILED (skipped, exit 77, on a GPU machine; log/$e.log)" "$secs" 1
  else row "example $e" "$(failed_status)" "$secs" 1; fi
done

# ---- the summary --------------------------------------------------------------------------------------------------------
total=$((SECONDS - t_start))
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | paste -sd ';' -)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && commit+=" plus uncommitted changes"
if [[ ${#failed[@]} -gt 0 ]]; then
  verdict="**FAILED**: ${#failed[@]} step(s) failed ($(printf '%s, ' "${failed[@]:0:5}" | sed 's/, $//')"
  [[ ${#failed[@]} -gt 5 ]] && verdict+=", ..."
  verdict+=")"
  status=1
elif [[ $have_gpu == 0 ]]; then
  verdict="**built, not verified**: no GPU ($no_gpu_why), the CUDA steps skipped"
  status=0
else
  verdict="**passed**: every CUDA test, benchmark and example ran on the GPU"
  [[ $not_run -gt 0 ]] && verdict+=" but $not_run example(s) (not run: dataset missing)"
  [[ $synthetic == 1 ]] && verdict+=" (the examples on synthetic data: Fashion-MNIST missing)"
  status=0
fi
{
  echo "### GPU check (scripts/gpu_check.sh)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit; GPU: ${gpu:-none ($no_gpu_why)}; ${cuda_line:-CUDA: see log/configure.log}; build -j $jobs."
  echo
  echo "| step | status | seconds |"
  echo "| --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Total: $total s (budget $budget s). Verdict: $verdict."
} >"$out/summary.md"
echo
cat "$out/summary.md"
echo
echo "gpu_check: summary in $out/summary.md, logs in $out/log/"
exit $status
