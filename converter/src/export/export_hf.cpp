// qpack convert to a Hugging Face model folder (qpack/converter/export_hf.hpp):
// the source opened and checked, every tensor decided (quantized Linear
// weight or kept), the configs, then one streaming pass into a
// ModelFolderWriter: kept tensors copied in slices, quantized ones through
// the per-format writers (export_compressed_tensors.cpp, export_gptq.cpp).
#include "qpack/converter/export_hf.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "compressed_tensors_layout.hpp"
#include "export_hf_detail.hpp"
#include "gptq_layout.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/glob.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/model_folder.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

const char* hf_format_name(HfFormat f) {
  return f == HfFormat::Gptq ? "gptq" : "compressed-tensors";
}

namespace {

std::string last_component(const std::string& module) {
  const size_t dot = module.find_last_of('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

// Module names whose 2-D weight is an embedding table, not a Linear layer.
bool is_embedding_module(const std::string& module) {
  static const std::set<std::string> kNames = {"embed_tokens",
                                               "wte",
                                               "wpe",
                                               "word_embeddings",
                                               "embed_positions",
                                               "position_embeddings",
                                               "token_type_embeddings",
                                               "embeddings",
                                               "embed_in"};
  return kNames.count(last_component(module)) > 0;
}

// Why `t` is not the weight of a Linear layer, or "" when it is one: a 2-D
// floating-point "<module>.weight" whose module is no embedding and no norm.
std::string not_linear_reason(const TensorInfo& t) {
  if (!ends_with(t.name, ".weight")) return "its name does not end in '.weight'";
  if (t.shape.size() != 2)
    return "a Linear weight is 2-D; this tensor is " + std::to_string(t.shape.size()) + "-D";
  const std::string module = t.name.substr(0, t.name.size() - 7);
  if (is_embedding_module(module))
    return "'" + module + "' is an embedding (nn.Embedding), which loaders do not read quantized";
  if (last_component(module).find("norm") != std::string::npos) return "'" + module + "' is a norm";
  return {};
}

bool matches_any(const std::vector<std::string>& globs, const std::string& name) {
  for (const auto& g : globs)
    if (glob_match(g, name)) return true;
  return false;
}

HfPlanEntry::Output output(std::string name, DType dtype, std::vector<int64_t> shape) {
  uint64_t n = uint64_t(dtype_bits(dtype) / 8);
  for (int64_t d : shape) n *= uint64_t(d);
  return {std::move(name), dtype, std::move(shape), n};
}

std::string folder_of(const std::string& source) {
  if (is_directory(source)) return source;
  const size_t s = source.find_last_of('/');
  return s == std::string::npos ? "." : s == 0 ? "/" : source.substr(0, s);
}

void check_options(const HfExportOptions& o, std::vector<std::string>* warnings) {
  const bool gptq = o.format == HfFormat::Gptq;
  if (o.bits == 3)
    throw Error(ErrorCode::UnsupportedScheme, "", "",
                "3 bits: compressed-tensors changed its 3/5/6/7-bit packing between versions "
                "and no loader has a kernel for it; use 4 or 8 bits");
  if (!(o.bits == 4 || o.bits == 8 || (o.bits == 2 && !gptq)))
    throw Error(ErrorCode::UnsupportedScheme, "", "",
                std::string(hf_format_name(o.format)) + " export takes " +
                    (gptq ? "4 or 8 bits" : "2, 4 or 8 bits") + ", not " + std::to_string(o.bits));
  if (o.bits == 2)
    warnings->push_back(
        "2-bit compressed-tensors: transformers decompresses it, but vLLM has no kernel for "
        "2-bit weights");
  if (!(o.group_size == 0 || o.group_size == 32 || o.group_size == 64 || o.group_size == 128))
    throw Error(ErrorCode::UnsupportedScheme, "", "",
                "group size must be 32, 64, 128 or 'all' (one group per output channel; the "
                "sizes vLLM's kernels take), not " +
                    std::to_string(o.group_size));
  if (gptq && !o.symmetric)
    throw Error(ErrorCode::UnsupportedScheme, "", "",
                "GPTQ export is symmetric only: vLLM accepts only symmetric 4/8-bit GPTQ, and "
                "GPTQ v1 stores zero - 1, which cannot hold a zero-point of 0; use "
                "--format compressed-tensors for asymmetric weights");
  if (o.method != QuantMethod::Rtn) {
    if (gptq)
      throw Error(ErrorCode::UnsupportedScheme, "", "",
                  "GPTQ export takes --method rtn only: its symmetric codes have no method "
                  "(docs/quantization.md §M1)");
    if (o.symmetric)
      throw Error(ErrorCode::UnsupportedScheme, "", "",
                  std::string("--method ") + method_name(o.method) +
                      " needs asymmetric weights (--asymmetric or --zero-point integer): "
                      "symmetric codes have no method (docs/quantization.md §M1)");
    if (o.method != QuantMethod::Search)
      throw Error(ErrorCode::UnsupportedScheme, "", "",
                  std::string("--method ") + method_name(o.method) +
                      " needs float zero-points; compressed-tensors' integer zero-points take "
                      "--method rtn or search (docs/quantization.md §M5)");
  }
  if (o.scale_dtype) {
    const DType d = *o.scale_dtype;
    if (gptq && d != DType::F16)
      throw Error(ErrorCode::UnsupportedScheme, "", "",
                  "GPTQ scales are F16 (every GPTQ loader reads them so)");
    if (!gptq && d != DType::F16 && d != DType::BF16)
      throw Error(ErrorCode::UnsupportedScheme, "", "",
                  "compressed-tensors scales are F16 or BF16 here (the dtype transformers and "
                  "vLLM compute in)");
  }
  if (o.max_shard_bytes == 0)
    throw Error(ErrorCode::InvalidArgument, "", "", "--max-shard-size must be positive");
}

}  // namespace

nlohmann::json HfExportPlan::to_json() const {
  nlohmann::json t = nlohmann::json::array();
  for (const auto& e : tensors) {
    nlohmann::json outs = nlohmann::json::array();
    for (const auto& o : e.outputs)
      outs.push_back({{"name", o.name},
                      {"dtype", dtype_name(o.dtype)},
                      {"shape", o.shape},
                      {"nbytes", o.nbytes}});
    t.push_back({{"name", e.name},
                 {"dtype", dtype_name(e.dtype)},
                 {"shape", e.shape},
                 {"action", e.quantized ? "quantize" : "keep"},
                 {"reason", e.reason},
                 {"bytes_in", e.bytes_in},
                 {"bytes_out", e.bytes_out},
                 {"outputs", std::move(outs)}});
  }
  return {{"format", hf_format_name(format)},
          {"scheme",
           {{"bits", scheme.bits},
            {"group_size", scheme.group_size},
            {"axis", scheme.axis},
            {"symmetric", scheme.symmetric},
            {"zero_point", scheme.symmetric ? "none" : "integer"},
            {"method", method_name(scheme.method)},
            {"scale_dtype", dtype_name(scheme.scale_dtype)}}},
          {"quantization_config", quantization_config},
          {"ignore", ignore},
          {"tensors_quantized", tensors_quantized},
          {"bytes_in", bytes_in},
          {"bytes_out", bytes_out},
          {"warnings", warnings},
          {"tensors", std::move(t)}};
}

nlohmann::json HfExportSummary::to_json() const {
  nlohmann::json j = plan.to_json();
  j["seconds"] = seconds;
  j["device"] = device;
  j["shards"] = shards;
  return j;
}

namespace {

HfExportPlan plan_from(const Checkpoint& ckpt, const std::string& source,
                       const HfExportOptions& o) {
  HfExportPlan plan;
  plan.format = o.format;
  check_options(o, &plan.warnings);
  const bool gptq = o.format == HfFormat::Gptq;
  const std::string folder = folder_of(source);
  const std::string config_path = folder + "/config.json";
  if (!ckpt.config().is_object())
    throw Error(ErrorCode::BadMetadata, config_path, "",
                "not a model folder: no config.json beside the weights (transformers and vLLM "
                "need it to load the folder)");
  if (ckpt.config().contains("quantization_config"))
    throw Error(ErrorCode::BadMetadata, config_path, "",
                "the source is already quantized (config.json has a quantization_config); "
                "export from the unquantized model");
  if (ckpt.tensors().empty())
    throw Error(ErrorCode::NothingToQuantize, source, "", "the source holds no tensors");
  // Decide every tensor.
  struct Pick {
    const CheckpointTensor* t;
    bool quantize;
    std::string reason;
  };
  std::vector<Pick> picks;
  std::map<std::string, bool> include_used;
  for (const auto& g : o.include) include_used[g] = false;
  for (const CheckpointTensor& ct : ckpt.tensors()) {
    const TensorInfo& t = *ct.info;
    const std::string why_not = not_linear_reason(t);
    const bool linear = why_not.empty();
    const std::string module = linear ? t.name.substr(0, t.name.size() - 7) : "";
    bool included = false;
    for (const auto& g : o.include)
      if (glob_match(g, t.name)) included = include_used[g] = true;
    if (matches_any(o.skip, t.name)) {
      if (linear && gptq && module != "lm_head")
        throw Error(ErrorCode::InvalidArgument, ckpt.path(), t.name,
                    "GPTQ has no list of Linear layers kept unquantized: its loaders expect "
                    "every decoder Linear quantized, so --skip cannot keep this one (use "
                    "--format compressed-tensors, whose 'ignore' can)");
      picks.push_back({&ct, false, "kept: --skip"});
      if (linear) plan.ignore.push_back(module);
      continue;
    }
    if (included && !linear)
      throw Error(ErrorCode::InvalidArgument, ckpt.path(), t.name,
                  "selected by --include but not a Linear weight: " + why_not);
    if (linear && module == "lm_head") {
      if (included)
        throw Error(ErrorCode::InvalidArgument, ckpt.path(), t.name,
                    "qpack keeps lm_head unquantized (llm-compressor's and GPTQ's default; a "
                    "quantized lm_head needs loader-specific flags)");
      picks.push_back({&ct, false, "kept: lm_head stays as in the source (ignore)"});
      plan.ignore.push_back(module);
      continue;
    }
    if (!linear) {
      picks.push_back({&ct, false, "kept: not a Linear weight (" + why_not + ")"});
      continue;
    }
    picks.push_back({&ct, true, included ? "Linear weight (--include)" : "Linear weight"});
  }
  for (const auto& [g, used] : include_used)
    if (!used) plan.warnings.push_back("--include '" + g + "' matches no tensor");

  // The scale dtype: compressed-tensors the model's (its Linear weights'),
  // GPTQ F16.
  DType sd = DType::F16;
  if (o.scale_dtype) {
    sd = *o.scale_dtype;
  } else if (!gptq) {
    std::set<DType> seen;
    const TensorInfo* first = nullptr;
    for (const auto& p : picks)
      if (p.quantize) {
        seen.insert(p.t->info->dtype);
        if (!first) first = p.t->info;
      }
    if (seen.size() > 1)
      throw Error(ErrorCode::UnsupportedDtype, ckpt.path(), "",
                  "the Linear weights mix dtypes; give --scale-dtype f16 or bf16");
    if (first) {
      sd = first->dtype;
      if (sd == DType::F32)
        throw Error(ErrorCode::UnsupportedDtype, ckpt.path(), first->name,
                    "an F32 model: compressed-tensors dequantizes in the scale dtype, which "
                    "llm-compressor takes from the model; give --scale-dtype f16 or bf16");
    }
  }
  plan.scheme.bits = o.bits;
  plan.scheme.group_size = o.group_size;
  plan.scheme.axis = -1;
  plan.scheme.symmetric = o.symmetric;
  plan.scheme.scale_dtype = sd;
  plan.scheme.zero_point = ZeroPoint::Integer;
  plan.scheme.method = o.method;
  const int cpw = 32 / o.bits;

  for (const auto& p : picks) {
    const TensorInfo& t = *p.t->info;
    HfPlanEntry e;
    e.name = t.name;
    e.dtype = t.dtype;
    e.shape = t.shape;
    e.bytes_in = t.nbytes();
    e.reason = p.reason;
    if (!p.quantize) {
      e.outputs.push_back({t.name, t.dtype, t.shape, t.nbytes()});
    } else {
      e.quantized = true;
      const std::string& file = p.t->file->path();
      if (!is_quantizable(t.dtype))
        throw Error(ErrorCode::UnsupportedDtype, file, t.name,
                    std::string("a ") + dtype_name(t.dtype) +
                        " weight: only F16, BF16 and F32 weights are quantized (--skip keeps it)");
      const int64_t out = t.shape[0], in = t.shape[1];
      if (out == 0 || in == 0)
        throw Error(ErrorCode::ShapeMismatch, file, t.name,
                    "an empty weight " + shape_to_string(t.shape));
      if (o.group_size > 0 && in % o.group_size != 0)
        throw Error(ErrorCode::ShapeMismatch, file, t.name,
                    "in-features " + std::to_string(in) + " are not a multiple of the group size " +
                        std::to_string(o.group_size) +
                        " (both formats need whole groups); use a smaller group, 'all', or "
                        "--skip it");
      if (o.group_size == 0 && in % 8 != 0)
        throw Error(ErrorCode::ShapeMismatch, file, t.name,
                    "in-features " + std::to_string(in) + " are not a multiple of 8");
      if (gptq && (out % cpw != 0 || in % cpw != 0))
        throw Error(ErrorCode::ShapeMismatch, file, t.name,
                    "GPTQ packs " + std::to_string(cpw) +
                        " codes per int32 word along in (qweight) "
                        "and along out (qzeros): " +
                        shape_to_string(t.shape) +
                        " has a dimension that "
                        "is not a multiple of " +
                        std::to_string(cpw));
      if (!gptq && !o.symmetric && out % cpw != 0)
        throw Error(ErrorCode::ShapeMismatch, file, t.name,
                    "compressed-tensors packs the zero-points " + std::to_string(cpw) +
                        " out-features per int32 word: out-features " + std::to_string(out) +
                        " are not a multiple of " + std::to_string(cpw));
      const int64_t P = o.group_size > 0 ? in / o.group_size : 1;
      const std::string m = t.name.substr(0, t.name.size() - 7);
      if (!gptq) {
        e.outputs.push_back(output(m + ".weight_packed", DType::I32,
                                   {out, compressed_tensors::packed_words_per_row(in, o.bits)}));
        e.outputs.push_back(output(m + ".weight_scale", sd, {out, P}));
        if (!o.symmetric)
          e.outputs.push_back(output(m + ".weight_zero_point", DType::I32,
                                     {compressed_tensors::zero_point_rows(out, o.bits), P}));
        e.outputs.push_back(output(m + ".weight_shape", DType::I64, {2}));
      } else {
        e.outputs.push_back(output(m + ".qweight", DType::I32, {in / cpw, out}));
        e.outputs.push_back(output(m + ".qzeros", DType::I32, {P, out / cpw}));
        e.outputs.push_back(output(m + ".scales", DType::F16, {P, out}));
        e.outputs.push_back(output(m + ".g_idx", DType::I32, {in}));
      }
      ++plan.tensors_quantized;
    }
    for (const auto& x : e.outputs) e.bytes_out += x.nbytes;
    plan.bytes_in += e.bytes_in;
    plan.bytes_out += e.bytes_out;
    plan.tensors.push_back(std::move(e));
  }
  if (plan.tensors_quantized == 0)
    throw Error(ErrorCode::NothingToQuantize, source, "",
                "no Linear weight to quantize (2-D '<module>.weight' tensors other than "
                "embeddings, norms and lm_head)");

  // lm_head is always ignored, present or not: with tied embeddings the
  // model still has an lm_head Linear, which "targets": ["Linear"] would
  // otherwise expect quantized (llm-compressor's W4A16 ignores it too).
  if (std::find(plan.ignore.begin(), plan.ignore.end(), "lm_head") == plan.ignore.end())
    plan.ignore.push_back("lm_head");
  std::sort(plan.ignore.begin(), plan.ignore.end());
  if (gptq) {
    plan.quantization_config = gptq::quantize_config(o.bits, o.group_size);
    plan.generated_files.push_back(
        {"quantize_config.json", plan.quantization_config.dump(2) + "\n"});
  } else {
    plan.quantization_config =
        compressed_tensors::quantization_config(o.bits, o.group_size, o.symmetric, plan.ignore);
  }
  plan.config = ckpt.config();
  plan.config["quantization_config"] = plan.quantization_config;
  plan.copy_files_from = folder;
  return plan;
}

std::unique_ptr<Checkpoint> open_source(const std::string& source) {
  if (is_directory(source) && !file_exists(source + "/config.json"))
    throw Error(ErrorCode::BadMetadata, source, "",
                "not a model folder: no config.json (transformers and vLLM need it to load "
                "the folder)");
  return Checkpoint::open(source);
}

}  // namespace

HfExportPlan plan_hf_export(const std::string& source, const HfExportOptions& options) {
  const auto ckpt = open_source(source);
  return plan_from(*ckpt, source, options);
}

HfExportSummary export_hf(const std::string& source, const std::string& out_dir,
                          const HfExportOptions& options, TensorQuantizer& quantizer) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto ckpt = open_source(source);
  HfExportSummary summary;
  summary.plan = plan_from(*ckpt, source, options);
  const HfExportPlan& plan = summary.plan;
  summary.device = quantizer.description();

  std::vector<FolderTensor> decl;
  for (const auto& e : plan.tensors)
    for (const auto& x : e.outputs) decl.push_back({x.name, x.dtype, x.shape, x.nbytes});
  ModelFolderOptions fo;
  fo.max_shard_bytes = options.max_shard_bytes;
  fo.overwrite = options.overwrite;
  fo.config = plan.config;
  fo.generated_files = plan.generated_files;
  fo.copy_files_from = plan.copy_files_from;
  fo.exclude_files = quantization_side_files();  // GPTQ's own is a generated file
  std::vector<std::string> output_names;
  for (const FolderTensor& x : decl) output_names.push_back(x.name);
  ModelFolderWriter writer(out_dir, std::move(decl), fo);
  // Declared after the writer: destroyed (its thread joined) first. A write
  // that fails (a full disk) is rethrown later, while another tensor is being
  // quantized: it names the output tensor it was writing, so the context
  // added below does not name the wrong one.
  hf_export::WriteQueue queue(
      [&writer, &output_names](size_t t, uint64_t off, const void* p, uint64_t n) {
        try {
          writer.write(t, off, p, n);
        } catch (const Error& err) {
          throw err.with_context("", output_names[t]);
        }
      },
      std::max<uint64_t>(options.slice_bytes, 1));

  uint64_t done = 0;
  size_t index = 0;
  const auto report = [&](size_t i, const std::string& name) {
    if (options.progress) options.progress(i, plan.tensors.size(), done, plan.bytes_in, name);
  };
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const HfPlanEntry& e = plan.tensors[i];
    const CheckpointTensor* ct = ckpt->find(e.name);
    report(i, e.name);
    const MappedFile& map = ct->file->mapped();
    const uint64_t base = ct->file->data_start() + ct->info->begin;
    if (!e.quantized) {
      // Written from the mapping by the queue's thread, which releases the
      // pages after the last slice.
      const uint8_t* data = ct->data();
      for (uint64_t off = 0; off < e.bytes_in; off += options.slice_bytes) {
        const uint64_t n = std::min<uint64_t>(options.slice_bytes, e.bytes_in - off);
        map.will_need(base + off, n);
        queue.write_borrowed(index, off, data + off, n);
        done += n;
        report(i, e.name);
      }
      queue.then([ct] { ct->file->release(*ct->info); });
    } else {
      hf_export::LinearJob job;
      job.name = e.name;
      job.data = ct->data();
      job.dtype = e.dtype;
      job.out = e.shape[0];
      job.in = e.shape[1];
      job.scheme = plan.scheme;
      job.nonfinite = options.nonfinite;
      job.slice_bytes = options.slice_bytes;
      job.first_output = index;
      job.quantizer = &quantizer;
      job.queue = &queue;
      job.write = [&queue](size_t t, uint64_t off, const void* p, uint64_t n) {
        std::vector<uint8_t> b = queue.buffer(n);
        std::memcpy(b.data(), p, size_t(n));
        queue.write(t, off, std::move(b));
      };
      job.will_need = [&map, base](uint64_t off, uint64_t n) { map.will_need(base + off, n); };
      job.release = [&map, base](uint64_t off, uint64_t n) { map.release(base + off, n); };
      job.done = [&](uint64_t n) {
        done += n;
        report(i, e.name);
      };
      try {
        if (plan.format == HfFormat::Gptq)
          hf_export::write_gptq_linear(job);
        else
          hf_export::write_compressed_tensors_linear(job);
      } catch (const Error& err) {
        throw err.with_context(ct->file->path(), e.name);
      }
    }
    if (e.quantized) ct->file->release(*ct->info);  // every byte read (the outputs are copies)
    index += e.outputs.size();
  }
  queue.drain();
  writer.commit();
  report(plan.tensors.size(), "");
  summary.shards = writer.shard_names();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace qpack
