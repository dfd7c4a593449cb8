#!/usr/bin/env bash
# Builds, on a machine with LLVM and the CUDA toolkit, everything a GPU
# session runs, into OUT_DIR; OUT_DIR/run.sh then runs it on a GPU machine
# that has only the CUDA driver (and PyTorch for the baselines):
#
#   scripts/gpu-bundle.sh BUILD_DIR OUT_DIR [--chip sm_90]
#   OUT_DIR/run.sh [--no-bench]
#
#   * golden-{f32,bf16,bf16_mma}/: the golden layers (scripts/gpu-golden.sh)
#     with f32 weights, bf16 weights, and bf16 weights on tensor cores;
#   * check/gpu_vs_cpu_*: a layer whose sizes are no multiple of the
#     kernels' tiles (bench/make_model.py gpu-check, random weights), built
#     for the GPU and for this CPU in one program (gpu_vs_cpu.c), run on
#     1 to 1536 tokens, the GPU's output compared with the CPU's;
#   * bench/: bench/cuda.sh (the three variants of mixtral-small, cuBLAS and
#     copy baselines), then each variant's per-kernel profile at T = 1 and
#     1536 (MOE_CUDA_PROFILE=1).
#
# run.sh prints every result and a last line "gpu-bundle: N failed"; exit
# status 0 when nothing failed.
set -euo pipefail
usage="usage: gpu-bundle.sh BUILD_DIR OUT_DIR [--chip sm_XX]"
build=$(cd "${1:?$usage}" && pwd)
out=${2:?$usage}
chip=sm_90
[ "${3:-}" = --chip ] && chip=${4:?--chip needs a value}
src=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-cc}
rm -rf "$out"
mkdir -p "$out/check"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bash "$src/scripts/gpu-golden.sh" "$build" "$out/golden-f32" --chip "$chip" --no-run
bash "$src/scripts/gpu-golden.sh" "$build" "$out/golden-bf16" --chip "$chip" \
  --dtype bf16 --no-run
bash "$src/scripts/gpu-golden.sh" "$build" "$out/golden-bf16_mma" --chip "$chip" \
  --dtype bf16 --mma --no-run

python3 "$src/bench/make_model.py" gpu-check "$work/model" --random 7
for variant in f32 bf16 bf16_mma; do
  dtype=${variant%_mma}
  flags=()
  [ "$variant" = bf16_mma ] && flags=(--mma)
  dir=$work/$variant
  mkdir -p "$dir"
  # The CPU build: baseline x86-64-v3 code on the calling thread, so the
  # program runs on any x86-64 GPU host without libomp.
  "$build/bin/moe-compile" --model "$work/model" --prefix cpu --dtype "$dtype" \
    --target-cpu x86-64-v3 --no-openmp --embed-weights \
    -o "$dir/cpu.o" --header "$dir/cpu_layers.h"
  "$build/bin/moe-compile" --model "$work/model" --prefix gpu --dtype "$dtype" \
    --target nvptx --chip "$chip" "${flags[@]}" --embed-weights \
    -o "$dir/gpu.o" --header "$dir/gpu_layers.h"
  "$cc" -std=c11 -O2 -Wall -Wextra -Werror -I"$dir" -I"$src/include" \
    "$src/test/gpu/Inputs/gpu_vs_cpu.c" "$dir/cpu.o" "$dir/gpu.o" \
    "$build/lib/libmoe_cuda_runtime.a" -ldl -lm -o "$out/check/gpu_vs_cpu_$variant"
done

bash "$src/bench/cuda.sh" "$build" "$out/bench" --chip "$chip"

cat > "$out/run.sh" <<'RUN'
#!/bin/sh
# Runs what scripts/gpu-bundle.sh built; --no-bench skips the benchmark.
cd "$(dirname "$0")"
failed=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
for variant in f32 bf16 bf16_mma; do
  echo "== golden layers, $variant"
  golden-$variant/run.sh || failed=$((failed + 1))
done
for variant in f32 bf16 bf16_mma; do
  echo "== gpu-check layer against the CPU, $variant"
  # f32 weights: the two differ in summation order only; tensor cores
  # round the tokens to bf16 as the CPU does; CUDA cores do not.
  case $variant in
    f32) tolerances="1e-4 1e-4" ;;
    bf16) tolerances="2e-2 3e-2" ;;
    bf16_mma) tolerances="1e-2 1e-2" ;;
  esac
  check/gpu_vs_cpu_$variant 1,7,33,300,1536 $tolerances || failed=$((failed + 1))
done
if [ "${1:-}" != --no-bench ]; then
  echo "== benchmark"
  bench/run.sh || failed=$((failed + 1))
  # Where the time goes (docs/gpu.md, Status): per-kernel times of each
  # variant at T = 1 (decode kernels, launch count) and T = 1536.
  for variant in f32 bf16 bf16_mma; do
    echo "== per-kernel profile, $variant"
    MOE_CUDA_PROFILE=1 bench/cuda_bench_mixtral_small_$variant 1,1536 5 ||
      failed=$((failed + 1))
  done
fi
echo "gpu-bundle: $failed failed"
[ "$failed" = 0 ]
RUN
chmod +x "$out/run.sh"
du -sh "$out"
echo "built $out (run $out/run.sh on the GPU machine)"
