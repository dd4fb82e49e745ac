// Which tensors are quantized, and how: run-wide defaults plus per-tensor
// rules matched by glob pattern on the tensor name (first match wins).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

struct TensorRule {
  std::string pattern;  // glob: '*' any run, '?' one character, [abc] a set
  bool skip = false;    // keep the tensor as it is
  bool force = false;   // quantize even if the default selection would keep it
  std::optional<int> bits;
  std::optional<int64_t> group_size;
  std::optional<int> axis;
  std::optional<bool> symmetric;
  std::optional<DType> scale_dtype;
  std::optional<ZeroPoint> zero_point;  // asymmetric tensors only; ignored for symmetric
  std::optional<bool> two_level;        // scales=two-level (quantization.md §T)
  // Where the rule came from, for warnings: "--skip '*embed*'", "--rule
  // '...'", "recipe r.json rules[2]". Empty: shown as "rule 'PATTERN'".
  std::string origin;
  // A preset's rule (a list of names of which a model has few): neither
  // "matches no tensor" nor "decided by an earlier rule" is worth a warning,
  // and the plan's reason names the origin.
  bool preset = false;
};

// One tensor's bits, group size and axis, chosen by name (by the budget of
// --target-bpw / --axis auto, docs/cli.md "Choices to a budget", or written
// by hand as a recipe's "tensors"). They replace those three fields of the
// scheme the rules and defaults give a tensor they quantize; whether a
// tensor is quantized, its mode, zero-point, scale dtype and method stay the
// rules'.
struct TensorChoice {
  int bits = 4;
  int64_t group_size = 64;  // 0 = the whole axis
  int axis = 0;
  // The plan's "why" for the tensor (not stored in the recipe's JSON);
  // empty: "recipe tensors['NAME']".
  std::string reason;
};

struct Recipe {
  QuantScheme defaults;  // FlexLLMGen's: 4 bits, G 64, axis 0, asymmetric, F16
  int min_dims = 2;      // tensors of fewer dimensions (norms, biases) are kept
  std::vector<TensorRule> rules;
  // Per-tensor choices by exact name, applied after the rules (see
  // TensorChoice). JSON: "tensors": {"NAME": {"bits": 3, "group_size": 128,
  // "axis": -1}, ...}, written only when not empty.
  std::map<std::string, TensorChoice> tensors;

  // {"defaults": {...}, "min_dims": 2, "rules": [{"match": "*embed*", "skip": true}, ...]}
  // Throws Error(InvalidArgument) naming `origin` (a file name) on any unknown
  // key or bad value.
  static Recipe from_json(const nlohmann::json& j, const std::string& origin);
  // Reads `path` and parses it with the strict JSON reader
  // (qpack/format/json.hpp): Error(Io) when unreadable, Error(InvalidArgument)
  // naming the file for a duplicate key, invalid JSON or what from_json refuses.
  static Recipe load(const std::string& path);
  nlohmann::json to_json() const;
};

// Tensors whose resolved group is shorter than this are kept (the requested
// group size may be larger than the axis it groups): a group of fewer
// elements costs more in scales than it saves in codes.
constexpr int64_t kMinResolvedGroup = 8;

// "PATTERN:key=value,key=value" with keys bits, group (or group_size), axis,
// sym (or symmetric), asym, scale (or scale_dtype), zero (or zero_point: float
// or integer), scales (one-level or two-level), skip, force.
TensorRule parse_rule(const std::string& text);

// f16 / F16 / fp16 / float16, bf16, f32 / fp32 / float32.
std::optional<DType> parse_scale_dtype(const std::string& s);

bool glob_match(const std::string& pattern, const std::string& name);

enum class TensorAction { Quantize, Keep };

struct TensorDecision {
  TensorAction action = TensorAction::Keep;
  QuantScheme scheme;  // as requested (group size and axis not yet resolved)
  std::string reason;  // why it is kept, or which rule chose the scheme
  int rule = -1;       // index in recipe.rules of the rule that decided, or -1
  // Kept only because the default group axis (scheme.axis) is not one of its
  // dimensions: the plan refuses a default axis that no selected tensor has.
  bool default_axis_missing = false;
  bool chosen = false;  // bits, group size and axis from recipe.tensors
};

// Decides for one tensor. Quantizable = F16/BF16/F32 with >= min_dims
// dimensions and at least one element, unless a rule says otherwise.
TensorDecision decide(const Recipe& recipe, const std::string& name, DType dtype,
                      const std::vector<int64_t>& shape);

}  // namespace qpack
