#!/usr/bin/env python3
"""qpack verify --imatrix / --activations against numpy float64 (docs/quantization.md
section 10), with the imatrix written by gguf-py's GGUFWriter (GGUF) and by
numpy from docs/imatrix.md's layout (legacy .dat), not by qpack.

  output_checks_check.py --qpack QPACK

Skips (77) without numpy, safetensors or gguf.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from safetensors.numpy import load_file, save_file
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

FAILS = []


def expect(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def run(cmd, ok=(0,)):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def close(a, b, tol=1e-12):
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-300)


def weighted_ref(w, what, weights):
    e = w.astype(np.float64) - what.astype(np.float64)
    num = float(np.sum(weights * np.sum(e * e, axis=0)))
    den = float(np.sum(weights * np.sum(w.astype(np.float64) ** 2, axis=0)))
    return np.sqrt(num / den)


def output_ref(w, what, x):
    x = x.astype(np.float64)
    y = x @ w.astype(np.float64).T
    e = x @ (w.astype(np.float64) - what.astype(np.float64)).T
    return np.sqrt(np.sum(e * e) / np.sum(y * y))


def write_dat(path, entries, chunks=3, dataset="sample.txt"):
    """docs/imatrix.md's legacy layout: stored values are mean * ncall."""
    b = struct.pack("<i", len(entries))
    for name, ncall, mean in entries:
        nb = name.encode()
        stored = (mean.astype(np.float64) * ncall).astype("<f4")
        b += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, stored.size) + stored.tobytes()
    d = dataset.encode()
    b += struct.pack("<ii", chunks, len(d)) + d
    open(path, "wb").write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qpack", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    with tempfile.TemporaryDirectory() as d:
        src = {
            "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((48, 64)).astype(np.float32),
            "model.layers.0.mlp.down_proj.weight": (rng.standard_normal((64, 40)) * 0.1).astype(np.float16),
            "model.layers.0.mlp.up_proj.weight": rng.standard_normal((40, 64)).astype(np.float32),
            "model.norm.weight": rng.standard_normal(64).astype(np.float32),
        }
        sp = os.path.join(d, "src.safetensors")
        save_file(src, sp)
        # Per-channel means with a few dominant channels, as real activations have.
        means = {"blk.0.attn_q.weight": rng.gamma(0.5, 1.0, 64) * 4,
                 "blk.0.ffn_down.weight": rng.gamma(0.5, 1.0, 40),
                 "blk.0.ffn_up.weight": rng.gamma(0.5, 1.0, 64)}
        counts = {"blk.0.attn_q.weight": 512, "blk.0.ffn_down.weight": 384, "blk.0.ffn_up.weight": 512}
        gp = os.path.join(d, "im.gguf")
        w = gguf.GGUFWriter(gp, arch="llama")  # writes general.architecture; qpack ignores it
        w.add_type(gguf.GGUFType.IMATRIX)
        w.add_array(gguf.Keys.IMatrix.DATASETS, ["sample.txt"])
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, 3)
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, 512)
        gguf_w = {}
        for name in sorted(means):
            sums = (means[name] * counts[name]).astype(np.float32)
            w.add_tensor(name + ".in_sum2", sums.reshape(1, -1))
            w.add_tensor(name + ".counts", np.array([[counts[name]]], dtype=np.float32))
            gguf_w[name] = sums.astype(np.float64) / counts[name]
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        dp = os.path.join(d, "im.dat")
        write_dat(dp, [(n, 4, means[n]) for n in sorted(means)])
        dat_w = {n: (means[n].astype(np.float64) * 4).astype(np.float32).astype(np.float64) / 4 for n in means}
        acts = {"model.layers.0.self_attn.q_proj.weight": rng.standard_normal((7, 64)).astype(np.float32),
                "model.layers.0.mlp.down_proj.weight": rng.standard_normal((5, 40)).astype(np.float16)}
        ap_ = os.path.join(d, "acts.safetensors")
        save_file(acts, ap_)
        hf_of = {"blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
                 "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
                 "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight"}

        for scheme in (["--axis", "0"], ["--axis", "-1", "-b", "3", "-g", "32"], ["-b", "8", "--symmetric"]):
            tag = " ".join(scheme)
            qp = os.path.join(d, "m.qpack")
            run([a.qpack, "convert", sp, qp, "-f", "-q"] + scheme)
            dq = os.path.join(d, "deq.safetensors")
            run([a.qpack, "dequantize", qp, dq, "-f", "--dtype", "f32"])
            hat = load_file(dq)
            reps = []
            for im, weights in ((gp, gguf_w), (dp, dat_w)):
                for threads in ("1", "2"):
                    r = run([a.qpack, "verify", qp, sp, "--json", "--threads", threads, "--device", "cpu",
                             "--imatrix", im, "--activations", ap_])
                    reps.append((im, weights, json.loads(r.stdout)))
            for im, weights, rep in reps:
                kind = os.path.basename(im)
                t = {x["name"]: x for x in rep["tensors"]}
                for g, hf in hf_of.items():
                    iw = t[hf]["importance_weighted"]
                    ref = weighted_ref(src[hf], hat[hf], weights[g])
                    expect(iw is not None and close(iw["rel_error"], ref),
                           f"{tag} {kind}: {hf} imatrix-weighted {iw and iw['rel_error']} == numpy {ref}")
                    expect(iw["imatrix_entry"] == g, f"{tag} {kind}: {hf} matched entry {g}")
                for hf, x in acts.items():
                    oe = t[hf]["output_error"]
                    ref = output_ref(src[hf], hat[hf], x)
                    expect(oe is not None and oe["samples"] == x.shape[0] and close(oe["rel_error"], ref),
                           f"{tag} {kind}: {hf} output error {oe and oe['rel_error']} == numpy {ref}")
                expect(t["model.layers.0.mlp.up_proj.weight"]["output_error"] is None,
                       f"{tag} {kind}: no output error without activations")
                expect(rep["model"]["importance_weighted"]["tensors"] == 3, f"{tag} {kind}: model roll-up of 3")
            # The same figures for 1 and 2 threads, to the bit.
            for i in (0, 2):
                a1 = [(x["importance_weighted"], x["output_error"]) for x in reps[i][2]["tensors"]]
                a2 = [(x["importance_weighted"], x["output_error"]) for x in reps[i + 1][2]["tensors"]]
                expect(a1 == a2, f"{tag}: identical figures on 1 and 2 threads ({os.path.basename(reps[i][0])})")
            r = run([a.qpack, "verify", qp, sp, "--imatrix", gp, "--activations", ap_, "--device", "cpu"])
            expect("imatrix-weighted" in r.stdout and "output err" in r.stdout, f"{tag}: the table has both columns")
            hp = os.path.join(d, "r.html")
            run([a.qpack, "verify", qp, sp, "--imatrix", gp, "--html", hp, "-q", "--device", "cpu"])
            expect("Importance-weighted and output errors" in open(hp).read(), f"{tag}: the HTML has the section")

        # Refusals: exit 3 with the file named.
        bad = os.path.join(d, "bad.dat")
        open(bad, "wb").write(struct.pack("<i", 2) + b"\0" * 5)
        r = run([a.qpack, "verify", qp, sp, "--imatrix", bad], ok=(3,))
        expect("bad.dat" in r.stderr, "a malformed imatrix: exit 3, file named")
        other = os.path.join(d, "other.dat")
        write_dat(other, [("blk.0.attn_q.weight", 1, np.ones(32))])
        r = run([a.qpack, "verify", qp, sp, "--imatrix", other], ok=(3,))
        expect("another model" in r.stderr, "an imatrix of another shape: exit 3")
        bad_acts = os.path.join(d, "bad_acts.safetensors")
        save_file({"model.layers.0.self_attn.q_proj.weight": np.ones((3, 63), np.float32)}, bad_acts)
        r = run([a.qpack, "verify", qp, sp, "--activations", bad_acts], ok=(3,))
        expect("do not feed" in r.stderr, "activations of the wrong width: exit 3")
        nan_acts = os.path.join(d, "nan_acts.safetensors")
        save_file({"model.layers.0.self_attn.q_proj.weight": np.full((3, 64), np.nan, np.float32)}, nan_acts)
        r = run([a.qpack, "verify", qp, sp, "--activations", nan_acts], ok=(3,))
        expect("not finite" in r.stderr, "non-finite activations: exit 3")
        r = run([a.qpack, "verify", qp, "--imatrix", gp], ok=(2, 3))
        expect("give SOURCE" in r.stderr, "--imatrix without SOURCE is refused")
    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
