#!/usr/bin/env bash
# One run on a GPU machine: build for sm_90, run the CUDA tests (ctest label
# gpu), run them again under compute-sanitizer memcheck and racecheck, run the
# CUDA benchmark, and print a short summary table last. Full logs go to $OUT
# (default: ./gpu-check-out).
#
#   tools/gpu_check.sh [--skip-sanitizers] [--profile] [--verify-only | --e2e-only | --ggml-only | --hf-only] [--bench-args "..."]
#
# --profile adds Nsight Compute counters for one launch of each kernel
# (ncu.log) and the SASS of the two main quantize kernels (sass.log).
# --e2e-only builds and runs only the end-to-end part of the CUDA benchmark
# (TensorQuantizer and convert_checkpoint from the page cache), no tests.
# --verify-only builds, tests and benchmarks only the verifier's GPU pass
# (with --profile: counters and SASS of its fast kernels), for quick rounds
# of work on it. --ggml-only does the same for the kernels of ggml's GGUF
# block types (their test, the GGUF dequantize/verify GPU tests, sanitizers,
# qpack_bench_ggml_blocks). --hf-only builds qpack and qpack-testgen and runs
# tests/hf/check_transformers.py: the compressed-tensors and GPTQ folders
# qpack exports, loaded by transformers on the GPU (carry compressed-tensors
# and its missing dependencies as wheels; QPACK_HF_ONLY=labels picks schemes).
#
# The GPU machine has no package manager and no network. When the system
# lacks the build dependencies (nlohmann-json, CLI11, zstd, xxhash, GoogleTest,
# pkg-config), the script uses a prefix carried next to the sources in
# .gpudeps/usr (ignored by git; make it with tools/gpu_deps.sh on a Debian or
# Ubuntu machine that has the -dev packages).
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/gpu-check-out}
BUILD=${BUILD:-$ROOT/build-gpu}
DEPS=$ROOT/.gpudeps/usr
JOBS=$(nproc 2>/dev/null || echo 4)
SANITIZE=1
PROFILE=0
VERIFY_ONLY=0
E2E_ONLY=0
GGML_ONLY=0
HF_ONLY=0
BENCH_ARGS=""
# Seconds the whole run may take (the GPU machine stops a command at 600 s);
# the sanitizer runs shrink or are skipped to leave room for the benchmark.
BUDGET=${GPU_CHECK_BUDGET:-560}
BENCH_RESERVE=90
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-sanitizers) SANITIZE=0 ;;
    --profile) PROFILE=1 ;;
    --verify-only) VERIFY_ONLY=1 ;;
    --e2e-only) E2E_ONLY=1; SANITIZE=0; BENCH_ARGS="--e2e-only $BENCH_ARGS" ;;
    --ggml-only) GGML_ONLY=1 ;;
    --hf-only) HF_ONLY=1 ;;
    --bench-args) BENCH_ARGS="$2"; shift ;;
    *) echo "usage: $0 [--skip-sanitizers] [--profile] [--verify-only | --e2e-only | --ggml-only | --hf-only] [--bench-args ARGS]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
SUMMARY=()
row() { SUMMARY+=("$(printf '%-40s %s' "$1" "$2")"); }
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*"; }

# ---------------------------------------------------------------- environment
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  nvcc --version | tail -2
  cmake --version | head -1
  ninja --version
  g++ --version | head -1
  nproc
  for h in nlohmann/json.hpp CLI/CLI.hpp gtest/gtest.h zstd.h xxhash.h omp.h; do
    if echo "#include <$h>" | g++ -fopenmp -x c++ -fsyntax-only - 2>/dev/null; then echo "system has <$h>"; else echo "system lacks <$h>"; fi
  done
  command -v pkg-config || echo "no pkg-config"
  command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer
} > "$OUT/env.log" 2>&1
stamp "environment: $(head -2 "$OUT/env.log" | tail -1)"

# ---------------------------------------------------------------- configure + build
CMAKE_ARGS=(-S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90
            -DQPACK_ENABLE_CUDA=ON -DQPACK_BUILD_TESTS=ON)
command -v ninja > /dev/null && CMAKE_ARGS+=(-G Ninja)
if [ -d "$DEPS" ]; then
  # Carried configs first; the system's own, where present, are equivalent.
  export PKG_CONFIG_PATH=$DEPS/lib/x86_64-linux-gnu/pkgconfig:$DEPS/share/pkgconfig:${PKG_CONFIG_PATH:-}
  CMAKE_ARGS+=(-DCMAKE_PREFIX_PATH="$DEPS"
               -DGTest_DIR="$DEPS/lib/x86_64-linux-gnu/cmake/GTest"
               -Dnlohmann_json_DIR="$DEPS/share/cmake/nlohmann_json"
               -DCLI11_DIR="$DEPS/share/cmake/CLI11")
  if ! command -v pkg-config > /dev/null; then
    export LD_LIBRARY_PATH=$DEPS/lib:${LD_LIBRARY_PATH:-}
    CMAKE_ARGS+=(-DPKG_CONFIG_EXECUTABLE="$DEPS/bin/pkg-config")
  fi
fi
if ! cmake "${CMAKE_ARGS[@]}" > "$OUT/configure.log" 2>&1; then
  tail -40 "$OUT/configure.log"
  echo "configure FAILED (see configure.log)"
  exit 1
fi
TARGETS=(cuda_quant_test qpack_bench_cuda qpack qpack-testgen)
# ggml's legacy GGUF block kernels, when the tree has them.
grep -q cuda_ggml_blocks_test "$ROOT/tests/CMakeLists.txt" && TARGETS+=(cuda_ggml_blocks_test qpack_bench_ggml_blocks)
# GGUF decoding on the device (dequantize and verify; they need python3 with
# gguf, numpy and safetensors there, else they skip: carry gguf as a wheel).
GGUF_TESTS=()
grep -q dequantize_gguf_gpu_test "$ROOT/tests/CMakeLists.txt" && GGUF_TESTS+=(dequantize_gguf_gpu_test)
grep -q verify_gguf_gpu_test "$ROOT/tests/CMakeLists.txt" && GGUF_TESTS+=(verify_gguf_gpu_test)
TARGETS+=("${GGUF_TESTS[@]}")
[ "$VERIFY_ONLY" = 1 ] && TARGETS=()
# The verifier's GPU test and benchmark, when that part of the tree has them.
grep -q verify_gpu_test "$ROOT/tests/CMakeLists.txt" && TARGETS+=(verify_gpu_test)
# The newer gpu tests: the GGUF encoder, the quantizer set (cuda:all), the methods kernel.
for t in cuda_ggml_encoder_test quantizer_set_gpu_test cuda_quant_methods_test cuda_two_level_test; do
  grep -q "$t" "$ROOT/tests/CMakeLists.txt" && TARGETS+=("$t")
done
grep -q qpack_bench_verify "$ROOT/tools/bench/CMakeLists.txt" && TARGETS+=(qpack_bench_verify)
[ "$E2E_ONLY" = 1 ] && TARGETS=(qpack_bench_cuda)
[ "$GGML_ONLY" = 1 ] && TARGETS=(cuda_ggml_blocks_test qpack_bench_ggml_blocks qpack "${GGUF_TESTS[@]}")
[ "$HF_ONLY" = 1 ] && TARGETS=(qpack qpack-testgen)
if ! cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}" > "$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40
  echo "build FAILED (see build.log)"
  exit 1
fi
stamp "built ${TARGETS[*]}"
row "build (sm_90, $JOBS jobs)" "ok, $(($(date +%s) - t0)) s"

# ---------------------------------------------------------------- HF folders in transformers
if [ "$HF_ONLY" = 1 ]; then
  hf_args=(--qpack "$BUILD/tools/qpack" --testgen "$BUILD/tools/qpack-testgen" --work /tmp/qpack-hf
           --json "$OUT/hf_transformers.json")
  [ -d "$ROOT/../shared/data/stories260K" ] && hf_args+=(--stories "$ROOT/../shared/data/stories260K")
  [ -d "$ROOT/.stories" ] && hf_args+=(--stories "$ROOT/.stories")  # a carried copy
  [ -n "${QPACK_HF_ONLY:-}" ] && hf_args+=(--only "$QPACK_HF_ONLY")
  python3 "$ROOT/tests/hf/check_transformers.py" "${hf_args[@]}" > "$OUT/hf_transformers.log" 2>&1
  rc=$?
  tail -30 "$OUT/hf_transformers.log"
  stamp "check_transformers: rc=$rc"
  exit "$rc"
fi

# ---------------------------------------------------------------- tests
cd "$BUILD" || exit 1
FAIL=0
CTEST_ONLY=()
[ "$VERIFY_ONLY" = 1 ] && CTEST_ONLY=(-R "^VerifyGpu\.")
[ "$GGML_ONLY" = 1 ] && CTEST_ONLY=(-R "^CudaGgmlBlocks\.|Gguf.*Gpu")
if [ "$E2E_ONLY" = 0 ]; then
  ctest -L gpu "${CTEST_ONLY[@]}" --output-on-failure --timeout 600 > "$OUT/ctest_gpu.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || FAIL=1
  res=$(grep -E "tests passed|tests failed" "$OUT/ctest_gpu.log" | tail -1)
  skipped=$(grep -c "\*\*\*Skipped\| Skipped " "$OUT/ctest_gpu.log")
  row "ctest -L gpu" "rc=$rc: ${res:-no result} (skipped: $skipped)"
  stamp "ctest -L gpu: $res"
fi
# The same binary once more with its own output (seed, per-test timings).
if [ -x ./tests/cuda_quant_test ] && [ "$VERIFY_ONLY" = 0 ] && [ "$E2E_ONLY" = 0 ] && [ "$GGML_ONLY" = 0 ]; then
  ./tests/cuda_quant_test > "$OUT/cuda_quant_test.log" 2>&1
  row "cuda_quant_test (direct)" "rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/cuda_quant_test.log" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- sanitizers
if [ "$SANITIZE" = 1 ]; then
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  # Ours first: if time runs short, the verifier's sanitizer runs are dropped.
  for exe in tests/cuda_quant_test tests/cuda_ggml_blocks_test tests/verify_gpu_test; do
    [ -x "$exe" ] || continue
    [ "$VERIFY_ONLY" = 1 ] && [ "$exe" != tests/verify_gpu_test ] && continue
    [ "$GGML_ONLY" = 1 ] && [ "$exe" != tests/cuda_ggml_blocks_test ] && continue
    for tool in memcheck racecheck; do
      extra=()
      [ "$tool" = memcheck ] && extra=(--leak-check full)
      log="$OUT/sanitizer_${tool}_$(basename "$exe").log"
      left=$((BUDGET - ($(date +%s) - t0) - BENCH_RESERVE))
      if [ "$left" -lt 40 ]; then
        row "$tool $(basename "$exe")" "skipped: out of time"
        continue
      fi
      [ "$left" -gt 200 ] && left=200
      # A quarter of the parameter sweeps: the sanitizers slow kernels ~100x.
      QPACK_GPU_TEST_QUICK=1 timeout "$left" "$SAN" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
        "$exe" --gtest_filter=-CudaConvert.* > "$log" 2>&1
      rc=$?
      [ "$rc" = 0 ] || FAIL=1
      [ "$rc" = 124 ] && rc="124 (timed out after ${left} s)"
      errs=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$log" | tail -2 | tr '\n' ' ')
      gt=$(grep -E '^\[  (PASSED|FAILED)' "$log" | tr '\n' ' ')
      row "$tool $(basename "$exe")" "rc=$rc ${errs:-no summary} $gt"
      stamp "$tool $(basename "$exe") rc=$rc $errs"
    done
  done
fi

# ---------------------------------------------------------------- benchmark
if [ "$VERIFY_ONLY" = 0 ] && [ "$GGML_ONLY" = 0 ]; then
  ./tools/bench/qpack_bench_cuda --json "$OUT/bench.json" $BENCH_ARGS > "$OUT/bench.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || FAIL=1
  row "qpack_bench_cuda" "rc=$rc (nonzero: a mismatch vs quantize_cpu)"
  stamp "benchmark done"
fi
if [ -x ./tools/bench/qpack_bench_ggml_blocks ] && [ "$VERIFY_ONLY" = 0 ] && [ "$E2E_ONLY" = 0 ]; then
  ./tools/bench/qpack_bench_ggml_blocks > "$OUT/bench_ggml_blocks.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || FAIL=1
  row "qpack_bench_ggml_blocks" "rc=$rc (nonzero: a mismatch vs the spec's reference)"
  stamp "ggml blocks benchmark done"
fi
if [ -x ./tools/bench/qpack_bench_verify ] && [ "$E2E_ONLY" = 0 ] && [ "$GGML_ONLY" = 0 ]; then
  ./tools/bench/qpack_bench_verify > "$OUT/bench_verify.log" 2>&1
  row "qpack_bench_verify" "rc=$? (nonzero: below 60% of copy or a CPU/GPU mismatch)"
  stamp "verify benchmark done"
fi

# ---------------------------------------------------------------- profile
# Hardware counters of one launch of each kernel (ncu, clocks left as they
# are) and the machine code of the two hottest quantize kernels.
if [ "$PROFILE" = 1 ] && [ "$VERIFY_ONLY" = 1 ] && command -v ncu > /dev/null; then
  # The verifier's columns and rows kernels: one launch per case, the cases that set the pace.
  for c in bf16-4b-g64-ax0 f16-4b-g64-ax0 bf16-4b-g64-ax-1 bf16-2b-g32-ax-1; do
    timeout 60 ncu --clock-control none --kernel-name regex:"compare_cols|compare_rows" --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section InstructionStats \
      ./tools/bench/qpack_bench_verify --case "$c" --iters 1 --no-check
  done > "$OUT/ncu_verify.log" 2>&1
  row "ncu (verify kernels)" "rc=$? (ncu_verify.log)"
  cuobjdump -res-usage ./tools/bench/qpack_bench_verify 2>&1 | grep -A1 -E "compare_cols|compare_rows" |
    grep -E "Function|REG" > "$OUT/sass_verify.log" 2>&1
  stamp "verify profile done"
elif [ "$PROFILE" = 1 ] && command -v ncu > /dev/null &&
   [ $((BUDGET - ($(date +%s) - t0))) -gt 60 ]; then
  timeout $((BUDGET - ($(date +%s) - t0) - 10)) ncu --clock-control none --kernel-name regex:"quantize|dequantize" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    ./tools/bench/qpack_bench_cuda --profile > "$OUT/ncu.log" 2>&1
  row "ncu (one launch per kernel)" "rc=$? (ncu.log)"
  {
    cuobjdump -res-usage ./tools/bench/qpack_bench_cuda 2>&1 | grep -A1 -E "quantize|dequantize" | grep -E "Function|REG"
    for f in _ZN5qpack5cudak13quantize_colsILNS_5DTypeE8ELi4ELb0ELi8EEEvNS0_9QuantArgsE \
             _ZN5qpack5cudak13quantize_rowsILNS_5DTypeE8ELi4ELb0ELb1EEEvNS0_9QuantArgsE; do
      cuobjdump -sass -fun "$f" ./tools/bench/qpack_bench_cuda
    done
  } > "$OUT/sass.log" 2>&1
  stamp "profile done"
fi

# ---------------------------------------------------------------- summary
echo
echo "================ gpu_check summary ($(($(date +%s) - t0)) s) ================"
if [ -f "$OUT/bench.log" ]; then
  grep -m1 -E "cuda:0" "$OUT/bench.log"
  grep -m1 -E "device-to-device" "$OUT/bench.log"
fi
for r in "${SUMMARY[@]}"; do echo "$r"; done
if [ -f "$OUT/bench.log" ]; then
  echo "---------------- benchmark (GB/s counts bytes read + written; % of the reference) ----------------"
  grep -E "^  (quantize|dequant|e2e|pinned|register)" "$OUT/bench.log"
fi
[ -f "$OUT/bench_verify.log" ] && { echo "---------------- fused verify pass (bench_verify) ----------------"; tail -n 14 "$OUT/bench_verify.log"; }
grep -s -E "FAILED|MISMATCH" "$OUT/ctest_gpu.log" "$OUT/cuda_quant_test.log" "$OUT/bench.log" | head -20
echo "gpu_check: $([ "$FAIL" = 0 ] && echo PASS || echo FAIL)"
exit "$FAIL"
