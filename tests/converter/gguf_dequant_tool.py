#!/usr/bin/env python3
"""gguf-py (PyPI `gguf`) as the reference for `qpack dequantize X.gguf` and
`qpack verify X.gguf`, for tests/converter/test_dequantize_gguf.cpp and
tests/verify/test_verify_gguf.cpp. Test-only: the product never runs Python.

  write FILE SEED [SRC.safetensors [SRC.gguf]]
      a GGUF of every legacy type made by gguf.quants.quantize from fresh
      random floats at awkward shapes (one of them larger than a block of
      verify's fixed summation order), plus F32, F16 and BF16 tensors, scalar
      and array metadata; with SRC, also the float32 source as safetensors
      (numpy shape = ne reversed) and as an F32 GGUF, for verify
  write-kquants FILE SEED [SRC.safetensors]
      Q2_K..Q6_K tensors of random block bytes with finite random f16 scales
      (gguf-py has no K-quant quantizer, but dequantizes them); with SRC,
      gguf-py's dequantization of them as the source (verify: error 0)
  check FILE.gguf OUT.safetensors [f32|f16|bf16]
      every tensor of OUT against gguf.quants.dequantize of FILE's, bit for
      bit; block types rounded to the dtype given (nearest even: numpy's
      astype for f16, the bit rule below for bf16), F32/F16/BF16 tensors as
      stored; prints JSON {tensor: {"equal": bool, "shape_ok": bool, ...}}
  hf-to-gguf HF_DIR OUT.gguf [nopermute]
      an HF Llama folder (config.json, model.safetensors) as the GGUF
      llama.cpp's converter would write, restated here in numpy: its names,
      the Q/K rows permuted (reshape(n_head, 2, rows/n_head/2, cols)
      .swapaxes(1, 2)), 2-D tensors in their own dtype, norms in F32; with
      `nopermute`, the Q/K rows left as they are (a wrong file)
  metrics FILE.gguf SRC.safetensors
      the verify metrics of every tensor in float64 numpy, as JSON
"""
import json
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

LEGACY = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]
KQUANTS = {  # type: (block bytes, [offsets of f16 fields])
    Q.Q2_K: (84, [80, 82]),
    Q.Q3_K: (110, [108]),
    Q.Q4_K: (144, [0, 2]),
    Q.Q5_K: (176, [0, 2]),
    Q.Q6_K: (210, [208]),
}


def awkward_rows(rng):
    return [1, 3, 7, int(rng.integers(2, 12))]


def write(path, seed, src_path=None, src_gguf=None):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("test.f32", 0.1)
    w.add_float64("test.f64", 1.0 / 3.0)
    w.add_int32("test.i32", -7)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "h\u00e9llo")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    src = {}
    rows = awkward_rows(rng)
    cols = [32, 96, 160, 32 * int(rng.integers(1, 9))]
    for qt in LEGACY:
        for i, (r, c) in enumerate(zip(rows, cols)):
            name = f"blk.{i % 2}.{qt.name.lower()}_{i}.weight"
            scale = float(rng.choice([1e-3, 0.02, 1.0, 50.0]))
            x = (rng.standard_normal((r, c)) * scale).astype(np.float32)
            if i == 2:
                x[0, :32] = 0.0  # an all-zero block
            data = gguf.quants.quantize(x, qt)
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)
            src[name] = x
    x = rng.standard_normal((37, 1024)).astype(np.float32)
    data = gguf.quants.quantize(x, Q.Q4_1)
    w.add_tensor("blk.1.big.weight", data, raw_shape=data.shape, raw_dtype=Q.Q4_1)
    src["blk.1.big.weight"] = x
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w.add_tensor("output_norm.weight", x)
    src["output_norm.weight"] = x
    x = rng.standard_normal((3, 33)).astype(np.float32)
    h = x.astype(np.float16)
    w.add_tensor("blk.0.f16.weight", h)
    src["blk.0.f16.weight"] = x
    x = rng.standard_normal((2, 3, 17)).astype(np.float32)
    b = gguf.quants.quantize(x, Q.BF16)
    w.add_tensor("blk.1.bf16.weight", b, raw_shape=b.shape, raw_dtype=Q.BF16)
    src["blk.1.bf16.weight"] = x
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if src_path:
        from safetensors.numpy import save_file
        save_file(src, src_path)
    if src_gguf:
        ws = gguf.GGUFWriter(src_gguf, arch="llama")
        for name, x in src.items():
            ws.add_tensor(name, x)
        ws.write_header_to_file()
        ws.write_kv_data_to_file()
        ws.write_tensors_to_file()
        ws.close()


def write_kquants(path, seed, src_path=None):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch="llama")
    src = {}
    for qt, (nbytes, f16_at) in KQUANTS.items():
        shapes = [(1, 1), (3, 2), (int(rng.integers(2, 6)), int(rng.integers(1, 4)))]
        for k, (rows, blocks) in enumerate(shapes):
            raw = rng.integers(0, 256, size=(rows, blocks, nbytes), dtype=np.uint8)
            for off in f16_at:
                v = (rng.standard_normal((rows, blocks)) * 0.05).astype(np.float16)
                raw[:, :, off:off + 2] = v.view(np.uint8).reshape(rows, blocks, 2)
            data = raw.reshape(rows, blocks * nbytes)
            name = f"{qt.name.lower()}_{k}_{rows}x{blocks}"
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)
            src[name] = gguf.quants.dequantize(data, qt).astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if src_path:
        from safetensors.numpy import save_file
        save_file(src, src_path)


def reference(t):
    qt = Q(int(t.tensor_type))
    ne = [int(v) for v in t.shape]
    shape = tuple(reversed(ne))
    data = np.ascontiguousarray(t.data)
    if qt == Q.F32:
        return data.view(np.float32).reshape(shape)
    if qt == Q.F16:
        return data.view(np.float16).reshape(shape)
    if qt == Q.BF16:
        return data.view(np.uint16).reshape(shape)  # compared as bits
    return gguf.quants.dequantize(data, qt).astype(np.float32).reshape(shape)


ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
             "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64}


def load_safetensors(path):
    """The tensors of a safetensors file by its own header (numpy's loader has
    no bfloat16; BF16 comes back as uint16 bits)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + a:8 + n + b], dtype=ST_DTYPES[v["dtype"]]).reshape(
            v["shape"])
    return out


def f32_to_bf16_bits(x):
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((b[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def check(gguf_path, st_path, dtype="f32"):
    out = load_safetensors(st_path)
    r = gguf.GGUFReader(gguf_path)
    res = {}
    for t in r.tensors:
        ref = reference(t)
        if Q(int(t.tensor_type)) not in (Q.F32, Q.F16, Q.BF16):
            if dtype == "f16":
                ref = ref.astype(np.float16)
            elif dtype == "bf16":
                ref = f32_to_bf16_bits(ref)
        got = out.get(t.name)
        if got is None:
            res[t.name] = {"present": False}
            continue
        ok_shape = list(got.shape) == list(ref.shape)
        eq = ok_shape and got.dtype.itemsize == ref.dtype.itemsize and bool(
            np.array_equal(got.view(f"u{got.dtype.itemsize}"), ref.view(f"u{ref.dtype.itemsize}")))
        res[t.name] = {"present": True, "shape_ok": ok_shape, "equal": eq,
                       "dtype": str(got.dtype), "type": Q(int(t.tensor_type)).name}
    print(json.dumps(res))


def metrics(gguf_path, src_path):
    from safetensors.numpy import load_file
    src = load_file(src_path)
    r = gguf.GGUFReader(gguf_path)
    res = {}
    for t in r.tensors:
        qt = Q(int(t.tensor_type))
        if qt == Q.BF16:
            hat = (np.ascontiguousarray(t.data).view(np.uint16).astype(np.uint32) << 16).view(
                np.float32)
        else:
            hat = reference(t)
        x = src[t.name].astype(np.float64).ravel()
        xh = np.asarray(hat, dtype=np.float32).astype(np.float64).ravel()
        e = x - xh
        sq_err, sq_ref, sq_hat = float(e @ e), float(x @ x), float(xh @ xh)
        res[t.name] = {"type": qt.name,
                       "rel_error": (sq_err ** 0.5) / (sq_ref ** 0.5) if sq_ref > 0 else 0.0,
                       "max_abs_error": float(np.max(np.abs(e))),
                       "max_abs_index": int(np.argmax(np.abs(e))),
                       "cosine": float(x @ xh) / (sq_ref ** 0.5 * sq_hat ** 0.5)
                       if sq_ref > 0 and sq_hat > 0 else None,
                       "sq_err": sq_err, "elements": int(x.size)}
    print(json.dumps(res))


HF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
            "output_norm.weight", "lm_head.weight": "output.weight"}
HF_LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
            "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
            "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
            "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def hf_to_gguf(hf_dir, out, permute=True):
    cfg = json.load(open(hf_dir + "/config.json"))
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads",
                                                       cfg["num_attention_heads"])
    w = gguf.GGUFWriter(out, arch="llama")
    for name, x in load_safetensors(hf_dir + "/model.safetensors").items():
        if name in HF_NAMES:
            g = HF_NAMES[name]
        else:
            parts = name.split(".")  # model.layers.N.<kind>.weight
            g = f"blk.{parts[2]}.{HF_LAYER['.'.join(parts[3:-1])]}.{parts[-1]}"
        n_head = heads if ".attn_q." in g else kv if ".attn_k." in g else 0
        if n_head and permute:
            r = x.shape[0]
            x = x.reshape(n_head, 2, r // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(
                x.shape)
        x = np.ascontiguousarray(x)
        if x.ndim == 1:
            x = x.astype(np.float32) if x.dtype != np.uint16 else (
                x.astype(np.uint32) << 16).view(np.float32)
        if x.dtype == np.uint16:
            w.add_tensor(g, x.view(np.uint8).reshape(x.shape[0], -1), raw_shape=None,
                         raw_dtype=Q.BF16)
        else:
            w.add_tensor(g, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None,
              sys.argv[5] if len(sys.argv) > 5 else None)
    elif cmd == "write-kquants":
        write_kquants(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "f32")
    elif cmd == "hf-to-gguf":
        hf_to_gguf(sys.argv[2], sys.argv[3], len(sys.argv) <= 4 or sys.argv[4] != "nopermute")
    elif cmd == "metrics":
        metrics(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + cmd)
