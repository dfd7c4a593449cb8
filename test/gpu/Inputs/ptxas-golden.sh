#!/usr/bin/env bash
# Compiles every golden model to PTX for CHIP and assembles it with ptxas
# -v; prints one line per case: its kernels, the most registers one uses,
# and the spill bytes summed over all kernels. DTYPE (f32 by default) is
# the expert weights' type; CASE... limits it to those golden cases;
# MOE_COMPILE_FLAGS (split on spaces) are passed to moe-compile as well.
#   ptxas-golden.sh MOE_COMPILE PTXAS GOLDEN_DIR CHIP WORK_DIR [DTYPE [CASE...]]
set -euo pipefail
compile=$1 ptxas=$2 golden=$3 chip=$4 work=$5 dtype=${6:-f32}
shift $(($# < 6 ? $# : 6))
mkdir -p "$work"
dirs=("$golden"/*/)
if (($# > 0)); then
  dirs=()
  for name in "$@"; do dirs+=("$golden/$name/"); done
fi
for dir in "${dirs[@]}"; do
  name=$(basename "$dir")
  "$compile" --model "$dir" --target nvptx --chip "$chip" --emit ptx \
    --dtype "$dtype" ${MOE_COMPILE_FLAGS:-} -o "$work/$name.$chip.ptx"
  "$ptxas" -arch="$chip" -v "$work/$name.$chip.ptx" \
    -o "$work/$name.$chip.cubin" 2> "$work/$name.$chip.log"
  awk -v name="$name" -v chip="$chip" '
    /Compiling entry function/ { kernels++ }
    /bytes spill stores/ { stores += $5; loads += $9 }
    /Used [0-9]+ registers/ {
      for (i = 1; i <= NF; i++) if ($i == "Used") r = $(i + 1)
      if (r + 0 > regs) regs = r + 0
    }
    END { printf "%s %s: %d kernels, max %d registers, spill stores %d, spill loads %d\n",
                 name, chip, kernels, regs, stores, loads }' "$work/$name.$chip.log"
done
