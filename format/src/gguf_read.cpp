// The GGUF reader: every count, length and offset is checked against the
// bytes left before it is used, so no input makes it read out of bounds or
// allocate more than the file could describe. docs/gguf.md lists the rules.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "qpack/format/endian.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"

namespace qpack {

namespace {

// Smallest encoding of one metadata entry (key length, value type, a u8),
// and of one tensor info (name length, n_dims, type, offset): the bound a
// count is held to before anything is reserved for it.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  const uint8_t* take(uint64_t n, const std::string& what, const std::string& tensor = "") {
    if (n > left())
      throw Error(ErrorCode::GgufTruncated, path_, tensor,
                  what + " needs " + std::to_string(n) + " bytes at offset " +
                      std::to_string(pos_) + " but the file has " + std::to_string(left()) +
                      " left");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8(const std::string& what, const std::string& t = "") { return *take(1, what, t); }
  uint16_t u16(const std::string& what, const std::string& t = "") {
    return load_le16(take(2, what, t));
  }
  uint32_t u32(const std::string& what, const std::string& t = "") {
    return load_le32(take(4, what, t));
  }
  uint64_t u64(const std::string& what, const std::string& t = "") {
    return load_le64(take(8, what, t));
  }
  std::string str(const std::string& what, const std::string& t = "") {
    const uint64_t n = u64(what + "'s length", t);
    if (n > left())
      throw Error(ErrorCode::GgufBadStringLength, path_, t,
                  what + " is " + std::to_string(n) + " bytes long but only " +
                      std::to_string(left()) + " bytes follow");
    const uint8_t* p = take(n, what, t);
    return std::string(reinterpret_cast<const char*>(p), size_t(n));
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

// Keys are named in messages as tensors are not: "key 'general.name': ...".
std::string key_where(const std::string& key) { return "key '" + key + "'"; }

GgufValue read_value(Cursor& c, GgufType type, const std::string& path, const std::string& key,
                     uint32_t depth) {
  const std::string where = key_where(key);
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::Uint8:
      v.u = c.u8(where);
      break;
    case GgufType::Int8:
      v.i = int8_t(c.u8(where));
      break;
    case GgufType::Uint16:
      v.u = c.u16(where);
      break;
    case GgufType::Int16:
      v.i = int16_t(c.u16(where));
      break;
    case GgufType::Uint32:
      v.u = c.u32(where);
      break;
    case GgufType::Int32:
      v.i = int32_t(c.u32(where));
      break;
    case GgufType::Uint64:
      v.u = c.u64(where);
      break;
    case GgufType::Int64:
      v.i = int64_t(c.u64(where));
      break;
    case GgufType::Float32: {
      const uint32_t bits = c.u32(where);
      float x;
      std::memcpy(&x, &bits, 4);
      v.f = x;
      break;
    }
    case GgufType::Float64: {
      const uint64_t bits = c.u64(where);
      std::memcpy(&v.f, &bits, 8);
      break;
    }
    case GgufType::Bool: {
      const uint8_t b = c.u8(where);
      if (b > 1)
        throw Error(ErrorCode::GgufBadBool, path, "",
                    where + ": a bool is 0 or 1, not " + std::to_string(b));
      v.b = b == 1;
      break;
    }
    case GgufType::String:
      v.str = c.str(where + "'s string");
      break;
    case GgufType::Array: {
      if (depth >= kGgufMaxArrayNesting)
        throw Error(ErrorCode::GgufArrayTooDeep, path, "",
                    where + ": arrays nest deeper than " + std::to_string(kGgufMaxArrayNesting));
      const uint32_t item = c.u32(where + "'s array item type");
      if (!gguf_type_known(item))
        throw Error(ErrorCode::GgufBadValueType, path, "",
                    where + ": unknown array item type " + std::to_string(item));
      v.array_type = GgufType(item);
      const uint64_t n = c.u64(where + "'s array length");
      const uint64_t each = gguf_type_min_bytes(v.array_type);
      if (n > c.left() / each)
        throw Error(ErrorCode::GgufBadArray, path, "",
                    where + ": an array of " + std::to_string(n) + " " +
                        gguf_type_name(v.array_type) + " needs at least " +
                        (n > UINT64_MAX / each ? std::string("2^64") : std::to_string(n * each)) +
                        " bytes but only " + std::to_string(c.left()) + " follow");
      v.items.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k)
        v.items.push_back(read_value(c, v.array_type, path, key, depth + 1));
      break;
    }
  }
  return v;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

GgufHeader parse_gguf(const uint8_t* data, uint64_t size, const std::string& path) {
  Cursor c(data, size, path);
  GgufHeader h;
  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0)
    throw Error(ErrorCode::GgufBadMagic, path, "",
                size < 4 ? "file is shorter than the 4-byte magic \"GGUF\""
                         : "the file does not start with the magic \"GGUF\"");
  c.take(4, "magic");
  h.version = c.u32("the version");
  // A big-endian writer's 3 reads as 0x03000000 here: ggml's test too.
  const uint32_t swapped = __builtin_bswap32(h.version);
  if ((h.version & 0xffff) == 0 && swapped >= 1 && swapped <= 3)
    throw Error(ErrorCode::GgufBigEndian, path, "",
                "version reads as " + std::to_string(h.version) + ": a big-endian GGUF (version " +
                    std::to_string(swapped) + "), which qpack does not read");
  if (h.version == 1)
    throw Error(ErrorCode::GgufUnsupportedVersion, path, "",
                "GGUF version 1 (32-bit counts) is no longer supported; versions 2 and 3 are");
  if (h.version != 2 && h.version != 3)
    throw Error(ErrorCode::GgufUnsupportedVersion, path, "",
                "GGUF version " + std::to_string(h.version) + " is not supported (2 and 3 are)");
  const uint64_t n_tensors = c.u64("the tensor count");
  const uint64_t n_kv = c.u64("the metadata count");
  if (n_kv > c.left() / kMinKvBytes)
    throw Error(ErrorCode::GgufBadCount, path, "",
                "metadata count " + std::to_string(n_kv) + " cannot fit in the " +
                    std::to_string(c.left()) + " bytes left");
  if (n_tensors > c.left() / kMinTensorInfoBytes)
    throw Error(ErrorCode::GgufBadCount, path, "",
                "tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                    std::to_string(c.left()) + " bytes left");

  std::unordered_map<std::string, size_t> keys;
  h.metadata.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    GgufKv kv;
    kv.key = c.str("key " + std::to_string(k));
    if (kv.key.empty())
      throw Error(ErrorCode::GgufBadKey, path, "",
                  "key " + std::to_string(k) + " is the empty string");
    if (!keys.emplace(kv.key, h.metadata.size()).second)
      throw Error(ErrorCode::GgufDuplicateKey, path, "",
                  key_where(kv.key) + " appears twice in the metadata");
    const uint32_t type = c.u32(key_where(kv.key) + "'s value type");
    if (!gguf_type_known(type))
      throw Error(ErrorCode::GgufBadValueType, path, "",
                  key_where(kv.key) + ": unknown value type " + std::to_string(type));
    kv.value = read_value(c, GgufType(type), path, kv.key, 0);
    h.metadata.push_back(std::move(kv));
  }

  if (auto it = keys.find(kGgufAlignmentKey); it != keys.end()) {
    const GgufValue& a = h.metadata[it->second].value;
    if (a.type != GgufType::Uint32)
      throw Error(
          ErrorCode::GgufBadAlignment, path, "",
          std::string(kGgufAlignmentKey) + " is a " + gguf_type_name(a.type) + ", not a u32");
    if (a.u == 0 || (a.u & (a.u - 1)) != 0)
      throw Error(
          ErrorCode::GgufBadAlignment, path, "",
          std::string(kGgufAlignmentKey) + " = " + std::to_string(a.u) + " is not a power of two");
    h.alignment = uint32_t(a.u);
  }

  std::unordered_map<std::string, size_t> names;
  h.tensors.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = c.str("tensor " + std::to_string(k) + "'s name");
    if (t.name.empty())
      throw Error(ErrorCode::GgufBadTensorName, path, "",
                  "tensor " + std::to_string(k) + " has an empty name");
    if (t.name.size() > kGgufMaxTensorName)
      throw Error(ErrorCode::GgufBadTensorName, path, t.name,
                  "the name is " + std::to_string(t.name.size()) +
                      " bytes long; ggml takes at most " + std::to_string(kGgufMaxTensorName));
    if (!names.emplace(t.name, h.tensors.size()).second)
      throw Error(ErrorCode::GgufDuplicateTensor, path, t.name, "two tensors have this name");
    const uint32_t n_dims = c.u32("n_dims", t.name);
    if (n_dims > kGgufMaxDims)
      throw Error(
          ErrorCode::GgufBadDims, path, t.name,
          std::to_string(n_dims) + " dimensions; ggml has at most " + std::to_string(kGgufMaxDims));
    for (uint32_t d = 0; d < n_dims; ++d) {
      const int64_t e = int64_t(c.u64("ne[" + std::to_string(d) + "]", t.name));
      if (e < 0)
        throw Error(ErrorCode::GgufBadDims, path, t.name,
                    "ne[" + std::to_string(d) + "] = " + std::to_string(e) + " is negative");
      t.ne.push_back(e);
    }
    const uint32_t type = c.u32("the ggml type", t.name);
    if (!ggml_type_info(type))
      throw Error(ErrorCode::GgufUnknownTensorType, path, t.name,
                  "unknown ggml type " + std::to_string(type));
    t.type = GgmlType(type);
    t.nbytes = gguf_tensor_nbytes(t.type, t.ne, path, t.name);
    t.offset = c.u64("the data offset", t.name);
    if (t.offset % h.alignment != 0)
      throw Error(ErrorCode::GgufMisalignedOffset, path, t.name,
                  "data offset " + std::to_string(t.offset) +
                      " is not a multiple of the alignment " + std::to_string(h.alignment));
    h.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment; a file
  // without tensors may end before it.
  h.data_start = align_up(c.pos(), h.alignment);
  if (!h.tensors.empty() && h.data_start > size)
    throw Error(ErrorCode::GgufTruncated, path, "",
                "the data section would start at offset " + std::to_string(h.data_start) +
                    ", past the end of the file (" + std::to_string(size) + " bytes)");
  const uint64_t data_size = h.data_start <= size ? size - h.data_start : 0;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : h.tensors) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      throw Error(ErrorCode::GgufTensorOutOfRange, path, t.name,
                  "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
                      ") runs past the end of the data section (" + std::to_string(data_size) +
                      " bytes)");
    by_offset.push_back(&t);
  }
  std::stable_sort(
      by_offset.begin(), by_offset.end(),
      [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  // Sorted by offset, a non-empty tensor overlaps an earlier one exactly
  // when it starts before the end of the last non-empty one before it (empty
  // tensors occupy nothing and overlap nothing).
  const GgufTensorInfo* last = nullptr;
  for (const GgufTensorInfo* t : by_offset) {
    if (t->nbytes == 0) continue;
    if (last && last->offset + last->nbytes > t->offset)
      throw Error(ErrorCode::GgufTensorOverlap, path, t->name,
                  "data at offset " + std::to_string(t->offset) + " overlaps tensor '" +
                      last->name + "' [" + std::to_string(last->offset) + ", " +
                      std::to_string(last->offset + last->nbytes) + ")");
    last = t;
  }
  return h;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  auto f = std::unique_ptr<GgufFile>(new GgufFile());
  f->file_ = MappedFile(path);
  f->path_ = path;
  f->data_ = f->file_.data();
  f->size_ = f->file_.size();
  f->header_ = parse_gguf(f->data_, f->size_, path);
  f->index();
  return f;
}

std::unique_ptr<GgufFile> GgufFile::from_memory(const uint8_t* data, uint64_t size,
                                                const std::string& name) {
  auto f = std::unique_ptr<GgufFile>(new GgufFile());
  f->path_ = name;
  f->data_ = data;
  f->size_ = size;
  f->header_ = parse_gguf(data, size, name);
  f->index();
  return f;
}

void GgufFile::index() {
  for (size_t k = 0; k < header_.tensors.size(); ++k) by_name_[header_.tensors[k].name] = k;
  for (size_t k = 0; k < header_.metadata.size(); ++k) by_key_[header_.metadata[k].key] = k;
}

const GgufValue* GgufFile::find_key(const std::string& key) const {
  const auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : &header_.metadata[it->second].value;
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

void GgufFile::release(const GgufTensorInfo& t) const {
  if (file_.data()) file_.release(header_.data_start + t.offset, t.nbytes);
}

bool has_gguf_magic(const std::string& path) {
  if (is_directory(path)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace qpack
