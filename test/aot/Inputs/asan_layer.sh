#!/usr/bin/env bash
# asan_layer.sh MOE_COMPILE CC OPENMP MODEL_DIR OUT [CFLAGS...]
#
# Compiles layer 0 of MODEL_DIR ahead of time with AddressSanitizer in the
# generated code (moe-compile --sanitize address, weights embedded), links
# it into golden_check.c (when the folder has io.safetensors) and into
# hostile_inputs.c, both built with -fsanitize=address,undefined, and runs
# them. Any out-of-bounds access of the compiled layer is an ASan report
# and a failure. CFLAGS pass -DMOE_HASH, -DMOE_SEQUENCES, -DMOE_REQUESTS.
set -euo pipefail
compile=$1 cc=$2 openmp=$3 model=$4 out=$5
shift 5
inputs=$(dirname "$0")
mkdir -p "$out"
"$compile" --model "$model" --layer 0 -o "$out/layer.o" \
  --header "$out/layers.h" --embed-weights --sanitize address
flags=(-std=c11 -Wall -Wextra -Werror -fsanitize=address,undefined
       -fno-sanitize-recover=all -I"$out" -DMOE_LAYER=moe_layer0
       -DMOE_LAYER_INDEX=0 -DMOE_HIDDEN=64 "$@")
if [[ -f $model/io.safetensors ]]; then
  # shellcheck disable=SC2086 # CC and OPENMP are command fragments
  $cc "${flags[@]}" "$inputs/golden_check.c" "$out/layer.o" -lm $openmp \
    -o "$out/golden"
  "$out/golden" "$model/io.safetensors"
fi
# shellcheck disable=SC2086
$cc "${flags[@]}" "$inputs/hostile_inputs.c" "$out/layer.o" -lm $openmp \
  -o "$out/hostile"
"$out/hostile"
