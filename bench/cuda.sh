#!/usr/bin/env bash
# Builds the GPU benchmark bundle: the mixtral-small layer compiled with
# --target nvptx (f32 weights, bf16 weights, and bf16 weights with --mma),
# bench/cuda_bench.c linked against each, and the PyTorch
# baselines script; OUT_DIR/run.sh runs both on a GPU machine (which needs
# the CUDA driver and, for the baselines, PyTorch; not LLVM or the toolkit).
#
#   bash bench/cuda.sh BUILD_DIR OUT_DIR [--chip sm_90]
#   OUT_DIR/run.sh [TOKENS] [RUNS]        # default 1,16,128,1536 and 20
#   MOE_CUDA_PROFILE=1 OUT_DIR/run.sh     # adds per-kernel times
set -euo pipefail
build=$(cd "${1:?usage: cuda.sh BUILD_DIR OUT_DIR [--chip sm_XX]}" && pwd)
out=${2:?usage: cuda.sh BUILD_DIR OUT_DIR [--chip sm_XX]}
chip=sm_90
[ "${3:-}" = --chip ] && chip=${4:?--chip needs a value}
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$src/bench/make_model.py" mixtral-small "$work/model"
# Three builds of the layer: f32 weights, bf16 weights on CUDA cores, bf16
# weights on tensor cores (--mma).
variants="f32 bf16 bf16_mma"
for variant in $variants; do
  flags=(--dtype "${variant%_mma}")
  kernel=fma
  if [ "$variant" = bf16_mma ]; then flags+=(--mma); kernel=mma; fi
  mkdir -p "$work/$variant"
  "$build/bin/moe-compile" --model "$work/model" --target nvptx --chip "$chip" \
    "${flags[@]}" -o "$work/$variant/layer.o" --header "$work/$variant/layers.h"
  "${CC:-cc}" -std=c11 -O2 -Wall -Wextra -Werror -I"$work/$variant" \
    -I"$src/include" -DPRESET='"mixtral-small"' -DTOPK=2 \
    -DKERNEL="\"$kernel\"" "$src/bench/cuda_bench.c" "$work/$variant/layer.o" \
    "$build/lib/libmoe_cuda_runtime.a" -ldl -lm \
    -o "$out/cuda_bench_mixtral_small_$variant"
done
cp "$src/bench/cuda_baselines.py" "$out/"
cat > "$out/run.sh" <<'RUN'
#!/bin/sh
# moe-mlir's mixtral-small layer on the GPU (f32, bf16, bf16 on tensor
# cores), then the baselines.
cd "$(dirname "$0")"
tokens=${1:-1,16,128,1536}
status=0
for variant in f32 bf16 bf16_mma; do
  ./cuda_bench_mixtral_small_$variant "$tokens" "${2:-20}" || status=1
done
python3 cuda_baselines.py --hidden 1024 --ffn 3584 --top-k 2 --tokens "$tokens"
exit $status
RUN
chmod +x "$out/run.sh"
echo "built $out (run $out/run.sh on the GPU machine)"
