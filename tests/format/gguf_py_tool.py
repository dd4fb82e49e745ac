#!/usr/bin/env python3
"""gguf-py (PyPI `gguf`) on the other side of qpack's GGUF reader and writer,
for tests/format/test_gguf.cpp. Test-only: the product never runs Python.

  gguf_py_tool.py sizes        GGML_QUANT_SIZES as JSON {name: [block, type_size]}
  gguf_py_tool.py dump FILE    what GGUFReader sees, as JSON
  gguf_py_tool.py write FILE   writes a GGUF with GGUFWriter; prints what it wrote, as JSON
"""
import json
import sys

import numpy as np
import gguf


def sizes():
    out = {}
    for t, (block, size) in gguf.GGML_QUANT_SIZES.items():
        out[t.name] = [block, size, int(t.value)]
    print(json.dumps(out))


def dump(path):
    r = gguf.GGUFReader(path)
    fields = []
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue  # the reader's own pseudo-fields (version, counts)
        entry = {"key": f.name, "types": [int(t) for t in f.types]}
        try:
            v = f.contents()
            if isinstance(v, float) and v != v:
                v = "nan"
            entry["value"] = v
        except Exception:  # nested arrays: the reader's contents() does not decode them
            entry["value"] = None
        fields.append(entry)
    tensors = []
    for t in r.tensors:
        tensors.append({"name": t.name, "type": int(t.tensor_type), "ne": [int(x) for x in t.shape],
                        "n_bytes": int(t.n_bytes), "data_offset": int(t.data_offset),
                        "hex": np.ascontiguousarray(t.data).tobytes().hex()})
    print(json.dumps({"fields": fields, "tensors": tensors}))


def write(path):
    w = gguf.GGUFWriter(path, arch="llama")
    T = gguf.GGUFValueType
    w.add_uint8("v.u8", 200)
    w.add_int8("v.i8", -100)
    w.add_uint16("v.u16", 65000)
    w.add_int16("v.i16", -32000)
    w.add_uint32("v.u32", 4000000000)
    w.add_int32("v.i32", -2000000000)
    w.add_float32("v.f32", 0.1)
    w.add_bool("v.bool", True)
    w.add_string("v.str", "h\u00e9llo")
    w.add_uint64("v.u64", 2**63 + 5)
    w.add_int64("v.i64", -(2**62))
    w.add_float64("v.f64", 1.0 / 3.0)
    w.add_array("v.arr_str", ["a", "bc", ""])
    w.add_array("v.arr_i32", [1, -2, 3])
    w.add_key_value("v.arr_f32", [0.5, -1.25], T.ARRAY, sub_type=T.FLOAT32)
    w.add_array("v.nested", [[1, 2], [3]])
    rng = np.random.default_rng(7)
    written = []
    # Every tensor type gguf-py knows, one row (or a few) of blocks of random
    # bytes in the type's byte shape; awkward shapes for the plain types.
    for qt, (block, size) in gguf.GGML_QUANT_SIZES.items():
        rows = 3 if block > 1 else 5
        nblocks = 2
        raw = rng.integers(0, 256, size=(rows, nblocks * size), dtype=np.uint8)
        name = "t." + qt.name.lower()
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qt)
        written.append({"name": name, "type": int(qt.value), "ne": [nblocks * block, rows],
                        "hex": raw.tobytes().hex()})
    f = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
    w.add_tensor("t.f32_4d", f)
    written.append({"name": "t.f32_4d", "type": 0, "ne": [7, 5, 3, 2], "hex": f.tobytes().hex()})
    one = np.array([1.5], dtype=np.float32)
    w.add_tensor("t.one", one)
    written.append({"name": "t.one", "type": 0, "ne": [1], "hex": one.tobytes().hex()})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(json.dumps({"tensors": written}))


if __name__ == "__main__":
    if sys.argv[1] == "sizes":
        sizes()
    elif sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        sys.exit("unknown command " + sys.argv[1])
