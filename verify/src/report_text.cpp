// The terminal report: worst tensors first, then the per-layer summary, the
// totals and the verdict (last, so that it is what a CI log shows at the end).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "qpack/format/text.hpp"
#include "qpack/verify/report.hpp"

namespace qpack {

namespace {

// Left- or right-aligned columns; the widths come from the content.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header, std::vector<bool> right)
      : header_(std::move(header)), right_(std::move(right)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string render(const std::string& indent) const {
    std::vector<size_t> w(header_.size(), 0);
    auto measure = [&](const std::vector<std::string>& r) {
      for (size_t c = 0; c < r.size() && c < w.size(); ++c)
        w[c] = std::max(w[c], display_width(r[c]));
    };
    measure(header_);
    for (const auto& r : rows_) measure(r);
    std::string out;
    auto line = [&](const std::vector<std::string>& r) {
      std::string l = indent;
      for (size_t c = 0; c < w.size(); ++c) {
        const std::string& cell = c < r.size() ? r[c] : std::string();
        if (c) l += "  ";
        l += c + 1 < w.size() || right_[c] ? pad_to_width(cell, w[c], right_[c]) : cell;
      }
      while (!l.empty() && l.back() == ' ') l.pop_back();
      out += l + "\n";
    };
    line(header_);
    std::vector<std::string> rule;
    for (size_t c = 0; c < w.size(); ++c) rule.push_back(std::string(w[c], '-'));
    line(rule);
    for (const auto& r : rows_) line(r);
    return out;
  }

 private:
  std::vector<std::string> header_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

// A name from the file for a table cell: escaped (terminal controls) and
// shortened in the middle to `max` columns.
std::string cell_name(const std::string& s, size_t max) {
  return ellipsize_middle(escape_for_terminal(s), max);
}

std::string sci(double v) { return format_metric(v, 3, true); }
std::string fixed(double v, int p) { return format_metric(v, p, false); }

std::string ratio_str(uint64_t before, uint64_t after) {
  return format_ratio(compression_ratio(before, after));
}

std::string scheme_short(const TensorResult& t) {
  if (!t.ggml_type.empty()) return t.ggml_type;  // GGUF: the GGML type, block or plain
  if (!t.quantized) return kRawLabel;
  return scheme_label(t.scheme);
}

std::string threshold_name(const std::string& metric) {
  if (metric == "rel_error") return "max_rel_error";
  if (metric == "snr_db") return "min_snr_db";
  if (metric == "cosine") return "min_cosine";
  return "max_abs_error";
}

std::string describe_failure(const GateFailure& f) {
  if (f.metric == "all_zero") return "reconstructed as all zeros (--allow-zero-tensors to accept)";
  if (f.metric == "nonfinite_params")
    return count_of(uint64_t(f.value), "stored scale or zero-point") + " not finite";
  if (f.metric == "invalid_zero_points")
    return count_of(uint64_t(f.value), "integer zero-point") + " not a whole code";
  const bool le = f.op == "<=";
  const bool sc = f.metric != "snr_db" && f.metric != "cosine";
  const std::string v = sc ? sci(f.value) : fixed(f.value, f.metric == "cosine" ? 6 : 2);
  const std::string l = sc ? sci(f.limit) : fixed(f.limit, f.metric == "cosine" ? 6 : 2);
  return f.metric + " " + v + (le ? " > " : " < ") + l + " (" + threshold_name(f.metric) + ")";
}

}  // namespace

std::string verify_report_table(const VerifyReport& rep, const TableOptions& opt) {
  std::string out;
  // Every line but the tables' is escaped here (names, paths, messages from
  // the file); the tables escape their cells.
  auto add = [&](const std::string& s) { out += escape_for_terminal(s) + "\n"; };

  size_t quantized = 0, raw = 0;
  for (const auto& t : rep.tensors) (t.quantized ? quantized : raw)++;
  const bool gguf = rep.file_format == "gguf";
  const bool folder = !gguf && rep.file_format != "qpack";  // compressed-tensors, gptq
  add("qpack verify " + rep.file + (gguf ? " (GGUF v" + rep.format_version + ")" : "") +
      (folder ? " (" + rep.file_format + " folder, " + rep.format_version + ")" : "") +
      (rep.source.empty() ? " (self-check: integrity and stored parameters, no source)"
                          : " against " + rep.source));
  if (rep.tensors.empty())
    add("  " + rep.device);
  else
    add("  " + rep.device + "; " + count_of(rep.tensors.size(), "tensor") + " (" +
        std::to_string(quantized) + " quantized, " + std::to_string(raw) + " raw); " +
        (rep.model.source_bytes == 0 && gguf
             ? format_bytes(rep.file_bytes) + " file"  // no source: its size is not known
             : format_bytes(rep.model.source_bytes) + " -> " + format_bytes(rep.file_bytes) +
                   " file (" + ratio_str(rep.model.source_bytes, rep.file_bytes) + ")"));

  // Integrity.
  if (rep.integrity_ok && gguf) {
    add("  integrity: OK (header, metadata and " + count_of(rep.sections_checked, "tensor info") +
        " valid, " + format_bytes(rep.bytes_checked) +
        " of tensor data in bounds; GGUF has no "
        "checksums)");
  } else if (rep.integrity_ok && folder) {
    add("  integrity: OK (config and " + count_of(rep.sections_checked, "stored tensor") + ", " +
        format_bytes(rep.bytes_checked) + ", valid for the layout; safetensors has no checksums)");
  } else if (rep.integrity_ok) {
    add("  integrity: OK (" + std::to_string(rep.sections_checked) + " sections, " +
        format_bytes(rep.bytes_checked) + " checksummed)");
  } else {
    add("");
    add("INTEGRITY FAILURE: " + std::to_string(rep.integrity_issues.size()) +
        " problem(s); nothing was compared");
    for (const auto& i : rep.integrity_issues) {
      std::string where = i.tensor.empty() ? rep.file : "tensor '" + i.tensor + "'";
      if (!i.section.empty()) where += " section " + i.section;
      add("  " + where + ": " + i.message + " [" + i.code + "]");
    }
  }

  // Source mismatches.
  std::vector<const TensorResult*> mismatched;
  for (const auto& t : rep.tensors)
    if (!t.problems.empty()) mismatched.push_back(&t);
  if (!rep.missing_from_qpack.empty() || !mismatched.empty()) {
    add("");
    add("SOURCE MISMATCH:");
    for (const auto& n : rep.missing_from_qpack)
      add("  " + n + ": in the source checkpoint, missing from the " +
          (gguf     ? "GGUF file"
           : folder ? "model folder"
                    : ".qpack"));
    for (const auto* t : mismatched)
      for (const auto& p : t->problems) add("  " + t->name + ": " + p);
  }

  // Bound violations: a bug or the wrong source; loud. For a folder another
  // quantizer made, the bound is not its promise: said, not failed.
  if (rep.bound_violations > 0 && !rep.bound_is_promise) {
    add("");
    add("note: " + std::to_string(rep.bound_violations) +
        " element(s) lie beyond qpack's round-to-nearest bound (docs/quantization.md section "
        "7); the folder's quantizer does not promise it (GPTQ's codes are not nearest), so this "
        "does not fail the run.");
  } else if (rep.bound_violations > 0) {
    add("");
    add("!!! ERROR BOUND VIOLATED: " + std::to_string(rep.bound_violations) +
        " element(s) exceed the bound of docs/quantization.md section 7.");
    add("!!! Either this .qpack was not converted from this source checkpoint, or the quantizer "
        "has a bug");
    add("!!! (please report it with this output):");
    for (const auto& t : rep.tensors)
      if (t.sums.bound_violations > 0)
        add("!!!   " + t.name + ": " + std::to_string(t.sums.bound_violations) +
            " element(s), first at flat index " + std::to_string(t.sums.first_violation_index));
  }

  // Worst tensors.
  std::vector<const TensorResult*> q;
  for (const auto& t : rep.tensors)
    if (t.quantized && t.compared) q.push_back(&t);
  std::stable_sort(q.begin(), q.end(), [](const TensorResult* a, const TensorResult* b) {
    const double ra = a->sums.rel_error(), rb = b->sums.rel_error();
    const double ka = std::isnan(ra) ? INFINITY : ra, kb = std::isnan(rb) ? INFINITY : rb;
    return ka > kb;
  });
  if (!q.empty()) {
    const size_t n = opt.top == 0 ? q.size() : std::min(opt.top, q.size());
    add("");
    add(n == q.size() ? "Tensors by relative error (worst first):"
                      : "Worst " + std::to_string(n) + " of " + std::to_string(q.size()) +
                            " quantized tensors by relative error (--top N, --top 0 for all):");
    TextTable tt({"tensor", "scheme", "rel err", "SNR dB", "cosine", "max abs", "at index", "RMSE",
                  "viol", "status"},
                 {false, false, true, true, true, true, true, true, true, false});
    for (size_t i = 0; i < n; ++i) {
      const TensorResult& t = *q[i];
      std::string status = tensor_status_name(t.status);
      if (t.gate_ignored) status += " (gate ignored)";
      const std::string flags = tensor_flags(t);
      if (!flags.empty()) status += " [" + flags + "]";
      tt.add({cell_name(t.name, 64), scheme_short(t), sci(t.sums.rel_error()),
              fixed(t.sums.snr_db(), 2), fixed(t.sums.cosine(), 6), sci(t.sums.max_abs_err),
              t.sums.max_abs_index >= 0 ? std::to_string(t.sums.max_abs_index) : "-",
              sci(t.sums.rmse()), std::to_string(t.sums.bound_violations), status});
    }
    out += tt.render("  ");
    uint64_t nonfinite = 0;
    for (const auto* t : q) nonfinite += t->sums.nonfinite;
    if (nonfinite > 0)
      add("  (" + std::to_string(nonfinite) +
          " NaN/Inf source elements were excluded from the metrics)");
  }

  // Past the weights: the importance-weighted error (--imatrix) and the
  // output error on sample inputs (--activations), beside the plain one.
  std::vector<const TensorResult*> oc;
  for (const auto* t : q)
    if (t->has_weighted || t->has_output) oc.push_back(t);
  if (!oc.empty()) {
    add("");
    add("Importance-weighted and output errors (docs/quantization.md section 11), in the order "
        "above:");
    TextTable ot({"tensor", "rel err", "imatrix-weighted", "output err", "samples"},
                 {false, true, true, true, true});
    for (const auto* t : oc)
      ot.add({cell_name(t->name, 64), sci(t->sums.rel_error()),
              t->has_weighted ? sci(t->weighted.rel_error()) : "-",
              t->has_output ? sci(t->output.rel_error()) : "-",
              t->has_output ? std::to_string(t->output.samples) : "-"});
    out += ot.render("  ");
  }

  // Self-check: the stored parameters of every quantized tensor.
  if (rep.source.empty() && rep.integrity_ok) {
    std::vector<const TensorResult*> p;
    for (const auto& t : rep.tensors)
      if (t.params_checked) p.push_back(&t);
    if (!p.empty()) {
      add("");
      add("Stored parameters of " + count_of(p.size(), "quantized tensor") + ":");
      TextTable pt({"tensor", "scheme", "groups", "degenerate", "non-finite", "flags"},
                   {false, false, true, true, true, false});
      for (const auto* t : p) {
        const std::string flags = tensor_flags(*t);
        pt.add({cell_name(t->name, 64), scheme_short(*t), std::to_string(t->groups),
                std::to_string(t->degenerate_groups), std::to_string(t->nonfinite_params),
                flags.empty() ? "-" : flags});
      }
      out += pt.render("  ");
    }
  }

  // Per layer.
  if (!rep.layers.empty() && rep.integrity_ok && !rep.source.empty()) {
    add("");
    add("Per layer:");
    TextTable lt({"layer", "tensors", "elements", "source", "stored", "ratio", "rel err", "SNR dB",
                  "cosine", "max abs", "worst tensor"},
                 {false, true, true, true, true, true, true, true, true, true, false});
    for (const auto& l : rep.layers) {
      const bool m = l.quantized > 0;
      lt.add({escape_for_terminal(l.key), std::to_string(l.tensors), std::to_string(l.elements),
              format_bytes(l.source_bytes), format_bytes(l.stored_bytes),
              ratio_str(l.source_bytes, l.stored_bytes), m ? sci(l.sums.rel_error()) : "-",
              m ? fixed(l.sums.snr_db(), 2) : "-", m ? fixed(l.sums.cosine(), 6) : "-",
              m ? sci(l.sums.max_abs_err) : "-", cell_name(l.worst_tensor, 48)});
    }
    out += lt.render("  ");
  }

  // Totals.
  if (rep.integrity_ok && !rep.source.empty() && !rep.source_refused) {
    const ErrorSums& s = rep.model.sums;
    add("");
    add("Model (" + std::to_string(rep.model.quantized) + " quantized tensors, " +
        std::to_string(s.count) + " elements, element-weighted): rel err " + sci(s.rel_error()) +
        ", SNR " + fixed(s.snr_db(), 2) + " dB, cosine " + fixed(s.cosine(), 6) + ", max abs " +
        sci(s.max_abs_err) + ", RMSE " + sci(s.rmse()) + ", mean abs " + sci(s.mean_abs_err()) +
        ", bound violations " + std::to_string(rep.bound_violations));
    if (rep.model.weighted_tensors > 0)
      add("  importance-weighted (" + count_of(rep.model.weighted_tensors, "tensor") +
          ", imatrix " + rep.imatrix + "): rel err " + sci(rep.model.weighted.rel_error()));
    if (rep.model.output_tensors > 0)
      add("  output error (" + count_of(rep.model.output_tensors, "tensor") + ", activations " +
          rep.activations + "): rel err " + sci(rep.model.output.rel_error()));
  }

  // Warnings: degenerate or all-zero tensors, a changed source.
  if (!rep.warnings.empty()) {
    add("");
    for (const auto& w : rep.warnings) add("WARNING: " + w);
  }

  // Gate.
  if (!rep.gate_failures.empty()) {
    add("");
    add("Gate: " + std::to_string(rep.gate_failures.size()) + " threshold(s) failed:");
    for (const auto& f : rep.gate_failures)
      add("  " + (f.tensor.empty() ? std::string("model totals") : f.tensor) + ": " +
          describe_failure(f));
  } else if (rep.integrity_ok && !rep.policy.any()) {
    add("");
    add("Gate: no thresholds set (--max-rel-error, --min-snr, --min-cosine, --max-abs-error, "
        "--policy)");
  }

  // Verdict.
  const std::string verdict = verdict_text(rep.verdict);
  const char* on = opt.color ? (rep.verdict == Verdict::Pass ? "\033[1;32m" : "\033[1;31m") : "";
  const char* off = opt.color ? "\033[0m" : "";
  add("");
  out += std::string("Verdict: ") + on + verdict + off + " (exit code " +
         std::to_string(verdict_exit_code(rep.verdict)) + ")\n";
  return out;
}

}  // namespace qpack
