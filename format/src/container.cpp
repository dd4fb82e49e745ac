#include "qpack/format/container.hpp"

#include <zstd.h>

#include <algorithm>
#include <future>
#include <limits>
#include <unordered_set>

#include "json_strict.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

using detail::json_type_name;
using nlohmann::json;

const char* codec_name(Codec c) { return c == Codec::Zstd ? "zstd" : "none"; }

namespace {

// Largest decoded/stored ratio a zstd frame can reach: every block has a
// 3-byte header and, as an RLE block, at least one byte of payload, and
// decodes to at most 128 KiB. Bounding raw_size by it keeps a forged frame
// header from making the reader allocate more than the format allows.
constexpr uint64_t kZstdMaxExpansion = 32768;

uint64_t elements_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

uint64_t scale_size(DType t) { return uint64_t(dtype_bits(t) / 8); }

const char* section_name(const QpackTensor& t, const Section& s) {
  if (&s == &t.codes) return "codes";
  if (&s == &t.scales) return "scales";
  if (&s == &t.zeros) return "zeros";
  if (&s == &t.data) return "data";
  return "section";
}

}  // namespace

uint64_t QpackTensor::source_bytes() const { return elements_of(shape) * uint64_t(dtype_bits(dtype)) / 8; }

uint64_t QpackTensor::stored_bytes() const {
  uint64_t n = 0;
  for (const Section* s : {&codes, &scales, &zeros, &data})
    if (s->present) n += s->size;
  return n;
}

// ===================================================================== reader

std::unique_ptr<QpackFile> QpackFile::open(const std::string& path) {
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
  const json& req(const json& obj, const char* key, const std::string& where, const std::string& tensor) const {
    const auto it = obj.find(key);
    if (it == obj.end()) fail(tensor, where + " has no '" + key + "'");
    return *it;
  }
  uint64_t u64(const json& obj, const char* key, const std::string& where, const std::string& tensor) const {
    const json& v = req(obj, key, where, tensor);
    if (!v.is_number_unsigned())
      fail(tensor, where + "." + key + " is " + detail::dump_lenient(v) + ", not a non-negative integer");
    return v.get<uint64_t>();
  }
  const std::string& str(const json& obj, const char* key, const std::string& where, const std::string& tensor) const {
    const json& v = req(obj, key, where, tensor);
    if (!v.is_string()) fail(tensor, where + "." + key + " is a JSON " + json_type_name(v) + ", not a string");
    return v.get_ref<const std::string&>();
  }
  bool boolean(const json& obj, const char* key, const std::string& where, const std::string& tensor) const {
    const json& v = req(obj, key, where, tensor);
    if (!v.is_boolean()) fail(tensor, where + "." + key + " is a JSON " + json_type_name(v) + ", not a boolean");
    return v.get<bool>();
  }
  const json& obj(const json& parent, const char* key, const std::string& where, const std::string& tensor) const {
    const json& v = req(parent, key, where, tensor);
    if (!v.is_object()) fail(tensor, where + "." + key + " is a JSON " + json_type_name(v) + ", not an object");
    return v;
  }
};

}  // namespace

void QpackFile::parse() {
  const std::string& file = path_;
  if (size_ < kQpackHeaderSize) {
    const size_t n = size_t(std::min<uint64_t>(size_, 8));
    if (n == 0 || std::memcmp(base_, kQpackMagic, n) != 0)
      throw Error(ErrorCode::BadMagic, file, "", "not a .qpack file (bad magic)");
    throw Error(ErrorCode::Truncated, file, "",
                "file is " + std::to_string(size_) + " bytes, shorter than the 64-byte .qpack header");
  }
  if (std::memcmp(base_, kQpackMagic, 8) != 0)
    throw Error(ErrorCode::BadMagic, file, "", "not a .qpack file (bad magic)");
  major_ = detail::load_le16(base_ + 8);
  minor_ = detail::load_le16(base_ + 10);
  if (major_ != kQpackVersionMajor)
    throw Error(ErrorCode::UnsupportedVersion, file, "",
                "format version " + std::to_string(major_) + "." + std::to_string(minor_) +
                    "; this reader reads version " + std::to_string(kQpackVersionMajor) + ".x");
  const uint64_t header_sum = detail::load_le64(base_ + 56);
  const uint64_t header_actual = checksum64(base_, 56);
  if (header_sum != header_actual)
    throw Error(ErrorCode::HeaderChecksumMismatch, file, "",
                "header checksum " + checksum_to_hex(header_sum) + " does not match its bytes (" +
                    checksum_to_hex(header_actual) + "): the header is corrupt");
  const uint32_t header_size = detail::load_le32(base_ + 12);
  if (header_size != kQpackHeaderSize)
    throw Error(ErrorCode::UnsupportedVersion, file, "",
                "header_size " + std::to_string(header_size) + "; version 1 headers are 64 bytes");
  const uint64_t file_size = detail::load_le64(base_ + 40);
  if (file_size != size_)
    throw Error(ErrorCode::FileSizeMismatch, file, "",
                "file is " + std::to_string(size_) + " bytes but its header says " + std::to_string(file_size) +
                    (size_ < file_size ? " (truncated?)" : " (bytes appended?)"));
  const uint64_t moff = detail::load_le64(base_ + 16);
  const uint64_t msize = detail::load_le64(base_ + 24);
  unsigned long long mend;
  if (moff < kQpackHeaderSize || add_overflows_u64(moff, msize, &mend) || mend != size_)
    throw Error(ErrorCode::BadManifest, file, "",
                "manifest at offset " + std::to_string(moff) + " size " + std::to_string(msize) +
                    " does not end the file (" + std::to_string(size_) + " bytes)");
  if (msize > kQpackMaxManifest)
    throw Error(ErrorCode::BadManifest, file, "",
                "manifest of " + std::to_string(msize) + " bytes exceeds the limit of " +
                    std::to_string(kQpackMaxManifest));
  const uint64_t msum = detail::load_le64(base_ + 32);
  const uint64_t mactual = checksum64(base_ + moff, size_t(msize));
  if (msum != mactual)
    throw Error(ErrorCode::ManifestChecksumMismatch, file, "",
                "manifest checksum " + checksum_to_hex(mactual) + " does not match the header's " +
                    checksum_to_hex(msum) + ": the manifest is corrupt");

  const char* mtext = reinterpret_cast<const char*>(base_ + moff);
  json m;
  const auto pr = detail::parse_json_strict(mtext, mtext + msize, &m);
  if (!pr.ok()) throw Error(ErrorCode::BadManifestJson, file, "", "manifest: " + pr.describe());
  const ManifestReader r{file};
  if (!m.is_object()) r.fail("", std::string("the top level is a JSON ") + json_type_name(m) + ", not an object");

  const std::string& version = r.str(m, "qpack_version", "manifest", "");
  {
    const size_t dot = version.find('.');
    const std::string maj = version.substr(0, dot);
    if (dot == std::string::npos || maj.empty() || maj.size() > 5 ||
        maj.find_first_not_of("0123456789") != std::string::npos)
      r.fail("", "qpack_version '" + version + "' is not MAJOR.MINOR");
    if (std::stoul(maj) != major_)
      throw Error(ErrorCode::ManifestMismatch, file, "",
                  "manifest qpack_version '" + version + "' disagrees with the header's version " +
                      std::to_string(major_) + "." + std::to_string(minor_));
  }
  r.str(m, "generator", "manifest", "");
  const uint64_t alignment = r.u64(m, "alignment", "manifest", "");
  if (alignment < kQpackAlignment || (alignment & (alignment - 1)) != 0)
    r.fail("", "alignment " + std::to_string(alignment) + " is not a power of two >= 64");
  const json& source = r.obj(m, "source", "manifest", "");
  r.str(source, "format", "source", "");
  const json& meta = r.obj(source, "metadata", "source", "");
  for (const auto& [k, v] : meta.items())
    if (!v.is_string()) r.fail("", "source.metadata value of '" + k + "' is not a string");
  const json& config = r.req(source, "config", "source", "");
  if (!config.is_object() && !config.is_null()) r.fail("", "source.config is neither an object nor null");
  const json& tensors = r.req(m, "tensors", "manifest", "");
  if (!tensors.is_array()) r.fail("", "tensors is not an array");

  struct Span {
    uint64_t begin, end;
    size_t tensor;  // index into `out`
    const char* section;
  };
  std::vector<Span> spans;
  std::unordered_set<std::string> names;
  std::vector<QpackTensor> out;
  out.reserve(tensors.size());

  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const json& tj = tensors[ti];
    const std::string where = "tensors[" + std::to_string(ti) + "]";
    if (!tj.is_object()) r.fail("", where + " is not an object");
    QpackTensor t;
    t.name = r.str(tj, "name", where, "");
    const std::string& name = t.name;
    if (!names.insert(name).second)
      throw Error(ErrorCode::DuplicateName, file, name, "tensor name appears twice in the manifest");
    const std::string& dts = r.str(tj, "dtype", where, name);
    const auto dt = dtype_from_string(dts);
    if (!dt) throw Error(ErrorCode::UnknownDtype, file, name, "unknown dtype '" + dts + "'");
    t.dtype = *dt;
    const json& shape = r.req(tj, "shape", where, name);
    if (!shape.is_array()) r.fail(name, where + ".shape is not an array");
    unsigned long long count = 1;
    bool overflow = false;
    for (const json& d : shape) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        r.fail(name, where + ".shape holds " + detail::dump_lenient(d) + ", not a non-negative integer");
      t.shape.push_back(int64_t(d.get<uint64_t>()));
      overflow = overflow || mul_overflows_u64(count, d.get<uint64_t>(), &count);
    }
    unsigned long long bits = 0;
    if (overflow || mul_overflows_u64(count, (unsigned long long)dtype_bits(t.dtype), &bits))
      throw Error(ErrorCode::ManifestMismatch, file, name,
                  "shape " + shape_to_string(t.shape) + " is too large");
    const std::string& encoding = r.str(tj, "encoding", where, name);
    const json& sections = r.obj(tj, "sections", where, name);

    auto section = [&](const char* key, uint64_t expected_raw) {
      const std::string swhere = where + ".sections." + key;
      const json& sj = r.req(sections, key, where + ".sections", name);
      if (!sj.is_object()) r.fail(name, swhere + " is not an object");
      Section s;
      s.present = true;
      s.offset = r.u64(sj, "offset", swhere, name);
      s.size = r.u64(sj, "size", swhere, name);
      s.raw_size = r.u64(sj, "raw_size", swhere, name);
      const std::string& codec = r.str(sj, "codec", swhere, name);
      if (codec == "none") s.codec = Codec::None;
      else if (codec == "zstd") s.codec = Codec::Zstd;
      else throw Error(ErrorCode::BadCodec, file, name, std::string("section '") + key + "' has unknown codec '" + codec + "'");
      const std::string& hex = r.str(sj, "xxh3", swhere, name);
      if (!checksum_from_hex(hex, &s.checksum))
        r.fail(name, swhere + ".xxh3 '" + hex + "' is not 16 lower-case hex digits");
      if (s.offset % alignment != 0)
        throw Error(ErrorCode::SectionMisaligned, file, name,
                    std::string("section '") + key + "' at offset " + std::to_string(s.offset) +
                        " is not a multiple of " + std::to_string(alignment));
      unsigned long long end;
      if (s.offset < kQpackHeaderSize || add_overflows_u64(s.offset, s.size, &end) || end > moff)
        throw Error(ErrorCode::SectionOutOfRange, file, name,
                    std::string("section '") + key + "' at offset " + std::to_string(s.offset) + " size " +
                        std::to_string(s.size) + " is not within the data area [64, " + std::to_string(moff) + ")");
      if (s.raw_size != expected_raw)
        throw Error(ErrorCode::ManifestMismatch, file, name,
                    std::string("section '") + key + "' raw_size " + std::to_string(s.raw_size) +
                        " but shape and scheme imply " + std::to_string(expected_raw));
      if (s.codec == Codec::None && s.size != s.raw_size)
        throw Error(ErrorCode::ManifestMismatch, file, name,
                    std::string("section '") + key + "' has codec none but size " + std::to_string(s.size) +
                        " != raw_size " + std::to_string(s.raw_size));
      if (s.size > 0) spans.push_back(Span{s.offset, end, ti, key});
      return s;
    };

    if (encoding == "raw") {
      if (bits % 8 != 0)
        throw Error(ErrorCode::ManifestMismatch, file, name,
                    "shape " + shape_to_string(t.shape) + " of " + dtype_name(t.dtype) +
                        " is not a whole number of bytes");
      t.data = section("data", bits / 8);
    } else if (encoding == "group_quant") {
      const json& q = r.obj(tj, "quant", where, name);
      const std::string qwhere = where + ".quant";
      const uint64_t qbits = r.u64(q, "bits", qwhere, name);
      const uint64_t gs = r.u64(q, "group_size", qwhere, name);
      const uint64_t axis = r.u64(q, "axis", qwhere, name);
      const bool symmetric = r.boolean(q, "symmetric", qwhere, name);
      const std::string& sds = r.str(q, "scale_dtype", qwhere, name);
      if (qbits != 2 && qbits != 3 && qbits != 4 && qbits != 8)
        throw Error(ErrorCode::UnsupportedScheme, file, name, "bits " + std::to_string(qbits) + " (must be 2, 3, 4 or 8)");
      const auto sd = dtype_from_string(sds);
      if (!sd || !is_scale_dtype(*sd))
        throw Error(ErrorCode::UnsupportedScheme, file, name, "scale dtype '" + sds + "' (must be F16, BF16 or F32)");
      if (!is_quantizable(t.dtype))
        throw Error(ErrorCode::ManifestMismatch, file, name,
                    std::string("group_quant tensor has source dtype ") + dtype_name(t.dtype) +
                        " (only F16, BF16, F32 are quantized)");
      if (t.shape.empty()) throw Error(ErrorCode::ManifestMismatch, file, name, "a 0-d tensor cannot be group_quant");
      if (axis >= t.shape.size())
        throw Error(ErrorCode::ManifestMismatch, file, name,
                    "axis " + std::to_string(axis) + " is out of range for a " + std::to_string(t.shape.size()) +
                        "-d tensor");
      if (gs < 1 || gs > uint64_t(std::numeric_limits<int64_t>::max()))
        throw Error(ErrorCode::ManifestMismatch, file, name, "group_size " + std::to_string(gs) + " is not resolved");
      t.scheme.bits = int(qbits);
      t.scheme.group_size = int64_t(gs);
      t.scheme.axis = int(axis);
      t.scheme.symmetric = symmetric;
      t.scheme.scale_dtype = *sd;
      try {
        t.layout = make_layout(t.shape, t.scheme, name);
      } catch (const Error& e) {
        throw Error(ErrorCode::ManifestMismatch, file, name, e.reason());
      }
      if (t.layout.group_size != t.scheme.group_size)
        throw Error(ErrorCode::ManifestMismatch, file, name,
                    "group_size " + std::to_string(gs) + " is not resolved for an axis of length " +
                        std::to_string(t.layout.axis_len) + " (expected " + std::to_string(t.layout.group_size) + ")");
      unsigned long long codes_bytes, groups, scale_bytes;
      if (mul_overflows_u64((unsigned long long)t.layout.outer, (unsigned long long)t.layout.groups_per_axis, &groups) ||
          mul_overflows_u64(groups, (unsigned long long)t.layout.bytes_per_group, &codes_bytes) ||
          mul_overflows_u64(codes_bytes, (unsigned long long)t.layout.inner, &codes_bytes) ||
          mul_overflows_u64(groups, (unsigned long long)t.layout.inner, &groups) ||
          mul_overflows_u64(groups, scale_size(*sd), &scale_bytes))
        throw Error(ErrorCode::ManifestMismatch, file, name, "section sizes overflow");
      t.quantized = true;
      t.codes = section("codes", codes_bytes);
      t.scales = section("scales", scale_bytes);
      if (symmetric) {
        if (sections.contains("zeros"))
          throw Error(ErrorCode::ManifestMismatch, file, name, "a symmetric tensor has a 'zeros' section");
      } else {
        t.zeros = section("zeros", scale_bytes);
      }
    } else {
      r.fail(name, where + ".encoding '" + encoding + "' is neither 'raw' nor 'group_quant'");
    }
    out.push_back(std::move(t));
  }

  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end)
      throw Error(ErrorCode::SectionOverlap, file, out[spans[i].tensor].name,
                  std::string("section '") + spans[i].section + "' [" + std::to_string(spans[i].begin) + ", " +
                      std::to_string(spans[i].end) + ") overlaps section '" + spans[i - 1].section +
                      "' of tensor '" + out[spans[i - 1].tensor].name + "' [" + std::to_string(spans[i - 1].begin) + ", " +
                      std::to_string(spans[i - 1].end) + ")");

  manifest_ = std::move(m);
  tensors_ = std::move(out);
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_.emplace(tensors_[i].name, i);
}

const QpackTensor* QpackFile::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const nlohmann::json& QpackFile::source_metadata() const { return manifest_.at("source").at("metadata"); }
const nlohmann::json& QpackFile::source_config() const { return manifest_.at("source").at("config"); }

SectionBytes QpackFile::read(const QpackTensor& t, const Section& s) const {
  const char* sname = section_name(t, s);
  if (!s.present) throw Error(ErrorCode::Internal, path_, t.name, std::string("no section '") + sname + "'");
  if (s.offset > size_ || s.size > size_ - s.offset)
    throw Error(ErrorCode::SectionOutOfRange, path_, t.name, std::string("section '") + sname + "' is outside the file");
  const uint8_t* p = base_ + s.offset;
  const uint64_t actual = checksum64(p, size_t(s.size));
  if (actual != s.checksum)
    throw Error(ErrorCode::ChecksumMismatch, path_, t.name,
                std::string("section '") + sname + "' checksum " + checksum_to_hex(actual) +
                    " does not match the manifest's " + checksum_to_hex(s.checksum) + ": the data is corrupt");
  SectionBytes out;
  if (s.codec == Codec::None) {
    out.data = p;
    out.size = s.size;
    return out;
  }
  auto fail = [&](const std::string& why) {
    return Error(ErrorCode::Decompress, path_, t.name, std::string("section '") + sname + "': " + why);
  };
  const size_t frame = ZSTD_findFrameCompressedSize(p, size_t(s.size));
  if (ZSTD_isError(frame)) throw fail(std::string("not a zstd frame: ") + ZSTD_getErrorName(frame));
  if (frame != s.size) throw fail("stored bytes are not exactly one zstd frame");
  const unsigned long long content = ZSTD_getFrameContentSize(p, size_t(s.size));
  if (content == ZSTD_CONTENTSIZE_ERROR) throw fail("bad zstd frame header");
  if (content == ZSTD_CONTENTSIZE_UNKNOWN) throw fail("zstd frame does not declare its content size");
  if (content != s.raw_size)
    throw fail("zstd frame holds " + std::to_string(content) + " bytes, raw_size is " + std::to_string(s.raw_size));
  unsigned long long limit;
  if (!mul_overflows_u64(s.size, kZstdMaxExpansion, &limit) && s.raw_size > limit)
    throw fail("raw_size " + std::to_string(s.raw_size) + " cannot come from a " + std::to_string(s.size) +
               "-byte zstd frame");

  // Decoded in chunks so that memory grows with what the frame really holds,
  // not with what its header claims.
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) throw Error(ErrorCode::Internal, path_, t.name, "cannot create a zstd context");
  out.owned.reserve(size_t(s.raw_size));
  ZSTD_inBuffer in{p, size_t(s.size), 0};
  constexpr size_t kChunk = size_t(1) << 22;
  size_t ret = 1;
  while (out.owned.size() < s.raw_size) {
    const size_t have = out.owned.size();
    const size_t in_before = in.pos;
    const size_t grow = size_t(std::min<uint64_t>(kChunk, s.raw_size - have));
    out.owned.resize(have + grow);
    ZSTD_outBuffer ob{out.owned.data() + have, grow, 0};
    ret = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(ret)) throw fail(std::string("zstd: ") + ZSTD_getErrorName(ret));
    out.owned.resize(have + ob.pos);
    if (ob.pos == 0 && ret != 0 && (in.pos == in.size || in.pos == in_before))
      throw fail("zstd frame ends early");
    if (ret == 0) break;
  }
  if (out.owned.size() != s.raw_size)
    throw fail("zstd frame decoded to " + std::to_string(out.owned.size()) + " bytes, raw_size is " +
               std::to_string(s.raw_size));
  if (ret != 0) {
    // All raw_size bytes are out; the frame must end here too.
    uint8_t extra;
    ZSTD_outBuffer ob{&extra, 1, 0};
    ret = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(ret)) throw fail(std::string("zstd: ") + ZSTD_getErrorName(ret));
    if (ob.pos != 0 || ret != 0) throw fail("zstd frame holds more than raw_size bytes");
  }
  out.data = out.owned.data();
  out.size = out.owned.size();
  return out;
}

void QpackFile::release(const Section& s) const { map_.release(s.offset, s.size); }

void QpackFile::check_all() const {
  for (const QpackTensor& t : tensors_)
    for (const Section* s : {&t.data, &t.codes, &t.scales, &t.zeros})
      if (s->present) {
        (void)read(t, *s);
        release(*s);
      }
}

// ===================================================================== writer

struct QpackWriter::Impl {
  AtomicOutputFile out;
  WriterOptions options;
  json tensors = json::array();
  std::unordered_set<std::string> names;
  json metadata = json::object();
  json config;  // null
  bool committed = false;
  ZSTD_CCtx* cctx = nullptr;
  std::vector<uint8_t> zbuf;

  Impl(const std::string& path, const WriterOptions& o) : out(path, o.overwrite), options(o) {}
  ~Impl() {
    if (cctx) ZSTD_freeCCtx(cctx);
  }
  const std::string& file() const { return out.final_path(); }
};

QpackWriter::QpackWriter(const std::string& path, const WriterOptions& options)
    : impl_(std::make_unique<Impl>(path, options)) {
  impl_->out.write_zeros(kQpackHeaderSize);  // the header is written last, in place
}

QpackWriter::~QpackWriter() = default;

void QpackWriter::set_source(nlohmann::json metadata, nlohmann::json config) {
  if (metadata.is_null()) metadata = json::object();
  if (!metadata.is_object())
    throw Error(ErrorCode::InvalidArgument, impl_->file(), "", "source metadata must be a JSON object");
  for (const auto& [k, v] : metadata.items())
    if (!v.is_string())
      throw Error(ErrorCode::InvalidArgument, impl_->file(), "", "source metadata value of '" + k + "' is not a string");
  if (!config.is_object() && !config.is_null())
    throw Error(ErrorCode::InvalidArgument, impl_->file(), "", "source config must be a JSON object or null");
  impl_->metadata = std::move(metadata);
  impl_->config = std::move(config);
}

namespace {

json section_json(const Section& s) {
  return {{"offset", s.offset},
          {"size", s.size},
          {"raw_size", s.raw_size},
          {"codec", codec_name(s.codec)},
          {"xxh3", checksum_to_hex(s.checksum)}};
}

}  // namespace

Section QpackWriter::write_section(const std::string& tensor, const void* data, uint64_t size) {
  Impl& w = *impl_;
  if (size > 0 && data == nullptr) throw Error(ErrorCode::InvalidArgument, w.file(), tensor, "null section data");
  const uint64_t pad = (kQpackAlignment - w.out.position() % kQpackAlignment) % kQpackAlignment;
  w.out.write_zeros(pad);
  Section s;
  s.present = true;
  s.offset = w.out.position();
  s.raw_size = size;
  const void* stored = data;
  uint64_t stored_size = size;
  if (w.options.codec == Codec::Zstd && size > 0) {
    if (!w.cctx) {
      w.cctx = ZSTD_createCCtx();
      if (!w.cctx) throw Error(ErrorCode::Internal, w.file(), tensor, "cannot create a zstd context");
    }
    const size_t bound = ZSTD_compressBound(size_t(size));
    if (w.zbuf.size() < bound) w.zbuf.resize(bound);
    const size_t n = ZSTD_compressCCtx(w.cctx, w.zbuf.data(), bound, data, size_t(size), w.options.zstd_level);
    if (ZSTD_isError(n))
      throw Error(ErrorCode::Internal, w.file(), tensor, std::string("zstd: ") + ZSTD_getErrorName(n));
    if (n < size) {  // otherwise compression does not pay: store as is
      stored = w.zbuf.data();
      stored_size = n;
      s.codec = Codec::Zstd;
    }
  }
  s.size = stored_size;
  if (stored_size >= (uint64_t(1) << 20)) {
    // Hashing and write() each take about as long per byte as the other on
    // a large section; on two threads they overlap. (The future's
    // destructor waits for the hash if the write throws.)
    std::future<uint64_t> sum =
        std::async(std::launch::async, [stored, stored_size] { return checksum64(stored, size_t(stored_size)); });
    w.out.write(stored, size_t(stored_size));
    s.checksum = sum.get();
  } else {
    s.checksum = checksum64(stored, size_t(stored_size));
    w.out.write(stored, size_t(stored_size));
  }
  return s;
}

namespace {

void check_name(const std::string& file, const std::string& name, std::unordered_set<std::string>& names) {
  try {
    (void)json(name).dump();
  } catch (const json::exception&) {
    throw Error(ErrorCode::InvalidArgument, file, "", "tensor name is not valid UTF-8");
  }
  if (!names.insert(name).second) throw Error(ErrorCode::DuplicateName, file, name, "tensor added twice");
}

uint64_t checked_nbytes(const std::string& file, const std::string& name, const std::vector<int64_t>& shape,
                        DType dtype) {
  unsigned long long n = 1;
  for (int64_t d : shape)
    if (d < 0 || mul_overflows_u64(n, (unsigned long long)d, &n))
      throw Error(ErrorCode::InvalidArgument, file, name, "bad shape " + shape_to_string(shape));
  unsigned long long bits;
  if (mul_overflows_u64(n, (unsigned long long)dtype_bits(dtype), &bits) || bits % 8 != 0)
    throw Error(ErrorCode::InvalidArgument, file, name,
                "shape " + shape_to_string(shape) + " of " + dtype_name(dtype) + " is not a whole number of bytes");
  return bits / 8;
}

}  // namespace

void QpackWriter::add_raw(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                          const void* data, uint64_t size) {
  Impl& w = *impl_;
  if (w.committed) throw Error(ErrorCode::InvalidArgument, w.file(), name, "writer already committed");
  const uint64_t want = checked_nbytes(w.file(), name, shape, dtype);
  if (want != size)
    throw Error(ErrorCode::InvalidArgument, w.file(), name,
                "shape " + shape_to_string(shape) + " of " + dtype_name(dtype) + " needs " +
                    std::to_string(want) + " bytes, got " + std::to_string(size));
  check_name(w.file(), name, w.names);
  const Section s = write_section(name, data, size);
  w.tensors.push_back({{"name", name},
                       {"dtype", dtype_name(dtype)},
                       {"shape", shape},
                       {"encoding", "raw"},
                       {"sections", {{"data", section_json(s)}}}});
}

void QpackWriter::add_quantized(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                const QuantScheme& scheme, const void* codes, const void* scales,
                                const void* zeros) {
  Impl& w = *impl_;
  if (w.committed) throw Error(ErrorCode::InvalidArgument, w.file(), name, "writer already committed");
  if (!is_quantizable(dtype))
    throw Error(ErrorCode::UnsupportedDtype, w.file(), name,
                std::string("cannot group-quantize a ") + dtype_name(dtype) + " tensor");
  checked_nbytes(w.file(), name, shape, dtype);
  GroupLayout layout;
  try {
    layout = make_layout(shape, scheme, name);
  } catch (const Error& e) {
    throw Error(e.code(), w.file(), name, e.reason());
  }
  if (scheme.symmetric && zeros)
    throw Error(ErrorCode::InvalidArgument, w.file(), name, "a symmetric tensor has no zero-points");
  if (!scheme.symmetric && !zeros && layout.num_groups() > 0)
    throw Error(ErrorCode::InvalidArgument, w.file(), name, "an asymmetric tensor needs zero-points");
  check_name(w.file(), name, w.names);
  // The file always records the resolved scheme (docs/format.md §3.1).
  QuantScheme rs = scheme;
  rs.group_size = layout.group_size;
  rs.axis = layout.axis;
  const uint64_t sbytes = uint64_t(layout.num_groups()) * scale_size(scheme.scale_dtype);
  json sections = json::object();
  sections["codes"] = section_json(write_section(name, codes, layout.codes_bytes()));
  sections["scales"] = section_json(write_section(name, scales, sbytes));
  if (!rs.symmetric) sections["zeros"] = section_json(write_section(name, zeros, sbytes));
  w.tensors.push_back({{"name", name},
                       {"dtype", dtype_name(dtype)},
                       {"shape", shape},
                       {"encoding", "group_quant"},
                       {"quant",
                        {{"bits", rs.bits},
                         {"group_size", rs.group_size},
                         {"axis", rs.axis},
                         {"symmetric", rs.symmetric},
                         {"scale_dtype", dtype_name(rs.scale_dtype)}}},
                       {"sections", std::move(sections)}});
}

uint64_t QpackWriter::bytes_written() const { return impl_->out.position(); }

void QpackWriter::commit() {
  Impl& w = *impl_;
  if (w.committed) throw Error(ErrorCode::InvalidArgument, w.file(), "", "writer already committed");
  const json manifest = {
      {"qpack_version", std::to_string(kQpackVersionMajor) + "." + std::to_string(kQpackVersionMinor)},
      {"generator", w.options.generator},
      {"alignment", kQpackAlignment},
      {"source", {{"format", "safetensors"}, {"metadata", w.metadata}, {"config", w.config}}},
      {"tensors", w.tensors}};
  std::string text;
  try {
    text = manifest.dump();
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, w.file(), "", std::string("manifest cannot be written: ") + e.what());
  }
  w.out.write_zeros((kQpackAlignment - w.out.position() % kQpackAlignment) % kQpackAlignment);
  const uint64_t moff = w.out.position();
  w.out.write(text.data(), text.size());
  const uint64_t file_size = w.out.position();

  uint8_t h[kQpackHeaderSize] = {};
  std::memcpy(h, kQpackMagic, 8);
  detail::store_le16(h + 8, kQpackVersionMajor);
  detail::store_le16(h + 10, kQpackVersionMinor);
  detail::store_le32(h + 12, kQpackHeaderSize);
  detail::store_le64(h + 16, moff);
  detail::store_le64(h + 24, text.size());
  detail::store_le64(h + 32, checksum64(text.data(), text.size()));
  detail::store_le64(h + 40, file_size);
  detail::store_le64(h + 48, 0);
  detail::store_le64(h + 56, checksum64(h, 56));
  w.out.pwrite_at(0, h, sizeof h);
  w.out.commit();
  w.committed = true;
}

}  // namespace qpack
