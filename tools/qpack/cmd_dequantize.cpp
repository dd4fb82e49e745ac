// qpack dequantize: writes the checkpoint a .qpack reconstructs as one
// safetensors file or a model folder (logic in the converter's exporters,
// qpack/converter/export.hpp; the folder: docs/hf-folders.md).
#include <sys/stat.h>

#include <cctype>
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
  std::string format;  // "safetensors", "folder", or empty: from OUTPUT
  std::string max_shard_size;
  std::string copy_files_from;
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

// The output's last path component has an extension when its last dot
// (not a leading one) is followed by letters and digits with at least one
// letter: "x.safetensors", "x.bin"; not "Llama-3.1-8B" or "Qwen2.5".
bool has_extension(const std::string& path) {
  const std::string base = path.substr(path.find_last_of('/') + 1);
  const size_t dot = base.find_last_of('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == base.size()) return false;
  bool letter = false;
  for (size_t i = dot + 1; i < base.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(base[i]);
    if (!std::isalnum(c)) return false;
    letter = letter || std::isalpha(c);
  }
  return letter;
}

// --format, else from OUTPUT (docs/cli.md): a trailing '/', an existing
// directory or a name without an extension is a folder; an existing
// non-directory and a name with an extension (.safetensors, ...) one file.
bool folder_output(const DequantizeArgs& a) {
  if (!a.format.empty()) {
    if (a.format != "safetensors" && a.format != "folder")
      throw Error(ErrorCode::InvalidArgument, "", "",
                  "--format must be 'safetensors' or 'folder', not '" + a.format + "'");
    return a.format == "folder";
  }
  if (!a.out.empty() && a.out.back() == '/') return true;
  struct stat st;
  if (::lstat(a.out.c_str(), &st) == 0) return S_ISDIR(st.st_mode);
  return !has_extension(a.out);
}

int run_dequantize(const DequantizeArgs& a) {
  DequantizeOptions opt;
  opt.folder = folder_output(a);
  if (!opt.folder && (!a.max_shard_size.empty() || !a.copy_files_from.empty()))
    throw Error(ErrorCode::InvalidArgument, a.out, "",
                std::string(a.max_shard_size.empty() ? "--copy-files-from" : "--max-shard-size") +
                    " applies to a model folder output (OUTDIR/, or --format folder)");
  if (!a.max_shard_size.empty())
    opt.max_shard_bytes = parse_byte_size_flag("--max-shard-size", a.max_shard_size);
  opt.copy_files_from = a.copy_files_from;
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
    nlohmann::json j = {{"input", a.qpack},
                        {"output", a.out},
                        {"output_kind", opt.folder ? "folder" : "safetensors"},
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
    if (opt.folder) {
      j["shards"] = s.shards;
      j["config_written"] = s.config_written;
      j["files_copied"] = s.files_copied;
      j["files_not_copied"] = s.files_skipped;
    }
    const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", text.c_str());
  } else if (!a.quiet)
    std::printf("wrote %s: %s (%zu dequantized, %zu raw), %s of tensor data, on %s\n",
                escape_for_terminal(a.out).c_str(), count_of(s.tensors, "tensor").c_str(),
                s.quantized, s.tensors - s.quantized, format_bytes(s.output_bytes).c_str(),
                s.device.c_str());
  if (opt.folder && !a.quiet && !a.json) {
    std::printf("  %s, %s%s\n", count_of(s.shards.size(), "shard").c_str(),
                s.config_written ? "config.json" : "no config.json",
                a.copy_files_from.empty()
                    ? ", no other files (--copy-files-from SRC copies the tokenizer and the rest)"
                    : (", " + count_of(s.files_copied.size(), "file") + " copied from " +
                       escape_for_terminal(a.copy_files_from))
                          .c_str());
  }
  // Said even with --quiet: the folder lacks what a loader needs.
  if (opt.folder && !s.config_written)
    std::fprintf(stderr,
                 "qpack: warning: %s stores no config.json, so the folder has none "
                 "(transformers needs one: copy the source model's)\n",
                 escape_for_terminal(a.qpack).c_str());
  for (const std::string& f : s.files_skipped)
    if (!a.quiet && !a.json)
      std::fprintf(stderr, "qpack: note: %s/%s not copied (not a regular file)\n",
                   escape_for_terminal(a.copy_files_from).c_str(), escape_for_terminal(f).c_str());
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
      "reconstructs as safetensors: one file, or a Hugging Face model folder");
  sub->footer(
      "Quantized tensors are written in their source dtype (or --dtype), rounded to nearest even;\n"
      "kept tensors are copied byte for byte (or, F16/BF16/F32 ones, written in --kept-dtype);\n"
      "the source's safetensors metadata is carried over, less an index's total_size.\n"
      "Every section's checksum is verified as it is read. The output appears only when complete.\n"
      "\n"
      "Model folder output (OUTDIR/, an existing directory, a name without extension, or\n"
      "--format folder; docs/hf-folders.md): shards of at most --max-shard-size (default 5GB)\n"
      "named model-00001-of-0000N.safetensors (model.safetensors when one), an index when more\n"
      "than one, config.json from the .qpack's stored config without quantization_config\n"
      "(torch_dtype set to --dtype), and the other files of --copy-files-from SRC (tokenizer,\n"
      "generation config, ...; weights, hidden files and subfolders are not copied). In a folder\n"
      "--dtype applies to the kept F16/BF16/F32 tensors too, unless --kept-dtype says otherwise.\n"
      "--force replaces only an existing model folder (regular files, with config.json or\n"
      "*.safetensors); an empty directory is written into.\n"
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
  sub->add_option("output", a->out, "The .safetensors file or the model folder (OUTDIR/) to write")
      ->required();
  sub->add_option("--format", a->format,
                  "safetensors (one file) or folder (default: from OUTPUT: a trailing '/', an "
                  "existing directory or a name without extension is a folder)");
  sub->add_option("--max-shard-size", a->max_shard_size,
                  "Folder: largest shard's tensor bytes, e.g. 5GB (default, 5*10^9), 500MB, "
                  "2GiB or a byte count");
  sub->add_option("--copy-files-from", a->copy_files_from,
                  "Folder: copy this source model folder's other files (tokenizer, "
                  "generation_config.json, chat template, licence, README)");
  sub->add_option("--dtype,--dequantized-dtype", a->dtype,
                  "Dtype of the dequantized tensors: f16, bf16 or f32, any case (default: each "
                  "tensor's source dtype); kept tensors: --kept-dtype");
  sub->add_option("--kept-dtype", a->kept_dtype,
                  "Dtype of the kept F16/BF16/F32 tensors: f16, bf16 or f32, any case (default: "
                  "copied as stored; other dtypes are always copied)");
  add_device_option(sub, &a->device, "the dequantization");
  add_threads_option(sub, &a->threads);
  sub->add_flag("-f,--force", a->force,
                "Replace an existing output file (or model folder, never another directory)");
  add_quiet_flag(sub, &a->quiet, "No progress and no summary line");
  add_json_flag(sub, &a->json, "Print the summary as JSON (docs/cli.md)");
  sub->add_flag("--skip-unsupported", a->skip_unsupported,
                "GGUF input: leave out tensors of types this build cannot decode (warned), "
                "instead of failing");
  return [a] { return run_dequantize(*a); };
}

}  // namespace qpack::cli
