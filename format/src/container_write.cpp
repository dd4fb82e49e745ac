// QpackWriter: sections streamed in the order of docs/format.md §6, the
// manifest after them, the header last.
#include <chrono>
#include <future>
#include <unordered_set>

#include "json_strict.hpp"
#include "qpack/format/checksum.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"
#include "section_codec.hpp"

namespace qpack {

using nlohmann::json;

struct QpackWriter::Impl {
  AtomicOutputFile out;
  WriterOptions options;
  json tensors = json::array();
  std::unordered_set<std::string> names;
  json metadata = json::object();
  json config;      // null
  json provenance;  // null: no "provenance" key
  json shard;       // null: no "shard" key
  bool committed = false;
  detail::ZstdSectionEncoder zstd;
  QpackWriter::Times times;

  Impl(const std::string& path, const WriterOptions& o)
      : out(path, o.overwrite), options(o), zstd(o.zstd_level) {}
  const std::string& file() const { return out.final_path(); }
};

QpackWriter::QpackWriter(const std::string& path, const WriterOptions& options)
    : impl_(std::make_unique<Impl>(path, options)) {
  impl_->out.write_zeros(QpackHeader::kSize);  // the header is written last, in place
}

QpackWriter::~QpackWriter() = default;

void QpackWriter::set_source(nlohmann::json metadata, nlohmann::json config) {
  if (metadata.is_null()) metadata = json::object();
  if (!metadata.is_object())
    throw Error(ErrorCode::InvalidArgument, impl_->file(), "",
                "source metadata must be a JSON object");
  for (const auto& [k, v] : metadata.items())
    if (!v.is_string())
      throw Error(ErrorCode::InvalidArgument, impl_->file(), "",
                  "source metadata value of '" + k + "' is not a string");
  if (!config.is_object() && !config.is_null())
    throw Error(ErrorCode::InvalidArgument, impl_->file(), "",
                "source config must be a JSON object or null");
  impl_->metadata = std::move(metadata);
  impl_->config = std::move(config);
}

void QpackWriter::set_provenance(nlohmann::json provenance) {
  if (!provenance.is_object())
    throw Error(ErrorCode::InvalidArgument, impl_->file(), "", "provenance must be a JSON object");
  impl_->provenance = std::move(provenance);
}

void QpackWriter::set_shard(nlohmann::json shard) {
  if (!shard.is_object())
    throw Error(ErrorCode::InvalidArgument, impl_->file(), "", "shard must be a JSON object");
  impl_->shard = std::move(shard);
}

namespace {

json section_json(const Section& s) {
  return {{"offset", s.offset},
          {"size", s.size},
          {"raw_size", s.raw_size},
          {"codec", codec_name(s.codec)},
          {"xxh3", checksum_to_hex(s.checksum)}};
}

// The manifest entries and the manifest itself, shared by the writer and
// planned_qpack_file_size so that a planned size is the written one.
json raw_tensor_json(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                     const Section& data) {
  return {{"name", name},
          {"dtype", dtype_name(dtype)},
          {"shape", shape},
          {"encoding", "raw"},
          {"sections", {{"data", section_json(data)}}}};
}

json quantized_tensor_json(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                           const QuantScheme& rs, json sections) {
  json quant = {{"bits", rs.bits},
                {"group_size", rs.group_size},
                {"axis", rs.axis},
                {"symmetric", rs.symmetric},
                {"scale_dtype", dtype_name(rs.scale_dtype)}};
  // Absent means the float rule: files without integer zero-points stay
  // byte for byte what version 1.0 wrote.
  if (has_integer_zero(rs)) quant["zero_point"] = "integer";
  // Absent means RTN: such files stay byte for byte what 1.0 wrote.
  if (rs.method != QuantMethod::Rtn) quant["method"] = method_name(rs.method);
  // Two-level scales (version 3): the super-block and the codes' width.
  if (has_two_level(rs))
    quant["two_level"] = {{"super_block", rs.super_block}, {"sub_bits", kSubScaleBits}};
  return {{"name", name},
          {"dtype", dtype_name(dtype)},
          {"shape", shape},
          {"encoding", "group_quant"},
          {"quant", std::move(quant)},
          {"sections", std::move(sections)}};
}

// The major version a file of these tensors needs (container.hpp).
uint16_t major_version_for(const json& tensors) {
  for (const json& t : tensors)
    if (t.contains("quant") && t.at("quant").contains("two_level"))
      return kQpackVersionMajorTwoLevel;
  for (const json& t : tensors)
    if (t.contains("quant") && t.at("quant").contains("zero_point"))
      return kQpackVersionMajorIntegerZero;
  return kQpackVersionMajor;
}

// The minor version: 1 when a tensor records a method (container.hpp).
uint16_t minor_version_for(const json& tensors) {
  for (const json& t : tensors)
    if (t.contains("quant") && t.at("quant").contains("method")) return kQpackVersionMinorMethod;
  return kQpackVersionMinor;
}

json manifest_json(const WriterOptions& options, const json& metadata, const json& config,
                   const json& tensors, const json& provenance) {
  json manifest = {
      {"qpack_version", std::to_string(major_version_for(tensors)) + "." +
                            std::to_string(minor_version_for(tensors))},
      {"generator", options.generator},
      {"alignment", kQpackAlignment},
      {"source", {{"format", "safetensors"}, {"metadata", metadata}, {"config", config}}},
      {"tensors", tensors}};
  if (!provenance.is_null()) manifest["provenance"] = provenance;
  return manifest;
}

uint64_t padding_to_alignment(uint64_t position) {
  return (kQpackAlignment - position % kQpackAlignment) % kQpackAlignment;
}

}  // namespace

Section QpackWriter::write_section(const std::string& tensor, const void* data, uint64_t size) {
  Impl& w = *impl_;
  if (size > 0 && data == nullptr)
    throw Error(ErrorCode::InvalidArgument, w.file(), tensor, "null section data");
  w.out.write_zeros(padding_to_alignment(w.out.position()));
  Section s;
  s.present = true;
  s.offset = w.out.position();
  s.raw_size = size;
  const void* stored = data;
  uint64_t stored_size = size;
  using clock = std::chrono::steady_clock;
  const auto since = [](clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
  };
  if (w.options.codec == Codec::Zstd && size > 0) {
    const auto t = clock::now();
    uint64_t n = 0;
    if (const uint8_t* frame = w.zstd.compress(data, size, &n, w.file(), tensor)) {
      stored = frame;
      stored_size = n;
      s.codec = Codec::Zstd;
    }  // else compression does not pay: stored as is
    w.times.compress += since(t);
  }
  s.size = stored_size;
  if (stored_size >= (uint64_t(1) << 20)) {
    // Hashing and write() each take about as long per byte as the other on
    // a large section; on two threads they overlap. (The future's
    // destructor waits for the hash if the write throws.)
    std::future<std::pair<uint64_t, double>> sum =
        std::async(std::launch::async, [stored, stored_size, since] {
          const auto t = clock::now();
          const uint64_t v = checksum64(stored, size_t(stored_size));
          return std::make_pair(v, since(t));
        });
    const auto t = clock::now();
    w.out.write(stored, size_t(stored_size));
    w.times.write += since(t);
    const auto [v, secs] = sum.get();
    s.checksum = v;
    w.times.checksum += secs;
  } else {
    auto t = clock::now();
    s.checksum = checksum64(stored, size_t(stored_size));
    w.times.checksum += since(t);
    t = clock::now();
    w.out.write(stored, size_t(stored_size));
    w.times.write += since(t);
  }
  return s;
}

namespace {

void check_name(const std::string& file, const std::string& name,
                std::unordered_set<std::string>& names) {
  try {
    (void)json(name).dump();
  } catch (const json::exception&) {
    throw Error(ErrorCode::InvalidArgument, file, "", "tensor name is not valid UTF-8");
  }
  if (!names.insert(name).second)
    throw Error(ErrorCode::DuplicateName, file, name, "tensor added twice");
}

uint64_t checked_nbytes(const std::string& file, const std::string& name,
                        const std::vector<int64_t>& shape, DType dtype) {
  unsigned long long n = 1;
  for (int64_t d : shape)
    if (d < 0 || mul_overflows_u64(n, (unsigned long long)d, &n))
      throw Error(ErrorCode::InvalidArgument, file, name, "bad shape " + shape_to_string(shape));
  unsigned long long bits;
  if (mul_overflows_u64(n, (unsigned long long)dtype_bits(dtype), &bits) || bits % 8 != 0)
    throw Error(ErrorCode::InvalidArgument, file, name,
                "shape " + shape_to_string(shape) + " of " + dtype_name(dtype) +
                    " is not a whole number of bytes");
  return bits / 8;
}

}  // namespace

void QpackWriter::add_raw(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                          const void* data, uint64_t size) {
  Impl& w = *impl_;
  if (w.committed)
    throw Error(ErrorCode::InvalidArgument, w.file(), name, "writer already committed");
  const uint64_t want = checked_nbytes(w.file(), name, shape, dtype);
  if (want != size)
    throw Error(ErrorCode::InvalidArgument, w.file(), name,
                "shape " + shape_to_string(shape) + " of " + dtype_name(dtype) + " needs " +
                    std::to_string(want) + " bytes, got " + std::to_string(size));
  check_name(w.file(), name, w.names);
  const Section s = write_section(name, data, size);
  w.tensors.push_back(raw_tensor_json(name, dtype, shape, s));
}

void QpackWriter::add_quantized(const std::string& name, DType dtype,
                                const std::vector<int64_t>& shape, const QuantScheme& scheme,
                                const void* codes, const void* scales, const void* zeros) {
  Impl& w = *impl_;
  if (w.committed)
    throw Error(ErrorCode::InvalidArgument, w.file(), name, "writer already committed");
  if (!is_quantizable(dtype))
    throw Error(ErrorCode::UnsupportedDtype, w.file(), name,
                std::string("cannot group-quantize a ") + dtype_name(dtype) + " tensor");
  checked_nbytes(w.file(), name, shape, dtype);
  GroupLayout layout;
  try {
    layout = make_layout(shape, scheme, name);
  } catch (const Error& e) {
    throw e.with_context(w.file(), name);
  }
  if (scheme.symmetric && zeros)
    throw Error(ErrorCode::InvalidArgument, w.file(), name,
                "a symmetric tensor has no zero-points");
  if (!scheme.symmetric && !zeros && layout.num_groups() > 0)
    throw Error(ErrorCode::InvalidArgument, w.file(), name,
                "an asymmetric tensor needs zero-points");
  check_name(w.file(), name, w.names);
  // The file always records the resolved scheme (docs/format.md §3.1).
  QuantScheme rs = scheme;
  rs.group_size = layout.group_size;
  rs.axis = layout.axis;
  QpackTensor t;
  t.quantized = true;
  t.scheme = rs;
  t.layout = layout;
  json sections = json::object();
  for (const TensorSection& ts : t.sections()) {
    const void* src = ts.kind == SectionKind::Codes    ? codes
                      : ts.kind == SectionKind::Scales ? scales
                                                       : zeros;
    sections[ts.name] = section_json(write_section(name, src, ts.raw_size));
  }
  w.tensors.push_back(quantized_tensor_json(name, dtype, shape, rs, std::move(sections)));
}

void QpackWriter::add_copied(const QpackFile& from, size_t index) {
  Impl& w = *impl_;
  if (w.committed)
    throw Error(ErrorCode::InvalidArgument, w.file(), "", "writer already committed");
  const QpackTensor& t = from.tensors().at(index);
  json entry = from.manifest().at("tensors").at(index);
  check_name(w.file(), t.name, w.names);
  for (const TensorSection& ts : t.sections()) {
    const Section& s = *ts.section;
    const uint8_t* stored = from.stored(s);
    w.out.write_zeros(padding_to_alignment(w.out.position()));
    const uint64_t offset = w.out.position();
    const uint64_t sum = checksum64(stored, size_t(s.size));
    if (sum != s.checksum)
      throw Error(ErrorCode::ChecksumMismatch, from.path(), t.name,
                  std::string("section '") + ts.name + "' checksum " + checksum_to_hex(sum) +
                      " does not match the manifest's " + checksum_to_hex(s.checksum) +
                      ": the data is corrupt");
    w.out.write(stored, size_t(s.size));
    from.release(s);
    entry.at("sections").at(ts.name)["offset"] = offset;
  }
  w.tensors.push_back(std::move(entry));
}

uint64_t QpackWriter::bytes_written() const { return impl_->out.position(); }

void QpackWriter::commit() {
  Impl& w = *impl_;
  if (w.committed)
    throw Error(ErrorCode::InvalidArgument, w.file(), "", "writer already committed");
  const auto t0 = std::chrono::steady_clock::now();
  json manifest = manifest_json(w.options, w.metadata, w.config, w.tensors, w.provenance);
  if (!w.shard.is_null()) manifest["shard"] = w.shard;
  std::string text;
  try {
    text = manifest.dump();
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, w.file(), "",
                std::string("manifest cannot be written: ") + e.what());
  }
  w.out.write_zeros(padding_to_alignment(w.out.position()));
  const uint64_t moff = w.out.position();
  w.out.write(text.data(), text.size());
  const uint64_t file_size = w.out.position();

  QpackHeader h;
  h.version_major = major_version_for(w.tensors);
  h.version_minor = minor_version_for(w.tensors);
  h.manifest_offset = moff;
  h.manifest_size = text.size();
  h.manifest_xxh3 = checksum64(text.data(), text.size());
  h.file_size = file_size;
  h.seal();
  uint8_t bytes[QpackHeader::kSize];
  h.encode(bytes);
  w.out.pwrite_at(0, bytes, sizeof bytes);
  w.out.commit();
  w.committed = true;
  w.times.commit += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

QpackWriter::Times QpackWriter::times() const { return impl_->times; }

uint64_t planned_qpack_file_size(const std::vector<PlannedQpackTensor>& tensors,
                                 const nlohmann::json& metadata, const nlohmann::json& config,
                                 const nlohmann::json& provenance, const WriterOptions& options) {
  uint64_t pos = QpackHeader::kSize;
  // Where write_section would put a section of `size` bytes stored as is.
  auto place = [&pos](uint64_t size) {
    pos += padding_to_alignment(pos);
    Section s;
    s.present = true;
    s.offset = pos;
    s.size = size;
    s.raw_size = size;
    pos += size;
    return s;
  };
  json entries = json::array();
  for (const PlannedQpackTensor& p : tensors) {
    if (!p.quantized) {
      unsigned long long n = 1;
      for (int64_t d : p.shape)
        if (d < 0 || mul_overflows_u64(n, (unsigned long long)d, &n))
          throw Error(ErrorCode::InvalidArgument, "", p.name,
                      "bad shape " + shape_to_string(p.shape));
      const uint64_t bytes = uint64_t(n) * uint64_t(dtype_bits(p.dtype)) / 8;
      entries.push_back(raw_tensor_json(p.name, p.dtype, p.shape, place(bytes)));
      continue;
    }
    QpackTensor t;
    t.quantized = true;
    t.layout = make_layout(p.shape, p.scheme, p.name);
    t.scheme = p.scheme;
    t.scheme.group_size = t.layout.group_size;
    t.scheme.axis = t.layout.axis;
    json sections = json::object();
    for (const TensorSection& ts : t.sections())
      sections[ts.name] = section_json(place(ts.raw_size));
    entries.push_back(
        quantized_tensor_json(p.name, p.dtype, p.shape, t.scheme, std::move(sections)));
  }
  const json meta = metadata.is_null() ? json::object() : metadata;
  std::string text;
  try {
    text = manifest_json(options, meta, config, entries, provenance).dump();
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, "", "",
                std::string("manifest cannot be written: ") + e.what());
  }
  return pos + padding_to_alignment(pos) + text.size();
}

}  // namespace qpack
