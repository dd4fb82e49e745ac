// What the reader and the writer of the container share: the header's
// layout, and which sections a tensor has. The reader is container_read.cpp,
// the writer container_write.cpp, the codecs section_codec.cpp.
#include "qpack/format/container.hpp"

#include <algorithm>
#include <cstring>

#include "qpack/format/checksum.hpp"
#include "qpack/format/endian.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

const char* codec_name(Codec c) { return c == Codec::Zstd ? "zstd" : "none"; }

// ===================================================================== header

namespace {

// Where each field is (docs/format.md §2).
constexpr size_t kAtMagic = 0;
constexpr size_t kAtVersionMajor = 8;
constexpr size_t kAtVersionMinor = 10;
constexpr size_t kAtHeaderSize = 12;
constexpr size_t kAtManifestOffset = 16;
constexpr size_t kAtManifestSize = 24;
constexpr size_t kAtManifestXxh3 = 32;
constexpr size_t kAtFileSize = 40;
constexpr size_t kAtReserved = 48;
constexpr size_t kAtHeaderXxh3 = 56;  // the checksum covers the bytes before it

static_assert(kAtHeaderXxh3 + 8 == QpackHeader::kSize, "the header checksum ends the header");

}  // namespace

void QpackHeader::encode(uint8_t* out) const {
  std::memcpy(out + kAtMagic, magic.data(), magic.size());
  store_le16(out + kAtVersionMajor, version_major);
  store_le16(out + kAtVersionMinor, version_minor);
  store_le32(out + kAtHeaderSize, header_size);
  store_le64(out + kAtManifestOffset, manifest_offset);
  store_le64(out + kAtManifestSize, manifest_size);
  store_le64(out + kAtManifestXxh3, manifest_xxh3);
  store_le64(out + kAtFileSize, file_size);
  store_le64(out + kAtReserved, reserved);
  store_le64(out + kAtHeaderXxh3, header_xxh3);
}

uint64_t QpackHeader::checksum() const {
  uint8_t h[kSize];
  encode(h);
  return checksum64(h, kAtHeaderXxh3);
}

QpackHeader QpackHeader::load(const uint8_t* in) {
  QpackHeader h;
  std::memcpy(h.magic.data(), in + kAtMagic, h.magic.size());
  h.version_major = load_le16(in + kAtVersionMajor);
  h.version_minor = load_le16(in + kAtVersionMinor);
  h.header_size = load_le32(in + kAtHeaderSize);
  h.manifest_offset = load_le64(in + kAtManifestOffset);
  h.manifest_size = load_le64(in + kAtManifestSize);
  h.manifest_xxh3 = load_le64(in + kAtManifestXxh3);
  h.file_size = load_le64(in + kAtFileSize);
  h.reserved = load_le64(in + kAtReserved);
  h.header_xxh3 = load_le64(in + kAtHeaderXxh3);
  return h;
}

QpackHeader QpackHeader::decode(const uint8_t* data, uint64_t size, const std::string& file) {
  // Step 1: a whole header that starts with the magic.
  if (size < kSize) {
    const size_t n = size_t(std::min<uint64_t>(size, kQpackMagic.size()));
    if (n == 0 || std::memcmp(data, kQpackMagic.data(), n) != 0)
      throw Error(ErrorCode::BadMagic, file, "", "not a .qpack file (bad magic)");
    throw Error(
        ErrorCode::Truncated, file, "",
        "file is " + std::to_string(size) + " bytes, shorter than the 64-byte .qpack header");
  }
  if (std::memcmp(data, kQpackMagic.data(), kQpackMagic.size()) != 0)
    throw Error(ErrorCode::BadMagic, file, "", "not a .qpack file (bad magic)");
  const QpackHeader h = load(data);
  // Step 2: the major version, before anything it might lay out differently.
  if (h.version_major < kQpackVersionMajor || h.version_major > kQpackVersionMajorMax)
    throw Error(ErrorCode::UnsupportedVersion, file, "",
                "format version " + std::to_string(h.version_major) + "." +
                    std::to_string(h.version_minor) + "; this reader reads versions " +
                    std::to_string(kQpackVersionMajor) + ".x to " +
                    std::to_string(kQpackVersionMajorMax) + ".x");
  // Step 3: the header checksum, then header_size.
  const uint64_t actual = h.checksum();
  if (h.header_xxh3 != actual)
    throw Error(ErrorCode::HeaderChecksumMismatch, file, "",
                "header checksum " + checksum_to_hex(h.header_xxh3) +
                    " does not match its bytes (" + checksum_to_hex(actual) +
                    "): the header is corrupt");
  if (h.header_size != kSize)
    throw Error(
        ErrorCode::UnsupportedVersion, file, "",
        "header_size " + std::to_string(h.header_size) + "; version 1 headers are 64 bytes");
  // Step 4: the file is as long as the header says.
  if (h.file_size != size)
    throw Error(ErrorCode::FileSizeMismatch, file, "",
                "file is " + std::to_string(size) + " bytes but its header says " +
                    std::to_string(h.file_size) +
                    (size < h.file_size ? " (truncated?)" : " (bytes appended?)"));
  return h;
}

// ==================================================================== tensors

const char* section_name(SectionKind k) {
  switch (k) {
    case SectionKind::Data:
      return "data";
    case SectionKind::Codes:
      return "codes";
    case SectionKind::Scales:
      return "scales";
    case SectionKind::Zeros:
      return "zeros";
  }
  return "section";
}

uint64_t QpackTensor::source_bytes() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);
  return n * uint64_t(dtype_bits(dtype)) / 8;
}

uint64_t QpackTensor::stored_bytes() const {
  uint64_t n = 0;
  for (const Section* s : {&codes, &scales, &zeros, &data})
    if (s->present) n += s->size;
  return n;
}

std::vector<TensorSection> QpackTensor::sections() const {
  const auto entry = [this](SectionKind k, uint64_t raw_size) {
    return TensorSection{k, section_name(k), &section(k), raw_size};
  };
  if (!quantized) return {entry(SectionKind::Data, source_bytes())};
  const uint64_t params = layout.params_bytes(scheme.scale_dtype);
  std::vector<TensorSection> out = {entry(SectionKind::Codes, layout.codes_bytes()),
                                    entry(SectionKind::Scales, params)};
  if (!scheme.symmetric) out.push_back(entry(SectionKind::Zeros, params));
  return out;
}

Section& QpackTensor::section(SectionKind k) {
  return const_cast<Section&>(static_cast<const QpackTensor*>(this)->section(k));
}

const Section& QpackTensor::section(SectionKind k) const {
  switch (k) {
    case SectionKind::Codes:
      return codes;
    case SectionKind::Scales:
      return scales;
    case SectionKind::Zeros:
      return zeros;
    case SectionKind::Data:
      break;
  }
  return data;
}

}  // namespace qpack
