#!/usr/bin/env bash
# End-to-end `qpack convert` on a generated multi-GB checkpoint: time, GB/s,
# peak RSS, next to the rate at which the same files stream out of the page
# cache in the same run (the bound for a conversion from a warm cache).
#
#   tools/bench/bench_convert.sh [BUILD_DIR] [WORK_DIR] [LAYERS]
#
# LAYERS=22 gives a 9.4 GB F16 Llama-7B-shaped model (hidden 4096, MLP 11008).
set -euo pipefail
build="${1:-build}"
work="${2:-/tmp/qpack-bench}"
layers="${3:-22}"
qpack="$build/tools/qpack"
mkdir -p "$work"
if [ ! -f "$work/model-$layers/config.json" ]; then
  mkdir -p "$work/model-$layers"
  "$build/tools/qpack-testgen" llama "$work/model-$layers" --hidden 4096 --intermediate 11008 \
    --layers "$layers" --vocab 32000 --shard-bytes 2000000000
fi
model="$work/model-$layers"
bytes=$(cat "$model"/*.safetensors | wc -c)
cat "$model"/*.safetensors >/dev/null  # warm the page cache
t0=$(date +%s.%N); cat "$model"/*.safetensors >/dev/null; t1=$(date +%s.%N)
read_gbps=$(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN{print b/(z-a)/1e9}')
for threads in 1 2; do
  out="$work/out-$threads.qpack"
  log=$(/usr/bin/time -v "$qpack" convert "$model" "$out" --force --quiet --json --threads "$threads" 2>"$work/time.log")
  secs=$(echo "$log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
  rss=$(grep "Maximum resident" "$work/time.log" | awk '{print $NF}')
  awk -v t="$threads" -v b="$bytes" -v s="$secs" -v r="$read_gbps" -v m="$rss" 'BEGIN{
    printf "threads %d: %.2f GB in %.2f s = %.2f GB/s (page-cache read %.2f GB/s: %.0f%%), peak RSS %.0f MiB\n",
      t, b/1e9, s, b/s/1e9, r, 100*b/s/1e9/r, m/1024}'
  rm -f "$out"
done
