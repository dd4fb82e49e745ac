#!/usr/bin/env python3
"""qpack's K-quant reference against ggml's own C on FRESH random inputs
(ctest label `llama`): the bytes of quantize_row_qN_K_ref and the float bits
of dequantize_row_qN_K, for Q2_K..Q6_K. Test-only.

  ggml_kquant_llama_check.py --tool PATH/ggml_kquant_tool [--blocks N]

Seed: $QPACK_TEST_SEED when set, otherwise fresh (printed for replay).
Exit 0 all equal, 1 a difference (the first block printed in hex), 77 when
llama_cpp (llama-cpp-python, which ships libggml-base.so) cannot be imported.
"""
import argparse
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:
    print("SKIP: numpy is not importable")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def run_tool(tool, mode, name, data):
    r = subprocess.run([tool, mode, name], input=data.tobytes(), capture_output=True)
    if r.returncode != 0:
        sys.exit("ggml_kquant_tool failed: " + r.stderr.decode())
    return r.stdout


def inputs(rng, per_family):
    import make_kquant_golden as gold

    parts = [gold.family(rng, f, per_family).reshape(-1) for f in range(8)]
    # beyond the golden families: uniform, and normal at a random scale per
    # block over 1e-8 .. 1e3 (super-scales stay finite f16)
    parts.append(rng.uniform(-1, 1, per_family * 256).astype("<f4"))
    s = 10.0 ** rng.uniform(-8, 3, per_family)
    parts.append((rng.standard_normal((per_family, 256)) * s[:, None]).astype("<f4").reshape(-1))
    return np.concatenate(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--blocks", type=int, default=1000, help="super-blocks per input family")
    args = ap.parse_args()
    try:
        import ggml_c

        g = ggml_c.GgmlC()
    except (ImportError, OSError) as e:
        print("SKIP: cannot load ggml's C from llama_cpp:", e)
        return 77
    env = os.environ.get("QPACK_TEST_SEED")
    seed = int(env, 0) if env else int.from_bytes(os.urandom(8), "little")
    print("seed", seed, "(set QPACK_TEST_SEED to replay)")
    rng = np.random.default_rng(seed)
    x = inputs(rng, args.blocks)
    bad = 0
    with np.errstate(all="ignore"):
        for name, (_, size) in ggml_c.KQUANTS.items():
            want = g.quantize(name, x)
            got = np.frombuffer(run_tool(args.tool, "quantize", name, x), dtype=np.uint8)
            nb = x.size // 256
            diff = [b for b in range(nb) if not np.array_equal(want[b * size:(b + 1) * size],
                                                               got[b * size:(b + 1) * size])]
            # dequantization of ggml's blocks and of random bytes
            blocks = np.concatenate([want, ggml_c.random_blocks(rng, name, 512)])
            yw = g.dequantize(name, blocks).view(np.uint32)
            yg = np.frombuffer(run_tool(args.tool, "dequantize", name, blocks), dtype=np.uint32)
            ndiff = int(np.count_nonzero(yw != yg))
            print("%s: %d super-blocks, %d differ in bytes; %d of %d dequantized floats differ"
                  % (name, nb, len(diff), ndiff, yw.size))
            if diff:
                b = diff[0]
                print("  first: block %d (family %d)" % (b, b // args.blocks))
                print("  input ", x[b * 256:(b + 1) * 256].tobytes().hex())
                print("  ggml  ", want[b * size:(b + 1) * size].tobytes().hex())
                print("  qpack ", got[b * size:(b + 1) * size].tobytes().hex())
            bad += len(diff) + ndiff
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
