#!/usr/bin/env python3
"""The real-client check of qpack's Hugging Face folder exports (issue 14).

For each source model and each export scheme:
  1. `qpack convert SRC OUT --format compressed-tensors|gptq ...`;
  2. `qpack dequantize OUT DEQ` (a model folder, the scale dtype);
  3. transformers `AutoModelForCausalLM.from_pretrained(OUT)` loads it; with
     dequantize=True (compressed-tensors) its decompressed Linear weights must
     equal DEQ's tensors bit for bit;
  4. the logits of OUT loaded as users load it (compressed, decompressed on
     the first forward) must match those of DEQ loaded the same way;
  5. DEQ's logits are compared with the source model's (within the
     quantization error: reported, with top-1 agreement).
Needs torch, transformers and compressed-tensors (and optimum + gptqmodel for
GPTQ; without them the GPTQ rows say so). Runs where a GPU is (cuda) or on
the CPU. Writes a JSON report and prints a table; exits 1 when a bit-for-bit
check or a logits match fails, 77 when transformers is missing.

  check_transformers.py --qpack BUILD/tools/qpack --testgen BUILD/tools/qpack-testgen \\
      --work DIR [--stories DIR_WITH_stories260K.bin] [--device cuda|cpu] [--json OUT.json]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time

try:
    import numpy as np
    import torch
    import transformers
    from safetensors import safe_open
except ImportError as e:  # pragma: no cover - the check needs them
    print(f"SKIP: {e}")
    sys.exit(77)

gptqmodel = None  # imported by check_one for the GPTQ rows

# (label, format, convert options)
SCHEMES = [
    ("ct-w4-sym-g128", "compressed-tensors", ["--bits", "4", "--group-size", "128"]),
    ("ct-w4-asym-g64", "compressed-tensors", ["--bits", "4", "--group-size", "64", "--asymmetric"]),
    ("ct-w4-asym-g32", "compressed-tensors", ["--bits", "4", "--group-size", "32", "--asymmetric"]),
    ("ct-w8-sym-g32", "compressed-tensors", ["--bits", "8", "--group-size", "32"]),
    ("ct-w8-asym-channel", "compressed-tensors", ["--bits", "8", "--group-size", "all", "--asymmetric"]),
    ("ct-w2-sym-g64", "compressed-tensors", ["--bits", "2", "--group-size", "64"]),
    ("gptq-w4-sym-g128", "gptq", ["--bits", "4", "--group-size", "128"]),
    ("gptq-w8-sym-g32", "gptq", ["--bits", "8", "--group-size", "32"]),
    ("ct-w4-sym-channel", "compressed-tensors", ["--bits", "4", "--group-size", "all"]),
    ("ct-w4-asym-channel", "compressed-tensors", ["--bits", "4", "--group-size", "all", "--asymmetric"]),
    ("gptq-w4-sym-channel", "gptq", ["--bits", "4", "--group-size", "all"]),
]


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-4000:]}")
    return p.stdout


def stories_folder(testgen, stories_dir, out):
    """stories260K (llama2.c) as an HF Llama folder: testgen writes the
    weights (Meta -> HF row permutation applied), the config comes from the
    .bin header."""
    src = os.path.join(stories_dir, "stories260K.bin")
    os.makedirs(out, exist_ok=True)
    run([testgen, "stories", src, os.path.join(out, "model.safetensors"), "--dtype", "bf16"])
    with open(src, "rb") as f:
        dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", f.read(28))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "vocab_size": abs(vocab), "max_position_embeddings": seq, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": vocab > 0, "torch_dtype": "bfloat16",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out


def load(path, device, **kw):
    m = transformers.AutoModelForCausalLM.from_pretrained(path, device_map=device, **kw)
    m.eval()
    return m


def logits_of(model, ids, device):
    with torch.no_grad():
        return model(torch.tensor(ids, device=device)).logits.float().cpu()


def folder_tensors(path):
    out = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(path, name), "pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
    return out


def same_bits(a, b):
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.contiguous().view(torch.uint8 if a.element_size() == 1 else
                                           {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]),
                       b.contiguous().view(torch.uint8 if b.element_size() == 1 else
                                           {2: torch.int16, 4: torch.int32, 8: torch.int64}[b.element_size()]))


def gptq_decoded_weights(model):
    """What gptqmodel decodes each GPTQ Linear to: its own dequantize_weight()
    (scales[g_idx] * (q - z) in float16, [in, out]), transposed to the HF
    [out, in] layout and keyed like the dequantized folder's tensors."""
    out = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if hasattr(m, "qweight") and hasattr(m, "dequantize_weight"):
                out[name + ".weight"] = m.dequantize_weight().t().contiguous()
            else:
                for pn, p in m.named_parameters(recurse=False):
                    out[f"{name}.{pn}" if name else pn] = p
    return out


def optimum_version():
    from importlib.metadata import version
    return version("optimum")


def check_one(args, src, label, fmt, opts, ids, src_logits):
    row = {"model": os.path.basename(src), "scheme": label, "format": fmt}
    if os.path.basename(src) == "stories260K" and fmt == "compressed-tensors":
        # Its FFN width 172 is no multiple of 8 (one int32 word of 4-bit
        # codes): down_proj stays unquantized, named in `ignore`, and so do
        # gate/up_proj for an asymmetric scheme (zero-points packed along out).
        opts = [*opts, "--skip", "*mlp.*" if "--asymmetric" in opts else "*down_proj*"]
    out = os.path.join(args.work, f"{os.path.basename(src)}-{label}")
    deq = out + "-deq"
    for p in (out, deq):
        shutil.rmtree(p, ignore_errors=True)
    t = time.time()
    run([args.qpack, "convert", src, out, "--format", fmt, *opts, "--quiet"])
    row["convert_s"] = round(time.time() - t, 2)
    cfg = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    # The dequantized folder in the scale dtype: compressed-tensors evaluates
    # (q - z) * s in it, GPTQ in float16.
    scale_dtype = "f16" if fmt == "gptq" else ("bf16" if "bfloat16" in json.dumps(
        json.load(open(os.path.join(src, "config.json")))) else "f16")
    run([args.qpack, "dequantize", out, deq, "--dtype", scale_dtype, "--quiet"])
    torch_dtype = torch.float16 if scale_dtype == "f16" else torch.bfloat16
    if fmt == "gptq":
        try:
            global gptqmodel
            import gptqmodel
            import optimum.gptq  # noqa: F401
        except ImportError as e:
            row["status"] = f"not run: transformers loads GPTQ only through gptqmodel + optimum ({e})"
            return row, True
    deq_tensors = folder_tensors(deq)
    # Weights: decompressed at load time.
    kw = {}
    if fmt == "compressed-tensors":
        kw["quantization_config"] = transformers.CompressedTensorsConfig(dequantize=True)
    # GPTQ: the kernel is a loading attribute. gptqmodel's automatic choice
    # compiles Marlin at first use (about 3 minutes) or downloads CUTLASS for
    # Machete (this machine is offline); `torch` decodes with the format's own
    # arithmetic and is what --gptq-backend defaults to here.
    gptq_kw = {}
    if fmt == "gptq" and args.gptq_backend != "auto":
        gptq_kw["quantization_config"] = transformers.GPTQConfig(bits=cfg["bits"], backend=args.gptq_backend)
        row["gptq_backend"] = args.gptq_backend
    kw.update(gptq_kw)
    model = load(out, args.device, dtype=torch_dtype, **kw)
    if fmt == "gptq":
        sd = gptq_decoded_weights(model)
        row["gptq_kernels"] = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "qweight")})
        row["gptqmodel"] = gptqmodel.__version__
        row["optimum"] = optimum_version()
    else:
        sd = model.state_dict()
    n_eq = n_cmp = 0
    bad = []
    for name, t in deq_tensors.items():
        if name not in sd:
            continue
        n_cmp += 1
        if same_bits(sd[name].detach().cpu(), t):
            n_eq += 1
        else:
            d = (sd[name].detach().cpu().float() - t.float()).abs().max().item() \
                if sd[name].shape == t.shape else "shape"
            bad.append(f"{name} (max diff {d})")
    row["weights_bit_identical"] = f"{n_eq}/{n_cmp}"
    row["weights_differing"] = bad[:5]
    del model
    # Logits: the folder as users load it vs the dequantized folder.
    q = load(out, args.device, dtype=torch_dtype, **gptq_kw)
    ql = logits_of(q, ids, args.device)
    del q
    d = load(deq, args.device, dtype=torch_dtype)
    dl = logits_of(d, ids, args.device)
    del d
    row["logits_max_abs_diff_vs_dequantized"] = (ql - dl).abs().max().item()
    row["logits_vs_source_max_abs_diff"] = (dl - src_logits).abs().max().item()
    row["top1_agreement_vs_source"] = float((dl.argmax(-1) == src_logits.argmax(-1)).float().mean())
    row["quantization_config"] = {k: cfg.get(k) for k in ("quant_method", "format", "bits", "group_size", "sym")
                                  if k in cfg}
    # Every tensor of the dequantized folder must have been compared: a
    # quantized module whose weight could not be decoded by name is a failure.
    row["weights_not_found"] = sorted(set(deq_tensors) - set(sd))[:5]
    ok = n_eq == n_cmp and n_cmp == len(deq_tensors) and n_cmp > 0 and row["logits_max_abs_diff_vs_dequantized"] <= 1e-3 * max(
        1.0, dl.abs().max().item())
    row["status"] = "ok" if ok else "FAILED"
    return row, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qpack", required=True)
    ap.add_argument("--testgen", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--stories", help="folder holding stories260K.bin")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    ap.add_argument("--only", help="comma-separated scheme labels")
    ap.add_argument("--gptq-backend", default="torch",
                    help="gptqmodel kernel for GPTQ folders: torch (default here), auto (what users get), marlin, ...")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}")
    try:
        import compressed_tensors
        print(f"compressed-tensors {compressed_tensors.__version__}")
    except ImportError:
        print("compressed-tensors missing")
    sources = []
    gen = os.path.join(args.work, "llama-gen")
    shutil.rmtree(gen, ignore_errors=True)
    # Realistic widths (a Llama-2/TinyLlama-like layer), two layers to stay quick.
    run([args.testgen, "llama", gen, "--hidden", "2048", "--intermediate", "5632", "--layers", "2",
         "--vocab", "32000", "--heads", "32", "--kv-heads", "4", "--dtype", "bf16", "--seed", "7"])
    sources.append(gen)
    if args.stories and os.path.exists(os.path.join(args.stories, "stories260K.bin")):
        sources.append(stories_folder(args.testgen, args.stories, os.path.join(args.work, "stories260K")))
    schemes = SCHEMES
    if args.only:
        schemes = [s for s in SCHEMES if s[0] in args.only.split(",")]
    rows, all_ok = [], True
    rng = np.random.default_rng(1)
    for src in sources:
        cfg = json.load(open(os.path.join(src, "config.json")))
        ids = rng.integers(0, cfg["vocab_size"], size=(1, 24)).tolist()
        s = load(src, args.device, dtype=torch.float32)
        src_logits = logits_of(s, ids, args.device)
        del s
        for label, fmt, opts in schemes:
            if os.path.basename(src) == "stories260K" and ("channel" not in label or fmt == "gptq"):
                # Its FFN width 172 holds no groups of 32 (channel-wise only),
                # and GPTQ packs every FFN weight along 172 (refused).
                continue
            try:
                row, ok = check_one(args, src, label, fmt, opts, ids, src_logits)
            except Exception as e:  # one failing scheme must not hide the others
                row, ok = {"model": os.path.basename(src), "scheme": label, "status": f"FAILED: {e}"}, False
            rows.append(row)
            all_ok = all_ok and ok
            print(json.dumps(row))
            sys.stdout.flush()
    report = {"torch": torch.__version__, "transformers": transformers.__version__, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(f"{'model':<14} {'scheme':<20} {'weights':>9} {'logits vs deq':>14} {'deq vs src':>11} "
          f"{'top1':>5}  status")
    for r in rows:
        print(f"{r['model']:<14} {r['scheme']:<20} {r.get('weights_bit_identical', '-'):>9} "
              f"{r.get('logits_max_abs_diff_vs_dequantized', float('nan')):>14.3g} "
              f"{r.get('logits_vs_source_max_abs_diff', float('nan')):>11.3g} "
              f"{r.get('top1_agreement_vs_source', float('nan')):>5.2f}  {r['status'][:90]}")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
