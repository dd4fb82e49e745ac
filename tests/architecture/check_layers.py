#!/usr/bin/env python3
"""The layering rules of docs/architecture.md, checked mechanically.

1. Every CUDA source (.cu, .cuh) lives in kernels/.
2. No library (format/, converter/, kernels/, verify/) writes to a terminal or
   asks whether there is one: no std::cout/cerr/clog, no printf/puts to the
   standard streams, no isatty, no reading of $CI. That is tools/'s job.
3. No library calls exit()/abort(): libraries report through qpack::Error or
   a Status.
4. Every quoted #include of a qpack header names a layer the including file
   may depend on (the table below; docs/architecture.md draws it).
5. The CLI (tools/qpack/) holds no SIMD or OpenMP code: kernels belong to
   the libraries (benchmarks may use OpenMP to measure a bound).
6. No library installs a signal handler (signal(), sigaction()): dispositions
   are process state that only a tool owns.

Usage: check_layers.py SOURCE_DIR prints one line per violation and exits 1
when there is any, 0 otherwise. check_layers.py --self-test builds a small
tree that breaks each rule once and checks that every break is reported.
"""
import os
import re
import sys

LIBS = ("format", "converter", "kernels", "verify")
# layer -> the layers its files may include
ALLOWED = {
    "spec": {"spec"},
    "format": {"spec", "format"},
    "kernels": {"spec", "kernels", "format"},  # format: qpack::Error only (checked below)
    "converter": {"spec", "format", "kernels", "converter"},
    "verify": {"spec", "format", "kernels", "verify"},
    "tools": {"spec", "format", "kernels", "converter", "verify"},
    "tests": {"spec", "format", "kernels", "converter", "verify"},
}
SOURCE_EXT = (".cpp", ".hpp", ".cu", ".cuh", ".h", ".cc")
SKIP_DIRS = {".git", "__pycache__"}

TERMINAL = re.compile(
    r"std::(cout|cerr|clog)\b|\b(printf|puts|vprintf)\s*\(|\bf(printf|puts|write)\s*\(\s*std(out|err)\b"
    r"|\bisatty\s*\(|getenv\s*\(\s*\"CI\"\s*\)")
EXITS = re.compile(r"(?<![\w.:>])(std::)?(exit|_exit|_Exit|abort|quick_exit)\s*\(")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
SIGNALS = re.compile(r"(?<![\w.:>])(std::)?(signal|sigaction)\s*\(")
SIMD = re.compile(r"#\s*pragma\s+omp|<immintrin\.h>|<x86intrin\.h>")


def layer_of_file(rel):
    top = rel.split("/", 1)[0]
    if rel.startswith("format/include/qpack/spec/"):
        return "spec"
    if top in LIBS or top in ("tools", "tests"):
        return top
    return None


def layer_of_include(inc):
    m = re.match(r"qpack/(spec|format|kernels|converter|verify)/", inc)
    if m:
        return m.group(1)
    if inc == "qpack/version.hpp":
        return "format"
    return None


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def tracked_files(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith("build") and not x.startswith(".")]
        for f in files:
            yield os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")


def check(root):
    problems = []
    checked = 0
    for rel in sorted(tracked_files(root)):
        if not rel.endswith(SOURCE_EXT):
            continue
        layer = layer_of_file(rel)
        if rel.endswith((".cu", ".cuh")) and not rel.startswith("kernels/"):
            problems.append(f"{rel}: CUDA source outside kernels/")
        if layer is None:
            continue
        checked += 1
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            raw = fh.read()
        code = strip_comments(raw)
        lines = code.split("\n")
        for n, line in enumerate(lines, 1):
            if layer in LIBS or layer == "spec":
                if TERMINAL.search(line):
                    problems.append(f"{rel}:{n}: a library writes to or probes a terminal: {line.strip()}")
                if EXITS.search(line):
                    problems.append(f"{rel}:{n}: a library ends the process: {line.strip()}")
                if SIGNALS.search(line):
                    problems.append(f"{rel}:{n}: a library installs a signal handler: {line.strip()}")
            if rel.startswith("tools/qpack/") and SIMD.search(line):
                problems.append(f"{rel}:{n}: SIMD/OpenMP code in the CLI (it belongs in a library)")
            m = INCLUDE.match(line)
            if not m:
                continue
            inc = m.group(1)
            target = layer_of_include(inc)
            if inc.startswith("qpack/") and target is None:
                problems.append(f"{rel}:{n}: #include \"{inc}\" is not in a library's include folder")
                continue
            if target is None:
                continue
            if target not in ALLOWED[layer]:
                problems.append(f"{rel}:{n}: layer '{layer}' may not include \"{inc}\" (layer '{target}')")
            if layer == "kernels" and target == "format" and inc != "qpack/format/error.hpp":
                problems.append(f"{rel}:{n}: kernels may use only qpack/format/error.hpp of the format layer")
    return checked, problems


BREAKS = {
    "verify/src/stray.cu": ("", "CUDA source outside kernels/"),
    "format/src/talk.cpp": ('#include <iostream>\nvoid f() { std::cerr << "x"; }\n', "writes to or probes a terminal"),
    "converter/src/tty.cpp": ("int f() { return isatty(2); }\n", "writes to or probes a terminal"),
    "verify/src/quit.cpp": ("void f() { std::exit(3); }\n", "ends the process"),
    "format/src/trap.cpp": ("void f() { std::signal(SIGINT, SIG_IGN); }\n", "installs a signal handler"),
    "format/include/qpack/spec/up.hpp": ('#include "qpack/format/error.hpp"\n', "layer 'spec' may not include"),
    "verify/src/side.cpp": ('#include "qpack/converter/quantize.hpp"\n', "layer 'verify' may not include"),
    "kernels/src/io.cpp": ('#include "qpack/format/io.hpp"\n', "kernels may use only"),
    "tools/qpack/simd.cpp": ("#include <immintrin.h>\n", "SIMD/OpenMP code in the CLI"),
    "converter/src/old.cpp": ('#include "qpack/quant_math.hpp"\n', "is not in a library's include folder"),
}
CLEAN = {
    "format/src/ok.cpp": ('#include "qpack/spec/dtype.hpp"\n// std::cout in a comment is fine\nint exit_code = 0;\n', None),
    "kernels/src/ok.cpp": ('#include "qpack/format/error.hpp"\n#include "qpack/kernels/cuda_quant.hpp"\n', None),
}


def self_test():
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        for rel, (text, _) in {**BREAKS, **CLEAN}.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text)
        _, problems = check(root)
    missed = [f"{rel}: not reported ({why})" for rel, (_, why) in BREAKS.items()
              if not any(p.startswith(rel) and why in p for p in problems)]
    false = [p for p in problems if any(p.startswith(rel) for rel in CLEAN)]
    for p in missed + false:
        print("self-test:", p)
    print(f"check_layers self-test: {len(BREAKS)} breaks, {len(missed)} missed, {len(false)} false alarms")
    return 1 if missed or false else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    checked, problems = check(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "."))
    for p in problems:
        print(p)
    print(f"check_layers: {checked} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
