#include "qpack/converter/recipe.hpp"

#include <algorithm>
#include <cctype>

#include "qpack/format/error.hpp"
#include "qpack/format/glob.hpp"
#include "qpack/format/json.hpp"
#include "qpack/format/text.hpp"

namespace qpack {

std::optional<DType> parse_scale_dtype(const std::string& s) {
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  if (l == "f16" || l == "fp16" || l == "float16" || l == "half") return DType::F16;
  if (l == "bf16" || l == "bfloat16") return DType::BF16;
  if (l == "f32" || l == "fp32" || l == "float32" || l == "float") return DType::F32;
  return std::nullopt;
}

namespace {

[[noreturn]] void bad(const std::string& origin, const std::string& why) {
  throw Error(ErrorCode::InvalidArgument, origin, "", why);
}

int64_t to_int(const std::string& origin, const std::string& key, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    bad(origin, "'" + key + "' needs an integer, got '" + v + "'");
  }
}

void check_rule(const TensorRule& r, const std::string& origin) {
  if (r.pattern.empty()) bad(origin, "a rule needs a non-empty pattern");
  QuantScheme probe;
  if (r.bits) probe.bits = *r.bits;
  if (r.group_size) probe.group_size = *r.group_size;
  if (r.scale_dtype) probe.scale_dtype = *r.scale_dtype;
  const std::string why = validate_scheme(probe);
  if (!why.empty()) bad(origin, "rule '" + r.pattern + "': " + why);
}

}  // namespace

TensorRule parse_rule(const std::string& text) {
  const std::string origin = "--rule '" + text + "'";
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    bad(origin, "expected PATTERN:key=value[,key=value...], e.g. '*.mlp.*:bits=8,group=128'");
  TensorRule r;
  r.origin = origin;
  r.pattern = text.substr(0, colon);
  std::string rest = text.substr(colon + 1);
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t comma = rest.find(',', pos);
    if (comma == std::string::npos) comma = rest.size();
    const std::string item = rest.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) {
      if (comma == rest.size()) break;
      continue;
    }
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const std::string val = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "skip" && val.empty())
      r.skip = true;
    else if (key == "force" && val.empty())
      r.force = true;
    else if ((key == "sym" || key == "symmetric") && val.empty())
      r.symmetric = true;
    else if ((key == "asym" || key == "asymmetric") && val.empty())
      r.symmetric = false;
    else if (key == "bits")
      r.bits = int(to_int(origin, key, val));
    else if (key == "group" || key == "group_size")
      r.group_size = val == "all" ? 0 : to_int(origin, key, val);
    else if (key == "axis")
      r.axis = int(to_int(origin, key, val));
    else if (key == "scale" || key == "scale_dtype") {
      r.scale_dtype = parse_scale_dtype(val);
      if (!r.scale_dtype) bad(origin, "scale dtype must be f16, bf16 or f32, got '" + val + "'");
    } else if (key == "zero" || key == "zero_point") {
      r.zero_point = zero_point_from_string(val);
      if (!r.zero_point) bad(origin, "zero point must be float or integer, got '" + val + "'");
    } else if (key == "scales") {
      if (val != "one-level" && val != "two-level")
        bad(origin, "scales must be one-level or two-level, got '" + val + "'");
      r.two_level = val == "two-level";
    } else {
      bad(origin, "unknown key '" + key +
                      "' (known: bits, group, axis, sym, asym, scale, zero, scales, skip, force)");
    }
    if (comma == rest.size()) break;
  }
  check_rule(r, origin);
  return r;
}

Recipe Recipe::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) bad(origin, "a recipe must be a JSON object");
  Recipe r;
  auto read_scheme_fields = [&](const nlohmann::json& o, const std::string& where, TensorRule* rule,
                                QuantScheme* scheme) {
    for (auto it = o.begin(); it != o.end(); ++it) {
      const std::string& k = it.key();
      const auto& v = it.value();
      auto need_int = [&]() -> int64_t {
        if (!v.is_number_integer()) bad(origin, where + ": '" + k + "' must be an integer");
        return v.get<int64_t>();
      };
      if (k == "match" && rule) {
        if (!v.is_string()) bad(origin, where + ": 'match' must be a string");
        rule->pattern = v.get<std::string>();
      } else if (k == "skip" && rule) {
        if (!v.is_boolean()) bad(origin, where + ": 'skip' must be true or false");
        rule->skip = v.get<bool>();
      } else if (k == "force" && rule) {
        if (!v.is_boolean()) bad(origin, where + ": 'force' must be true or false");
        rule->force = v.get<bool>();
      } else if (k == "bits") {
        const int b = int(need_int());
        if (rule)
          rule->bits = b;
        else
          scheme->bits = b;
      } else if (k == "group_size") {
        int64_t g = 0;
        if (v.is_string() && v.get<std::string>() == "all")
          g = 0;
        else
          g = need_int();
        if (rule)
          rule->group_size = g;
        else
          scheme->group_size = g;
      } else if (k == "axis") {
        const int a = int(need_int());
        if (rule)
          rule->axis = a;
        else
          scheme->axis = a;
      } else if (k == "symmetric") {
        if (!v.is_boolean()) bad(origin, where + ": 'symmetric' must be true or false");
        if (rule)
          rule->symmetric = v.get<bool>();
        else
          scheme->symmetric = v.get<bool>();
      } else if (k == "scale_dtype") {
        const auto d = v.is_string() ? parse_scale_dtype(v.get<std::string>()) : std::nullopt;
        if (!d) bad(origin, where + ": 'scale_dtype' must be \"f16\", \"bf16\" or \"f32\"");
        if (rule)
          rule->scale_dtype = *d;
        else
          scheme->scale_dtype = *d;
      } else if (k == "zero_point") {
        const auto zp = v.is_string() ? zero_point_from_string(v.get<std::string>()) : std::nullopt;
        if (!zp) bad(origin, where + ": 'zero_point' must be \"float\" or \"integer\"");
        if (rule)
          rule->zero_point = *zp;
        else
          scheme->zero_point = *zp;
      } else if (k == "scales") {
        const std::string v2 = v.is_string() ? v.get<std::string>() : "";
        if (v2 != "one-level" && v2 != "two-level")
          bad(origin, where + ": 'scales' must be \"one-level\" or \"two-level\"");
        if (rule)
          rule->two_level = v2 == "two-level";
        else
          scheme->super_block = v2 == "two-level" ? kSuperBlockGroups : 0;
      } else {
        bad(origin, where + ": unknown key '" + k + "'");
      }
    }
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "defaults") {
      if (!it.value().is_object()) bad(origin, "'defaults' must be an object");
      read_scheme_fields(it.value(), "defaults", nullptr, &r.defaults);
      const std::string why = validate_scheme(r.defaults);
      if (!why.empty()) bad(origin, "defaults: " + why);
    } else if (it.key() == "min_dims") {
      if (!it.value().is_number_integer() || it.value().get<int>() < 1)
        bad(origin, "'min_dims' must be an integer >= 1");
      r.min_dims = it.value().get<int>();
    } else if (it.key() == "rules") {
      if (!it.value().is_array()) bad(origin, "'rules' must be an array");
      size_t n = 0;
      for (const auto& rj : it.value()) {
        const std::string where = "rules[" + std::to_string(n++) + "]";
        if (!rj.is_object()) bad(origin, where + " must be an object");
        TensorRule rule;
        rule.origin = "recipe " + origin + " " + where;
        read_scheme_fields(rj, where, &rule, nullptr);
        if (rule.pattern.empty()) bad(origin, where + " needs \"match\"");
        check_rule(rule, origin);
        r.rules.push_back(rule);
      }
    } else if (it.key() == "tensors") {
      if (!it.value().is_object()) bad(origin, "'tensors' must be an object of tensor names");
      for (auto t = it.value().begin(); t != it.value().end(); ++t) {
        const std::string where = "tensors['" + t.key() + "']";
        if (!t.value().is_object()) bad(origin, where + " must be an object");
        QuantScheme probe = r.defaults;
        TensorRule seen;
        read_scheme_fields(t.value(), where, &seen, nullptr);
        if (!seen.pattern.empty() || seen.skip || seen.force || seen.symmetric ||
            seen.scale_dtype || seen.zero_point)
          bad(origin, where + ": takes only 'bits', 'group_size' and 'axis'");
        if (!seen.bits || !seen.group_size || !seen.axis)
          bad(origin, where + " needs 'bits', 'group_size' and 'axis'");
        probe.bits = *seen.bits;
        probe.group_size = *seen.group_size;
        const std::string why = validate_scheme(probe);
        if (!why.empty()) bad(origin, where + ": " + why);
        r.tensors[t.key()] = TensorChoice{*seen.bits, *seen.group_size, *seen.axis, {}};
      }
    } else {
      bad(origin, "unknown key '" + it.key() + "' (known: defaults, min_dims, rules, tensors)");
    }
  }
  return r;
}

Recipe Recipe::load(const std::string& path) {
  return from_json(read_json_file(path, "recipe"), path);
}

nlohmann::json Recipe::to_json() const {
  nlohmann::json j;
  j["defaults"] = {{"bits", defaults.bits},
                   {"group_size", defaults.group_size},
                   {"axis", defaults.axis},
                   {"symmetric", defaults.symmetric},
                   {"zero_point", zero_point_name(defaults.zero_point)},
                   {"scale_dtype", dtype_name(defaults.scale_dtype)}};
  if (has_two_level(defaults)) j["defaults"]["scales"] = "two-level";
  j["min_dims"] = min_dims;
  j["rules"] = nlohmann::json::array();
  for (const auto& r : rules) {
    nlohmann::json o = {{"match", r.pattern}};
    if (r.skip) o["skip"] = true;
    if (r.force) o["force"] = true;
    if (r.bits) o["bits"] = *r.bits;
    if (r.group_size) o["group_size"] = *r.group_size;
    if (r.axis) o["axis"] = *r.axis;
    if (r.symmetric) o["symmetric"] = *r.symmetric;
    if (r.scale_dtype) o["scale_dtype"] = dtype_name(*r.scale_dtype);
    if (r.zero_point) o["zero_point"] = zero_point_name(*r.zero_point);
    if (r.two_level) o["scales"] = *r.two_level ? "two-level" : "one-level";
    j["rules"].push_back(o);
  }
  if (!tensors.empty()) {
    nlohmann::json t = nlohmann::json::object();
    for (const auto& [name, c] : tensors)
      t[name] = {{"bits", c.bits}, {"group_size", c.group_size}, {"axis", c.axis}};
    j["tensors"] = t;
  }
  return j;
}

TensorDecision decide(const Recipe& recipe, const std::string& name, DType dtype,
                      const std::vector<int64_t>& shape) {
  TensorDecision d;
  d.scheme = recipe.defaults;
  const TensorRule* rule = nullptr;
  for (size_t i = 0; i < recipe.rules.size(); ++i)
    if (glob_match(recipe.rules[i].pattern, name)) {
      rule = &recipe.rules[i];
      d.rule = int(i);
      break;
    }
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  if (rule && rule->skip) {
    d.reason = "skipped by rule '" + rule->pattern + "'";
    return d;
  }
  if (!is_quantizable(dtype)) {
    d.reason = std::string("dtype ") + dtype_name(dtype) + " is not quantizable";
    return d;
  }
  if (shape.empty() || numel == 0) {
    d.reason = shape.empty() ? "0-d tensor" : "empty tensor";
    return d;
  }
  if (int(shape.size()) < recipe.min_dims && !(rule && rule->force)) {
    d.reason = std::to_string(shape.size()) + "-d tensor (kept: norms and biases stay exact)";
    return d;
  }
  if (rule) {
    if (rule->bits) d.scheme.bits = *rule->bits;
    if (rule->group_size) d.scheme.group_size = *rule->group_size;
    if (rule->axis) d.scheme.axis = *rule->axis;
    if (rule->symmetric) d.scheme.symmetric = *rule->symmetric;
    if (rule->scale_dtype) d.scheme.scale_dtype = *rule->scale_dtype;
    if (rule->zero_point) d.scheme.zero_point = *rule->zero_point;
    if (rule->two_level) d.scheme.super_block = *rule->two_level ? kSuperBlockGroups : 0;
    d.reason =
        rule->preset ? rule->origin + ", '" + rule->pattern + "'" : "rule '" + rule->pattern + "'";
  } else {
    d.reason = "defaults";
  }
  const auto chosen = recipe.tensors.find(name);
  if (chosen != recipe.tensors.end()) {
    d.scheme.bits = chosen->second.bits;
    d.scheme.group_size = chosen->second.group_size;
    d.scheme.axis = chosen->second.axis;
    d.reason =
        chosen->second.reason.empty() ? "recipe tensors['" + name + "']" : chosen->second.reason;
    d.chosen = true;
  }
  const int rank = int(shape.size());
  if (d.scheme.axis >= rank || d.scheme.axis < -rank) {
    // A default axis that this tensor does not have: keep it rather than fail
    // the whole model (the plan refuses an axis that no selected tensor has);
    // an explicit rule's axis is the user's to get right.
    if ((!rule || !rule->axis) && !d.chosen) {
      d.reason = "default group axis " + std::to_string(d.scheme.axis) + " does not exist in a " +
                 std::to_string(rank) + "-d tensor";
      d.default_axis_missing = true;
      return d;
    }
  }
  d.action = TensorAction::Quantize;
  return d;
}

}  // namespace qpack
