// One error type for the whole library: every failure names the file, the
// tensor (when there is one) and the reason, and carries a code that tests
// and the CLI can match on. Libraries throw; only the CLI turns errors into
// exit codes.
#pragma once

#include <stdexcept>
#include <string>

namespace qpack {

enum class ErrorCode {
  // usage / arguments
  InvalidArgument,
  // I/O
  Io,
  DiskFull,
  OutputExists,
  // safetensors
  Truncated,
  HeaderTooLarge,
  BadJson,
  BadHeader,
  UnknownDtype,
  ShapeMismatch,
  SizeOverflow,  // prod(shape) x bits overflows 64 bits
  OffsetOutOfRange,
  Overlap,
  Hole,
  DataNotCovered,  // bytes after the last tensor
  DuplicateName,
  BadMetadata,
  BadIndex,
  IndexMissingFile,
  IndexMissingTensor,
  IndexUnlistedTensor,  // a shard holds a tensor the index does not list
  // .qpack container
  BadMagic,
  UnsupportedVersion,
  HeaderChecksumMismatch,
  FileSizeMismatch,  // the file is not as long as its header says
  ManifestChecksumMismatch,
  BadManifestJson,
  BadManifest,
  ManifestMismatch,
  SectionOutOfRange,
  SectionOverlap,
  SectionMisaligned,
  ChecksumMismatch,
  BadCodec,
  Decompress,
  // numerics
  NonFinite,
  RangeOverflow,
  UnsupportedScheme,
  UnsupportedDtype,
  NothingToQuantize,  // a conversion that would quantize no tensor, where one must
  // devices
  NoDevice,
  Cuda,
  // verify
  SourceMismatch,
  // GGUF (docs/gguf.md)
  GgufTruncated,  // the header, a key or a tensor info runs past the end
  GgufBadMagic,
  GgufUnsupportedVersion,
  GgufBigEndian,
  GgufBadCount,         // tensor or key count larger than the bytes left could hold
  GgufBadStringLength,  // a string length runs past the end
  GgufBadKey,
  GgufDuplicateKey,
  GgufBadValueType,
  GgufBadArray,  // an array count runs past the end
  GgufArrayTooDeep,
  GgufBadBool,
  GgufBadAlignment,
  GgufBadTensorName,
  GgufDuplicateTensor,
  GgufBadDims,
  GgufUnknownTensorType,
  GgufBadRowSize,
  GgufSizeOverflow,
  GgufMisalignedOffset,
  GgufTensorOutOfRange,
  GgufTensorOverlap,
  GgufWrongDataSize,  // writer: a tensor's bytes are not its declared size
  // Hugging Face quantized model folders (docs/hf-reading.md)
  HfBadConfig,    // quantization_config / quantize_config.json missing, malformed, contradictory
  HfUnsupported,  // a valid setting qpack does not read (method, format, bits, strategy, act order)
  HfBadTensor,    // a quantized Linear's tensors: missing, extra, wrong dtype or shape
  HfBadValue,     // stored values the format forbids: zero-points out of range, g_idx not k/G
  // .qpack shard sets and qpack merge (docs/format.md section 11)
  SetBadIndex,       // the set's index is not valid JSON or lacks a key, or names a bad file
  SetMissingShard,   // a shard the index lists is not there
  SetExtraShard,     // a shard of the set beside the index that the index does not list
  SetSwappedShard,   // a shard file holds the bytes of another shard of the set
  SetShardMismatch,  // a shard file is not the one the index lists (checksum, size, set)
  SetStaleIndex,     // the shards agree among themselves, but not with the index
  PartMismatch,      // merge: parts made from different sources or options
  PartMissing,       // merge: a part of the set is not among those given
  PartDuplicate,     // merge: the same part given twice
  Internal,
};

const char* error_code_name(ErrorCode code);

// Exit codes shared by every subcommand (documented in README and --help).
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,
  kExitUsage = 2,
  kExitBadInput = 3,     // malformed or unsupported input, numeric problems
  kExitIntegrity = 4,    // checksum or manifest/section disagreement in a .qpack
  kExitIo = 5,           // cannot read or write, disk full, output exists
  kExitNoDevice = 6,     // CUDA requested but unavailable, or a CUDA failure
  kExitGateFailed = 10,  // verify: a threshold did not hold
};

int exit_code_for(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string file, std::string tensor, std::string reason);

  ErrorCode code() const noexcept { return code_; }
  const std::string& file() const noexcept { return file_; }
  const std::string& tensor() const noexcept { return tensor_; }
  const std::string& reason() const noexcept { return reason_; }

  // This error naming `file` and `tensor` where it names none: for a caller
  // that knows the context a lower layer (make_layout, a quantizer) did not.
  Error with_context(const std::string& file, const std::string& tensor) const;

 private:
  ErrorCode code_;
  std::string file_, tensor_, reason_;
};

// Checked arithmetic for sizes read from untrusted files.
bool mul_overflows_u64(unsigned long long a, unsigned long long b, unsigned long long* out);
bool add_overflows_u64(unsigned long long a, unsigned long long b, unsigned long long* out);

}  // namespace qpack
