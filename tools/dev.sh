#!/usr/bin/env bash
# qpack's one entry point for set-up: installs what is missing (Debian
# packages only), configures, builds, then runs the demo or the test suite.
#
#   tools/dev.sh demo    # build, generate a model, convert it, verify it, print the report
#   tools/dev.sh test    # build, run the whole test suite (what CI runs)
#   tools/dev.sh build   # build only
#   tools/dev.sh deps    # install missing packages only
#
# Environment: BUILD_DIR (default build), QPACK_ENABLE_CUDA (ON when nvcc is
# found), JOBS (default: all cores). With CI set, warnings are errors.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

deps() {
  local pkgs=(cmake g++ make pkg-config python3 clang-format-14 nlohmann-json3-dev libcli11-dev libzstd-dev libgtest-dev libxxhash-dev)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Test-only Python modules: gguf-py (llama.cpp's own reader) and numpy for
  # the GGUF cross-checks. Best effort: without them those tests skip.
  if ! python3 -c "import gguf, numpy" >/dev/null 2>&1; then
    say "installing the test-only Python modules gguf, numpy (pip)"
    python3 -m pip install -q gguf numpy >/dev/null 2>&1 ||
      python3 -m pip install -q --user --break-system-packages gguf numpy >/dev/null 2>&1 ||
      say "pip could not install gguf/numpy: the gguf-py cross-checks will skip"
  fi
}

cuda_flag() {
  if [ -n "${QPACK_ENABLE_CUDA:-}" ]; then
    echo "$QPACK_ENABLE_CUDA"
  elif command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
    echo ON
  else
    say "nvcc not found: building without CUDA (the CPU path is numerically identical)"
    echo OFF
  fi
}

build() {
  deps
  say "configuring ($BUILD_DIR)"
  # CI holds the build at zero warnings (the ci preset's setting).
  local werror=OFF
  [ -n "${CI:-}" ] && [ "${CI}" != 0 ] && [ "${CI}" != false ] && werror=ON
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQPACK_ENABLE_CUDA="$(cuda_flag)" \
    -DQPACK_WARNINGS_AS_ERRORS="$werror" >/dev/null
  say "building with $JOBS jobs"
  cmake --build "$BUILD_DIR" -j "$JOBS"
}

demo() {
  build
  local d="$BUILD_DIR/demo" q="$BUILD_DIR/tools/qpack"
  rm -rf "$d" && mkdir -p "$d/model"
  say "generating a deterministic Llama-shaped checkpoint (F16, 2 shards)"
  "$BUILD_DIR/tools/qpack-testgen" llama "$d/model" --hidden 512 --intermediate 1376 --layers 4 \
    --vocab 4096 --shard-bytes 24000000
  say "qpack convert (4-bit, group 64, axis 0, asymmetric: FlexLLMGen's defaults)"
  "$q" convert "$d/model" "$d/model.qpack" --device auto
  say "qpack inspect --check"
  "$q" inspect --check "$d/model.qpack" | tail -n 3
  say "qpack verify (gate: relative error <= 0.15, SNR >= 17 dB)"
  "$q" verify "$d/model.qpack" --source "$d/model" --device auto --max-rel-error 0.15 --min-snr 17 \
    --html "$d/report.html"
  say "report: $d/report.html"
}

test_suite() {
  build
  say "running the test suite"
  cd "$BUILD_DIR"
  ctest --output-on-failure -j "$JOBS" --timeout 900
}

case "${1:-}" in
  deps) deps ;;
  build) build ;;
  demo) demo ;;
  test) test_suite ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
