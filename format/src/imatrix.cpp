// The importance-matrix reader (qpack/format/imatrix.hpp; docs/imatrix.md).
// Every count and length is checked against the bytes that are left before
// anything is allocated or read, and every value before it is used.
#include "qpack/format/imatrix.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/gguf_llama.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

namespace {

constexpr const char* kSums = ".in_sum2";
constexpr const char* kCounts = ".counts";
// The fewest bytes a legacy entry takes: name length, a one-byte name,
// ncall, nval and one value.
constexpr uint64_t kMinLegacyEntryBytes = 4 + 1 + 4 + 4 + 4;

// A little-endian reader over the legacy file that names the file in every
// error.
class DatCursor {
 public:
  DatCursor(const uint8_t* data, uint64_t size, const std::string& file)
      : data_(data), size_(size), file_(file) {}
  uint64_t left() const { return size_ - pos_; }
  uint64_t pos() const { return pos_; }
  int32_t i32(const std::string& entry, const char* what) {
    if (left() < 4)
      fail(ErrorCode::Truncated, entry,
           std::string("the file ends inside ") + what + " (at byte " + std::to_string(pos_) + ")");
    uint32_t u = uint32_t(data_[pos_]) | uint32_t(data_[pos_ + 1]) << 8 |
                 uint32_t(data_[pos_ + 2]) << 16 | uint32_t(data_[pos_ + 3]) << 24;
    pos_ += 4;
    int32_t v;
    std::memcpy(&v, &u, 4);
    return v;
  }
  const uint8_t* take(uint64_t n) {
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  [[noreturn]] void fail(ErrorCode code, const std::string& entry,
                         const std::string& reason) const {
    throw Error(code, file_, entry, reason);
  }

 private:
  const uint8_t* data_;
  uint64_t size_, pos_ = 0;
  const std::string& file_;
};

std::string format_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", double(v));
  return buf;
}

float load_f32_le(const uint8_t* p) {
  const uint32_t u =
      uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A stored sum or mean: finite and not negative (a sum of squares).
void check_value(float v, const std::string& file, const std::string& entry, uint64_t index,
                 const char* what) {
  if (!std::isfinite(v))
    throw Error(ErrorCode::NonFinite, file, entry,
                std::string(what) + " " + std::to_string(index) + " is " + format_float(v) +
                    " (a sum of squares must be finite)");
  if (v < 0)
    throw Error(ErrorCode::RangeOverflow, file, entry,
                std::string(what) + " " + std::to_string(index) + " is " + format_float(v) +
                    " (a sum of squares cannot be negative)");
}

bool has_suffix(const std::string& s, const char* suffix, std::string* base) {
  const size_t n = std::strlen(suffix);
  if (s.size() <= n || s.compare(s.size() - n, n, suffix) != 0) return false;
  *base = s.substr(0, s.size() - n);
  return true;
}

}  // namespace

const char* imatrix_format_name(ImatrixFormat f) {
  return f == ImatrixFormat::Gguf ? "gguf" : "dat";
}

void ImportanceMatrix::index() {
  by_name_.clear();
  for (size_t i = 0; i < entries.size(); ++i) by_name_.emplace(entries[i].name, i);
}

const ImatrixEntry* ImportanceMatrix::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries[it->second];
}

const ImatrixEntry* ImportanceMatrix::find_for_tensor(const std::string& checkpoint_name) const {
  if (const ImatrixEntry* e = find(checkpoint_name)) return e;
  const LlamaTensorName m = llama_gguf_tensor_name(checkpoint_name);
  if (m.mapping != LlamaTensorMapping::Mapped) return nullptr;
  return find(m.gguf_name);
}

ImportanceMatrix parse_imatrix_dat(const uint8_t* data, uint64_t size, const std::string& name) {
  ImportanceMatrix im;
  im.path = name;
  im.format = ImatrixFormat::Legacy;
  DatCursor c(data, size, name);
  const int32_t n_entries = c.i32("", "the entry count");
  if (n_entries <= 0)
    c.fail(ErrorCode::BadHeader, "",
           "entry count " + std::to_string(n_entries) + " (an imatrix holds at least one entry)");
  if (uint64_t(n_entries) > c.left() / kMinLegacyEntryBytes)
    c.fail(ErrorCode::BadHeader, "",
           "entry count " + std::to_string(n_entries) + " is larger than the " +
               std::to_string(c.left()) + " bytes left could hold (" +
               std::to_string(kMinLegacyEntryBytes) + " bytes at least per entry)");
  im.entries.reserve(size_t(n_entries));
  for (int32_t i = 0; i < n_entries; ++i) {
    const std::string where = "entry " + std::to_string(i);
    const int32_t len = c.i32("", ("the name length of " + where).c_str());
    if (len <= 0) c.fail(ErrorCode::BadHeader, "", where + ": name length " + std::to_string(len));
    if (uint64_t(len) > c.left())
      c.fail(ErrorCode::Truncated, "",
             where + ": name length " + std::to_string(len) + " runs past the end (" +
                 std::to_string(c.left()) + " bytes left)");
    const uint8_t* np = c.take(uint64_t(len));
    ImatrixEntry e;
    e.name.assign(reinterpret_cast<const char*>(np), size_t(len));
    if (e.name.find('\0') != std::string::npos)
      c.fail(ErrorCode::BadHeader, "", where + ": the name holds a NUL byte");
    if (im.find(e.name))
      c.fail(ErrorCode::DuplicateName, e.name, where + " repeats the name of an earlier entry");
    const int32_t ncall = c.i32(e.name, "ncall");
    if (ncall <= 0)
      c.fail(ErrorCode::BadHeader, e.name,
             "ncall " + std::to_string(ncall) + " (the writer stores at least 1)");
    const int32_t nval = c.i32(e.name, "the value count");
    if (nval <= 0) c.fail(ErrorCode::BadHeader, e.name, "value count " + std::to_string(nval));
    const uint64_t bytes = uint64_t(nval) * 4;  // nval < 2^31: no overflow
    if (bytes > c.left())
      c.fail(ErrorCode::Truncated, e.name,
             std::to_string(nval) + " values (" + std::to_string(bytes) +
                 " bytes) run past the end (" + std::to_string(c.left()) + " bytes left)");
    const uint8_t* vp = c.take(bytes);
    e.columns = nval;
    e.matrices = 1;
    e.counts = {ncall};
    e.stored.resize(size_t(nval));
    e.weights.resize(size_t(nval));
    for (int32_t j = 0; j < nval; ++j) {
      const float v = load_f32_le(vp + 4 * uint64_t(j));
      check_value(v, name, e.name, uint64_t(j), "value");
      e.stored[size_t(j)] = v;
      e.weights[size_t(j)] = double(v) / double(ncall);
    }
    im.entries.push_back(std::move(e));
    im.by_name_.emplace(im.entries.back().name, im.entries.size() - 1);
  }
  // The optional trailer: the chunk count, then (newer writers) the length
  // and bytes of one dataset name.
  if (c.left() == 0) return im;
  const int32_t chunks = c.i32("", "the trailer's chunk count");
  if (chunks < 0)
    c.fail(ErrorCode::BadHeader, "", "trailer: chunk count " + std::to_string(chunks));
  im.chunk_count = chunks;
  if (c.left() == 0) return im;
  const int32_t dlen = c.i32("", "the trailer's dataset name length");
  if (dlen < 0)
    c.fail(ErrorCode::BadHeader, "", "trailer: dataset name length " + std::to_string(dlen));
  if (uint64_t(dlen) > c.left())
    c.fail(ErrorCode::Truncated, "",
           "trailer: dataset name length " + std::to_string(dlen) + " runs past the end (" +
               std::to_string(c.left()) + " bytes left)");
  const uint8_t* dp = c.take(uint64_t(dlen));
  if (dlen > 0) im.datasets.emplace_back(reinterpret_cast<const char*>(dp), size_t(dlen));
  if (c.left() != 0)
    c.fail(ErrorCode::BadHeader, "",
           std::to_string(c.left()) + " bytes after the trailer (at byte " +
               std::to_string(c.pos()) + ")");
  return im;
}

ImportanceMatrix imatrix_from_gguf(const GgufFile& f) {
  ImportanceMatrix im;
  im.path = f.path();
  im.format = ImatrixFormat::Gguf;
  const std::string& file = f.path();
  auto bad_key = [&](const std::string& key, const std::string& want) {
    throw Error(ErrorCode::BadMetadata, file, "", key + " must be " + want);
  };
  if (const GgufValue* t = f.find_key("general.type")) {
    if (t->type != GgufType::String) bad_key("general.type", "a string");
    if (t->str != "imatrix")
      throw Error(ErrorCode::BadHeader, file, "",
                  "general.type is '" + t->str + "': a GGUF " + t->str + ", not an imatrix");
  }
  if (const GgufValue* d = f.find_key("imatrix.datasets")) {
    if (d->type != GgufType::Array || d->array_type != GgufType::String)
      bad_key("imatrix.datasets", "an array of strings");
    for (const GgufValue& s : d->items) im.datasets.push_back(s.str);
  }
  if (const GgufValue* v = f.find_key("imatrix.chunk_count")) {
    if (v->type != GgufType::Uint32) bad_key("imatrix.chunk_count", "a u32");
    im.chunk_count = int64_t(v->u);
  }
  if (const GgufValue* v = f.find_key("imatrix.chunk_size")) {
    if (v->type != GgufType::Uint32) bad_key("imatrix.chunk_size", "a u32");
    im.chunk_size = int64_t(v->u);
  }
  if (f.tensors().empty()) throw Error(ErrorCode::BadHeader, file, "", "no entries (no tensors)");

  // Pair NAME.in_sum2 with NAME.counts; entries in the order of their in_sum2.
  for (const GgufTensorInfo& t : f.tensors()) {
    std::string base;
    if (has_suffix(t.name, kCounts, &base)) {
      if (!f.find(base + kSums))
        throw Error(ErrorCode::ShapeMismatch, file, base,
                    "has " + t.name + " but no " + base + kSums);
      continue;
    }
    if (!has_suffix(t.name, kSums, &base))
      throw Error(ErrorCode::BadHeader, file, t.name,
                  "tensor '" + t.name + "' is neither NAME.in_sum2 nor NAME.counts");
    const GgufTensorInfo* ct = f.find(base + kCounts);
    if (!ct)
      throw Error(ErrorCode::ShapeMismatch, file, base,
                  "has " + t.name + " but no " + base + kCounts);
    for (const GgufTensorInfo* x : {&t, ct})
      if (x->type != GgmlType::F32)
        throw Error(ErrorCode::UnsupportedDtype, file, base,
                    x->name + " is " + ggml_type_name(x->type) + "; an imatrix stores F32");
    if (t.ne.size() > 2 || t.ne.empty() || t.ne[0] < 1 || (t.ne.size() == 2 && t.ne[1] < 1))
      throw Error(ErrorCode::ShapeMismatch, file, base,
                  t.name + " must be [channels] or [channels, matrices] with both >= 1 (ne " +
                      shape_to_string(t.ne) + ")");
    ImatrixEntry e;
    e.name = base;
    e.columns = t.ne[0];
    e.matrices = t.ne.size() == 2 ? t.ne[1] : 1;
    const bool counts_ok = (ct->ne.size() == 1 && ct->ne[0] == e.matrices) ||
                           (ct->ne.size() == 2 && ct->ne[0] == 1 && ct->ne[1] == e.matrices);
    if (!counts_ok)
      throw Error(ErrorCode::ShapeMismatch, file, base,
                  ct->name + " has ne " + shape_to_string(ct->ne) + "; " + t.name + " (ne " +
                      shape_to_string(t.ne) + ") needs [1, " + std::to_string(e.matrices) + "]");
    const uint8_t* cp = f.tensor_data(*ct);
    e.counts.resize(size_t(e.matrices));
    for (int64_t m = 0; m < e.matrices; ++m) {
      const float v = load_f32_le(cp + 4 * m);
      if (!std::isfinite(v))
        throw Error(ErrorCode::NonFinite, file, base,
                    "count " + std::to_string(m) + " is " + format_float(v));
      if (v < 0 || std::floor(v) != v)
        throw Error(ErrorCode::RangeOverflow, file, base,
                    "count " + std::to_string(m) + " is " + format_float(v) +
                        " (a number of activation rows: an integer >= 0)");
      e.counts[size_t(m)] = int64_t(v);
    }
    const uint8_t* sp = f.tensor_data(t);
    const uint64_t n = uint64_t(e.columns) * uint64_t(e.matrices);  // the reader checked the bytes
    e.stored.resize(n);
    e.weights.resize(n);
    for (uint64_t k = 0; k < n; ++k) {
      const float v = load_f32_le(sp + 4 * k);
      check_value(v, file, base, k, "in_sum2 value");
      const int64_t count = e.counts[size_t(k / uint64_t(e.columns))];
      if (count == 0 && v != 0)
        throw Error(ErrorCode::RangeOverflow, file, base,
                    "in_sum2 value " + std::to_string(k) + " is " + format_float(v) +
                        " while its matrix's count is 0");
      e.stored[k] = v;
      e.weights[k] = count == 0 ? 1.0 : double(v) / double(count);
    }
    im.entries.push_back(std::move(e));
  }
  im.index();
  return im;
}

ImportanceMatrix read_imatrix(const std::string& path) {
  if (has_gguf_magic(path)) return imatrix_from_gguf(*GgufFile::open(path));
  const MappedFile m(path);
  return parse_imatrix_dat(m.data(), m.size(), path);
}

}  // namespace qpack
