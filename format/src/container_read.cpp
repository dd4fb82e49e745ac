// QpackFile: opening a .qpack file checks its header and manifest in the
// order of docs/format.md §7, one function per step (steps 1-10); read()
// checks a section's contents when it is read (steps 11-12).
#include <algorithm>
#include <limits>
#include <unordered_set>

#include "json_strict.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/qpack_set.hpp"
#include "qpack/format/text.hpp"
#include "section_codec.hpp"

namespace qpack {

using detail::json_type_name;
using nlohmann::json;

std::unique_ptr<QpackFile> QpackFile::open(const std::string& path) {
  const std::string index = qpack_set_index_for(path);
  if (!index.empty()) return open_qpack_set(index);
  return open_file(path);
}

std::unique_ptr<QpackFile> QpackFile::open_file(const std::string& path) {
  auto f = std::unique_ptr<QpackFile>(new QpackFile());
  f->path_ = path;
  f->map_ = MappedFile(path);
  f->base_ = f->map_.data();
  f->size_ = f->map_.size();
  f->parse();
  return f;
}

std::unique_ptr<QpackFile> QpackFile::from_memory(const uint8_t* bytes, uint64_t size,
                                                  const std::string& name) {
  auto f = std::unique_ptr<QpackFile>(new QpackFile());
  f->path_ = name;
  f->base_ = bytes;
  f->size_ = size;
  f->parse();
  return f;
}

namespace {

// Manifest accessors: every failure is BadManifest naming where in the
// manifest it is.
struct ManifestReader {
  const std::string& file;

  [[noreturn]] void fail(const std::string& tensor, const std::string& reason) const {
    throw Error(ErrorCode::BadManifest, file, tensor, "manifest: " + reason);
  }
  const json& req(const json& obj, const char* key, const std::string& where,
                  const std::string& tensor) const {
    const auto it = obj.find(key);
    if (it == obj.end()) fail(tensor, where + " has no '" + key + "'");
    return *it;
  }
  uint64_t u64(const json& obj, const char* key, const std::string& where,
               const std::string& tensor) const {
    const json& v = req(obj, key, where, tensor);
    if (!v.is_number_unsigned())
      fail(tensor,
           where + "." + key + " is " + detail::dump_lenient(v) + ", not a non-negative integer");
    return v.get<uint64_t>();
  }
  const std::string& str(const json& obj, const char* key, const std::string& where,
                         const std::string& tensor) const {
    const json& v = req(obj, key, where, tensor);
    if (!v.is_string())
      fail(tensor, where + "." + key + " is a JSON " + json_type_name(v) + ", not a string");
    return v.get_ref<const std::string&>();
  }
  bool boolean(const json& obj, const char* key, const std::string& where,
               const std::string& tensor) const {
    const json& v = req(obj, key, where, tensor);
    if (!v.is_boolean())
      fail(tensor, where + "." + key + " is a JSON " + json_type_name(v) + ", not a boolean");
    return v.get<bool>();
  }
  const json& obj(const json& parent, const char* key, const std::string& where,
                  const std::string& tensor) const {
    const json& v = req(parent, key, where, tensor);
    if (!v.is_object())
      fail(tensor, where + "." + key + " is a JSON " + json_type_name(v) + ", not an object");
    return v;
  }
};

// A non-empty section's bytes, for step 10.
struct Span {
  uint64_t begin, end;
  size_t tensor;  // index into the tensors
  const char* section;
};

// The steps of docs/format.md §7 that opening a file takes, in its order.
// Each step reads what the ones before it established.
class ManifestParser {
 public:
  ManifestParser(const std::string& file, const uint8_t* base, uint64_t size)
      : file_(file), r_{file}, base_(base), size_(size) {}

  QpackHeader parse_header();        // steps 1-5
  json parse_manifest_json() const;  // steps 6-7
  const json& parse_manifest_top(const json& m, uint16_t major,
                                 uint16_t minor);  // step 8: returns "tensors"
  QpackTensor parse_tensor(const json& tj, size_t index, uint16_t major);  // step 9
  void check_overlaps(const std::vector<QpackTensor>& tensors);            // step 10

 private:
  uint64_t parse_shape(const json& tj, const std::string& where, QpackTensor* t) const;
  void parse_quant(const json& q, const std::string& where, QpackTensor* t, uint16_t major) const;
  Section parse_section(const json& sections, const std::string& where, const TensorSection& ts,
                        const std::string& tensor, size_t index);

  const std::string& file_;
  const ManifestReader r_;
  const uint8_t* base_;
  uint64_t size_;
  uint64_t moff_ = 0, msize_ = 0, msum_ = 0;  // the manifest, from the header
  uint64_t alignment_ = 0;                    // from the manifest
  std::unordered_set<std::string> names_;
  std::vector<Span> spans_;
};

// Steps 1-4 (QpackHeader::decode), then 5: the manifest ends the file and
// is not too large.
QpackHeader ManifestParser::parse_header() {
  const QpackHeader h = QpackHeader::decode(base_, size_, file_);
  moff_ = h.manifest_offset;
  msize_ = h.manifest_size;
  msum_ = h.manifest_xxh3;
  unsigned long long mend;
  if (moff_ < QpackHeader::kSize || add_overflows_u64(moff_, msize_, &mend) || mend != size_)
    throw Error(ErrorCode::BadManifest, file_, "",
                "manifest at offset " + std::to_string(moff_) + " size " + std::to_string(msize_) +
                    " does not end the file (" + std::to_string(size_) + " bytes)");
  if (msize_ > kQpackMaxManifest)
    throw Error(ErrorCode::BadManifest, file_, "",
                "manifest of " + std::to_string(msize_) + " bytes exceeds the limit of " +
                    std::to_string(kQpackMaxManifest));
  return h;
}

// Step 6: the manifest checksum; step 7: strict JSON whose top level is an
// object.
json ManifestParser::parse_manifest_json() const {
  const uint64_t actual = checksum64(base_ + moff_, size_t(msize_));
  if (msum_ != actual)
    throw Error(ErrorCode::ManifestChecksumMismatch, file_, "",
                "manifest checksum " + checksum_to_hex(actual) + " does not match the header's " +
                    checksum_to_hex(msum_) + ": the manifest is corrupt");
  const char* text = reinterpret_cast<const char*>(base_ + moff_);
  json m;
  const auto pr = detail::parse_json_strict(text, text + msize_, &m);
  if (!pr.ok()) throw Error(ErrorCode::BadManifestJson, file_, "", "manifest: " + pr.describe());
  if (!m.is_object())
    r_.fail("", std::string("the top level is a JSON ") + json_type_name(m) + ", not an object");
  return m;
}

// Step 8: the top-level keys of §3, qpack_version's major, the alignment.
const json& ManifestParser::parse_manifest_top(const json& m, uint16_t major, uint16_t minor) {
  const std::string& version = r_.str(m, "qpack_version", "manifest", "");
  const size_t dot = version.find('.');
  const std::string maj = version.substr(0, dot);
  if (dot == std::string::npos || maj.empty() || maj.size() > 5 ||
      maj.find_first_not_of("0123456789") != std::string::npos)
    r_.fail("", "qpack_version '" + version + "' is not MAJOR.MINOR");
  if (std::stoul(maj) != major)
    throw Error(ErrorCode::ManifestMismatch, file_, "",
                "manifest qpack_version '" + version + "' disagrees with the header's version " +
                    std::to_string(major) + "." + std::to_string(minor));
  r_.str(m, "generator", "manifest", "");
  alignment_ = r_.u64(m, "alignment", "manifest", "");
  if (alignment_ < kQpackAlignment || (alignment_ & (alignment_ - 1)) != 0)
    r_.fail("", "alignment " + std::to_string(alignment_) + " is not a power of two >= 64");
  const json& source = r_.obj(m, "source", "manifest", "");
  r_.str(source, "format", "source", "");
  const json& meta = r_.obj(source, "metadata", "source", "");
  for (const auto& [k, v] : meta.items())
    if (!v.is_string()) r_.fail("", "source.metadata value of '" + k + "' is not a string");
  const json& config = r_.req(source, "config", "source", "");
  if (!config.is_object() && !config.is_null())
    r_.fail("", "source.config is neither an object nor null");
  // §3.3: optional; when present, an object (its contents are informative).
  if (m.contains("provenance") && !m.at("provenance").is_object())
    r_.fail("", "provenance is not an object");
  const json& tensors = r_.req(m, "tensors", "manifest", "");
  if (!tensors.is_array()) r_.fail("", "tensors is not an array");
  return tensors;
}

// Step 9, one tensor: name, dtype, shape, encoding, the scheme of a
// group_quant tensor, then each of its sections.
QpackTensor ManifestParser::parse_tensor(const json& tj, size_t index, uint16_t major) {
  const std::string where = "tensors[" + std::to_string(index) + "]";
  if (!tj.is_object()) r_.fail("", where + " is not an object");
  QpackTensor t;
  t.name = r_.str(tj, "name", where, "");
  const std::string& name = t.name;
  if (!names_.insert(name).second)
    throw Error(ErrorCode::DuplicateName, file_, name, "tensor name appears twice in the manifest");
  const std::string& dts = r_.str(tj, "dtype", where, name);
  const auto dt = dtype_from_string(dts);
  if (!dt) throw Error(ErrorCode::UnknownDtype, file_, name, "unknown dtype '" + dts + "'");
  t.dtype = *dt;
  const uint64_t bits = parse_shape(tj, where, &t);
  const std::string& encoding = r_.str(tj, "encoding", where, name);
  const json& sections = r_.obj(tj, "sections", where, name);
  if (encoding == "raw") {
    if (bits % 8 != 0)
      throw Error(ErrorCode::ManifestMismatch, file_, name,
                  "shape " + shape_to_string(t.shape) + " of " + dtype_name(t.dtype) +
                      " is not a whole number of bytes");
  } else if (encoding == "group_quant") {
    parse_quant(r_.obj(tj, "quant", where, name), where + ".quant", &t, major);
  } else {
    r_.fail(name, where + ".encoding '" + encoding + "' is neither 'raw' nor 'group_quant'");
  }
  for (const TensorSection& ts : t.sections())
    t.section(ts.kind) = parse_section(sections, where, ts, name, index);
  if (t.quantized && t.scheme.symmetric && sections.contains("zeros"))
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                "a symmetric tensor has a 'zeros' section");
  return t;
}

// The shape, whose element count times the dtype's bits fits 64 bits;
// returns that bit count.
uint64_t ManifestParser::parse_shape(const json& tj, const std::string& where,
                                     QpackTensor* t) const {
  const std::string& name = t->name;
  const json& shape = r_.req(tj, "shape", where, name);
  if (!shape.is_array()) r_.fail(name, where + ".shape is not an array");
  unsigned long long count = 1;
  bool overflow = false;
  for (const json& d : shape) {
    if (!d.is_number_unsigned() ||
        d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      r_.fail(name,
              where + ".shape holds " + detail::dump_lenient(d) + ", not a non-negative integer");
    t->shape.push_back(int64_t(d.get<uint64_t>()));
    overflow = overflow || mul_overflows_u64(count, d.get<uint64_t>(), &count);
  }
  unsigned long long bits = 0;
  if (overflow || mul_overflows_u64(count, (unsigned long long)dtype_bits(t->dtype), &bits))
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                "shape " + shape_to_string(t->shape) + " is too large");
  return bits;
}

// A group_quant tensor's "quant": a supported scheme, resolved for this
// tensor, and its layout.
void ManifestParser::parse_quant(const json& q, const std::string& where, QpackTensor* t,
                                 uint16_t major) const {
  const std::string& name = t->name;
  const uint64_t qbits = r_.u64(q, "bits", where, name);
  const uint64_t gs = r_.u64(q, "group_size", where, name);
  const uint64_t axis = r_.u64(q, "axis", where, name);
  const bool symmetric = r_.boolean(q, "symmetric", where, name);
  const std::string& sds = r_.str(q, "scale_dtype", where, name);
  if (!is_valid_bits(int(std::min<uint64_t>(qbits, 64))))
    throw Error(ErrorCode::UnsupportedScheme, file_, name,
                "bits " + std::to_string(qbits) + " (must be 2, 3, 4 or 8)");
  const auto sd = dtype_from_string(sds);
  if (!sd || !is_scale_dtype(*sd))
    throw Error(ErrorCode::UnsupportedScheme, file_, name,
                "scale dtype '" + sds + "' (must be F16, BF16 or F32)");
  if (!is_quantizable(t->dtype))
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                std::string("group_quant tensor has source dtype ") + dtype_name(t->dtype) +
                    " (only F16, BF16, F32 are quantized)");
  if (t->shape.empty())
    throw Error(ErrorCode::ManifestMismatch, file_, name, "a 0-d tensor cannot be group_quant");
  if (axis >= t->shape.size())
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                "axis " + std::to_string(axis) + " is out of range for a " +
                    std::to_string(t->shape.size()) + "-d tensor");
  if (gs < 1 || gs > uint64_t(std::numeric_limits<int64_t>::max()))
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                "group_size " + std::to_string(gs) + " is not resolved");
  t->scheme.bits = int(qbits);
  t->scheme.group_size = int64_t(gs);
  t->scheme.axis = int(axis);
  t->scheme.symmetric = symmetric;
  t->scheme.scale_dtype = *sd;
  // zero_point (version 2): absent = "float". Only asymmetric tensors have
  // one, and "integer" needs a 2.x file (a 1.x reader would ignore the key
  // and decode the codes with the float rule).
  if (q.contains("zero_point")) {
    const std::string& zp = r_.str(q, "zero_point", where, name);
    if (symmetric)
      throw Error(ErrorCode::ManifestMismatch, file_, name,
                  "a symmetric tensor has a zero_point ('" + zp + "')");
    if (zp == "integer") {
      if (major < kQpackVersionMajorIntegerZero)
        throw Error(ErrorCode::ManifestMismatch, file_, name,
                    "zero_point 'integer' in a version " + std::to_string(major) +
                        ".x file (it needs version " +
                        std::to_string(kQpackVersionMajorIntegerZero) + ")");
      t->scheme.zero_point = ZeroPoint::Integer;
    } else if (zp != "float") {
      throw Error(ErrorCode::UnsupportedScheme, file_, name,
                  "zero_point '" + zp + "' (must be 'float' or 'integer')");
    }
  }
  // method (minor version 1): absent = "rtn". The codes decode the same
  // whatever it says; it selects the error bound verify checks.
  if (q.contains("method")) {
    const std::string& mname = r_.str(q, "method", where, name);
    const auto m = method_from_string(mname);
    if (!m)
      throw Error(ErrorCode::UnsupportedScheme, file_, name,
                  "method '" + mname + "' (must be 'rtn', 'search' or 'refit')");
    t->scheme.method = *m;
    const std::string why = validate_scheme(t->scheme);
    if (!why.empty()) throw Error(ErrorCode::ManifestMismatch, file_, name, why);
  }
  // two_level (version 3): the super-block of groups and the width of their
  // scale and minimum codes (quantization.md §T). A 2.x file cannot hold it.
  if (q.contains("two_level")) {
    const json& tl = q.at("two_level");
    if (!tl.is_object())
      throw Error(ErrorCode::BadManifest, file_, name, "quant.two_level is not an object");
    const uint64_t sb = r_.u64(tl, "super_block", where, name);
    const uint64_t sub = r_.u64(tl, "sub_bits", where, name);
    if (major < kQpackVersionMajorTwoLevel)
      throw Error(ErrorCode::ManifestMismatch, file_, name,
                  "two_level in a version " + std::to_string(major) + ".x file (it needs version " +
                      std::to_string(kQpackVersionMajorTwoLevel) + ")");
    if (sb != uint64_t(kSuperBlockGroups) || sub != uint64_t(kSubScaleBits))
      throw Error(ErrorCode::UnsupportedScheme, file_, name,
                  "two_level super_block " + std::to_string(sb) + ", sub_bits " +
                      std::to_string(sub) + " (this reader knows super_block " +
                      std::to_string(kSuperBlockGroups) + ", sub_bits " +
                      std::to_string(kSubScaleBits) + ")");
    t->scheme.super_block = kSuperBlockGroups;
    const std::string why = validate_scheme(t->scheme);
    if (!why.empty()) throw Error(ErrorCode::ManifestMismatch, file_, name, why);
  }
  try {
    t->layout = make_layout(t->shape, t->scheme, name);
  } catch (const Error& e) {
    throw Error(ErrorCode::ManifestMismatch, file_, name, e.reason());
  }
  if (t->layout.group_size != t->scheme.group_size)
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                "group_size " + std::to_string(gs) + " is not resolved for an axis of length " +
                    std::to_string(t->layout.axis_len) + " (expected " +
                    std::to_string(t->layout.group_size) + ")");
  // The section sizes cannot overflow: the element count N times the
  // dtype's 16 or 32 bits fits 64 bits, the codes are < 2N bytes and the
  // scales and zeros at most 4N.
  t->quantized = true;
}

// Step 9, one section: its fields, codec and checksum, an aligned offset
// within the data area, and the raw_size that shape and scheme imply.
Section ManifestParser::parse_section(const json& sections, const std::string& where,
                                      const TensorSection& ts, const std::string& name,
                                      size_t index) {
  const char* key = ts.name;
  const std::string swhere = where + ".sections." + key;
  const json& sj = r_.req(sections, key, where + ".sections", name);
  if (!sj.is_object()) r_.fail(name, swhere + " is not an object");
  Section s;
  s.present = true;
  s.offset = r_.u64(sj, "offset", swhere, name);
  s.size = r_.u64(sj, "size", swhere, name);
  s.raw_size = r_.u64(sj, "raw_size", swhere, name);
  const std::string& codec = r_.str(sj, "codec", swhere, name);
  if (codec == "none")
    s.codec = Codec::None;
  else if (codec == "zstd")
    s.codec = Codec::Zstd;
  else
    throw Error(ErrorCode::BadCodec, file_, name,
                std::string("section '") + key + "' has unknown codec '" + codec + "'");
  const std::string& hex = r_.str(sj, "xxh3", swhere, name);
  if (!checksum_from_hex(hex, &s.checksum))
    r_.fail(name, swhere + ".xxh3 '" + hex + "' is not 16 lower-case hex digits");
  if (s.offset % alignment_ != 0)
    throw Error(ErrorCode::SectionMisaligned, file_, name,
                std::string("section '") + key + "' at offset " + std::to_string(s.offset) +
                    " is not a multiple of " + std::to_string(alignment_));
  unsigned long long end;
  if (s.offset < QpackHeader::kSize || add_overflows_u64(s.offset, s.size, &end) || end > moff_)
    throw Error(ErrorCode::SectionOutOfRange, file_, name,
                std::string("section '") + key + "' at offset " + std::to_string(s.offset) +
                    " size " + std::to_string(s.size) + " is not within the data area [64, " +
                    std::to_string(moff_) + ")");
  if (s.raw_size != ts.raw_size)
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                std::string("section '") + key + "' raw_size " + std::to_string(s.raw_size) +
                    " but shape and scheme imply " + std::to_string(ts.raw_size));
  if (s.codec == Codec::None && s.size != s.raw_size)
    throw Error(ErrorCode::ManifestMismatch, file_, name,
                std::string("section '") + key + "' has codec none but size " +
                    std::to_string(s.size) + " != raw_size " + std::to_string(s.raw_size));
  if (s.size > 0) spans_.push_back(Span{s.offset, end, index, key});
  return s;
}

// Step 10: no two non-empty sections overlap.
void ManifestParser::check_overlaps(const std::vector<QpackTensor>& tensors) {
  std::sort(spans_.begin(), spans_.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans_.size(); ++i) {
    const Span& a = spans_[i - 1];
    const Span& b = spans_[i];
    if (b.begin < a.end)
      throw Error(ErrorCode::SectionOverlap, file_, tensors[b.tensor].name,
                  std::string("section '") + b.section + "' [" + std::to_string(b.begin) + ", " +
                      std::to_string(b.end) + ") overlaps section '" + a.section + "' of tensor '" +
                      tensors[a.tensor].name + "' [" + std::to_string(a.begin) + ", " +
                      std::to_string(a.end) + ")");
  }
}

// The section `s` of `t` is, by address.
const char* section_name_in(const QpackTensor& t, const Section& s) {
  for (SectionKind k :
       {SectionKind::Codes, SectionKind::Scales, SectionKind::Zeros, SectionKind::Data})
    if (&s == &t.section(k)) return section_name(k);
  return "section";
}

}  // namespace

void QpackFile::parse() {
  ManifestParser p(path_, base_, size_);
  const QpackHeader h = p.parse_header();
  major_ = h.version_major;
  minor_ = h.version_minor;
  header_checksum_ = h.header_xxh3;
  json m = p.parse_manifest_json();
  const json& tensors = p.parse_manifest_top(m, major_, minor_);
  std::vector<QpackTensor> out;
  out.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) out.push_back(p.parse_tensor(tensors[i], i, major_));
  p.check_overlaps(out);
  manifest_ = std::move(m);
  tensors_ = std::move(out);
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_.emplace(tensors_[i].name, i);
}

const QpackTensor* QpackFile::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const nlohmann::json& QpackFile::source_metadata() const {
  return manifest_.at("source").at("metadata");
}
const nlohmann::json& QpackFile::source_config() const {
  return manifest_.at("source").at("config");
}

// Steps 11 (the checksum) and 12 (the decode, section_codec.cpp).
SectionBytes QpackFile::read(const QpackTensor& t, const Section& s) const {
  if (!shards_.empty()) return shards_[s.shard]->read(t, s);
  const char* sname = section_name_in(t, s);
  if (!s.present)
    throw Error(ErrorCode::Internal, path_, t.name, std::string("no section '") + sname + "'");
  if (s.offset > size_ || s.size > size_ - s.offset)
    throw Error(ErrorCode::SectionOutOfRange, path_, t.name,
                std::string("section '") + sname + "' is outside the file");
  const uint8_t* p = base_ + s.offset;
  const uint64_t actual = checksum64(p, size_t(s.size));
  if (actual != s.checksum)
    throw Error(ErrorCode::ChecksumMismatch, path_, t.name,
                std::string("section '") + sname + "' checksum " + checksum_to_hex(actual) +
                    " does not match the manifest's " + checksum_to_hex(s.checksum) +
                    ": the data is corrupt");
  return detail::decode_section(p, s, path_, t.name, sname);
}

void QpackFile::release(const Section& s) const {
  if (!shards_.empty()) return shards_[s.shard]->release(s);
  map_.release(s.offset, s.size);
}

void QpackFile::check_all() const {
  for (const QpackTensor& t : tensors_)
    for (const TensorSection& ts : t.sections())
      if (ts.section->present) {
        (void)read(t, *ts.section);
        release(*ts.section);
      }
}

}  // namespace qpack
