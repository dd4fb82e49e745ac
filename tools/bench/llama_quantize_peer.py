#!/usr/bin/env python3
"""The peer for GGUF conversion benchmarks: llama.cpp's own quantizer.

  llama_quantize_peer.py IN.gguf OUT.gguf --type Q4_1|Q4_K_M|... [--threads N] [--pure]

Calls libllama's llama_model_quantize (what the llama-quantize tool runs)
through llama-cpp-python's ctypes bindings, starting from
llama_model_quantize_default_params() and setting ftype, nthread and pure,
no importance matrix. Prints one JSON line: type, threads, pure, seconds,
source bytes and GB/s of source. Peak RSS: run it under /usr/bin/time -v.
Exit 3 when llama_cpp cannot be imported, 1 when quantization fails.
"""
import argparse
import json
import os
import sys
import time

try:
    import ctypes
    import llama_cpp as lc
except ImportError as e:
    print(f"peer unavailable: {e}", file=sys.stderr)
    sys.exit(3)

# llama_ftype (include/llama.h)
FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "BF16": 32,
}
# The K-quant ftypes name a mix; --pure gives every tensor the mix's base type.
# As in llama-quantize (and qpack's --type), Q3_K/Q4_K/Q5_K name the _M mix:
# they are aliases, not --pure.
MIX_ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M"}


@lc.llama_log_callback
def _log(level, text, user_data):
    if os.environ.get("QPACK_LLAMA_VERBOSE"):
        sys.stderr.write(text.decode("utf-8", "replace"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--type", required=True, choices=sorted(set(FTYPES) | set(MIX_ALIASES)))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pure", action="store_true")
    a = ap.parse_args()
    name = a.type
    pure = a.pure
    ftype = FTYPES[MIX_ALIASES.get(name, name)]
    lc.llama_log_set(_log, ctypes.c_void_p(0))
    lc.llama_backend_init()
    p = lc.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = a.threads
    p.pure = pure
    t0 = time.perf_counter()
    rc = lc.llama_model_quantize(a.src.encode(), a.out.encode(), ctypes.byref(p))
    secs = time.perf_counter() - t0
    if rc != 0:
        print(f"llama_model_quantize returned {rc}", file=sys.stderr)
        return 1
    src = os.path.getsize(a.src)
    print(json.dumps({"peer": "llama_model_quantize", "type": name, "threads": a.threads, "pure": pure,
                      "seconds": round(secs, 3), "source_bytes": src, "gbps": round(src / secs / 1e9, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
