#!/usr/bin/env python3
"""The peer for qpack_bench_ggml_cpu: gguf-py's numpy quantizers (PyPI `gguf`,
byte-identical to ggml's C for the legacy types) on a tensor of the same
shape and dtype. Prints one line per type: "TYPE SECONDS" (best of --reps),
timing f16->f32 conversion plus quantize, what a converter using gguf-py does.
Exit 3 when gguf or numpy cannot be imported."""
import argparse
import sys
import time

try:
    import numpy as np
    from gguf import GGMLQuantizationType, quants
except ImportError as e:  # the bench prints "no peer"
    print(f"peer unavailable: {e}", file=sys.stderr)
    sys.exit(3)

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, required=True)
ap.add_argument("--cols", type=int, required=True)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--types", default="Q4_0,Q4_1,Q5_0,Q5_1,Q8_0")
a = ap.parse_args()
rng = np.random.default_rng(42)
x16 = (rng.standard_normal((a.rows, a.cols), dtype=np.float32) * 0.02).astype(np.float16)
for name in a.types.split(","):
    t = getattr(GGMLQuantizationType, name)
    best = float("inf")
    for _ in range(a.reps):
        t0 = time.perf_counter()
        quants.quantize(x16.astype(np.float32), t)
        best = min(best, time.perf_counter() - t0)
    print(f"{name} {best:.6f}", flush=True)
