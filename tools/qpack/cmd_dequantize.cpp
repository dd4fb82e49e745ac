// qpack dequantize: writes the checkpoint a .qpack reconstructs as one
// safetensors file (logic in the converter's exporters,
// qpack/converter/export.hpp).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_options.hpp"
#include "commands.hpp"
#include "device.hpp"
#include "progress_bar.hpp"
#include "qpack/converter/export.hpp"
#include "qpack/converter/recipe.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"

namespace qpack::cli {

namespace {

struct DequantizeArgs {
  std::string qpack, out;
  std::string dtype;
  std::string kept_dtype;
  DeviceOption device;
  int threads = 0;
  bool force = false;
  bool quiet = false;
  bool json = false;
};

int run_dequantize(const DequantizeArgs& a) {
  DequantizeOptions opt;
  if (!a.dtype.empty()) opt.dtype = parse_float_dtype_flag("--dtype", a.dtype);
  if (!a.kept_dtype.empty()) opt.kept_dtype = parse_float_dtype_flag("--kept-dtype", a.kept_dtype);
  opt.device = a.device.value();
  opt.threads = a.threads;
  opt.overwrite = a.force;
  ProgressBar bar("dequantizing", !a.quiet && !a.json);
  if (bar.active())
    opt.progress = [&](size_t i, size_t n, uint64_t done, uint64_t total,
                       const std::string& tensor) { bar.update(done, total, i, n, tensor); };
  DequantizeSummary s;
  try {
    s = dequantize_file(a.qpack, a.out, opt);
  } catch (const Error& e) {
    // A .qpack that fails its checks is an integrity error (4), as in verify.
    rethrow_qpack_error(e, a.qpack);
  }
  bar.finish();
  if (a.json) {
    const nlohmann::json j = {{"input", a.qpack},
                              {"output", a.out},
                              {"tensors", s.tensors},
                              {"tensors_dequantized", s.quantized},
                              {"tensors_raw", s.tensors - s.quantized},
                              {"bytes_out", s.output_bytes},
                              {"device", s.device}};
    const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", text.c_str());
  } else if (!a.quiet)
    std::printf("wrote %s: %s (%zu dequantized, %zu raw), %s of tensor data, on %s\n",
                escape_for_terminal(a.out).c_str(), count_of(s.tensors, "tensor").c_str(),
                s.quantized, s.tensors - s.quantized, format_bytes(s.output_bytes).c_str(),
                s.device.c_str());
  // Said even with --quiet: the file is not what --dtype alone suggests.
  if (s.kept_other_dtype > 0)
    std::fprintf(stderr,
                 "qpack: warning: %s kept as stored, in a dtype other than --dtype %s "
                 "(--kept-dtype %s converts them)\n",
                 count_of(s.kept_other_dtype, "kept tensor").c_str(), a.dtype.c_str(),
                 a.dtype.c_str());
  return kExitOk;
}

}  // namespace

Runner add_dequantize(CLI::App& app) {
  auto a = std::make_shared<DequantizeArgs>();
  auto* sub = app.add_subcommand(
      "dequantize",
      "Write the checkpoint a .qpack reconstructs (x^ = fma(q, S, M)) as safetensors");
  sub->footer(
      "Quantized tensors are written in their source dtype (or --dtype), rounded to nearest even;\n"
      "kept tensors are copied byte for byte (or, F16/BF16/F32 ones, written in --kept-dtype);\n"
      "the source's safetensors metadata is carried over, less an index's total_size.\n"
      "Every section's checksum is verified as it is read. The output appears only when complete.\n"
      "\n"
      "Exit codes: 0 ok, 2 usage, 3 bad input, 4 integrity error (checksum/manifest),\n"
      "5 I/O error (output exists without --force, disk full), 6 --device cuda[:N] unusable.");
  sub->add_option("model", a->qpack, "The .qpack file")->required();
  sub->add_option("output", a->out, "The .safetensors file to write")->required();
  sub->add_option("--dtype,--dequantized-dtype", a->dtype,
                  "Dtype of the dequantized tensors: f16, bf16 or f32, any case (default: each "
                  "tensor's source dtype); kept tensors: --kept-dtype");
  sub->add_option("--kept-dtype", a->kept_dtype,
                  "Dtype of the kept F16/BF16/F32 tensors: f16, bf16 or f32, any case (default: "
                  "copied as stored; other dtypes are always copied)");
  add_device_option(sub, &a->device, "the dequantization");
  add_threads_option(sub, &a->threads);
  sub->add_flag("-f,--force", a->force, "Replace an existing output file");
  add_quiet_flag(sub, &a->quiet, "No progress and no summary line");
  add_json_flag(sub, &a->json, "Print the summary as JSON (docs/cli.md)");
  return [a] { return run_dequantize(*a); };
}

}  // namespace qpack::cli
