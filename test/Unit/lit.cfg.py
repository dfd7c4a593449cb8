# -*- Python -*-
# Runs the gtest binaries under build/unittests through lit, so one lit
# invocation reports the regression and the unit tests together.

import os
import sys

import lit.formats

sys.path.insert(0, os.path.join(config.moe_src_root, "test"))
from sanitizers import sanitizer_environment

config.name = "MOE-Unit"
config.suffixes = []
config.test_source_root = os.path.join(config.moe_obj_root, "unittests")
config.test_exec_root = config.test_source_root
config.test_format = lit.formats.GoogleTest(".", "Tests")
config.environment.update(sanitizer_environment(config))
