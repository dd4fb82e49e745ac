// The section codecs of docs/format.md §5, both ways: the writer's zstd
// compression, and the reader's decode of a stored section (a view of the
// stored bytes for codec none, a bounded streaming zstd decode otherwise).
#pragma once

#include <zstd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "qpack/format/container.hpp"

namespace qpack::detail {

// One zstd frame per section at one level; keeps its context and output
// buffer from one section to the next.
class ZstdSectionEncoder {
 public:
  explicit ZstdSectionEncoder(int level) : level_(level) {}
  ~ZstdSectionEncoder();
  ZstdSectionEncoder(const ZstdSectionEncoder&) = delete;
  ZstdSectionEncoder& operator=(const ZstdSectionEncoder&) = delete;

  // Compresses the `size` bytes at `data` into one frame that declares its
  // content size (no zstd checksum). Returns the frame, valid until the next
  // call, and sets *frame_size; or returns nullptr when the frame would not
  // be smaller than the input, which is then stored as is. Throws
  // Error(Internal) naming `file` and `tensor`.
  const uint8_t* compress(const void* data, uint64_t size, uint64_t* frame_size,
                          const std::string& file, const std::string& tensor);

 private:
  int level_;
  ZSTD_CCtx* cctx_ = nullptr;
  std::vector<uint8_t> buf_;
};

// The decoded bytes of section `s`, whose s.size stored bytes are at
// `stored` (their checksum already checked): a view of them for codec none,
// else their zstd decode, checked as docs/format.md §7 step 12 says. Throws
// Error(Decompress) naming `file`, `tensor` and `section`.
SectionBytes decode_section(const uint8_t* stored, const Section& s, const std::string& file,
                            const std::string& tensor, const char* section);

}  // namespace qpack::detail
