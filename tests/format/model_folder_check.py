#!/usr/bin/env python3
"""Reads a model folder written by qpack's ModelFolderWriter the way Hugging
Face loaders do (model.safetensors.index.json, then each shard through the
safetensors package) and compares every tensor with the expected bytes.

    model_folder_check.py FOLDER EXPECTED.json

EXPECTED.json: {name: {"dtype": "F32", "shape": [..], "hex": "..."}}.
Exits 77 when numpy or safetensors cannot be imported (ctest's skip code).
"""
import json
import os
import re
import sys

try:
    import numpy as np  # noqa: F401  (safetensors.numpy needs it)
    from safetensors import safe_open
except ImportError:
    sys.exit(77)

NUMPY_NAMES = {"F32": "float32", "F16": "float16", "F64": "float64", "I32": "int32",
               "I64": "int64", "U8": "uint8", "I8": "int8", "I16": "int16", "BOOL": "bool"}


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    folder, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    files = sorted(os.listdir(folder))
    shards = [f for f in files if f.endswith(".safetensors")]
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if len(shards) == 1:
        if shards != ["model.safetensors"]:
            fail("one shard must be model.safetensors, got %s" % shards)
        if os.path.exists(index_path):
            fail("an index beside a single model.safetensors")
        weight_map = None
    else:
        n = len(shards)
        want = ["model-%05d-of-%05d.safetensors" % (i + 1, n) for i in range(n)]
        if shards != want:
            fail("shard names %s, expected %s" % (shards, want))
        with open(index_path) as f:
            index = json.load(f)
        if sorted(index) != ["metadata", "weight_map"]:
            fail("index keys %s" % sorted(index))
        weight_map = index["weight_map"]
        if sorted(weight_map) != sorted(expected):
            fail("weight_map lists %s" % sorted(weight_map))
        if set(weight_map.values()) != set(shards):
            fail("weight_map names shards %s" % sorted(set(weight_map.values())))
        total = sum(len(v["hex"]) // 2 for v in expected.values())
        if index["metadata"].get("total_size") != total:
            fail("total_size %s, tensor bytes %d" % (index["metadata"].get("total_size"), total))
    seen = {}
    for shard in shards:
        with safe_open(os.path.join(folder, shard), framework="numpy") as f:
            if f.metadata().get("format") != "pt":
                fail("%s: metadata %s has no format pt" % (shard, f.metadata()))
            for name in f.keys():
                if weight_map is not None and weight_map.get(name) != shard:
                    fail("%s is in %s, the index says %s" % (name, shard, weight_map.get(name)))
                seen[name] = f.get_tensor(name)
    if sorted(seen) != sorted(expected):
        fail("tensors %s, expected %s" % (sorted(seen), sorted(expected)))
    for name, want in expected.items():
        a = seen[name]
        if str(a.dtype) != NUMPY_NAMES[want["dtype"]]:
            fail("%s: dtype %s, expected %s" % (name, a.dtype, want["dtype"]))
        if list(a.shape) != want["shape"]:
            fail("%s: shape %s, expected %s" % (name, list(a.shape), want["shape"]))
        if a.tobytes().hex() != want["hex"]:
            fail("%s: bytes differ" % name)
    print("ok: %d tensors in %d shard%s" % (len(seen), len(shards), "" if len(shards) == 1 else "s"))


if __name__ == "__main__":
    main()
