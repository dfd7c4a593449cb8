#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers (fuzz/corpus/NAME/), with the
standard library only (inputs named regression-* are fuzzer findings, kept): tiny model directories packed in ImportFuzzer's
format (u32 length, config.json, model.safetensors), the IR examples, and
a few runtime batches for RunFuzzer.

    python3 fuzz/make_corpus.py"""
import json
import os
import random
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def safetensors(tensors):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        fmt = {"F32": "f", "I32": "i", "I64": "q"}[dtype]
        blob = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def values(n, rng):
    return [rng.uniform(-0.5, 0.5) for _ in range(n)]


def models(rng):
    d, f, e = 4, 6, 2
    mixtral = {"model_type": "mixtral", "hidden_size": d,
               "intermediate_size": f, "num_local_experts": e,
               "num_experts_per_tok": 1, "num_hidden_layers": 1,
               "hidden_act": "silu"}
    p = "model.layers.0.block_sparse_moe."
    t = {p + "gate.weight": ("F32", [e, d], values(e * d, rng))}
    for i in range(e):
        t[p + "experts.%d.w1.weight" % i] = ("F32", [f, d], values(f * d, rng))
        t[p + "experts.%d.w3.weight" % i] = ("F32", [f, d], values(f * d, rng))
        t[p + "experts.%d.w2.weight" % i] = ("F32", [d, f], values(d * f, rng))
    yield "mixtral", mixtral, t
    olmoe = {"model_type": "olmoe", "hidden_size": d, "intermediate_size": f,
             "num_experts": e, "num_experts_per_tok": 2,
             "norm_topk_prob": False, "num_hidden_layers": 1,
             "hidden_act": "silu"}
    p = "model.layers.0.mlp."
    t = {p + "gate.weight": ("F32", [e, d], values(e * d, rng))}
    for i in range(e):
        for name, shape in (("gate_proj", [f, d]), ("up_proj", [f, d]),
                            ("down_proj", [d, f])):
            t[p + "experts.%d.%s.weight" % (i, name)] = (
                "F32", shape, values(shape[0] * shape[1], rng))
    yield "olmoe", olmoe, t
    hashed = {"model_type": "moe_hash", "hidden_size": d,
              "intermediate_size": f, "num_experts": e, "vocab_size": 5,
              "hidden_act": "relu", "num_hidden_layers": 1}
    t = {"layers.0.hash_table": ("I64", [5], [0, 1, 1, 0, 1])}
    for i in range(e):
        t["layers.0.experts.%d.wi.weight" % i] = ("F32", [f, d],
                                                  values(f * d, rng))
        t["layers.0.experts.%d.wo.weight" % i] = ("F32", [d, f],
                                                  values(d * f, rng))
    yield "hash", hashed, t


GROUPED_MATMUL_TILE = """\
func.func @tiles(%x: tensor<?x24xf32>, %w: tensor<4x40x24xf32>,
                 %wb: tensor<4x40x24xbf16>, %offsets: tensor<5xi32>)
    -> (tensor<?x20xf32>, tensor<?x40xf32>, tensor<?x40xf32>) {
  %a = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      {moe.tile = array<i64: 3, 4>, moe.column_chunks = 6 : i64}
      : tensor<?x24xf32>, tensor<4x40x24xf32>, tensor<5xi32> -> tensor<?x20xf32>
  %b = moe.grouped_matmul %x, %wb, %offsets epilogue <relu>
      {moe.tile = array<i64: 1, 6>, moe.depth_block = 5 : i64}
      : tensor<?x24xf32>, tensor<4x40x24xbf16>, tensor<5xi32> -> tensor<?x40xf32>
  %c = moe.grouped_matmul %x, %w, %offsets epilogue <none>
      {moe.depth_block = 7 : i64, moe.panel_min_rows = 1 : i64}
      : tensor<?x24xf32>, tensor<4x40x24xf32>, tensor<5xi32> -> tensor<?x40xf32>
  return %a, %b, %c : tensor<?x20xf32>, tensor<?x40xf32>, tensor<?x40xf32>
}
"""


def main():
    rng = random.Random(7)
    # Generated seeds are rewritten; fuzzer findings (regression-*) stay.
    for name in ("Import", "Run", "IR"):
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        for entry in os.listdir(folder):
            if not entry.startswith("regression-"):
                os.remove(os.path.join(folder, entry))
    for name, config, tensors in models(rng):
        text = json.dumps(config).encode()
        with open(os.path.join(OUT, "Import", name), "wb") as f:
            f.write(struct.pack("<I", len(text)) + text + safetensors(tensors))
    for src in ("examples/mixtral_layer.mlir",
                "test/aot/Inputs/mixtral_t1_layer.mlir"):
        shutil.copy(os.path.join(ROOT, src),
                    os.path.join(OUT, "IR", os.path.basename(src)))
    # The same layer with bf16 expert weights.
    with open(os.path.join(ROOT, "test/aot/Inputs/mixtral_t1_layer.mlir")) as f:
        text = f.read()
    text = text.replace("8x192x64xf32", "8x192x64xbf16").replace(
        "8x64x96xf32", "8x64x96xbf16")
    with open(os.path.join(OUT, "IR", "mixtral_t1_layer_bf16.mlir"), "w") as f:
        f.write(text)
    # Grouped GEMMs with their own register tiles (moe.tile), blocks of k,
    # work items and decode thresholds, f32 and bf16.
    with open(os.path.join(OUT, "IR", "grouped_matmul_tile.mlir"), "w") as f:
        f.write(GROUPED_MATMUL_TILE)
    for i in range(5):
        with open(os.path.join(OUT, "Run", "batch%d" % i), "wb") as f:
            f.write(bytes([i % 4, 5 + 7 * i, 2, 3, 1, 0]))
            f.write(struct.pack("<%df" % (16 * 8), *values(16 * 8, rng)))


if __name__ == "__main__":
    main()
