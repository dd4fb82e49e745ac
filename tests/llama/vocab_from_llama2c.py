#!/usr/bin/env python3
"""A vocabulary-only GGUF from a llama2.c tokenizer file (tok512.bin), for --vocab-from.

  vocab_from_llama2c.py tok512.bin VOCAB.gguf [--vocab-size 512]

llama2.c's tokenizer file: int32 max_token_length, then per token float32
score, int32 byte length, the bytes. It is a SentencePiece BPE vocabulary with
byte fallback exported by llama2.c's tokenizer.py: 0 <unk>, 1 <s>, 2 </s>,
3..258 the byte tokens <0x00>..<0xFF>, and pieces whose SentencePiece word
mark U+2581 was replaced by a space. The GGUF gets llama.cpp's SPM keys
(tokenizer.ggml.model = "llama"): the mark put back, token types (normal 1,
unknown 2, control 3, byte 6), scores, BOS 1 / EOS 2 / UNK 0, add BOS.
"""
import argparse
import struct
import sys

try:
    import gguf
except ImportError as e:
    print(f"vocab_from_llama2c: {e}", file=sys.stderr)
    sys.exit(77)

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def read_llama2c_tokenizer(path, vocab_size):
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, tokens, scores = 4, [], []
    for i in range(vocab_size):
        if off + 8 > len(data):
            raise ValueError(f"{path}: ends at token {i} of {vocab_size}")
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        if n < 0 or n > max_len or off + n > len(data):
            raise ValueError(f"{path}: token {i} has a bad length {n}")
        tokens.append(data[off : off + n])
        scores.append(score)
        off += n
    if off != len(data):
        raise ValueError(f"{path}: {len(data) - off} bytes after {vocab_size} tokens")
    return tokens, scores


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer")
    ap.add_argument("out")
    ap.add_argument("--vocab-size", type=int, default=512)
    a = ap.parse_args()
    raw, scores = read_llama2c_tokenizer(a.tokenizer, a.vocab_size)
    pieces, types = [], []
    for i, b in enumerate(raw):
        s = b.decode("utf-8")
        if i == 0:
            types.append(UNKNOWN)
        elif i in (1, 2):
            types.append(CONTROL)
        elif s.startswith("<0x") and s.endswith(">") and len(s) == 6:
            types.append(BYTE)
        else:
            types.append(NORMAL)
            s = s.replace(" ", "\u2581")
        pieces.append(s)
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
