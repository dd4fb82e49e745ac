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
#include "qpack/converter/dequantize_hf.hpp"
#include "qpack/converter/export.hpp"
#include "qpack/converter/recipe.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/hf_quantized.hpp"
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
  bool skip_unsupported = false;
};

// A GGUF that fails the reader's validation is damaged: exit 4, as a .qpack
// that fails its checks (an unsupported type stays bad input, 3).
void rethrow_gguf_error(const Error& e, const std::string& path) {
  if (e.file() == path && std::string(error_code_name(e.code())).rfind("Gguf", 0) == 0)
    throw QpackIntegrityError(e);
  throw e;
}

int run_dequantize(const DequantizeArgs& a) {
  DequantizeOptions opt;
  if (!a.dtype.empty()) opt.dtype = parse_float_dtype_flag("--dtype", a.dtype);
  if (!a.kept_dtype.empty()) opt.kept_dtype = parse_float_dtype_flag("--kept-dtype", a.kept_dtype);
  opt.device = a.device.value();
  opt.threads = a.threads;
  opt.overwrite = a.force;
  opt.skip_unsupported = a.skip_unsupported;
  const bool gguf = has_gguf_magic(a.qpack);
  const bool hf = !gguf && HfQuantizedModel::detect(a.qpack);
  if (a.skip_unsupported && !gguf)
    throw Error(ErrorCode::InvalidArgument, a.qpack, "",
                "--skip-unsupported applies to GGUF input only");
  ProgressBar bar("dequantizing", !a.quiet && !a.json);
  if (bar.active())
    opt.progress = [&](size_t i, size_t n, uint64_t done, uint64_t total,
                       const std::string& tensor) { bar.update(done, total, i, n, tensor); };
  DequantizeSummary s;
  try {
    s = gguf ? dequantize_gguf_file(a.qpack, a.out, opt)
        : hf ? dequantize_hf_folder(a.qpack, a.out, opt)
             : dequantize_file(a.qpack, a.out, opt);
  } catch (const Error& e) {
    if (hf) throw;
    // A .qpack that fails its checks is an integrity error (4), as in verify.
    if (gguf) rethrow_gguf_error(e, a.qpack);
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
                              {"device", s.device},
                              {"format", gguf ? "gguf"
                                         : hf ? s.source_format
                                              : "qpack"},
                              {"skipped", s.skipped},
                              {"decoded_on_cpu", s.decoded_on_cpu}};
    const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", text.c_str());
  } else if (!a.quiet)
    std::printf("wrote %s: %s (%zu dequantized, %zu raw), %s of tensor data, on %s\n",
                escape_for_terminal(a.out).c_str(), count_of(s.tensors, "tensor").c_str(),
                s.quantized, s.tensors - s.quantized, format_bytes(s.output_bytes).c_str(),
                s.device.c_str());
  // Said even with --quiet: tensors missing from the output.
  for (const std::string& t : s.skipped)
    std::fprintf(stderr, "qpack: warning: %s left out: no decoder for its type in this build\n",
                 escape_for_terminal(t).c_str());
  if (!s.decoded_on_cpu.empty() && !a.quiet)
    std::fprintf(stderr, "qpack: note: %s decoded on the CPU (no CUDA kernel for the type)\n",
                 count_of(s.decoded_on_cpu.size(), "tensor").c_str());
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
      "Write the checkpoint a .qpack (x^ = fma(q, S, M)) or a GGUF file (ggml's dequantization) "
      "reconstructs as safetensors");
  sub->footer(
      "Quantized tensors are written in their source dtype (or --dtype), rounded to nearest even;\n"
      "kept tensors are copied byte for byte (or, F16/BF16/F32 ones, written in --kept-dtype);\n"
      "the source's safetensors metadata is carried over, less an index's total_size.\n"
      "Every section's checksum is verified as it is read. The output appears only when complete.\n"
      "\n"
      "GGUF input (X.gguf): block-type tensors (Q4_0 ... Q8_0, and every type the build decodes)\n"
      "are decoded by ggml's rules and written as --dtype (default f32); F32/F16/BF16 tensors are\n"
      "copied (or written in --kept-dtype); shapes are ne reversed ([ne1, ne0]); scalar metadata\n"
      "goes to __metadata__ as strings, arrays are named in qpack.gguf_arrays_omitted. A type the\n"
      "build cannot decode (IQ*, TQ*, ...) is an error (exit 3) naming the tensor, unless\n"
      "--skip-unsupported leaves such tensors out with a warning. A malformed GGUF exits 4.\n"
      "\n"
      "\n"
      "A compressed-tensors (pack-quantized) or GPTQ model folder (config.json with a\n"
      "quantization_config, or quantize_config.json): every quantized Linear is read back by\n"
      "qpack's reader of the layout and decoded as (q - z) * s, written in its scale dtype (or\n"
      "--dtype); the other tensors are copied. docs/hf-reading.md.\n"
      "\n"
      "Exit codes: 0 ok, 2 usage, 3 bad input, 4 integrity error (checksum/manifest),\n"
      "5 I/O error (output exists without --force, disk full), 6 --device cuda[:N] unusable.");
  sub->add_option("model", a->qpack,
                  "The .qpack or .gguf file, or a compressed-tensors / GPTQ model folder")
      ->required();
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
  sub->add_flag("--skip-unsupported", a->skip_unsupported,
                "GGUF input: leave out tensors of types this build cannot decode (warned), "
                "instead of failing");
  return [a] { return run_dequantize(*a); };
}

}  // namespace qpack::cli
