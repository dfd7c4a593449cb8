#!/usr/bin/env bash
# Runs moe-bench and its baselines in one go and prints the side-by-side
# table (docs/performance.md explains every column):
#
#   bench/run.sh [BUILD_DIR] [--threads N] [--tokens LIST] [--preset NAME]
#
# Baselines: stream_read (read bandwidth), onednn_gemm (needs libdnnl-dev),
# pytorch_moe.py (needs Debian's python3-torch in /usr/bin/python3). Missing
# ones are skipped with a note. Raw JSON lines go to BUILD_DIR/bench.jsonl;
# the previous run's move to BUILD_DIR/bench.prev.jsonl, and the report
# prints its compile and layer times beside this run's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
[[ $# -gt 0 ]] && shift
threads=2 tokens=1,16,128,1024 preset=all
while [[ $# -gt 0 ]]; do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
out=$build/bench.jsonl
prev=$build/bench.prev.jsonl
if [[ -s $out ]]; then mv "$out" "$prev"; fi
: > "$out"
# The fair setting for the BLAS-backed baselines on this machine: no
# OPENBLAS_* overrides (this environment sets OPENBLAS_CORETYPE=Haswell and a
# tiny OPENBLAS_L2_SIZE, which halve OpenBLAS), passive OpenMP waiting.
for v in $(env | sed -n 's/^\(OPENBLAS_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=$threads

cc=$(command -v clang-22 || command -v cc)
"$cc" -O3 -march=native -pthread "$root/bench/stream_read.c" -o "$build/stream_read"
# The read bandwidth of this shared host moves by up to half within minutes
# (docs/performance.md), so it is measured before and after every preset's
# moe-bench lines; report.py divides a line's weight GB/s by the mean of
# the two measurements around it.
read_bandwidth() { "$build/stream_read" --threads "$threads" --json | tee -a "$out"; }
# The baselines of a preset run right after its moe-bench lines, so that a
# ratio compares figures of the same minutes: this host's speed moved by 2x
# between the start and the end of one run (docs/performance.md, tenth run).
onednn=
if [[ -e /usr/include/oneapi/dnnl/dnnl.hpp ]]; then
  cxx=$(command -v clang++-22 || command -v c++)
  "$cxx" -O2 -std=c++17 "$root/bench/onednn_gemm.cpp" -ldnnl -o "$build/onednn_gemm"
  onednn=$build/onednn_gemm
else
  echo "run.sh: libdnnl-dev not installed, no oneDNN baseline" >&2
fi
torch=
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  torch=1
  # Debian's torch calls the system BLAS; the reference libblas runs its
  # GEMMs at a few GFLOP/s. libopenblas0-pthread makes it OpenBLAS.
  if ! readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 | grep -q openblas; then
    echo "run.sh: warning: libblas.so.3 is not OpenBLAS; install" \
      "libopenblas0-pthread for a fair PyTorch baseline" >&2
  fi
else
  echo "run.sh: python3-torch not installed, no PyTorch baseline" >&2
fi
presets=$preset
[[ $preset == all ]] && presets="mixtral-small olmoe-like deepseek-like switch-like"
read_bandwidth
for dtype in f32 bf16; do
  for p in $presets; do
    "$build/bin/moe-bench" --preset "$p" --tokens "$tokens" \
      --dtype "$dtype" --threads "$threads" --json | tee -a "$out"
    if [[ -n $onednn ]]; then
      "$onednn" --preset "$p" --tokens "$tokens" --dtype "$dtype" --json |
        tee -a "$out"
    fi
    # The PyTorch block runs f32 weights only.
    if [[ -n $torch && $dtype == f32 ]]; then
      /usr/bin/python3 "$root/bench/pytorch_moe.py" --preset "$p" \
        --tokens "$tokens" --threads "$threads" --json | tee -a "$out"
    fi
    read_bandwidth
  done
done

echo
if [[ -s $prev ]]; then
  python3 "$root/bench/report.py" "$out" "$prev"
else
  python3 "$root/bench/report.py" "$out"
fi
