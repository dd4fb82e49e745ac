#!/usr/bin/env python3
"""The functional test of issue #15 item 6: stories260K (a real Llama decoder,
../shared/data/stories260K) run by a float64 numpy forward pass
(tests/llama/llama_reference.py, LlamaReference.from_hf) on its original
weights and on `qpack dequantize`d ones, for several schemes; prints a table of
the mean next-token KL divergence KL(original || dequantized) in nats and the
top-1 agreement over a fixed set of token sequences.

  stories_kl_check.py --qpack QPACK --testgen QPACK_TESTGEN --data SHARED_DATA

Asserts only what must hold: every KL finite and >= 0, 8-bit KL well below
4-bit KL, 8-bit top-1 agreement above 0.9. Skips (77) without the data or numpy.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "llama"))
try:
    import numpy as np
    from llama_reference import LlamaReference
except (ImportError, SystemExit) as e:
    print(f"SKIP: {e}")
    sys.exit(77)

SCHEMES = [
    ("default: 4-bit g64 axis 0 (RTN)", []),
    ("4-bit g64 axis -1", ["--axis", "-1"]),
    ("4-bit g32 axis -1", ["--axis", "-1", "-g", "32"]),
    ("3-bit g64 axis 0", ["-b", "3"]),
    ("4-bit g64 axis 0 search", ["--method", "search"]),
    ("two-level g32 axis 0 (RTN)", ["-g", "32", "--scales", "two-level"]),
    ("two-level g32 axis 0 search", ["-g", "32", "--scales", "two-level", "--method", "search"]),
    ("two-level g32 axis -1 search", ["--axis", "-1", "-g", "32", "--scales", "two-level",
                                      "--method", "search"]),
    ("--preset best (axis -1, tables 0)", ["--preset", "best"]),
    ("--target-bpw 4.5 (axis 0)", ["--target-bpw", "4.5"]),
    # 4.7323: the default's own bits per weight on this model (partial groups).
    ("--target-bpw 4.7323", ["--target-bpw", "4.7323"]),
    ("  + --axis auto --imatrix", ["--target-bpw", "4.7323", "--axis", "auto", "--imatrix", "IMATRIX"]),
    ("--axis auto --imatrix", ["--axis", "auto", "--imatrix", "IMATRIX"]),
    ("8-bit g64 axis 0", ["-b", "8"]),
]


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def record_imatrix(ref, path):
    """A llama.cpp legacy imatrix (docs/imatrix.md, ncall 1): each linear
    layer's mean squared input per channel, from the reference's forward
    pass on token sequences other than the measured ones."""
    names = {id(v): k for k, v in ref.t.items()}
    names[id(ref.output)] = "output.weight"
    sums, counts = {}, {}
    plain = ref.matmul

    def recording(wt, x):
        n = names.get(id(wt))
        if n is not None:
            sums[n] = sums.get(n, 0) + (np.asarray(x, dtype=np.float64) ** 2).sum(axis=0)
            counts[n] = counts.get(n, 0) + x.shape[0]
        return plain(wt, x)

    ref.matmul = recording
    rng = np.random.default_rng(7)
    for _ in range(8):
        ref.forward([1] + list(rng.integers(3, 512, 63)))
    ref.matmul = plain
    b = struct.pack("<i", len(sums))
    for n in sorted(sums):
        nb = n.encode()
        b += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", 1, len(sums[n]))
        b += (sums[n] / counts[n]).astype("<f4").tobytes()
    with open(path, "wb") as f:
        f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qpack", required=True)
    ap.add_argument("--testgen", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    binf = os.path.join(a.data, "stories260K", "stories260K.bin")
    if not os.path.exists(binf):
        print(f"SKIP: no {binf}")
        sys.exit(77)
    # A fixed set of sequences: BOS then tokens from a fixed seed.
    rng = np.random.default_rng(260)
    seqs = [[1] + list(rng.integers(3, 512, 40)) for _ in range(6)]
    fails = []
    with tempfile.TemporaryDirectory() as d:
        orig = os.path.join(d, "orig")
        os.makedirs(orig)
        subprocess.run([a.testgen, "stories", binf, os.path.join(orig, "model.safetensors")], check=True,
                       capture_output=True)
        ref = LlamaReference.from_hf(orig)
        lp = [log_softmax(ref.forward(s)) for s in seqs]
        imatrix = os.path.join(d, "imatrix.dat")
        record_imatrix(ref, imatrix)
        rows = []
        for label, flags in SCHEMES:
            flags = [imatrix if f == "IMATRIX" else f for f in flags]
            q = os.path.join(d, "m.qpack")
            subprocess.run([a.qpack, "convert", os.path.join(orig, "model.safetensors"), q, "-f", "-q"] + flags,
                           check=True, capture_output=True)
            dq = os.path.join(d, "dq")
            shutil.rmtree(dq, ignore_errors=True)
            os.makedirs(dq)
            subprocess.run([a.qpack, "dequantize", q, os.path.join(dq, "model.safetensors"), "-f", "--dtype", "f32"],
                           check=True, capture_output=True)
            shutil.copy(os.path.join(orig, "config.json"), dq)
            r = json.loads(subprocess.run([a.qpack, "verify", q, os.path.join(orig, "model.safetensors"), "--json",
                                           "--device", "cpu"], capture_output=True, text=True).stdout)
            model = LlamaReference.from_hf(dq)
            kl, agree, n = 0.0, 0, 0
            for s, p in zip(seqs, lp):
                qlp = log_softmax(model.forward(s))
                kl += float(np.sum(np.exp(p) * (p - qlp)))
                agree += int(np.sum(p.argmax(-1) == qlp.argmax(-1)))
                n += len(s)
            rows.append((label, kl / n, agree / n, r["model"]["metrics"]["rel_error"]))
        print(f"stories260K, {len(seqs)} sequences x {len(seqs[0])} tokens, float64 forward pass")
        print(f"{'scheme':34s} {'mean KL (nats)':>15s} {'top-1 agree':>12s} {'weight rel err':>15s}")
        for label, kl, ag, rel in rows:
            print(f"{label:34s} {kl:15.5f} {ag:12.4f} {rel:15.5f}")
        for label, kl, ag, _ in rows:
            if not (np.isfinite(kl) and kl >= 0):
                fails.append(f"{label}: KL {kl} not finite and >= 0")
        kl4 = rows[0][1]
        kl8, ag8 = rows[-1][1], rows[-1][2]
        if not kl8 < kl4 / 10:
            fails.append(f"8-bit KL {kl8} is not below a tenth of 4-bit's {kl4}")
        if not ag8 > 0.9:
            fails.append(f"8-bit top-1 agreement {ag8} <= 0.9")
    for f in fails:
        print("FAIL " + f)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
