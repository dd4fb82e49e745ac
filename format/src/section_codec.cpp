#include "section_codec.hpp"

#include <algorithm>
#include <memory>

#include "qpack/format/error.hpp"

namespace qpack::detail {

namespace {

// Largest decoded/stored ratio a zstd frame can reach: every block has a
// 3-byte header and, as an RLE block, at least one byte of payload, and
// decodes to at most 128 KiB. Bounding raw_size by it keeps a forged frame
// header from making the reader allocate more than the format allows.
constexpr uint64_t kZstdMaxExpansion = 32768;

}  // namespace

ZstdSectionEncoder::~ZstdSectionEncoder() {
  if (cctx_) ZSTD_freeCCtx(cctx_);
}

const uint8_t* ZstdSectionEncoder::compress(const void* data, uint64_t size, uint64_t* frame_size,
                                            const std::string& file, const std::string& tensor) {
  if (!cctx_) {
    cctx_ = ZSTD_createCCtx();
    if (!cctx_) throw Error(ErrorCode::Internal, file, tensor, "cannot create a zstd context");
  }
  const size_t bound = ZSTD_compressBound(size_t(size));
  if (buf_.size() < bound) buf_.resize(bound);
  const size_t n = ZSTD_compressCCtx(cctx_, buf_.data(), bound, data, size_t(size), level_);
  if (ZSTD_isError(n))
    throw Error(ErrorCode::Internal, file, tensor, std::string("zstd: ") + ZSTD_getErrorName(n));
  if (n >= size) return nullptr;  // compression does not pay
  *frame_size = n;
  return buf_.data();
}

namespace {

// Error(Decompress) naming the file, tensor and section.
struct DecodeFailure {
  const std::string& file;
  const std::string& tensor;
  const char* section;
  Error operator()(const std::string& why) const {
    return Error(ErrorCode::Decompress, file, tensor,
                 std::string("section '") + section + "': " + why);
  }
};

// docs/format.md §5: the stored bytes are exactly one frame that declares
// its content size, raw_size, and raw_size is within what the frame can
// decode to.
void check_frame(const uint8_t* p, const Section& s, const DecodeFailure& fail) {
  const size_t frame = ZSTD_findFrameCompressedSize(p, size_t(s.size));
  if (ZSTD_isError(frame)) throw fail(std::string("not a zstd frame: ") + ZSTD_getErrorName(frame));
  if (frame != s.size) throw fail("stored bytes are not exactly one zstd frame");
  const unsigned long long content = ZSTD_getFrameContentSize(p, size_t(s.size));
  if (content == ZSTD_CONTENTSIZE_ERROR) throw fail("bad zstd frame header");
  if (content == ZSTD_CONTENTSIZE_UNKNOWN)
    throw fail("zstd frame does not declare its content size");
  if (content != s.raw_size)
    throw fail("zstd frame holds " + std::to_string(content) + " bytes, raw_size is " +
               std::to_string(s.raw_size));
  unsigned long long limit;
  if (!mul_overflows_u64(s.size, kZstdMaxExpansion, &limit) && s.raw_size > limit)
    throw fail("raw_size " + std::to_string(s.raw_size) + " cannot come from a " +
               std::to_string(s.size) + "-byte zstd frame");
}

// Decodes the frame in chunks, so that memory grows with what the frame
// really holds, not with what its header claims; it must decode to exactly
// raw_size bytes.
std::vector<uint8_t> stream_decode(const uint8_t* p, const Section& s, const DecodeFailure& fail) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx)
    throw Error(ErrorCode::Internal, fail.file, fail.tensor, "cannot create a zstd context");
  std::vector<uint8_t> out;
  out.reserve(size_t(s.raw_size));
  ZSTD_inBuffer in{p, size_t(s.size), 0};
  constexpr size_t kChunk = size_t(1) << 22;
  size_t ret = 1;
  while (out.size() < s.raw_size) {
    const size_t have = out.size();
    const size_t in_before = in.pos;
    const size_t grow = size_t(std::min<uint64_t>(kChunk, s.raw_size - have));
    out.resize(have + grow);
    ZSTD_outBuffer ob{out.data() + have, grow, 0};
    ret = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(ret)) throw fail(std::string("zstd: ") + ZSTD_getErrorName(ret));
    out.resize(have + ob.pos);
    if (ob.pos == 0 && ret != 0 && (in.pos == in.size || in.pos == in_before))
      throw fail("zstd frame ends early");
    if (ret == 0) break;
  }
  if (out.size() != s.raw_size)
    throw fail("zstd frame decoded to " + std::to_string(out.size()) + " bytes, raw_size is " +
               std::to_string(s.raw_size));
  if (ret != 0) {
    // All raw_size bytes are out; the frame must end here too.
    uint8_t extra;
    ZSTD_outBuffer ob{&extra, 1, 0};
    ret = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(ret)) throw fail(std::string("zstd: ") + ZSTD_getErrorName(ret));
    if (ob.pos != 0 || ret != 0) throw fail("zstd frame holds more than raw_size bytes");
  }
  return out;
}

}  // namespace

SectionBytes decode_section(const uint8_t* p, const Section& s, const std::string& file,
                            const std::string& tensor, const char* sname) {
  SectionBytes out;
  if (s.codec == Codec::None) {
    out.data = p;
    out.size = s.size;
    return out;
  }
  const DecodeFailure fail{file, tensor, sname};
  check_frame(p, s, fail);
  out.owned = stream_decode(p, s, fail);
  out.data = out.owned.data();
  out.size = out.owned.size();
  return out;
}

}  // namespace qpack::detail
