#!/usr/bin/env python3
"""convert --target-bpw / --axis auto (issue #15 item 3, docs/cli.md "Choices to
a budget"), checked from outside:

- the target is hit within 1 % (and never passed) on generated Llama
  checkpoints of several shapes and dtypes, stories260K where ../shared/data
  has it, and numpy-made tensors of awkward shapes; the bits per weight are
  recomputed here from the written file's section sizes (`qpack inspect
  --json`), not taken from convert's report;
- the same plan and the same bytes at 1 and 2 threads, and from two parts
  merged; the recipe recorded in
  the file's provenance reproduces it byte for byte;
- a tensor with outliers gets more bits than its twin without;
- a sampled tensor's estimated error is within 3 % of verify's;
- --axis auto with an imatrix (or activations of the same mean squares) picks, per tensor, the axis of lower
  importance-weighted error, also where plain weight error would pick the
  other (both errors computed here in numpy float64 from a min-max RTN);
- refusals (exit 2: a target outside the reachable range naming it, --axis
  auto without --imatrix, --imatrix alone, GGUF output; exit 3: an imatrix
  entry of the wrong width);
- verify accepts the files (exit 0).

  budget_check.py --qpack QPACK --testgen QPACK_TESTGEN [--data SHARED_DATA]

Skips (77) without numpy or safetensors.
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
    from safetensors.numpy import save_file
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def file_bpw(qpack, path):
    """Bits per weight over the quantized tensors, from the file's sections."""
    r = json.loads(run([qpack, "inspect", path, "--json"], check=True).stdout)
    bits, elems = 0, 0
    for t in r["tensors"]:
        if t["encoding"] != "group_quant":
            continue
        n = 1
        for d in t["shape"]:
            n *= d
        elems += n
        bits += 8 * sum(s["raw_size"] for s in t["sections"].values())
    return bits / elems, r


def convert(qpack, src, out, flags):
    p = run([qpack, "convert", src, out, "-f", "--json", "--device", "cpu"] + flags)
    if p.returncode != 0:
        raise SystemExit(f"convert {src} {flags} failed: {p.stdout} {p.stderr}")
    return json.loads(p.stdout)


def check_targets(qpack, src, d, label, targets):
    for tb in targets:
        out = os.path.join(d, "t.qpack")
        s = convert(qpack, src, out, ["--target-bpw", str(tb), "-j", "2"])
        bpw, _ = file_bpw(qpack, out)
        print(f"{label}: target {tb}: file {bpw:.4f} bpw, convert says {s['budget']['bpw']:.4f}, "
              f"est. rel. error {s['budget']['est_rel_error']:.4f}")
        check(tb * 0.99 <= bpw <= tb * (1 + 1e-12), f"{label}: target {tb} missed: {bpw}")
        check(abs(bpw - s["budget"]["bpw"]) < 1e-9, f"{label}: report {s['budget']['bpw']} != file {bpw}")
        v = run([qpack, "verify", out, src, "--device", "cpu", "-q"])
        check(v.returncode == 0, f"{label}: verify exit {v.returncode}: {v.stdout[-400:]}")


def rtn_error(w, axis, g, bits, weights):
    """Min-max RTN (docs/quantization.md §4, F16 scale and minimum) along
    `axis` of a 2-D w, groups of g; returns sum weights_j * err^2 (float64)."""
    x = w if axis == 1 else w.T
    cw = weights if axis == 1 else None
    q = float(2 ** bits - 1)
    rows, cols = x.shape
    err = np.zeros_like(x, dtype=np.float64)
    for c0 in range(0, cols, g):
        blk = x[:, c0:c0 + g].astype(np.float32)
        mn = blk.min(axis=1, keepdims=True)
        mx = blk.max(axis=1, keepdims=True)
        s = ((mx - mn) / np.float32(q)).astype(np.float16).astype(np.float32)
        m = mn.astype(np.float16).astype(np.float32)
        inv = np.where(s > 0, 1 / np.where(s > 0, s, 1), 0).astype(np.float32)
        code = np.clip(np.rint((blk - m) * inv), 0, q)
        err[:, c0:c0 + g] = (code * s + m).astype(np.float64) - blk
    e2 = err ** 2
    if axis == 1:
        return float((e2 * cw[None, :]).sum())
    return float((e2 * weights[:, None]).sum())  # x = w.T: rows are input channels


def write_imatrix_dat(path, entries):
    """docs/imatrix.md's legacy layout: ncall 1, values = the weights."""
    b = struct.pack("<i", len(entries))
    for name, vals in entries:
        nb = name.encode()
        b += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", 1, len(vals))
        b += np.asarray(vals, dtype="<f4").tobytes()
    with open(path, "wb") as f:
        f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qpack", required=True)
    ap.add_argument("--testgen", required=True)
    ap.add_argument("--data", default="")
    a = ap.parse_args()
    qp = a.qpack
    rng = np.random.default_rng(15)
    with tempfile.TemporaryDirectory() as d:
        # 1. Targets on several checkpoints.
        shapes = [("llama default", []),
                  ("llama h96 i256 bf16 tied", ["--hidden", "96", "--intermediate", "256", "--tied",
                                                "--dtype", "bf16"]),
                  ("llama h160 i432 f16 gqa", ["--hidden", "160", "--intermediate", "432", "--heads", "5",
                                               "--kv-heads", "1", "--layers", "1", "--vocab", "700",
                                               "--dtype", "f16"])]
        for i, (label, flags) in enumerate(shapes):
            src = os.path.join(d, f"ll{i}")
            run([a.testgen, "llama", src] + flags, check=True)
            check_targets(qp, src, d, label, [2.5, 4.5, 6.0] if i == 0 else [3.25, 4.5])
        stories = os.path.join(a.data, "stories260K", "stories260K.bin") if a.data else ""
        if stories and os.path.exists(stories):
            src = os.path.join(d, "stories.safetensors")
            run([a.testgen, "stories", stories, src], check=True)
            check_targets(qp, src, d, "stories260K", [3.0, 4.5])
        else:
            print("note: no stories260K, its targets not checked")
        awkward = {"a.weight": rng.standard_normal((37, 300), dtype=np.float32),
                   "b.weight": rng.standard_normal((130, 18), dtype=np.float32),
                   "c.weight": rng.standard_normal((3, 40, 50), dtype=np.float32),
                   "d.weight": rng.standard_normal((1000, 72), dtype=np.float32),
                   "norm": rng.standard_normal((300,), dtype=np.float32)}
        src = os.path.join(d, "awkward.safetensors")
        save_file(awkward, src)
        # Four tensors (one kept): steps too coarse for 1 % everywhere; never
        # above the target, and a warning where more than 1 % below.
        for tb in (3.0, 4.5):
            out = os.path.join(d, "t.qpack")
            p = run([qp, "convert", src, out, "-f", "--target-bpw", str(tb), "-q"])
            bpw, _ = file_bpw(qp, out)
            print(f"awkward shapes: target {tb}: file {bpw:.4f} bpw, stderr {p.stderr.strip()!r}")
            check(p.returncode == 0 and bpw <= tb, f"awkward shapes: target {tb}: {bpw}")
            check((bpw < tb * 0.99) == ("more than 1 % below" in p.stderr),
                  f"awkward shapes: target {tb}: the warning does not match {bpw}")

        # 2. Threads and the provenance recipe.
        src = os.path.join(d, "ll1")
        o1, o2, o3 = (os.path.join(d, n) for n in ("j1.qpack", "j2.qpack", "replay.qpack"))
        s1 = convert(qp, src, o1, ["--target-bpw", "4.5", "-j", "1"])
        s2 = convert(qp, src, o2, ["--target-bpw", "4.5", "-j", "2"])
        check(open(o1, "rb").read() == open(o2, "rb").read(), "bytes differ between -j 1 and -j 2")
        check(s1["budget"] == s2["budget"], "budget reports differ between -j 1 and -j 2")
        p1 = run([qp, "convert", src, "--dry-run", "--json", "--target-bpw", "4.5", "-j", "1"]).stdout
        p2 = run([qp, "convert", src, "--dry-run", "--json", "--target-bpw", "4.5", "-j", "2"]).stdout
        check(p1 == p2, "dry-run plans differ between -j 1 and -j 2")
        _, ins = file_bpw(qp, o1)
        recipe = os.path.join(d, "recipe.json")
        with open(recipe, "w") as f:
            json.dump(ins["provenance"]["recipe"], f)
        check("tensors" in ins["provenance"]["recipe"], "provenance recipe lacks 'tensors'")
        convert(qp, src, o3, ["--recipe", recipe])
        check(open(o1, "rb").read() == open(o3, "rb").read(), "the provenance recipe does not reproduce the file")

        # Conversion in parts: each part chooses for the whole model, so the
        # merged parts are the single file.
        for k in (0, 1):
            run([qp, "convert", src, os.path.join(d, "p.qpack"), "-q", "-f", "--target-bpw", "4.5", "-j", "1",
                 "--part", f"{k}/2"], check=True)
        run([qp, "merge", os.path.join(d, "p-00001-of-00002.qpack"), os.path.join(d, "p-00002-of-00002.qpack"),
             "--output", os.path.join(d, "merged.qpack"), "-q"], check=True)
        check(open(o1, "rb").read() == open(os.path.join(d, "merged.qpack"), "rb").read(),
              "--part 0/2 + 1/2 merged is not the single file")

        # 3. Outliers get more bits.
        base = rng.standard_normal((256, 256)).astype(np.float32) * 0.02
        spiky = base.copy()
        idx = rng.choice(base.size, 40, replace=False)
        spiky.flat[idx] = 1.0
        src = os.path.join(d, "outliers.safetensors")
        save_file({"a.calm.weight": base.copy(), "b.spiky.weight": spiky}, src)
        s = convert(qp, src, os.path.join(d, "o.qpack"), ["--target-bpw", "4.5"])
        by = {t["name"]: t for t in s["budget"]["tensors"]}
        print("outliers:", {n: (t["bits"], t["group_size"], round(t["bpw"], 3)) for n, t in by.items()})
        check(by["b.spiky.weight"]["bpw"] > by["a.calm.weight"]["bpw"],
              "the tensor with outliers did not get more bits")

        # The estimate from a sample (a tensor past 2^20 elements) against
        # verify's measured error of the written tensor.
        big = (rng.standard_normal((1100, 1024)) * rng.uniform(0.2, 2.0, (1100, 1))).astype(np.float32)
        src = os.path.join(d, "big.safetensors")
        save_file({"big.weight": big, "small.weight": big[:64, :64].copy()}, src)
        out = os.path.join(d, "big.qpack")
        s = convert(qp, src, out, ["--target-bpw", "4.5"])
        est = {t["name"]: (t["est_rel_error"], t["sampled_elements"], t["elements"]) for t in s["budget"]["tensors"]}
        v = json.loads(run([qp, "verify", out, src, "--json", "--device", "cpu"]).stdout)
        for t in v["tensors"]:
            if t["name"] in est:
                e, ns, ne = est[t["name"]]
                got = t["metrics"]["rel_error"]
                print(f"estimate {t['name']}: {e:.5f} from {ns} of {ne} elements, verify {got:.5f}")
                check(abs(e - got) <= 0.03 * got, f"{t['name']}: estimate {e} vs verify {got}")
        check(est["big.weight"][1] < est["big.weight"][2], "big.weight was not sampled")

        # 4. --axis auto follows the importance-weighted error.
        n = 256
        r = rng.uniform(0.0, 1.0, (n, 1))
        # Alternate channels large and small: groups along a row mix them
        # (their range is the large ones'), groups down a column do not; the
        # imatrix makes the small channels the ones that matter.
        c = np.where(np.arange(n) % 2 == 0, 1.0, 0.1)[None, :]
        flip = (r * c * rng.uniform(-1, 1, (n, n))).astype(np.float32)
        w_flip = np.where(np.arange(n) % 2 == 0, 1.0, 100.0)
        rows = (rng.uniform(0.05, 1.0, (n, 1)) ** 3 * rng.uniform(-1, 1, (n, n))).astype(np.float32)
        cols = (rng.uniform(0.05, 1.0, (1, n)) ** 3 * rng.uniform(-1, 1, (n, n))).astype(np.float32)
        ones = np.ones(n)
        tensors = {"l.flip.weight": (flip, w_flip), "l.rows.weight": (rows, ones), "l.cols.weight": (cols, ones)}
        src = os.path.join(d, "axes.safetensors")
        save_file({k: v[0] for k, v in tensors.items()}, src)
        im = os.path.join(d, "imatrix.dat")
        write_imatrix_dat(im, [(k, v[1]) for k, v in tensors.items()])
        s = convert(qp, src, os.path.join(d, "ax.qpack"), ["--axis", "auto", "--imatrix", im])
        got = {t["name"]: t["axis"] for t in s["budget"]["tensors"]}
        for name, (w, wt) in tensors.items():
            e0, e1 = rtn_error(w, 0, 64, 4, wt), rtn_error(w, 1, 64, 4, wt)
            p0, p1 = rtn_error(w, 0, 64, 4, ones), rtn_error(w, 1, 64, 4, ones)
            want = 0 if e0 < e1 else 1
            print(f"axis auto {name}: weighted {e0:.4g} / {e1:.4g}, plain {p0:.4g} / {p1:.4g}: "
                  f"qpack axis {got[name]}, numpy {want}")
            check(got[name] == want, f"{name}: --axis auto chose {got[name]}, weighted error says {want}")
            if name == "l.flip.weight":
                check((p0 < p1) != (e0 < e1), "the flip tensor does not flip (test is not testing)")
        # Activations whose per-channel mean square is the imatrix's weight
        # choose the same axes.
        acts = {k: (np.sqrt(v[1])[None, :] * np.where(rng.uniform(size=(8, n)) < 0.5, -1.0, 1.0))
                .astype(np.float32) for k, v in tensors.items()}
        af = os.path.join(d, "acts.safetensors")
        save_file(acts, af)
        s = convert(qp, src, os.path.join(d, "axa.qpack"), ["--axis", "auto", "--activations", af])
        check({t["name"]: t["axis"] for t in s["budget"]["tensors"]} == got,
              "--axis auto with activations chose other axes than with the same imatrix")
        save_file({"l.flip.weight": np.ones((4, 17), dtype=np.float32)}, os.path.join(d, "bad_acts.safetensors"))
        p = run([qp, "convert", src, "--dry-run", "--axis", "auto", "--activations",
                 os.path.join(d, "bad_acts.safetensors")])
        check(p.returncode == 3 and "l.flip.weight" in p.stderr,
              f"activations of the wrong width: exit {p.returncode}, {p.stderr.strip()!r}")
        s = convert(qp, src, os.path.join(d, "axb.qpack"),
                    ["--axis", "auto", "--imatrix", im, "--target-bpw", "3.5"])
        bpw, _ = file_bpw(qp, os.path.join(d, "axb.qpack"))
        check(3.5 * 0.99 <= bpw <= 3.5, f"--axis auto --target-bpw 3.5 gave {bpw}")

        # A recipe's per-tensor choices: all three keys, nothing else.
        for bad_tensors, text in [({"a.weight": {"bits": 4, "group_size": 64}}, "needs"),
                                  ({"a.weight": {"bits": 4, "group_size": 64, "axis": 0, "skip": True}},
                                   "takes only"),
                                  ({"a.weight": {"bits": 5, "group_size": 64, "axis": 0}}, "bits")]:
            rf = os.path.join(d, "bad_recipe.json")
            with open(rf, "w") as f:
                json.dump({"tensors": bad_tensors}, f)
            p = run([qp, "convert", os.path.join(d, "awkward.safetensors"), "--dry-run", "--recipe", rf])
            check(p.returncode == 2 and text in p.stderr, f"recipe tensors {bad_tensors}: {p.returncode} {p.stderr!r}")

        # 4b. --target-error: the estimate within the target, every single
        # move to a cheaper candidate would break it (from the plan's own
        # candidates and references), and verify's error near the estimate.
        te_cases = [("llama default", os.path.join(d, "ll0"), [0.07, 0.1, 0.15])]
        if stories and os.path.exists(stories):
            te_cases.append(("stories260K", os.path.join(d, "stories.safetensors"), [0.05, 0.09]))
        for label, src, targets in te_cases:
            for te in targets:
                plan = json.loads(run([qp, "convert", src, "--dry-run", "--json", "--target-error", str(te)],
                                      check=True).stdout)["budget"]
                ts = plan["tensors"]
                ref = sum(t["reference"] for t in ts)
                err = sum(t["est_rel_error"] ** 2 * t["reference"] for t in ts)
                check(abs(np.sqrt(err / ref) - plan["est_rel_error"]) < 1e-9,
                      f"{label} --target-error {te}: totals {np.sqrt(err / ref)} vs {plan['est_rel_error']}")
                check(plan["est_rel_error"] <= te * (1 + 1e-12),
                      f"{label} --target-error {te}: estimate {plan['est_rel_error']} above the target")
                for t in ts:
                    for c in t["candidates"]:
                        if c["bytes"] >= t["bytes"]:
                            continue
                        e2 = err + (c["est_rel_error"] ** 2 - t["est_rel_error"] ** 2) * t["reference"]
                        check(e2 > te * te * ref * (1 - 1e-12),
                              f"{label} --target-error {te}: {t['name']} could take {c} within the target")
                out = os.path.join(d, "te.qpack")
                s = convert(qp, src, out, ["--target-error", str(te)])
                v = json.loads(run([qp, "verify", out, src, "--device", "cpu", "--json"]).stdout)
                got = v["model"]["metrics"]["rel_error"]
                print(f"{label}: --target-error {te}: {s['budget']['bpw']:.4f} bpw, est. "
                      f"{s['budget']['est_rel_error']:.5f}, verify {got:.5f}")
                check(abs(got / s["budget"]["est_rel_error"] - 1) < 0.03,
                      f"{label} --target-error {te}: verify {got} vs estimate {s['budget']['est_rel_error']}")
            # A looser target never costs more bits.
            b = [json.loads(run([qp, "convert", src, "--dry-run", "--json", "--target-error", str(te)],
                                check=True).stdout)["budget"]["bpw"] for te in targets]
            check(all(x >= y for x, y in zip(b, b[1:])), f"{label}: bpw not falling with the target: {b}")

        # 5. Refusals.
        src = os.path.join(d, "ll0")
        for flags, code, text in [
                (["--target-bpw", "1.0"], 2, "reachable range"),
                (["--target-bpw", "20"], 2, "reachable range"),
                (["--target-bpw", "0"], 2, "positive"),
                (["--target-bpw", "nan"], 2, ""),
                (["--axis", "auto"], 2, "--imatrix"),
                (["--imatrix", im], 2, "--target-bpw"),
                (["--activations", im], 2, "--target-bpw"),
                (["--axis", "sideways"], 2, "integer or 'auto'"),
                (["--target-bpw", "4.5", "--format", "gguf"], 2, "--target-bpw"),
                (["--target-error", "0"], 2, "positive"),
                (["--target-error", "1e-6"], 2, "least reachable"),
                (["--target-error", "0.1", "--target-bpw", "4"], 2, "two targets"),
                (["--target-error", "0.1", "--budget-objective", "relative"], 2, "'total'"),
                (["--target-error", "0.1", "--format", "gguf"], 2, "--target-error"),
        ]:
            p = run([qp, "convert", src, "--dry-run"] + flags)
            check(p.returncode == code and text in p.stderr,
                  f"{flags}: exit {p.returncode} (want {code}), stderr {p.stderr.strip()!r}")
        bad = os.path.join(d, "bad.dat")
        write_imatrix_dat(bad, [("l.flip.weight", np.ones(17))])
        p = run([qp, "convert", os.path.join(d, "axes.safetensors"), "--dry-run", "--axis", "auto",
                 "--imatrix", bad])
        check(p.returncode == 3 and "l.flip.weight" in p.stderr,
              f"a wrong-width imatrix entry: exit {p.returncode}, {p.stderr.strip()!r}")
    if FAILS:
        print(f"{len(FAILS)} failures")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
