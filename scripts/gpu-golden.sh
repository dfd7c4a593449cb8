#!/usr/bin/env bash
# Builds every golden case for the GPU and, where a CUDA device is present,
# runs it: moe-compile --target nvptx --embed-weights, linked with
# test/gpu/Inputs/golden_check_cuda.c and libmoe_cuda_runtime.a.
#
#   scripts/gpu-golden.sh BUILD_DIR OUT_DIR [--chip sm_90] [--dtype bf16]
#                         [--mma] [--device-code ptx] [--no-run]
#
# --dtype bf16 rounds the expert weights to bf16 and compares with the f32
# golden outputs to bf16 accuracy (rtol 3e-2, atol 2e-2, as
# test/aot/c-program.test does on CPUs); --mma adds tensor-core tiles;
# --device-code ptx embeds PTX instead of a fatbin, which is what the PTX
# emulator runs (MOE_CUDA_DRIVER=BUILD_DIR/lib/libmoe_ptx_emu.so in the
# environment; test/gpu/golden-emulated.test).
#
# OUT_DIR then holds one self-contained program per layer and its
# io.safetensors, plus run.sh, so it can be copied to a GPU machine that has
# neither LLVM nor the CUDA toolkit (only the driver) and run there.
# Exit status: 0 all passed (or all skipped: no device), 1 a failure.
set -euo pipefail
usage="usage: gpu-golden.sh BUILD_DIR OUT_DIR [--chip sm_XX] [--dtype f32|bf16] [--mma] [--device-code fatbin|cubin|ptx] [--no-run]"
build=${1:?$usage}
out=${2:?$usage}
shift 2
chip=sm_90
run=1
dtype=f32
flags=()
tolerances=()
while [ $# -gt 0 ]; do
  case $1 in
    --chip) chip=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --mma) flags+=(--mma); shift ;;
    --device-code) flags+=(--device-code "$2"); shift 2 ;;
    --no-run) run=0; shift ;;
    *) echo "gpu-golden.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case $dtype in
  f32) ;;
  bf16) tolerances=(-DMOE_RTOL=3e-2f -DMOE_ATOL=2e-2f) ;;
  *) echo "gpu-golden.sh: --dtype must be f32 or bf16" >&2; exit 2 ;;
esac
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build" && pwd)
cc=${CC:-cc} # may hold flags (the sanitizer build's), so used unquoted
mkdir -p "$out"
out=$(cd "$out" && pwd)
echo '#!/bin/sh
# Runs every program built by gpu-golden.sh; exit 1 on any failure.
cd "$(dirname "$0")"
status=0
for p in check_*; do
  case=${p#check_}; case=${case%_layer*}
  ./"$p" "$case.io.safetensors" "$@" || { [ $? -eq 77 ] || status=1; }
done
exit $status' > "$out/run.sh"
chmod +x "$out/run.sh"
for dir in "$src"/testdata/golden/*/; do
  name=$(basename "$dir")
  work=$(mktemp -d)
  "$build/bin/moe-compile" --model "$dir" --target nvptx --chip "$chip" \
    --dtype "$dtype" "${flags[@]}" -o "$work/layers.o" \
    --header "$work/layers.h" --embed-weights
  cp "$dir/io.safetensors" "$out/$name.io.safetensors"
  # One program per layer that the golden file has data for.
  grep -o 'MoE layer [0-9]*' "$work/layers.h" | awk '{print $3}' |
  while read -r layer; do
    grep -q "\"layers.$layer.input\"" "$dir/io.safetensors" || continue
    $cc -std=c11 -O2 -Wall -Wextra -Werror -I"$work" -I"$src/include" \
      -DMOE_LAYER="moe_layer$layer" -DMOE_LAYER_INDEX="$layer" \
      "${tolerances[@]}" \
      "$src/test/gpu/Inputs/golden_check_cuda.c" "$work/layers.o" \
      "$build/lib/libmoe_cuda_runtime.a" -ldl -lm \
      -o "$out/check_${name}_layer$layer"
  done
  rm -rf "$work"
done
if [ "$run" = 1 ]; then
  "$out/run.sh"
fi
