// verify() for GGUF files (qpack/verify/verify.hpp): the reader's validation
// as the integrity check, then every tensor decoded by ggml's rules and
// compared with the source (a GGUF or a safetensors checkpoint with the same
// tensor names) in the fixed order of qpack/spec/float_error_sums.hpp, so
// the report is the same for every thread count and for the CPU and CUDA
// decoders (which give the same floats). Streams: one slice of one tensor's
// floats at a time; mapped pages are released after each tensor.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>

#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/gguf_llama.hpp"
#include "qpack/format/text.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/spec/float_error_sums.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/verify/metrics.hpp"
#include "qpack/version.hpp"
#include "verify_detail.hpp"

namespace qpack {

namespace {

using namespace verify_detail;

int dtype_bytes(DType d) { return dtype_bits(d) / 8; }

std::vector<int64_t> reversed(const std::vector<int64_t>& ne) {
  return std::vector<int64_t>(ne.rbegin(), ne.rend());
}

// ----------------------------------------------------------- the decoders

bool spec_legacy_supported(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0:
      return true;
    default:
      return false;
  }
}

// Without a decoder from the caller: the spec's reference, block by block.
void spec_legacy_dequantize(GgmlType type, const uint8_t* blocks, int64_t n, float* out,
                            int threads, const std::string&) {
  const auto t = spec::ggml::GgmlLegacyType(uint32_t(type));
  const int64_t bytes = spec::ggml::block_bytes(t);
  const int64_t nb = n / spec::ggml::kBlockElements;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < nb; ++b)
    spec::ggml::dequantize_block(t, blocks + b * bytes, out + b * spec::ggml::kBlockElements);
}

// Decodes slices of a GGUF tensor's blocks into floats: on the device for
// the types cuda_block_type_supported names, on the CPU otherwise.
class Decoder {
 public:
  Decoder(const VerifyOptions& opt, cuda::GgmlBlocksDeviceDecoder* gpu, int threads)
      : opt_(opt), gpu_(gpu), threads_(threads) {}
  bool supported(GgmlType t) const {
    if (ggml_plain_dtype(t)) return true;
    if (gpu_ && cuda::cuda_block_type_supported(uint32_t(t))) return true;
    return opt_.ggml_supported ? opt_.ggml_supported(t) : spec_legacy_supported(t);
  }
  // Elements [e0, e0 + m) of `t` (e0 and m whole blocks) as floats.
  void decode(const GgufTensorInfo& t, const uint8_t* data, int64_t e0, int64_t m,
              float* out) const {
    if (const auto plain = ggml_plain_dtype(t.type)) {
#pragma omp parallel for schedule(static) num_threads(threads_)
      for (int64_t i = 0; i < m; ++i) out[i] = load_plain(data, *plain, uint64_t(e0 + i));
      return;
    }
    const GgmlTypeInfo* info = ggml_type_info(uint32_t(t.type));
    const uint8_t* blocks = data + uint64_t(e0 / info->block_size) * info->type_size;
    const uint64_t nbytes = uint64_t(m / info->block_size) * info->type_size;
    if (gpu_ && cuda::cuda_block_type_supported(uint32_t(t.type)))
      gpu_->dequantize(uint32_t(t.type), blocks, nbytes, m, out, t.name);
    else if (opt_.ggml_dequantize)
      opt_.ggml_dequantize(t.type, blocks, m, out, threads_, t.name);
    else
      spec_legacy_dequantize(t.type, blocks, m, out, threads_, t.name);
  }
  static float load_plain(const uint8_t* p, DType d, uint64_t i) {
    switch (d) {
      case DType::F32:
      case DType::F16:
      case DType::BF16:
        return load_as_f32(p, d, i);
      case DType::F64: {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        return float(v);
      }
      default:
        return 0.0f;  // integers are compared as bytes, never decoded
    }
  }

 private:
  const VerifyOptions& opt_;
  cuda::GgmlBlocksDeviceDecoder* gpu_;
  int threads_;
};

// ----------------------------------------------------------- the source

// The source tensor a GGUF tensor is compared with.
struct SourceMatch {
  std::string name;  // in the source
  DType dtype = DType::F32;
  std::vector<int64_t> ne;  // GGUF order (ne[0] contiguous)
  const uint8_t* data = nullptr;
  std::string problem;  // set when the source tensor cannot be a source
  // GGUF row r (of row_elems elements) is source row row_map[r]; empty: the
  // same rows (the HF Llama Q/K permutation moves whole rows).
  std::vector<int64_t> row_map;
  int64_t row_elems = 1;
  // Computed from the source's config rather than read (rope_freqs.weight
  // of a llama3-scaled model): held here, and always measured, never
  // compared byte for byte (llama.cpp computes it in float32 steps).
  std::vector<float> computed;
  bool measure_always = false;
  std::function<void()> release;
};

// A GGUF file or a safetensors checkpoint with the same tensor names, or an
// HF Llama-family checkpoint (config.json beside it) whose names and Q/K rows
// are mapped to GGUF's (qpack/format/gguf_llama.hpp).
class Source {
 public:
  Source(const std::string& path, const GgufFile& target) {
    if (has_gguf_magic(path)) {
      gguf_ = GgufFile::open(path);
      return;
    }
    ck_ = Checkpoint::open(path);
    // HF names: none of the target's tensors is in the checkpoint by its own
    // name, and config.json says a Llama-family model.
    bool same_names = false;
    for (const auto& t : target.tensors()) same_names = same_names || ck_->find(t.name);
    if (same_names || target.tensors().empty() || ck_->config().is_null()) return;
    std::string dir =
        is_directory(path) ? path : std::filesystem::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    hf_ = parse_llama_config(ck_->config(), dir + "/config.json");
  }
  bool hf() const { return hf_.has_value(); }
  // The source's tensors as the GGUF names them; the tensors a GGUF leaves
  // out by llama.cpp's rules (rotary_emb.inv_freq) are not listed.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    if (gguf_) {
      for (const auto& t : gguf_->tensors()) n.push_back(t.name);
    } else if (hf_) {
      for (const auto& t : ck_->tensors()) {
        const LlamaTensorName m = llama_gguf_tensor_name(t.name());
        if (m.mapping == LlamaTensorMapping::Mapped)
          n.push_back(m.gguf_name);
        else if (m.mapping == LlamaTensorMapping::Unknown)
          n.push_back(t.name());  // never in a GGUF: reported as missing from it
      }
    } else {
      for (const auto& t : ck_->tensors()) n.push_back(t.name());
    }
    return n;
  }
  // The HF name of a GGUF tensor ("" when it has none).
  std::string hf_name(const std::string& gguf_name) const {
    if (!hf_) return {};
    std::string n = llama_hf_tensor_name(gguf_name).value_or("");
    // A tied model's output is its embedding (when a GGUF writes it at all).
    if (n == "lm_head.weight" && !ck_->find(n) && hf_->tie_word_embeddings)
      n = "model.embed_tokens.weight";
    return n;
  }
  std::optional<SourceMatch> find(const std::string& name) const {
    SourceMatch m;
    m.name = name;
    if (hf_) return find_hf(name);
    if (gguf_) {
      const GgufTensorInfo* t = gguf_->find(name);
      if (!t) return std::nullopt;
      m.ne = t->ne;
      m.data = gguf_->tensor_data(*t);
      const auto plain = ggml_plain_dtype(t->type);
      if (plain)
        m.dtype = *plain;
      else
        m.problem = std::string("the source tensor is ") + ggml_type_name(t->type) +
                    "; a source holds F32, F16 or BF16 tensors";
      const GgufFile* g = gguf_.get();
      m.release = [g, t] { g->release(*t); };
    } else {
      const CheckpointTensor* t = ck_->find(name);
      if (!t) return std::nullopt;
      m.ne = reversed(t->info->shape);
      m.dtype = t->info->dtype;
      m.data = t->data();
      m.release = [t] { t->file->release(*t->info); };
    }
    return m;
  }

 private:
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<Checkpoint> ck_;
  std::optional<LlamaConfig> hf_;

  std::optional<SourceMatch> find_hf(const std::string& gguf_name) const {
    SourceMatch m;
    if (gguf_name == "rope_freqs.weight" && hf_->rope_scaling_type == "llama3") {
      m.name = "(llama3 rope factors from config.json)";
      m.computed = llama3_rope_factors(*hf_);
      m.ne = {int64_t(m.computed.size())};
      m.dtype = DType::F32;
      m.data = reinterpret_cast<const uint8_t*>(m.computed.data());
      m.measure_always = true;
      return m;
    }
    m.name = hf_name(gguf_name);
    const CheckpointTensor* t = m.name.empty() ? nullptr : ck_->find(m.name);
    if (!t) return std::nullopt;
    m.ne = reversed(t->info->shape);
    m.dtype = t->info->dtype;
    m.data = t->data();
    m.release = [t] { t->file->release(*t->info); };
    const int64_t heads = llama_permute_heads(*hf_, gguf_name);
    if (heads > 0 && !m.ne.empty()) {
      // Weights: rows of ne[0]; biases (1-D): rows of one element.
      m.row_elems = m.ne.size() == 1 ? 1 : m.ne[0];
      const int64_t rows = m.ne.size() == 1 ? m.ne[0] : m.ne[1];
      if (rows % (2 * heads) == 0) {
        m.row_map = llama_qk_hf_rows(rows, heads);
      } else {
        m.problem = "rows " + std::to_string(rows) + " are not a multiple of 2 x " +
                    std::to_string(heads) + " heads (config.json): the Q/K rows cannot be mapped";
      }
    }
    return m;
  }
};

// ----------------------------------------------------------- per tensor

TensorResult describe(const GgufTensorInfo& t) {
  TensorResult r;
  r.name = t.name;
  r.layer = parse_layer(t.name);
  r.kind = tensor_kind(t.name);
  r.ggml_type = ggml_type_name(t.type);
  const auto plain = ggml_plain_dtype(t.type);
  r.dtype = plain ? *plain : DType::F32;
  r.shape = reversed(t.ne);
  r.quantized = !plain;
  r.elements = t.num_elements();
  r.stored_bytes = t.nbytes;
  return r;
}

template <DType D>
float load_one(const uint8_t* p, int64_t i) {
  if constexpr (D == DType::F64) {
    double v;
    std::memcpy(&v, p + 8 * i, 8);
    return float(v);
  } else {
    return load_as_f32(p, D, uint64_t(i));
  }
}

// Source elements [e0, e0 + m) in the GGUF tensor's order, as floats (one
// thread: called per summation block). Whole rows move under the row map.
template <DType D>
void load_reference_as(const SourceMatch& s, int64_t e0, int64_t m, float* out) {
  if (s.row_map.empty()) {
    for (int64_t i = 0; i < m; ++i) out[i] = load_one<D>(s.data, e0 + i);
    return;
  }
  const int64_t re = s.row_elems;
  for (int64_t e = e0; e < e0 + m;) {
    const int64_t c = e % re;
    const int64_t len = std::min(re - c, e0 + m - e);
    const int64_t src = s.row_map[size_t(e / re)] * re + c;
    for (int64_t j = 0; j < len; ++j) out[e - e0 + j] = load_one<D>(s.data, src + j);
    e += len;
  }
}

void load_reference(const SourceMatch& s, int64_t e0, int64_t m, float* out) {
  switch (s.dtype) {
    case DType::F16:
      return load_reference_as<DType::F16>(s, e0, m, out);
    case DType::BF16:
      return load_reference_as<DType::BF16>(s, e0, m, out);
    case DType::F64:
      return load_reference_as<DType::F64>(s, e0, m, out);
    default:
      return load_reference_as<DType::F32>(s, e0, m, out);
  }
}

// Blocks of `block` elements among v[0, m) holding a NaN or Inf (exponent
// bits all ones; an integer test the compiler vectorizes).
uint64_t nonfinite_blocks(const float* v, int64_t m, int64_t block) {
  uint64_t n = 0;
  for (int64_t b = 0; b < m / block; ++b) {
    uint32_t bad = 0;
    for (int64_t k = 0; k < block; ++k) {
      uint32_t u;
      std::memcpy(&u, v + b * block + k, 4);
      bad |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
    }
    n += bad;
  }
  return n;
}

// One slice: its floats already decoded into `hat`; per summation block
// (one parallel loop) the source floats, the block's sums and its
// non-finite ggml blocks.
void measure_slice(const SourceMatch& s, int64_t e0, int64_t m, const float* hat,
                   int64_t ggml_block, FloatErrorAccumulator& acc, uint64_t* nonfinite,
                   int threads) {
  const int64_t bn = spec::kFloatBlockElements;
  const int64_t nb = (m + bn - 1) / bn;
  std::vector<spec::PartialSums> parts(static_cast<size_t>(nb));
  const int64_t flat0 = acc.next_flat();
  uint64_t bad = 0;
#pragma omp parallel num_threads(threads) reduction(+ : bad)
  {
    std::vector<float> ref(static_cast<size_t>(bn));
    std::vector<spec::PartialSums> slots(spec::kBlockUnits);
#pragma omp for schedule(dynamic, 2)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k0 = b * bn;
      const int64_t mb = std::min(bn, m - k0);
      load_reference(s, e0 + k0, mb, ref.data());
      spec::float_block_sums(ref.data(), hat + k0, mb, flat0 + k0, slots.data());
      parts[size_t(b)] = slots[0];
      if (ggml_block > 0) bad += nonfinite_blocks(hat + k0, mb, ggml_block);
    }
  }
  acc.merge_blocks(parts.data(), m);
  *nonfinite += bad;
}

// Byte comparison of a tensor stored as its source's dtype (rows moved by
// the row map); "" when equal, else where they differ.
std::string raw_difference(const uint8_t* file, const SourceMatch& s, uint64_t nbytes) {
  const uint64_t row_bytes = uint64_t(s.row_elems) * uint64_t(dtype_bytes(s.dtype));
  auto first_diff = [](const uint8_t* a, const uint8_t* b, uint64_t n) -> int64_t {
    if (n == 0 || std::memcmp(a, b, n) == 0) return -1;
    uint64_t i = 0;
    while (a[i] == b[i]) ++i;
    return int64_t(i);
  };
  int64_t at = -1;
  if (s.row_map.empty()) {
    at = first_diff(file, s.data, nbytes);
  } else {
    for (size_t r = 0; r < s.row_map.size() && at < 0; ++r) {
      const int64_t d =
          first_diff(file + r * row_bytes, s.data + uint64_t(s.row_map[r]) * row_bytes, row_bytes);
      if (d >= 0) at = int64_t(r * row_bytes) + d;
    }
  }
  return at < 0 ? std::string()
                : "raw bytes differ from the source (first difference at byte " +
                      std::to_string(at) + ")";
}

void warn_about_blocks(const TensorResult& r, VerifyReport& rep, const VerifyOptions& opt) {
  if (r.nonfinite_params > 0)
    warn(rep, opt,
         r.name + ": " + count_of(r.nonfinite_params, "block") + " of " + r.ggml_type +
             " decode to NaN or Inf (a non-finite stored scale: a damaged file)");
  if (r.all_zero)
    warn(rep, opt,
         r.name + ": decoded as all zeros" +
             (rep.source.empty() ? std::string() : " while the source is not"));
}

}  // namespace

VerifyReport verify_gguf(const std::string& path, const std::string& source_path,
                         const VerifyOptions& opt) {
  const auto t_start = Clock::now();
  VerifyReport rep = start_report(path, source_path, opt, "gguf");

  // The device first, so that an unusable --device cuda fails before any work.
  std::unique_ptr<cuda::GgmlBlocksDeviceDecoder> gpu;
  const DeviceSelection device = resolve_device(opt.device);
  if (device.kind == DeviceKind::Cuda) {
    gpu = std::make_unique<cuda::GgmlBlocksDeviceDecoder>(device.index);
    cuda::DeviceInfo info;
    rep.device =
        cuda::query_device(device.index, &info).ok() ? cuda::describe(info) : device_name(device);
  } else {
    rep.device = "cpu (" + count_of(uint64_t(rep.threads), "thread") + ")";
  }
  const Decoder decoder(opt, gpu.get(), rep.threads);

  // 1. Integrity: GGUF has no checksums; the reader's validation (counts,
  // lengths, types, offsets inside the file, aligned, no overlap) is it.
  const auto t_int = Clock::now();
  std::unique_ptr<GgufFile> g;
  try {
    g = GgufFile::open(path);
  } catch (const Error& e) {
    if (is_io_error(e.code())) throw;
    rep.integrity_issues.push_back({e.tensor(), "", error_code_name(e.code()), e.reason()});
  }
  if (g) {
    rep.file_bytes = g->file_size();
    rep.format_version = std::to_string(g->version());
    rep.sections_checked = g->tensors().size();
    for (const auto& t : g->tensors()) rep.bytes_checked += t.nbytes;
  }
  rep.integrity_ok = rep.integrity_issues.empty();
  rep.integrity_seconds = seconds_since(t_int);
  if (!rep.integrity_ok) {
    finish_report(rep, t_start);
    return rep;
  }
  // Every type decodable, before any work (an error naming tensor and type).
  for (const GgufTensorInfo& t : g->tensors())
    if (!decoder.supported(t.type))
      throw Error(
          ErrorCode::UnsupportedDtype, path, t.name,
          std::string("GGML type ") + ggml_type_name(t.type) + " cannot be decoded by this build");

  std::unique_ptr<Source> src;
  if (!source_path.empty()) {
    src = std::make_unique<Source>(source_path, *g);
    for (const std::string& n : src->names())
      if (!g->find(n)) rep.missing_from_qpack.push_back(n);
  }

  // 2. Every tensor, one slice at a time.
  const auto t_cmp = Clock::now();
  const int64_t per_slice =
      std::max<int64_t>(1, int64_t(opt.gguf_slice_bytes / 4) / spec::kFloatBlockElements) *
      spec::kFloatBlockElements;
  std::vector<float> hat;
  VerifyProgress pr;
  pr.phase = VerifyProgress::Compare;
  pr.tensor_count = g->tensors().size();
  for (const auto& t : g->tensors()) pr.total_bytes += t.nbytes;
  for (size_t ti = 0; ti < g->tensors().size(); ++ti) {
    const GgufTensorInfo& t = g->tensors()[ti];
    const auto t0 = Clock::now();
    pr.tensor_index = ti;
    pr.tensor = t.name;
    if (opt.progress) opt.progress(pr);
    TensorResult r = describe(t);
    const uint8_t* data = g->tensor_data(t);
    const int64_t n = int64_t(t.num_elements());
    const auto plain = ggml_plain_dtype(t.type);
    const int64_t bs = ggml_type_info(uint32_t(t.type))->block_size;

    std::optional<SourceMatch> s;
    if (src) {
      s = src->find(t.name);
      if (!s) {
        rep.extra_in_qpack.push_back(t.name);
        const std::string hf = src->hf_name(t.name);
        r.problems.push_back(hf.empty() ? std::string("not in the source checkpoint")
                                        : "not in the source checkpoint (as " + hf + ")");
      } else {
        r.dtype = s->dtype;
        r.source_bytes = uint64_t(n) * uint64_t(dtype_bytes(s->dtype));
        if (!s->problem.empty()) r.problems.push_back(s->problem);
        if (s->ne != t.ne)
          r.problems.push_back("shape differs: source " + shape_to_string(reversed(s->ne)) +
                               ", file " + shape_to_string(r.shape));
        const bool same_plain = plain && *plain == s->dtype && !s->measure_always;
        if (r.problems.empty() && !same_plain && !is_quantizable(s->dtype))
          r.problems.push_back(std::string("dtype differs: source ") + dtype_name(s->dtype) +
                               ", file " + r.ggml_type);
        if (r.problems.empty() && plain && !same_plain && !is_quantizable(*plain))
          r.problems.push_back(std::string("dtype differs: source ") + dtype_name(s->dtype) +
                               ", file " + r.ggml_type);
        // A float tensor stored in another float type is a lossy
        // conversion: measured like a block type.
        r.quantized = r.problems.empty() && !same_plain;
      }
    }

    if (src && r.problems.empty()) {
      if (!r.quantized) {
        const std::string d = raw_difference(data, *s, t.nbytes);
        if (!d.empty()) r.problems.push_back(d);
        r.raw_equal = d.empty();
        r.compared = true;
      } else {
        FloatErrorAccumulator acc;
        for (int64_t e0 = 0; e0 < n; e0 += per_slice) {
          const int64_t m = std::min(per_slice, n - e0);
          hat.resize(size_t(m));
          decoder.decode(t, data, e0, m, hat.data());
          measure_slice(*s, e0, m, hat.data(), plain ? 0 : bs, acc, &r.nonfinite_params,
                        rep.threads);
        }
        r.sums = acc.sums();
        r.compared = true;
        if (!plain) {
          r.params_checked = true;
          r.groups = uint64_t(n / bs);
        }
        r.all_zero = r.sums.sum_sq_hat == 0.0 && r.sums.sum_sq_ref > 0.0;
        warn_about_blocks(r, rep, opt);
      }
    } else if (!src && !plain) {
      // Self-check: every block decodes to finite values, not all zeros.
      bool nonzero = false;
      for (int64_t e0 = 0; e0 < n; e0 += per_slice) {
        const int64_t m = std::min(per_slice, n - e0);
        hat.resize(size_t(m));
        decoder.decode(t, data, e0, m, hat.data());
        r.nonfinite_params += nonfinite_blocks(hat.data(), m, bs);
        for (int64_t i = 0; i < m && !nonzero; ++i) nonzero = hat[size_t(i)] != 0.0f;
      }
      r.params_checked = true;
      r.groups = uint64_t(n / bs);
      r.all_zero = n > 0 && !nonzero && r.nonfinite_params == 0;
      warn_about_blocks(r, rep, opt);
    }
    g->release(t);
    if (s && s->release) s->release();
    r.seconds = seconds_since(t0);
    pr.done_bytes += t.nbytes;
    rep.tensors.push_back(std::move(r));
  }
  pr.tensor_index = pr.tensor_count;
  pr.tensor.clear();
  if (opt.progress) opt.progress(pr);
  rep.compare_seconds = seconds_since(t_cmp);

  finish_report(rep, t_start);
  return rep;
}

}  // namespace qpack
