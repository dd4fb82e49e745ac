#!/usr/bin/env python3
"""A float64 numpy forward pass of a Llama GGUF: the oracle for llama.cpp's logits.

  llama_reference.py MODEL.gguf --tokens 1,2,3 [--out ref.npy] [--plain]
  llama_reference.py MODEL.gguf --tokens 1,2,3 --compare llama.npy

Weights are read with gguf-py's GGUFReader and dequantized by gguf-py
(bit-identical to ggml's own dequantization). The graph is llama.cpp's for
LLM_ARCH_LLAMA (src/models/llama.cpp): token embedding, per layer RMSNorm ->
Q/K/V -> RoPE -> causal GQA attention -> output projection + residual,
RMSNorm -> SwiGLU MLP + residual; output norm, then `output.weight` or the
tied `token_embd.weight`.

RoPE: llama.cpp gives LLM_ARCH_LLAMA rope type LLAMA_ROPE_TYPE_NORM, which
rotates ADJACENT pairs (x[2i], x[2i+1]) of each head by pos * base^(-2i/n_rot).
That is why the HF->GGUF converter permutes the Q/K rows (HF rotates halves).

Modelling llama.cpp's CPU matmul (default on; --plain turns it off). For a
weight of type T, ggml first converts the F32 activation row to T's
vec_dot_type and takes the dot product with that:
  F32 -> F32 (unchanged); F16 -> F16 (round to nearest even);
  Q4_0, Q5_0, Q8_0 -> Q8_0; Q4_1, Q5_1 -> Q8_1; K-quants -> Q8_K.
Q8_0/Q8_1 as ggml-cpu's x86 quantize_row_q8_0/_1 compute them: per 32
elements amax (F32), d = amax/127, id = 127/amax (F32 divisions), codes =
round-half-even(x*id), the block's d stored as F16; Q8_1 adds s = F16(d*sum
codes), which the Q4_1/Q5_1 dot uses for the min term (m * s instead of
m * d * sum codes). Q8_K as quantize_row_q8_K_ref: per 256 elements the
signed value of largest magnitude (first one), iscale = -127/max, codes =
min(127, round-half-even(iscale*x)), d = 1/iscale kept in F32.
Also modelled: the RoPE angle as ggml computes it in F32 (theta_scale =
powf(base, -2/n_rot), theta multiplied up pair by pair), cos/sin of it.
Everything else is float64.
"""
import argparse
import json
import sys

try:
    import numpy as np
    import gguf
except ImportError as e:
    print(f"llama_reference: cannot import gguf/numpy: {e}", file=sys.stderr)
    sys.exit(77)

Q = gguf.GGMLQuantizationType
VEC_DOT_TYPE = {
    Q.F32: Q.F32,
    Q.F16: Q.F16,
    Q.BF16: Q.BF16,
    Q.Q4_0: Q.Q8_0,
    Q.Q5_0: Q.Q8_0,
    Q.Q8_0: Q.Q8_0,
    Q.Q4_1: Q.Q8_1,
    Q.Q5_1: Q.Q8_1,
    Q.Q2_K: Q.Q8_K,
    Q.Q3_K: Q.Q8_K,
    Q.Q4_K: Q.Q8_K,
    Q.Q5_K: Q.Q8_K,
    Q.Q6_K: Q.Q8_K,
}


# ------------------------------------------------------------ activation types
def _f32(x):
    return np.asarray(x, dtype=np.float32)


def quantize_act_q8_0(x):
    """x: float32 [..., n] -> (codes int [..., n/32, 32], d_f16 as float64 [..., n/32, 1],
    d_f32 [..., n/32, 1])."""
    b = _f32(x).reshape(*x.shape[:-1], -1, 32)
    amax = np.max(np.abs(b), axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        d = (amax / np.float32(127)).astype(np.float32)
        idv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    codes = np.rint((b * idv).astype(np.float32))  # round half to even, as _MM_ROUND_NEAREST
    return codes, d.astype(np.float16).astype(np.float64), d


def act_q8_0(x):
    codes, d16, _ = quantize_act_q8_0(x)
    return (codes * d16).reshape(x.shape)


def act_q8_1(x):
    """The Q8_1 activation as the dot sees it: (values d16*q, s16 - d16*sum q per block)."""
    codes, d16, d = quantize_act_q8_0(x)
    sums = codes.sum(axis=-1, keepdims=True)
    s16 = (d * sums.astype(np.float32)).astype(np.float32).astype(np.float16).astype(np.float64)
    return (codes * d16).reshape(x.shape), (s16 - d16 * sums)[..., 0]


def act_q8_k(x):
    b = _f32(x).reshape(*x.shape[:-1], -1, 256)
    first = np.argmax(np.abs(b), axis=-1)[..., None]  # first index of the largest |x|
    mx = np.take_along_axis(b, first, axis=-1)
    out = np.zeros(b.shape, dtype=np.float64)
    nz = (mx != 0)[..., 0]
    with np.errstate(divide="ignore"):
        iscale = (np.float32(-127) / mx).astype(np.float32)
        v = np.minimum(127, np.rint((iscale * b).astype(np.float32)))
        d = (np.float32(1) / iscale).astype(np.float32)
    out[nz] = (v * d.astype(np.float64))[nz]
    return out.reshape(x.shape)


# ------------------------------------------------------------------- the model
class Weight:
    def __init__(self, t):
        self.name = t.name
        self.type = Q(t.tensor_type)
        ne = [int(n) for n in t.shape]
        self.shape = tuple(reversed(ne))  # numpy order [rows, cols]
        if self.type in (Q.F32, Q.F16):
            w = np.asarray(t.data, dtype=np.float32)
        else:
            w = gguf.quants.dequantize(np.asarray(t.data), self.type)
        self.w = np.asarray(w, dtype=np.float64).reshape(self.shape)
        self.mins = None  # per-block m of Q4_1/Q5_1: the dot's min term uses Q8_1's s
        if self.type in (Q.Q4_1, Q.Q5_1):
            raw = np.asarray(t.data).reshape(self.shape[0], -1)
            bsz = gguf.GGML_QUANT_SIZES[self.type][1]
            blocks = raw.reshape(self.shape[0], -1, bsz)
            self.mins = blocks[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64)


class LlamaReference:
    def __init__(self, path, model_matmul=True, model_rope=True):
        r = gguf.GGUFReader(path)
        self.model_matmul, self.model_rope = model_matmul, model_rope
        f = r.fields

        def kv(key, default=None):
            if key not in f:
                if default is None:
                    raise KeyError(f"{path}: no {key}")
                return default
            v = f[key].contents()
            return v

        arch = kv("general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r}, not llama")
        self.n_embd = int(kv("llama.embedding_length"))
        self.n_layer = int(kv("llama.block_count"))
        self.n_head = int(kv("llama.attention.head_count"))
        self.n_head_kv = int(kv("llama.attention.head_count_kv", self.n_head))
        self.eps = float(np.float32(kv("llama.attention.layer_norm_rms_epsilon")))
        self.rope_base = float(np.float32(kv("llama.rope.freq_base", 10000.0)))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(kv("llama.rope.dimension_count", self.head_dim))
        self.t = {t.name: Weight(t) for t in r.tensors}
        self.output = self.t.get("output.weight", self.t["token_embd.weight"])

    # y = W x for every row of x (x: [n, in] float64) as ggml's CPU matmul does it.
    def matmul(self, wt, x):
        if not self.model_matmul:
            return x @ wt.w.T
        vt = VEC_DOT_TYPE.get(wt.type)
        if vt is None:
            raise NotImplementedError(f"{wt.name}: no activation model for {wt.type.name}")
        xf = _f32(x)
        if vt == Q.F32:
            xa = xf.astype(np.float64)
        elif vt == Q.F16:
            xa = xf.astype(np.float16).astype(np.float64)
        elif vt == Q.BF16:
            u = xf.view(np.uint32).astype(np.uint64)
            u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
            xa = u.astype(np.uint32).view(np.float32).astype(np.float64)
        elif vt == Q.Q8_0:
            xa = act_q8_0(xf)
        elif vt == Q.Q8_1:
            xa, ds = act_q8_1(xf)  # ds: [n, blocks]
            return xa @ wt.w.T + ds @ wt.mins.T
        else:
            xa = act_q8_k(xf)
        return xa @ wt.w.T

    @classmethod
    def from_hf(cls, model_dir):
        """The same forward pass over an HF Llama safetensors folder, in HF's own
        convention: Q/K rows as stored, RoPE rotating the two HALVES of each head
        (x[i], x[i + d/2]), as transformers' rotate_half does. Plain float64 (no
        matmul modelling). Independent of any GGUF file, so llama.cpp running an
        F32 GGUF against it checks the converter's Q/K permutation itself."""
        import json
        import os

        from safetensors.numpy import load_file

        self = cls.__new__(cls)
        with open(os.path.join(model_dir, "config.json")) as fh:
            cfg = json.load(fh)
        t = {}
        for fname in sorted(os.listdir(model_dir)):
            if fname.endswith(".safetensors"):
                t.update(load_file(os.path.join(model_dir, fname)))
        self.model_matmul, self.model_rope, self.rope_halves = False, False, True
        self.n_embd, self.n_layer = cfg["hidden_size"], cfg["num_hidden_layers"]
        self.n_head = cfg["num_attention_heads"]
        self.n_head_kv = cfg.get("num_key_value_heads", self.n_head)
        self.eps = float(np.float32(cfg.get("rms_norm_eps", 1e-5)))
        self.rope_base = float(cfg.get("rope_theta", 10000.0))
        self.head_dim = self.n_rot = self.n_embd // self.n_head

        class W:
            def __init__(self, name, a):
                self.name, self.type, self.w, self.mins = name, Q.F32, a.astype(np.float64), None
                self.shape = a.shape

        names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
        per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                     "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                     "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                     "mlp.down_proj": "ffn_down"}
        self.t = {}
        for k, a in t.items():
            if k in names:
                g = names[k]
            else:
                parts = k.split(".")
                g = f"blk.{parts[2]}.{per_layer['.'.join(parts[3:-1])]}.weight"
            self.t[g] = W(g, a.astype(np.float32))
        if cfg.get("tie_word_embeddings") or "output.weight" not in self.t:
            self.output = self.t["token_embd.weight"]
        else:
            self.output = self.t["output.weight"]
        return self

    def rms_norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w.w

    def rope_cos_sin(self, n_pos):
        pairs = self.n_rot // 2
        if self.model_rope:
            scale = np.float32(np.power(np.float32(self.rope_base), np.float32(np.float32(-2.0) / self.n_rot)))
            theta = np.empty((n_pos, pairs), dtype=np.float32)
            for p in range(n_pos):
                t = np.float32(p)
                for i in range(pairs):
                    theta[p, i] = t
                    t = np.float32(t * scale)
            theta = theta.astype(np.float64)
        else:
            inv = self.rope_base ** (-2.0 * np.arange(pairs) / self.n_rot)
            theta = np.arange(n_pos)[:, None] * inv[None, :]
        return np.cos(theta), np.sin(theta)

    def rope(self, x, cos, sin):
        """x: [n, heads, head_dim]; NORM mode rotates adjacent pairs of the first n_rot dims
        (HF's halves in a from_hf() reference)."""
        y = x.copy()
        if getattr(self, "rope_halves", False):
            h = self.n_rot // 2
            a, b = x[..., :h], x[..., h : self.n_rot]
            c, s = cos[:, None, :], sin[:, None, :]
            y[..., :h] = a * c - b * s
            y[..., h : self.n_rot] = a * s + b * c
            return y
        a, b = x[..., 0 : self.n_rot : 2], x[..., 1 : self.n_rot : 2]
        c, s = cos[:, None, :], sin[:, None, :]
        y[..., 0 : self.n_rot : 2] = a * c - b * s
        y[..., 1 : self.n_rot : 2] = a * s + b * c
        return y

    def forward(self, tokens, trace=None):
        """Logits [n, n_vocab]. trace: a dict that receives the intermediates under
        llama.cpp's graph names (attn_norm-L, Vcur-L, kqv_out-L, attn_out-L, ffn_inp-L,
        ffn_norm-L, ffn_gate-L, ffn_up-L, ffn_swiglu-L, ffn_out-L, l_out-L, result_norm,
        result_output), each [n, width], for locating a divergence with cb_eval."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        keep = trace.__setitem__ if trace is not None else (lambda k, v: None)
        x = self.t["token_embd.weight"].w[tokens]
        cos, sin = self.rope_cos_sin(n)
        mask = np.triu(np.full((n, n), -np.inf), k=1)
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rms_norm(x, self.t[p + "attn_norm.weight"])
            keep(f"attn_norm-{l}", h)
            q = self.rope(self.matmul(self.t[p + "attn_q.weight"], h).reshape(n, nh, hd), cos, sin)
            k = self.rope(self.matmul(self.t[p + "attn_k.weight"], h).reshape(n, nkv, hd), cos, sin)
            v = self.matmul(self.t[p + "attn_v.weight"], h)
            keep(f"Vcur-{l}", v)
            v = v.reshape(n, nkv, hd)
            group = nh // nkv  # query head j uses kv head j // group (ggml's broadcast)
            k = np.repeat(k, group, axis=1)
            v = np.repeat(v, group, axis=1)
            att = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(hd) + mask
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            o = np.einsum("hij,jhd->ihd", att, v).reshape(n, nh * hd)
            keep(f"kqv_out-{l}", o)
            o = self.matmul(self.t[p + "attn_output.weight"], o)
            keep(f"attn_out-{l}", o)
            x = x + o
            keep(f"ffn_inp-{l}", x)
            h = self.rms_norm(x, self.t[p + "ffn_norm.weight"])
            keep(f"ffn_norm-{l}", h)
            g = self.matmul(self.t[p + "ffn_gate.weight"], h)
            u = self.matmul(self.t[p + "ffn_up.weight"], h)
            keep(f"ffn_gate-{l}", g)
            keep(f"ffn_up-{l}", u)
            m = g / (1.0 + np.exp(-g)) * u
            keep(f"ffn_swiglu-{l}", m)
            m = self.matmul(self.t[p + "ffn_down.weight"], m)
            keep(f"ffn_out-{l}", m)
            x = x + m
            keep(f"l_out-{l}", x)
        x = self.rms_norm(x, self.t["output_norm.weight"])
        keep("result_norm", x)
        logits = self.matmul(self.output, x)
        keep("result_output", logits)
        return logits


    def trace_names(self):
        """The llama.cpp graph nodes teacher_forced() needs."""
        names = ["embd", "result_norm", "result_output"]
        for l in range(self.n_layer):
            names += [f"{k}-{l}" for k in ("attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "attn_out",
                                            "ffn_inp", "ffn_norm", "ffn_gate", "ffn_up", "ffn_swiglu",
                                            "ffn_out", "l_out")]
        return names

    def teacher_forced(self, trace, tokens):
        """Every weight checked on llama.cpp's own input to it: {weight name: max over
        tokens of ||ref(in) - llama.cpp's out|| / ||llama.cpp's out||}. The reference's
        activation conversion then sees the very float32 values ggml converted, so no
        code or F16 rounding can flip, and each tensor must agree to float32 rounding.
        RMSNorm weights are checked the same way, the token embedding on the rows."""
        n = len(tokens)
        cos, sin = self.rope_cos_sin(n)
        out = {}

        def rel(name, got, want):
            got = np.asarray(got, dtype=np.float64).reshape(n, -1)
            want = np.asarray(want, dtype=np.float64).reshape(n, -1)
            out[name] = float(relative_differences(want, got).max())

        f = lambda k: np.asarray(trace[k], dtype=np.float32).astype(np.float64)  # noqa: E731
        rel("token_embd.weight", self.t["token_embd.weight"].w[np.asarray(tokens)], f("embd"))
        for l in range(self.n_layer):
            p, s = f"blk.{l}.", f"-{l}"
            prev = f("embd") if l == 0 else f(f"l_out-{l - 1}")
            rel(p + "attn_norm.weight", self.rms_norm(prev, self.t[p + "attn_norm.weight"]), f("attn_norm" + s))
            h = f("attn_norm" + s)
            q = self.rope(self.matmul(self.t[p + "attn_q.weight"], h).reshape(n, self.n_head, -1), cos, sin)
            rel(p + "attn_q.weight", q, f("Qcur" + s))
            k = self.rope(self.matmul(self.t[p + "attn_k.weight"], h).reshape(n, self.n_head_kv, -1), cos, sin)
            rel(p + "attn_k.weight", k, f("Kcur" + s))
            rel(p + "attn_v.weight", self.matmul(self.t[p + "attn_v.weight"], h), f("Vcur" + s))
            rel(p + "attn_output.weight", self.matmul(self.t[p + "attn_output.weight"], f("kqv_out" + s)),
                f("attn_out" + s))
            rel(p + "ffn_norm.weight", self.rms_norm(f("ffn_inp" + s), self.t[p + "ffn_norm.weight"]),
                f("ffn_norm" + s))
            h = f("ffn_norm" + s)
            rel(p + "ffn_gate.weight", self.matmul(self.t[p + "ffn_gate.weight"], h), f("ffn_gate" + s))
            rel(p + "ffn_up.weight", self.matmul(self.t[p + "ffn_up.weight"], h), f("ffn_up" + s))
            rel(p + "ffn_down.weight", self.matmul(self.t[p + "ffn_down.weight"], f("ffn_swiglu" + s)),
                f("ffn_out" + s))
        last = f(f"l_out-{self.n_layer - 1}")
        rel("output_norm.weight", self.rms_norm(last, self.t["output_norm.weight"]), f("result_norm"))
        tied = self.output is self.t["token_embd.weight"]
        rel("token_embd.weight (tied output)" if tied else "output.weight", self.matmul(self.output, f("result_norm")),
            f("result_output"))
        return out


def relative_differences(got, ref):
    """Per token ||got - ref|| / ||ref|| over the vocabulary."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--out")
    ap.add_argument("--plain", action="store_true", help="no llama.cpp matmul/RoPE modelling")
    ap.add_argument("--compare", help="llama.cpp logits (.npy) to compare with")
    a = ap.parse_args()
    ref = LlamaReference(a.model, model_matmul=not a.plain, model_rope=not a.plain)
    logits = ref.forward([int(t) for t in a.tokens.split(",")])
    if a.out:
        np.save(a.out, logits)
    if a.compare:
        d = relative_differences(np.load(a.compare), logits)
        print(json.dumps({"rel_diff_per_token": d.tolist(), "max": float(d.max())}))


if __name__ == "__main__":
    main()
