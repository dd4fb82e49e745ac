#!/usr/bin/env bash
# Whole `qpack convert` per parameter method (quantization.md §M) and per
# device, on a generated Llama-shaped checkpoint in the page cache: wall
# seconds, GB/s of source, the rate relative to RTN on the same device, and
# whether the device's output equals the CPU's byte for byte (`cmp`).
#
#   tools/bench/bench_methods_convert.sh [BUILD_DIR] [WORK_DIR] [DEVICES] [SCHEMES]
#
# DEVICES: space-separated `--device` values (default "cpu cuda").
# SCHEMES: space-separated label=options pairs; options use ',' for spaces
# (default: rtn, search and refit at the default scheme, and --preset best).
set -euo pipefail
build="${1:-build}"
work="${2:-/tmp/qpack-bench-methods}"
devices="${3:-cpu cuda}"
schemes="${4:-rtn=--method,rtn search=--method,search refit=--method,refit best=--preset,best}"
qpack="$build/tools/qpack"
model="$work/model"
mkdir -p "$work"
if [ ! -f "$model/config.json" ]; then
  "$build/tools/qpack-testgen" llama "$model" --hidden 4096 --intermediate 11008 --layers 2 \
    --vocab 32000 --heads 32 --kv-heads 32 --dtype f16 >/dev/null
fi
bytes=$(cat "$model"/*.safetensors | wc -c)
cat "$model"/*.safetensors >/dev/null  # warm the page cache
printf "%-8s %-6s %8s %8s %8s  %s\n" scheme device seconds GB/s "vs rtn" "bytes vs cpu"
for dev in $devices; do
  rtn_s=""
  for s in $schemes; do
    label="${s%%=*}"
    opts="${s#*=}"
    opts="${opts//,/ }"
    out="$work/$label-$dev.qpack"
    # shellcheck disable=SC2086
    secs=$("$qpack" convert "$model" "$out" $opts --device "$dev" --force --quiet --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
    [ "$label" = rtn ] && rtn_s="$secs"
    same="-"
    if [ "$dev" != cpu ] && [ -f "$work/$label-cpu.qpack" ]; then
      cmp -s "$out" "$work/$label-cpu.qpack" && same="identical" || same="DIFFERENT"
    fi
    awk -v l="$label" -v d="$dev" -v s="$secs" -v b="$bytes" -v r="${rtn_s:-0}" -v c="$same" 'BEGIN{
      printf "%-8s %-6s %8.2f %8.2f %7s  %s\n", l, d, s, b/s/1e9,
        (r > 0 ? sprintf("%.0f%%", 100*r/s) : "-"), c}'
  done
done
