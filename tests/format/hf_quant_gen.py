#!/usr/bin/env python3
"""Writes compressed-tensors pack-quantized and GPTQ model folders FROM THE
DOCUMENTED LAYOUTS (docs/hf-reading.md; /work/shared/design/export-formats.md
sections 2 and 3.1), independently of any qpack writer, with their own
float64/numpy dequantization. Used by hf_read_check.py.

Layouts, for a Linear P of HF shape [out, in], b bits, group size G:
  compressed-tensors: P.weight_packed int32 [out, ceil(in*b/32)], element i of
    a row at bits i*b of the row's little-endian bit stream, stored q + 2^(b-1);
    P.weight_scale [out, in/G] (scale dtype); P.weight_zero_point int32
    [ceil(out*b/32), in/G] packed along dim 0, stored z + 2^(b-1) (asymmetric
    only); P.weight_shape int64 [2]. x = (q - z) * s in the scale dtype.
  GPTQ: P.qweight int32 [in*b/32, out], word (r, n) holds input rows
    r*(32/b) + i at bits i*b; P.qzeros int32 [in/G, out*b/32] packed along
    out, v1 stores z - 1; P.scales fp16 [in/G, out]; P.g_idx int32 [in] = k//G.
    x[n, k] = s[g, n] * (q[k, n] - z[g, n]).
Codes, scales and zero-points are drawn at random (every code value, scales
over many binades incl. F16 subnormals), not quantized from floats: the
reader is checked on every value the layout can hold.
"""
import json
import os
import struct

import numpy as np

DT = {"F16": np.float16, "F32": np.float32, "I32": np.int32, "I64": np.int64, "BF16": np.uint16,
      "F64": np.float64, "U8": np.uint8}


def st_bytes(tensors, metadata=None):
    """safetensors bytes of {name: (dtype, shape, ndarray)} in insertion order."""
    header = {}
    blobs = []
    off = 0
    for name, (dt, shape, arr) in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_safetensors(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(st_bytes(tensors, metadata))


def bf16_bits_of_f32(x32):
    """Round float32 to bfloat16, nearest even (finite values), as uint16 bits."""
    u = x32.view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return r.astype(np.uint16)


def bf16_to_f64(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def random_scales(rng, shape, sdt):
    """Scales over many binades, both signs rarely negative, some tiny."""
    mag = np.exp2(rng.uniform(-20, 2, size=shape))
    mag[rng.random(shape) < 0.02] = 0.0  # degenerate groups
    mag[rng.random(shape) < 0.03] *= -1.0  # negative scales: q = 0 gives -0
    if sdt == "F16":
        tiny = rng.random(shape) < 0.05  # F16 subnormals
        mag[tiny] = np.exp2(rng.uniform(-24, -15, size=int(tiny.sum())))
        s = mag.astype(np.float16)
        return s, s.astype(np.float64)
    if sdt == "BF16":
        bits = bf16_bits_of_f32(mag.astype(np.float32))
        return bits, bf16_to_f64(bits)
    s = mag.astype(np.float32)
    return s, s.astype(np.float64)


def round_to(x64, sdt):
    """The exact float64 product rounded once to the scale dtype: (dtype, bytes-able array)."""
    if sdt == "F16":
        return x64.astype(np.float16)
    if sdt == "BF16":
        # (q - z) * s has at most 9 + 8 significant bits: exact in float32.
        x32 = x64.astype(np.float32)
        assert np.array_equal(x32.astype(np.float64), x64)
        return bf16_bits_of_f32(x32)
    return x64.astype(np.float32)  # one rounding from the exact float64 product


def pack_rows_lsb(vals, b, words):
    """[rows, n] unsigned b-bit values -> int32 [rows, words], element i at bits i*b."""
    rows, n = vals.shape
    out = np.zeros((rows, words), dtype=np.uint64)
    for i in range(n):
        bit = i * b
        out[:, bit // 32] |= (vals[:, i].astype(np.uint64) << np.uint64(bit % 32))
    return (out & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


def pack_cols_lsb(vals, b, words):
    """[n, cols] values packed along dim 0 -> int32 [words, cols]."""
    return np.ascontiguousarray(pack_rows_lsb(np.ascontiguousarray(vals.T), b, words).T)


class Linear:
    def __init__(self, name, out, inn):
        self.name, self.out, self.inn = name, out, inn


def make_codes(rng, fmt, b, sym, out, inn, G, v2):
    """Unsigned stored codes u [out, in] and integer zero-points z [out, P] (None: symmetric)."""
    P = inn // G
    u = rng.integers(0, 1 << b, size=(out, inn), dtype=np.int64)
    if sym:
        return u, None
    lo = 1 if (fmt == "gptq" and not v2) else 0  # v1 cannot store z = 0
    z = rng.integers(lo, 1 << b, size=(out, P), dtype=np.int64)
    return u, z


def dequant(u, z, s64, b, sym, G, fmt):
    """float64 (q - z) * s per element, [out, in]; exact."""
    out, inn = u.shape
    zz = np.full((out, inn // G), 1 << (b - 1), dtype=np.int64) if sym else z
    zfull = np.repeat(zz, G, axis=1)
    sfull = np.repeat(s64, G, axis=1)
    return (u - zfull).astype(np.float64) * sfull


def write_model(folder, fmt, b, sym, group, sdt, shards, seed, v2=False, linears=None,
                kept_dtype="BF16"):
    """Writes a folder; returns {name: (dtype, shape, array)} of the expected dequantized
    tensors (quantized ones in the scale dtype, kept ones as stored), plus the float64
    reconstruction of each quantized tensor in a second dict."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    per = 32 // b
    if linears is None:
        if fmt == "gptq":
            unit = max(per, 8)
            linears = [Linear("model.layers.0.self_attn.q_proj", 8 * unit, 128),
                       Linear("model.layers.0.mlp.down_proj", 4 * unit, 256),
                       Linear("model.layers.1.self_attn.o_proj", 8 * unit, 384)]
        else:
            linears = [Linear("model.layers.0.self_attn.q_proj", 40, 128),
                       Linear("model.layers.0.mlp.down_proj", 13, 256),
                       Linear("model.layers.1.self_attn.o_proj", 7, 384)]
            if group == "channel":
                linears.append(Linear("model.layers.1.mlp.up_proj", 9, 50))
    stored = {}
    expected = {}
    exact = {}
    hidden = 64
    emb = rng.standard_normal((16, hidden)).astype(np.float32)
    if kept_dtype == "BF16":
        stored["model.embed_tokens.weight"] = ("BF16", emb.shape, bf16_bits_of_f32(emb))
    else:
        stored["model.embed_tokens.weight"] = ("F16", emb.shape, emb.astype(np.float16))
    expected["model.embed_tokens.weight"] = stored["model.embed_tokens.weight"]
    for lin in linears:
        out, inn = lin.out, lin.inn
        G = inn if group == "channel" else group
        P = inn // G
        u, z = make_codes(rng, fmt, b, sym, out, inn, G, v2)
        if fmt == "gptq":
            s_store, s64 = random_scales(rng, (P, out), sdt)
            s64_rows = s64.T
        else:
            s_store, s64 = random_scales(rng, (out, P), sdt)
            s64_rows = s64
        x64 = dequant(u, z, s64_rows, b, sym, G, fmt)
        exact[lin.name + ".weight"] = x64
        expected[lin.name + ".weight"] = (sdt, (out, inn), round_to(x64, sdt))
        p = lin.name
        if fmt == "compressed-tensors":
            stored[p + ".weight_packed"] = ("I32", (out, -(-inn * b // 32)),
                                            pack_rows_lsb(u, b, -(-inn * b // 32)))
            stored[p + ".weight_scale"] = (sdt, (out, P), s_store)
            if not sym:
                zw = -(-out * b // 32)
                stored[p + ".weight_zero_point"] = ("I32", (zw, P), pack_cols_lsb(z, b, zw))
            stored[p + ".weight_shape"] = ("I64", (2,), np.array([out, inn], dtype=np.int64))
        else:
            # qweight [in/per, out]: column n's codes along in, packed LSB-first.
            qw = pack_rows_lsb(np.ascontiguousarray(u), b, inn // per)  # [out, in/per]
            stored[p + ".qweight"] = ("I32", (inn // per, out), np.ascontiguousarray(qw.T))
            zz = np.full((out, P), 1 << (b - 1), dtype=np.int64) if sym else z
            zst = zz if v2 else zz - 1
            qz = pack_rows_lsb(np.ascontiguousarray(zst.T), b, out // per)  # [P, out/per]
            stored[p + ".qzeros"] = ("I32", (P, out // per), qz)
            stored[p + ".scales"] = (sdt, (P, out), s_store)
            stored[p + ".g_idx"] = ("I32", (inn,), (np.arange(inn) // G).astype(np.int32))
        bias = rng.standard_normal(out).astype(np.float16)
        stored[p + ".bias"] = ("F16", (out,), bias)
        expected[p + ".bias"] = stored[p + ".bias"]
    norm = rng.standard_normal(hidden).astype(np.float32)
    stored["model.norm.weight"] = ("F32", (hidden,), norm)
    expected["model.norm.weight"] = stored["model.norm.weight"]

    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": hidden, "torch_dtype": "bfloat16"}
    if fmt == "compressed-tensors":
        weights = {"num_bits": b, "type": "int", "symmetric": sym, "dynamic": False,
                   "actorder": None, "observer": "minmax", "observer_kwargs": {}}
        if group == "channel":
            weights.update({"strategy": "channel", "group_size": None})
        else:
            weights.update({"strategy": "group", "group_size": group})
        config["quantization_config"] = {
            "config_groups": {"group_0": {"format": "pack-quantized", "targets": ["Linear"],
                                          "weights": weights, "input_activations": None,
                                          "output_activations": None}},
            "format": "pack-quantized", "global_compression_ratio": None, "ignore": ["lm_head"],
            "kv_cache_scheme": None, "quant_method": "compressed-tensors",
            "quantization_status": "compressed", "sparsity_config": {}, "transform_config": {},
            "version": "0.20.1"}
    else:
        qc = {"bits": b, "group_size": -1 if group == "channel" else group, "desc_act": False,
              "sym": sym, "true_sequential": True, "damp_percent": 0.01, "static_groups": False,
              "quant_method": "gptq", "checkpoint_format": "gptq_v2" if v2 else "gptq"}
        config["quantization_config"] = qc
        with open(os.path.join(folder, "quantize_config.json"), "w") as f:
            json.dump(qc, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = list(stored)
    if shards <= 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), stored,
                          {"format": "pt"})
    else:
        # Split the tensor list into `shards` runs (companions may land apart).
        cut = [round(i * len(names) / shards) for i in range(shards + 1)]
        wm = {}
        for i in range(shards):
            fn = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
            part = {n: stored[n] for n in names[cut[i]:cut[i + 1]]}
            write_safetensors(os.path.join(folder, fn), part, {"format": "pt"})
            for n in part:
                wm[n] = fn
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f, indent=2)
    return expected, exact, stored


def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)} of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, e = v["data_offsets"]
        out[name] = (v["dtype"], tuple(v["shape"]), data[base + a:base + e])
    return out
