// Thresholds, the policy file, the derived metrics of ErrorSums and the
// names of the report's enums.
#include <cmath>
#include <limits>

#include "qpack/format/error.hpp"
#include "qpack/format/glob.hpp"
#include "qpack/format/json.hpp"
#include "qpack/verify/verify.hpp"

namespace qpack {

// ------------------------------------------------------------------ metrics

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}

double ErrorSums::rmse() const { return count ? std::sqrt(sum_sq_err / double(count)) : 0.0; }
double ErrorSums::mean_abs_err() const { return count ? sum_abs_err / double(count) : 0.0; }

double ErrorSums::rel_error() const {
  if (sum_sq_ref > 0) return std::sqrt(sum_sq_err / sum_sq_ref);
  return sum_sq_err > 0 ? kInf : 0.0;
}

double ErrorSums::snr_db() const {
  if (!(sum_sq_err > 0)) return sum_sq_err == 0 ? kInf : std::nan("");
  if (!(sum_sq_ref > 0)) return -kInf;
  return 10.0 * std::log10(sum_sq_ref / sum_sq_err);
}

double ErrorSums::cosine() const {
  if (sum_sq_ref == 0 && sum_sq_hat == 0) return 1.0;
  if (sum_sq_ref == 0 || sum_sq_hat == 0) return 0.0;
  const double c = sum_dot / (std::sqrt(sum_sq_ref) * std::sqrt(sum_sq_hat));
  return c > 1.0 ? 1.0 : (c < -1.0 ? -1.0 : c);  // rounding can land a hair outside
}

void ErrorSums::add(const ErrorSums& o) {
  const bool was_empty = count == 0;
  count += o.count;
  nonfinite += o.nonfinite;
  sum_sq_err += o.sum_sq_err;
  sum_abs_err += o.sum_abs_err;
  sum_sq_ref += o.sum_sq_ref;
  sum_sq_hat += o.sum_sq_hat;
  sum_dot += o.sum_dot;
  if (o.count > 0 && (was_empty || o.max_abs_err > max_abs_err)) {
    max_abs_err = o.max_abs_err;
    max_abs_index = o.max_abs_index;
  }
  bound_violations += o.bound_violations;
  if (first_violation_index < 0) first_violation_index = o.first_violation_index;
}

// -------------------------------------------------------------------- names

const char* tensor_status_name(TensorStatus s) {
  switch (s) {
    case TensorStatus::Ok:
      return "ok";
    case TensorStatus::GateFailed:
      return "gate_failed";
    case TensorStatus::BoundViolated:
      return "bound_violated";
    default:
      return "source_mismatch";
  }
}

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::Pass:
      return "pass";
    case Verdict::GateFailed:
      return "gate_failed";
    case Verdict::BoundViolated:
      return "bound_violated";
    case Verdict::SourceMismatch:
      return "source_mismatch";
    default:
      return "integrity_failed";
  }
}

const char* verdict_text(Verdict v) {
  switch (v) {
    case Verdict::Pass:
      return "PASS";
    case Verdict::GateFailed:
      return "FAIL: quality thresholds not met";
    case Verdict::BoundViolated:
      return "FAIL: error bound violated (wrong source or quantizer bug)";
    case Verdict::SourceMismatch:
      return "FAIL: the .qpack does not match the source checkpoint";
    default:
      return "FAIL: integrity error";
  }
}

int verdict_exit_code(Verdict v) {
  switch (v) {
    case Verdict::Pass:
      return kExitOk;
    case Verdict::GateFailed:
      return kExitGateFailed;
    default:
      return kExitIntegrity;  // the file does not match itself or its source
  }
}

// --------------------------------------------------------------- thresholds

Thresholds Thresholds::overlaid(const Thresholds& over) const {
  Thresholds t = *this;
  if (over.max_rel_error) t.max_rel_error = over.max_rel_error;
  if (over.min_snr_db) t.min_snr_db = over.min_snr_db;
  if (over.min_cosine) t.min_cosine = over.min_cosine;
  if (over.max_abs_error) t.max_abs_error = over.max_abs_error;
  return t;
}

namespace {

std::optional<double>* field(Thresholds& t, const std::string& key) {
  if (key == "max_rel_error") return &t.max_rel_error;
  if (key == "min_snr_db") return &t.min_snr_db;
  if (key == "min_cosine") return &t.min_cosine;
  if (key == "max_abs_error") return &t.max_abs_error;
  return nullptr;
}

[[noreturn]] void bad(const std::string& file, const std::string& where, const std::string& why) {
  throw Error(ErrorCode::InvalidArgument, file, "", "policy " + where + ": " + why);
}

void check_value(const std::string& file, const std::string& where, const std::string& key,
                 double v) {
  if (!std::isfinite(v)) bad(file, where, key + " must be a finite number");
  if ((key == "max_rel_error" || key == "max_abs_error") && v < 0)
    bad(file, where, key + " must be >= 0");
  if (key == "min_cosine" && (v < -1 || v > 1)) bad(file, where, "min_cosine must be in [-1, 1]");
}

// Reads the metric keys of `obj` into `t`; nulls go to *cleared when
// allowed. Other keys must be in `extra`.
void read_metrics(const nlohmann::json& obj, const std::string& file, const std::string& where,
                  Thresholds* t, std::vector<std::string>* cleared,
                  std::initializer_list<const char*> extra) {
  if (!obj.is_object()) bad(file, where, "must be a JSON object");
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& key = it.key();
    if (auto* f = field(*t, key)) {
      if (it->is_null()) {
        if (!cleared) bad(file, where, key + " cannot be null here");
        cleared->push_back(key);
      } else if (it->is_number()) {
        const double v = it->get<double>();
        check_value(file, where, key, v);
        *f = v;
      } else {
        bad(file, where, key + " must be a number" + std::string(cleared ? " or null" : ""));
      }
      continue;
    }
    bool known = false;
    for (const char* e : extra) known = known || key == e;
    if (!known) bad(file, where, "unknown key '" + key + "'");
  }
}

nlohmann::json thresholds_json(const Thresholds& t) {
  nlohmann::json j = nlohmann::json::object();
  if (t.max_rel_error) j["max_rel_error"] = *t.max_rel_error;
  if (t.min_snr_db) j["min_snr_db"] = *t.min_snr_db;
  if (t.min_cosine) j["min_cosine"] = *t.min_cosine;
  if (t.max_abs_error) j["max_abs_error"] = *t.max_abs_error;
  return j;
}

}  // namespace

Thresholds VerifyPolicy::for_tensor(const std::string& tensor, int* rule_index,
                                    bool* ignored) const {
  if (rule_index) *rule_index = -1;
  if (ignored) *ignored = false;
  for (size_t r = 0; r < rules.size(); ++r) {
    const ThresholdRule& rule = rules[r];
    if (!glob_match(rule.pattern, tensor)) continue;
    Thresholds t = global.overlaid(rule.thresholds);
    for (const auto& key : rule.cleared) field(t, key)->reset();
    if (rule_index) *rule_index = int(r);
    if (ignored) *ignored = rule.ignore;
    return t;
  }
  return global;
}

bool VerifyPolicy::any() const {
  if (global.any() || model.any()) return true;
  for (const auto& r : rules)
    if (r.thresholds.any()) return true;
  return false;
}

VerifyPolicy VerifyPolicy::from_json(const nlohmann::json& j, const std::string& file) {
  VerifyPolicy p;
  p.source_file = file;
  if (!j.is_object()) bad(file, "top level", "must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "version") {
      if (!it->is_number_integer() || it->get<int64_t>() != 1)
        bad(file, "version", "only version 1 is known");
    } else if (key == "description" || key == "comment" || key == "$schema") {
      if (!it->is_string()) bad(file, key, "must be a string");
    } else if (key == "thresholds") {
      read_metrics(*it, file, "thresholds", &p.global, nullptr, {});
    } else if (key == "model") {
      read_metrics(*it, file, "model", &p.model, nullptr, {});
    } else if (key == "overrides") {
      if (!it->is_array()) bad(file, "overrides", "must be an array");
      for (size_t i = 0; i < it->size(); ++i) {
        const auto& o = (*it)[i];
        const std::string where = "overrides[" + std::to_string(i) + "]";
        ThresholdRule rule;
        read_metrics(o, file, where, &rule.thresholds, &rule.cleared,
                     {"pattern", "ignore", "comment"});
        if (!o.contains("pattern") || !o["pattern"].is_string() ||
            o["pattern"].get<std::string>().empty())
          bad(file, where, "needs a non-empty string 'pattern'");
        rule.pattern = o["pattern"].get<std::string>();
        if (o.contains("ignore")) {
          if (!o["ignore"].is_boolean()) bad(file, where, "'ignore' must be true or false");
          rule.ignore = o["ignore"].get<bool>();
        }
        if (o.contains("comment") && !o["comment"].is_string())
          bad(file, where, "'comment' must be a string");
        p.rules.push_back(std::move(rule));
      }
    } else {
      bad(file, "top level",
          "unknown key '" + key + "' (expected version, thresholds, overrides, model)");
    }
  }
  return p;
}

VerifyPolicy VerifyPolicy::load(const std::string& path) {
  return from_json(read_json_file(path, "policy"), path);
}

nlohmann::json VerifyPolicy::to_json() const {
  nlohmann::json j;
  j["version"] = 1;
  j["thresholds"] = thresholds_json(global);
  nlohmann::json ov = nlohmann::json::array();
  for (const auto& r : rules) {
    nlohmann::json o = thresholds_json(r.thresholds);
    o["pattern"] = r.pattern;
    for (const auto& key : r.cleared) o[key] = nullptr;
    if (r.ignore) o["ignore"] = true;
    ov.push_back(std::move(o));
  }
  j["overrides"] = std::move(ov);
  j["model"] = thresholds_json(model);
  return j;
}

}  // namespace qpack
