#!/usr/bin/env python3
"""The compressed-tensors and GPTQ folders `qpack convert --format ...`
writes, read back by an independent numpy reader written from the formats'
documentation (docs/hf-quantized.md, /work/shared/design/export-formats.md
sections 2 and 3.1; not from qpack's writer), must decompress bit for bit to
what `qpack dequantize` makes of a .qpack converted from the same source
with the same scheme (axis -1, the same codes).

    hf_export_check.py --qpack QPACK --testgen TESTGEN [--only NAME]

For every case: a Llama-shaped source from `qpack-testgen llama` (awkward,
GQA widths, several layers), the folder export (sharded with a small
--max-shard-size), the .qpack of the same scheme and its dequantized
safetensors. Checks per folder: config.json's quantization_config (and
quantize_config.json for GPTQ), the index, every quantized Linear's tensors'
dtypes and shapes, the decompressed weight == qpack dequantize's bits, every
kept tensor == the source's bytes, the other files copied. Needs numpy
only (its own safetensors reader, which also reads BF16); exit 77 without
numpy. Prints one line per case; exit 1 on the first failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    sys.exit(77)

DTYPES = {"F16": np.uint16, "BF16": np.uint16, "F32": np.float32, "I32": np.int32,
          "I64": np.int64, "U8": np.uint8}


def read_safetensors(path):
    """{name: (dtype name, shape, raw numpy array)} of one file (the format:
    u64 header length, JSON header, data; offsets relative to the data)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(blob[base + a:base + b], dtype=DTYPES[info["dtype"]])
        out[name] = (info["dtype"], list(info["shape"]), arr.reshape(info["shape"]))
    return out


def read_folder(folder):
    """Every tensor of a model folder (index or single file) and the shard list."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        shards = sorted(set(wm.values()))
    else:
        wm = None
        shards = ["model.safetensors"]
    tensors = {}
    for s in shards:
        part = read_safetensors(os.path.join(folder, s))
        for k, v in part.items():
            if wm is not None and wm.get(k) != s:
                raise AssertionError(f"index puts {k} in {wm.get(k)}, found in {s}")
            tensors[k] = v
    if wm is not None and set(wm) != set(tensors):
        raise AssertionError("index and shards list different tensors")
    return tensors, shards


def to_f32(dtype, raw):
    if dtype == "F32":
        return raw.astype(np.float32)
    if dtype == "F16":
        return raw.view(np.float16).astype(np.float32)
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    raise ValueError(dtype)


def round_to(dtype, x64):
    """float64 values that are exact in binary32 -> raw bits of `dtype`,
    round to nearest even (one rounding)."""
    x = x64.astype(np.float32)
    assert np.array_equal(x.astype(np.float64), x64), "product not exact in binary32"
    if dtype == "F16":
        return x.astype(np.float16).view(np.uint16)
    if dtype == "BF16":
        b = x.view(np.uint32).astype(np.uint64)
        return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    raise ValueError(dtype)


def unpack_along_last(words, bits, count):
    """int32 words [..., W]: element i at bits i*b of each row's little-endian
    stream (word i*b // 32, bit i*b % 32; b divides 32)."""
    w = words.view(np.uint32).astype(np.uint64)
    i = np.arange(count)
    return ((w[..., (i * bits) // 32] >> ((i * bits) % 32).astype(np.uint64)) &
            ((1 << bits) - 1)).astype(np.int64)


def ct_decompress(t, module, bits, symmetric, sd):
    """compressed-tensors pack-quantized: (q - z) * s in the scale dtype."""
    shape = t[module + ".weight_shape"]
    assert shape[0] == "I64" and shape[1] == [2], shape[:2]
    out, inn = (int(v) for v in shape[2])
    pk = t[module + ".weight_packed"]
    assert pk[0] == "I32" and pk[1] == [out, (inn * bits + 31) // 32], (module, pk[1])
    sc = t[module + ".weight_scale"]
    assert sc[0] == sd and sc[1][0] == out, (module, sc[:2])
    groups = sc[1][1]
    assert inn % groups == 0
    G = inn // groups
    q = unpack_along_last(pk[2], bits, inn)  # [out, in], stored q + 2^(b-1)
    if symmetric:
        assert module + ".weight_zero_point" not in t
        z = np.full((out, groups), 1 << (bits - 1), dtype=np.int64)
    else:
        zp = t[module + ".weight_zero_point"]
        assert zp[0] == "I32" and zp[1] == [(out * bits + 31) // 32, groups], (module, zp[1])
        # packed along dim 0: row r at bits r*b of column g's stream
        z = unpack_along_last(np.ascontiguousarray(zp[2].T), bits, out).T
    s = to_f32(sd, sc[2]).astype(np.float64)
    k = np.arange(inn) // G
    return round_to(sd, (q - z[:, k]).astype(np.float64) * s[:, k])


def gptq_decompress(t, module, bits, group):
    """GPTQ v1: w[k, n] = scales[g, n] * (q[k, n] - (qzeros + 1)[g, n]), g = g_idx[k],
    in fp16; returned as the HF [out, in] weight."""
    cpw = 32 // bits
    qw = t[module + ".qweight"]
    assert qw[0] == "I32"
    inn = qw[1][0] * cpw
    out = qw[1][1]
    gi = t[module + ".g_idx"]
    assert gi[0] == "I32" and gi[1] == [inn]
    G = group if group > 0 else inn
    assert np.array_equal(gi[2], np.arange(inn) // G), "g_idx is not k // G"
    sc = t[module + ".scales"]
    assert sc[0] == "F16" and sc[1] == [inn // G, out], (module, sc[1])
    qz = t[module + ".qzeros"]
    assert qz[0] == "I32" and qz[1] == [inn // G, out // cpw], (module, qz[1])
    # qweight packed along in: in-feature k at bits (k % cpw)*b of row k // cpw.
    w = qw[2].view(np.uint32).astype(np.uint64)
    k = np.arange(inn)
    q = ((w[k // cpw, :] >> ((k % cpw) * bits).astype(np.uint64)[:, None]) &
         ((1 << bits) - 1)).astype(np.int64)  # [in, out]
    z = unpack_along_last(qz[2], bits, out) + 1  # [in/G, out], v1 stores z - 1
    if True:  # symmetric: z = 2^(b-1), i.e. qzeros words 0x77777777 at 4 bits
        assert np.all(z == (1 << (bits - 1))), "symmetric GPTQ zero-points are not 2^(b-1)"
    s = to_f32("F16", sc[2]).astype(np.float64)
    g = gi[2]
    wk = (q - z[g, :]).astype(np.float64) * s[g, :]
    return round_to("F16", wk).T.copy()


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}")
    return r.stdout


def check_case(args, tmp, case):
    name, fmt, bits, group, symmetric, model_dtype = case[:6]
    # The parameter method (docs/quantization.md §M5), the same for both files.
    method = ["--method", case[6]] if len(case) > 6 else []
    src = os.path.join(tmp, "src-" + model_dtype)
    if not os.path.exists(src):
        run([args.testgen, "llama", src, "--hidden", "256", "--intermediate", "384", "--layers",
             "2", "--vocab", "96", "--heads", "4", "--kv-heads", "2", "--dtype", model_dtype,
             "--seed", "7"])
        with open(os.path.join(src, "tokenizer.json"), "w") as f:
            f.write('{"version": "1.0"}\n')
        with open(os.path.join(src, "generation_config.json"), "w") as f:
            f.write('{"bos_token_id": 1}\n')
    out = os.path.join(tmp, name)
    g = "all" if group == 0 else str(group)
    sd = {"f16": "F16", "bf16": "BF16"}[model_dtype] if fmt == "compressed-tensors" else "F16"
    run([args.qpack, "convert", src, out, "--format", fmt, "-b", str(bits), "-g", g,
         "--symmetric" if symmetric else "--asymmetric", "--max-shard-size", "150KB", "-q"] +
        method)
    qp = os.path.join(tmp, name + ".qpack")
    zp = [] if symmetric else ["--zero-point", "integer"]
    run([args.qpack, "convert", src, qp, "--axis", "-1", "-g", g, "-b", str(bits),
         "--symmetric" if symmetric else "--asymmetric", "--scale-dtype", sd.lower(),
         "--skip", "*embed_tokens*", "--skip", "lm_head*", "-q"] + zp + method)
    deq = os.path.join(tmp, name + ".safetensors")
    run([args.qpack, "dequantize", qp, deq, "--dtype", sd.lower(), "-q"])

    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(src, "config.json")) as f:
        src_config = json.load(f)
    qc = config.pop("quantization_config")
    assert config == src_config, "config.json changed beyond quantization_config"
    if fmt == "compressed-tensors":
        w = qc["config_groups"]["group_0"]["weights"]
        assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
        assert qc["quantization_status"] == "compressed" and qc["ignore"] == ["lm_head"]
        assert qc["config_groups"]["group_0"]["targets"] == ["Linear"]
        assert w["num_bits"] == bits and w["symmetric"] == symmetric and w["type"] == "int"
        assert w["strategy"] == ("channel" if group == 0 else "group")
        assert w["group_size"] == (None if group == 0 else group)
    else:
        with open(os.path.join(out, "quantize_config.json")) as f:
            assert json.load(f) == qc, "quantize_config.json differs from quantization_config"
        assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == "gptq"
        assert qc["bits"] == bits and qc["group_size"] == (group if group else -1)
        assert qc["sym"] is True and qc["desc_act"] is False
    for extra in ("tokenizer.json", "generation_config.json"):
        with open(os.path.join(src, extra)) as a, open(os.path.join(out, extra)) as b:
            assert a.read() == b.read(), extra + " not copied"

    tensors, shards = read_folder(out)
    source, _ = read_folder(src)
    reference = read_safetensors(deq)
    assert len(shards) > 1, "the small --max-shard-size should give several shards"
    quantized = 0
    for tname, (dt, shape, raw) in source.items():
        module = tname[:-len(".weight")]
        linear = len(shape) == 2 and "embed_tokens" not in tname and not tname.startswith("lm_head")
        if not linear:
            k = tensors[tname]
            assert k[0] == dt and k[1] == shape and np.array_equal(k[2], raw), tname + " not kept"
            continue
        assert tname not in tensors, tname + " left unquantized"
        ref = reference[tname]
        assert ref[0] == sd and ref[1] == shape
        if fmt == "compressed-tensors":
            got = ct_decompress(tensors, module, bits, symmetric, sd)
        else:
            got = gptq_decompress(tensors, module, bits, group)
        if not np.array_equal(got, ref[2]):
            bad = np.argwhere(got != ref[2])
            i = tuple(bad[0])
            raise AssertionError(f"{name}: {tname} differs at {len(bad)} elements, first {i}: "
                                 f"{got[i]:#06x} vs qpack dequantize {ref[2][i]:#06x}")
        quantized += 1
    produced = set(tensors)
    expected = set()
    for tname, (dt, shape, raw) in source.items():
        m = tname[:-len(".weight")]
        if len(shape) == 2 and "embed_tokens" not in tname and not tname.startswith("lm_head"):
            if fmt == "compressed-tensors":
                expected |= {m + ".weight_packed", m + ".weight_scale", m + ".weight_shape"}
                if not symmetric:
                    expected.add(m + ".weight_zero_point")
            else:
                expected |= {m + ".qweight", m + ".qzeros", m + ".scales", m + ".g_idx"}
        else:
            expected.add(tname)
    assert produced == expected, f"unexpected tensors {sorted(produced ^ expected)[:5]}"
    print(f"ok {name}: {quantized} Linear weights equal qpack dequantize bit for bit, "
          f"{len(shards)} shards")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qpack", required=True)
    ap.add_argument("--testgen", required=True)
    ap.add_argument("--only")
    args = ap.parse_args()
    cases = [
        # name, format, bits, group (0 = channel), symmetric, model dtype[, method]
        ("ct-w4-g128-sym-bf16", "compressed-tensors", 4, 128, True, "bf16"),
        ("ct-w8-g64-sym-f16", "compressed-tensors", 8, 64, True, "f16"),
        ("ct-w2-g32-sym-bf16", "compressed-tensors", 2, 32, True, "bf16"),
        ("ct-w4-channel-sym-f16", "compressed-tensors", 4, 0, True, "f16"),
        ("ct-w4-g128-asym-bf16", "compressed-tensors", 4, 128, False, "bf16"),
        ("ct-w8-g32-asym-f16", "compressed-tensors", 8, 32, False, "f16"),
        ("ct-w2-g64-asym-bf16", "compressed-tensors", 2, 64, False, "bf16"),
        ("ct-w4-channel-asym-f16", "compressed-tensors", 4, 0, False, "f16"),
        ("ct-w4-g128-asym-search-bf16", "compressed-tensors", 4, 128, False, "bf16", "search"),
        ("ct-w8-g32-asym-search-f16", "compressed-tensors", 8, 32, False, "f16", "search"),
        ("gptq-w4-g128-f16", "gptq", 4, 128, True, "f16"),
        ("gptq-w8-g32-bf16", "gptq", 8, 32, True, "bf16"),
        ("gptq-w4-channel-bf16", "gptq", 4, 0, True, "bf16"),
    ]
    tmp = tempfile.mkdtemp(prefix="qpack-hf-export-")
    try:
        for case in cases:
            if args.only and case[0] != args.only:
                continue
            check_case(args, tmp, case)
    except AssertionError as e:
        print(f"FAIL {e}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
