#!/usr/bin/env python3
"""Writes a Hugging Face-style Mixtral model directory (config.json and a
model.safetensors) with the shapes of a preset:

    python3 bench/make_model.py mixtral-small OUT_DIR
    python3 bench/make_model.py gpu-check OUT_DIR --random 7

Without --random the weights are zeros, written sparse: their values do not
matter to moe-compile without --embed-weights, and the benchmark programs
fill their own. With --random SEED they are seeded uniform numbers of
variance 1/fan-in, for programs that embed them (scripts/gpu-bundle.sh).
`gpu-check` has sizes that are no multiple of the GPU kernels' tiles.
Only the standard library is used."""
import array
import json
import os
import random
import struct
import sys

PRESETS = {
    # name: (hidden, ffn, experts, top_k)
    "mixtral-small": (1024, 3584, 8, 2),
    "gpu-check": (200, 150, 4, 2),
}


def main():
    args = sys.argv[1:]
    seed = None
    if len(args) == 4 and args[2] == "--random" and args[3].isdigit():
        seed = int(args[3])
        args = args[:2]
    if len(args) != 2 or args[0] not in PRESETS:
        sys.exit("usage: make_model.py {%s} OUT_DIR [--random SEED]" %
                 "|".join(PRESETS))
    d, ffn, E, k = PRESETS[args[0]]
    out = args[1]
    os.makedirs(out, exist_ok=True)
    config = {
        "model_type": "mixtral", "hidden_size": d, "intermediate_size": ffn,
        "num_local_experts": E, "num_experts_per_tok": k,
        "num_hidden_layers": 1, "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    prefix = "model.layers.0.block_sparse_moe."
    tensors = [(prefix + "gate.weight", [E, d])]
    for e in range(E):
        tensors += [(prefix + "experts.%d.w1.weight" % e, [ffn, d]),
                    (prefix + "experts.%d.w3.weight" % e, [ffn, d]),
                    (prefix + "experts.%d.w2.weight" % e, [d, ffn])]
    header, offset = {}, 0
    for name, shape in tensors:
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        if seed is None:
            f.truncate(8 + len(text) + offset)
            return
        rng = random.Random(seed)
        for _, (rows, cols) in tensors:
            bound = (3.0 / cols) ** 0.5
            values = array.array(
                "f", (rng.uniform(-bound, bound) for _ in range(rows * cols)))
            if sys.byteorder != "little":
                values.byteswap()
            f.write(values.tobytes())


if __name__ == "__main__":
    main()
