#!/usr/bin/python3
"""PyTorch-eager baseline: a Hugging Face-style sparse MoE block.

    /usr/bin/python3 bench/pytorch_moe.py [--preset NAME|all]
        [--tokens 1,16,128,1024] [--threads 2] [--json]

The block is written the way transformers' Mixtral/OLMoE/DeepSeek/Switch
blocks are: a router Linear, softmax, top-k (renormalized or not), then a
loop over experts that gathers each expert's tokens (torch.where on the
one-hot mask), runs the SwiGLU expert (w2(silu(w1 x) * w3 x)), scales by the
routing weight and index_add_s the result; DeepSeek adds a shared SwiGLU
expert, Switch drops tokens past capacity 1.25 * T * k / E per expert.

Shapes, weight counts and the working-set rule (for T <= 16, enough weight
copies that more than 1 GiB of weights is touched between two uses of one
copy) match moe-bench, so figures compare one to one. Run it with
OPENBLAS_CORETYPE unset and OMP_WAIT_POLICY=passive (bench/run.sh does):
its fairest setting on this machine.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

PRESETS = {
    # name: (d, ffn, E, k, shared_ffn, renormalize, capacity_factor)
    "mixtral-small": (1024, 3584, 8, 2, 0, True, 0.0),
    "olmoe-like": (2048, 1024, 64, 8, 0, False, 0.0),
    "deepseek-like": (2048, 1408, 64, 6, 2816, False, 0.0),
    "switch-like": (768, 3072, 128, 1, 0, False, 1.25),
}


def make_weights(d, ffn, E, shared, gen):
    def uni(*shape, fan_in):
        t = torch.empty(*shape)
        t.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in),
                   generator=gen)
        return t
    w = {
        "gate": uni(E, d, fan_in=d),
        "w1": uni(E, ffn, d, fan_in=d),
        "w3": uni(E, ffn, d, fan_in=d),
        "w2": uni(E, d, ffn, fan_in=ffn),
    }
    if shared:
        w["s1"] = uni(shared, d, fan_in=d)
        w["s3"] = uni(shared, d, fan_in=d)
        w["s2"] = uni(d, shared, fan_in=shared)
    return w


def swiglu(x, w1, w3, w2):
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def moe_block(x, w, k, renormalize, capacity_factor):
    T, d = x.shape
    E = w["gate"].shape[0]
    logits = F.linear(x, w["gate"])
    probs = F.softmax(logits, dim=1, dtype=torch.float)
    weights, experts = torch.topk(probs, k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    mask = F.one_hot(experts, num_classes=E)  # [T, k, E]
    if capacity_factor > 0:
        capacity = math.ceil(capacity_factor * T * k / E)
        position = torch.cumsum(mask.reshape(T * k, E), dim=0).reshape(T, k, E)
        mask = mask * (position <= capacity)
    mask = mask.permute(2, 1, 0)  # [E, k, T]
    out = torch.zeros_like(x)
    for e in range(E):
        slot, token = torch.where(mask[e])
        if token.shape[0] == 0:
            continue
        h = swiglu(x[token], w["w1"][e], w["w3"][e], w["w2"][e])
        out.index_add_(0, token, h * weights[token, slot, None])
    if "s1" in w:
        out = out + swiglu(x, w["s1"], w["s3"], w["s2"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="all")
    ap.add_argument("--tokens", default="1,16,128,1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--working-set", type=float, default=1.0,
                    help="GiB touched between reuses of one copy (T <= 16)")
    ap.add_argument("--memory-cap", type=float, default=8.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    names = list(PRESETS) if args.preset == "all" else [args.preset]
    for name in names:
        if name not in PRESETS:
            sys.exit("pytorch_moe.py: unknown preset '%s'" % name)
        d, ffn, E, k, shared, renorm, cf = PRESETS[name]
        expert_bytes = 3 * d * ffn * 4
        shared_bytes = 3 * d * shared * 4
        layer_bytes = E * expert_bytes + shared_bytes
        gen = torch.Generator().manual_seed(1)
        copies = [make_weights(d, ffn, E, shared, gen)]
        for T in [int(t) for t in args.tokens.split(",")]:
            xs = [torch.randn(T, d, generator=gen) for _ in range(8)]
            instances = 1
            if T <= 16:
                used = sum(len(torch.unique(torch.topk(
                    F.linear(x, copies[0]["gate"]), k, dim=-1)[1]))
                    for x in xs) / len(xs)
                active = used * expert_bytes + shared_bytes
                ws = args.working_set * 2**30
                cap = max(1, int(args.memory_cap * 2**30 / layer_bytes))
                instances = max(math.ceil(ws / layer_bytes),
                                min(math.ceil(ws / active) + 1, cap))
            while len(copies) < instances:
                copies.append({n: t.clone() for n, t in copies[0].items()})
            for i in range(max(instances, 2)):
                moe_block(xs[i % 8], copies[i % instances], k, renorm, cf)
            times, total, i = [], 0.0, 0
            while len(times) < 7 or total < args.min_time:
                t0 = time.perf_counter()
                moe_block(xs[i % 8], copies[i % instances], k, renorm, cf)
                dt = time.perf_counter() - t0
                times.append(dt * 1e3)
                total += dt
                i += 1
            rec = {"baseline": "pytorch_eager", "preset": name, "tokens": T,
                   "threads": args.threads,
                   "ms_median": round(statistics.median(times), 4),
                   "ms_min": round(min(times), 4), "instances": instances,
                   "runs": len(times)}
            if args.json:
                print(json.dumps(rec), flush=True)
            else:
                print("%-14s T %5d  median %9.3f ms  min %9.3f ms  "
                      "(%d copies, %d runs)" % (name, T, rec["ms_median"],
                                                rec["ms_min"], instances,
                                                len(times)), flush=True)
        del copies


if __name__ == "__main__":
    main()
