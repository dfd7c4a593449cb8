#!/usr/bin/env bash
# The libFuzzer targets of fuzz/ (issue 7, docs/errors.md).
#
#   scripts/fuzz.sh build                 # build-fuzz/: clang-22, ASan + UBSan
#                                         # on every project file, fuzzer coverage
#   scripts/fuzz.sh run NAME SECONDS      # NAME: Import, Run or IR
#
# `run` starts from the seed corpus fuzz/corpus/NAME (regenerate it with
# python3 fuzz/make_corpus.py), keeps what it learns in build-fuzz/corpus-NAME,
# and stops after SECONDS; a crash, sanitizer report or failed check leaves
# build-fuzz/crash-NAME-* and a nonzero status. Needs libclang-rt-22-dev
# (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
llvm=/usr/lib/llvm-22
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fsanitize=fuzzer-no-link"
case "${1:-}" in
  build)
    cmake -G Ninja -S . -B build-fuzz \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
      -DLLVM_USE_LINKER=lld \
      -DMLIR_DIR=$llvm/lib/cmake/mlir -DLLVM_EXTERNAL_LIT=$llvm/bin/lit \
      -DMOE_FUZZERS=ON \
      "-DCMAKE_C_FLAGS=$sanitize" "-DCMAKE_CXX_FLAGS=$sanitize" > /dev/null
    ninja -C build-fuzz moe-fuzz-Import moe-fuzz-Run moe-fuzz-IR
    ;;
  run)
    name=${2:?scripts/fuzz.sh run Import|Run|IR SECONDS}
    seconds=${3:?scripts/fuzz.sh run NAME SECONDS}
    mkdir -p build-fuzz/corpus-$name
    # LLVM's and MLIR's process-wide singletons are never freed: no leak
    # checking. The fuzzers run in one process (-fork would lose the JIT).
    ASAN_OPTIONS=detect_leaks=0:allow_user_poisoning=0 \
    UBSAN_OPTIONS=print_stacktrace=1 \
      build-fuzz/bin/moe-fuzz-$name -max_total_time="$seconds" \
      -max_len=8192 -print_final_stats=1 \
      -artifact_prefix=build-fuzz/crash-$name- \
      build-fuzz/corpus-$name fuzz/corpus/$name
    ;;
  *)
    echo "usage: scripts/fuzz.sh build | run Import|Run|IR SECONDS" >&2
    exit 2
    ;;
esac
