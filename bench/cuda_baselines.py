#!/usr/bin/env python3
"""The GPU baselines of docs/performance.md, measured with PyTorch on the
machine that runs bench/cuda_bench.c:

  * cuBLAS dense GEMM at M = T*k, K = d, N = ffn in bf16 and in f32 (TF32
    off): what the expert GEMMs could reach;
  * device-to-device copy bandwidth (bytes read + written / time): what a
    weight-streaming decode kernel could reach.

    python3 bench/cuda_baselines.py --hidden 1024 --ffn 3584 --top-k 2 \
        --tokens 1,16,128,1536

Prints one JSON object per line; times are medians of CUDA-event-timed
runs after warm-up."""
import argparse
import json

import torch


def median_ms(fn, runs=50):
    start = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for _ in range(5):
        fn()
    for i in range(runs):
        start[i].record()
        fn()
        end[i].record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(start, end))
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=3584)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tokens", default="1,16,128,1536")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    print(json.dumps({"baseline": "device", "name":
                      torch.cuda.get_device_name(0)}))
    for T in [int(t) for t in a.tokens.split(",")]:
        M = T * a.top_k
        for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "f32")):
            x = torch.randn(M, a.hidden, device=dev, dtype=dtype)
            w = torch.randn(a.ffn, a.hidden, device=dev, dtype=dtype)
            ms = median_ms(lambda: torch.matmul(x, w.t()))
            print(json.dumps({"baseline": "cublas_gemm", "dtype": name,
                              "tokens": T, "M": M, "K": a.hidden,
                              "N": a.ffn, "ms_median": round(ms, 5),
                              "tflops": round(2 * M * a.hidden * a.ffn /
                                              ms / 1e9, 2)}))
    n = 1 << 28  # 1 GiB of f32 read, 1 GiB written
    src = torch.empty(n, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), runs=20)
    print(json.dumps({"baseline": "d2d_copy", "bytes": 2 * 4 * n,
                      "ms_median": round(ms, 4),
                      "gbps": round(2 * 4 * n / ms / 1e6, 1)}))


if __name__ == "__main__":
    main()
