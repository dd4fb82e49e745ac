#include <cstdio>

#include "cli_options.hpp"
#include "commands.hpp"
#include "device.hpp"
#include "progress_bar.hpp"
#include "qpack/converter/convert.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"

namespace qpack::cli {

namespace {

struct ConvertArgs {
  std::string source, output;
  int bits = 4;
  std::string group_size = "64";
  int axis = 0;
  bool symmetric = false;
  std::string scale_dtype = "f16";
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
  bool force = false, dry_run = false, quiet = false, json = false;
  bool require_quantized = false;
};

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
  if (*a.axis_opt) r.defaults.axis = a.axis;
  if (*a.sym_opt) r.defaults.symmetric = a.symmetric;
  if (*a.scale_opt) {
    r.defaults.scale_dtype = parse_float_dtype_flag("--scale-dtype", a.scale_dtype);
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

int run_convert(ConvertArgs& a) {
  ConvertOptions o;
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
  if (a.dry_run) {
    const ConvertPlan plan = make_plan(a.source, o);
    if (a.json) {
      std::printf("%s\n", plan.to_json().dump(2).c_str());
    } else {
      print_plan(plan);
    }
    print_warnings(plan.warnings);
    return kExitOk;
  }
  if (a.output.empty())
    throw Error(ErrorCode::InvalidArgument, "", "", "convert needs OUTPUT (or --dry-run)");
  o.overwrite = a.force;
  auto quantizer = make_quantizer(a.device.value(), a.threads);
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
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!a.quiet) {
    std::printf("qpack convert: %s quantized, %zu raw -> %s\n",
                count_of(s.tensors_quantized, "tensor").c_str(), s.tensors_kept,
                escape_for_terminal(a.output).c_str());
    std::printf("  in  %s   out %s   ratio %s   (quantized tensors: %s -> %s)\n",
                format_bytes(s.bytes_in).c_str(), format_bytes(s.bytes_out).c_str(),
                format_ratio(compression_ratio(s.bytes_in, s.bytes_out)).c_str(),
                format_bytes(s.bytes_quantized_in).c_str(),
                format_bytes(s.bytes_quantized_out).c_str());
    std::printf("  time %.2f s   %.2f GB/s   device %s\n", s.seconds,
                s.seconds > 0 ? double(s.bytes_in) / s.seconds / 1e9 : 0.0, s.device.c_str());
  }
  print_warnings(s.warnings);
  return kExitOk;
}

}  // namespace

Runner add_convert(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* sub =
      app.add_subcommand("convert", "Quantize a safetensors checkpoint into one .qpack file");
  sub->footer(
      "Defaults (FlexLLMGen): 4 bits, group size 64 along axis 0, asymmetric min-max, F16 scales.\n"
      "Floating-point tensors with >= 2 dimensions are quantized; 1-D tensors (norms, biases) are "
      "kept.\n"
      "Rules (first match wins; --skip and --rule before the recipe's own):\n"
      "  --skip '*embed_tokens*' --rule '*.mlp.down_proj.weight:bits=8,group=128,scale=bf16'\n"
      "Recipe file: {\"defaults\": {\"bits\": 4, \"group_size\": 64, \"axis\": 0, \"symmetric\": "
      "false,\n"
      "  \"scale_dtype\": \"f16\"}, \"min_dims\": 2, \"rules\": [{\"match\": \"lm_head*\", "
      "\"skip\": true}]}\n"
      "See docs/quantization.md and docs/cli.md.");
  sub->add_option("SOURCE", a->source,
                  ".safetensors file, model.safetensors.index.json, or a folder")
      ->required();
  sub->add_option("OUTPUT", a->output, "the .qpack file to write");
  a->bits_opt = sub->add_option("--bits,-b", a->bits, "bits per code: 2, 3, 4 or 8 (default 4)");
  a->group_opt = sub->add_option("--group-size,-g", a->group_size,
                                 "elements per group (even, >= 8) or 'all' (default 64)");
  a->axis_opt =
      sub->add_option("--axis", a->axis, "grouping axis; negative counts from the end (default 0)");
  a->sym_opt = sub->add_flag("--symmetric,!--asymmetric", a->symmetric,
                             "symmetric absmax codes, no zero-point (default asymmetric)");
  a->scale_opt = sub->add_option("--scale-dtype", a->scale_dtype,
                                 "scale/zero-point dtype: f16, bf16, f32, any case (default f16)");
  // One value per occurrence, repeated for more: a vector option would
  // otherwise swallow the positionals that follow it.
  sub->add_option("--skip", a->skips, "keep tensors matching this glob as they are (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--rule", a->rules, "PATTERN:key=value,... per-tensor override (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--recipe", a->recipe_file, "JSON recipe file")->check(CLI::ExistingFile);
  a->min_dims_opt = sub->add_option(
      "--min-dims", a->min_dims, "quantize tensors with at least this many dimensions (default 2)");
  sub->add_option("--nonfinite", a->nonfinite,
                  "NaN/Inf in a tensor: 'error' (default) or 'zero' (replace by 0)");
  add_threads_option(sub, &a->threads);
  add_device_option(sub, &a->device, "the quantizer");
  a->zstd = sub->add_option("--zstd", a->zstd_level,
                            "compress sections with zstd (optional LEVEL, default 3)")
                ->expected(0, 1)
                ->allow_extra_args(false)
                ->default_str("3");  // what a bare --zstd means
  sub->add_flag("--force,-f", a->force, "replace OUTPUT if it exists");
  sub->add_flag("--dry-run,-n", a->dry_run,
                "print what would happen to each tensor; write nothing");
  add_quiet_flag(sub, &a->quiet, "no progress bar, no summary");
  sub->add_flag("--require-quantized", a->require_quantized,
                "fail (exit 3) before writing when no tensor would be quantized");
  add_json_flag(sub, &a->json, "print the summary (or the plan) as JSON");
  return [a] { return run_convert(*a); };
}

}  // namespace qpack::cli
