#!/usr/bin/env bash
# Installs the Debian packages tessera's build needs, only those missing (sourced or run by test.sh and demo.sh).
# Set TESSERA_SKIP_DEPS=1 to skip this step.
set -euo pipefail

# libopenblas-dev: the GEMM benchmark's peer (linked by bench/ only)
# libopenmpi-dev, openmpi-bin: tessera::dist (MPI) and mpirun, which runs the distributed tests and examples
# libpng-dev: PNG images in TensorBoard summaries (tessera/monitor); libdlpack-dev: tessera/interop/dlpack.hpp
# python3-protobuf: the independent reader of TensorBoard event files in the tests; python3-torch, python3-numpy:
#   the PyTorch round trips of safetensors, .npy and DLPack (tests/interop), skipped visibly when absent
# gnuplot-nox: the training-curve plot that scripts/demo.sh draws; time: scripts/compile_stats.sh (GNU time)
TESSERA_PACKAGES=(cmake g++ ninja-build libeigen3-dev catch2 libbenchmark-dev zlib1g-dev libopenblas-dev libopenmpi-dev openmpi-bin
                  libpng-dev libdlpack-dev python3-protobuf python3-torch python3-numpy gnuplot-nox time)
# scripts/check.sh and scripts/fuzz.sh add these: clang++ with its sanitizer/libFuzzer runtimes and OpenMP
TESSERA_CHECK_PACKAGES=(clang libclang-rt-14-dev libomp-dev)

tessera_install_deps() {
  if [[ "${TESSERA_SKIP_DEPS:-0}" == 1 ]]; then
    echo "deps: TESSERA_SKIP_DEPS=1, not checking packages"
    return 0
  fi
  if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps: no dpkg (not Debian?); install these yourself if missing: ${TESSERA_PACKAGES[*]}" >&2
    return 0
  fi
  local missing=() p
  for p in "${TESSERA_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "deps: all packages present (${TESSERA_PACKAGES[*]})"
    return 0
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "deps: missing packages (${missing[*]}) and not root, no sudo: install them and rerun" >&2
      return 1
    fi
  fi
  echo "deps: installing ${missing[*]}"
  # wait for another apt/dpkg (up to 10 minutes) rather than fail on its lock
  local lock=(-o DPkg::Lock::Timeout=600)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -q --no-install-recommends "${missing[@]}"
}

# tessera_build_examples BUILD_DIR TARGET...: configures BUILD_DIR in Release with the examples (Ninja when
# available, unless BUILD_DIR was configured with another generator) and builds TARGET... (demo.sh, char_lm.sh).
tessera_build_examples() {
  local build_dir=$1
  shift
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  local configure_args=(-S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DTESSERA_BUILD_EXAMPLES=ON)
  if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
    configure_args+=(-G Ninja)
  fi
  cmake "${configure_args[@]}"
  cmake --build "$build_dir" -j "$jobs" --target "$@"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  tessera_install_deps
fi
