#!/usr/bin/env bash
# Copies the build dependencies that the GPU machine may lack (headers, static
# libraries, CMake and pkg-config files of nlohmann-json, CLI11, zstd, xxhash,
# GoogleTest/GoogleMock, and a pkg-config binary) from this Debian/Ubuntu
# machine into .gpudeps/usr, made relocatable, for tools/gpu_check.sh.
# .gpudeps is ignored through .git/info/exclude and carried to the GPU
# machine explicitly.
#
#   apt-get install libxxhash-dev libzstd-dev libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev pkgconf
#   tools/gpu_deps.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
D=.gpudeps/usr
rm -rf .gpudeps
mkdir -p "$D/bin" "$D/lib"
for p in libxxhash-dev libzstd-dev libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev; do
  dpkg -L "$p" | grep -E "^/usr/(include|lib/x86_64-linux-gnu|share/cmake|share/pkgconfig)/" |
    while read -r f; do
      [ -f "$f" ] || continue
      case "$f" in *.so*) continue ;; esac  # static libraries only: nothing to find at run time
      mkdir -p ".gpudeps$(dirname "$f")"
      cp -a "$f" ".gpudeps$f"
    done
done
# pkg-config files relative to their own folder.
for pc in "$D"/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
  sed -i -e 's|^prefix=.*|prefix=${pcfiledir}/../../..|' \
         -e 's|^libdir=${exec_prefix}/lib$|libdir=${exec_prefix}/lib/x86_64-linux-gnu|' "$pc"
done
for pc in "$D"/share/pkgconfig/*.pc; do
  [ -f "$pc" ] && sed -i 's|^prefix=.*|prefix=${pcfiledir}/../..|' "$pc"
done
cp "$(command -v pkgconf)" "$D/bin/pkg-config"
cp /lib/x86_64-linux-gnu/libpkgconf.so.3* "$D/lib/"
# info/exclude lives in the common git folder (a worktree's .git is a file).
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx "/.gpudeps/" "$exclude" 2>/dev/null || echo "/.gpudeps/" >> "$exclude"
du -sh .gpudeps
