// qpack verify: integrity, source comparison, error metrics and the CI gate.
// All logic is in verify/ (qpack/verify.hpp); this file maps flags and
// prints.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "cli_options.hpp"
#include "commands.hpp"
#include "device.hpp"
#include "progress_bar.hpp"
#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/imatrix.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/text.hpp"
#include "qpack/verify/report.hpp"
#include "qpack/verify/verify.hpp"

namespace qpack::cli {

namespace {

const char* kVerifyFooter =
    "Checks, in order: the .qpack header and manifest, every section checksum (XXH3-64),\n"
    "that each tensor matches the source checkpoint (name, shape, dtype; raw tensors\n"
    "byte for byte), and the quantization error of every quantized tensor (relative\n"
    "Frobenius error, SNR, cosine, max/mean abs error, RMSE, and the count of elements\n"
    "beyond the error bound of docs/quantization.md section 7, which must be 0).\n"
    "\n"
    "Thresholds (the CI gate) come from the flags and/or --policy FILE (JSON: global\n"
    "thresholds, per-name glob overrides, model totals; see docs/verify-report.md).\n"
    "Flags override the policy's global thresholds.\n"
    "\n"
    "Without SOURCE, verify checks the integrity and the stored parameters only\n"
    "(non-finite scales or zero-points, degenerate groups, all-zero tensors).\n"
    "A quantized tensor reconstructed as all zeros, or with a non-finite\n"
    "parameter, fails the gate (exit 10) with or without thresholds; degenerate\n"
    "groups are warned about. When the file records its source files' hashes\n"
    "(provenance), a source that differs is warned about before comparing.\n"
    "\n"
    "A GGUF file (MODEL.gguf) is checked the same way: integrity is the GGUF reader's\n"
    "validation (GGUF has no checksums); every tensor is decoded by ggml's rules and\n"
    "compared with SOURCE, a GGUF (F32/F16/BF16 tensors) or safetensors checkpoint with\n"
    "the same tensor names, or an HF Llama-family folder (names mapped, Q/K rows\n"
    "un-permuted); the report gives each tensor's GGML type. A type this build\n"
    "cannot decode is an error (exit 3). See docs/verify-report.md section 9.\n"
    "\n"
    "A compressed-tensors (pack-quantized) or GPTQ model folder is read by qpack's own reader\n"
    "of the layout (integrity: the config and every stored tensor valid for it; a setting\n"
    "qpack does not read exits 3); each quantized Linear is measured as a .qpack tensor of\n"
    "the same scheme. Elements beyond qpack's error bound are counted, not failed: another\n"
    "quantizer made the codes. See docs/hf-reading.md.\n"
    "\n"
    "With --imatrix FILE (llama.cpp's imatrix.dat or GGUF imatrix, docs/imatrix.md) each\n"
    "quantized matrix with an entry also gets its importance-weighted relative error; with\n"
    "--activations FILE (safetensors of sample inputs [samples, in] per weight name) each\n"
    "named [out, in] matrix its relative output error. Both need SOURCE, are computed on\n"
    "the CPU in float64 whatever --device, and measure .qpack files only; see\n"
    "docs/quantization.md section 11. A malformed file is bad input (exit 3).\n"
    "\n"
    "Exit codes:\n"
    "  0   every check passed and every threshold held\n"
    "  10  a quality threshold failed, or a tensor is all zeros or has non-finite\n"
    "      parameters (the offenders are listed)\n"
    "  4   integrity error (checksum, manifest or section mismatch, truncated file),\n"
    "      source mismatch (missing/extra tensor, shape/dtype, raw bytes differ), or\n"
    "      elements beyond the error bound (wrong source, or a quantizer bug)\n"
    "  2   usage error (bad flags, bad policy file)\n"
    "  3   bad input (malformed source checkpoint)\n"
    "  5   I/O error (cannot read an input or write a report)\n"
    "  6   --device cuda[:N] without a usable CUDA device, or a CUDA failure\n"
    "  1   internal error (a bug: please report)\n";

struct VerifyArgs {
  std::string qpack, source, source_opt;
  DeviceOption device;
  int threads = 0;
  std::optional<double> max_rel, min_snr, min_cos, max_abs;
  std::string policy;
  bool json = false;
  std::string json_out, html_out;
  size_t top = 20;
  bool quiet = false;
  uint64_t gpu_chunk_mb = 256;
  bool allow_zero_tensors = false;
  bool require_recorded_source = false;
  std::string imatrix, activations;
};

void check_threshold(const char* flag, const std::optional<double>& v, double lo, double hi) {
  if (v && !(std::isfinite(*v) && *v >= lo && *v <= hi))
    throw Error(ErrorCode::InvalidArgument, "", "",
                std::string(flag) + " must be a finite number in [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
}

// A report path must be writable before the comparison starts (issue #12
// item 11: hours on a large model, then "cannot write"): the target is absent
// or a regular file, and its folder exists and takes a new file (probed with
// a temporary file, since access() says yes to root on a read-only mount).
void check_report_path(const char* flag, const std::string& path) {
  auto fail = [&](const std::string& why) {
    throw Error(ErrorCode::Io, path, "", std::string(flag) + ": " + why);
  };
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    fail(S_ISDIR(st.st_mode) ? "is a directory" : "exists and is not a regular file");
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  if (stat(dir.c_str(), &st) != 0) fail("folder '" + dir + "' does not exist");
  if (!S_ISDIR(st.st_mode)) fail("'" + dir + "' is not a folder");
  std::string probe = dir + "/.qpack-verify-probe-XXXXXX";
  const int fd = mkstemp(probe.data());
  if (fd < 0) fail("folder '" + dir + "' is not writable");
  close(fd);
  unlink(probe.c_str());
}

void write_report_file(const std::string& path, const std::string& text) {
  AtomicOutputFile out(path, /*overwrite=*/true);
  out.write(text.data(), text.size());
  out.commit();
}

int run_verify(VerifyArgs a) {
  if (a.source.empty() == a.source_opt.empty() && a.source != a.source_opt)
    throw Error(ErrorCode::InvalidArgument, "", "",
                "give the source checkpoint once: SOURCE or --source");
  if (a.source.empty()) a.source = a.source_opt;
  check_threshold("--max-rel-error", a.max_rel, 0, HUGE_VAL);
  check_threshold("--max-abs-error", a.max_abs, 0, HUGE_VAL);
  check_threshold("--min-cosine", a.min_cos, -1, 1);
  check_threshold("--min-snr", a.min_snr, -HUGE_VAL, HUGE_VAL);

  VerifyOptions opt;
  opt.device = a.device.value();
  opt.threads = a.threads;
  opt.gpu_chunk_bytes = a.gpu_chunk_mb << 20;
  if (!a.policy.empty()) opt.policy = VerifyPolicy::load(a.policy);
  Thresholds flags;
  flags.max_rel_error = a.max_rel;
  flags.min_snr_db = a.min_snr;
  flags.min_cosine = a.min_cos;
  flags.max_abs_error = a.max_abs;
  opt.policy.global = opt.policy.global.overlaid(flags);
  opt.policy.allow_zero_tensors = a.allow_zero_tensors;
  opt.require_recorded_source = a.require_recorded_source;
  if (!a.imatrix.empty()) {
    opt.imatrix = std::make_shared<ImportanceMatrix>(read_imatrix(a.imatrix));
    opt.imatrix_path = a.imatrix;
  }
  opt.activations_path = a.activations;
  // GGUF files: the converter's ggml block decoders (every type this build
  // has, K-quants included once they are there).
  opt.ggml_supported = [](GgmlType t) { return ggml_blocks_supported(t); };
  opt.ggml_dequantize = [](GgmlType t, const uint8_t* blocks, int64_t n, float* out, int threads,
                           const std::string& tensor) {
    dequantize_ggml_blocks_cpu(t, blocks, n, out, threads, tensor);
  };
  // Warnings go to stderr as soon as they are known (the provenance check
  // before any comparison); the reports repeat them.
  opt.warn = [&](const std::string& line) {
    if (!a.json) std::fprintf(stderr, "qpack: warning: %s\n", line.c_str());
  };
  if (!a.json_out.empty()) check_report_path("--json-out", a.json_out);
  if (!a.html_out.empty()) check_report_path("--html", a.html_out);

  // Progress on stderr, only on a terminal and without --quiet (ProgressBar
  // also stays off under CI); one bar per phase.
  std::unique_ptr<ProgressBar> bar;
  VerifyProgress::Phase phase = VerifyProgress::Integrity;
  if (!a.quiet && ProgressBar::terminal_allows())
    opt.progress = [&](const VerifyProgress& p) {
      if (!bar || p.phase != phase) {
        if (bar) bar->finish();
        phase = p.phase;
        bar = std::make_unique<ProgressBar>(
            p.phase == VerifyProgress::Integrity ? "checksums" : "comparing", true);
      }
      bar->update(p.done_bytes, p.total_bytes, p.tensor_index, p.tensor_count, p.tensor);
    };

  const VerifyReport rep = verify(a.qpack, a.source, opt);
  if (bar) bar->finish();

  if (!a.json_out.empty()) write_report_file(a.json_out, verify_report_json(rep).dump(2) + "\n");
  if (!a.html_out.empty()) write_report_file(a.html_out, verify_report_html(rep));

  if (a.json) {
    std::fputs((verify_report_json(rep).dump(2) + "\n").c_str(), stdout);
  } else if (a.quiet) {
    // Only what a CI log needs: the failures and the verdict; names and
    // messages from the files escaped for the terminal.
    const auto esc = [](const std::string& t) { return escape_for_terminal(t); };
    for (const auto& i : rep.integrity_issues)
      std::printf("integrity: %s %s%s [%s]\n", esc(i.tensor.empty() ? rep.file : i.tensor).c_str(),
                  esc(i.section.empty() ? "" : i.section + ": ").c_str(), esc(i.message).c_str(),
                  i.code.c_str());
    for (const auto& n : rep.missing_from_qpack)
      std::printf("source mismatch: %s: missing from the %s\n", esc(n).c_str(),
                  rep.file_format == "gguf"    ? "GGUF file"
                  : rep.file_format == "qpack" ? ".qpack"
                                               : "model folder");
    for (const auto& t : rep.tensors)
      for (const auto& p : t.problems)
        std::printf("source mismatch: %s: %s\n", esc(t.name).c_str(), esc(p).c_str());
    for (const auto& t : rep.tensors)
      if (t.sums.bound_violations)
        std::printf("ERROR BOUND VIOLATED: %s: %llu element(s)\n", esc(t.name).c_str(),
                    static_cast<unsigned long long>(t.sums.bound_violations));
    for (const auto& f : rep.gate_failures)
      std::printf("threshold failed: %s: %s = %s, must be %s %s\n",
                  f.tensor.empty() ? "model totals" : esc(f.tensor).c_str(), f.metric.c_str(),
                  format_metric(f.value, 4, true).c_str(), f.op.c_str(),
                  format_metric(f.limit, 4, true).c_str());
    for (const auto& w : rep.warnings) std::printf("warning: %s\n", w.c_str());
    std::printf("verdict: %s\n", verdict_name(rep.verdict));
  } else {
    TableOptions t;
    t.top = a.top;
    t.color = isatty(fileno(stdout)) == 1;
    std::fputs(verify_report_table(rep, t).c_str(), stdout);
  }
  std::fflush(stdout);
  return verdict_exit_code(rep.verdict);
}

}  // namespace

Runner add_verify(CLI::App& app) {
  auto a = std::make_shared<VerifyArgs>();
  auto* sub = app.add_subcommand(
      "verify",
      "Check a .qpack's or GGUF's integrity and its quantization error against the source "
      "checkpoint");
  sub->footer(kVerifyFooter);
  sub->add_option("model", a->qpack,
                  "The .qpack or .gguf file, or a compressed-tensors / GPTQ model folder")
      ->required();
  sub->add_option("source", a->source,
                  "The checkpoint it was converted from (.safetensors, "
                  "model.safetensors.index.json, or a folder); without it, only the "
                  "integrity and the stored parameters are checked");
  sub->add_option("-s,--source", a->source_opt, "Same as the SOURCE argument");
  add_device_option(sub, &a->device, "the metrics pass");
  add_threads_option(sub, &a->threads);
  sub->add_option("--max-rel-error", a->max_rel,
                  "Fail a tensor whose ||x-x^||/||x|| is above this");
  sub->add_option("--min-snr", a->min_snr, "Fail a tensor whose SNR (dB) is below this");
  sub->add_option("--min-cosine", a->min_cos,
                  "Fail a tensor whose cosine similarity is below this");
  sub->add_option("--max-abs-error", a->max_abs,
                  "Fail a tensor whose largest |x-x^| is above this");
  sub->add_option("--policy", a->policy, "Threshold policy (JSON; see docs/verify-report.md)");
  add_json_flag(sub, &a->json, "Print the JSON report on stdout instead of the table");
  sub->add_option("--json-out", a->json_out, "Also write the JSON report to this file");
  sub->add_option("--html", a->html_out, "Also write a self-contained HTML report to this file");
  sub->add_option("--top", a->top, "Worst tensors listed in the table (0: all)")->default_str("20");
  add_quiet_flag(sub, &a->quiet, "No progress and no table: only failures and the verdict");
  sub->add_flag("--allow-zero-tensors", a->allow_zero_tensors,
                "Do not fail on a quantized tensor reconstructed as all zeros (still warned)");
  sub->add_flag("--require-recorded-source", a->require_recorded_source,
                "A source file whose hash differs from the file's provenance is a source "
                "mismatch (exit 4) instead of a warning");
  sub->add_option("--imatrix", a->imatrix,
                  "A llama.cpp importance matrix (imatrix.dat or GGUF): also report each "
                  "matrix's importance-weighted relative error (CPU; docs/quantization.md "
                  "section 11)");
  sub->add_option("--activations", a->activations,
                  "Sample inputs per linear layer (safetensors, [samples, in] keyed by weight "
                  "name; tools/record_activations.py): also report each layer's relative output "
                  "error ||XW^T - XW^^T|| / ||XW^T|| (CPU)");
  sub->add_option("--gpu-chunk-mb", a->gpu_chunk_mb, "Device staging buffer size per chunk (MiB)")
      ->default_str("256")
      ->check(CLI::PositiveNumber);
  return [a] { return run_verify(*a); };
}

}  // namespace qpack::cli
