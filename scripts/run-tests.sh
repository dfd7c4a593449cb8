#!/usr/bin/env bash
# Runs every test suite (lit regression tests and the gtest unit tests, both
# through lit), then prints one totals line: "N passed, N failed[, N skipped]".
set -uo pipefail

build=${1:-build}
lit=${LIT:-/usr/lib/llvm-22/bin/lit}
results="$build/test-results.xml"
rm -f "$results"

lit_args=(-sv --xunit-xml-output "$results")

"$lit" "${lit_args[@]}" "$build/test" "$build/test/Unit"
status=$?

python3 - "$results" "$status" <<'PY'
import sys
import xml.etree.ElementTree as ET

path, status = sys.argv[1], int(sys.argv[2])
try:
    root = ET.parse(path).getroot()
except (OSError, ET.ParseError) as err:
    print(f"no test results ({err})")
    print("0 passed, 1 failed")
    sys.exit(1)
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
passed = tests - failed - skipped
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or status != 0 or tests == 0 else 0)
PY
