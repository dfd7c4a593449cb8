# The environment of the tests in the sanitizer build (-DMOE_SANITIZE=ON,
# `make test-sanitizers`), shared by the regression and the unit-test
# lit configurations.
#
# Every report aborts the process: a sanitizer finding is then a crash,
# which fails a test even where it expects a tool to fail (`not` passes a
# non-zero exit, never a signal).

import os


def sanitizer_environment(config):
    if not getattr(config, "moe_sanitize", False):
        return {}
    suppressions = os.path.join(config.moe_src_root, "scripts", "lsan.supp")
    return {
        # allow_user_poisoning=0: LLVM's BumpPtrAllocator poisons the
        # unused part of a slab in our instrumented copy of its inline
        # code, and the uninstrumented libMLIR allocates from the same slab
        # without unpoisoning it (a false use-after-poison).
        "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1:"
                        "allow_user_poisoning=0",
        "LSAN_OPTIONS": "suppressions=" + suppressions,
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:"
                         "abort_on_error=1",
    }
