#!/usr/bin/env python3
"""Compare two GGUF files tensor by tensor: names, types, shapes, data bytes.

  gguf_compare.py A.gguf B.gguf [--json]

Prints one summary line (or JSON): tensors in both, byte-identical, differing
(name: type A/B, first differing byte), only in A, only in B. Exit 0 when
every tensor is in both and byte-identical, 1 otherwise, 3 without gguf-py.
"""
import argparse
import json
import sys

try:
    import numpy as np
    import gguf
except ImportError as e:
    print(f"gguf_compare: {e}", file=sys.stderr)
    sys.exit(3)


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ta, tb = tensors(a.a), tensors(a.b)
    same, differing = 0, []
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        bx = np.asarray(x.data).reshape(-1).view(np.uint8)
        by = np.asarray(y.data).reshape(-1).view(np.uint8)
        if x.tensor_type == y.tensor_type and list(x.shape) == list(y.shape) and np.array_equal(bx, by):
            same += 1
            continue
        first = None
        if bx.size == by.size:
            nz = np.flatnonzero(bx != by)
            first = int(nz[0]) if nz.size else None
        differing.append({"name": name, "type_a": x.tensor_type.name, "type_b": y.tensor_type.name,
                          "bytes_a": int(bx.size), "bytes_b": int(by.size), "first_differing_byte": first})
    r = {"in_both": len(set(ta) & set(tb)), "identical": same, "differing": differing,
         "only_in_a": sorted(set(ta) - set(tb)), "only_in_b": sorted(set(tb) - set(ta))}
    ok = not differing and not r["only_in_a"] and not r["only_in_b"]
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['identical']}/{r['in_both']} tensors byte-identical; differing {len(differing)}"
              f"{' ' + str([d['name'] for d in differing[:5]]) if differing else ''}; only in A "
              f"{len(r['only_in_a'])}, only in B {len(r['only_in_b'])}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
