#!/usr/bin/env python3
"""An HF Llama safetensors folder -> GGUF, written with gguf-py only.

The second, independent path to a llama.cpp file: gguf-py's GGUFWriter and its
numpy quantizers (byte-identical to ggml's reference for the legacy types), so
the llama.cpp harness can be proven without qpack's exporter, and the two files
can be compared tensor by tensor.

  gguf_from_hf.py MODEL_DIR OUT.gguf [--type F32|F16|Q8_0|Q4_0|Q4_1|Q5_0|Q5_1]
                  [--heads N] [--kv-heads N] [--vocab-from VOCAB.gguf] [--no-permute]

Every 2-D weight gets --type (llama-quantize --pure; a row length that is not a
multiple of 32 falls back to F16, as llama-quantize does); norms stay F32. The Q/K
rows are permuted from HF's rotate-half order to GGML's adjacent pairs
(--no-permute skips it: a negative control that must give wrong logits).
Without --vocab-from the file says tokenizer.ggml.model = "none" plus the
vocabulary size: llama.cpp then runs token ids but cannot tokenize text.
"""
import argparse
import json
import os
import sys

import numpy as np

try:
    import gguf
    from safetensors.numpy import load_file
except ImportError as e:  # the caller's test skips
    print(f"gguf_from_hf: {e}", file=sys.stderr)
    sys.exit(77)

TYPES = {
    "F32": gguf.GGMLQuantizationType.F32,
    "F16": gguf.GGMLQuantizationType.F16,
    "Q8_0": gguf.GGMLQuantizationType.Q8_0,
    "Q4_0": gguf.GGMLQuantizationType.Q4_0,
    "Q4_1": gguf.GGMLQuantizationType.Q4_1,
    "Q5_0": gguf.GGMLQuantizationType.Q5_0,
    "Q5_1": gguf.GGMLQuantizationType.Q5_1,
}
# llama_ftype numbers (include/llama.h): what general.file_type says for a pure file.
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9}


def permute_rows(w, n_head):
    """HF rotate-half rows -> GGML's adjacent-pair rows, per head (whole rows move)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_hf(model_dir):
    tensors = {}
    for f in sorted(os.listdir(model_dir)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(model_dir, f)))
    with open(os.path.join(model_dir, "config.json")) as fh:
        config = json.load(fh)
    return tensors, config


def gguf_name(hf):
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf in fixed:
        return fixed[hf]
    parts = hf.split(".")
    if parts[:2] != ["model", "layers"]:
        raise ValueError(f"unexpected tensor {hf}")
    n, rest = parts[2], ".".join(parts[3:])
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{n}.{per_layer[rest]}"


def copy_tokenizer(writer, vocab_path):
    r = gguf.GGUFReader(vocab_path)
    for name, field in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = field.types[0]
        value = field.contents()
        if t == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, value, t, sub_type=field.types[-1])
        else:
            writer.add_key_value(name, value, t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--type", default="F32", choices=sorted(TYPES))
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--vocab-from")
    ap.add_argument("--no-permute", action="store_true")
    a = ap.parse_args()

    tensors, cfg = load_hf(a.model_dir)
    hidden = cfg["hidden_size"]
    heads = a.heads or cfg.get("num_attention_heads")
    if not heads:
        sys.exit("gguf_from_hf: config.json has no num_attention_heads: pass --heads")
    kv_heads = a.kv_heads or cfg.get("num_key_value_heads") or heads
    layers = cfg["num_hidden_layers"]
    vocab = cfg["vocab_size"]
    eps = float(cfg.get("rms_norm_eps", 1e-5))
    qtype = TYPES[a.type]

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("qpack-test")
    w.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    w.add_file_type(FILE_TYPES[a.type])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if a.vocab_from:
        copy_tokenizer(w, a.vocab_from)
    else:
        w.add_tokenizer_model("none")

    # As convert_hf_to_gguf.py's LlamaModel: lm_head.weight, when the checkpoint has it,
    # becomes output.weight even with tie_word_embeddings; without it llama.cpp uses token_embd.
    for hf in sorted(tensors, key=lambda n: (n.count("layers"), n)):
        x = tensors[hf].astype(np.float32)
        name = gguf_name(hf)
        if not a.no_permute and name.endswith("attn_q.weight"):
            x = permute_rows(x, heads)
        elif not a.no_permute and name.endswith("attn_k.weight"):
            x = permute_rows(x, kv_heads)
        if x.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, np.ascontiguousarray(x))
        elif qtype == gguf.GGMLQuantizationType.F16 or x.shape[-1] % 32 != 0:
            # llama-quantize's fallback: a row that is not whole 32-blocks is F16
            w.add_tensor(name, x.astype(np.float16))
        else:
            q = gguf.quants.quantize(x, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
