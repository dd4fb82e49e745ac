// libFuzzer target: SafetensorsFile::parse_header over arbitrary bytes.
#include <map>
#include <string>
#include <vector>

#include "fuzz/fuzz_entry.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/safetensors.hpp"

namespace qpack::fuzz {

int safetensors_header(const uint8_t* data, size_t size) {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;
  try {
    SafetensorsFile::parse_header(data, size, "fuzz.safetensors", &tensors, &metadata, &data_start);
  } catch (const Error&) {
    return 0;
  }
  // Accepted: the tensors must tile the data region exactly, in offset order.
  if (data_start < 8 || data_start > size) __builtin_trap();
  uint64_t expected = 0;
  for (const TensorInfo& t : tensors) {
    if (t.begin != expected || t.end < t.begin) __builtin_trap();
    expected = t.end;
    uint64_t bits = t.num_elements() * uint64_t(dtype_bits(t.dtype));
    if (bits / 8 != t.nbytes()) __builtin_trap();
    // Touch the first and last byte: out of bounds shows up under ASan.
    if (t.nbytes() > 0) {
      volatile uint8_t sink = data[data_start + t.begin] ^ data[data_start + t.end - 1];
      (void)sink;
    }
  }
  if (data_start + expected != size) __builtin_trap();
  return 0;
}

}  // namespace qpack::fuzz

#ifndef QPACK_FUZZ_REPLAY
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qpack::fuzz::safetensors_header(data, size);
}
#endif
