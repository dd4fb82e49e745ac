// The GGUF writer: v3, little-endian, metadata in the caller's order,
// tensor data packed in declaration order at offsets that are multiples of
// the alignment (what ggml's loader requires), zero padding. The same input
// gives the same bytes.
#include <cstring>
#include <unordered_set>

#include "qpack/format/endian.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"

namespace qpack {

namespace {

void put32(std::vector<uint8_t>& b, uint32_t v) {
  uint8_t t[4];
  store_le32(t, v);
  b.insert(b.end(), t, t + 4);
}
void put64(std::vector<uint8_t>& b, uint64_t v) {
  uint8_t t[8];
  store_le64(t, v);
  b.insert(b.end(), t, t + 8);
}
void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put64(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

void put_value(std::vector<uint8_t>& b, const GgufValue& v, const std::string& path,
               const std::string& key, uint32_t depth) {
  switch (v.type) {
    case GgufType::Uint8:
      b.push_back(uint8_t(v.u));
      break;
    case GgufType::Int8:
      b.push_back(uint8_t(v.i));
      break;
    case GgufType::Uint16:
      b.push_back(uint8_t(v.u));
      b.push_back(uint8_t(v.u >> 8));
      break;
    case GgufType::Int16:
      b.push_back(uint8_t(v.i));
      b.push_back(uint8_t(uint64_t(v.i) >> 8));
      break;
    case GgufType::Uint32:
      put32(b, uint32_t(v.u));
      break;
    case GgufType::Int32:
      put32(b, uint32_t(v.i));
      break;
    case GgufType::Uint64:
      put64(b, v.u);
      break;
    case GgufType::Int64:
      put64(b, uint64_t(v.i));
      break;
    case GgufType::Float32: {
      const float x = float(v.f);
      uint32_t bits;
      std::memcpy(&bits, &x, 4);
      put32(b, bits);
      break;
    }
    case GgufType::Float64: {
      uint64_t bits;
      std::memcpy(&bits, &v.f, 8);
      put64(b, bits);
      break;
    }
    case GgufType::Bool:
      b.push_back(v.b ? 1 : 0);
      break;
    case GgufType::String:
      put_str(b, v.str);
      break;
    case GgufType::Array:
      if (depth >= kGgufMaxArrayNesting)
        throw Error(
            ErrorCode::GgufArrayTooDeep, path, "",
            "key '" + key + "': arrays nest deeper than " + std::to_string(kGgufMaxArrayNesting));
      put32(b, uint32_t(v.array_type));
      put64(b, v.items.size());
      for (const GgufValue& item : v.items) {
        if (item.type != v.array_type)
          throw Error(ErrorCode::GgufBadArray, path, "",
                      "key '" + key + "': an array of " + gguf_type_name(v.array_type) +
                          " holds a " + gguf_type_name(item.type));
        put_value(b, item, path, key, depth + 1);
      }
      break;
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

GgufWriter::GgufWriter(const std::string& path, const std::vector<GgufKv>& metadata,
                       const std::vector<GgufTensorDecl>& tensors, bool overwrite)
    : out_(path, overwrite) {
  std::vector<uint8_t> head = {'G', 'G', 'U', 'F'};
  put32(head, kGgufVersion);
  put64(head, tensors.size());
  put64(head, metadata.size());
  std::unordered_set<std::string> keys;
  for (const GgufKv& kv : metadata) {
    if (kv.key.empty()) throw Error(ErrorCode::GgufBadKey, path, "", "a key is the empty string");
    if (!keys.insert(kv.key).second)
      throw Error(ErrorCode::GgufDuplicateKey, path, "",
                  "key '" + kv.key + "' appears twice in the metadata");
    if (kv.key == kGgufAlignmentKey) {
      const GgufValue& a = kv.value;
      if (a.type != GgufType::Uint32 || a.u == 0 || (a.u & (a.u - 1)) != 0)
        throw Error(ErrorCode::GgufBadAlignment, path, "",
                    std::string(kGgufAlignmentKey) + " must be a u32 power of two");
      alignment_ = uint32_t(a.u);
    }
    put_str(head, kv.key);
    put32(head, uint32_t(kv.value.type));
    put_value(head, kv.value, path, kv.key, 0);
  }
  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  for (const GgufTensorDecl& t : tensors) {
    if (t.name.empty() || t.name.size() > kGgufMaxTensorName)
      throw Error(ErrorCode::GgufBadTensorName, path, t.name,
                  "a tensor name is 1 to " + std::to_string(kGgufMaxTensorName) + " bytes");
    if (!names.insert(t.name).second)
      throw Error(ErrorCode::GgufDuplicateTensor, path, t.name, "two tensors have this name");
    if (t.ne.size() > kGgufMaxDims)
      throw Error(ErrorCode::GgufBadDims, path, t.name,
                  std::to_string(t.ne.size()) + " dimensions; ggml has at most " +
                      std::to_string(kGgufMaxDims));
    for (int64_t e : t.ne)
      if (e < 0)
        throw Error(ErrorCode::GgufBadDims, path, t.name,
                    "ne holds " + std::to_string(e) + ", a negative dimension");
    const uint64_t n = gguf_tensor_nbytes(t.type, t.ne, path, t.name);
    put_str(head, t.name);
    put32(head, uint32_t(t.ne.size()));
    for (int64_t e : t.ne) put64(head, uint64_t(e));
    put32(head, uint32_t(t.type));
    put64(head, offset);
    names_.push_back(t.name);
    sizes_.push_back(n);
    offsets_.push_back(offset);
    unsigned long long next;
    if (add_overflows_u64(offset, align_up(n, alignment_), &next))
      throw Error(ErrorCode::GgufSizeOverflow, path, t.name, "the data section overflows 64 bits");
    offset = next;
  }
  data_start_ = align_up(head.size(), alignment_);
  head.resize(size_t(data_start_), 0);
  out_.write(head.data(), head.size());
  finish_tensors_of_size_zero();
}

void GgufWriter::finish_tensors_of_size_zero() {
  while (current_ < sizes_.size() && written_ == sizes_[current_]) {
    const uint64_t pad = align_up(sizes_[current_], alignment_) - sizes_[current_];
    out_.write_zeros(pad);
    ++current_;
    written_ = 0;
  }
}

void GgufWriter::append(const void* data, uint64_t nbytes) {
  if (current_ >= sizes_.size() || nbytes > sizes_[current_] - written_)
    throw Error(ErrorCode::GgufWrongDataSize, out_.final_path(),
                current_ < names_.size() ? names_[current_] : "",
                current_ < sizes_.size()
                    ? std::to_string(nbytes) + " bytes appended where " +
                          std::to_string(sizes_[current_] - written_) + " remain of the tensor"
                    : "bytes appended after the last tensor");
  if (nbytes > 0) out_.write(data, size_t(nbytes));
  written_ += nbytes;
  finish_tensors_of_size_zero();
}

void GgufWriter::commit() {
  if (current_ != sizes_.size())
    throw Error(ErrorCode::GgufWrongDataSize, out_.final_path(), names_[current_],
                "has " + std::to_string(written_) + " of its " + std::to_string(sizes_[current_]) +
                    " bytes at commit");
  out_.commit();
}

void write_gguf(const std::string& path, const std::vector<GgufKv>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, bool overwrite) {
  std::vector<GgufTensorDecl> decls;
  for (const GgufTensorToWrite& t : tensors) decls.push_back(t.decl);
  GgufWriter w(path, metadata, decls, overwrite);
  for (const GgufTensorToWrite& t : tensors)
    w.append(t.data, gguf_tensor_nbytes(t.decl.type, t.decl.ne, path, t.decl.name));
  w.commit();
}

}  // namespace qpack
