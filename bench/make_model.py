#!/usr/bin/env python3
"""Writes a Hugging Face-style model directory (config.json and a
model.safetensors of zeros, written sparse) with the shapes of a moe-bench
preset, for compiling benchmark objects ahead of time:

    python3 bench/make_model.py mixtral-small OUT_DIR

The weights' values do not matter to moe-compile without --embed-weights;
the benchmark programs fill their own. Only the standard library is used."""
import json
import os
import struct
import sys

PRESETS = {
    # name: (hidden, ffn, experts, top_k)
    "mixtral-small": (1024, 3584, 8, 2),
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in PRESETS:
        sys.exit("usage: make_model.py {%s} OUT_DIR" % "|".join(PRESETS))
    d, ffn, E, k = PRESETS[sys.argv[1]]
    out = sys.argv[2]
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
        f.truncate(8 + len(text) + offset)


if __name__ == "__main__":
    main()
