# -*- Python -*-
# Lit configuration of the moe-mlir regression tests.

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import lit.formats
from sanitizers import sanitizer_environment
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")
config.excludes = ["CMakeLists.txt", "README.md", "lit.cfg.py", "Unit", "Inputs"]

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%moe_src_root", config.moe_src_root))
config.substitutions.append(("%moe_obj_root", config.moe_obj_root))
config.substitutions.append(("%python", sys.executable))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
llvm_config.use_default_substitutions()

llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
tool_dirs = [config.moe_tools_dir, config.llvm_tools_dir]
tools = [
    ToolSubst("moe-opt", unresolved="fatal"),
    ToolSubst("moe-run", unresolved="fatal"),
    ToolSubst("moe-compile", unresolved="fatal"),
    ToolSubst("moe-difftest", unresolved="fatal"),
    ToolSubst("moe-bench", unresolved="fatal"),
    ToolSubst("moe-cuda-info", unresolved="fatal"),
]
llvm_config.add_tool_substitutions(tools, tool_dirs)

# A C compiler driver for the tests that build C programs against the
# headers moe-compile generates.
c_compiler = shutil.which("clang-22") or shutil.which("cc")
c_flags = ""
if config.moe_sanitize:
    # The sanitizer build: the C programs run under ASan + UBSan too (they
    # link the instrumented runtime libraries).
    config.available_features.add("sanitizers")
    c_flags = "-fsanitize=address,undefined -fno-sanitize-recover=all"
if c_compiler:
    config.available_features.add("c-compiler")
    config.substitutions.append(("%cc_flags", c_flags))
    config.substitutions.append(("%cc_path", c_compiler))
    config.substitutions.append(("%cc", (c_compiler + " " + c_flags).strip()))
config.environment.update(sanitizer_environment(config))
# What a program linking moe-compile's objects adds: the OpenMP runtime the
# generated parallel loops call.
config.substitutions.append(
    ("%openmp", "%s -Wl,-rpath,%s" % (config.moe_openmp_library,
                                      config.moe_openmp_library_dir)))

# The GPU tests. ptxas (CUDA toolkit) assembles the PTX moe-compile emits
# and is what `--target nvptx --emit obj|cubin` runs; GPU execution tests
# need a CUDA device (moe-cuda-info tells), else they report UNSUPPORTED.
import subprocess

ptxas = shutil.which("ptxas") or (
    "/usr/local/cuda/bin/ptxas"
    if os.access("/usr/local/cuda/bin/ptxas", os.X_OK) else None)
if ptxas:
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", ptxas))
cuda_info = os.path.join(config.moe_tools_dir, "moe-cuda-info")
try:
    if subprocess.run([cuda_info], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, timeout=60).returncode == 0:
        config.available_features.add("cuda-device")
except (OSError, subprocess.TimeoutExpired):
    pass
config.substitutions.append(
    ("%cuda_runtime", os.path.join(config.moe_obj_root, "lib",
                                   "libmoe_cuda_runtime.a") + " -ldl"))
config.substitutions.append(
    ("%moe_include", os.path.join(config.moe_src_root, "include")))
# The PTX emulator: a CUDA driver library that runs kernels on the CPU
# (MOE_CUDA_DRIVER=%ptx_emu), so the GPU execution tests also run here.
config.substitutions.append(
    ("%ptx_emu", os.path.join(config.moe_obj_root, "lib",
                              "libmoe_ptx_emu.so")))
