#!/usr/bin/env python3
"""Writes tests/data/ggml_kquants/: ggml's own K-quant bytes and floats, from
llama-cpp-python's libggml-base.so through ctypes (ggml_c.py), for
tests/format/test_ggml_kquants.cpp. Deterministic: the same library gives
the same files. Test-only; see tests/data/ggml_kquants/README.md.

  make_kquant_golden.py [OUT_DIR]     (default: tests/data/ggml_kquants)

Writes
  input.f32               128 super-blocks x 256 float32: 8 families x 14
                          blocks, then the 16 RARE blocks (below)
  quantized.T             quantize_row_T_ref(input.f32), T in Q2_K..Q6_K
  dequant_blocks.T        the first 16 blocks of quantized.T, then 24 blocks of
                          random bytes (finite f16 fields): 40 blocks
  dequant.T               dequantize_row_T(dequant_blocks.T), float32
Prints the library's path, sha256 and the FMA check (objdump).
"""
import hashlib
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggml_c  # noqa: E402

SEED = 20261213
BLOCKS_PER_FAMILY = 14
# Blocks that take the searches' rare paths (Q3_K's fifth descent pass, the
# last scale candidates winning, ties in the error, ...), as (family, seed)
# for rare_block; found by hunt_kquant_rare_blocks.py.
RARE = [
    (7, 2398),  # Q6_K: last candidate is = 8
    (7, 297),  # Q3_K: a tie in the descent's test replaces
    (7, 908),  # Q3_K: a tie in the descent's test replaces
    (0, 1089),  # Q3_K: 4 descent passes, not 5
    (0, 3926),  # Q3_K: 4 descent passes, not 5
    (0, 319),  # Q4_K: 19 search steps, not 20
    (0, 613),  # Q4_K: 19 search steps, not 20
    (0, 290),  # Q6_K: sumlx as w*(x*l)
    (0, 698),  # Q6_K: sumlx as w*(x*l)
    (0, 296),  # Q5_K: 14 search steps, not 15
    (0, 969),  # Q5_K: 14 search steps, not 15
    (0, 4),  # Q2_K: 14 search steps, not 15
    (0, 27),  # Q2_K: 14 search steps, not 15
    (0, 22),  # Q6_K: a tie in sumlx^2 vs best*suml2 replaces
    (0, 127),  # Q6_K: a tie in sumlx^2 vs best*suml2 replaces
    (1, 1),  # asymmetric fit: a tie in the error replaces
]
DEQUANT_QUANTIZED = 16
DEQUANT_RANDOM = 24


def family(rng, f, n):
    """n super-blocks (n x 256 float32) of input family f."""
    out = np.zeros((n, 256), dtype=np.float64)
    for b in range(n):
        if f == 0:  # normal, scale varying over two decades
            out[b] = rng.standard_normal(256) * 10.0 ** rng.uniform(-2, 0)
        elif f == 1:  # heavy tails: Student t (2 dof), and a few large outliers
            v = rng.standard_t(2, 256)
            v[rng.integers(0, 256, 3)] *= 30.0
            out[b] = v * 0.05
        elif f == 2:  # ties and repeated values: a small grid, absmax shared
            v = rng.integers(-4, 5, 256) * 0.25
            v[rng.integers(0, 256, 4)] = rng.choice([-1.0, 1.0]) * 1.0
            if b % 2:
                v = np.sign(v) * np.abs(v).max() * (np.abs(v) > 0.5)  # +-max and 0
            out[b] = v
        elif f == 3:  # zeros: all +0, all -0, zeros with one value, one zero sub-block
            k = b % 4
            if k == 0:
                v = np.zeros(256)
            elif k == 1:
                v = -np.zeros(256)
            elif k == 2:
                v = np.zeros(256)
                v[rng.integers(0, 256)] = rng.standard_normal()
            else:
                v = rng.standard_normal(256)
                j = rng.integers(0, 16)
                v[16 * j : 16 * j + 16] = 0.0
                v[32 * (j // 2) : 32 * (j // 2) + 32] = 0.0
            out[b] = v
        elif f == 4:  # tiny and huge magnitudes (super-scales still normal f16)
            e = [-9, -7, -5, 2, 3][b % 5]
            out[b] = rng.standard_normal(256) * 10.0**e
        elif f == 5:  # constant blocks and constant sub-blocks
            if b % 2 == 0:
                out[b] = rng.standard_normal() * np.ones(256)
            else:
                out[b] = np.repeat(rng.standard_normal(16), 16)
        elif f == 6:  # sparse: 90 % zeros, and one-hot blocks
            if b % 4 == 3:
                v = np.zeros(256)
                v[rng.integers(0, 256)] = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 3)
            else:
                v = rng.standard_normal(256) * (rng.uniform(size=256) < 0.1)
            out[b] = v
        else:  # scales differing by sub-block (2^-12 .. 2^3), offsets (min > 0 etc.)
            v = rng.standard_normal(256)
            if b % 2 == 0:
                v *= np.repeat(2.0 ** rng.integers(-12, 4, 16), 16)
            else:
                v = v * 0.1 + rng.uniform(-3, 3)
            out[b] = v
    return out.astype("<f4")


def rare_block(f, seed):
    """One super-block of family f from its own seed (256 float32)."""
    return family(np.random.default_rng([SEED, f, seed]), f, 1).reshape(-1)


def fma_check(path):
    """objdump's disassembly of the quantize/dequantize functions: any FMA?"""
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], check=True,
                         capture_output=True, text=True).stdout
    funcs = {}
    cur = None
    for line in dis.splitlines():
        if line.endswith(">:") and "<" in line:
            name = line.split("<", 1)[1][:-2]
            cur = name if ("_K_ref@@" in name or "dequantize_row_q" in name) and "@plt" not in name else None
            if cur:
                funcs[cur] = []
        elif cur and line.strip():
            funcs[cur].append(line)
    wanted = [f for f in funcs if any(t.lower() in f.lower() for t in ("q2_K", "q3_K", "q4_K", "q5_K", "q6_K"))]
    fma = {f: sum(("fmadd" in l or "fmsub" in l or "fnmadd" in l or "fnmsub" in l) for l in funcs[f]) for f in wanted}
    ymm = {f: sum("%ymm" in l for l in funcs[f]) for f in wanted}
    whole = sum(("vfmadd" in l or "vfnmadd" in l or "vfmsub" in l) for l in dis.splitlines())
    return wanted, fma, ymm, whole


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    g = ggml_c.GgmlC()
    rng = np.random.default_rng(SEED)
    x = np.concatenate([family(rng, f, BLOCKS_PER_FAMILY).reshape(-1) for f in range(8)] +
                       [rare_block(f, s) for f, s in RARE])
    with np.errstate(all="ignore"):
        x.tofile(os.path.join(out_dir, "input.f32"))
        for name, (_, size) in ggml_c.KQUANTS.items():
            q = g.quantize(name, x)
            q.tofile(os.path.join(out_dir, "quantized." + name))
            blocks = np.concatenate([q[: DEQUANT_QUANTIZED * size],
                                     ggml_c.random_blocks(rng, name, DEQUANT_RANDOM)])
            blocks.tofile(os.path.join(out_dir, "dequant_blocks." + name))
            g.dequantize(name, blocks).tofile(os.path.join(out_dir, "dequant." + name))
    import llama_cpp

    with open(g.path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    wanted, fma, ymm, whole = fma_check(g.path)
    print("llama_cpp", llama_cpp.__version__)
    print("library", os.path.realpath(g.path), "sha256", digest)
    print("functions checked:", ", ".join(sorted(wanted)))
    print("FMA instructions in them:", sum(fma.values()), " ymm uses:", sum(ymm.values()),
          " FMA instructions in the whole library:", whole)
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print("bytes written under", out_dir, ":", total)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "data", "ggml_kquants"))
