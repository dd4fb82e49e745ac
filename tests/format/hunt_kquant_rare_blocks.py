#!/usr/bin/env python3
"""Finds input super-blocks that take the K-quant searches' rare paths, for
make_kquant_golden.py's RARE list. A random block seldom needs Q3_K's fifth
descent pass, or has the last scale candidate win: a reference that gets
such a path wrong still matches ggml on nearly every block. Each mutant below
is qpack's reference with one such detail changed; a block on which a mutant
and ggml's C disagree exercises that detail. Prints (family, seed) pairs.
Test-only, run by hand (needs g++, llama_cpp, numpy):

  hunt_kquant_rare_blocks.py [--seeds N] [--per-mutant K]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, HERE)
import ggml_c  # noqa: E402
import make_kquant_golden as gold  # noqa: E402

HEADER = "qpack/spec/ggml_kquants.hpp"
# (what it breaks, text in the header, replacement)
MUTANTS = [
    ("Q3_K: 4 descent passes, not 5", "itry < 5", "itry < 4"),
    ("Q5_K: 14 search steps, not 15",
     "k4_fits(x, 31, -0.5f, 15, L, scales, mins)",
     "k4_fits(x, 31, -0.5f, 14, L, scales, mins)"),
    ("Q4_K: 19 search steps, not 20",
     "k4_fits(x, 15, -1.0f, 20, L, scales, mins)",
     "k4_fits(x, 15, -1.0f, 19, L, scales, mins)"),
    ("Q2_K: 14 search steps, not 15",
     "fit_scale_and_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true)",
     "fit_scale_and_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 14, true)"),
    ("Q6_K: sumlx as w*(x*l)",
     "sumlx = add_f32(sumlx, mul_f32(mul_f32(w, x[i]), float(l)));",
     "sumlx = add_f32(sumlx, mul_f32(w, mul_f32(x[i], float(l))));"),
    ("asymmetric fit: a tie in the error replaces", "if (cur_error < best_error)",
     "if (cur_error <= best_error)"),
    ("Q6_K: last candidate is = 8", "for (int is = -9; is <= 9; ++is)",
     "for (int is = -9; is <= 8; ++is)"),
    ("Q6_K: first candidate is = -8", "for (int is = -9; is <= 9; ++is)",
     "for (int is = -8; is <= 9; ++is)"),
    ("Q6_K: a tie in sumlx^2 vs best*suml2 replaces",
     "mul_f32(sumlx, sumlx) > mul_f32(best, suml2)", "mul_f32(sumlx, sumlx) >= mul_f32(best, suml2)"),
    ("Q3_K: a tie in the descent's test replaces",
     "mul_f32(mul_f32(slx, slx), suml2) > mul_f32(mul_f32(sumlx, sumlx), sl2)",
     "mul_f32(mul_f32(slx, slx), suml2) >= mul_f32(mul_f32(sumlx, sumlx), sl2)"),
]
MAX_BLOCKS = 16


def build_mutant(tmp, k, old, new):
    inc = os.path.join(tmp, "inc%d" % k)
    shutil.copytree(os.path.join(ROOT, "format", "include"), inc)
    p = os.path.join(inc, HEADER)
    s = open(p).read()
    assert old in s, old
    open(p, "w").write(s.replace(old, new, 1))
    exe = os.path.join(tmp, "tool%d" % k)
    subprocess.run(["g++", "-std=c++17", "-O2", "-ffp-contract=off", "-I" + inc,
                    os.path.join(HERE, "ggml_kquant_tool.cpp"), "-o", exe], check=True)
    return exe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=4000, help="seeds tried per family")
    ap.add_argument("--per-mutant", type=int, default=2)
    args = ap.parse_args()
    g = ggml_c.GgmlC()
    pairs = [(f, s) for f in (0, 1, 7) for s in range(args.seeds)]
    x = np.concatenate([gold.rare_block(f, s) for f, s in pairs])
    found = []
    by_mutant = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (what, old, new) in enumerate(MUTANTS):
            exe = build_mutant(tmp, k, old, new)
            hits = []
            for name, (_, size) in ggml_c.KQUANTS.items():
                want = g.quantize(name, x).reshape(-1, size)
                r = subprocess.run([exe, "quantize", name], input=x.tobytes(),
                                   capture_output=True, check=True)
                got = np.frombuffer(r.stdout, dtype=np.uint8).reshape(-1, size)
                hits += [int(b) for b in np.nonzero((want != got).any(axis=1))[0]]
            hits = sorted(set(hits))
            print("%-48s %5d of %d blocks differ" % (what, len(hits), len(pairs)))
            by_mutant.append((what, hits))
    # the rarest paths first, per_mutant blocks each, MAX_BLOCKS in all
    for what, hits in sorted(by_mutant, key=lambda m: len(m[1])):
        for b in hits:
            if sum(1 for p in found if p[2] == what) >= args.per_mutant or len(found) >= MAX_BLOCKS:
                break
            if pairs[b] not in [p[:2] for p in found]:
                found.append(pairs[b] + (what,))
    print("RARE = [")
    for f, s, what in found:
        print("    (%d, %d),  # %s" % (f, s, what))
    print("]")


if __name__ == "__main__":
    main()
