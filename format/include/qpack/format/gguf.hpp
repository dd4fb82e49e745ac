// GGUF (the llama.cpp / ggml model container), as qpack reads and writes it:
// docs/gguf.md is the byte layout. The reader validates every count, length
// and offset against the bytes that are there (one ErrorCode per rule) and
// works on a memory map without copying tensor data; the writer streams
// (every tensor declared up front, bytes appended in order) through an
// atomic output file and gives the same bytes for the same input.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qpack/format/io.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

inline constexpr uint32_t kGgufVersion = 3;            // what the writer writes
inline constexpr uint32_t kGgufDefaultAlignment = 32;  // without general.alignment
inline constexpr uint32_t kGgufMaxDims = 4;            // GGML_MAX_DIMS
inline constexpr uint32_t kGgufMaxTensorName = 63;     // ggml's name buffer is 64 with the NUL
inline constexpr uint32_t kGgufMaxArrayNesting = 4;    // arrays of arrays: at most this deep
inline constexpr const char* kGgufAlignmentKey = "general.alignment";

// ggml tensor types (ggml.h's enum ggml_type; the numbers are the file's).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

// A type's block geometry: `block_size` elements take `type_size` bytes.
struct GgmlTypeInfo {
  GgmlType type;
  const char* name;  // "Q4_K"
  uint32_t block_size;
  uint32_t type_size;
};

// nullptr for a number that is no known type (removed ones included).
const GgmlTypeInfo* ggml_type_info(uint32_t type);
// Every known type, in number order.
const std::vector<GgmlTypeInfo>& ggml_types();
const char* ggml_type_name(GgmlType type);
// The safetensors dtype of a type stored element by element (F32, F16, BF16,
// F64, I8, I16, I32, I64); nullopt for the block types, which need decoding.
std::optional<DType> ggml_plain_dtype(GgmlType type);

// GGUF metadata value types (gguf.h's enum gguf_type).
enum class GgufType : uint32_t {
  Uint8 = 0,
  Int8 = 1,
  Uint16 = 2,
  Int16 = 3,
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  Uint64 = 10,
  Int64 = 11,
  Float64 = 12,
};
const char* gguf_type_name(GgufType type);  // "u32", "string", "array", ...
bool gguf_type_known(uint32_t type);
// The fewest bytes a value of `type` takes in a file: its size for the fixed
// types, the length field (8) of a string, the item type and count (12) of
// an array. The reader checks array counts against it before allocating.
uint64_t gguf_type_min_bytes(GgufType type);

// One typed metadata value. Integers keep their value in `u` (unsigned types)
// or `i` (signed types), floats in `f` (a float32 converts to double exactly
// and back), bools in `b`, strings as their bytes, arrays as `items` of
// `array_type` (items of an array of arrays are arrays themselves).
struct GgufValue {
  GgufType type = GgufType::Uint8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string str;
  GgufType array_type = GgufType::Uint8;
  std::vector<GgufValue> items;

  static GgufValue of_u8(uint8_t v);
  static GgufValue of_i8(int8_t v);
  static GgufValue of_u16(uint16_t v);
  static GgufValue of_i16(int16_t v);
  static GgufValue of_u32(uint32_t v);
  static GgufValue of_i32(int32_t v);
  static GgufValue of_u64(uint64_t v);
  static GgufValue of_i64(int64_t v);
  static GgufValue of_f32(float v);
  static GgufValue of_f64(double v);
  static GgufValue of_bool(bool v);
  static GgufValue of_string(std::string v);
  // Every item must be of `item_type`.
  static GgufValue of_array(GgufType item_type, std::vector<GgufValue> items);

  bool operator==(const GgufValue& o) const;
  bool operator!=(const GgufValue& o) const { return !(*this == o); }
};

// The bytes `v` takes as gguf_write encodes it, strings and arrays whole.
uint64_t gguf_value_bytes(const GgufValue& v);

struct GgufKv {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ne[0] is the contiguous axis (numpy's last)
  uint64_t offset = 0;      // relative to the data section
  uint64_t nbytes = 0;      // from ne, the block size and the type size
  uint64_t num_elements() const;
};

// Bytes of `ne` elements in `type`, or an Error: GgufBadRowSize when ne[0] is
// not a multiple of the block size, GgufSizeOverflow when it does not fit.
uint64_t gguf_tensor_nbytes(GgmlType type, const std::vector<int64_t>& ne, const std::string& file,
                            const std::string& tensor);

// What a GGUF header says, validated. Offsets are absolute in the file
// except GgufTensorInfo::offset (relative to data_start).
struct GgufHeader {
  uint32_t version = 0;
  uint32_t alignment = kGgufDefaultAlignment;
  std::vector<GgufKv> metadata;         // in file order
  std::vector<GgufTensorInfo> tensors;  // in file order
  uint64_t data_start = 0;
};

// Parses and validates the header of a GGUF file held in `data` (the whole
// file, `size` bytes). Throws Error (codes Gguf*) naming `path`.
GgufHeader parse_gguf(const uint8_t* data, uint64_t size, const std::string& path);

// True when `path` is a regular file whose first four bytes are "GGUF" (how
// the commands that take either a .qpack or a GGUF tell them apart).
bool has_gguf_magic(const std::string& path);

class GgufFile {
 public:
  // Maps and validates. Throws Error (Io, Gguf*).
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Validates a file already in memory, which the caller keeps alive while
  // this object lives (the fuzzer, tests). Nothing is copied.
  static std::unique_ptr<GgufFile> from_memory(const uint8_t* data, uint64_t size,
                                               const std::string& name);

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  uint32_t version() const { return header_.version; }
  uint32_t alignment() const { return header_.alignment; }
  uint64_t data_start() const { return header_.data_start; }
  const std::vector<GgufKv>& metadata() const { return header_.metadata; }
  const std::vector<GgufTensorInfo>& tensors() const { return header_.tensors; }
  const GgufValue* find_key(const std::string& key) const;
  const GgufTensorInfo* find(const std::string& name) const;
  const uint8_t* tensor_data(const GgufTensorInfo& t) const {
    return data_ + header_.data_start + t.offset;
  }
  // Drops a mapped tensor's resident pages (no-op for from_memory).
  void release(const GgufTensorInfo& t) const;

 private:
  MappedFile file_;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  GgufHeader header_;
  std::unordered_map<std::string, size_t> by_name_, by_key_;
  void index();
};

// A tensor the writer will write: its bytes come later, in declaration order.
struct GgufTensorDecl {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;
};

// Writes a GGUF v3 file: header, metadata in the order given, tensor infos
// in declaration order with offsets packed tight (each padded to the
// alignment, which is `general.alignment` when the metadata holds it, else
// 32), then every tensor's bytes, each followed by zero padding up to the
// alignment. All validation happens in the constructor, with the reader's
// rules and codes, so a file the writer accepts the reader accepts.
class GgufWriter {
 public:
  GgufWriter(const std::string& path, const std::vector<GgufKv>& metadata,
             const std::vector<GgufTensorDecl>& tensors, bool overwrite);
  // Appends bytes of the current tensor (in one piece or several); a piece
  // may not run past the current tensor's end.
  void append(const void* data, uint64_t nbytes);
  // Every tensor complete: fsync and rename onto the final name.
  void commit();
  // Where each declared tensor's data starts, relative to the data section.
  const std::vector<uint64_t>& offsets() const { return offsets_; }
  uint64_t data_start() const { return data_start_; }

 private:
  AtomicOutputFile out_;
  uint32_t alignment_ = kGgufDefaultAlignment;
  std::vector<uint64_t> sizes_, offsets_;
  std::vector<std::string> names_;
  uint64_t data_start_ = 0;
  size_t current_ = 0;    // tensor being written
  uint64_t written_ = 0;  // bytes of it so far
  void finish_tensors_of_size_zero();
};

struct GgufTensorToWrite {
  GgufTensorDecl decl;
  const void* data = nullptr;  // gguf_tensor_nbytes(decl) bytes
};

// Everything at once: GgufWriter over `tensors`, then commit.
void write_gguf(const std::string& path, const std::vector<GgufKv>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, bool overwrite);

}  // namespace qpack
