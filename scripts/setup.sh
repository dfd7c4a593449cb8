#!/usr/bin/env bash
# Installs the Debian packages moe-mlir needs (with --bench, also those of
# the benchmark baselines), only those that are missing,
# so a second run costs a few dpkg queries.
set -euo pipefail

packages=(
  cmake ninja-build ccache python3
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools clang-22 lld-22
  libomp-22-dev libgtest-dev
  # clang's sanitizer and libFuzzer runtimes: test/aot/asan.test, make
  # test-sanitizers, scripts/fuzz.sh, the TSan command of docs/embedding.md
  libclang-rt-22-dev
)
# `setup.sh --bench` adds the baselines of bench/run.sh: oneDNN, PyTorch
# (Debian's python3-torch) and OpenBLAS as the system BLAS it calls.
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(libdnnl-dev python3-torch libopenblas0-pthread)
fi
# (`setup.sh --fuzz`, which earlier versions needed for the sanitizer
# runtimes, is still accepted and installs the same as a plain run.)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "setup: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || {
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
