#!/usr/bin/env python3
"""Conversion in parts, shard sets and qpack merge (issue #17, docs/scale-out.md).

Modes (one ctest each):
  merge      N-part conversion + merge (one file: byte for byte the single run;
             --index-only: a set that inspects, verifies and dequantizes as the
             single file does), N = 1, 2, 3, 7, 16, on a sharded checkpoint.
  scheduler  Slurm job arrays and Kubernetes Indexed Jobs played locally: N
             processes at once with exactly the variables the schedulers set,
             then the merge job, compared with cmp against a single run; and
             --part auto's refusals.
  kill9      a part killed with kill -9 mid-write leaves nothing under its
             name; re-run, the merge is byte for byte the single run.
  sets       convert --max-shard-size: the set reads like one file; every
             malformed set (missing, extra, swapped, mismatched shard, stale or
             broken index) and every bad merge (missing, duplicated, foreign
             part) refused with its own error code and exit code.
The checkpoint is generated at test time by qpack-testgen (small: seconds).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(args, env=None, expect=0):
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if expect is not None and p.returncode != expect:
        check(False, f"{' '.join(args)}: exit {p.returncode}, expected {expect}\n"
                     f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}")
    return p


def same_bytes(a, b):
    if shutil.which("cmp"):
        return subprocess.run(["cmp", a, b], capture_output=True).returncode == 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


class Env:
    def __init__(self, qpack, testgen, work):
        self.qpack, self.testgen, self.work = qpack, testgen, work
        self.src = os.path.join(work, "src")
        # Llama-shaped, sharded safetensors (several source shards), ~21 tensors.
        run([testgen, "llama", self.src, "--hidden", "64", "--intermediate", "160", "--layers",
             "2", "--vocab", "96", "--shard-bytes", "40000", "--seed", "7"])
        self.single = os.path.join(work, "single.qpack")
        run([qpack, "convert", self.src, self.single, "-q", "--threads", "2"])

    def part_cmd(self, out, spec, *extra):
        return [self.qpack, "convert", self.src, out, "--part", spec, "-q", "--threads", "1",
                *extra]


def tensor_rows(verify_json):
    rows = json.loads(verify_json)["tensors"]
    keep = ("name", "dtype", "shape", "scheme", "rel_error", "snr_db", "cosine", "max_abs_error",
            "bound_violations")
    return [{k: r.get(k) for k in keep} for r in rows]


def mode_merge(e):
    single_deq = os.path.join(e.work, "single.safetensors")
    run([e.qpack, "dequantize", e.single, single_deq, "-q"])
    single_verify = run([e.qpack, "verify", e.single, e.src, "--json"]).stdout
    for n in (1, 2, 3, 7, 16):
        d = os.path.join(e.work, f"n{n}")
        os.makedirs(d)
        out = os.path.join(d, "model.qpack")
        parts = []
        for k in range(n):
            p = run(e.part_cmd(out, f"{k}/{n}", "--json"))
            files = json.loads(p.stdout)["files"] if p.returncode == 0 else []
            check(files == [os.path.join(d, f"model-{k + 1:05d}-of-{n:05d}.qpack")],
                  f"N={n} part {k}: wrote {files}")
            parts += files
            # Each part is a complete .qpack on its own.
            run([e.qpack, "inspect", "--check", "-q", files[0] if files else out])
        merged = os.path.join(e.work, f"merged-{n}.qpack")
        # Any order of the parts.
        run([e.qpack, "merge", *reversed(parts), "--output", merged, "-q"])
        check(same_bytes(merged, e.single), f"N={n}: merged file differs from the single run")
        idx = os.path.join(d, "model.qpack.index.json")
        m = run([e.qpack, "merge", *parts, "--output", idx, "--index-only", "--json"])
        if m.returncode == 0:
            s = json.loads(m.stdout)
            check(s["parts"] == n and s["index_only"], f"N={n}: merge --json {s}")
        for path in (idx, d, parts[-1]):  # the index, the folder, one shard with siblings
            deq = os.path.join(e.work, f"deq-{n}.safetensors")
            run([e.qpack, "dequantize", path, deq, "-q", "--force"])
            check(same_bytes(deq, single_deq), f"N={n}: dequantize {path} differs")
            v = run([e.qpack, "verify", path, e.src, "--json"]).stdout
            check(v and tensor_rows(v) == tensor_rows(single_verify),
                  f"N={n}: verify {path} reports other numbers than the single file")
        insp = json.loads(run([e.qpack, "inspect", d, "--json", "--check"]).stdout or "{}")
        single_insp = json.loads(run([e.qpack, "inspect", e.single, "--json"]).stdout)
        check(insp.get("shards") and len(insp["shards"]) == n,
              f"N={n}: inspect lists {insp.get('shards')}")
        check([t["name"] for t in insp.get("tensors", [])] ==
              [t["name"] for t in single_insp["tensors"]], f"N={n}: inspect tensors differ")
        check(insp.get("provenance") == single_insp["provenance"],
              f"N={n}: the set's provenance is not the single file's")


def play(e, n, envs, out_dir, extra=()):
    """Starts the N array tasks at once, as the scheduler would, and waits."""
    os.makedirs(out_dir)
    out = os.path.join(out_dir, "model.qpack")
    procs = []
    for k in range(n):
        env = {k2: v for k2, v in os.environ.items()
               if not k2.startswith("SLURM_") and k2 not in ("JOB_COMPLETION_INDEX", "QPACK_PARTS")}
        env.update(envs(k))
        procs.append(subprocess.Popen(e.part_cmd(out, "auto", *extra), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for k, p in enumerate(procs):
        o, err = p.communicate()
        check(p.returncode == 0, f"task {k}: exit {p.returncode}: {err.decode()[-1000:]}")
    parts = [os.path.join(out_dir, f"model-{k + 1:05d}-of-{n:05d}.qpack") for k in range(n)]
    # The dependent merge job: both modes.
    merged = os.path.join(out_dir, "merged.qpack")
    run([e.qpack, "merge", *parts, "--output", merged, "-q"])
    check(same_bytes(merged, e.single), f"{out_dir}: merged file differs (cmp)")
    run([e.qpack, "merge", *parts, "--output", os.path.join(out_dir, "model.qpack.index.json"),
         "--index-only", "-q"])
    run([e.qpack, "verify", out_dir, e.src, "-q"])


def mode_scheduler(e):
    n = 4
    # sbatch --array=0-3: ids 0..3, MIN 0, MAX 3, COUNT 4.
    play(e, n, lambda k: {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(k),
                          "SLURM_ARRAY_TASK_COUNT": str(n), "SLURM_ARRAY_TASK_MIN": "0",
                          "SLURM_ARRAY_TASK_MAX": str(n - 1)}, os.path.join(e.work, "slurm"))
    # sbatch --array=5-8: SLURM_ARRAY_TASK_MIN is honoured.
    play(e, n, lambda k: {"SLURM_ARRAY_TASK_ID": str(5 + k), "SLURM_ARRAY_TASK_COUNT": str(n),
                          "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": str(5 + n - 1)},
         os.path.join(e.work, "slurm-min5"))
    # Kubernetes Indexed Job, completions 4: the count once, as QPACK_PARTS or --parts.
    play(e, n, lambda k: {"JOB_COMPLETION_INDEX": str(k), "QPACK_PARTS": str(n)},
         os.path.join(e.work, "k8s-env"))
    play(e, n, lambda k: {"JOB_COMPLETION_INDEX": str(k)}, os.path.join(e.work, "k8s-flag"),
         ("--parts", str(n)))
    # Refusals: exit 2 and the variable named.
    out = os.path.join(e.work, "refused.qpack")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SLURM_") and k not in ("JOB_COMPLETION_INDEX", "QPACK_PARTS")}
    cases = [({}, "neither SLURM_ARRAY_TASK_ID"),
             ({"JOB_COMPLETION_INDEX": "1"}, "--parts N or QPACK_PARTS"),
             ({"JOB_COMPLETION_INDEX": "4", "QPACK_PARTS": "4"}, "does not exist"),
             ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
             ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0",
               "SLURM_ARRAY_TASK_MAX": "2"}, "without a step"),
             ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"},
              "below SLURM_ARRAY_TASK_MIN"),
             ({"SLURM_ARRAY_TASK_ID": "1", "JOB_COMPLETION_INDEX": "1"}, "both"),
             ({"JOB_COMPLETION_INDEX": "x", "QPACK_PARTS": "2"}, "whole number")]
    for extra_env, words in cases:
        env = dict(base, **extra_env)
        p = run(e.part_cmd(out, "auto"), env=env, expect=2)
        check(words in p.stderr, f"--part auto with {extra_env}: '{words}' not in {p.stderr!r}")
        check(not os.path.exists(out), "a refused --part auto wrote something")
    for spec in ("3/3", "1", "a/2", "0/0"):
        run(e.part_cmd(out, spec), expect=2)
    run(e.part_cmd(out, "0/2", "--max-shard-size", "1MB"), expect=2)


def mode_kill9(e):
    # A larger checkpoint so that the part is still writing when it is killed.
    src = os.path.join(e.work, "big")
    run([e.testgen, "llama", src, "--hidden", "512", "--intermediate", "1536", "--layers", "4",
         "--vocab", "2048", "--shard-bytes", "8000000", "--seed", "3"])
    single = os.path.join(e.work, "big.qpack")
    run([e.qpack, "convert", src, single, "-q", "--threads", "2"])
    d = os.path.join(e.work, "k9")
    os.makedirs(d)
    out = os.path.join(d, "model.qpack")
    n = 2
    name = f"model-00002-of-{n:05d}.qpack"
    killed = False
    for attempt in range(5):
        p = subprocess.Popen([e.qpack, "convert", src, out, "--part", f"1/{n}", "-q", "--threads",
                              "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline and p.poll() is None:
            partial = [f for f in os.listdir(d) if f.startswith(f".{name}.qpack-partial.")]
            if partial and os.path.getsize(os.path.join(d, partial[0])) > 1_000_000:
                os.kill(p.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
        p.wait()
        if killed:
            break
        os.remove(os.path.join(d, name))  # it finished first: try again
    check(killed, "could not kill the part mid-write in 5 attempts")
    check(not os.path.exists(os.path.join(d, name)), "kill -9 left a file under the final name")
    check(any(f.startswith(f".{name}.qpack-partial.") for f in os.listdir(d)),
          "kill -9 left no temporary file (was it mid-write?)")
    # The scheduler re-runs the task; the other part runs as usual.
    run([e.qpack, "convert", src, out, "--part", f"1/{n}", "-q"])
    run([e.qpack, "convert", src, out, "--part", f"0/{n}", "-q"])
    check(not any(".qpack-partial." in f for f in os.listdir(d)),
          f"the re-run left the dead run's temporary file: {os.listdir(d)}")
    merged = os.path.join(e.work, "big-merged.qpack")
    run([e.qpack, "merge", os.path.join(d, f"model-00001-of-{n:05d}.qpack"),
         os.path.join(d, name), "-o", merged, "-q"])
    check(same_bytes(merged, single), "after kill -9 and re-run the merge differs from one run")


def expect_error(e, args, code, exit_code, words=()):
    p = run([e.qpack, *args], expect=exit_code)
    check(f"[{code}]" in p.stderr, f"{args}: no [{code}] in {p.stderr!r}")
    for w in words:
        check(w in p.stderr, f"{args}: '{w}' not in {p.stderr!r}")


def mode_sets(e):
    d = os.path.join(e.work, "set")
    os.makedirs(d)
    out = os.path.join(d, "model.qpack")
    s = json.loads(run([e.qpack, "convert", e.src, out, "--max-shard-size", "20KB", "--json",
                        "-q"]).stdout)
    shards = s["files"][:-1]
    index = s["files"][-1]
    check(len(shards) >= 3 and index == os.path.join(d, "model.qpack.index.json"),
          f"--max-shard-size 20KB wrote {s['files']}")
    for f in shards:
        check(os.path.getsize(f) < 20000 + 20000, f"{f} is larger than the shard size allows")
        run([e.qpack, "inspect", "--check", "-q", f])
    # Like one file: merge gives the single run's bytes; dequantize and verify agree.
    merged = os.path.join(e.work, "set-merged.qpack")
    run([e.qpack, "merge", *shards, "-o", merged, "-q"])
    check(same_bytes(merged, e.single), "the --max-shard-size set merged differs from one file")
    single_deq = os.path.join(e.work, "single.safetensors")
    run([e.qpack, "dequantize", e.single, single_deq, "-q", "--force"])
    deq = os.path.join(e.work, "set.safetensors")
    run([e.qpack, "dequantize", d, deq, "-q"])
    check(same_bytes(deq, single_deq), "the set dequantizes differently from one file")
    run([e.qpack, "verify", index, e.src, "-q"])
    # One file when the plan fits in one shard: the single run's bytes.
    one = os.path.join(e.work, "one.qpack")
    run([e.qpack, "convert", e.src, one, "--max-shard-size", "5GB", "-q"])
    check(same_bytes(one, e.single), "--max-shard-size larger than the model is not one file")
    # An existing set is not overwritten without --force.
    expect_error(e, ["convert", e.src, out, "--max-shard-size", "20KB", "-q"], "OutputExists", 5)

    def damaged(name):
        c = os.path.join(e.work, name)
        shutil.copytree(d, c)
        return c, [os.path.join(c, os.path.basename(f)) for f in shards]

    def refused(c, code, words=()):
        for cmd in (["inspect", c], ["verify", c, e.src],
                    ["dequantize", c, os.path.join(e.work, "x.safetensors")]):
            p = run([e.qpack, *cmd], expect=4)
            check(code in p.stderr or code in p.stdout, f"{cmd}: no {code} in {p.stderr!r} {p.stdout!r}")
            for w in words:
                check(w in p.stderr or w in p.stdout, f"{cmd}: '{w}' missing")
        check(not os.path.exists(os.path.join(e.work, "x.safetensors")), "dequantize wrote output")

    c, fs = damaged("missing")
    os.remove(fs[1])
    refused(c, "SetMissingShard", [os.path.basename(fs[1])])
    c, fs = damaged("swapped")
    tmp = fs[0] + ".tmp"
    os.rename(fs[0], tmp)
    os.rename(fs[1], fs[0])
    os.rename(tmp, fs[1])
    refused(c, "SetSwappedShard", [os.path.basename(fs[0])])
    c, fs = damaged("extra")
    shutil.copy(fs[0], os.path.join(c, f"model-00009-of-{len(fs):05d}.qpack"))
    refused(c, "SetExtraShard", ["model-00009-of-"])
    # A shard from another conversion (other options, same sizes) in place of shard 2.
    other = os.path.join(e.work, "other")
    os.makedirs(other)
    o = json.loads(run([e.qpack, "convert", e.src, os.path.join(other, "model.qpack"), "--nonfinite", "zero",
                        "--max-shard-size", "20KB", "--json", "-q"]).stdout)["files"]
    c, fs = damaged("mismatched")
    shutil.copy(o[1], fs[1])
    refused(c, "SetShardMismatch", [os.path.basename(fs[1])])
    # Shards converted again (other options), the old index kept.
    c, fs = damaged("stale")
    if len(o) - 1 == len(fs):
        for src_shard, dst in zip(o[:-1], fs):
            shutil.copy(src_shard, dst)
        refused(c, "SetStaleIndex", ["model.qpack.index.json"])
    else:
        check(False, "the other set has another shard count: no stale-index case")
    c, fs = damaged("badindex")
    with open(os.path.join(c, "model.qpack.index.json"), "w") as f:
        f.write('{"format": "qpack-set", "version": "1.0"')
    refused(c, "SetBadIndex")
    # A corrupted byte in a shard's section: its own checksum error.
    c, fs = damaged("corrupt")
    with open(fs[0], "r+b") as f:
        f.seek(64)
        b = f.read(1)
        f.seek(64)
        f.write(bytes([b[0] ^ 1]))
    p = run([e.qpack, "inspect", "--check", c], expect=4)
    check("[ChecksumMismatch]" in p.stderr, f"corrupt shard: {p.stderr!r}")

    # Merge refusals: a missing part, a duplicated part, a foreign part.
    m = os.path.join(e.work, "m.qpack")
    expect_error(e, ["merge", shards[0], shards[2], "-o", m], "PartMissing", 3, ["parts 1, 3"])
    expect_error(e, ["merge", shards[0], shards[0], shards[1], shards[2], "-o", m],
                 "PartDuplicate", 3)
    expect_error(e, ["merge", shards[0], o[1], *shards[2:], "-o", m], "PartMismatch", 3,
                 [os.path.basename(o[1])])
    expect_error(e, ["merge", e.single, "-o", m], "PartMismatch", 3, ["no shard object"])
    p2 = os.path.join(e.work, "p2")
    os.makedirs(p2)
    pp = [json.loads(run(e.part_cmd(os.path.join(p2, "model.qpack"), f"{k}/2", "--json")).stdout)
          ["files"][0] for k in range(2)]
    expect_error(e, ["merge", pp[0], shards[1], "-o", m], "PartMismatch", 3)
    # A part made with other options (zstd): named.
    p3 = os.path.join(e.work, "p3")
    os.makedirs(p3)
    z = json.loads(run(e.part_cmd(os.path.join(p3, "model.qpack"), "1/2", "--json",
                                  "--zstd")).stdout)["files"][0]
    expect_error(e, ["merge", pp[0], z, "-o", m], "PartMismatch", 3, ["options"])
    check(not os.path.exists(m), "a refused merge left an output")
    # Index-only: the parts must be in the index's folder.
    expect_error(e, ["merge", *pp, "-o", os.path.join(e.work, "model.qpack.index.json"),
                     "--index-only"], "InvalidArgument", 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["merge", "scheduler", "kill9", "sets"])
    ap.add_argument("--qpack", required=True)
    ap.add_argument("--testgen", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qpack-scale-") as work:
        e = Env(a.qpack, a.testgen, work)
        {"merge": mode_merge, "scheduler": mode_scheduler, "kill9": mode_kill9,
         "sets": mode_sets}[a.mode](e)
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
