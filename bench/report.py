#!/usr/bin/env python3
"""Joins the JSON lines of moe-bench and the baselines into one table.

    python3 bench/report.py results.jsonl [previous.jsonl]

Per preset and token count: moe-mlir's median time, GFLOP/s and weight
GB/s; oneDNN's prepacked GEMM GFLOP/s at M = T*k and the ratio to it; the
STREAM-style read bandwidth and the ratio of moe-mlir's weight traffic to
it; the PyTorch-eager block's median and moe-mlir's speedup over it.

Then the JIT compile time of each layer (preset, weight type) and, given
the results of an earlier run (bench/run.sh keeps the last one), that run's
figures beside it, with the sum of the layer's medians in both (over the
token counts both runs have): a change that makes the generated code
slower to compile shows here, not only as slower tests.
"""
import json
import statistics
import sys


def read(path):
    """The JSON lines of a run: moe-bench's CPU lines by (preset, tokens,
    dtype), the baselines by kind, and the STREAM-style read bandwidths in
    file order. Each moe-bench line gets `read_gbps`: the mean of the
    nearest read measurements before and after it (run.sh measures one
    around every preset), or the one there is."""
    moe, onednn, torch_eager, streams = {}, {}, {}, []
    waiting = []  # moe-bench lines since the last read measurement
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            kind = r.get("baseline")
            if kind is None:
                if r.get("device", "cpu") == "cpu":
                    moe[(r["preset"], r["tokens"], r["dtype"])] = r
                    r["read_before"] = (streams[-1]["gbps_median"]
                                        if streams else None)
                    waiting.append(r)
            elif kind == "onednn_gemm":
                onednn[(r["preset"], r["tokens"], r["dtype"])] = r
            elif kind == "pytorch_eager":
                torch_eager[(r["preset"], r["tokens"])] = r
            elif kind == "stream_read":
                streams.append(r)
                for w in waiting:
                    w["read_after"] = r["gbps_median"]
                waiting = []
    for r in moe.values():
        around = [v for v in (r.pop("read_before"), r.pop("read_after", None))
                  if v]
        r["read_gbps"] = sum(around) / len(around) if around else None
    return moe, onednn, torch_eager, streams


def compile_times(moe, tokens=None):
    """compile_ms per (preset, dtype), and the sum of the layer's medians
    (over the token counts in `tokens` only, when given)."""
    out = {}
    for (preset, t, dtype), r in moe.items():
        c = out.setdefault((preset, dtype), [r.get("compile_ms"), 0.0])
        if tokens is None or t in tokens:
            c[1] += r["ms_median"]
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: report.py RESULTS.jsonl [PREVIOUS.jsonl]")
    moe, onednn, torch_eager, streams = read(sys.argv[1])
    # The layer times are summed over the token counts both runs have.
    previous, common = None, None
    if len(sys.argv) == 3:
        try:
            before = read(sys.argv[2])[0]
            common = ({k[1] for k in moe} & {k[1] for k in before})
            previous = compile_times(before, common)
        except OSError:
            previous = None
    if streams:
        medians = [s["gbps_median"] for s in streams]
        print("STREAM-style read bandwidth: %.1f GB/s (median of %d "
              "measurements around the presets, %.1f to %.1f; %d threads)"
              % (statistics.median(medians), len(medians), min(medians),
                 max(medians), streams[0]["threads"]))
    head = ("%-14s %-4s %5s | %9s %7s %6s | %7s %5s | %6s %5s | %9s %6s"
            % ("preset", "type", "T", "moe ms", "GFLOP/s", "GB/s",
               "oneDNN", "ratio", "read", "bw", "torch ms", "speed"))
    print(head)
    print("-" * len(head))
    for key in sorted(moe, key=lambda k: (k[0], k[2], k[1])):
        preset, tokens, dtype = key
        r = moe[key]
        o = onednn.get(key)
        t = torch_eager.get((preset, tokens)) if dtype == "f32" else None
        bw = r["read_gbps"] if tokens <= 16 else None
        print("%-14s %-4s %5d | %9.3f %7.1f %6.1f | %7s %5s | %6s %5s | %9s %6s"
              % (
            preset, dtype, tokens, r["ms_median"], r["gflops"],
            r["weight_gbps"],
            "%.1f" % o["gflops"] if o else "-",
            "%.2f" % (r["gflops"] / o["gflops"]) if o else "-",
            "%.1f" % bw if bw else "-",
            "%.2f" % (r["weight_gbps"] / bw) if bw else "-",
            "%.3f" % t["ms_median"] if t else "-",
            "%.1fx" % (t["ms_median"] / r["ms_median"]) if t else "-"))

    print()
    head = ("%-14s %-4s | %10s %10s %5s | %11s %11s %5s"
            % ("preset", "type", "compile ms", "previous", "ratio",
               "sum of ms", "previous", "ratio"))
    print(head)
    print("-" * len(head))
    for (preset, dtype), (ms, total) in sorted(
            compile_times(moe, common).items()):
        p = previous.get((preset, dtype)) if previous else None
        ratio = lambda a, b: "%.2f" % (a / b) if a and b else "-"
        print("%-14s %-4s | %10s %10s %5s | %11.3f %11s %5s" % (
            preset, dtype, "%.0f" % ms if ms else "-",
            "%.0f" % p[0] if p and p[0] else "-",
            ratio(ms, p[0]) if p else "-", total,
            "%.3f" % p[1] if p else "-", ratio(total, p[1]) if p else "-"))
    if previous is None:
        print("(no previous run to compare with)")
    else:
        print("(sums over T = %s, the token counts of both runs)"
              % ",".join(str(t) for t in sorted(common)))


if __name__ == "__main__":
    main()
