#!/usr/bin/env bash
# Output hashes of every scheme family, for changes that must not change a byte:
#   tools/output_hashes.sh BUILD_DIR OUT_DIR > before.sha   (then again after; diff the two)
# Generates F16 (sharded), BF16 and F32 Llama-shaped checkpoints, converts each with nine
# schemes (4/8/3/2 bits, axis 0/-1, sym/asym, F16/BF16/F32 scales, zstd) on the default
# device, dequantizes one, and prints "sha256  name" per file, sorted.
set -euo pipefail
B=$1; O=$2
if [ -e "$O" ] && [ -n "$(ls -A "$O")" ]; then echo "output_hashes.sh: $O must be new or empty" >&2; exit 2; fi
mkdir -p "$O"
mkdir -p "$O/m16"; "$B/tools/qpack-testgen" llama "$O/m16" --hidden 256 --intermediate 688 --layers 2 --vocab 1000 --shard-bytes 3000000 >/dev/null
mkdir -p "$O/mbf"; "$B/tools/qpack-testgen" llama "$O/mbf" --hidden 192 --intermediate 520 --layers 1 --vocab 999 --dtype bf16 >/dev/null
mkdir -p "$O/m32"; "$B/tools/qpack-testgen" llama "$O/m32" --hidden 160 --intermediate 416 --layers 1 --vocab 517 --dtype f32 >/dev/null
q="$B/tools/qpack"
i=0
for src in m16 mbf m32; do
  while read -r name args; do
    "$q" convert "$O/$src" "$O/$src-$name.qpack" -q $args
  done <<LIST
default
b8 --bits 8
b4ax-1 --axis -1
b8ax-1sym --bits 8 --axis -1 --symmetric
b4sym --symmetric --scale-dtype bf16
b3g32 --bits 3 --group-size 32 --scale-dtype f32
b2all --bits 2 --group-size all --axis -1
zstd --zstd 3
b8zstd --bits 8 --axis -1 --zstd 9
LIST
done
"$q" dequantize "$O/m16-default.qpack" "$O/m16-deq.safetensors" >/dev/null 2>&1 || true
cd "$O"; sha256sum *.qpack *.safetensors 2>/dev/null | LC_ALL=C sort -k2
