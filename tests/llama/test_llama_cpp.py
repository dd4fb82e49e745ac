#!/usr/bin/env python3
"""The file runs in llama.cpp: GGUF files checked by the real client.

  test_llama_cpp.py synthetic --testgen QPACK_TESTGEN [--qpack QPACK] [--types F32,Q4_0,...]
  test_llama_cpp.py stories   --testgen QPACK_TESTGEN --data SHARED_DATA [--qpack QPACK]

A small Llama (qpack-testgen, GQA) or stories260K is written as GGUF, run in
llama.cpp (llama-cpp-python's low-level API, CPU, F32 KV cache) on a few token
ids, and the logits are compared per token with llama_reference.py's float64
forward pass over the file's own dequantized weights.

GGUF files come from two independent writers: gguf_from_hf.py (gguf-py's
writer and quantizers) always, and `qpack convert ... --type T` when the qpack
binary can write GGUF; then the two files' tensor bytes must be equal too.

Checks per file (per-token relative difference d = ||got-ref||/||ref||):
1. Teacher-forced, every tensor: each weight applied by the reference to
   llama.cpp's OWN input to it (read through cb_eval) must give llama.cpp's
   output within 2e-6 (measured <= 4e-7 for every type). The reference models
   ggml's activation conversion (F16, Q8_0, Q8_1 with its s, Q8_K), so on the
   same float32 input no code can flip: this is the tight check.
2. End to end: for F32 files d <= 1e-5 for every token, against the reference
   over the GGUF and against an HF-convention reference over the source
   safetensors (rotate-half RoPE, unpermuted Q/K: proves the permutation);
   measured 3e-7. For other types only d <= 2e-2 (a sanity bound): a float64
   activation and llama.cpp's float32 one (1e-7 apart) can straddle a rounding
   boundary of the F16 or Q8 conversion, and such a flip propagates (measured:
   medians 7e-8..2e-7 for the quantized synthetic files, 2e-4 for F16,
   5e-3 for stories Q4_1, whose F16 ffn_down flips cascade through the BOS
   attention sink; traced, each tensor still agrees to 3e-7).
Negative controls must FAIL those rules: Q/K rows left in HF order (F32 file
vs the HF reference: 2e-2..5e-2; teacher-forced attn_q/attn_k), a model of
another seed (d ~ 1.4), and the teacher-forced check with the activation
conversion not modelled (~1e-2). A harness that cannot fail proves nothing.

Exit 0 pass, 1 fail, 77 skip (no llama_cpp / gguf / numpy, or no shared data).
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import numpy as np
    import gguf  # noqa: F401
    import llama_cpp  # noqa: F401
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

import llama_reference as ref_mod  # noqa: E402
from run_llama_cpp import LlamaCpp  # noqa: E402

TEACHER = 2e-6  # every tensor on llama.cpp's own input
E2E_F32 = 1e-5  # end to end, F32 files (no rounding discontinuity anywhere)
E2E_SANITY = 2e-2  # end to end, other types
TOKENS = [1, 5, 77, 300, 2, 9, 411, 100, 255, 17]


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}\n{r.stdout}")
    return r.stdout


def llama_logits(path, tokens, trace=None):
    m = LlamaCpp(path, trace=trace)
    try:
        return m.decode(tokens), m.trace
    finally:
        m.close()


def fmt(d):
    return f"median {np.median(d):.1e} max {np.max(d):.1e}"


def e2e_ok(d, t):
    return bool(np.max(d) <= (E2E_F32 if t == "F32" else E2E_SANITY))


def qpack_writes_gguf(qpack):
    if not qpack or not os.path.exists(qpack):
        return False
    r = subprocess.run([qpack, "convert", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return "gguf" in r.stdout.lower() and "--type" in r.stdout


def tensor_bytes(path):
    r = gguf.GGUFReader(path)
    return {t.name: (int(t.tensor_type), [int(x) for x in t.shape], bytes(np.asarray(t.data).tobytes())) for t in r.tensors}


class Checker:
    def __init__(self):
        self.failures = []

    def expect(self, ok, what):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.failures.append(what)


def check_file(c, path, t, tokens, label, hf_ref=None):
    """Checks 1 and 2 on one file; returns (llama.cpp logits, the GGUF reference's logits)."""
    ref = ref_mod.LlamaReference(path)
    got, trace = llama_logits(path, tokens, trace=ref.trace_names())
    tf = ref.teacher_forced(trace, tokens)
    worst = max(tf, key=tf.get)
    c.expect(len(tf) == 2 + 9 * ref.n_layer + 1 and tf[worst] <= TEACHER,
             f"{label} {t}: {len(tf)} tensors teacher-forced, worst {worst} {tf[worst]:.1e}")
    want = ref.forward(tokens)
    d = ref_mod.relative_differences(got, want)
    dp = ref_mod.relative_differences(got, ref_mod.LlamaReference(path, False, False).forward(tokens))
    c.expect(e2e_ok(d, t), f"{label} {t}: end to end {fmt(d)} (matmul not modelled: {fmt(dp)})")
    if hf_ref is not None and t == "F32":
        dh = ref_mod.relative_differences(got, hf_ref.forward(tokens))
        c.expect(e2e_ok(dh, t), f"{label} {t}: end to end vs the HF-convention reference {fmt(dh)}")
    return got, want


def synthetic(a, work):
    c = Checker()
    model = os.path.join(work, "m")
    common = ["--hidden", "256", "--intermediate", "768", "--layers", "2", "--vocab", "512", "--heads", "4",
              "--kv-heads", "2", "--dtype", "f16"]
    run([a.testgen, "llama", model] + common)
    hf = ref_mod.LlamaReference.from_hf(model)
    use_qpack = qpack_writes_gguf(a.qpack)
    if not use_qpack:
        print("note: qpack convert does not write GGUF in this build: gguf-py files only")
    gguf_py = os.path.join(HERE, "gguf_from_hf.py")
    for t in a.types.split(","):
        g = os.path.join(work, f"gguf_py_{t}.gguf")
        run([sys.executable, gguf_py, model, g, "--type", t])
        got, ref = check_file(c, g, t, TOKENS, "gguf-py file", hf)
        if t == "F32":
            bad = os.path.join(work, "unpermuted_f32.gguf")
            run([sys.executable, gguf_py, model, bad, "--type", t, "--no-permute"])
            d = ref_mod.relative_differences(llama_logits(bad, TOKENS)[0], hf.forward(TOKENS))
            c.expect(not e2e_ok(d, t), f"negative control: Q/K rows not permuted, vs the HF reference, must fail ({fmt(d)})")
        if t == "Q8_0":
            r = ref_mod.LlamaReference(g)
            bad = os.path.join(work, "unpermuted.gguf")
            run([sys.executable, gguf_py, model, bad, "--type", t, "--no-permute"])
            _, tr = llama_logits(bad, TOKENS, trace=r.trace_names())
            tf = r.teacher_forced(tr, TOKENS)
            qk = max(tf["blk.0.attn_q.weight"], tf["blk.0.attn_k.weight"])
            c.expect(qk > TEACHER, f"negative control: unpermuted file traced against the permuted file's "
                     f"reference must fail on attn_q/attn_k ({qk:.1e})")
            _, tr = llama_logits(g, TOKENS, trace=r.trace_names())
            tf = ref_mod.LlamaReference(g, False, False).teacher_forced(tr, TOKENS)
            worst = max(tf.values())
            c.expect(worst > TEACHER, f"negative control: teacher-forced without the activation conversion "
                     f"must fail ({worst:.1e})")
            other = os.path.join(work, "m_seed2")
            run([a.testgen, "llama", other] + common + ["--seed", "2"])
            og = os.path.join(work, "seed2.gguf")
            run([sys.executable, gguf_py, other, og, "--type", t])
            d = ref_mod.relative_differences(llama_logits(og, TOKENS)[0], ref)
            c.expect(not e2e_ok(d, t), f"negative control: another seed must fail ({fmt(d)})")
        if use_qpack:
            q = os.path.join(work, f"qpack_{t}.gguf")
            run([a.qpack, "convert", model, q, "--type", t, "--pure", "-q"])
            check_file(c, q, t, TOKENS, "qpack file", hf)
            tq, tg = tensor_bytes(q), tensor_bytes(g)
            diff = [n for n in tg if n not in tq or tq[n] != tg[n]] + [n for n in tq if n not in tg]
            c.expect(not diff, f"qpack {t}: {len(tq)} tensors byte-identical to gguf-py's (differing: {diff[:4]})")
    # K-quants: gguf-py has no quantizer for them, so the files come from llama.cpp's
    # own (llama_model_quantize on the gguf-py F16 file, as llama-quantize does).
    f16 = os.path.join(work, "gguf_py_F16_source.gguf")
    run([sys.executable, gguf_py, model, f16, "--type", "F16"])
    peer = os.path.join(HERE, "..", "..", "tools", "bench", "llama_quantize_peer.py")
    for t in a.peer_types.split(","):
        if not t:
            continue
        pf = os.path.join(work, f"peer_{t}.gguf")
        run([sys.executable, peer, f16, pf, "--type", t, "--threads", "2"])
        check_file(c, pf, t, TOKENS, "llama.cpp-quantized file")
        if use_qpack:
            q = os.path.join(work, f"qpack_{t}.gguf")
            r = subprocess.run([a.qpack, "convert", model, q, "--type", t, "-q"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0 and "cannot write yet" in r.stdout:
                print(f"note: qpack {t}: {r.stdout.strip()}")  # K-quants land separately
                continue
            if r.returncode != 0:
                raise RuntimeError(f"qpack convert --type {t} -> {r.returncode}\n{r.stdout}")
            check_file(c, q, t, TOKENS, "qpack file", hf)
            tq, tp = tensor_bytes(q), tensor_bytes(pf)
            diff = [n for n in tp if n not in tq or tq[n] != tp[n]] + [n for n in tq if n not in tp]
            c.expect(not diff, f"qpack {t}: {len(tq)} tensors byte-identical to llama_model_quantize's "
                     f"(differing: {diff[:4]})")
    return c


def stories(a, work):
    c = Checker()
    d = os.path.join(a.data, "stories260K")
    bin_, tok = os.path.join(d, "stories260K.bin"), os.path.join(d, "tok512.bin")
    if not (os.path.exists(bin_) and os.path.exists(tok)):
        print(f"SKIP: no {bin_} (../shared/data is absent in this clone)")
        sys.exit(77)
    st = os.path.join(work, "st")
    os.makedirs(st)
    run([a.testgen, "stories", bin_, os.path.join(st, "model.safetensors")])
    vocab = os.path.join(work, "vocab.gguf")
    run([sys.executable, os.path.join(HERE, "vocab_from_llama2c.py"), tok, vocab])
    use_qpack = qpack_writes_gguf(a.qpack)
    files = []
    for t in a.types.split(","):
        g = os.path.join(work, f"stories_{t}.gguf")
        run([sys.executable, os.path.join(HERE, "gguf_from_hf.py"), st, g, "--type", t, "--vocab-from", vocab])
        files.append((g, t, "gguf-py stories"))
        if use_qpack:
            q = os.path.join(work, f"stories_qpack_{t}.gguf")
            run([a.qpack, "convert", st, q, "--type", t, "--pure", "--vocab-from", vocab, "-q"])
            files.append((q, t, "qpack stories"))
            tq, tg = tensor_bytes(q), tensor_bytes(g)
            diff = [n for n in tg if n not in tq or tq[n] != tg[n]] + [n for n in tq if n not in tg]
            c.expect(not diff, f"qpack stories {t}: {len(tq)} tensors byte-identical to gguf-py's "
                     f"(differing: {diff[:4]})")
    # K-quant mixes: rows of 64 and 172 are not whole 256-blocks, so every tensor takes
    # llama.cpp's fallbacks (Q4_K -> Q5_0, Q6_K -> Q8_0, ... -> F16); llama_model_quantize
    # on the gguf-py F32 file (the checkpoint is F32: the same values qpack reads) is the
    # reference for the bytes.
    f16 = os.path.join(work, "stories_gguf_py_F32_source.gguf")
    run([sys.executable, os.path.join(HERE, "gguf_from_hf.py"), st, f16, "--type", "F32", "--vocab-from", vocab])
    peer = os.path.join(HERE, "..", "..", "tools", "bench", "llama_quantize_peer.py")
    for t in [x for x in a.peer_types.split(",") if x]:
        pf = os.path.join(work, f"stories_peer_{t}.gguf")
        run([sys.executable, peer, f16, pf, "--type", t, "--threads", "2"])
        files.append((pf, t, "llama.cpp-quantized stories"))
        if use_qpack:
            q = os.path.join(work, f"stories_qpack_{t}.gguf")
            r = subprocess.run([a.qpack, "convert", st, q, "--type", t, "--vocab-from", vocab, "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0 and "cannot write yet" in r.stdout:
                print(f"note: qpack {t}: {r.stdout.strip()}")
                continue
            if r.returncode != 0:
                raise RuntimeError(f"qpack convert --type {t} -> {r.returncode}\n{r.stdout}")
            files.append((q, t, "qpack stories"))
            tq, tp = tensor_bytes(q), tensor_bytes(pf)
            diff = [n for n in tp if n not in tq or tq[n] != tp[n]] + [n for n in tq if n not in tp]
            c.expect(not diff, f"qpack stories {t}: {len(tq)} tensors byte-identical to llama_model_quantize's "
                     f"(differing: {diff[:4]})")
    hf = ref_mod.LlamaReference.from_hf(st)
    for path, t, label in files:
        m = LlamaCpp(path)
        try:
            prompt = m.tokenize("Once upon a time")
            new = m.greedy(prompt, 40)
            text = "Once upon a time" + "".join(m.piece(x) for x in new)
        finally:
            m.close()
        check_file(c, path, t, prompt + [261, 378, 410, 300, 13], label, hf)
        print(f"     greedy: {text!r}")
        if t == "F32":
            c.expect(text.startswith("Once upon a time, there was a little girl named Lily."),
                     "F32 greedy decode starts as the README says")
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["synthetic", "stories"])
    ap.add_argument("--testgen", required=True)
    ap.add_argument("--qpack")
    ap.add_argument("--data")
    ap.add_argument("--types")
    ap.add_argument("--peer-types", help="mixes quantized by llama_model_quantize "
                    "(default Q4_K_M,Q6_K,Q5_K_M,Q3_K_M,Q2_K; stories Q4_K_M,Q6_K)")
    a = ap.parse_args()
    if a.types is None:
        a.types = "F32,F16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1"
    if a.peer_types is None:
        a.peer_types = "Q4_K_M,Q6_K,Q5_K_M,Q3_K_M,Q2_K" if a.which == "synthetic" else "Q4_K_M,Q6_K"
    with tempfile.TemporaryDirectory(prefix="qpack-llama-") as work:
        c = synthetic(a, work) if a.which == "synthetic" else stories(a, work)
    if c.failures:
        print(f"{len(c.failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
