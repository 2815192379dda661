#!/usr/bin/env bash
# Compile time and peak compiler memory of an example (default: the SimpleCNN training example), compiled the way
# the project builds its examples: g++ -std=c++20 -O2 -march=native -fopenmp, one translation unit.
#   scripts/compile_stats.sh [source.cpp ...]
# Needs GNU time (/usr/bin/time, Debian package "time").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CXX=${CXX:-g++}
[[ -x /usr/bin/time ]] || { echo "compile_stats: /usr/bin/time (GNU time) is missing: apt-get install time" >&2; exit 1; }
sources=("$@")
[[ ${#sources[@]} -gt 0 ]] || sources=(examples/fashion_mnist.cpp)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-32s %10s %14s\n' "source" "seconds" "peak MiB"
for src in "${sources[@]}"; do
  /usr/bin/time -f '%e %M' -o "$out/t" "$CXX" -std=c++20 -O2 -march=native -fopenmp -Iinclude -c "$src" -o "$out/o.o"
  read -r secs kib < "$out/t"
  printf '%-32s %10.1f %14.0f\n' "$src" "$secs" "$(awk -v k="$kib" 'BEGIN{print k/1024}')"
done
