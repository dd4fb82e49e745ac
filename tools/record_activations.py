#!/usr/bin/env python3
"""Record sample inputs of every linear layer of a transformers model, for
`qpack verify MODEL.qpack SOURCE --activations acts.safetensors`
(docs/quantization.md section 11).

  record_activations.py MODEL_DIR OUT.safetensors [--text FILE] [--samples N]
                        [--max-tokens T] [--seed S] [--dtype f32|f16|bf16]

Runs the model (torch + transformers, on the GPU when there is one) over the
text (default: a few built-in sentences), and with a forward pre-hook on every
torch.nn.Linear keeps the rows of its input (one row per token, flattened over
batch and sequence). Up to N rows per layer are kept (default 256), chosen
uniformly at random with the seed, so that a long text does not fill memory.
The output maps each layer's WEIGHT name as the checkpoint names it
("model.layers.0.self_attn.q_proj.weight") to a tensor [rows, in_features].
"""
import argparse
import sys

DEFAULT_TEXT = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "The quick brown fox jumps over the lazy dog while the sun sets behind the hills.",
    "In 1905 Einstein published four papers that changed physics: on light, motion and mass.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--text", help="a UTF-8 text file; one sample per non-empty line")
    ap.add_argument("--samples", type=int, default=256, help="rows kept per layer")
    ap.add_argument("--max-tokens", type=int, default=512, help="tokens per line at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32", help="stored dtype")
    a = ap.parse_args()
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        print(f"record_activations: needs torch, transformers and safetensors: {e}", file=sys.stderr)
        return 2
    lines = DEFAULT_TEXT
    if a.text:
        with open(a.text, encoding="utf-8") as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).to(dev).eval()

    rows = {}  # weight name -> list of [tokens, in] float32 CPU tensors
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            key = name + ".weight"

            def hook(m, inputs, key=key):
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float().cpu()
                rows.setdefault(key, []).append(x)

            hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        for line in lines:
            ids = tok(line, return_tensors="pt", truncation=True, max_length=a.max_tokens).to(dev)
            model(**ids)
    for h in hooks:
        h.remove()

    g = torch.Generator().manual_seed(a.seed)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    out = {}
    for key, parts in rows.items():
        x = torch.cat(parts)
        if x.shape[0] > a.samples:
            x = x[torch.randperm(x.shape[0], generator=g)[: a.samples].sort().values]
        out[key] = x.to(dtype).contiguous()
    # A tied lm_head shares the embedding's weight: its key is still lm_head.weight.
    save_file(out, a.out, metadata={"source": a.model, "tool": "qpack record_activations.py"})
    print(f"{a.out}: {len(out)} layers, up to {a.samples} rows each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
