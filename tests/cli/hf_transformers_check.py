#!/usr/bin/env python3
"""The compressed-tensors folders qpack writes, loaded by transformers
(AutoModelForCausalLM.from_pretrained with compressed-tensors installed):
the decompressed Linear weights must equal `qpack dequantize` of the .qpack
of the same scheme bit for bit, and the logits must match those of the
dequantized weights loaded the same way (a plain folder: the source's
config.json and qpack dequantize's safetensors).

    hf_transformers_check.py --qpack QPACK --testgen TESTGEN [--wheels DIR]
        [--hidden H --intermediate I --layers L --vocab V]

--wheels: a folder of wheels (compressed-tensors and what it needs beyond
torch and transformers) installed with pip --no-deps into a temporary
folder first, for a machine that cannot fetch packages (default
$QPACK_WHEELS). Exit 77 when torch,
transformers or compressed_tensors cannot be imported. Prints one JSON line
per case and a last line with the versions; exit 1 on a mismatch.
GPTQ folders are not loaded here: transformers needs optimum and gptqmodel
for them.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qpack", required=True)
    ap.add_argument("--testgen", required=True)
    ap.add_argument("--wheels", default=os.environ.get("QPACK_WHEELS"))
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--device", default="cpu", help="qpack's --device for the conversions")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="qpack-hf-tf-")
    try:
        if args.wheels:
            site = os.path.join(tmp, "site")
            wheels = [os.path.join(args.wheels, w) for w in sorted(os.listdir(args.wheels))
                      if w.endswith(".whl")]
            run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                 "--target", site] + wheels)
            sys.path.insert(0, site)
        try:
            import numpy as np
            import torch
            import transformers
            import compressed_tensors
            from transformers import AutoModelForCausalLM
        except ImportError as e:
            print(f"skip: {e}")
            return 77
        help_text = run([args.qpack, "convert", "--help"])
        cases = [("w4-g128-sym", 4, "128", True), ("w8-g64-sym", 8, "64", True),
                 ("w4-channel-sym", 4, "all", True)]
        if "--zero-point" in help_text:
            cases += [("w4-g128-asym", 4, "128", False), ("w4-g32-asym", 4, "32", False),
                      ("w8-g128-asym", 8, "128", False)]
        results = []
        for dtype in ("bf16", "f16"):
            src = os.path.join(tmp, "src-" + dtype)
            run([args.testgen, "llama", src, "--hidden", str(args.hidden), "--intermediate",
                 str(args.intermediate), "--layers", str(args.layers), "--vocab",
                 str(args.vocab), "--kv-heads", "2", "--dtype", dtype, "--seed", "11"])
            tdtype = torch.bfloat16 if dtype == "bf16" else torch.float16
            ids = torch.tensor([[1, 5, 9, 33, 70, 2, 100, 7, 250, 3, 41, 8]]) % args.vocab
            for name, bits, g, sym in cases:
                name = f"{name}-{dtype}"
                out = os.path.join(tmp, name)
                mode = "--symmetric" if sym else "--asymmetric"
                run([args.qpack, "convert", src, out, "--format", "compressed-tensors", "-b",
                     str(bits), "-g", g, mode, "--device", args.device, "-q"])
                qp = out + ".qpack"
                zp = [] if sym else ["--zero-point", "integer"]
                run([args.qpack, "convert", src, qp, "--axis", "-1", "-g", g, "-b", str(bits),
                     mode, "--scale-dtype", dtype, "--skip", "*embed_tokens*", "--skip",
                     "lm_head*", "--device", args.device, "-q"] + zp)
                deq_dir = out + "-deq"
                os.makedirs(deq_dir)
                shutil.copy(os.path.join(src, "config.json"), deq_dir)
                run([args.qpack, "dequantize", qp, os.path.join(deq_dir, "model.safetensors"),
                     "--dtype", dtype, "-q"])
                m = AutoModelForCausalLM.from_pretrained(out, dtype=tdtype)
                m.eval()
                with torch.no_grad():
                    logits = m(ids).logits.float()  # decompresses on the first forward
                ref = AutoModelForCausalLM.from_pretrained(deq_dir, dtype=tdtype)
                ref.eval()
                with torch.no_grad():
                    ref_logits = ref(ids).logits.float()
                ref_params = dict(ref.named_parameters())
                compared, linear_compared, differing = 0, 0, []
                for pname, p in m.named_parameters():
                    if pname not in ref_params:
                        continue
                    r = ref_params[pname]
                    if p.shape != r.shape or p.dtype != r.dtype or not torch.equal(
                            p.detach().view(torch.int16), r.detach().view(torch.int16)):
                        differing.append(pname)
                    compared += 1
                    linear_compared += pname.endswith("_proj.weight")
                linear = sum(1 for pname, _ in m.named_modules()
                             if pname.endswith("_proj"))
                diff = (logits - ref_logits).abs().max().item()
                res = {"case": name, "params_compared": compared, "linear_modules": linear,
                       "linear_weights_compared": linear_compared,
                       "params_differing": differing[:5], "n_differing": len(differing),
                       "logits_max_abs_diff": diff,
                       "argmax_agree": bool(torch.equal(logits.argmax(-1), ref_logits.argmax(-1)))}
                print(json.dumps(res), flush=True)
                results.append(res)
        print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                          "compressed_tensors": compressed_tensors.__version__,
                          "qpack_device": args.device}))
        bad = [r for r in results
               if r["n_differing"] or r["linear_weights_compared"] != r["linear_modules"]]
        return 1 if bad else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
