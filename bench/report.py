#!/usr/bin/env python3
"""Joins the JSON lines of moe-bench and the baselines into one table.

    python3 bench/report.py results.jsonl

Per preset and token count: moe-mlir's median time, GFLOP/s and weight
GB/s; oneDNN's prepacked GEMM GFLOP/s at M = T*k and the ratio to it; the
STREAM-style read bandwidth and the ratio of moe-mlir's weight traffic to
it; the PyTorch-eager block's median and moe-mlir's speedup over it.
"""
import json
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS.jsonl")
    moe, onednn, torch_eager, stream = {}, {}, {}, None
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            kind = r.get("baseline")
            if kind is None:
                moe[(r["preset"], r["tokens"], r["dtype"])] = r
            elif kind == "onednn_gemm":
                onednn[(r["preset"], r["tokens"], r["dtype"])] = r
            elif kind == "pytorch_eager":
                torch_eager[(r["preset"], r["tokens"])] = r
            elif kind == "stream_read":
                stream = r
    bw = stream["gbps_median"] if stream else None
    if bw:
        print("STREAM-style read bandwidth: %.1f GB/s (median, %d threads)"
              % (bw, stream["threads"]))
    head = ("%-14s %-4s %5s | %9s %7s %6s | %7s %5s | %5s | %9s %6s"
            % ("preset", "type", "T", "moe ms", "GFLOP/s", "GB/s",
               "oneDNN", "ratio", "bw", "torch ms", "speed"))
    print(head)
    print("-" * len(head))
    for key in sorted(moe, key=lambda k: (k[0], k[2], k[1])):
        preset, tokens, dtype = key
        r = moe[key]
        o = onednn.get(key)
        t = torch_eager.get((preset, tokens)) if dtype == "f32" else None
        print("%-14s %-4s %5d | %9.3f %7.1f %6.1f | %7s %5s | %5s | %9s %6s" % (
            preset, dtype, tokens, r["ms_median"], r["gflops"],
            r["weight_gbps"],
            "%.1f" % o["gflops"] if o else "-",
            "%.2f" % (r["gflops"] / o["gflops"]) if o else "-",
            "%.2f" % (r["weight_gbps"] / bw) if bw and tokens <= 16 else "-",
            "%.3f" % t["ms_median"] if t else "-",
            "%.1fx" % (t["ms_median"] / r["ms_median"]) if t else "-"))


if __name__ == "__main__":
    main()
