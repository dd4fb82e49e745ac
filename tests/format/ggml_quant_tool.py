#!/usr/bin/env python3
"""gguf-py's quantizers (PyPI `gguf`, byte-identical to ggml's
quantize_row_*_ref / dequantize_row_* for these types) on the other side of
qpack/spec/ggml_legacy.hpp, for tests/format/test_ggml_legacy.cpp.
Test-only: the product never runs Python.

  ggml_quant_tool.py DIR
      DIR/input.f32               little-endian float32 values (a multiple of 32)
      for T in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0:
        writes DIR/gguf_py.T        gguf-py's quantization of input.f32
        and, where DIR/qpack.T exists (qpack's blocks),
        writes DIR/gguf_py_dequant.T  gguf-py's dequantization of them, float32
  One run does every type, so the test pays Python's start-up once.
"""
import os
import sys

import numpy as np
import gguf

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


def main(folder):
    x = np.fromfile(os.path.join(folder, "input.f32"), dtype="<f4").astype(np.float32)
    # Tiny blocks make 1/d overflow to inf (the rule then gives code 0);
    # numpy would warn about it on stderr.
    with np.errstate(all="ignore"):
        for name in TYPES:
            qtype = gguf.GGMLQuantizationType[name]
            gguf.quants.quantize(x, qtype).tofile(os.path.join(folder, "gguf_py." + name))
            mine = os.path.join(folder, "qpack." + name)
            if os.path.exists(mine):
                blocks = np.fromfile(mine, dtype=np.uint8)
                y = gguf.quants.dequantize(blocks, qtype).astype("<f4")
                y.tofile(os.path.join(folder, "gguf_py_dequant." + name))
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
