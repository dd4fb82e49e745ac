#!/usr/bin/env bash
# GGUF conversion speed: `qpack convert` against llama.cpp's own quantizer
# (llama_model_quantize through tools/bench/llama_quantize_peer.py) on the same
# F16 Llama-shaped GGUF in the same run, with peak RSS, GB/s of source, the
# same-run memory-copy bound, and a tensor-by-tensor byte comparison of each
# qpack output with the peer's.
#
#   tools/bench/bench_gguf.sh [BUILD_DIR] [WORK_DIR] [LAYERS] [TYPES] [THREADS]
#
# Defaults: build, /tmp/qpack-bench-gguf, 4 layers of Llama-2-7B widths
# (hidden 4096, MLP 11008, vocab 32000, 32 heads: a 2.1 GB F16 GGUF),
# TYPES "Q4_1 Q4_1:pure Q4_K_M Q4_K_M:pure", THREADS "1 2"; REPS=N takes the
# best of N runs of each side (the machine may be shared).
# The source GGUF is written once per WORK_DIR (qpack convert --type F16 when
# qpack writes GGUF, else tests/llama/gguf_from_hf.py). Every timed run reads a
# warm page cache (the source is read once before). Needs python3 with
# llama_cpp, gguf and numpy.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-build}"
work="${2:-/tmp/qpack-bench-gguf}"
layers="${3:-4}"
types="${4:-Q4_1 Q4_1:pure Q4_K_M Q4_K_M:pure}"
threads_list="${5:-1 2}"
reps="${REPS:-1}"  # best of REPS runs each (peak RSS: the largest)
qpack="$build/tools/qpack"
mkdir -p "$work"
model="$work/hf-$layers"
src="$work/f16-$layers.gguf"
if [ ! -f "$model/config.json" ]; then
  "$build/tools/qpack-testgen" llama "$model" --hidden 4096 --intermediate 11008 --layers "$layers" \
    --vocab 32000 --heads 32 --kv-heads 32 --dtype f16 >/dev/null
fi
if [ ! -f "$src" ]; then
  if "$qpack" convert --help 2>&1 | grep -q -- '--type'; then
    "$qpack" convert "$model" "$src" --type F16 -q
  else
    python3 "$here/tests/llama/gguf_from_hf.py" "$model" "$src" --type F16
  fi
fi
bytes=$(stat -c %s "$src")
cat "$src" >/dev/null  # warm the page cache

# The memory-copy bound in this run: numpy copies of a buffer of the source's
# size, split over T threads (numpy releases the GIL in copyto), best of 3.
copy_gbps() {
  python3 - "$bytes" "$1" <<'EOF'
import sys, threading, time
import numpy as np
n, t = int(sys.argv[1]), int(sys.argv[2])
a = np.ones(n, dtype=np.uint8); b = np.empty_like(a)
parts = np.array_split(np.arange(n), t)
def one(lo, hi): np.copyto(b[lo:hi], a[lo:hi])
best = 1e30
for _ in range(3):
    th = [threading.Thread(target=one, args=(p[0], p[-1] + 1)) for p in parts]
    t0 = time.perf_counter(); [x.start() for x in th]; [x.join() for x in th]
    best = min(best, time.perf_counter() - t0)
print(f"{n / best / 1e9:.3f}")
EOF
}

peak_rss_mib() { awk '/Maximum resident/ {printf "%.0f", $NF/1024}' "$1"; }

awk -v s="$src" -v b="$bytes" -v l="$layers" 'BEGIN{printf "# source %s: %.3f GB F16, %s layers of Llama-2-7B widths\n", s, b/1e9, l}'
printf '%-12s %3s  %-28s %-28s %7s  %-10s %s\n' type thr "qpack GB/s (s, RSS MiB)" "peer GB/s (s, RSS MiB)" "ratio" "copy GB/s" "bytes vs peer"
for threads in $threads_list; do
  copy=$(copy_gbps "$threads")
  for spec in $types; do
    t="${spec%%:*}"
    pure=""
    [ "$spec" != "$t" ] && pure="--pure"
    q="$work/qpack-$t${pure:+-pure}-$threads.gguf"
    p="$work/peer-$t${pure:+-pure}-$threads.gguf"
    rm -f "$q" "$p"
    psecs=1e30 prss=0
    for ((r = 0; r < reps; r++)); do
      rm -f "$p"
      /usr/bin/time -v python3 "$here/tools/bench/llama_quantize_peer.py" "$src" "$p" --type "$t" \
        --threads "$threads" $pure >"$work/peer.json" 2>"$work/peer.time"
      s1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$work/peer.json")
      psecs=$(awk -v a="$psecs" -v b="$s1" 'BEGIN{print (b < a ? b : a)}')
      prss=$(awk -v a="$prss" -v b="$(peak_rss_mib "$work/peer.time")" 'BEGIN{print (b > a ? b : a)}')
    done
    if "$qpack" convert --help 2>&1 | grep -q -- '--type'; then
      qsecs=1e30 qrss=0 failed=""
      for ((r = 0; r < reps; r++)); do
      t0=$(date +%s.%N)
      if ! /usr/bin/time -v "$qpack" convert "$src" "$q" --type "$t" $pure --threads "$threads" -q --force \
        >"$work/qpack.out" 2>"$work/qpack.time"; then
        failed=1
        break
      fi
      t1=$(date +%s.%N)
      qsecs=$(awk -v a="$qsecs" -v b="$(awk -v a="$t0" -v z="$t1" 'BEGIN{print z-a}')" 'BEGIN{print (b < a ? b : a)}')
      qrss=$(awk -v a="$qrss" -v b="$(peak_rss_mib "$work/qpack.time")" 'BEGIN{print (b > a ? b : a)}')
      done
      if [ -n "$failed" ]; then
        awk -v t="$spec" -v n="$threads" -v b="$bytes" -v ps="$psecs" -v pr="$prss" -v c="$copy" 'BEGIN{
          printf "%-12s %3d  %-28s %6.3f (%7.2f s, %6d)     %7s  %6.2f     %s\n",
            t, n, "(qpack cannot write it yet)", b/ps/1e9, ps, pr, "-", c, "-"}'
        grep -m1 'error' "$work/qpack.time" >&2 || true
        rm -f "$p"
        continue
      fi
      cmp=$(python3 "$here/tools/bench/gguf_compare.py" "$q" "$p" || true)
      awk -v t="$spec" -v n="$threads" -v b="$bytes" -v qs="$qsecs" -v ps="$psecs" -v qr="$qrss" \
        -v pr="$prss" -v c="$copy" -v cmp="$cmp" 'BEGIN{
        printf "%-12s %3d  %6.3f (%7.2f s, %6d)     %6.3f (%7.2f s, %6d)     %6.1fx  %6.2f     %s\n",
          t, n, b/qs/1e9, qs, qr, b/ps/1e9, ps, pr, ps/qs, c, cmp}'
      rm -f "$q"
    else
      awk -v t="$spec" -v n="$threads" -v b="$bytes" -v ps="$psecs" -v pr="$prss" -v c="$copy" 'BEGIN{
        printf "%-12s %3d  %-28s %6.3f (%7.2f s, %6d)     %7s  %6.2f     %s\n",
          t, n, "(qpack writes no GGUF)", b/ps/1e9, ps, pr, "-", c, "-"}'
    fi
    rm -f "$p"
  done
done
