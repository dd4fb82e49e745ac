"""The must-fail corpus of compressed-tensors / GPTQ model folders: each case
is a valid folder of hf_quant_gen.py with one thing broken, and the error it
must produce (code, the tensor or file it names, words of the reason), as
tests/format/corpus.cpp does for safetensors and .qpack files. Run by
hf_read_check.py corpus: every case through `qpack dequantize` and
`qpack inspect` (both open the folder with the same reader), exit 3."""
import json
import os
import shutil
import subprocess

import numpy as np

import hf_quant_gen as gen

Q = "model.layers.0.self_attn.q_proj"  # in = 128, the first quantized Linear


def _rewrite(folder, stored, config):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    gen.write_safetensors(os.path.join(folder, "model.safetensors"), stored)


def _weights(config):
    return config["quantization_config"]["config_groups"]["group_0"]["weights"]


def _qc(config):
    return config["quantization_config"]


def _set(d, k, v):
    d[k] = v


def _gptq_zero_word(stored, value_of_word0):
    dt, shape, arr = stored[Q + ".qzeros"]
    arr = arr.copy()
    arr.reshape(-1)[0] = np.array(value_of_word0, dtype=np.uint32).view(np.int32)
    stored[Q + ".qzeros"] = (dt, shape, arr)


def _set_bits(stored, name, row, col, bit):
    dt, shape, arr = stored[name]
    arr = arr.copy().reshape(shape)
    arr.view(np.uint32)[row, col] |= np.uint32(1 << bit)
    stored[name] = (dt, shape, arr)


def _as_dtype(stored, name, dt, arr):
    _, shape, _ = stored[name]
    stored[name] = (dt, shape, arr)


def _ct_mutations():
    out = []

    def case(name, sym, mutate, code, tensor, words, file="model.safetensors", plain=False,
             group=32, decode_only=False):
        out.append(dict(name=name, fmt="compressed-tensors", sym=sym, mutate=mutate, code=code,
                        tensor=tensor, words=words, file=file, plain_in_inspect=plain,
                        group=group, decode_only=decode_only))

    case("ct_unknown_method", True, lambda s, c: _set(_qc(c), "quant_method", "awq"),
         "HfUnsupported", "", "'awq' is not read", "config.json", plain=True)
    case("ct_method_missing", True, lambda s, c: _qc(c).pop("quant_method"),
         "HfBadConfig", "", "quant_method: missing", "config.json", plain=True)
    case("ct_format_naive", True, lambda s, c: _set(_qc(c), "format", "naive-quantized"),
         "HfUnsupported", "", "'naive-quantized' is not read", "config.json")
    case("ct_status_frozen", True, lambda s, c: _set(_qc(c), "quantization_status", "frozen"),
         "HfUnsupported", "", "not stored compressed", "config.json")
    case("ct_bits_3", True, lambda s, c: _set(_weights(c), "num_bits", 3),
         "HfUnsupported", "", "3/5/6/7-bit", "config.json")
    case("ct_bits_16", True, lambda s, c: _set(_weights(c), "num_bits", 16),
         "HfUnsupported", "", "16 is not a supported width", "config.json")
    case("ct_bits_missing", True, lambda s, c: _weights(c).pop("num_bits"),
         "HfBadConfig", "", "num_bits: missing", "config.json")
    case("ct_strategy_tensor", True, lambda s, c: _set(_weights(c), "strategy", "tensor"),
         "HfUnsupported", "", "'tensor' is not read", "config.json")
    case("ct_actorder_group", True, lambda s, c: _set(_weights(c), "actorder", "group"),
         "HfUnsupported", "", "activation-ordered", "config.json")
    case("ct_float_type", True, lambda s, c: _set(_weights(c), "type", "float"),
         "HfUnsupported", "", "only integer weights", "config.json")
    case("ct_input_activations", True,
         lambda s, c: _set(c["quantization_config"]["config_groups"]["group_0"],
                           "input_activations", {"num_bits": 8, "type": "int"}),
         "HfUnsupported", "", "activation quantization", "config.json")
    case("ct_group_not_dividing", True, lambda s, c: _set(_weights(c), "group_size", 48),
         "HfBadTensor", Q + ".weight_packed", "not a multiple of group size 48")
    case("ct_scale_dtype_i32", True,
         lambda s, c: _as_dtype(s, Q + ".weight_scale", "I32",
                                np.zeros(s[Q + ".weight_scale"][1], dtype=np.int32)),
         "HfBadTensor", Q + ".weight_scale", "dtype is I32")
    case("ct_scale_shape", True,
         lambda s, c: s.__setitem__(Q + ".weight_scale",
                                    ("F16", (40, 2), np.zeros((40, 2), dtype=np.float16))),
         "HfBadTensor", Q + ".weight_scale", "expected [40, 4]")
    case("ct_packed_shape", True,
         lambda s, c: s.__setitem__(Q + ".weight_shape",
                                    ("I64", (2,), np.array([40, 136], dtype=np.int64))),
         "HfBadTensor", Q + ".weight_packed", "expected [40, 17]")
    case("ct_weight_shape_negative", True,
         lambda s, c: s.__setitem__(Q + ".weight_shape",
                                    ("I64", (2,), np.array([-40, 128], dtype=np.int64))),
         "HfBadValue", Q + ".weight_shape", "must be positive")
    case("ct_weight_shape_missing", True, lambda s, c: s.pop(Q + ".weight_shape"),
         "HfBadTensor", Q + ".weight_shape", "missing")
    case("ct_missing_scale", True, lambda s, c: s.pop(Q + ".weight_scale"),
         "HfBadTensor", Q + ".weight_scale", "missing")
    case("ct_missing_zero_point", False, lambda s, c: s.pop(Q + ".weight_zero_point"),
         "HfBadTensor", Q + ".weight_zero_point", "is asymmetric")
    case("ct_extra_zero_point", True,
         lambda s, c: s.__setitem__(Q + ".weight_zero_point",
                                    ("I32", (5, 4), np.zeros((5, 4), dtype=np.int32))),
         "HfBadTensor", Q + ".weight_zero_point", "is symmetric")
    case("ct_zero_point_unpacked", False,
         lambda s, c: s.__setitem__(Q + ".weight_zero_point",
                                    ("I32", (40, 4), np.zeros((40, 4), dtype=np.int32))),
         "HfBadTensor", Q + ".weight_zero_point", "packed along out")
    case("ct_unknown_companion", True,
         lambda s, c: s.__setitem__(Q + ".weight_global_scale",
                                    ("F32", (1,), np.ones(1, dtype=np.float32))),
         "HfBadTensor", Q + ".weight_global_scale", "not a pack-quantized companion")
    case("ct_orphan_scale", True,
         lambda s, c: s.__setitem__("model.layers.9.mlp.gate_proj.weight_scale",
                                    ("F16", (2, 2), np.ones((2, 2), dtype=np.float16))),
         "HfBadTensor", "model.layers.9.mlp.gate_proj.weight_scale", ".weight_packed is missing")
    case("ct_ignored_but_quantized", True, lambda s, c: _qc(c)["ignore"].append(Q),
         "HfBadTensor", Q + ".weight_packed", "ignore lists")
    case("ct_no_target", True,
         lambda s, c: _set(c["quantization_config"]["config_groups"]["group_0"], "targets",
                           ["re:.*mlp.*"]),
         "HfBadTensor", Q + ".weight_packed", "no config group's targets")
    case("ct_plain_and_packed", True,
         lambda s, c: s.__setitem__(Q + ".weight", ("F16", (40, 128),
                                                    np.zeros((40, 128), dtype=np.float16))),
         "HfBadTensor", Q + ".weight", "either plain or quantized")
    case("ct_g_idx", True,
         lambda s, c: s.__setitem__(Q + ".weight_g_idx",
                                    ("I32", (128,), np.arange(128, dtype=np.int32) // 32)),
         "HfUnsupported", Q + ".weight_g_idx", "weight_g_idx")

    # Padding bits, zero as compressed-tensors writes them. down_proj has
    # out = 13: its 4-bit zero-points fill 52 of 64 bits of each column.
    D = "model.layers.0.mlp.down_proj"
    case("ct_zero_point_padding", False, lambda s, c: _set_bits(s, D + ".weight_zero_point", -1, 0, 31),
         "HfBadValue", D + ".weight_zero_point", "padding bits after row 12 of column 0")
    # Channel-wise up_proj has in = 50: 200 of 224 bits of each packed row
    # are codes. Found when the codes are read (dequantize), not by inspect,
    # which reads no codes.
    U = "model.layers.1.mlp.up_proj"
    case("ct_packed_padding", True, lambda s, c: _set_bits(s, U + ".weight_packed", 3, -1, 30),
         "HfBadValue", U + ".weight_packed", "row 3: padding bits after element 49",
         group="channel", decode_only=True)

    def no_quantized(s, c):
        for k in [k for k in s if ".weight_" in k]:
            s.pop(k)
    case("ct_nothing_quantized", True, no_quantized, "HfBadTensor", "", "no tensor is stored quantized",
         "config.json")
    return out


def _gptq_mutations():
    out = []

    def case(name, sym, mutate, code, tensor, words, file="model.safetensors", qcfile=False):
        out.append(dict(name=name, fmt="gptq", sym=sym, mutate=mutate, code=code, tensor=tensor,
                        words=words, file=file, qcfile=qcfile))

    case("gptq_desc_act", True, lambda s, c: _set(_qc(c), "desc_act", True),
         "HfUnsupported", "", "desc_act: true", "config.json")
    case("gptq_bits_3", True, lambda s, c: _set(_qc(c), "bits", 3),
         "HfUnsupported", "", "3-bit GPTQ", "config.json")
    case("gptq_format_marlin", True, lambda s, c: _set(_qc(c), "checkpoint_format", "marlin"),
         "HfUnsupported", "", "'marlin' is not read", "config.json")
    case("gptq_group_zero", True, lambda s, c: _set(_qc(c), "group_size", 0),
         "HfBadConfig", "", "group_size", "config.json")
    case("gptq_dynamic", True, lambda s, c: _set(_qc(c), "dynamic", {"re:.*": {"bits": 8}}),
         "HfUnsupported", "", "per-module overrides", "config.json")
    case("gptq_group_not_dividing", True, lambda s, c: _set(_qc(c), "group_size", 48),
         "HfBadTensor", Q + ".qweight", "not a multiple of group_size 48")
    case("gptq_configs_disagree", True, None, "HfBadConfig", "", "disagrees with config.json",
         "quantize_config.json", qcfile=True)

    def perm_gidx(s, c):
        dt, shape, arr = s[Q + ".g_idx"]
        arr = arr.copy()
        arr[[0, 40]] = arr[[40, 0]]
        s[Q + ".g_idx"] = (dt, shape, arr)
    case("gptq_g_idx_permuted", True, perm_gidx, "HfBadValue", Q + ".g_idx", "g_idx[0] = 1")
    # Asymmetric v1: nibble 0 of the first word = 0xF, z - 1 = 15, z = 16.
    case("gptq_v1_zero_wraps", False, lambda s, c: _gptq_zero_word(s, 0x4444444F),
         "HfBadValue", Q + ".qzeros", "z = 16 is outside the code range")
    case("gptq_sym_zero_not_mid", True, lambda s, c: _gptq_zero_word(s, 0x77777776),
         "HfBadValue", Q + ".qzeros", "but sym is true")
    case("gptq_missing_qzeros", True, lambda s, c: s.pop(Q + ".qzeros"),
         "HfBadTensor", Q + ".qzeros", "missing")
    case("gptq_qzeros_shape", True,
         lambda s, c: s.__setitem__(Q + ".qzeros", ("I32", (4, 16), np.zeros((4, 16), dtype=np.int32))),
         "HfBadTensor", Q + ".qzeros", "expected [4, 8]")
    case("gptq_scales_dtype", True,
         lambda s, c: _as_dtype(s, Q + ".scales", "I32",
                                np.zeros(s[Q + ".scales"][1], dtype=np.int32)),
         "HfBadTensor", Q + ".scales", "dtype is I32")
    case("gptq_qweight_dtype", True,
         lambda s, c: _as_dtype(s, Q + ".qweight", "F32",
                                np.zeros(s[Q + ".qweight"][1], dtype=np.float32)),
         "HfBadTensor", Q + ".qweight", "dtype is F32")
    case("gptq_orphan_g_idx", True,
         lambda s, c: s.__setitem__("model.layers.7.mlp.up_proj.g_idx",
                                    ("I32", (8,), np.zeros(8, dtype=np.int32))),
         "HfBadTensor", "model.layers.7.mlp.up_proj.g_idx", ".qweight is missing")
    return out


def cases():
    return _ct_mutations() + _gptq_mutations()


def build(c, folder):
    fmt = c["fmt"]
    _, _, stored = gen.write_model(folder, fmt, 4, c["sym"], c.get("group", 32), "F16", 1, seed=3,
                                   v2=False)
    for f in os.listdir(folder):
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            os.remove(os.path.join(folder, f))
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    if c.get("qcfile"):
        qc = dict(config["quantization_config"])
        qc["bits"] = 8
        with open(os.path.join(folder, "quantize_config.json"), "w") as f:
            json.dump(qc, f)
    if c["mutate"]:
        c["mutate"](stored, config)
    if fmt == "gptq" and not c.get("qcfile"):
        with open(os.path.join(folder, "quantize_config.json"), "w") as f:
            json.dump(config["quantization_config"], f)
    _rewrite(folder, stored, config)


def run_corpus(qpack, tmp, check):
    all_cases = cases()
    names = [c["name"] for c in all_cases]
    check(len(set(names)) == len(names), "corpus names repeat")
    failed_before = 0
    for c in all_cases:
        folder = os.path.join(tmp, "mf_" + c["name"])
        shutil.rmtree(folder, ignore_errors=True)
        build(c, folder)
        for cmd in (["dequantize", folder, os.path.join(tmp, "mf.safetensors"), "-f"],
                    ["inspect", folder, "--json"]):
            r = subprocess.run([qpack, *cmd], capture_output=True, text=True)
            msg = r.stderr
            what = "%s (%s)" % (c["name"], cmd[0])
            if cmd[0] == "inspect" and c.get("decode_only"):
                check(r.returncode == 0, "%s: want exit 0 (no codes read): exit %d %s"
                      % (what, r.returncode, msg.strip()))
                continue
            if cmd[0] == "inspect" and c.get("plain_in_inspect"):
                # A method qpack does not read: inspect lists the tensors as stored.
                check(r.returncode == 0 and json.loads(r.stdout)["format"] == "safetensors",
                      "%s: want a plain listing: exit %d %s" % (what, r.returncode, msg.strip()))
                continue
            check(r.returncode == 3, "%s: exit %d, want 3: %s" % (what, r.returncode, msg.strip()))
            check("[" + c["code"] + "]" in msg, "%s: want [%s]: %s" % (what, c["code"], msg.strip()))
            if c["tensor"]:
                check("tensor '" + c["tensor"] + "'" in msg,
                      "%s: must name tensor %s: %s" % (what, c["tensor"], msg.strip()))
            check(c["words"] in msg, "%s: must say %r: %s" % (what, c["words"], msg.strip()))
            check(os.path.join(folder, c["file"]) in msg or
                  (c["file"] == "model.safetensors" and folder in msg),
                  "%s: must name file %s: %s" % (what, c["file"], msg.strip()))
    print("corpus: %d must-fail folders" % len(all_cases))
    return failed_before
