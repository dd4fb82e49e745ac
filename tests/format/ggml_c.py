"""ggml's own C K-quant functions, from llama-cpp-python's libggml-base.so,
through ctypes: the other side of qpack/spec/ggml_kquants.hpp for
make_kquant_golden.py and ggml_kquant_llama_check.py. Test-only.
"""
import ctypes
import os

import numpy as np

# type name -> (GGUF type number, block bytes); 256 elements per block.
KQUANTS = {
    "Q2_K": (10, 84),
    "Q3_K": (11, 110),
    "Q4_K": (12, 144),
    "Q5_K": (13, 176),
    "Q6_K": (14, 210),
}
SUPER_BLOCK = 256


def library_path():
    """libggml-base.so next to the llama_cpp package (ImportError if absent)."""
    import llama_cpp  # noqa: F401  (the package ships the library in lib/)

    return os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so")


class GgmlC:
    def __init__(self, path=None):
        self.path = path or library_path()
        self.lib = ctypes.CDLL(self.path)
        for name in KQUANTS:
            suffix = name.lower().replace("_k", "_K")
            q = getattr(self.lib, "quantize_row_%s_ref" % suffix)
            q.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            q.restype = None
            d = getattr(self.lib, "dequantize_row_%s" % suffix)
            d.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            d.restype = None

    def quantize(self, name, x):
        """ggml's quantize_row_qN_K_ref over float32 x (a multiple of 256)."""
        x = np.ascontiguousarray(x, dtype="<f4")
        assert x.size % SUPER_BLOCK == 0
        out = np.zeros(x.size // SUPER_BLOCK * KQUANTS[name][1], dtype=np.uint8)
        fn = getattr(self.lib, "quantize_row_%s_ref" % name.lower().replace("_k", "_K"))
        fn(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def dequantize(self, name, blocks):
        """ggml's dequantize_row_qN_K over whole blocks, as float32."""
        blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
        nb = blocks.size // KQUANTS[name][1]
        assert nb * KQUANTS[name][1] == blocks.size
        y = np.zeros(nb * SUPER_BLOCK, dtype="<f4")
        fn = getattr(self.lib, "dequantize_row_%s" % name.lower().replace("_k", "_K"))
        fn(blocks.ctypes.data, y.ctypes.data, y.size)
        return y


def random_blocks(rng, name, count):
    """count blocks of random bytes whose f16 fields (d, dmin) are finite:
    every code, scale bit and sign the layout can hold, for dequantization."""
    size = KQUANTS[name][1]
    b = rng.integers(0, 256, size=(count, size), dtype=np.uint8)
    # offsets of the f16 fields within the block
    halves = {"Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
    for off in halves[name]:
        # exponent field (bits 10..14 of the little-endian u16) kept below 31
        hi = b[:, off + 1]
        exp = (hi >> 2) & 0x1F
        b[:, off + 1] = np.where(exp == 0x1F, hi & 0x83, hi)
    return b.reshape(-1)
