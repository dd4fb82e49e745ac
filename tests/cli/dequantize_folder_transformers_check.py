#!/usr/bin/env python3
"""A folder written by `qpack dequantize X.qpack OUTDIR/` loaded by
transformers (AutoModelForCausalLM.from_pretrained, nothing else told), on
the machine that has torch and transformers (the GPU machine; CI has
neither, so this exits 77 there).

    dequantize_folder_transformers_check.py SOURCE_DIR DEQUANTIZED_DIR

Checks and prints as JSON:
- the loaded model's parameters are the folder's tensors bit for bit, in the
  dtype config.json names (torch_dtype/dtype);
- its logits on fixed random tokens against the source model's (both run in
  float32 on the CPU): the largest absolute difference, the relative RMS
  difference and the share of positions whose top-1 token agrees. These
  measure the quantization error, so they are reported, not gated.
Exit 0 when the bit-for-bit check holds, 1 otherwise, 77 without torch or
transformers.
"""
import glob
import json
import os
import sys

try:
    import torch
    import transformers
    from safetensors.torch import load_file
except ImportError:
    sys.exit(77)


def main():
    src, dq = sys.argv[1], sys.argv[2]
    with open(os.path.join(dq, "config.json")) as f:
        config = json.load(f)
    want_dtype = config.get("dtype", config.get("torch_dtype"))
    model = transformers.AutoModelForCausalLM.from_pretrained(dq)
    state = model.state_dict()
    problems = []
    n = 0
    for shard in sorted(glob.glob(os.path.join(dq, "*.safetensors"))):
        for name, t in load_file(shard).items():
            n += 1
            got = state.get(name)
            if got is None:
                problems.append("%s: not a parameter of the loaded model" % name)
                continue
            if str(got.dtype) != "torch." + want_dtype:
                problems.append("%s: loaded as %s, config says %s" % (name, got.dtype, want_dtype))
            if got.dtype != t.dtype or got.shape != t.shape or not torch.equal(
                    got.contiguous().view(torch.uint8), t.contiguous().view(torch.uint8)):
                problems.append("%s: loaded tensor differs from the folder's" % name)
    source = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    gen = torch.Generator().manual_seed(14)
    ids = torch.randint(0, config["vocab_size"], (2, 48), generator=gen)
    with torch.no_grad():
        ref = source(ids).logits.float()
        out = model.float()(ids).logits.float()
    diff = (out - ref)
    report = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": want_dtype,
        "tensors_checked": n,
        "problems": problems,
        "logits_max_abs_diff": diff.abs().max().item(),
        "logits_rel_rms_diff": (diff.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item(),
        "top1_agreement": (out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
    }
    print(json.dumps(report, indent=2))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
