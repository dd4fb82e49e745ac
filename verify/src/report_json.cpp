// The JSON report. docs/verify-report.md documents every field; bump
// "schema_version" when a field changes meaning or disappears.
#include <cmath>
#include <cstdio>

#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"
#include "qpack/verify/report.hpp"

namespace qpack {

namespace {

nlohmann::json num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

nlohmann::json opt_num(const std::optional<double>& v) {
  return v ? num(*v) : nlohmann::json(nullptr);
}

nlohmann::json ratio(uint64_t before, uint64_t after) {
  const auto r = compression_ratio(before, after);
  return r ? nlohmann::json(*r) : nlohmann::json(nullptr);
}

nlohmann::json metrics_json(const ErrorSums& s) {
  nlohmann::json m;
  m["elements"] = s.count;
  m["nonfinite_skipped"] = s.nonfinite;
  m["rel_error"] = num(s.rel_error());
  m["snr_db"] = num(s.snr_db());
  m["cosine"] = num(s.cosine());
  m["rmse"] = num(s.rmse());
  m["mean_abs_error"] = num(s.mean_abs_err());
  m["max_abs_error"] = num(s.max_abs_err);
  m["bound_violations"] = s.bound_violations;
  m["sums"] = {{"sq_err", num(s.sum_sq_err)},
               {"abs_err", num(s.sum_abs_err)},
               {"sq_ref", num(s.sum_sq_ref)},
               {"sq_hat", num(s.sum_sq_hat)},
               {"dot", num(s.sum_dot)}};
  return m;
}

nlohmann::json weighted_json(const WeightedErrorSums& s) {
  return {{"rel_error", num(s.rel_error())},
          {"elements", s.count},
          {"sums", {{"w_sq_err", num(s.sum_w_sq_err)}, {"w_sq_ref", num(s.sum_w_sq_ref)}}}};
}

nlohmann::json output_json(const OutputErrorSums& s) {
  return {{"rel_error", num(s.rel_error())},
          {"samples", s.samples},
          {"sums", {{"sq_err", num(s.sum_sq_err)}, {"sq_ref", num(s.sum_sq_ref)}}}};
}

nlohmann::json failure_json(const GateFailure& f) {
  return {{"tensor", f.tensor.empty() ? nlohmann::json(nullptr) : nlohmann::json(f.tensor)},
          {"metric", f.metric},
          {"value", num(f.value)},
          {"limit", num(f.limit)},
          {"condition", f.op}};
}

nlohmann::json thresholds_json(const Thresholds& t) {
  return {{"max_rel_error", opt_num(t.max_rel_error)},
          {"min_snr_db", opt_num(t.min_snr_db)},
          {"min_cosine", opt_num(t.min_cosine)},
          {"max_abs_error", opt_num(t.max_abs_error)}};
}

nlohmann::json rollup_json(const Rollup& r, bool with_layer_index) {
  nlohmann::json j;
  j["key"] = r.key;
  if (with_layer_index)
    j["layer_index"] = r.layer_index >= 0 ? nlohmann::json(r.layer_index) : nlohmann::json(nullptr);
  j["tensors"] = r.tensors;
  j["quantized_tensors"] = r.quantized;
  j["elements"] = r.elements;
  j["source_bytes"] = r.source_bytes;
  j["stored_bytes"] = r.stored_bytes;
  j["compression_ratio"] = ratio(r.source_bytes, r.stored_bytes);
  j["metrics"] = metrics_json(r.sums);
  j["worst_tensor"] =
      r.worst_tensor.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.worst_tensor);
  if (r.weighted_tensors > 0) {
    j["importance_weighted"] = weighted_json(r.weighted);
    j["importance_weighted"]["tensors"] = r.weighted_tensors;
  } else {
    j["importance_weighted"] = nullptr;
  }
  if (r.output_tensors > 0) {
    j["output_error"] = output_json(r.output);
    j["output_error"]["tensors"] = r.output_tensors;
  } else {
    j["output_error"] = nullptr;
  }
  return j;
}

}  // namespace

nlohmann::json verify_report_json(const VerifyReport& rep) {
  nlohmann::json j;
  j["schema"] = "qpack-verify-report";
  j["schema_version"] = 1;
  j["verdict"] = verdict_name(rep.verdict);
  j["exit_code"] = verdict_exit_code(rep.verdict);

  nlohmann::json settings;
  settings["file"] = rep.file;
  settings["source"] = rep.source.empty() ? nlohmann::json(nullptr) : nlohmann::json(rep.source);
  settings["device"] = rep.device;
  settings["device_requested"] = device_kind_name(rep.device_requested.kind);
  settings["threads"] = rep.threads;
  settings["imatrix"] = rep.imatrix.empty() ? nlohmann::json(nullptr) : nlohmann::json(rep.imatrix);
  settings["activations"] =
      rep.activations.empty() ? nlohmann::json(nullptr) : nlohmann::json(rep.activations);
  settings["qpack_version"] = rep.qpack_version;
  settings["created_utc"] = rep.created_utc;
  settings["policy_file"] = rep.policy.source_file.empty() ? nlohmann::json(nullptr)
                                                           : nlohmann::json(rep.policy.source_file);
  settings["thresholds"] = thresholds_json(rep.policy.global);
  settings["model_thresholds"] = thresholds_json(rep.policy.model);
  settings["policy"] = rep.policy.to_json();
  j["settings"] = std::move(settings);

  j["file"] = {{"path", rep.file},
               {"format", rep.file_format},
               {"size_bytes", rep.file_bytes},
               {"format_version", rep.format_version.empty() ? nlohmann::json(nullptr)
                                                             : nlohmann::json(rep.format_version)}};

  nlohmann::json issues = nlohmann::json::array();
  for (const auto& i : rep.integrity_issues)
    issues.push_back(
        {{"tensor", i.tensor.empty() ? nlohmann::json(nullptr) : nlohmann::json(i.tensor)},
         {"section", i.section.empty() ? nlohmann::json(nullptr) : nlohmann::json(i.section)},
         {"code", i.code},
         {"message", i.message}});
  j["integrity"] = {{"ok", rep.integrity_ok},
                    {"sections_checked", rep.sections_checked},
                    {"bytes_checked", rep.bytes_checked},
                    {"issues", std::move(issues)}};

  nlohmann::json mismatched = nlohmann::json::array();
  for (const auto& t : rep.tensors)
    if (!t.problems.empty()) mismatched.push_back({{"tensor", t.name}, {"problems", t.problems}});
  j["source_check"] = {
      {"ok", rep.missing_from_qpack.empty() && mismatched.empty() && !rep.source_refused},
      {"source_files_changed", rep.source_files_changed},
      {"refused", rep.source_refused},
      {"missing_from_qpack", rep.missing_from_qpack},
      {"extra_in_qpack", rep.extra_in_qpack},
      {"mismatched", std::move(mismatched)}};

  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : rep.tensors) {
    nlohmann::json o;
    o["name"] = t.name;
    o["layer"] = t.layer.label();
    o["layer_index"] = t.layer.global() ? nlohmann::json(nullptr) : nlohmann::json(t.layer.index);
    o["kind"] = t.kind;
    o["dtype"] = dtype_name(t.dtype);
    o["shape"] = t.shape;
    o["quantized"] = t.quantized;
    o["ggml_type"] = t.ggml_type.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.ggml_type);
    if (t.quantized && t.ggml_type.empty())
      o["scheme"] = {
          {"bits", t.scheme.bits},
          {"group_size", t.scheme.group_size},
          {"axis", t.scheme.axis},
          {"symmetric", t.scheme.symmetric},
          {"zero_point", t.scheme.symmetric ? nlohmann::json(nullptr)
                                            : nlohmann::json(zero_point_name(t.scheme.zero_point))},
          {"method", method_name(t.scheme.method)},
          {"scale_dtype", dtype_name(t.scheme.scale_dtype)}};
    else
      o["scheme"] = nullptr;
    o["elements"] = t.elements;
    o["source_bytes"] = t.source_bytes;
    o["stored_bytes"] = t.stored_bytes;
    o["compression_ratio"] = ratio(t.source_bytes, t.stored_bytes);
    o["compared"] = t.compared;
    if (t.quantized && t.compared) {
      nlohmann::json m = metrics_json(t.sums);
      m["max_abs_index"] = t.sums.max_abs_index;
      m["first_bound_violation_index"] = t.sums.first_violation_index >= 0
                                             ? nlohmann::json(t.sums.first_violation_index)
                                             : nlohmann::json(nullptr);
      o["metrics"] = std::move(m);
    } else {
      o["metrics"] = nullptr;
    }
    if (t.has_weighted) {
      o["importance_weighted"] = weighted_json(t.weighted);
      o["importance_weighted"]["imatrix_entry"] = t.imatrix_entry;
    } else {
      o["importance_weighted"] = nullptr;
    }
    o["output_error"] = t.has_output ? output_json(t.output) : nlohmann::json(nullptr);
    o["raw_equal"] =
        !t.quantized && t.compared ? nlohmann::json(t.raw_equal) : nlohmann::json(nullptr);
    o["status"] = tensor_status_name(t.status);
    o["problems"] = t.problems;
    nlohmann::json gf = nlohmann::json::array();
    for (const auto& f : t.gate_failures) gf.push_back(failure_json(f));
    o["gate_failures"] = std::move(gf);
    o["policy_rule"] = t.policy_rule >= 0 ? nlohmann::json(t.policy_rule) : nlohmann::json(nullptr);
    o["gate_ignored"] = t.gate_ignored;
    if (t.params_checked)
      o["params"] = {{"groups", t.groups},
                     {"degenerate_groups", t.degenerate_groups},
                     {"nonfinite_params", t.nonfinite_params},
                     {"invalid_zero_points", t.invalid_zero_points}};
    else
      o["params"] = nullptr;
    o["all_zero"] = t.all_zero;
    nlohmann::json flags = nlohmann::json::array();
    if (t.all_zero) flags.push_back("all_zero");
    if (t.degenerate_groups > 0) flags.push_back("degenerate_groups");
    if (t.nonfinite_params > 0) flags.push_back("nonfinite_params");
    if (t.invalid_zero_points > 0) flags.push_back("invalid_zero_points");
    o["flags"] = std::move(flags);
    tensors.push_back(std::move(o));
  }
  j["tensors"] = std::move(tensors);

  nlohmann::json layers = nlohmann::json::array();
  for (const auto& r : rep.layers) layers.push_back(rollup_json(r, true));
  j["layers"] = std::move(layers);
  nlohmann::json kinds = nlohmann::json::array();
  for (const auto& r : rep.kinds) kinds.push_back(rollup_json(r, false));
  j["kinds"] = std::move(kinds);
  j["model"] = rollup_json(rep.model, false);
  // The model's ratio is over the file, as convert and inspect give it.
  j["model"]["compression_ratio"] = ratio(rep.model.source_bytes, rep.file_bytes);

  nlohmann::json gate = nlohmann::json::array();
  for (const auto& f : rep.gate_failures) gate.push_back(failure_json(f));
  j["gate"] = {{"passed", rep.gate_failures.empty()}, {"failures", std::move(gate)}};
  j["bound_violations"] = rep.bound_violations;
  j["bound_is_promise"] = rep.bound_is_promise;
  j["warnings"] = rep.warnings;
  j["provenance"] = rep.provenance;

  nlohmann::json per_tensor = nlohmann::json::array();
  for (const auto& t : rep.tensors) per_tensor.push_back(t.seconds);
  j["timing"] = {{"total_s", rep.seconds},
                 {"integrity_s", rep.integrity_seconds},
                 {"compare_s", rep.compare_seconds},
                 {"tensor_s", std::move(per_tensor)}};
  return j;
}

std::string format_metric(double v, int precision, bool scientific) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, scientific ? "%.*e" : "%.*f", precision, v);
  return buf;
}

}  // namespace qpack
