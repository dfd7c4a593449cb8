#!/usr/bin/env bash
# Builds the GPU benchmark bundle: the mixtral-small layer compiled with
# --target nvptx, bench/cuda_bench.c linked against it, and the PyTorch
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
"$build/bin/moe-compile" --model "$work/model" --target nvptx --chip "$chip" \
  -o "$work/layer.o" --header "$work/layers.h"
"${CC:-cc}" -std=c11 -O2 -Wall -Wextra -Werror -I"$work" -I"$src/include" \
  -DPRESET='"mixtral-small"' -DTOPK=2 "$src/bench/cuda_bench.c" \
  "$work/layer.o" "$build/lib/libmoe_cuda_runtime.a" -ldl -lm \
  -o "$out/cuda_bench_mixtral_small"
cp "$src/bench/cuda_baselines.py" "$out/"
cat > "$out/run.sh" <<'RUN'
#!/bin/sh
# moe-mlir's mixtral-small layer on the GPU, then the baselines.
cd "$(dirname "$0")"
tokens=${1:-1,16,128,1536}
./cuda_bench_mixtral_small "$tokens" "${2:-20}" || exit 1
python3 cuda_baselines.py --hidden 1024 --ffn 3584 --top-k 2 --tokens "$tokens"
RUN
chmod +x "$out/run.sh"
echo "built $out (run $out/run.sh on the GPU machine)"
