// libFuzzer target: GgufFile::from_memory over the whole input, then every
// tensor's bytes and every metadata value. An accepted file must keep the
// reader's promises (tensors inside the file, aligned, sizes from ne).
#include <vector>

#include "fuzz/fuzz_entry.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"

namespace qpack::fuzz {

namespace {

uint64_t walk(const GgufValue& v) {
  uint64_t n = v.str.size() + v.u + uint64_t(v.i);
  for (const GgufValue& item : v.items) {
    if (item.type != v.array_type) __builtin_trap();
    n += walk(item);
  }
  return n;
}

}  // namespace

int gguf_reader(const uint8_t* data, size_t size) {
  // A copy, so that reads past the input are caught by the sanitizer.
  const std::vector<uint8_t> file(data, data + size);
  try {
    const auto f = GgufFile::from_memory(file.data(), file.size(), "fuzz.gguf");
    if (f->alignment() == 0 || (f->alignment() & (f->alignment() - 1)) != 0) __builtin_trap();
    if (f->version() != 2 && f->version() != 3) __builtin_trap();
    for (const GgufTensorInfo& t : f->tensors()) {
      if (t.ne.size() > kGgufMaxDims || t.offset % f->alignment() != 0) __builtin_trap();
      if (f->data_start() + t.offset + t.nbytes > f->file_size()) __builtin_trap();
      if (t.nbytes != gguf_tensor_nbytes(t.type, t.ne, "", "")) __builtin_trap();
      if (f->find(t.name) != &t) __builtin_trap();
      if (t.nbytes > 0) {
        volatile uint8_t sink = f->tensor_data(t)[0] ^ f->tensor_data(t)[t.nbytes - 1];
        (void)sink;
      }
    }
    volatile uint64_t sink = 0;
    for (const GgufKv& kv : f->metadata()) {
      if (f->find_key(kv.key) != &kv.value) __builtin_trap();
      sink = sink + walk(kv.value);
    }
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace qpack::fuzz

#ifndef QPACK_FUZZ_REPLAY
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qpack::fuzz::gguf_reader(data, size);
}
#endif
