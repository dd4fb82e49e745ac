// Per-tensor bits, group size and axis chosen to a budget: `convert
// --target-bpw B` (bits per weight over the quantized tensors) and `--axis
// auto` (each tensor's axis by its importance-weighted error). The choice is
// written into a Recipe's `tensors`, so the plan, every writer and verify see
// ordinary per-tensor schemes. docs/cli.md "Choices to a budget" is the
// contract; docs/quantization.md §B the arithmetic.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qpack/converter/recipe.hpp"

namespace qpack {

class Checkpoint;
struct ImportanceMatrix;

// The ladder every free tensor may take (a rule that sets bits, a group
// size or an axis pins that field). New schemes join here.
inline constexpr int kBudgetBits[] = {2, 3, 4, 8};
inline constexpr int64_t kBudgetGroups[] = {32, 64, 128, 256};
// The sample: whole windows of this many positions along axis 0 and along
// the last axis (a multiple of every ladder group, so the sampled groups are
// the tensor's own), at most kBudgetSampleElements elements per tensor.
inline constexpr int64_t kBudgetWindow = 256;
inline constexpr int64_t kBudgetSampleElements = int64_t(1) << 20;

// What the allocation minimises (docs/quantization.md §B): the sum of the
// tensors' squared (weighted) errors, the model-wide weight error that
// verify's model line reports (the default); or the sum over tensors of each
// one's squared relative error, so that every matrix's noise counts against
// its own signal (on stories260K worse by weight error and by KL).
enum class BudgetObjective { Relative, Total };
const char* budget_objective_name(BudgetObjective o);  // "relative" / "total"

struct BudgetOptions {
  BudgetObjective objective = BudgetObjective::Total;
  std::optional<double> target_bpw;  // none: --target-error, or only --axis auto
  // Or the least bits whose estimated model-wide relative (weighted) error,
  // sqrt(sum error / sum reference) as verify's model line measures it, is
  // at most this (--target-error; the objective is then `total`).
  std::optional<double> target_error;
  bool axis_auto = false;  // candidates on axis 0 and on the last axis
  // Per-input-channel weights of the error (docs/imatrix.md); required by
  // axis_auto. Not owned.
  const ImportanceMatrix* imatrix = nullptr;
  // Or sample inputs per weight (safetensors, NAME -> [samples, in], as
  // verify --activations reads them): their per-channel mean square is the
  // weight, as an imatrix's is; it takes precedence over the imatrix for
  // the tensors it names. Empty: none.
  std::string activations_path;
  NonFinitePolicy nonfinite = NonFinitePolicy::Error;
  int threads = 0;
  int64_t sample_elements = kBudgetSampleElements;
  std::string origin = "--target-bpw";  // how the plan's reasons name the budget
};

struct BudgetCandidate {
  int bits = 4;
  int64_t group_size = 64;  // as requested (the ladder's value)
  int axis = 0;             // resolved
  uint64_t bytes = 0;       // codes + scales + zero-points of the whole tensor
  double error = 0;         // estimated sum of w * (x_hat - x)^2 over the tensor
  bool on_hull = false;     // a vertex of the lower convex hull of (bits, error)
  double bpw(int64_t elements) const { return double(bytes) * 8.0 / double(elements); }
};

struct BudgetTensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t elements = 0;
  int64_t sampled = 0;                      // elements the errors were measured on
  double reference = 0;                     // estimated sum of w * x^2 over the tensor
  bool weighted = false;                    // an imatrix entry weighs its error
  std::vector<BudgetCandidate> candidates;  // ladder order: bits, group, axis
  size_t chosen = 0;
  // Estimated cut of the objective per added bit (relative: of the tensor's
  // squared relative error; total: of the squared error in units of the
  // model's mean w * x^2) of the last step taken to reach the choice, and of the next step along
  // the hull not taken; NaN where there is none.
  double gain_taken = 0, gain_next = 0;
  bool trimmed = false;  // --target-error's trim moved it to a cheaper candidate
  std::string why;
  const BudgetCandidate& choice() const { return candidates[chosen]; }
};

struct BudgetReport {
  std::optional<double> target_bpw;
  std::optional<double> target_error;
  bool axis_auto = false;
  BudgetObjective objective = BudgetObjective::Total;
  std::string weights;              // "none" or the imatrix path
  int64_t elements = 0;             // of the budget's tensors (those the plan quantizes)
  uint64_t bytes = 0;               // their codes + scales + zero-points as chosen
  double min_bpw = 0, max_bpw = 0;  // reachable
  double min_rel_error = 0;         // reachable: every tensor at its least-error candidate
  double bpw = 0;                   // chosen: bytes * 8 / elements
  double threshold = 0;             // the gain per bit below which the greedy stopped (NaN: none)
  double estimated_rel_error = 0;   // sqrt(sum error / sum reference) as chosen
  std::vector<BudgetTensor> tensors;
  std::vector<std::string> notes;  // e.g. a target not hit within 1 %
  nlohmann::json to_json() const;
};

// Chooses bits, group size and axis for every tensor `recipe` quantizes and
// returns the recipe with them in `tensors` (any `tensors` it held are
// replaced). Reads the tensors (a fixed, strided sample of each). Throws
// Error(InvalidArgument) for a target outside the reachable range (naming
// it), for a target error below the reachable minimum, for both targets, for
// axis_auto without an imatrix or activations; Error(ShapeMismatch) for an imatrix
// entry of the wrong width; the quantizer's errors (NonFinite, RangeOverflow)
// naming the tensor. Deterministic: the same choice for any thread count.
Recipe choose_to_budget(const Checkpoint& ckpt, const Recipe& recipe, const BudgetOptions& options,
                        BudgetReport* report);

}  // namespace qpack
