// qpack dequantize: writes the checkpoint a .qpack reconstructs as one
// safetensors file (logic in the converter's exporters,
// qpack/converter/export.hpp).
#include <cstdio>
#include <memory>
#include <string>

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
};

int run_dequantize(const DequantizeArgs& a) {
  DequantizeOptions opt;
  if (!a.dtype.empty()) {
    if (a.dtype == "f16")
      opt.dtype = DType::F16;
    else if (a.dtype == "bf16")
      opt.dtype = DType::BF16;
    else if (a.dtype == "f32")
      opt.dtype = DType::F32;
    else
      throw Error(ErrorCode::InvalidArgument, "", "", "--dtype must be f16, bf16 or f32");
  }
  if (!a.kept_dtype.empty()) {
    opt.kept_dtype = parse_scale_dtype(a.kept_dtype);
    if (!opt.kept_dtype)
      throw Error(ErrorCode::InvalidArgument, "", "", "--kept-dtype must be f16, bf16 or f32");
  }
  opt.device = a.device.value();
  opt.threads = a.threads;
  opt.overwrite = a.force;
  ProgressBar bar("dequantizing", !a.quiet);
  if (bar.active())
    opt.progress = [&](size_t i, size_t n, uint64_t done, uint64_t total,
                       const std::string& tensor) { bar.update(done, total, i, n, tensor); };
  const DequantizeSummary s = dequantize_file(a.qpack, a.out, opt);
  bar.finish();
  if (!a.quiet)
    std::printf("wrote %s: %s (%zu dequantized, %zu raw), %s of tensor data, on %s\n",
                a.out.c_str(), count_of(s.tensors, "tensor").c_str(), s.quantized,
                s.tensors - s.quantized, format_bytes(s.output_bytes).c_str(), s.device.c_str());
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
                  "Dtype of the dequantized tensors: f16, bf16 or f32 (default: each tensor's "
                  "source dtype); kept tensors: --kept-dtype")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}));
  sub->add_option("--kept-dtype", a->kept_dtype,
                  "Dtype of the kept F16/BF16/F32 tensors: f16, bf16 or f32 (default: copied as "
                  "stored; other dtypes are always copied)");
  add_device_option(sub, &a->device, "the dequantization");
  sub->add_option("--threads", a->threads, "CPU threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("-f,--force", a->force, "Replace an existing output file");
  sub->add_flag("-q,--quiet", a->quiet, "No progress and no summary line");
  return [a] { return run_dequantize(*a); };
}

}  // namespace qpack::cli
