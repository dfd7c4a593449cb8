#!/usr/bin/env bash
# Builds gpu_vs_cpu.c for layer 0 of every golden model that is not
# hash-routed (the CPU object for x86-64-v3 without OpenMP, the GPU object
# with --device-code ptx) and runs it on COUNTS; prints "== CASE" before
# each case's lines. The caller sets MOE_CUDA_DRIVER (the PTX emulator).
#   gpu-vs-cpu-golden.sh MOE_COMPILE CC GOLDEN_DIR RUNTIME_LIB INCLUDE WORK COUNTS
set -euo pipefail
compile=$1 cc=$2 golden=$3 runtime=$4 include=$5 work=$6 counts=$7
src=$(cd "$(dirname "$0")" && pwd)
for dir in "$golden"/*/; do
  name=$(basename "$dir")
  [ "$name" = hash_t50 ] && continue
  w=$work/$name
  mkdir -p "$w"
  "$compile" --model "$dir" --layer 0 --prefix cpu --target-cpu x86-64-v3 \
    --no-openmp --embed-weights -o "$w/cpu.o" --header "$w/cpu_layers.h"
  "$compile" --model "$dir" --layer 0 --prefix gpu --target nvptx \
    --device-code ptx --embed-weights -o "$w/gpu.o" --header "$w/gpu_layers.h"
  # $cc may carry flags (the sanitizer build's): unquoted on purpose.
  $cc -std=c11 -Wall -Wextra -Werror -I"$w" -I"$include" \
    "$src/gpu_vs_cpu.c" "$w/cpu.o" "$w/gpu.o" "$runtime" -ldl -lm \
    -o "$w/check"
  echo "== $name"
  "$w/check" "$counts" 1e-4 1e-4
done
