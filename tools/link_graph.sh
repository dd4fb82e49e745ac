#!/usr/bin/env bash
# Prints the link edges between qpack's libraries as CMake configured them
# (docs/architecture.md draws the intended tree):
#   tools/link_graph.sh [BUILD_DIR]      # default: build
# Each line: "qpack_X -> qpack_Y (public|private|interface)".
set -euo pipefail
BUILD=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --graphviz="$tmp/g.dot" "$BUILD" > /dev/null
grep -E '^ *"node[0-9]+" -> ' "$tmp/g.dot" |
  sed -E -e 's/.*style = ([a-z]+).*\/\/ (.*) -> (.*)$/\2 \3 \1/' -e 's/.*"  \/\/ (.*) -> (.*)$/\1 \2 solid/' |
  awk '$1 ~ /^qpack_(spec|format|kernels|converter|verify)$/ && $2 ~ /^qpack_(spec|format|kernels|converter|verify)$/ {
         kind = ($3 == "solid") ? "public" : ($3 == "dotted") ? "private" : "interface";
         print $1 " -> " $2 " (" kind ")" }' | sort -u
