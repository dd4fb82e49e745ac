#include "qpack/format/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "json_strict.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/endian.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

using detail::json_type_name;
using nlohmann::json;

uint64_t TensorInfo::num_elements() const {
  unsigned long long n = 1;
  for (int64_t d : shape) {
    // Shapes are validated on parse; saturate rather than wrap for hand-made ones.
    if (d < 0 || mul_overflows_u64(n, (unsigned long long)d, &n)) return UINT64_MAX;
  }
  return n;
}

namespace {

// Byte size of `shape` in `dtype`, or an Error (SizeOverflow / ShapeMismatch).
uint64_t shape_nbytes(const std::vector<int64_t>& shape, DType dtype, const std::string& file,
                      const std::string& tensor) {
  unsigned long long n = 1;
  for (int64_t d : shape)
    if (mul_overflows_u64(n, (unsigned long long)d, &n))
      throw Error(ErrorCode::SizeOverflow, file, tensor,
                  "element count of shape " + shape_to_string(shape) + " overflows 64 bits");
  unsigned long long bits;
  if (mul_overflows_u64(n, (unsigned long long)dtype_bits(dtype), &bits))
    throw Error(ErrorCode::SizeOverflow, file, tensor,
                "size in bits of shape " + shape_to_string(shape) + " " + dtype_name(dtype) +
                    " overflows 64 bits");
  if (bits % 8 != 0)
    throw Error(ErrorCode::ShapeMismatch, file, tensor,
                std::to_string(n) + " elements of " + dtype_name(dtype) +
                    " do not fill a whole number of bytes");
  return bits / 8;
}

std::string offsets_str(uint64_t b, uint64_t e) {
  return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
}

TensorInfo parse_entry(const std::string& file, const std::string& name, const json& v,
                       uint64_t data_size) {
  if (!v.is_object())
    throw Error(ErrorCode::BadHeader, file, name,
                std::string("entry is a JSON ") + json_type_name(v) +
                    ", not an object with dtype, shape and data_offsets");
  for (const auto& [k, _] : v.items())
    if (k != "dtype" && k != "shape" && k != "data_offsets")
      throw Error(ErrorCode::BadHeader, file, name, "unexpected key '" + k + "' in the entry");
  for (const char* k : {"dtype", "shape", "data_offsets"})
    if (!v.contains(k))
      throw Error(ErrorCode::BadHeader, file, name, std::string("entry has no '") + k + "'");

  TensorInfo t;
  t.name = name;
  const json& dt = v["dtype"];
  if (!dt.is_string())
    throw Error(ErrorCode::BadHeader, file, name,
                std::string("dtype is a JSON ") + json_type_name(dt) + ", not a string");
  const auto parsed = dtype_from_string(dt.get_ref<const std::string&>());
  if (!parsed)
    throw Error(ErrorCode::UnknownDtype, file, name,
                "unknown dtype '" + dt.get_ref<const std::string&>() + "'");
  t.dtype = *parsed;

  const json& sh = v["shape"];
  if (!sh.is_array())
    throw Error(ErrorCode::BadHeader, file, name,
                std::string("shape is a JSON ") + json_type_name(sh) + ", not an array");
  for (size_t i = 0; i < sh.size(); ++i) {
    const json& d = sh[i];
    const std::string where = "shape[" + std::to_string(i) + "]";
    if (d.is_number_unsigned()) {
      const uint64_t u = d.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int64_t>::max()))
        throw Error(ErrorCode::SizeOverflow, file, name,
                    where + " = " + std::to_string(u) + " is too large");
      t.shape.push_back(int64_t(u));
    } else if (d.is_number_integer()) {
      throw Error(
          ErrorCode::BadHeader, file, name,
          where + " = " + std::to_string(d.get<int64_t>()) + ": dimensions must be non-negative");
    } else {
      throw Error(ErrorCode::BadHeader, file, name,
                  where + " is a JSON " + json_type_name(d) + ", not a non-negative integer");
    }
  }

  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2)
    throw Error(ErrorCode::BadHeader, file, name, "data_offsets must be an array [begin, end]");
  for (const json& o : off)
    if (!o.is_number_unsigned())
      throw Error(
          ErrorCode::BadHeader, file, name,
          "data_offsets holds " + detail::dump_lenient(o) + ", not an integer in [0, 2^64)");
  t.begin = off[0].get<uint64_t>();
  t.end = off[1].get<uint64_t>();
  if (t.begin > t.end)
    throw Error(ErrorCode::OffsetOutOfRange, file, name,
                "data_offsets " + offsets_str(t.begin, t.end) + ": begin is after end");

  const uint64_t want = shape_nbytes(t.shape, t.dtype, file, name);
  if (want != t.end - t.begin)
    throw Error(ErrorCode::ShapeMismatch, file, name,
                "shape " + shape_to_string(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
                    std::to_string(want) + " bytes but data_offsets " +
                    offsets_str(t.begin, t.end) + " span " + std::to_string(t.end - t.begin));
  if (t.end > data_size)
    throw Error(ErrorCode::OffsetOutOfRange, file, name,
                "data_offsets " + offsets_str(t.begin, t.end) +
                    " run past the end of the data region (" + std::to_string(data_size) +
                    " bytes)");
  return t;
}

}  // namespace

void SafetensorsFile::parse_header(const uint8_t* data, uint64_t file_size, const std::string& path,
                                   std::vector<TensorInfo>* tensors_out,
                                   std::map<std::string, std::string>* metadata_out,
                                   uint64_t* data_start_out) {
  // Another format's magic where the header length would be: say what the
  // file is rather than report its first bytes as an absurd header length.
  if (file_size >= kQpackMagic.size() &&
      std::memcmp(data, kQpackMagic.data(), kQpackMagic.size()) == 0)
    throw Error(ErrorCode::BadHeader, path, "",
                "is a .qpack file, not a safetensors checkpoint (inspect, verify and dequantize "
                "read .qpack files)");
  if (file_size >= 4 && std::memcmp(data, "GGUF", 4) == 0)
    throw Error(ErrorCode::BadHeader, path, "", "is a GGUF file, not a safetensors checkpoint");
  if (file_size < 8)
    throw Error(ErrorCode::Truncated, path, "",
                "file is " + std::to_string(file_size) +
                    " bytes, too short for the 8-byte header length of a safetensors file");
  const uint64_t n = load_le64(data);
  if (n > kSafetensorsMaxHeader)
    throw Error(ErrorCode::HeaderTooLarge, path, "",
                "header length " + std::to_string(n) + " exceeds the limit of " +
                    std::to_string(kSafetensorsMaxHeader) + " bytes");
  if (n > file_size - 8)
    throw Error(ErrorCode::Truncated, path, "",
                "header length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(file_size) + " bytes)");
  const char* h = reinterpret_cast<const char*>(data + 8);
  // nlohmann skips a byte-order mark; the reference parser does not.
  if (n >= 3 && std::memcmp(h, "\xEF\xBB\xBF", 3) == 0)
    throw Error(ErrorCode::BadJson, path, "", "header starts with a UTF-8 byte-order mark");

  json j;
  const auto pr = detail::parse_json_strict(h, h + n, &j);
  if (pr.kind == detail::JsonParseResult::DuplicateKey) {
    if (pr.path.empty())
      throw Error(ErrorCode::DuplicateName, path, pr.key,
                  "tensor name appears twice in the header");
    if (pr.path[0] == "__metadata__")
      throw Error(ErrorCode::BadMetadata, path, "",
                  "__metadata__ has the key '" + pr.key + "' twice");
    throw Error(ErrorCode::BadHeader, path, pr.path[0], "entry has the key '" + pr.key + "' twice");
  }
  if (!pr.ok()) throw Error(ErrorCode::BadJson, path, "", "header: " + pr.describe());
  if (!j.is_object())
    throw Error(ErrorCode::BadHeader, path, "",
                std::string("header is a JSON ") + json_type_name(j) + ", not an object");

  const uint64_t data_start = 8 + n;
  const uint64_t data_size = file_size - data_start;
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  tensors.reserve(j.size());
  for (const auto& [key, v] : j.items()) {
    if (key == "__metadata__") {
      if (!v.is_object())
        throw Error(ErrorCode::BadMetadata, path, "",
                    std::string("__metadata__ is a JSON ") + json_type_name(v) + ", not an object");
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string())
          throw Error(ErrorCode::BadMetadata, path, "",
                      "__metadata__ value of '" + mk + "' is a JSON " + json_type_name(mv) +
                          ", not a string");
        metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    tensors.push_back(parse_entry(path, key, v, data_size));
  }

  // Tie-breaks make the order total, so it never depends on the header's key order.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin < expected)
      throw Error(ErrorCode::Overlap, path, t.name,
                  "data_offsets " + offsets_str(t.begin, t.end) + " overlap tensor '" + prev->name +
                      "' " + offsets_str(prev->begin, prev->end));
    if (t.begin > expected)
      throw Error(ErrorCode::Hole, path, t.name,
                  "data_offsets " + offsets_str(t.begin, t.end) + " leave bytes [" +
                      std::to_string(expected) + ", " + std::to_string(t.begin) +
                      ") of the data region unused" +
                      (prev ? " after tensor '" + prev->name + "'" : std::string()));
    expected = t.end;
    prev = &t;
  }
  if (expected != data_size)
    throw Error(ErrorCode::DataNotCovered, path, prev ? prev->name : std::string(),
                "the data region is " + std::to_string(data_size) +
                    " bytes but the tensors end at byte " + std::to_string(expected));

  if (tensors_out) *tensors_out = std::move(tensors);
  if (metadata_out) *metadata_out = std::move(metadata);
  if (data_start_out) *data_start_out = data_start;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::make_unique<SafetensorsFile>();
  f->file_ = MappedFile(path);
  parse_header(f->file_.data(), f->file_.size(), path, &f->tensors_, &f->metadata_,
               &f->data_start_);
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->by_name_.emplace(f->tensors_[i].name, i);
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

// ------------------------------------------------------------------- writer

namespace {

std::string build_header(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata, uint64_t* total) {
  json h = json::object();
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__")
      throw Error(ErrorCode::InvalidArgument, path, t.name,
                  "'__metadata__' is reserved, not a tensor name");
    if (h.contains(t.name))
      throw Error(ErrorCode::InvalidArgument, path, t.name, "tensor name given twice");
    for (int64_t d : t.shape)
      if (d < 0) throw Error(ErrorCode::InvalidArgument, path, t.name, "negative dimension");
    const uint64_t want = shape_nbytes(t.shape, t.dtype, path, t.name);
    if (want != t.nbytes)
      throw Error(ErrorCode::InvalidArgument, path, t.name,
                  "shape " + shape_to_string(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
                      std::to_string(want) + " bytes, got " + std::to_string(t.nbytes));
    unsigned long long end;
    if (add_overflows_u64(offset, t.nbytes, &end))
      throw Error(ErrorCode::InvalidArgument, path, t.name, "total size overflows");
    h[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::string s;
  try {
    s = h.dump();
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, path, "",
                std::string("header cannot be written as JSON: ") + e.what());
  }
  // The data region starts 8-byte aligned, as the reference writer does it.
  s.append((8 - s.size() % 8) % 8, ' ');
  *total = offset;
  return s;
}

}  // namespace

std::string safetensors_file_prefix(const std::string& path,
                                    const std::vector<TensorToWrite>& tensors,
                                    const std::map<std::string, std::string>& metadata,
                                    uint64_t* data_bytes) {
  const std::string header = build_header(path, tensors, metadata, data_bytes);
  std::string out(8, '\0');
  store_le64(reinterpret_cast<uint8_t*>(&out[0]), header.size());
  out += header;
  return out;
}

SafetensorsStreamWriter::SafetensorsStreamWriter(const std::string& path,
                                                 const std::vector<TensorToWrite>& declared,
                                                 const std::map<std::string, std::string>& metadata,
                                                 bool overwrite)
    : out_(path, overwrite) {
  const std::string prefix = safetensors_file_prefix(path, declared, metadata, &expected_);
  out_.write(prefix.data(), prefix.size());
}

void SafetensorsStreamWriter::append(const void* data, uint64_t nbytes) {
  if (nbytes > expected_ - written_)
    throw Error(ErrorCode::InvalidArgument, out_.final_path(), "",
                "more tensor bytes appended than declared (" + std::to_string(expected_) + ")");
  if (nbytes > 0 && data == nullptr)
    throw Error(ErrorCode::InvalidArgument, out_.final_path(), "", "null data");
  out_.write(data, size_t(nbytes));
  written_ += nbytes;
}

void SafetensorsStreamWriter::commit() {
  if (written_ != expected_)
    throw Error(ErrorCode::InvalidArgument, out_.final_path(), "",
                "declared " + std::to_string(expected_) + " tensor bytes but appended " +
                    std::to_string(written_));
  out_.commit();
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata, bool overwrite) {
  for (const TensorToWrite& t : tensors)
    if (t.nbytes > 0 && t.data == nullptr)
      throw Error(ErrorCode::InvalidArgument, path, t.name, "null data");
  SafetensorsStreamWriter w(path, tensors, metadata, overwrite);
  for (const TensorToWrite& t : tensors) w.append(t.data, t.nbytes);
  w.commit();
}

}  // namespace qpack
