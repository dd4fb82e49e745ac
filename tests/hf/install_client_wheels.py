#!/usr/bin/env python3
"""Install carried wheels that the Python environment lacks, for the real-client
checks on the GPU machine (it has no network and no package index).

  install_client_wheels.py --target DIR [--always NAME ...] WHEEL_OR_DIR...

A wheel is installed (pip --no-deps --target DIR) only when its distribution
is not installed already, so the machine's own torch, numpy and transformers
are never shadowed; `--always` names distributions installed from the wheel
even so (the client under test, e.g. gptqmodel and optimum). Plain files next
to the wheels (a shared library such as libpcre2-8.so.0) are copied to
DIR/lib for LD_LIBRARY_PATH. Prints what it did; exits non-zero when pip fails.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
from importlib import metadata


def dist_name(wheel):
    return os.path.basename(wheel).split("-")[0].replace("_", "-").lower()


def installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--always", action="append", default=[])
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args()
    always = {n.replace("_", "-").lower() for n in a.always}
    wheels, libs = [], []
    for p in a.paths:
        items = sorted(glob.glob(os.path.join(p, "*"))) if os.path.isdir(p) else [p]
        for f in items:
            (wheels if f.endswith(".whl") else libs).append(f)
    todo = []
    for w in wheels:
        n = dist_name(w)
        have = installed(n)
        if have and n not in always:
            print(f"have {n} {have}; not installing {os.path.basename(w)}")
        else:
            todo.append(w)
    os.makedirs(os.path.join(a.target, "lib"), exist_ok=True)
    for f in libs:
        shutil.copy(f, os.path.join(a.target, "lib"))
    if todo:
        print("installing " + " ".join(os.path.basename(w) for w in todo))
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                            "--no-compile", "--no-cache-dir", "--upgrade", "--target", a.target, *todo])
        sys.exit(r.returncode)


if __name__ == "__main__":
    main()
