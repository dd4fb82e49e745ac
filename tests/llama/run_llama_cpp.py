#!/usr/bin/env python3
"""Run a GGUF in llama.cpp (llama-cpp-python's low-level C API) on token ids.

  run_llama_cpp.py MODEL.gguf --tokens 1,2,3 [--out logits.npy] [--json]
  run_llama_cpp.py MODEL.gguf --generate "Once upon a time" --n 40

One llama_decode of the whole batch with logits requested at every position;
prints (or saves) the float32 logits [n_tokens, n_vocab]. CPU only. The KV
cache is F32 and flash attention off by default, so the attention runs in F32
and only the weights' own numerics differ from a float64 forward pass
(--kv-f16 gives llama.cpp's default F16 cache instead).

Environment: QPACK_LLAMA_THREADS (default 2); QPACK_LLAMA_EXTRA_BUFTS=1 lets
llama.cpp use its extra CPU buffer types (AMX, repacked weights), off by
default because they change the matmul kernels (and crashed on some hosts).
Exit 77 when llama_cpp cannot be imported (the test then skips).
"""
import argparse
import ctypes
import json
import os
import sys

try:
    import numpy as np
    import llama_cpp as lc
except ImportError as e:
    print(f"run_llama_cpp: cannot import llama_cpp/numpy: {e}", file=sys.stderr)
    sys.exit(77)

GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0


class GgmlTensor(ctypes.Structure):
    """struct ggml_tensor (ggml/include/ggml.h, GGML_MAX_DIMS 4, GGML_MAX_SRC 10,
    GGML_MAX_OP_PARAMS 64, GGML_MAX_NAME 64): read by the cb_eval trace."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


@lc.llama_log_callback
def _quiet_log(level, text, user_data):  # llama.cpp's load chatter goes nowhere unless asked
    if os.environ.get("QPACK_LLAMA_VERBOSE"):
        sys.stderr.write(text.decode("utf-8", "replace"))


class LlamaCpp:
    """trace: a set of graph node names (e.g. "attn_norm-0", "Vcur-0", "result_output");
    after decode(), self.trace holds each one's F32 values as [n_tokens, width], read
    through llama.cpp's cb_eval callback as the graph runs."""

    def __init__(self, path, n_ctx=256, kv_f16=False, threads=None, trace=None):
        lc.llama_log_set(_quiet_log, ctypes.c_void_p(0))
        lc.llama_backend_init()
        threads = threads or int(os.environ.get("QPACK_LLAMA_THREADS", "2"))
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_mmap = True
        mp.use_extra_bufts = os.environ.get("QPACK_LLAMA_EXTRA_BUFTS", "0") == "1"
        self.model = lc.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_ctx
        cp.n_ubatch = n_ctx
        cp.n_seq_max = 1
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.type_k = GGML_TYPE_F16 if kv_f16 else GGML_TYPE_F32
        cp.type_v = GGML_TYPE_F16 if kv_f16 else GGML_TYPE_F32
        cp.offload_kqv = False
        cp.no_perf = True
        self.trace = {}
        if trace:
            wanted = set(trace)

            def observe(t, ask, user_data):
                tt = ctypes.cast(t, ctypes.POINTER(GgmlTensor)).contents
                name = tt.name.decode()
                if ask:
                    return name in wanted
                if name in wanted and tt.type == GGML_TYPE_F32 and tt.data:
                    ne = list(tt.ne)
                    if tt.nb[1] == 4 * ne[0] and tt.nb[2] == tt.nb[1] * ne[1]:  # contiguous
                        n = ne[0] * ne[1] * ne[2] * ne[3]
                        a = np.ctypeslib.as_array(ctypes.cast(tt.data, ctypes.POINTER(ctypes.c_float)), shape=(n,))
                        self.trace[name] = a.reshape(self._n_tokens, -1).copy()
                return True

            self._observe = lc.ggml_backend_sched_eval_callback(observe)  # kept alive with self
            cp.cb_eval = self._observe
            cp.cb_eval_user_data = None
        self._n_tokens = 1
        self.ctx = lc.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not make a context")
        self.n_ctx = n_ctx

    def close(self):
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)

    def reset(self):
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)

    def decode(self, tokens, start_pos=0, all_logits=True):
        """Feed tokens at positions start_pos.. in one batch; logits [n, n_vocab] (or last row)."""
        n = len(tokens)
        self._n_tokens = n
        self.trace = {}
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            for i, t in enumerate(tokens):
                batch.token[i] = int(t)
                batch.pos[i] = start_pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if (all_logits or i == n - 1) else 0
            batch.n_tokens = n
            rc = lc.llama_decode(self.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            rows = range(n) if all_logits else [n - 1]
            out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
            for k, i in enumerate(rows):
                p = lc.llama_get_logits_ith(self.ctx, i)
                out[k] = np.ctypeslib.as_array(p, shape=(self.n_vocab,))
            return out
        finally:
            lc.llama_batch_free(batch)

    def tokenize(self, text, add_bos=True):
        buf = (lc.llama_token * (len(text) + 8))()
        n = lc.llama_tokenize(self.vocab, text.encode(), len(text.encode()), buf, len(buf), add_bos, False)
        if n < 0:
            raise RuntimeError("tokenize failed")
        return list(buf[:n])

    def piece(self, token):
        buf = ctypes.create_string_buffer(64)
        n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def greedy(self, prompt_tokens, n_new):
        """Greedy continuation: the prompt in one batch, then one token at a time."""
        self.reset()
        toks = list(prompt_tokens)
        logits = self.decode(toks, 0, all_logits=False)[-1]
        out = []
        for _ in range(n_new):
            t = int(np.argmax(logits))
            if t == lc.llama_vocab_eos(self.vocab):
                break
            out.append(t)
            logits = self.decode([t], len(toks), all_logits=False)[-1]
            toks.append(t)
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--out", help="write the logits as .npy here")
    ap.add_argument("--json", action="store_true", help="print the logits as JSON")
    ap.add_argument("--kv-f16", action="store_true")
    ap.add_argument("--generate", help="text prompt for a greedy decode (needs a vocabulary)")
    ap.add_argument("--n", type=int, default=40)
    a = ap.parse_args()
    m = LlamaCpp(a.model, kv_f16=a.kv_f16)
    try:
        if a.generate is not None:
            prompt = m.tokenize(a.generate)
            new = m.greedy(prompt, a.n)
            text = a.generate + "".join(m.piece(t) for t in new)
            print(json.dumps({"prompt_tokens": prompt, "tokens": new, "text": text}) if a.json else text)
            return
        toks = [int(t) for t in a.tokens.split(",")]
        logits = m.decode(toks)
        if a.out:
            np.save(a.out, logits)
        if a.json or not a.out:
            print(json.dumps({"n_vocab": m.n_vocab, "tokens": toks, "logits": logits.tolist()}))
    finally:
        m.close()


if __name__ == "__main__":
    main()
