#include "qpack/format/error.hpp"

namespace qpack {

const char* error_code_name(ErrorCode code) {
  switch (code) {
#define QPACK_CASE(x) \
  case ErrorCode::x:  \
    return #x;
    QPACK_CASE(InvalidArgument)
    QPACK_CASE(Io)
    QPACK_CASE(DiskFull)
    QPACK_CASE(OutputExists)
    QPACK_CASE(Truncated)
    QPACK_CASE(HeaderTooLarge)
    QPACK_CASE(BadJson)
    QPACK_CASE(BadHeader)
    QPACK_CASE(UnknownDtype)
    QPACK_CASE(ShapeMismatch)
    QPACK_CASE(SizeOverflow)
    QPACK_CASE(OffsetOutOfRange)
    QPACK_CASE(Overlap)
    QPACK_CASE(Hole)
    QPACK_CASE(DataNotCovered)
    QPACK_CASE(DuplicateName)
    QPACK_CASE(BadMetadata)
    QPACK_CASE(BadIndex)
    QPACK_CASE(IndexMissingFile)
    QPACK_CASE(IndexMissingTensor)
    QPACK_CASE(IndexUnlistedTensor)
    QPACK_CASE(BadMagic)
    QPACK_CASE(UnsupportedVersion)
    QPACK_CASE(HeaderChecksumMismatch)
    QPACK_CASE(FileSizeMismatch)
    QPACK_CASE(ManifestChecksumMismatch)
    QPACK_CASE(BadManifestJson)
    QPACK_CASE(BadManifest)
    QPACK_CASE(ManifestMismatch)
    QPACK_CASE(SectionOutOfRange)
    QPACK_CASE(SectionOverlap)
    QPACK_CASE(SectionMisaligned)
    QPACK_CASE(ChecksumMismatch)
    QPACK_CASE(BadCodec)
    QPACK_CASE(Decompress)
    QPACK_CASE(NonFinite)
    QPACK_CASE(RangeOverflow)
    QPACK_CASE(UnsupportedScheme)
    QPACK_CASE(UnsupportedDtype)
    QPACK_CASE(NothingToQuantize)
    QPACK_CASE(NoDevice)
    QPACK_CASE(Cuda)
    QPACK_CASE(SourceMismatch)
    QPACK_CASE(GgufTruncated)
    QPACK_CASE(GgufBadMagic)
    QPACK_CASE(GgufUnsupportedVersion)
    QPACK_CASE(GgufBigEndian)
    QPACK_CASE(GgufBadCount)
    QPACK_CASE(GgufBadStringLength)
    QPACK_CASE(GgufBadKey)
    QPACK_CASE(GgufDuplicateKey)
    QPACK_CASE(GgufBadValueType)
    QPACK_CASE(GgufBadArray)
    QPACK_CASE(GgufArrayTooDeep)
    QPACK_CASE(GgufBadBool)
    QPACK_CASE(GgufBadAlignment)
    QPACK_CASE(GgufBadTensorName)
    QPACK_CASE(GgufDuplicateTensor)
    QPACK_CASE(GgufBadDims)
    QPACK_CASE(GgufUnknownTensorType)
    QPACK_CASE(GgufBadRowSize)
    QPACK_CASE(GgufSizeOverflow)
    QPACK_CASE(GgufMisalignedOffset)
    QPACK_CASE(GgufTensorOutOfRange)
    QPACK_CASE(GgufTensorOverlap)
    QPACK_CASE(GgufWrongDataSize)
    QPACK_CASE(HfBadConfig)
    QPACK_CASE(HfUnsupported)
    QPACK_CASE(HfBadTensor)
    QPACK_CASE(HfBadValue)
    QPACK_CASE(SetBadIndex)
    QPACK_CASE(SetMissingShard)
    QPACK_CASE(SetExtraShard)
    QPACK_CASE(SetSwappedShard)
    QPACK_CASE(SetShardMismatch)
    QPACK_CASE(SetStaleIndex)
    QPACK_CASE(PartMismatch)
    QPACK_CASE(PartMissing)
    QPACK_CASE(PartDuplicate)
    QPACK_CASE(Internal)
#undef QPACK_CASE
  }
  return "Unknown";
}

int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument:
      return kExitUsage;
    case ErrorCode::Io:
    case ErrorCode::DiskFull:
    case ErrorCode::OutputExists:
      return kExitIo;
    case ErrorCode::ManifestMismatch:
    case ErrorCode::SectionOutOfRange:
    case ErrorCode::SectionOverlap:
    case ErrorCode::SectionMisaligned:
    case ErrorCode::ChecksumMismatch:
    case ErrorCode::Decompress:
    case ErrorCode::BadManifest:
    case ErrorCode::BadManifestJson:
    case ErrorCode::HeaderChecksumMismatch:
    case ErrorCode::ManifestChecksumMismatch:
    case ErrorCode::FileSizeMismatch:
    case ErrorCode::BadMagic:
    case ErrorCode::SourceMismatch:
    case ErrorCode::SetBadIndex:
    case ErrorCode::SetMissingShard:
    case ErrorCode::SetExtraShard:
    case ErrorCode::SetSwappedShard:
    case ErrorCode::SetShardMismatch:
    case ErrorCode::SetStaleIndex:
      return kExitIntegrity;
    case ErrorCode::NoDevice:
    case ErrorCode::Cuda:
      return kExitNoDevice;
    case ErrorCode::Internal:
      return kExitInternal;
    default:
      return kExitBadInput;
  }
}

static std::string compose(ErrorCode code, const std::string& file, const std::string& tensor,
                           const std::string& reason) {
  std::string m;
  if (!file.empty()) m += file + ": ";
  if (!tensor.empty()) m += "tensor '" + tensor + "': ";
  m += reason;
  m += " [";
  m += error_code_name(code);
  m += "]";
  return m;
}

Error::Error(ErrorCode code, std::string file, std::string tensor, std::string reason)
    : std::runtime_error(compose(code, file, tensor, reason)),
      code_(code),
      file_(std::move(file)),
      tensor_(std::move(tensor)),
      reason_(std::move(reason)) {}

Error Error::with_context(const std::string& file, const std::string& tensor) const {
  return Error(code_, file_.empty() ? file : file_, tensor_.empty() ? tensor : tensor_, reason_);
}

bool mul_overflows_u64(unsigned long long a, unsigned long long b, unsigned long long* out) {
  return __builtin_mul_overflow(a, b, out);
}
bool add_overflows_u64(unsigned long long a, unsigned long long b, unsigned long long* out) {
  return __builtin_add_overflow(a, b, out);
}

}  // namespace qpack
