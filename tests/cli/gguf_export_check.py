#!/usr/bin/env python3
"""Independent check of a GGUF qpack wrote from a Hugging Face safetensors
model, with gguf-py (PyPI `gguf`) and numpy only.

    gguf_export_check.py HF_DIR OUT.gguf [method]

Reads every key and every tensor of OUT.gguf with gguf.GGUFReader, finds
each tensor's HF source (names as llama.cpp's convert_hf_to_gguf.py maps
them), applies llama.cpp's Q/K permutation to q_proj/k_proj, and compares
the bytes with what gguf-py makes of the same numbers: gguf.quants.quantize
for the block types it has (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16), numpy's
float16/float32 otherwise. Prints one JSON object: keys (name -> value),
tensors (name -> {type, shape, equal}), and the first mismatches.

With `method` (a file written with --method search or refit), the Q4_1 and
Q5_1 tensors also get, block by block against gguf-py's quantize (llama.cpp's
bytes): blocks, blocks_changed, blocks_worse (blocks whose float64 squared
error under gguf-py's dequantize exceeds llama.cpp's block's, beyond the
summation order's 1e-12 relative), error (the file's) and error_llama.
Exit 77 when gguf, numpy or safetensors cannot be imported.
"""
import json
import os
import sys

try:
    import numpy as np
    import gguf
    from gguf.quants import quantize
    from safetensors.numpy import load_file
except ImportError:
    sys.exit(77)


def hf_name(g):
    fixed = {"token_embd.weight": "model.embed_tokens.weight",
             "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if g in fixed:
        return fixed[g]
    parts = g.split(".", 2)
    layer = {"attn_norm.weight": "input_layernorm.weight",
             "ffn_norm.weight": "post_attention_layernorm.weight",
             "attn_q.weight": "self_attn.q_proj.weight",
             "attn_k.weight": "self_attn.k_proj.weight",
             "attn_v.weight": "self_attn.v_proj.weight",
             "attn_output.weight": "self_attn.o_proj.weight",
             "attn_q.bias": "self_attn.q_proj.bias",
             "attn_k.bias": "self_attn.k_proj.bias",
             "attn_v.bias": "self_attn.v_proj.bias",
             "ffn_gate.weight": "mlp.gate_proj.weight",
             "ffn_up.weight": "mlp.up_proj.weight",
             "ffn_down.weight": "mlp.down_proj.weight"}[parts[2]]
    return "model.layers.%s.%s" % (parts[1], layer)


def permute(w, n_head):
    # convert_hf_to_gguf.py's LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def field_value(f):
    v = f.contents()
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", "replace")
    return v


def block_errors(x, got, want, qt):
    """Per-block float64 squared errors of the file's blocks and llama.cpp's."""
    from gguf.quants import dequantize
    bb = 20 if qt == gguf.GGMLQuantizationType.Q4_1 else 24
    g = np.frombuffer(got, dtype=np.uint8)
    w = np.frombuffer(want, dtype=np.uint8)
    xs = x.astype(np.float64).reshape(-1, 32)
    e_got = ((dequantize(g, qt).astype(np.float64).reshape(-1, 32) - xs) ** 2).sum(axis=1)
    e_want = ((dequantize(w, qt).astype(np.float64).reshape(-1, 32) - xs) ** 2).sum(axis=1)
    changed = (g.reshape(-1, bb) != w.reshape(-1, bb)).any(axis=1)
    return {"blocks": int(xs.shape[0]), "blocks_changed": int(changed.sum()),
            "blocks_worse": int((e_got > e_want * (1 + 1e-12)).sum()),
            "error": float(e_got.sum()), "error_llama": float(e_want.sum())}


def main():
    hf_dir, path = sys.argv[1], sys.argv[2]
    method = len(sys.argv) > 3 and sys.argv[3] == "method"
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    tensors = {}
    for fn in sorted(os.listdir(hf_dir)):
        if fn.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(hf_dir, fn)))
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    do_permute = cfg.get("model_type", "llama") in ("llama", "mistral")

    r = gguf.GGUFReader(path)
    out = {"keys": {}, "tensors": {}, "mismatches": []}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        out["keys"][k] = field_value(f)
    T = gguf.GGMLQuantizationType
    for t in r.tensors:
        src = tensors[hf_name(t.name)]
        # bfloat16 has no numpy dtype: safetensors.numpy refuses it, so the
        # tests use F16/F32 sources.
        x = src.astype(np.float32)
        if do_permute and t.name.endswith(("attn_q.weight", "attn_q.bias")):
            x = permute(x, n_head)
        if do_permute and t.name.endswith(("attn_k.weight", "attn_k.bias")):
            x = permute(x, n_kv)
        got = np.asarray(t.data).view(np.uint8).tobytes()
        qt = t.tensor_type
        if qt == T.F32:
            want = x.astype(np.float32).tobytes()
        elif qt == T.F16:
            want = x.astype(np.float16).tobytes()
        else:
            want = quantize(x, qt).tobytes()
        eq = got == want
        out["tensors"][t.name] = {"type": qt.name, "shape": [int(d) for d in t.shape],
                                  "equal": eq, "bytes": len(got)}
        if method and qt in (T.Q4_1, T.Q5_1):
            out["tensors"][t.name].update(block_errors(x, got, want, qt))
        if not eq and len(out["mismatches"]) < 5:
            out["mismatches"].append(t.name)
    print(json.dumps(out, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


if __name__ == "__main__":
    main()
