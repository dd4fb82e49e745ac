#!/usr/bin/env python3
"""A model folder written by `qpack dequantize X.qpack OUTDIR/` against the
single file `qpack dequantize X.qpack OUT.safetensors` writes, read with the
Python safetensors package (its own parser: safetensors.deserialize, which
takes every dtype, BF16 too) and checked as Hugging Face loaders read a
folder (transformers' sharded loading: the index's weight_map names each
tensor's shard, metadata.total_size, shard names model-0000i-of-0000n).

    dequantize_folder_check.py FOLDER SINGLE.safetensors [TORCH_DTYPE]

Prints a JSON report {"tensors": N, "shards": N, "problems": [...]}; exit 0
when there are no problems, 1 otherwise, 77 when safetensors cannot be
imported (ctest's skip code).
"""
import json
import os
import sys

try:
    import safetensors
except ImportError:
    sys.exit(77)


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_len])
    tensors = {name: (t["dtype"], list(t["shape"]), bytes(t["data"]))
               for name, t in safetensors.deserialize(blob)}
    return tensors, header.get("__metadata__", {}), header_len


def main():
    folder, single = sys.argv[1], sys.argv[2]
    torch_dtype = sys.argv[3] if len(sys.argv) > 3 else None
    problems = []
    files = sorted(os.listdir(folder))
    shards = [f for f in files if f.endswith(".safetensors")]
    n = len(shards)
    if n == 1:
        if shards != ["model.safetensors"]:
            problems.append("one shard named %s, not model.safetensors" % shards)
        if "model.safetensors.index.json" in files:
            problems.append("an index beside a single shard")
    else:
        want = ["model-%05d-of-%05d.safetensors" % (i + 1, n) for i in range(n)]
        if shards != want:
            problems.append("shards %s, expected %s" % (shards, want))
    folder_tensors = {}
    where = {}
    for shard in shards:
        tensors, meta, header_len = read(os.path.join(folder, shard))
        if meta.get("format") != "pt":
            problems.append("%s: __metadata__ %s lacks format pt" % (shard, meta))
        if (8 + header_len) % 8:
            problems.append("%s: data not 8-byte aligned" % shard)
        for name, t in tensors.items():
            if name in folder_tensors:
                problems.append("%s in two shards" % name)
            folder_tensors[name] = t
            where[name] = shard
    if n > 1:
        with open(os.path.join(folder, "model.safetensors.index.json")) as f:
            index = json.load(f)
        if sorted(index) != ["metadata", "weight_map"]:
            problems.append("index keys %s" % sorted(index))
        if index.get("weight_map") != where:
            problems.append("weight_map differs from the shards' contents")
        total = sum(len(t[2]) for t in folder_tensors.values())
        if index.get("metadata", {}).get("total_size") != total:
            problems.append("total_size %s, tensor bytes %d"
                            % (index.get("metadata", {}).get("total_size"), total))
    reference, _, _ = read(single)
    if sorted(reference) != sorted(folder_tensors):
        problems.append("tensor names differ: %s"
                        % sorted(set(reference) ^ set(folder_tensors)))
    for name, (dtype, shape, data) in reference.items():
        got = folder_tensors.get(name)
        if got is None:
            continue
        if got[0] != dtype or got[1] != shape:
            problems.append("%s: %s %s, single file %s %s" % (name, got[0], got[1], dtype, shape))
        elif got[2] != data:
            problems.append("%s: bytes differ from the single file" % name)
    config_path = os.path.join(folder, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
        if "quantization_config" in config:
            problems.append("config.json keeps quantization_config")
        if torch_dtype and config.get("torch_dtype", config.get("dtype")) != torch_dtype:
            problems.append("config.json torch_dtype %s, expected %s"
                            % (config.get("torch_dtype"), torch_dtype))
    print(json.dumps({"tensors": len(folder_tensors), "shards": n, "problems": problems}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
