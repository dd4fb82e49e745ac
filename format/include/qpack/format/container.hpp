// The .qpack container, version 1 (docs/format.md is normative).
//
//   [64-byte header][section][pad][section][pad]...[manifest JSON]
//
// Sections are 64-byte aligned so a reader can mmap one and upload it to a
// GPU as is. Scales and zero-points are sidecar sections of their own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "qpack/format/io.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

constexpr std::array<uint8_t, 8> kQpackMagic = {0x89, 'Q', 'P', 'K', 0x0D, 0x0A, 0x1A, 0x0A};
// Version 1.0: every file without integer zero-points. Version 2.0 is 1.0
// plus quant.zero_point (docs/format.md §3.1), written exactly when a tensor
// has integer zero-points, so that 1.x readers, which ignore unknown keys and
// would decode such codes with the float rule, refuse the file instead. The
// header is laid out the same in both; this reader reads both.
constexpr uint16_t kQpackVersionMajor = 1;
constexpr uint16_t kQpackVersionMajorIntegerZero = 2;
// Version 3.0 is 2.0 plus quant.two_level (docs/format.md §3.1), written
// exactly when a tensor has two-level scales: its scales and zeros sections
// hold 6-bit codes and super-block values that a 2.x reader would read as
// scale-dtype values (quantization.md §T5), so 2.x readers refuse the file.
constexpr uint16_t kQpackVersionMajorTwoLevel = 3;
constexpr uint16_t kQpackVersionMajorMax = 3;
constexpr uint16_t kQpackVersionMinor = 0;
// Minor version 1 adds quant.method (docs/format.md §3.1), written when a
// tensor's parameters come from a method other than RTN: the codes decode as
// before, so an older reader of the same major may ignore it.
constexpr uint16_t kQpackVersionMinorMethod = 1;
constexpr uint32_t kQpackHeaderSize = 64;
constexpr uint64_t kQpackAlignment = 64;
constexpr uint64_t kQpackMaxManifest = 1ull << 30;

// The fixed header at offset 0 (docs/format.md §2), one member per field.
// encode() and load() are the only code that knows where each field is: the
// writer, the reader, the tests and the fuzzer all go through them.
struct QpackHeader {
  static constexpr size_t kSize = kQpackHeaderSize;

  std::array<uint8_t, 8> magic = kQpackMagic;
  uint16_t version_major = kQpackVersionMajor;
  uint16_t version_minor = kQpackVersionMinor;
  uint32_t header_size = kQpackHeaderSize;
  uint64_t manifest_offset = 0;
  uint64_t manifest_size = 0;
  uint64_t manifest_xxh3 = 0;  // XXH3-64 of the manifest bytes
  uint64_t file_size = 0;
  uint64_t reserved = 0;
  uint64_t header_xxh3 = 0;  // XXH3-64 of header bytes 0 ... 55: see seal()

  // Writes the kSize bytes at `out`, every field as it is (header_xxh3 too,
  // so that a test can write a stale one).
  void encode(uint8_t* out) const;
  // The XXH3-64 of bytes 0 ... 55 of what encode() writes.
  uint64_t checksum() const;
  // Sets header_xxh3 to checksum(): what a writer does last.
  void seal() { header_xxh3 = checksum(); }

  // The fields of the kSize bytes at `in`, checking nothing (for code that
  // patches headers: tests, the fuzzer's repair).
  static QpackHeader load(const uint8_t* in);
  // The header of the `size` bytes at `data` (a whole file), checked as
  // docs/format.md §7 steps 1-4 say: length and magic, major version, header
  // checksum and header_size, file_size. Throws Error naming `file`.
  static QpackHeader decode(const uint8_t* data, uint64_t size, const std::string& file);
};

enum class Codec : uint8_t { None, Zstd };
const char* codec_name(Codec c);

struct Section {
  bool present = false;
  uint64_t offset = 0;    // from the start of the file
  uint64_t size = 0;      // stored bytes
  uint64_t raw_size = 0;  // bytes after decoding
  Codec codec = Codec::None;
  uint64_t checksum = 0;  // XXH3-64 of the stored bytes
  uint32_t shard = 0;     // in a shard set (QpackFile::is_set): the shard file that holds it
};

// A tensor's sections, by their keys in the manifest.
enum class SectionKind : uint8_t { Data, Codes, Scales, Zeros };
const char* section_name(SectionKind k);  // "data", "codes", "scales", "zeros"

// One section a tensor has: which, its manifest entry, and the decoded size
// that the tensor's shape and scheme imply (docs/format.md §3.2).
struct TensorSection {
  SectionKind kind;
  const char* name;        // section_name(kind)
  const Section* section;  // in the QpackTensor it came from
  uint64_t raw_size;
};

struct QpackTensor {
  std::string name;
  DType dtype = DType::F32;  // the source dtype
  std::vector<int64_t> shape;
  bool quantized = false;
  QuantScheme scheme;             // resolved: group_size > 0, axis >= 0
  GroupLayout layout;             // quantized only
  Section codes, scales, zeros;   // quantized (zeros: asymmetric only)
  Section data;                   // raw (kept) tensors
  uint64_t source_bytes() const;  // bytes in the source dtype
  uint64_t stored_bytes() const;  // bytes of its sections in the file
  // The sections it has, in file order: data (raw), or codes, scales and,
  // when asymmetric, zeros (quantized). The one place that says which
  // sections a tensor has and how large each one decodes.
  std::vector<TensorSection> sections() const;
  Section& section(SectionKind k);
  const Section& section(SectionKind k) const;
};

// A section's decoded bytes: a view into the map (codec none) or an owned
// buffer (zstd).
struct SectionBytes {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  std::vector<uint8_t> owned;
};

class QpackFile {
 public:
  // Maps the file and validates header, manifest and section bounds (not the
  // section checksums: read() checks each section as it is read, check_all()
  // checks every one). A shard set (docs/format.md section 11: a folder
  // holding a *.qpack.index.json, the index itself, or a shard the index
  // beside it lists) opens as one file: its tensors in order, its manifest
  // the first shard's with every shard's tensors (qpack/format/qpack_set.hpp).
  static std::unique_ptr<QpackFile> open(const std::string& path);
  // One file only, never a set (a shard on its own, a part to merge).
  static std::unique_ptr<QpackFile> open_file(const std::string& path);
  // The same validation over bytes in memory (fuzzing); `bytes` must outlive it.
  static std::unique_ptr<QpackFile> from_memory(const uint8_t* bytes, uint64_t size,
                                                const std::string& name);

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  uint16_t version_major() const { return major_; }
  uint16_t version_minor() const { return minor_; }
  const std::vector<QpackTensor>& tensors() const { return tensors_; }
  const QpackTensor* find(const std::string& name) const;
  const nlohmann::json& manifest() const { return manifest_; }
  const nlohmann::json& source_metadata() const;
  const nlohmann::json& source_config() const;

  // Verifies the checksum and decodes. Throws ChecksumMismatch / Decompress.
  SectionBytes read(const QpackTensor& t, const Section& s) const;
  // Stored bytes as in the file (no checksum check): for GPU upload paths that
  // verify on their own.
  const uint8_t* stored(const Section& s) const {
    return shards_.empty() ? base_ + s.offset : shards_[s.shard]->stored(s);
  }
  // XXH3-64 of header bytes 0 ... 55 (the header's last field): what a
  // set's index records for each shard.
  uint64_t header_checksum() const { return header_checksum_; }
  // A shard set: its shards, in order (empty for one file).
  bool is_set() const { return !shards_.empty(); }
  const std::vector<std::unique_ptr<QpackFile>>& shards() const { return shards_; }
  void release(const Section& s) const;
  // Reads every section and verifies every checksum and decoded size.
  void check_all() const;

 private:
  void parse();
  std::string path_;
  MappedFile map_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint16_t major_ = 0, minor_ = 0;
  nlohmann::json manifest_;
  std::vector<QpackTensor> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  uint64_t header_checksum_ = 0;
  std::vector<std::unique_ptr<QpackFile>> shards_;
  friend std::unique_ptr<QpackFile> open_qpack_set(const std::string& index_path);
};

// Opens the set of the index at `index_path` (qpack_set.cpp).
std::unique_ptr<QpackFile> open_qpack_set(const std::string& index_path);

struct WriterOptions {
  Codec codec = Codec::None;
  int zstd_level = 3;
  bool overwrite = false;
  std::string generator = "qpack";
};

// A tensor as QpackWriter records it, for sizing a file before it is written.
struct PlannedQpackTensor {
  std::string name;
  DType dtype = DType::F32;  // the source dtype
  std::vector<int64_t> shape;
  bool quantized = false;
  QuantScheme scheme;  // quantized only; resolved (make_layout) or resolvable
};

// The size of the file QpackWriter writes for `tensors`, added in this order
// after set_source(metadata, config), laid out as the writer lays it out
// (the same manifest text, padding and alignment). Exact when options.codec
// is None. With zstd it is an upper bound: a section is stored compressed
// only when that is smaller, a smaller section never moves a later offset
// up, and "zstd" is as long as "none" in the manifest. `provenance` is what
// set_provenance will be given (null for none); only its serialized length
// matters, so hashes may be placeholders of the same length.
uint64_t planned_qpack_file_size(const std::vector<PlannedQpackTensor>& tensors,
                                 const nlohmann::json& metadata, const nlohmann::json& config,
                                 const nlohmann::json& provenance, const WriterOptions& options);

// Streams sections to a temporary file next to `path`; commit() writes the
// manifest and header, fsyncs and renames. Destroying it uncommitted removes
// the temporary file.
class QpackWriter {
 public:
  QpackWriter(const std::string& path, const WriterOptions& options);
  ~QpackWriter();
  void set_source(nlohmann::json metadata, nlohmann::json config);
  // The manifest's optional "provenance" object (docs/format.md section 3.3);
  // a file written without it has no such key. Must be a JSON object.
  void set_provenance(nlohmann::json provenance);
  // The manifest's "shard" object of a shard or part of a set (docs/format.md
  // section 11); absent unless called.
  void set_shard(nlohmann::json shard);
  // Tensor `index` of `from`, its stored sections copied as they are (codec
  // and checksum kept, each checksum checked on the way) and its manifest
  // entry kept verbatim but for the offsets: qpack merge.
  void add_copied(const QpackFile& from, size_t index);
  void add_raw(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
               const void* data, uint64_t size);
  // `scheme` must be resolved (make_layout); zeros is null for symmetric.
  void add_quantized(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                     const QuantScheme& scheme, const void* codes, const void* scales,
                     const void* zeros);
  uint64_t bytes_written() const;
  void commit();
  // Seconds spent so far in each of the writer's steps (convert --profile):
  // zstd, the sections' checksums (on a second thread for large sections,
  // overlapping the write) and write() itself; commit's manifest, fsync and
  // rename.
  struct Times {
    double compress = 0, checksum = 0, write = 0, commit = 0;
  };
  Times times() const;

 private:
  Section write_section(const std::string& tensor, const void* data, uint64_t size);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qpack
