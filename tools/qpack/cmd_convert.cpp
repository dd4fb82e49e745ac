#include <cstdio>
#include <optional>

#include "cli_options.hpp"
#include "commands.hpp"
#include "device.hpp"
#include "part_option.hpp"
#include "progress_bar.hpp"
#include "qpack/converter/budget.hpp"
#include "qpack/converter/convert.hpp"
#include "qpack/converter/export_gguf.hpp"
#include "qpack/converter/export_hf.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/imatrix.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/text.hpp"

namespace qpack::cli {

namespace {

struct ConvertArgs {
  std::string source, output;
  int bits = 4;
  std::string group_size = "64";
  int axis = 0;
  std::string axis_text = "0";  // an integer, or "auto" (the budget's choice)
  bool axis_auto = false;
  bool symmetric = false;
  std::string scale_dtype = "f16";
  std::string zero_point = "float";
  std::string method = "rtn", preset = "default";
  std::string scales = "one-level";
  std::vector<std::string> skips, rules;
  std::string recipe_file;
  int min_dims = 2;
  std::string nonfinite = "error";
  int threads = 0;
  DeviceOption device;
  int zstd_level = 3;
  CLI::Option* zstd = nullptr;
  CLI::Option* min_dims_opt = nullptr;
  CLI::Option* bits_opt = nullptr;
  CLI::Option* group_opt = nullptr;
  CLI::Option* axis_opt = nullptr;
  CLI::Option* sym_opt = nullptr;
  CLI::Option* scale_opt = nullptr;
  CLI::Option* zero_opt = nullptr;
  CLI::Option* method_opt = nullptr;
  CLI::Option* preset_opt = nullptr;
  CLI::Option* scales_opt = nullptr;
  // Choices to a budget (docs/cli.md "Choices to a budget").
  double target_bpw = 0, target_error = 0;
  std::string imatrix_file, activations_file;
  CLI::Option* activations_opt = nullptr;
  std::string objective = "total";
  CLI::Option* objective_opt = nullptr;
  CLI::Option* target_opt = nullptr;
  CLI::Option* target_error_opt = nullptr;
  CLI::Option* imatrix_opt = nullptr;
  bool force = false, dry_run = false, quiet = false, json = false, profile = false;
  bool require_quantized = false;
  // GGUF output (docs/gguf.md "Writing GGUF").
  std::string format;  // "gguf", "qpack", or empty: from OUTPUT's extension
  std::string gguf_type = "Q4_K_M";
  bool pure = false;
  std::vector<std::string> tensor_types;
  std::string vocab_from;
  CLI::Option* format_opt = nullptr;
  CLI::Option* type_opt = nullptr;
  std::vector<std::pair<std::string, CLI::Option*>> qpack_only, gguf_only;
  // Hugging Face folder output (docs/hf-quantized.md).
  std::string max_shard_size = "5GB";
  std::vector<std::string> includes;
  CLI::Option* shard_opt = nullptr;
  CLI::Option* include_opt = nullptr;
  CLI::Option* device_opt = nullptr;
  CLI::Option* rule_opt = nullptr;
  CLI::Option* recipe_opt = nullptr;
  CLI::Option* require_opt = nullptr;
  std::vector<std::pair<std::string, CLI::Option*>> hf_only;
  // Conversion in parts (docs/scale-out.md).
  std::string part;
  size_t parts = 0;
  CLI::Option* part_opt = nullptr;
  CLI::Option* parts_opt = nullptr;
};

// gguf, qpack, compressed-tensors or gptq: --format, else OUTPUT's
// extension, else (a dry run with no OUTPUT) gguf when --type was given.
// The folder formats are only ever chosen by --format.
std::string output_format(const ConvertArgs& a) {
  if (!a.format.empty()) {
    if (a.format != "gguf" && a.format != "qpack" && a.format != "compressed-tensors" &&
        a.format != "gptq")
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--format must be 'qpack', 'gguf', "
                  "'compressed-tensors' or 'gptq'");
    return a.format;
  }
  if (!a.output.empty()) return ends_with(a.output, ".gguf") ? "gguf" : "qpack";
  return a.type_opt->count() > 0 ? "gguf" : "qpack";
}

// Options of the other format are refused by name rather than ignored.
void refuse_options(const std::vector<std::pair<std::string, CLI::Option*>>& opts,
                    const std::string& format, const std::string& hint) {
  for (const auto& [name, opt] : opts) {
    if (opt->count() > 0)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  name + " is not an option for " + format + " output (" + hint + ")");
  }
}
// Several GPUs (--device cuda:all, cuda:N,M) are for .qpack output; the
// exporters quantize through one device.
void refuse_device_list(const ConvertArgs& a, const std::string& format) {
  if (a.device.is_list())
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--device " + a.device.text + " (several GPUs) is for .qpack output; " + format +
                    " output takes one device (cpu, cuda, cuda:N or auto)");
}
const char* kGgufHint = "it is for OUT.gguf or --format gguf";
const char* kHfHint = "it is for --format compressed-tensors or gptq; docs/hf-quantized.md";

void print_gguf_plan(const GgufExportPlan& plan) {
  std::vector<std::string> names;
  size_t w = 6;
  for (const auto& e : plan.tensors) {
    names.push_back(escape_for_terminal(e.name));
    w = std::max(w, display_width(names.back()));
  }
  std::printf("%s  %-18s %-6s    %-6s %12s %12s %6s  %s\n", pad_to_width("tensor", w).c_str(), "ne",
              "source", "type", "bytes in", "bytes out", "bpw", "why");
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const GgufPlanEntry& e = plan.tensors[i];
    std::printf(
        "%s  %-18s %-6s -> %-6s %12llu %12llu %6.2f  %s%s\n", pad_to_width(names[i], w).c_str(),
        shape_to_string(e.ne).c_str(), e.source_type.c_str(), ggml_type_name(e.type),
        static_cast<unsigned long long>(e.bytes_in), static_cast<unsigned long long>(e.bytes_out),
        e.bits_per_weight(), escape_for_terminal(e.reason).c_str(),
        e.permute_heads
            ? (" (Q/K rows permuted, " + std::to_string(e.permute_heads) + " heads)").c_str()
            : "");
  }
  std::printf("total: %s (%zu quantized), %s -> %s, file %s, general.file_type %u (%s%s)\n",
              count_of(plan.tensors.size(), "tensor").c_str(), plan.tensors_quantized,
              format_bytes(plan.bytes_in).c_str(), format_bytes(plan.bytes_out).c_str(),
              format_bytes(plan.file_bytes).c_str(), plan.llama_ftype, plan.file_type.c_str(),
              plan.pure ? ", pure" : "");
}

// The token-embedding and output-head tables ([vocab, hidden]) by their
// names in HF checkpoints (Llama/Mistral/Qwen, GPT-2, BERT, GPT-NeoX) and
// in GGUF files.
constexpr const char* kVocabularyTables[] = {
    "*embed_tokens.weight", "lm_head.weight",   "*wte.weight",       "*word_embeddings.weight",
    "*embed_in.weight",     "embed_out.weight", "token_embd.weight", "output.weight"};

Recipe build_recipe(const ConvertArgs& a) {
  Recipe r;
  if (!a.recipe_file.empty()) r = Recipe::load(a.recipe_file);
  // Flags override the recipe's defaults; --skip/--rule go before its rules.
  if (*a.bits_opt) r.defaults.bits = a.bits;
  if (*a.group_opt) {
    if (a.group_size == "all") {
      r.defaults.group_size = 0;
    } else {
      try {
        size_t used = 0;
        r.defaults.group_size = std::stoll(a.group_size, &used);
        if (used != a.group_size.size()) throw std::invalid_argument(a.group_size);
      } catch (const std::exception&) {
        throw Error(ErrorCode::InvalidArgument, "", "", "--group-size must be an integer or 'all'");
      }
    }
  }
  if (*a.axis_opt && !a.axis_auto) r.defaults.axis = a.axis;
  if (*a.sym_opt) r.defaults.symmetric = a.symmetric;
  if (*a.zero_opt) {
    const auto zp = zero_point_from_string(a.zero_point);
    if (!zp)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--zero-point must be 'float' or 'integer', not '" + a.zero_point + "'");
    // Symmetric codes have no zero-point: asking for both is a mistake.
    // (Recipe defaults may say both: rules can make single tensors asymmetric.)
    if (*a.sym_opt && a.symmetric)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--zero-point applies to asymmetric schemes; --symmetric has no zero-point");
    r.defaults.zero_point = *zp;
  }
  if (*a.scale_opt) {
    r.defaults.scale_dtype = parse_float_dtype_flag("--scale-dtype", a.scale_dtype);
  }
  // --preset best: the default scheme's bytes with the lowest error measured
  // without calibration data: group 32 with two-level scales (§T) and the
  // search (§M2); --method and --scales name them directly. Unless --axis
  // is given, groups run along each matrix's input dimension (axis -1, as
  // every inference format groups) and along the vocabulary (axis 0) in the
  // token-embedding and output-head tables: on stories260K that halves the
  // next-token KL of axis 0 everywhere (quantization.md §T9).
  std::vector<TensorRule> preset_rules;
  if (*a.preset_opt) {
    if (a.preset != "default" && a.preset != "best")
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--preset must be 'default' or 'best', not '" + a.preset + "'");
    if (*a.method_opt || *a.scales_opt)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--preset chooses the method and the scales; give --preset or "
                  "--method/--scales, not both");
    const bool best = a.preset == "best";
    r.defaults.method = best ? QuantMethod::Search : QuantMethod::Rtn;
    r.defaults.super_block = best ? kSuperBlockGroups : 0;
    if (best && !*a.group_opt) r.defaults.group_size = 32;
    if (best && !*a.axis_opt) {
      r.defaults.axis = -1;
      for (const char* p : kVocabularyTables) {
        TensorRule t;
        t.pattern = p;
        t.axis = 0;
        t.origin = "--preset best: a vocabulary table, grouped along the vocabulary";
        t.preset = true;
        preset_rules.push_back(t);
      }
    }
  }
  if (*a.method_opt) {
    const auto m = method_from_string(a.method);
    if (!m)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--method must be 'rtn', 'search' or 'refit', not '" + a.method + "'");
    r.defaults.method = *m;
  }
  // --scales two-level: the groups' scales and minimums quantized in
  // super-blocks (docs/quantization.md §T).
  if (*a.scales_opt) {
    if (a.scales != "one-level" && a.scales != "two-level")
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--scales must be 'one-level' or 'two-level', not '" + a.scales + "'");
    r.defaults.super_block = a.scales == "two-level" ? kSuperBlockGroups : 0;
  }
  if (*a.min_dims_opt) {
    // As the recipe requires: a 0-d tensor has one element and nothing to group.
    if (a.min_dims < 1)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--min-dims must be at least 1, not " + std::to_string(a.min_dims));
    r.min_dims = a.min_dims;
  }
  const std::string why = validate_scheme(r.defaults);
  if (!why.empty()) throw Error(ErrorCode::InvalidArgument, "", "", why);
  std::vector<TensorRule> front;
  for (const auto& s : a.skips) {
    TensorRule t;
    t.pattern = s;
    t.skip = true;
    t.origin = "--skip '" + s + "'";
    front.push_back(t);
  }
  for (const auto& s : a.rules) front.push_back(parse_rule(s));
  r.rules.insert(r.rules.begin(), front.begin(), front.end());
  // The preset's rules last: any rule of the user's that matches wins.
  r.rules.insert(r.rules.end(), preset_rules.begin(), preset_rules.end());
  return r;
}

void print_plan(const ConvertPlan& plan) {
  // Names from the file: escaped for the terminal, padded by display width.
  std::vector<std::string> names;
  size_t w = 6;
  for (const auto& e : plan.tensors) {
    names.push_back(escape_for_terminal(e.name));
    w = std::max(w, display_width(names.back()));
  }
  std::printf("%s  %-18s %-5s %-24s %12s %12s  %s\n", pad_to_width("tensor", w).c_str(), "shape",
              "dtype", "action", "bytes in", "bytes out", "why");
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const PlanEntry& e = plan.tensors[i];
    const std::string scheme = e.action == TensorAction::Keep ? kRawLabel : scheme_label(e.scheme);
    std::printf("%s  %-18s %-5s %-24s %12llu %12llu  %s\n", pad_to_width(names[i], w).c_str(),
                shape_to_string(e.shape).c_str(), dtype_name(e.dtype), scheme.c_str(),
                static_cast<unsigned long long>(e.bytes_in),
                static_cast<unsigned long long>(e.bytes_out),
                escape_for_terminal(e.reason).c_str());
  }
  // The file's size and the ratio over it: what convert's summary will say.
  std::printf("total: %s (%zu quantized, %zu raw), %s -> %s%s (%s; quantized tensors: %s -> %s)\n",
              count_of(plan.tensors.size(), "tensor").c_str(), plan.tensors_quantized,
              plan.tensors_kept, format_bytes(plan.bytes_in).c_str(),
              plan.bytes_out_is_upper_bound ? "at most " : "", format_bytes(plan.bytes_out).c_str(),
              format_ratio(compression_ratio(plan.bytes_in, plan.bytes_out)).c_str(),
              format_bytes(plan.bytes_quantized_in).c_str(),
              format_bytes(plan.bytes_quantized_out).c_str());
}

// Warnings go to stderr whatever the output mode, so a CI log shows them.
void print_warnings(const std::vector<std::string>& warnings) {
  for (const auto& w : warnings) std::fprintf(stderr, "qpack: warning: %s\n", w.c_str());
}

// --dry-run of an exporter: its plan as JSON (with "dry_run": true) or as a
// table, then the plan's warnings.
template <class Plan>
int print_dry_run(const Plan& plan, bool json, void (*print_table)(const Plan&)) {
  if (json) {
    nlohmann::json j = plan.to_json();
    j["dry_run"] = true;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_table(plan);
  }
  print_warnings(plan.warnings);
  return kExitOk;
}

int run_gguf(ConvertArgs& a) {
  // --method chooses Q4_1/Q5_1 blocks (docs/gguf.md); the other scheme
  // options have no GGUF meaning.
  std::vector<std::pair<std::string, CLI::Option*>> not_gguf;
  for (const auto& o : a.qpack_only)
    if (o.second != a.method_opt) not_gguf.push_back(o);
  refuse_options(not_gguf, "GGUF",
                 "GGUF types come from --type, --pure and --tensor-type; docs/gguf.md");
  refuse_options(a.hf_only, "GGUF", kHfHint);
  refuse_options(
      {{"--max-shard-size", a.shard_opt}, {"--part", a.part_opt}, {"--parts", a.parts_opt}}, "GGUF",
      "a GGUF is one file");
  GgufExportOptions o;
  o.type = a.gguf_type;
  find_gguf_file_type(o.type);  // an unknown --type before anything is read
  o.pure = a.pure;
  if (*a.method_opt) {
    const auto m = method_from_string(a.method);
    if (!m)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--method must be 'rtn', 'search' or 'refit', not '" + a.method + "'");
    o.method = *m;
  }
  for (const auto& t : a.tensor_types) o.tensor_types.push_back(parse_gguf_tensor_type_rule(t));
  o.vocab_from = a.vocab_from;
  o.threads = a.threads;
  refuse_device_list(a, "GGUF");
  o.device = a.device.value();
  if (a.dry_run) return print_dry_run(plan_gguf_export(a.source, o), a.json, print_gguf_plan);
  if (a.output.empty())
    throw Error(ErrorCode::InvalidArgument, "", "", "convert needs OUTPUT (or --dry-run)");
  o.overwrite = a.force;
  ProgressBar bar("convert", !a.quiet && !a.json);
  o.progress = [&bar](const GgufExportProgress& p) {
    bar.update(p.bytes_done, p.bytes_total, p.tensors_done, p.tensors_total, p.current);
  };
  const GgufExportSummary s = export_gguf(a.source, a.output, o);
  bar.finish();
  if (a.json) {
    nlohmann::json j = s.to_json();
    j["output"] = a.output;
    j["source"] = a.source;
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!a.quiet) {
    std::printf("qpack convert: %s (%zu quantized) -> %s, %s (general.file_type %u)\n",
                count_of(s.plan.tensors.size(), "tensor").c_str(), s.plan.tensors_quantized,
                escape_for_terminal(a.output).c_str(), s.plan.file_type.c_str(),
                s.plan.llama_ftype);
    std::printf("  in  %s   out %s   ratio %s\n", format_bytes(s.plan.bytes_in).c_str(),
                format_bytes(s.plan.file_bytes).c_str(),
                format_ratio(compression_ratio(s.plan.bytes_in, s.plan.file_bytes)).c_str());
    std::printf("  time %.2f s   %.2f GB/s   device %s\n", s.seconds,
                s.seconds > 0 ? double(s.plan.bytes_in) / s.seconds / 1e9 : 0.0, s.device.c_str());
  }
  print_warnings(s.plan.warnings);
  return kExitOk;
}

// "5GB", "500MB", "2GiB", "1000000": HF's units (KB/MB/GB powers of 10,
// KiB/MiB/GiB powers of 2).
uint64_t parse_shard_size(const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  for (auto& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  static const std::pair<const char*, double> kUnits[] = {{"", 1},
                                                          {"B", 1},
                                                          {"KB", 1e3},
                                                          {"MB", 1e6},
                                                          {"GB", 1e9},
                                                          {"TB", 1e12},
                                                          {"KIB", 1024.0},
                                                          {"MIB", 1048576.0},
                                                          {"GIB", 1073741824.0},
                                                          {"TIB", 1099511627776.0}};
  if (used > 0 && v > 0)
    for (const auto& [name, mult] : kUnits)
      if (unit == name && v * mult >= 1 && v * mult < 1.8e19) return uint64_t(v * mult);
  throw Error(
      ErrorCode::InvalidArgument, "", "",
      "--max-shard-size must be a positive size such as 5GB, 500MB or 2GiB, not '" + text + "'");
}

void print_hf_plan(const HfExportPlan& plan) {
  std::vector<std::string> names;
  size_t w = 6;
  for (const auto& e : plan.tensors) {
    names.push_back(escape_for_terminal(e.name));
    w = std::max(w, display_width(names.back()));
  }
  std::printf("%s  %-14s %-5s %-10s %12s %12s  %s\n", pad_to_width("tensor", w).c_str(), "shape",
              "dtype", "action", "bytes in", "bytes out", "why");
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const HfPlanEntry& e = plan.tensors[i];
    std::printf("%s  %-14s %-5s %-10s %12llu %12llu  %s\n", pad_to_width(names[i], w).c_str(),
                shape_to_string(e.shape).c_str(), dtype_name(e.dtype),
                e.quantized ? "quantize" : "keep", static_cast<unsigned long long>(e.bytes_in),
                static_cast<unsigned long long>(e.bytes_out),
                escape_for_terminal(e.reason).c_str());
  }
  const QuantScheme& s = plan.scheme;
  std::printf("%s: %d-bit %s, %s, %s scales; ignore [", hf_format_name(plan.format), s.bits,
              s.symmetric ? "symmetric" : "asymmetric (integer zero-point)",
              s.group_size > 0 ? ("group " + std::to_string(s.group_size)).c_str() : "channel-wise",
              dtype_name(s.scale_dtype));
  for (size_t i = 0; i < plan.ignore.size(); ++i)
    std::printf("%s%s", i ? ", " : "", escape_for_terminal(plan.ignore[i]).c_str());
  std::printf("]\ntotal: %s (%zu quantized), %s -> %s (%s)\n",
              count_of(plan.tensors.size(), "tensor").c_str(), plan.tensors_quantized,
              format_bytes(plan.bytes_in).c_str(), format_bytes(plan.bytes_out).c_str(),
              format_ratio(compression_ratio(plan.bytes_in, plan.bytes_out)).c_str());
}

int run_hf(ConvertArgs& a, HfFormat format) {
  refuse_options(a.gguf_only, hf_format_name(format), kGgufHint);
  refuse_options({{"--rule", a.rule_opt},
                  {"--recipe", a.recipe_opt},
                  {"--min-dims", a.min_dims_opt},
                  {"--zstd", a.zstd},
                  {"--require-quantized", a.require_opt},
                  {"--part", a.part_opt},
                  {"--parts", a.parts_opt},
                  {"--preset", a.preset_opt},
                  {"--scales", a.scales_opt},
                  {"--target-bpw", a.target_opt},
                  {"--target-error", a.target_error_opt},
                  {"--imatrix", a.imatrix_opt},
                  {"--budget-objective", a.objective_opt},
                  {"--activations", a.activations_opt}},
                 hf_format_name(format), "a .qpack option; docs/hf-quantized.md");
  HfExportOptions o;
  o.format = format;
  if (*a.bits_opt) o.bits = a.bits;
  if (*a.group_opt) {
    if (a.group_size == "all") {
      o.group_size = 0;
    } else {
      try {
        size_t used = 0;
        o.group_size = std::stoll(a.group_size, &used);
        if (used != a.group_size.size()) throw std::invalid_argument(a.group_size);
      } catch (const std::exception&) {
        throw Error(ErrorCode::InvalidArgument, "", "", "--group-size must be an integer or 'all'");
      }
    }
  }
  if (*a.axis_opt && a.axis != -1 && a.axis != 1)
    throw Error(ErrorCode::InvalidArgument, "", "",
                std::string(hf_format_name(format)) +
                    " groups along the input dimension: --axis must be -1 (or left out)");
  if (*a.sym_opt) o.symmetric = a.symmetric;
  if (*a.zero_opt) {
    // Asymmetric exports always use the integer zero-point (the formats
    // store a code); the flag may say so, never otherwise.
    if (a.zero_point != "integer")
      throw Error(ErrorCode::InvalidArgument, "", "",
                  std::string(hf_format_name(format)) +
                      " zero-points are integer codes: --zero-point may only be 'integer' "
                      "(asymmetric exports use it without the flag)");
    if (o.symmetric && *a.sym_opt)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--zero-point applies to asymmetric schemes; --symmetric has no zero-point");
    o.symmetric = false;
  }
  if (*a.scale_opt) o.scale_dtype = parse_float_dtype_flag("--scale-dtype", a.scale_dtype);
  if (*a.method_opt) {
    const auto m = method_from_string(a.method);
    if (!m)
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--method must be 'rtn', 'search' or 'refit', not '" + a.method + "'");
    o.method = *m;
  }
  o.skip = a.skips;
  o.include = a.includes;
  if (a.nonfinite == "error")
    o.nonfinite = NonFinitePolicy::Error;
  else if (a.nonfinite == "zero")
    o.nonfinite = NonFinitePolicy::Zero;
  else
    throw Error(ErrorCode::InvalidArgument, "", "", "--nonfinite must be 'error' or 'zero'");
  o.max_shard_bytes = parse_shard_size(a.max_shard_size);
  if (a.dry_run) return print_dry_run(plan_hf_export(a.source, o), a.json, print_hf_plan);
  if (a.output.empty())
    throw Error(ErrorCode::InvalidArgument, "", "", "convert needs OUTPUT (or --dry-run)");
  o.overwrite = a.force;
  refuse_device_list(a, hf_format_name(format));
  auto quantizer = make_quantizer(a.device.value(), a.threads);
  ProgressBar bar("convert", !a.quiet && !a.json);
  o.progress = [&bar](size_t t, size_t tt, uint64_t b, uint64_t bt, const std::string& name) {
    bar.update(b, bt, t, tt, name);
  };
  const HfExportSummary s = export_hf(a.source, a.output, o, *quantizer);
  bar.finish();
  if (a.json) {
    nlohmann::json j = s.to_json();
    j["output"] = a.output;
    j["source"] = a.source;
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!a.quiet) {
    std::printf("qpack convert: %s (%zu quantized) -> %s/ (%s, %s)\n",
                count_of(s.plan.tensors.size(), "tensor").c_str(), s.plan.tensors_quantized,
                escape_for_terminal(a.output).c_str(), hf_format_name(s.plan.format),
                count_of(s.shards.size(), "shard").c_str());
    std::printf("  in  %s   out %s   ratio %s\n", format_bytes(s.plan.bytes_in).c_str(),
                format_bytes(s.plan.bytes_out).c_str(),
                format_ratio(compression_ratio(s.plan.bytes_in, s.plan.bytes_out)).c_str());
    std::printf("  time %.2f s   %.2f GB/s   device %s\n", s.seconds,
                s.seconds > 0 ? double(s.plan.bytes_in) / s.seconds / 1e9 : 0.0, s.device.c_str());
  }
  print_warnings(s.plan.warnings);
  return kExitOk;
}

// --axis N or --axis auto.
void parse_axis(ConvertArgs& a) {
  if (a.axis_text == "auto") {
    a.axis_auto = true;
    return;
  }
  try {
    size_t used = 0;
    a.axis = std::stoi(a.axis_text, &used);
    if (used != a.axis_text.size()) throw std::invalid_argument(a.axis_text);
  } catch (const std::exception&) {
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--axis must be an integer or 'auto', not '" + a.axis_text + "'");
  }
}

void print_budget(const BudgetReport& r) {
  std::printf("budget: ");
  if (r.target_bpw)
    std::printf("target %.4f bpw, chosen %.4f bpw (%+.2f %%), reachable %.4f .. %.4f",
                *r.target_bpw, r.bpw, (r.bpw / *r.target_bpw - 1) * 100, r.min_bpw, r.max_bpw);
  else if (r.target_error)
    std::printf(
        "target est. rel. error %.4f (reachable from %.5f), chosen %.4f bpw (reachable "
        "%.4f .. %.4f)",
        *r.target_error, r.min_rel_error, r.bpw, r.min_bpw, r.max_bpw);
  else
    std::printf("%.4f bpw", r.bpw);
  std::printf(" over %s (%lld elements); objective %s; est. rel. error %.4f; axis %s; weights %s\n",
              count_of(r.tensors.size(), "quantized tensor").c_str(),
              static_cast<long long>(r.elements), budget_objective_name(r.objective),
              r.estimated_rel_error, r.axis_auto ? "auto" : "as asked",
              escape_for_terminal(r.weights).c_str());
}

// convert --profile: the stages of ConvertStages with their share of the
// wall time; the writer thread's beside them.
void print_stages(const ConvertSummary& s) {
  const ConvertStages& g = s.stages;
  const double wall = s.seconds > 0 ? s.seconds : 1;
  const double listed =
      g.open + g.hash_source + g.submit + g.quantize_wait + g.write_wait + g.commit;
  const auto row = [&](const char* what, double secs) {
    std::printf("    %-34s %8.3f s %6.1f %%\n", what, secs, 100 * secs / wall);
  };
  std::printf("  profile (wall %.3f s; the converting thread's steps sum to it):\n", s.seconds);
  row("open, plan, output checks", g.open);
  row("source checksums (provenance)", g.hash_source);
  row("quantize: submit", g.submit);
  row("quantize: wait for the codes", g.quantize_wait);
  row("wait for the writer", g.write_wait);
  row("commit (manifest, fsync, rename)", g.commit);
  row("other (progress, buffers, pages)", std::max(0.0, s.seconds - listed));
  std::printf("  writer thread (beside the above):\n");
  row("write()", g.write);
  row("section checksums", g.checksum);
  if (g.compress > 0) row("zstd", g.compress);
}

int run_convert(ConvertArgs& a) {
  parse_axis(a);
  const std::string format = output_format(a);
  if (format != "qpack" && a.axis_auto)
    throw Error(ErrorCode::InvalidArgument, "", "", "--axis auto is for .qpack output");
  if (format == "gguf") return run_gguf(a);
  if (format == "compressed-tensors") return run_hf(a, HfFormat::CompressedTensors);
  if (format == "gptq") return run_hf(a, HfFormat::Gptq);
  refuse_options(a.gguf_only, ".qpack", kGgufHint);
  refuse_options(a.hf_only, ".qpack", kHfHint);
  ConvertOptions o;
  if (a.shard_opt->count() > 0) o.max_shard_bytes = parse_shard_size(a.max_shard_size);
  if (a.part_opt->count() > 0) {
    const PartSpec p = parse_part_option(a.part, a.parts_opt->count() > 0 ? a.parts : 0);
    o.part_index = p.index;
    o.part_count = p.count;
  } else if (a.parts_opt->count() > 0) {
    throw Error(ErrorCode::InvalidArgument, "", "", "--parts N goes with --part auto");
  }
  o.recipe = build_recipe(a);
  if (a.nonfinite == "error")
    o.nonfinite = NonFinitePolicy::Error;
  else if (a.nonfinite == "zero")
    o.nonfinite = NonFinitePolicy::Zero;
  else
    throw Error(ErrorCode::InvalidArgument, "", "", "--nonfinite must be 'error' or 'zero'");
  if (a.zstd && a.zstd->count() > 0) {
    o.codec = Codec::Zstd;
    if (a.zstd_level < 1 || a.zstd_level > 19)
      throw Error(ErrorCode::InvalidArgument, "", "", "--zstd level must be 1..19");
    o.zstd_level = a.zstd_level;
  }
  o.require_quantized = a.require_quantized;
  // --target-bpw / --axis auto: per-tensor choices into the recipe's
  // `tensors`, before the plan.
  std::optional<BudgetReport> budget;
  const bool error_target = a.target_error_opt->count() > 0;
  if (a.target_opt->count() > 0 || error_target || a.axis_auto) {
    BudgetOptions bo;
    if (a.target_opt->count() > 0) bo.target_bpw = a.target_bpw;
    if (error_target) bo.target_error = a.target_error;
    bo.axis_auto = a.axis_auto;
    if (a.objective == "relative")
      bo.objective = BudgetObjective::Relative;
    else if (a.objective != "total")
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--budget-objective must be 'relative' or 'total', not '" + a.objective + "'");
    bo.origin = a.target_opt->count() > 0 ? "--target-bpw"
                : error_target            ? "--target-error"
                                          : "--axis auto";
    bo.nonfinite = o.nonfinite;
    bo.threads = a.threads;
    std::optional<ImportanceMatrix> im;
    if (a.imatrix_opt->count() > 0) {
      im = read_imatrix(a.imatrix_file);
      bo.imatrix = &*im;
    }
    if (a.activations_opt->count() > 0) bo.activations_path = a.activations_file;
    const auto ckpt = Checkpoint::open(a.source);
    budget.emplace();
    o.recipe = choose_to_budget(*ckpt, o.recipe, bo, &*budget);
  } else if (a.objective_opt->count() > 0) {
    throw Error(ErrorCode::InvalidArgument, "", "",
                "--budget-objective goes with --target-bpw or --target-error");
  } else if (a.imatrix_opt->count() > 0 || a.activations_opt->count() > 0) {
    throw Error(ErrorCode::InvalidArgument, "", "",
                std::string(a.imatrix_opt->count() > 0 ? "--imatrix" : "--activations") +
                    " weighs the errors of --target-bpw and --axis auto; give one of them");
  }
  if (a.dry_run) {
    const ConvertPlan plan = make_plan(a.source, o);
    if (a.json) {
      nlohmann::json j = plan.to_json();
      if (budget) {
        j["budget"] = budget->to_json();
        for (const auto& n : budget->notes) j["warnings"].push_back(n);
      }
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      print_plan(plan);
      if (budget) print_budget(*budget);
    }
    print_warnings(plan.warnings);
    if (budget) print_warnings(budget->notes);
    return kExitOk;
  }
  if (a.output.empty())
    throw Error(ErrorCode::InvalidArgument, "", "", "convert needs OUTPUT (or --dry-run)");
  o.overwrite = a.force;
  auto quantizer = make_quantizer(a.device, a.threads);
  ProgressBar bar("convert", !a.quiet && !a.json);
  o.progress = [&bar](const ConvertProgress& p) {
    bar.update(p.bytes_done, p.bytes_total, p.tensors_done, p.tensors_total, p.current);
  };
  const ConvertSummary s = convert_checkpoint(a.source, a.output, o, *quantizer);
  bar.finish();
  if (a.json) {
    nlohmann::json j = s.to_json();
    j["output"] = a.output;
    j["source"] = a.source;
    if (budget) {
      j["budget"] = budget->to_json();
      for (const auto& n : budget->notes) j["warnings"].push_back(n);
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!a.quiet) {
    std::printf("qpack convert: %s quantized, %zu raw -> %s\n",
                count_of(s.tensors_quantized, "tensor").c_str(), s.tensors_kept,
                escape_for_terminal(s.files.size() == 1 ? s.files[0] : a.output).c_str());
    if (s.files.size() > 1)
      std::printf("  %s: %s ... %s\n", count_of(s.files.size(), "file").c_str(),
                  escape_for_terminal(s.files.front()).c_str(),
                  escape_for_terminal(s.files.back()).c_str());
    std::printf("  in  %s   out %s   ratio %s   (quantized tensors: %s -> %s)\n",
                format_bytes(s.bytes_in).c_str(), format_bytes(s.bytes_out).c_str(),
                format_ratio(compression_ratio(s.bytes_in, s.bytes_out)).c_str(),
                format_bytes(s.bytes_quantized_in).c_str(),
                format_bytes(s.bytes_quantized_out).c_str());
    std::printf("  time %.2f s   %.2f GB/s   device %s\n", s.seconds,
                s.seconds > 0 ? double(s.bytes_in) / s.seconds / 1e9 : 0.0, s.device.c_str());
    if (budget) {
      std::printf("  ");
      print_budget(*budget);
    }
  }
  if (a.profile && !a.json) print_stages(s);
  print_warnings(s.warnings);
  if (budget) print_warnings(budget->notes);
  return kExitOk;
}

}  // namespace

Runner add_convert(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* sub = app.add_subcommand(
      "convert", "Quantize a safetensors checkpoint into one .qpack file, or into a GGUF");
  sub->footer(
      "Defaults (FlexLLMGen): 4 bits, group size 64 along axis 0, asymmetric min-max, F16 scales.\n"
      "Floating-point tensors with >= 2 dimensions are quantized; 1-D tensors (norms, biases) are "
      "kept.\n"
      "Rules (first match wins; --skip and --rule before the recipe's own):\n"
      "  --skip '*embed_tokens*' --rule '*.mlp.down_proj.weight:bits=8,group=128,scale=bf16'\n"
      "Recipe file: {\"defaults\": {\"bits\": 4, \"group_size\": 64, \"axis\": 0, \"symmetric\": "
      "false,\n"
      "  \"scale_dtype\": \"f16\", \"zero_point\": \"float\"}, \"min_dims\": 2, \"rules\": "
      "[{\"match\": \"lm_head*\", "
      "\"skip\": true}]}\n"
      "GGUF output (OUT.gguf or --format gguf), from a GGUF or a Llama-family safetensors model:\n"
      "  qpack convert model/ out.gguf --type Q4_K_M [--pure] [--tensor-type 'attn_v=q8_0']\n"
      "  [--vocab-from vocab.gguf]; types and rules as llama-quantize's (docs/gguf.md).\n"
      "Hugging Face model folder (--format compressed-tensors or gptq), from a safetensors model:\n"
      "  qpack convert model/ out/ --format compressed-tensors [-b 4|8|2] [-g 32|64|128|all]\n"
      "  [--asymmetric] [--scale-dtype bf16] [--max-shard-size 5GB]; defaults W4A16: 4 bits,\n"
      "  symmetric, group 128 along the input dimension (docs/hf-quantized.md).\n"
      "See docs/quantization.md, docs/gguf.md and docs/cli.md.");
  sub->add_option("SOURCE", a->source,
                  ".safetensors file, model.safetensors.index.json, or a folder")
      ->required();
  sub->add_option("OUTPUT", a->output, "the .qpack or .gguf file to write");
  a->format_opt = sub->add_option(
      "--format", a->format,
      "qpack, gguf, compressed-tensors or gptq (default: from OUTPUT's extension, .gguf = gguf; "
      "the last two write a model folder OUTPUT)");
  a->type_opt = sub->add_option(
      "--type", a->gguf_type,
      "GGUF: llama-quantize file type: Q4_K_M (default), Q4_K_S, Q5_K_M, Q5_K_S, Q3_K_M, Q3_K_L, "
      "Q3_K_S, Q2_K, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16, F32");
  auto* pure = sub->add_flag("--pure", a->pure,
                             "GGUF: every quantizable tensor in the file type's default type "
                             "(llama-quantize --pure)");
  auto* tt = sub->add_option("--tensor-type", a->tensor_types,
                             "GGUF: PATTERN=TYPE, a regex over GGUF names (repeatable, first "
                             "match wins)")
                 ->expected(1)
                 ->allow_extra_args(false)
                 ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* vocab = sub->add_option("--vocab-from", a->vocab_from,
                                "GGUF from safetensors: copy the tokenizer.* keys of this GGUF")
                    ->check(CLI::ExistingFile);
  a->gguf_only = {
      {"--type", a->type_opt}, {"--pure", pure}, {"--tensor-type", tt}, {"--vocab-from", vocab}};
  a->bits_opt = sub->add_option("--bits,-b", a->bits, "bits per code: 2, 3, 4 or 8 (default 4)");
  a->group_opt = sub->add_option("--group-size,-g", a->group_size,
                                 "elements per group (even, >= 8) or 'all' (default 64)");
  a->axis_opt = sub->add_option("--axis", a->axis_text,
                                "grouping axis; negative counts from the end (default 0); 'auto': "
                                "axis 0 or -1 per tensor by the importance-weighted error (needs "
                                "--imatrix or --activations)");
  a->target_opt = sub->add_option("--target-bpw", a->target_bpw,
                                  "bits, group size (and with --axis auto the axis) per tensor "
                                  "to this many bits per weight over the quantized tensors "
                                  "(codes + scales + zero-points), least estimated error");
  a->target_error_opt =
      sub->add_option("--target-error", a->target_error,
                      "bits, group size (and with --axis auto the axis) per tensor: the fewest "
                      "bits whose estimated model-wide relative error (verify's, weighted with "
                      "--imatrix) is at most this");
  a->imatrix_opt = sub->add_option("--imatrix", a->imatrix_file,
                                   "llama.cpp importance matrix (imatrix.dat or GGUF) weighing "
                                   "--target-bpw / --axis auto errors per input channel")
                       ->check(CLI::ExistingFile);
  a->activations_opt = sub->add_option("--activations", a->activations_file,
                                       "sample inputs per weight (safetensors NAME -> [samples, "
                                       "in], as verify --activations): their per-channel mean "
                                       "square weighs --target-bpw / --axis auto errors")
                           ->check(CLI::ExistingFile);
  a->objective_opt = sub->add_option("--budget-objective", a->objective,
                                     "what --target-bpw minimises: 'total' (default), the "
                                     "model-wide squared (weighted) error, or 'relative', the sum "
                                     "of each tensor's squared relative error");
  a->sym_opt = sub->add_flag("--symmetric,!--asymmetric", a->symmetric,
                             "symmetric absmax codes, no zero-point (default asymmetric)");
  a->zero_opt = sub->add_option("--zero-point", a->zero_point,
                                "asymmetric zero-points: 'float' (the group minimum, default) or "
                                "'integer' (compressed-tensors/GPTQ: range includes 0)");
  a->method_opt = sub->add_option("--method", a->method,
                                  "how group scales and minimums are chosen: 'rtn' (min-max, "
                                  "default), 'search' or 'refit' (docs/quantization.md §M); "
                                  "for GGUF output the Q4_1/Q5_1 blocks (§G9)");
  a->preset_opt = sub->add_option("--preset", a->preset,
                                  "'default' (FlexLLMGen's scheme, RTN) or 'best' (the same "
                                  "bytes: -g 32 --scales two-level --method search, axis -1 "
                                  "but 0 for the embedding and output tables, unless --axis)");
  a->scales_opt = sub->add_option("--scales", a->scales,
                                  "'one-level' (a scale and minimum per group in the scale "
                                  "dtype, default) or 'two-level' (6-bit codes per group, F16 "
                                  "per 8-group super-block: group 32 at group 64's bytes; "
                                  "docs/quantization.md §T)");
  a->scale_opt = sub->add_option("--scale-dtype", a->scale_dtype,
                                 "scale/zero-point dtype: f16, bf16, f32, any case (default f16)");
  // One value per occurrence, repeated for more: a vector option would
  // otherwise swallow the positionals that follow it.
  auto* skip = sub->add_option("--skip", a->skips,
                               "keep tensors matching this glob as they are (repeatable)");
  skip->expected(1)->allow_extra_args(false)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* rule =
      sub->add_option("--rule", a->rules, "PATTERN:key=value,... per-tensor override (repeatable)");
  rule->expected(1)->allow_extra_args(false)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* recipe =
      sub->add_option("--recipe", a->recipe_file, "JSON recipe file")->check(CLI::ExistingFile);
  a->min_dims_opt = sub->add_option(
      "--min-dims", a->min_dims, "quantize tensors with at least this many dimensions (default 2)");
  auto* nonfinite =
      sub->add_option("--nonfinite", a->nonfinite,
                      "NaN/Inf in a tensor: 'error' (default) or 'zero' (replace by 0)");
  add_threads_option(sub, &a->threads);
  a->device_opt = add_device_option(sub, &a->device, "the quantizer", /*lists=*/true);
  a->zstd = sub->add_option("--zstd", a->zstd_level,
                            "compress sections with zstd (optional LEVEL, default 3)")
                ->expected(0, 1)
                ->allow_extra_args(false)
                ->default_str("3");  // what a bare --zstd means
  sub->add_flag("--force,-f,--overwrite", a->force, "replace OUTPUT if it exists");
  sub->add_flag("--dry-run,-n", a->dry_run,
                "print what would happen to each tensor; write nothing");
  sub->add_flag("--profile", a->profile,
                "after the summary, where the time went: open, source hashing, quantize "
                "(submit, wait), waiting for the writer, commit; the writer thread's write, "
                "checksum, zstd (.qpack output; --json always has them as \"stages\")");
  add_quiet_flag(sub, &a->quiet, "no progress bar, no summary");
  auto* require = sub->add_flag("--require-quantized", a->require_quantized,
                                "fail (exit 3) before writing when no tensor would be quantized");
  a->rule_opt = rule;
  a->recipe_opt = recipe;
  a->require_opt = require;
  a->shard_opt =
      sub->add_option("--max-shard-size", a->max_shard_size,
                      "largest shard: compressed-tensors/gptq safetensors shards (default "
                      "5GB); .qpack: a set of shards plus BASE.qpack.index.json (no "
                      "default: one file). KB/MB/GB are powers of 10, KiB/MiB/GiB of 2");
  a->include_opt = sub->add_option("--include", a->includes,
                                   "compressed-tensors/gptq: also quantize Linear weights "
                                   "matching this glob (repeatable; anything else is an error)")
                       ->expected(1)
                       ->allow_extra_args(false)
                       ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  a->hf_only = {{"--include", a->include_opt}};
  a->part_opt = sub->add_option(
      "--part", a->part,
      ".qpack: convert only part K/N (K from 0 to N-1) of a deterministic, byte-balanced split, "
      "written as BASE-0000{K+1}-of-0000N.qpack; 'auto' takes K and N from Slurm "
      "(SLURM_ARRAY_TASK_ID, _COUNT, _MIN) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX "
      "and --parts or QPACK_PARTS); qpack merge puts the parts together (docs/scale-out.md)");
  a->parts_opt = sub->add_option("--parts", a->parts,
                                 "with --part auto under Kubernetes: the number of parts (the "
                                 "Job's completions); under Slurm it must equal the array's size");
  a->qpack_only = {{"--bits", a->bits_opt},
                   {"--group-size", a->group_opt},
                   {"--axis", a->axis_opt},
                   {"--symmetric/--asymmetric", a->sym_opt},
                   {"--scale-dtype", a->scale_opt},
                   {"--zero-point", a->zero_opt},
                   {"--method", a->method_opt},
                   {"--preset", a->preset_opt},
                   {"--scales", a->scales_opt},
                   {"--target-bpw", a->target_opt},
                   {"--target-error", a->target_error_opt},
                   {"--imatrix", a->imatrix_opt},
                   {"--budget-objective", a->objective_opt},
                   {"--activations", a->activations_opt},
                   {"--skip", skip},
                   {"--rule", rule},
                   {"--recipe", recipe},
                   {"--min-dims", a->min_dims_opt},
                   {"--nonfinite", nonfinite},
                   {"--zstd", a->zstd},
                   {"--require-quantized", require}};
  add_json_flag(sub, &a->json, "print the summary (or the plan) as JSON");
  return [a] { return run_convert(*a); };
}

}  // namespace qpack::cli
