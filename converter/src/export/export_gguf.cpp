// qpack convert to GGUF (qpack/converter/export_gguf.hpp): sources opened
// and mapped to GGUF tensors, the plan (types from gguf_type_rules.cpp,
// sizes, metadata), then one streaming pass that writes each tensor in
// slices of rows.
#include "qpack/converter/export_gguf.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <set>

#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf_llama.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/text.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

namespace {

constexpr uint32_t kQuantizationVersion = 2;  // GGML_QNT_VERSION

bool is_float_type(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
}
bool writable(GgmlType t) { return is_float_type(t) || ggml_blocks_supported(t); }

DType dtype_of(GgmlType t) {
  return t == GgmlType::F16 ? DType::F16 : t == GgmlType::BF16 ? DType::BF16 : DType::F32;
}
int float_bytes(GgmlType t) { return t == GgmlType::F32 ? 4 : 2; }

std::string basename_of(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t s = p.find_last_of('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}
std::string dirname_of(const std::string& p) {
  const size_t s = p.find_last_of('/');
  return s == std::string::npos ? "." : s == 0 ? "/" : p.substr(0, s);
}

bool looks_like_gguf(const std::string& path) {
  if (is_directory(path)) return false;
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return true;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[4] = {};
  const size_t n = std::fread(magic, 1, 4, f);
  std::fclose(f);
  return n == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

std::optional<int64_t> kv_int(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find_key(key);
  if (!v) return std::nullopt;
  const GgufValue* s = v;
  if (v->type == GgufType::Array) {
    if (v->items.empty()) return std::nullopt;
    s = &v->items[0];  // per-layer arrays: layer 0, as hparams.n_head() reads it
  }
  switch (s->type) {
    case GgufType::Uint8:
    case GgufType::Uint16:
    case GgufType::Uint32:
    case GgufType::Uint64:
      return int64_t(s->u);
    case GgufType::Int8:
    case GgufType::Int16:
    case GgufType::Int32:
    case GgufType::Int64:
      return s->i;
    default:
      return std::nullopt;
  }
}

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// One output tensor and where its bytes come from.
struct Origin {
  std::string name, source_name;
  std::vector<int64_t> ne;
  GgmlType source_type = GgmlType::F32;  // of the bytes at `data`
  GgmlType rules_type = GgmlType::F32;   // what the rules see (F32 for HF 1-D tensors)
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  int64_t permute_heads = 0;
  std::function<void()> release;
};

struct Source {
  std::string path, format;
  std::unique_ptr<GgufFile> gguf;
  std::unique_ptr<Checkpoint> checkpoint;
  std::vector<float> rope_factors;  // rope_freqs.weight of a llama3-scaled HF model
  std::vector<Origin> tensors;      // in output order
  std::vector<GgufKv> metadata;     // without file type / quantization version
  GgufTypeModel model;
  std::vector<std::string> warnings;
};

void open_gguf_source(Source& s, const GgufExportOptions& o) {
  if (!o.vocab_from.empty())
    throw Error(ErrorCode::InvalidArgument, s.path, "",
                "--vocab-from is for safetensors sources: a GGUF source keeps its own tokenizer");
  s.format = "gguf";
  s.gguf = GgufFile::open(s.path);
  const GgufFile& f = *s.gguf;
  const GgufValue* arch = f.find_key("general.architecture");
  if (!arch || arch->type != GgufType::String)
    throw Error(ErrorCode::BadMetadata, s.path, "",
                "no general.architecture string: the type rules need the model's architecture");
  s.model.architecture = arch->str;
  const std::string a = arch->str + ".";
  s.model.n_layer = kv_int(f, a + "block_count").value_or(0);
  s.model.n_head = kv_int(f, a + "attention.head_count").value_or(0);
  s.model.n_head_kv = kv_int(f, a + "attention.head_count_kv").value_or(s.model.n_head);
  s.model.n_expert = kv_int(f, a + "expert_count").value_or(0);
  if (arch->str != "llama" && arch->str != "qwen2")
    s.warnings.push_back("architecture '" + arch->str +
                         "': the type rules are llama-quantize's for llama; for this "
                         "architecture llama-quantize may choose differently");
  // llama-quantize copies every key, then sets these two at the end and
  // drops the split keys (one output file).
  for (const GgufKv& kv : f.metadata()) {
    if (kv.key == "general.file_type" || kv.key == "general.quantization_version" ||
        kv.key == "split.no" || kv.key == "split.count" || kv.key == "split.tensors.count")
      continue;
    s.metadata.push_back(kv);
  }
  for (const GgufTensorInfo& t : f.tensors()) {
    Origin og;
    og.name = og.source_name = t.name;
    og.ne = t.ne;
    og.source_type = og.rules_type = t.type;
    og.data = f.tensor_data(t);
    og.nbytes = t.nbytes;
    const GgufFile* fp = &f;
    const GgufTensorInfo* tp = &t;
    og.release = [fp, tp] { fp->release(*tp); };
    s.tensors.push_back(std::move(og));
  }
}

// The HF shape llama.cpp will check this tensor against, from config.json.
std::vector<int64_t> expected_hf_shape(const LlamaConfig& c, const std::string& gguf) {
  const std::string rest =
      gguf.compare(0, 4, "blk.") == 0 ? gguf.substr(gguf.find('.', 4) + 1) : gguf;
  const int64_t h = c.hidden_size, v = c.vocab_size, q = c.q_rows(), kv = c.kv_rows(),
                ff = c.intermediate_size;
  if (rest == "token_embd.weight" || rest == "output.weight") return {v, h};
  if (rest == "output_norm.weight" || rest == "attn_norm.weight" || rest == "ffn_norm.weight")
    return {h};
  if (rest == "attn_q.weight") return {q, h};
  if (rest == "attn_k.weight" || rest == "attn_v.weight") return {kv, h};
  if (rest == "attn_output.weight") return {h, q};
  if (rest == "attn_q.bias") return {q};
  if (rest == "attn_k.bias" || rest == "attn_v.bias") return {kv};
  if (rest == "attn_output.bias") return {h};
  if (rest == "ffn_gate.weight" || rest == "ffn_up.weight") return {ff, h};
  if (rest == "ffn_down.weight") return {h, ff};
  return {};
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

void add_tokenizer(Source& s, const LlamaConfig& cfg, const GgufExportOptions& o) {
  if (o.vocab_from.empty()) {
    s.metadata.push_back({"tokenizer.ggml.model", GgufValue::of_string("none")});
    s.warnings.push_back(
        "no --vocab-from: tokenizer.ggml.model is \"none\"; llama.cpp loads the file and runs "
        "token ids, but cannot tokenize text (give a vocab GGUF from convert_hf_to_gguf.py "
        "--vocab-only)");
    return;
  }
  const auto vocab = GgufFile::open(o.vocab_from);
  size_t n = 0;
  for (const GgufKv& kv : vocab->metadata()) {
    if (kv.key.rfind("tokenizer.", 0) != 0) continue;
    s.metadata.push_back(kv);
    ++n;
  }
  if (n == 0)
    throw Error(ErrorCode::BadMetadata, o.vocab_from, "", "has no tokenizer.* keys to copy");
  if (!vocab->find_key("tokenizer.ggml.model"))
    throw Error(ErrorCode::BadMetadata, o.vocab_from, "",
                "has no tokenizer.ggml.model, which llama.cpp requires");
  if (const GgufValue* tokens = vocab->find_key("tokenizer.ggml.tokens")) {
    if (tokens->type == GgufType::Array && int64_t(tokens->items.size()) != cfg.vocab_size)
      throw Error(ErrorCode::BadMetadata, o.vocab_from, "",
                  "its tokenizer.ggml.tokens has " + std::to_string(tokens->items.size()) +
                      " tokens, config.json's vocab_size is " + std::to_string(cfg.vocab_size));
  }
  if (const GgufValue* a = vocab->find_key("general.architecture");
      a && a->type == GgufType::String && a->str != cfg.architecture)
    s.warnings.push_back("--vocab-from " + o.vocab_from + " is for architecture '" + a->str +
                         "', this model is '" + cfg.architecture + "'");
}

void open_hf_source(Source& s, const GgufExportOptions& o) {
  s.format = "safetensors";
  s.checkpoint = Checkpoint::open(s.path);
  const Checkpoint& cp = *s.checkpoint;
  const std::string dir = is_directory(s.path) ? s.path : dirname_of(s.path);
  const std::string config_path = dir + "/config.json";
  if (cp.config().is_null())
    throw Error(ErrorCode::BadMetadata, config_path, "",
                "no config.json beside the checkpoint: GGUF needs the model's hyper-parameters");
  const LlamaConfig cfg = parse_llama_config(cp.config(), config_path);
  s.model.architecture = cfg.architecture;
  s.model.n_layer = cfg.num_layers;
  s.model.n_head = cfg.num_heads;
  s.model.n_head_kv = cfg.num_kv_heads;
  s.metadata = llama_gguf_metadata(cfg, basename_of(is_directory(s.path) ? s.path : dir));
  add_tokenizer(s, cfg, o);

  std::set<std::string> present;
  for (const CheckpointTensor& t : cp.tensors()) {
    const LlamaTensorName n = llama_gguf_tensor_name(t.name());
    if (n.mapping == LlamaTensorMapping::Dropped) continue;
    if (n.mapping == LlamaTensorMapping::Unknown)
      throw Error(ErrorCode::BadHeader, cp.path(), t.name(),
                  "not a tensor of a " + cfg.model_type +
                      " model that qpack maps to GGUF (docs/gguf.md lists the names)");
    if (n.layer >= cfg.num_layers)
      throw Error(ErrorCode::BadHeader, cp.path(), t.name(),
                  "layer " + std::to_string(n.layer) + " but config.json has num_hidden_layers " +
                      std::to_string(cfg.num_layers));
    const std::vector<int64_t>& shape = t.info->shape;
    const std::vector<int64_t> want = expected_hf_shape(cfg, n.gguf_name);
    if (shape != want)
      throw Error(ErrorCode::ShapeMismatch, cp.path(), t.name(),
                  "shape " + shape_text(shape) + ", config.json implies " + shape_text(want));
    const DType d = t.info->dtype;
    if (d != DType::F16 && d != DType::BF16 && d != DType::F32)
      throw Error(ErrorCode::UnsupportedDtype, cp.path(), t.name(),
                  std::string("dtype ") + dtype_name(d) + ": GGUF export reads F16, BF16 or F32");
    Origin og;
    og.name = n.gguf_name;
    og.source_name = t.name();
    og.ne.assign(shape.rbegin(), shape.rend());
    og.source_type = d == DType::F16    ? GgmlType::F16
                     : d == DType::BF16 ? GgmlType::BF16
                                        : GgmlType::F32;
    // convert_hf_to_gguf.py writes 1-D tensors and norms as F32: that is
    // what llama-quantize would start from.
    og.rules_type = shape.size() <= 1 ? GgmlType::F32 : og.source_type;
    og.data = t.data();
    og.nbytes = t.info->nbytes();
    og.permute_heads = llama_permute_heads(cfg, n.gguf_name);
    const SafetensorsFile* fp = t.file;
    const TensorInfo* ip = t.info;
    og.release = [fp, ip] { fp->release(*ip); };
    present.insert(og.name);
    s.tensors.push_back(std::move(og));
  }
  std::vector<std::string> required = {"token_embd.weight", "output_norm.weight"};
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    for (const char* n : {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                          "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight",
                          "ffn_up.weight", "ffn_down.weight"})
      required.push_back("blk." + std::to_string(l) + "." + n);
  }
  for (const std::string& r : required) {
    if (!present.count(r))
      throw Error(ErrorCode::BadHeader, cp.path(), llama_hf_tensor_name(r).value_or(r),
                  "missing: llama.cpp needs it (GGUF " + r + ")");
  }
  if (cfg.rope_scaling_type == "llama3") {
    s.rope_factors = llama3_rope_factors(cfg);
    Origin og;
    og.name = og.source_name = "rope_freqs.weight";
    og.ne = {int64_t(s.rope_factors.size())};
    og.source_type = og.rules_type = GgmlType::F32;
    og.data = reinterpret_cast<const uint8_t*>(s.rope_factors.data());
    og.nbytes = s.rope_factors.size() * 4;
    s.tensors.push_back(std::move(og));
  }
}

struct Planned {
  Source source;
  GgufExportPlan plan;
};

void plan_into(Planned& p, const std::string& source_path, const GgufExportOptions& o) {
  const GgufFileType& ft = find_gguf_file_type(o.type);
  Source& s = p.source;
  s.path = source_path;
  if (!file_exists(source_path))
    throw Error(ErrorCode::Io, source_path, "", "no such file or folder");
  if (looks_like_gguf(source_path))
    open_gguf_source(s, o);
  else
    open_hf_source(s, o);
  std::stable_sort(s.tensors.begin(), s.tensors.end(), [](const Origin& a, const Origin& b) {
    return gguf_tensor_order_less(a.name, b.name);
  });

  std::vector<GgufTypeTensor> tt;
  for (const Origin& og : s.tensors) tt.push_back({og.name, og.ne, og.rules_type});
  const std::vector<GgufTypeChoice> choice =
      choose_gguf_types(s.model, tt, ft, o.pure, o.tensor_types);

  GgufExportPlan& plan = p.plan;
  plan.source_format = s.format;
  plan.file_type = ft.name;
  plan.llama_ftype = ft.llama_ftype;
  plan.pure = o.pure;
  plan.method = o.method;
  plan.warnings = s.warnings;
  size_t carried = 0, fallbacks = 0, by_method = 0;
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    const Origin& og = s.tensors[i];
    GgufPlanEntry e;
    e.name = og.name;
    e.source_name = og.source_name;
    e.ne = og.ne;
    e.source_type = ggml_type_name(og.source_type);
    e.type = choice[i].type;
    e.reason = choice[i].reason;
    e.permute_heads = og.permute_heads;
    if (choice[i].fallback) ++fallbacks;
    if (!is_float_type(og.source_type) && e.type != og.source_type) {
      // Only F32/F16/BF16 are re-quantized; anything else is carried.
      e.reason = std::string("carried as ") + ggml_type_name(og.source_type) + " (rules chose " +
                 ggml_type_name(e.type) + "; only F32/F16/BF16 tensors are quantized)";
      e.type = og.source_type;
      ++carried;
    }
    if (!writable(e.type))
      throw Error(ErrorCode::UnsupportedScheme, source_path, og.name,
                  std::string(ggml_type_name(e.type)) + " is a ggml type qpack cannot write yet (" +
                      e.reason + "); choose another for this tensor with --tensor-type '" +
                      og.name + "=TYPE'");
    if (e.type == og.source_type && og.permute_heads == 0)
      e.action = GgufTensorAction::Copy;
    else if (is_float_type(e.type))
      e.action = GgufTensorAction::Convert;
    else
      e.action = GgufTensorAction::Quantize;
    if (e.action == GgufTensorAction::Quantize) {
      ++plan.tensors_quantized;
      if (o.method != QuantMethod::Rtn && ggml_type_takes_method(e.type)) {
        e.method = o.method;
        ++by_method;
      }
    }
    e.bytes_in = og.nbytes;
    e.bytes_out = gguf_tensor_nbytes(e.type, e.ne, source_path, og.name);
    plan.bytes_in += e.bytes_in;
    plan.bytes_out += e.bytes_out;
    plan.tensors.push_back(std::move(e));
  }
  if (carried)
    plan.warnings.push_back(std::to_string(carried) +
                            " tensor(s) already in a block type are carried as they are");
  if (fallbacks)
    plan.warnings.push_back(std::to_string(fallbacks) +
                            " tensor(s) fall back to another type: their rows are not a "
                            "multiple of the chosen type's block");
  if (o.method != QuantMethod::Rtn) {
    const std::string m = std::string("--method ") + method_name(o.method);
    if (by_method == 0)
      plan.warnings.push_back(m +
                              " has no effect: no tensor is quantized to Q4_1 or Q5_1, the "
                              "types it chooses blocks for (docs/gguf.md); every block is "
                              "llama.cpp's");
    else if (by_method < plan.tensors_quantized)
      plan.warnings.push_back(m + " chooses the blocks of the " + std::to_string(by_method) +
                              " Q4_1/Q5_1 tensor(s) only; the other " +
                              std::to_string(plan.tensors_quantized - by_method) +
                              " quantized tensor(s) get llama.cpp's blocks of their type");
  }
  if (!o.tensor_types.empty() &&
      (ft.default_type == GgmlType::F32 || ft.default_type == GgmlType::F16 ||
       ft.default_type == GgmlType::BF16))
    plan.warnings.push_back(std::string("--tensor-type has no effect with --type ") + ft.name +
                            " (llama-quantize applies overrides to quantized file types only)");
  for (const GgufTensorTypeRule& r : o.tensor_types) {
    const std::regex re(r.pattern);
    bool hit = false;
    for (const Origin& og : s.tensors) hit = hit || std::regex_search(og.name, re);
    if (!hit) plan.warnings.push_back("--tensor-type '" + r.pattern + "' matches no tensor");
  }
  plan.metadata = s.metadata;
  plan.metadata.push_back(
      {"general.quantization_version", GgufValue::of_u32(kQuantizationVersion)});
  plan.metadata.push_back({"general.file_type", GgufValue::of_u32(ft.llama_ftype)});

  // The file's size, as GgufWriter lays it out.
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t header = 4 + 4 + 8 + 8;
  for (const GgufKv& kv : plan.metadata) {
    header += 8 + kv.key.size() + 4 + gguf_value_bytes(kv.value);
    if (kv.key == kGgufAlignmentKey && kv.value.type == GgufType::Uint32)
      alignment = uint32_t(kv.value.u);
  }
  uint64_t data = 0;
  for (const GgufPlanEntry& e : plan.tensors) {
    header += 8 + e.name.size() + 4 + 8 * e.ne.size() + 4 + 8;
    data += round_up(e.bytes_out, alignment);
  }
  plan.file_bytes = round_up(header, alignment) + data;
}

std::string type_label(GgufTensorAction a) {
  switch (a) {
    case GgufTensorAction::Copy:
      return "copy";
    case GgufTensorAction::Convert:
      return "convert";
    case GgufTensorAction::Quantize:
      return "quantize";
  }
  return "?";
}

// ggml's fp32 -> fp16 (ggml_compute_fp32_to_fp16): round to nearest even,
// every NaN to the quiet NaN 0x7e00 with the sign kept.
uint16_t f32_to_f16_ggml(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t(((b >> 16) & 0x8000u) | 0x7e00u);
  return f32_to_f16_rne(v);
}

void convert_floats(const uint8_t* in, GgmlType from, int64_t n, GgmlType to, uint8_t* out,
                    int threads) {
  const DType fd = dtype_of(from);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    const float v = load_as_f32(in, fd, uint64_t(i));
    if (to == GgmlType::F32) {
      std::memcpy(out + 4 * i, &v, 4);
    } else {
      // ggml_fp32_to_bf16 is round to nearest even with NaNs made quiet: f32_to_bf16_rne.
      const uint16_t h = to == GgmlType::F16 ? f32_to_f16_ggml(v) : f32_to_bf16_rne(v);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
}

void write_tensor(GgufWriter& w, const Origin& og, const GgufPlanEntry& e, const std::string& src,
                  const GgufExportOptions& o, int threads, std::vector<uint8_t>& gather,
                  std::vector<uint8_t>& out, const std::function<void(uint64_t)>& advanced,
                  cuda::GgmlBlocksDeviceEncoder* gpu) {
  if (e.action == GgufTensorAction::Copy) {
    const uint64_t chunk = std::max<uint64_t>(o.slice_bytes, 1);
    for (uint64_t off = 0; off < og.nbytes; off += chunk) {
      const uint64_t n = std::min(chunk, og.nbytes - off);
      w.append(og.data + off, n);
      advanced(n);
    }
    return;
  }
  // Rows: the HF outer dimension for a permuted 1-D bias (one element each),
  // else the GGUF rows of ne[0] elements.
  const bool permute = og.permute_heads > 0;
  const uint64_t numel = e.num_elements();
  const int64_t row_elems = permute && og.ne.size() == 1 ? 1 : og.ne[0];
  const int64_t rows = row_elems ? int64_t(numel / uint64_t(row_elems)) : 0;
  const int src_esize = float_bytes(og.source_type);
  const uint64_t src_row_bytes = uint64_t(row_elems) * src_esize;
  const uint64_t out_row_bytes = is_float_type(e.type) ? uint64_t(row_elems) * float_bytes(e.type)
                                                       : ggml_blocks_bytes(e.type, row_elems);
  const int64_t slice_rows =
      std::max<int64_t>(1, int64_t(o.slice_bytes / std::max<uint64_t>(src_row_bytes, 1)));
  for (int64_t r0 = 0; r0 < rows; r0 += slice_rows) {
    const int64_t nr = std::min(slice_rows, rows - r0);
    const uint8_t* in = og.data + uint64_t(r0) * src_row_bytes;
    if (permute) {
      gather.resize(size_t(nr) * src_row_bytes);
      for (int64_t g = 0; g < nr; ++g) {
        const int64_t h = llama_qk_hf_row(r0 + g, rows, og.permute_heads);
        std::memcpy(gather.data() + uint64_t(g) * src_row_bytes,
                    og.data + uint64_t(h) * src_row_bytes, src_row_bytes);
      }
      in = gather.data();
    }
    out.resize(size_t(nr) * out_row_bytes);
    const int64_t n = nr * row_elems;
    if (e.action == GgufTensorAction::Quantize) {
      try {
        if (gpu)
          gpu->quantize(uint32_t(e.type), in, dtype_of(og.source_type), n, out.data(), og.name,
                        e.method);
        else
          quantize_ggml_blocks_cpu(e.type, in, dtype_of(og.source_type), n, out.data(), threads,
                                   og.name, e.method);
      } catch (const Error& err) {
        throw err.with_context(src, og.name);
      }
    } else if (e.type == og.source_type) {
      std::memcpy(out.data(), in, out.size());  // permuted rows, same type
    } else {
      convert_floats(in, og.source_type, n, e.type, out.data(), threads);
    }
    w.append(out.data(), out.size());
    advanced(uint64_t(nr) * src_row_bytes);
  }
}

}  // namespace

uint64_t GgufPlanEntry::num_elements() const {
  uint64_t n = 1;
  for (int64_t d : ne) n *= uint64_t(d);
  return n;
}

double GgufPlanEntry::bits_per_weight() const {
  const uint64_t n = num_elements();
  return n ? double(bytes_out) * 8.0 / double(n) : 0.0;
}

nlohmann::json GgufExportPlan::to_json() const {
  nlohmann::json t = nlohmann::json::array();
  for (const GgufPlanEntry& e : tensors) {
    t.push_back({{"name", e.name},
                 {"source_name", e.source_name},
                 {"ne", e.ne},
                 {"source_type", e.source_type},
                 {"type", ggml_type_name(e.type)},
                 {"action", type_label(e.action)},
                 {"method", method_name(e.method)},
                 {"permute_heads", e.permute_heads},
                 {"bytes_in", e.bytes_in},
                 {"bytes_out", e.bytes_out},
                 {"bits_per_weight", e.bits_per_weight()},
                 {"reason", e.reason}});
  }
  nlohmann::json keys = nlohmann::json::array();
  for (const GgufKv& kv : metadata) keys.push_back(kv.key);
  return {{"format", "gguf"},
          {"source_format", source_format},
          {"type", file_type},
          {"file_type", llama_ftype},
          {"pure", pure},
          {"method", method_name(method)},
          {"tensors_quantized", tensors_quantized},
          {"bytes_in", bytes_in},
          {"bytes_out", bytes_out},
          {"file_bytes", file_bytes},
          {"warnings", warnings},
          {"metadata_keys", keys},
          {"tensors", t}};
}

nlohmann::json GgufExportSummary::to_json() const {
  nlohmann::json j = plan.to_json();
  j.erase("tensors");
  j["seconds"] = seconds;
  j["device"] = device;
  j["tensors"] = plan.tensors.size();
  return j;
}

GgufExportPlan plan_gguf_export(const std::string& source, const GgufExportOptions& options) {
  Planned p;
  plan_into(p, source, options);
  return std::move(p.plan);
}

GgufExportSummary export_gguf(const std::string& source, const std::string& output,
                              const GgufExportOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  Planned p;
  plan_into(p, source, options);
  if (file_exists(output)) {
    if (same_file(output, source))
      throw Error(ErrorCode::InvalidArgument, output, "", "the output is the source itself");
    if (p.source.checkpoint) {
      for (const auto& f : p.source.checkpoint->files())
        if (same_file(output, f->path()))
          throw Error(ErrorCode::InvalidArgument, output, "", "the output is a source shard");
    }
    if (!options.vocab_from.empty() && same_file(output, options.vocab_from))
      throw Error(ErrorCode::InvalidArgument, output, "", "the output is the --vocab-from file");
  }
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  const DeviceSelection device = resolve_device(options.device);
  std::unique_ptr<cuda::GgmlBlocksDeviceEncoder> gpu;
  if (device.kind == DeviceKind::Cuda)
    gpu = std::make_unique<cuda::GgmlBlocksDeviceEncoder>(device.index);
  std::vector<GgufTensorDecl> decls;
  for (const GgufPlanEntry& e : p.plan.tensors) decls.push_back({e.name, e.type, e.ne});
  GgufWriter w(output, p.plan.metadata, decls, options.overwrite);
  check_free_space(output, p.plan.file_bytes);
  std::vector<uint8_t> gather, out;
  uint64_t done = 0;
  const size_t count = p.plan.tensors.size();
  for (size_t i = 0; i < count; ++i) {
    const Origin& og = p.source.tensors[i];
    const GgufPlanEntry& e = p.plan.tensors[i];
    const uint64_t start = done;
    uint64_t in_tensor = 0;
    if (options.progress) options.progress({i, count, done, p.plan.bytes_in, e.name});
    // Between slices too: one large tensor (token_embd) can take a while.
    const auto advanced = [&](uint64_t n) {
      in_tensor += n;
      if (options.progress && in_tensor < e.bytes_in)
        options.progress({i, count, start + in_tensor, p.plan.bytes_in, e.name});
    };
    write_tensor(w, og, e, source, options, threads, gather, out, advanced, gpu.get());
    if (og.release) og.release();
    done = start + e.bytes_in;
  }
  if (options.progress) options.progress({count, count, done, p.plan.bytes_in, ""});
  w.commit();
  GgufExportSummary s;
  s.plan = std::move(p.plan);
  s.device = gpu ? device_name(device) : "cpu (" + std::to_string(threads) + " threads)";
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

}  // namespace qpack
