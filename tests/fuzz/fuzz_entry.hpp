// The fuzz entry points, callable from libFuzzer (LLVMFuzzerTestOneInput in
// each target's file) and from the replay test that runs them under g++.
// Each returns 0; anything other than qpack::Error escaping, or a violated
// invariant (__builtin_trap), is a bug.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qpack::fuzz {

// The whole input is a safetensors file.
int safetensors_header(const uint8_t* data, size_t size);

// Byte 0 is a mode, the rest a .qpack file. Mode bit 0: before parsing, make
// the header's file size, manifest size and both header checksums agree with
// the bytes; bit 1: also recompute every section's xxh3 in the manifest. Lets
// mutations reach manifest, section and zstd validation instead of dying at
// the first checksum.
int qpack_reader(const uint8_t* data, size_t size);

// The whole input is a GGUF file.
int gguf_reader(const uint8_t* data, size_t size);

}  // namespace qpack::fuzz
