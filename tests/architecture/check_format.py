#!/usr/bin/env python3
"""Every C++ and CUDA source is formatted by the repository's .clang-format.

Usage: check_format.py SOURCE_DIR [--fix]. Uses clang-format 14 (the version
the tree was formatted with: other versions format a few constructs
differently); exits 77 (ctest: skipped) when it is not installed, 1 when a
file differs (naming it), 0 otherwise. --fix rewrites the files in place.
"""
import os
import shutil
import subprocess
import sys

EXT = (".cpp", ".hpp", ".cu", ".cuh", ".h", ".cc")
FOLDERS = ("format", "converter", "kernels", "verify", "tools", "tests")


def clang_format():
    for name in ("clang-format-14", "clang-format"):
        exe = shutil.which(name)
        if not exe:
            continue
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        if "version 14." in out:
            return exe
    return None


def sources(root):
    for top in FOLDERS:
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = [x for x in dirs if not x.startswith((".", "build"))]
            for f in sorted(files):
                if f.endswith(EXT):
                    yield os.path.join(d, f)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    fix = "--fix" in sys.argv[2:]
    exe = clang_format()
    if not exe:
        print("check_format: clang-format 14 not found; skipped")
        return 77
    files = list(sources(root))
    if fix:
        subprocess.run([exe, "-i", "--style=file"] + files, check=True)
        print(f"check_format: formatted {len(files)} files")
        return 0
    bad = []
    for f in files:
        r = subprocess.run([exe, "--dry-run", "--Werror", "--style=file", f], capture_output=True, text=True)
        if r.returncode != 0:
            bad.append(os.path.relpath(f, root))
    for b in bad:
        print(f"{b}: not formatted (run tests/architecture/check_format.py . --fix)")
    print(f"check_format: {len(files)} files, {len(bad)} not formatted")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
