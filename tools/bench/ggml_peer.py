#!/usr/bin/env python3
"""The peer for qpack_bench_ggml_cpu, on a tensor of the same shape and dtype
(F16, normal(0, 0.02), rng seed 42). Prints one line per type it can time:
"TYPE SECONDS" (best of --reps), timing the f16 -> f32 conversion plus the
quantization, what a converter using the peer does.

  legacy types (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0): gguf-py's numpy quantizers
      (PyPI `gguf`, byte-identical to ggml's C for these types);
  K-quants (Q2_K Q3_K Q4_K Q5_K Q6_K): ggml's own C, quantize_row_qN_K_ref
      from libggml-base.so through ctypes (--ggml-lib PATH, default the one
      llama-cpp-python ships), one thread, as llama-quantize runs it per
      tensor without an importance matrix.

A type whose peer cannot be loaded is left out (the bench prints "-");
exit 3 when numpy itself is missing."""
import argparse
import ctypes
import os
import sys
import time

try:
    import numpy as np
except ImportError as e:
    print(f"peer unavailable: {e}", file=sys.stderr)
    sys.exit(3)

KQUANT_BYTES = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, required=True)
ap.add_argument("--cols", type=int, required=True)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--types", default="Q4_0,Q4_1,Q5_0,Q5_1,Q8_0")
ap.add_argument("--ggml-lib", default=None, help="libggml-base.so for the K-quants")
a = ap.parse_args()
rng = np.random.default_rng(42)
x16 = (rng.standard_normal((a.rows, a.cols), dtype=np.float32) * 0.02).astype(np.float16)


def ggml_lib():
    path = a.ggml_lib
    if path is None:
        import llama_cpp

        path = os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so")
    return ctypes.CDLL(path)


def time_best(fn):
    best = float("inf")
    for _ in range(a.reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


lib = None
for name in a.types.split(","):
    if name in KQUANT_BYTES:
        try:
            lib = lib or ggml_lib()
        except (ImportError, OSError) as e:
            print(f"no ggml C for {name}: {e}", file=sys.stderr)
            continue
        fn = getattr(lib, "quantize_row_%s_ref" % name.lower().replace("_k", "_K"))
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
        out = np.empty(x16.size // 256 * KQUANT_BYTES[name], dtype=np.uint8)

        def run():
            x = np.ascontiguousarray(x16.astype(np.float32))
            fn(x.ctypes.data, out.ctypes.data, x.size)

        best = time_best(run)
    else:
        try:
            from gguf import GGMLQuantizationType, quants
        except ImportError as e:
            print(f"no gguf-py for {name}: {e}", file=sys.stderr)
            continue
        t = getattr(GGMLQuantizationType, name)
        best = time_best(lambda: quants.quantize(x16.astype(np.float32), t))
    print(f"{name} {best:.6f}", flush=True)
