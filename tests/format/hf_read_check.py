#!/usr/bin/env python3
"""qpack's reader of compressed-tensors / GPTQ model folders against folders
written here from the documented layouts (hf_quant_gen.py):

  dequant  `qpack dequantize FOLDER OUT.safetensors` equals the numpy
           dequantization bit for bit ((q - z) * s, the exact product rounded
           once to the scale dtype; kept tensors byte for byte), for 2/4/8
           bits, symmetric and asymmetric, group and channel, F16/BF16/F32
           scales, one file and sharded, GPTQ v1 and v2.
  corpus   every malformed folder of the must-fail corpus fails with its own
           error code, naming its tensor (or file) and reason, exit 3.
  verify   `qpack verify FOLDER --source SRC --json`: the report's sums equal
           float64 numpy sums of the same folder and source.
  inspect  `qpack inspect FOLDER --json` lists format, schemes, shards, bits/weight.

Exit 77 (skip) when numpy is missing, or with --device cuda when qpack has no
usable CUDA device.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIP: numpy is not installed")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_quant_gen as gen  # noqa: E402

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)


def run(qpack, *args):
    r = subprocess.run([qpack, *args], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


CASES = []
for fmt in ("compressed-tensors", "gptq"):
    i = 0
    for b in (2, 4, 8):
        for sym in (True, False):
            for group in (32, "channel"):
                sdts = ("F16", "BF16", "F32")
                CASES.append(dict(fmt=fmt, b=b, sym=sym, group=group, sdt=sdts[i % 3],
                                  shards=1 + i % 2, v2=False))
                i += 1
CASES.append(dict(fmt="gptq", b=4, sym=False, group=64, sdt="F16", shards=2, v2=True))
CASES.append(dict(fmt="gptq", b=8, sym=True, group=128, sdt="F16", shards=3, v2=False))
CASES.append(dict(fmt="compressed-tensors", b=4, sym=True, group=128, sdt="BF16", shards=3,
                  v2=False))


def label(c):
    return "%s b%d %s g%s %s shards%d%s" % (c["fmt"], c["b"], "sym" if c["sym"] else "asym",
                                             c["group"], c["sdt"], c["shards"],
                                             " v2" if c["v2"] else "")


def mode_dequant(qpack, tmp, device):
    zero_sign = [0]
    for n, c in enumerate(CASES):
        folder = os.path.join(tmp, "m%d" % n)
        expected, _, _ = gen.write_model(folder, c["fmt"], c["b"], c["sym"], c["group"], c["sdt"],
                                         c["shards"], seed=1000 + n, v2=c["v2"])
        out = os.path.join(tmp, "out%d.safetensors" % n)
        rc, so, se = run(qpack, "dequantize", folder, out, "--device", device, "--json")
        check(rc == 0, "%s: dequantize exit %d: %s" % (label(c), rc, se.strip()))
        if rc != 0:
            continue
        got = gen.read_safetensors(out)
        check(sorted(got) == sorted(expected), "%s: tensor names %s vs %s" %
              (label(c), sorted(got), sorted(expected)))
        for name, (dt, shape, arr) in expected.items():
            if name not in got:
                continue
            gdt, gshape, gbytes = got[name]
            if gdt != dt or tuple(gshape) != tuple(shape):
                check(False, "%s: %s is %s %s, want %s %s" % (label(c), name, gdt, gshape, dt, shape))
                continue
            want = np.ascontiguousarray(arr).tobytes()
            if gbytes == want:
                continue
            ub = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(gen.DT[dt]).itemsize]
            a = np.frombuffer(gbytes, dtype=ub)
            e = np.frombuffer(want, dtype=ub)
            bad = np.nonzero(a != e)[0]
            # Every bit, the sign of a zero product included (dequantize gives
            # the product's sign: docs/hf-reading.md, Rounding).
            zero_sign[0] += int(np.sum((e[bad].astype(np.uint64) == (np.uint64(1) << np.uint64(8 * a.itemsize - 1))) & (a[bad] == 0)))
            check(False, "%s: %s: %d elements differ, first at %d: got 0x%x want 0x%x" %
                  (label(c), name, len(bad), bad[0], int(a[bad[0]]), int(e[bad[0]])))
        doc = json.loads(so)
        check(doc.get("format") == c["fmt"], "%s: --json format %r" % (label(c), doc.get("format")))
    mode_dequant_folder(qpack, tmp, device)
    print("dequant: %d folders, %d failures (%d of them +0 for -0)" %
          (len(CASES), len(FAILS), zero_sign[0]))


def mode_dequant_folder(qpack, tmp, device):
    """dequantize FOLDER OUTDIR/: sharded safetensors whose tensors are the
    single file's, config.json without quantization_config, files copied."""
    c = dict(fmt="gptq", b=4, sym=True, group=32, sdt="F16", shards=2, v2=False)
    folder = os.path.join(tmp, "dqf")
    expected, _, _ = gen.write_model(folder, c["fmt"], c["b"], c["sym"], c["group"], c["sdt"],
                                     c["shards"], seed=11)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        f.write('{"version": "1.0"}')
    # gen.write_model wrote GPTQ's quantize_config.json: it must not follow
    # the weights out of the format.
    check(os.path.exists(os.path.join(folder, "quantize_config.json")), "no quantize_config.json")
    out = os.path.join(tmp, "dqf_out") + "/"
    rc, so, se = run(qpack, "dequantize", folder, out, "--device", device, "--json",
                     "--max-shard-size", "20000", "--copy-files-from", folder)
    check(rc == 0, "dequantize to a folder: exit %d: %s" % (rc, se.strip()))
    if rc != 0:
        return
    doc = json.loads(so)
    check(doc["output_kind"] == "folder" and len(doc["shards"]) > 1 and doc["format"] == "gptq",
          "folder --json %r" % doc)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    check("quantization_config" not in cfg and cfg.get("model_type") == "llama",
          "folder config.json %r" % cfg)
    check(os.path.exists(os.path.join(out, "tokenizer.json")), "tokenizer.json not copied")
    check(not os.path.exists(os.path.join(out, "quantize_config.json")),
          "quantize_config.json copied into a dequantized folder")
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        wm = json.load(f)["weight_map"]
    check(sorted(wm) == sorted(expected), "folder index names %s" % sorted(wm))
    got = {}
    for shard in sorted(set(wm.values())):
        got.update(gen.read_safetensors(os.path.join(out, shard)))
    for name, (dt, shape, arr) in expected.items():
        g = got.get(name)
        check(g is not None and g[0] == dt and tuple(g[1]) == tuple(shape) and
              g[2] == np.ascontiguousarray(arr).tobytes(), "folder tensor %s differs" % name)


def mode_inspect(qpack, tmp):
    c = dict(fmt="gptq", b=4, sym=True, group=32, sdt="F16", shards=2, v2=False)
    folder = os.path.join(tmp, "insp")
    expected, _, stored = gen.write_model(folder, c["fmt"], c["b"], c["sym"], c["group"], c["sdt"],
                                          c["shards"], seed=7)
    rc, so, se = run(qpack, "inspect", folder, "--json")
    check(rc == 0, "inspect exit %d: %s" % (rc, se))
    if rc != 0:
        return
    r = json.loads(so)
    check(r["format"] == "gptq", "inspect format %r" % r.get("format"))
    check(len(r["shards"]) == 2, "inspect shards %r" % r.get("shards"))
    names = [t["name"] for t in r["tensors"]]
    check(sorted(names) == sorted(expected), "inspect names %s" % names)
    for t in r["tensors"]:
        if t["name"].endswith("proj.weight"):
            check(t["quantized"] and t["quant"]["bits"] == 4 and t["quant"]["group_size"] == 32
                  and t["quant"]["symmetric"] and t["scheme"] == "q4 g32 ax1 sym F16",
                  "inspect scheme of %s: %r" % (t["name"], t))
            m = t["name"][:-len(".weight")]
            nbytes = sum(np.ascontiguousarray(stored[m + s][2]).nbytes
                         for s in (".qweight", ".qzeros", ".scales", ".g_idx"))
            check(t["stored_bytes"] == nbytes, "inspect bytes of %s: %r vs %d" %
                  (t["name"], t["stored_bytes"], nbytes))
            el = t["shape"][0] * t["shape"][1]
            check(abs(t["bits_per_weight"] - nbytes * 8 / el) < 1e-9, "bits per weight %r" % t)
    rc, so, se = run(qpack, "inspect", folder)
    check(rc == 0 and "gptq" in so and "q4 g32" in so, "inspect table: %s %s" % (so, se))
    print("inspect: %d failures" % len(FAILS))


Q_NAME = "model.layers.0.self_attn.q_proj.weight"


def mode_verify(qpack, tmp, device):
    """A source whose weights are the folder's reconstruction plus noise; the
    report's sums against float64 numpy over the same values."""
    for n, c in enumerate([dict(fmt="compressed-tensors", b=4, sym=True, group=32, sdt="BF16",
                                shards=2, v2=False),
                           dict(fmt="gptq", b=8, sym=True, group="channel", sdt="F16",
                                shards=1, v2=False),
                           dict(fmt="compressed-tensors", b=2, sym=False, group=32, sdt="F16",
                                shards=1, v2=False)]):
        folder = os.path.join(tmp, "ver%d" % n)
        expected, exact, stored = gen.write_model(folder, c["fmt"], c["b"], c["sym"], c["group"],
                                                  c["sdt"], c["shards"], seed=77 + n)
        rng = np.random.default_rng(5 + n)
        src = {}
        refs = {}
        for name, (dt, shape, arr) in expected.items():
            if name in exact:
                x = (exact[name] + rng.standard_normal(exact[name].shape) * 1e-3).astype(np.float32)
                src[name] = ("F32", shape, x)
                refs[name] = x.astype(np.float64)
            else:
                src[name] = (dt, shape, arr)
        src_path = os.path.join(tmp, "src%d.safetensors" % n)
        gen.write_safetensors(src_path, src)
        rc, so, se = run(qpack, "verify", folder, "--source", src_path, "--json", "--device", device)
        check(rc == 0, "verify %s exit %d: %s" % (label(c), rc, se.strip()))
        if rc != 0:
            continue
        rep = json.loads(so)
        check(rep["file"]["format"] == c["fmt"], "verify file.format %r" % rep["file"].get("format"))
        by = {t["name"]: t for t in rep["tensors"]}
        check(sorted(by) == sorted(expected), "verify names %s" % sorted(by))
        for name, x in refs.items():
            t = by.get(name)
            if t is None:
                continue
            xh = exact[name]
            err = x - xh
            want = {"sq_err": float(np.sum(err * err)), "sq_ref": float(np.sum(x * x)),
                    "sq_hat": float(np.sum(xh * xh)), "dot": float(np.sum(x * xh)),
                    "abs_err": float(np.sum(np.abs(err)))}
            sums = t["metrics"]["sums"]
            for k, v in want.items():
                check(abs(sums[k] - v) <= 1e-9 * abs(v) + 1e-300,
                      "verify %s %s: %r vs float64 %r" % (name, k, sums[k], v))
            check(abs(t["metrics"]["max_abs_error"] - float(np.max(np.abs(err)))) <= 0,
                  "verify %s max_abs_error %r vs %r" % (name, t["metrics"]["max_abs_error"],
                                                        float(np.max(np.abs(err)))))
            check(t["quantized"] and t["scheme"]["bits"] == c["b"] and t["scheme"]["axis"] == 1
                  and t["scheme"]["symmetric"] == c["sym"]
                  and t["scheme"]["zero_point"] == (None if c["sym"] else "integer"),
                  "verify scheme %r" % t.get("scheme"))
            check(t["metrics"]["elements"] == x.size, "verify elements %r" % t["metrics"]["elements"])
        for name in expected:
            if name not in exact and name in by:
                check(by[name]["status"] == "ok", "verify kept %s: %r" % (name, by[name]["status"]))
        check(rep["bound_is_promise"] is False, "verify: bound_is_promise %r" % rep.get("bound_is_promise"))
        # The gate: a threshold no tensor meets fails (10) and names every quantized tensor.
        rc, so, se = run(qpack, "verify", folder, "--source", src_path, "--json", "--device", device,
                         "--max-rel-error", "1e-12")
        check(rc == 10, "verify gate exit %d" % rc)
        if rc == 10:
            failed = {f["tensor"] for f in json.loads(so)["gate"]["failures"]}
            check(failed == set(exact), "verify gate failures %s" % sorted(failed))
        # A source whose kept tensor differs by one byte is a source mismatch (4).
        bad = dict(src)
        dt, shape, arr = bad["model.norm.weight"]
        arr = arr.copy()
        arr[3] += 1
        bad["model.norm.weight"] = (dt, shape, arr)
        bad_path = os.path.join(tmp, "bad%d.safetensors" % n)
        gen.write_safetensors(bad_path, bad)
        rc, so, se = run(qpack, "verify", folder, "--source", bad_path, "-q", "--device", device)
        check(rc == 4 and "model.norm.weight: raw bytes differ" in so,
              "verify mismatch exit %d: %s" % (rc, so))
        # The HTML report of the same run.
        html = os.path.join(tmp, "r%d.html" % n)
        rc, so, se = run(qpack, "verify", folder, "--source", src_path, "-q", "--html", html,
                         "--device", device)
        text = open(html).read() if os.path.exists(html) else ""
        check(rc == 0 and "model folder" in text and Q_NAME in text,
              "verify --html exit %d, %d bytes" % (rc, len(text)))
        # Without a source: the self-check passes (stored parameters only).
        rc, so, se = run(qpack, "verify", folder, "--json", "--device", device)
        check(rc == 0, "verify self-check exit %d: %s" % (rc, se))
    print("verify: %d failures" % len(FAILS))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["dequant", "corpus", "verify", "inspect", "all"])
    ap.add_argument("--qpack", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", help="write the folders here and keep them")
    a = ap.parse_args()
    if a.device != "cpu":
        probe = subprocess.run([a.qpack, "dequantize", "/nonexistent", "/nonexistent/x",
                                "--device", a.device], capture_output=True, text=True)
        if probe.returncode == 6:
            print("SKIP: no usable CUDA device:", probe.stderr.strip())
            return 77
    tmp = a.keep or tempfile.mkdtemp(prefix="qpack-hf-")
    os.makedirs(tmp, exist_ok=True)
    try:
        if a.mode in ("dequant", "all"):
            mode_dequant(a.qpack, tmp, a.device)
        if a.mode in ("corpus", "all"):
            import hf_must_fail
            hf_must_fail.run_corpus(a.qpack, tmp, check)
        if a.mode in ("verify", "all"):
            mode_verify(a.qpack, tmp, a.device)
        if a.mode in ("inspect", "all"):
            mode_inspect(a.qpack, tmp)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
