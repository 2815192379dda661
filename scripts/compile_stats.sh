#!/usr/bin/env bash
# Compile cost of example programs: CPU seconds (user + sys) and peak compiler memory, each source compiled the way
# the project builds its examples: g++ -std=c++20 -O2 -march=native -fopenmp, one translation unit, no link.
# CPU seconds, not wall time, because the machine may be shared (wall time is printed too, for reference).
#   scripts/compile_stats.sh [source.cpp ...]       default: examples/*.cpp (CPU ones) and bench/compile/*.cpp
# Environment: CXX (g++); OPT (-O2; OPT=-O1 for the development build); EXTRA (more flags: -ftime-report, -include
#              a precompiled header); INC (include: the headers compiled against, e.g. another checkout's, for an
#              A/B); REPEAT (1: compile each source that many times, report the smallest CPU seconds and peak).
# Needs GNU time (/usr/bin/time, Debian package "time").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CXX=${CXX:-g++}
OPT=${OPT:--O2}
EXTRA=${EXTRA:-}
REPEAT=${REPEAT:-1}
INC=${INC:-include}
[[ -x /usr/bin/time ]] || { echo "compile_stats: /usr/bin/time (GNU time) is missing: apt-get install time" >&2; exit 1; }
sources=("$@")
if [[ ${#sources[@]} -eq 0 ]]; then
  sources=(examples/quickstart.cpp examples/fashion_mnist.cpp examples/fashion_mnist_lstm.cpp examples/fashion_mnist_resnet.cpp
           examples/char_lm.cpp examples/char_transformer.cpp bench/compile/*.cpp)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# $CXX $($CXX -dumpversion) -std=c++20 $OPT -march=native -fopenmp $EXTRA -c; $(date -u '+%Y-%m-%d %H:%M UTC'); load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-36s %9s %9s %9s %10s\n' "source" "user+sys" "user" "wall" "peak MiB"
for src in "${sources[@]}"; do
  best_cpu="" best_user="" best_wall="" best_kib=""
  for ((r = 0; r < REPEAT; ++r)); do
    # shellcheck disable=SC2086
    /usr/bin/time -f '%U %S %e %M' -o "$out/t" "$CXX" -std=c++20 $OPT -march=native -fopenmp $EXTRA -I"$INC" -c "$src" -o "$out/o.o"
    read -r user sys wall kib < <(tail -n 1 "$out/t")
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u + s}')
    if [[ -z $best_cpu ]] || awk -v a="$cpu" -v b="$best_cpu" 'BEGIN{exit !(a < b)}'; then
      best_cpu=$cpu best_user=$user best_wall=$wall
    fi
    if [[ -z $best_kib ]] || ((kib < best_kib)); then best_kib=$kib; fi
  done
  printf '%-36s %9.1f %9.1f %9.1f %10.0f\n' "$src" "$best_cpu" "$best_user" "$best_wall" "$(awk -v k="$best_kib" 'BEGIN{print k/1024}')"
done
