// The verifier: checks a .qpack file's integrity, compares every tensor with
// the source checkpoint it was converted from, measures the quantization
// error and applies quality thresholds (the CI gate). `qpack verify` is a thin
// shell over verify(); tests call it directly.
//
// Determinism: every metric is accumulated in double in a fixed order (see
// verify_metrics.hpp), so a report is identical for any thread count and for
// the CPU and the CUDA paths. Only the "timing" and "device" fields differ.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qpack/format/gguf.hpp"
#include "qpack/format/imatrix.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/kernels/device.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

// ---------------------------------------------------------------- thresholds

// Quality limits for one tensor (or the whole model). Unset = not checked.
struct Thresholds {
  std::optional<double> max_rel_error;  // relative Frobenius error ||x - x^||/||x||, <=
  std::optional<double> min_snr_db;     // SNR in dB, >=
  std::optional<double> min_cosine;     // cosine similarity, >=
  std::optional<double> max_abs_error;  // largest |x - x^|, <=
  bool any() const { return max_rel_error || min_snr_db || min_cosine || max_abs_error; }
  // Fields set in `over` replace ours.
  Thresholds overlaid(const Thresholds& over) const;
};

// One per-name rule of a policy file. Fields the rule sets replace the global
// thresholds for matching tensors; `cleared` lists metrics the rule turns off
// (JSON null); `ignore` exempts matching tensors from the gate entirely.
struct ThresholdRule {
  std::string pattern;  // glob_match() of qpack/recipe.hpp (fnmatch: '*' also matches dots)
  Thresholds thresholds;
  std::vector<std::string> cleared;  // metric names set to null in the rule
  bool ignore = false;
};

// Thresholds for the run: global values, per-name overrides (first matching
// pattern wins) and limits on the whole-model totals. docs/verify-report.md
// documents the JSON form.
struct VerifyPolicy {
  Thresholds global;
  std::vector<ThresholdRule> rules;
  Thresholds model;         // checked against the element-weighted totals
  std::string source_file;  // where it was loaded from, for the report
  // A quantized tensor reconstructed as all zeros (while its source is not,
  // or, without a source, at all) fails the gate unless this is set
  // (`--allow-zero-tensors`): see docs/verify-report.md, "Degenerate groups".
  bool allow_zero_tensors = false;

  // The thresholds for `tensor`, and the rule that decided them (-1: global).
  Thresholds for_tensor(const std::string& tensor, int* rule_index = nullptr,
                        bool* ignored = nullptr) const;
  bool any() const;

  // Throws Error(InvalidArgument) naming `file` and the offending key.
  static VerifyPolicy from_json(const nlohmann::json& j, const std::string& file = "<policy>");
  // Reads and parses with the strict JSON reader (qpack/format/json.hpp):
  // Error(Io) when unreadable, Error(InvalidArgument) naming the file when
  // malformed (a duplicate key, invalid JSON, or what from_json refuses).
  static VerifyPolicy load(const std::string& path);
  nlohmann::json to_json() const;
};

// ------------------------------------------------------------------- naming

// The transformer block a tensor belongs to, from the usual naming schemes:
// model.layers.N., transformer.h.N., blk.N., encoder.layer.N.,
// decoder.layers.N., layers.N., h.N., blocks.N., ... Tensors outside any
// block (embeddings, final norm, lm_head) are "global".
struct LayerId {
  std::string stack;   // name prefix before the index ("model.layers"); empty for global
  int64_t index = -1;  // -1 for global
  bool global() const { return index < 0; }
  // "model.layers.3" or "global"
  std::string label() const;
};
LayerId parse_layer(const std::string& tensor_name);
// The tensor's kind: inside a block, the name after the block index, less a
// final ".weight" ("self_attn.q_proj", "attention.output.dense",
// "self_attn.q_proj.bias"); outside any block, the whole name less ".weight"
// ("model.embed_tokens", "lm_head").
std::string tensor_kind(const std::string& tensor_name);

// ------------------------------------------------------------------ metrics

// Raw sums of one tensor (or a roll-up), from which every metric derives.
// Roll-ups add the sums, so model-level metrics are element-weighted.
struct ErrorSums {
  uint64_t count = 0;             // finite source elements compared
  uint64_t nonfinite = 0;         // source NaN/Inf elements (excluded)
  double sum_sq_err = 0;          // sum (x - x^)^2
  double sum_abs_err = 0;         // sum |x - x^|
  double sum_sq_ref = 0;          // sum x^2
  double sum_sq_hat = 0;          // sum x^^2
  double sum_dot = 0;             // sum x * x^
  double max_abs_err = 0;         // largest |x - x^| (0 when count == 0)
  int64_t max_abs_index = -1;     // its flat index (smallest on ties), -1 when count == 0
  uint64_t bound_violations = 0;  // elements beyond error_bound(); must be 0
  int64_t first_violation_index = -1;

  double rmse() const;
  double mean_abs_err() const;
  double rel_error() const;  // ||x - x^|| / ||x||: 0 if both zero, +inf if only x is zero
  double snr_db() const;     // 10 log10(||x||^2 / ||x - x^||^2): +inf when exact
  double cosine() const;     // x.x^ / (||x|| ||x^||): 1 if both zero, 0 if one is
  // Adds `o` into this (sums add, max keeps the larger; indexes are only
  // meaningful within one tensor, so roll-ups keep the worst tensor's name
  // beside them).
  void add(const ErrorSums& o);
};

// The importance-weighted error of a weight [..., in] against a llama.cpp
// importance matrix (docs/quantization.md section 11): per input channel j,
// sq_err_j = sum_i (x_ij - x^_ij)^2 and sq_ref_j = sum_i x_ij^2 over the
// rows, weighted by w_j (the mean squared activation of channel j).
struct WeightedErrorSums {
  uint64_t count = 0;        // finite source elements compared
  double sum_w_sq_err = 0;   // sum_j w_j sq_err_j
  double sum_w_sq_ref = 0;   // sum_j w_j sq_ref_j
  double rel_error() const;  // sqrt(err / ref): 0 if both zero, +inf if only ref is
  void add(const WeightedErrorSums& o);
};

// The output error of a linear layer y = W x over sample inputs X [n, in]
// (docs/quantization.md section 11): ||X W^T - X W^^T|| / ||X W^T||.
struct OutputErrorSums {
  int64_t samples = 0;       // rows of X
  double sum_sq_err = 0;     // sum over samples and outputs of (X (W - W^)^T)^2
  double sum_sq_ref = 0;     // sum of (X W^T)^2
  double rel_error() const;  // sqrt(err / ref): 0 if both zero, +inf if only ref is
  void add(const OutputErrorSums& o);
};

// ------------------------------------------------------------------ results

enum class TensorStatus {
  Ok,
  GateFailed,      // a threshold did not hold
  BoundViolated,   // an element exceeded the spec's error bound: a bug, or the wrong source
  SourceMismatch,  // not in the source, or shape/dtype differ, or raw bytes differ
};
const char* tensor_status_name(TensorStatus s);

struct GateFailure {
  std::string tensor;  // "" for the whole-model totals
  std::string metric;  // "rel_error", "snr_db", "cosine", "max_abs_error"
  double value = 0;
  double limit = 0;
  std::string op;  // "<=" or ">=": the condition that failed to hold
};

struct TensorResult {
  std::string name;
  LayerId layer;
  std::string kind;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  bool quantized = false;
  QuantScheme scheme;     // quantized .qpack tensors only
  std::string ggml_type;  // GGUF files: the tensor's GGML type ("Q4_K", "F32"); "" for .qpack
  uint64_t elements = 0;
  uint64_t source_bytes = 0;  // bytes in the source dtype
  uint64_t stored_bytes = 0;  // bytes of its sections in the .qpack
  bool compared = false;      // metrics (quantized) or bytes (raw) were compared
  ErrorSums sums;             // quantized and compared only
  bool raw_equal = false;     // raw and compared only
  TensorStatus status = TensorStatus::Ok;
  std::vector<std::string> problems;  // source mismatches, in words
  std::vector<GateFailure> gate_failures;
  int policy_rule = -1;  // index of the matching rule, -1: global thresholds
  bool gate_ignored = false;
  // The stored parameters (quantized tensors of an intact file, with or
  // without a source): groups, degenerate groups (stored scale +0 or -0,
  // docs/quantization.md section 4 step 5), and scales or zero-points that are
  // not finite (never written by qpack: a damaged or foreign file). GGUF
  // block tensors: groups = the ggml blocks, nonfinite_params = the blocks
  // that decode to a non-finite value (a NaN/Inf scale or min), degenerate
  // groups not counted.
  // invalid_zero_points: integer zero-point tensors (docs/quantization.md
  // §5a) whose stored z is finite but not a whole code in [0, 2^bits - 1].
  bool params_checked = false;
  uint64_t groups = 0, degenerate_groups = 0, nonfinite_params = 0, invalid_zero_points = 0;
  // Every reconstructed element is zero while the source has a non-zero
  // element (with a source), or at all (without one).
  bool all_zero = false;
  // With an importance matrix (VerifyOptions::imatrix) that has an entry for
  // this quantized tensor, and with sample activations for it.
  bool has_weighted = false;
  WeightedErrorSums weighted;
  std::string imatrix_entry;  // the entry's name in the imatrix
  bool has_output = false;
  OutputErrorSums output;
  double seconds = 0;  // time spent on it (not part of determinism)
};

// A tensor's loud flags, in words, "" when none: "all-zero",
// "degenerate 3/96", "non-finite params 1" (joined by ", ").
std::string tensor_flags(const TensorResult& t);

struct Rollup {
  std::string key;           // layer label / kind / "model"
  int64_t layer_index = -1;  // layer roll-ups: the block index (-1 global)
  uint64_t tensors = 0;      // all tensors
  uint64_t quantized = 0;    // quantized tensors among them
  uint64_t elements = 0;
  uint64_t source_bytes = 0, stored_bytes = 0;
  ErrorSums sums;            // quantized tensors only (raw ones are exact)
  std::string worst_tensor;  // highest relative error
  double worst_rel_error = 0;
  // Sums of the tensors that have them (weighted_tensors / output_tensors).
  uint64_t weighted_tensors = 0, output_tensors = 0;
  WeightedErrorSums weighted;
  OutputErrorSums output;
};

struct IntegrityIssue {
  std::string tensor;   // "" for the header or manifest
  std::string section;  // "codes", "scales", "zeros", "data", or "" (file level)
  std::string code;     // error_code_name()
  std::string message;
};

enum class Verdict { Pass, GateFailed, BoundViolated, SourceMismatch, IntegrityFailed };
const char* verdict_name(Verdict v);
// The verdict as the text and HTML reports print it ("PASS", "FAIL: ...").
const char* verdict_text(Verdict v);
// The CLI's exit code for a verdict (error.hpp's ExitCode values).
int verdict_exit_code(Verdict v);

struct VerifyReport {
  // settings
  std::string file, source;
  std::string imatrix, activations;  // VerifyOptions' paths, "" when not given
  std::string device;                // "cpu (2 threads)" / "cuda:0 (NVIDIA H100 ...)"
  DeviceSelection device_requested;  // as given (auto, cpu, cuda:N)
  int threads = 0;
  VerifyPolicy policy;
  std::string qpack_version;  // of this build
  std::string created_utc;    // ISO 8601
  // the file
  uint64_t file_bytes = 0;
  std::string file_format = "qpack";  // "qpack", "gguf", "compressed-tensors" or "gptq"
  std::string format_version;         // "1.0" (.qpack), "3" (GGUF), the folder's layout
  // Whether elements beyond docs/quantization.md section 7's bound fail the
  // run: true for qpack's own files, whose quantizer promises it; false for
  // folders another quantizer made (GPTQ's codes are not round-to-nearest),
  // where the count is reported only.
  bool bound_is_promise = true;
  // integrity
  bool integrity_ok = false;
  uint64_t sections_checked = 0, bytes_checked = 0;
  std::vector<IntegrityIssue> integrity_issues;
  // source comparison
  std::vector<std::string> missing_from_qpack;  // in the source, not in the .qpack
  std::vector<std::string> extra_in_qpack;      // in the .qpack, not in the source
  // results, in the .qpack's tensor order
  std::vector<TensorResult> tensors;
  std::vector<Rollup> layers;  // global first, then by stack and index
  std::vector<Rollup> kinds;   // by name
  Rollup model;
  std::vector<GateFailure> gate_failures;  // all of them, tensors first, then model
  // Lines a person must see (degenerate or all-zero tensors, a source that
  // is not the one the file was made from), in the order found.
  std::vector<std::string> warnings;
  // The manifest's "provenance" object (docs/format.md section 3.3), or null.
  nlohmann::json provenance;
  // Source files whose XXH3-64 differs from the recorded one (or that are
  // gone), checked before any comparison.
  std::vector<std::string> source_files_changed;
  // require_recorded_source was set and a file changed: nothing compared.
  bool source_refused = false;
  uint64_t bound_violations = 0;  // sum over tensors; must be 0
  Verdict verdict = Verdict::IntegrityFailed;
  double seconds = 0;
  double integrity_seconds = 0, compare_seconds = 0;
};

// ------------------------------------------------------------------ options

struct VerifyProgress {
  enum Phase { Integrity, Compare } phase = Integrity;
  uint64_t done_bytes = 0, total_bytes = 0;  // of the phase
  size_t tensor_index = 0, tensor_count = 0;
  std::string tensor;  // being processed
};

struct VerifyOptions {
  // Where the metrics pass runs (qpack/kernels/device.hpp): auto is CUDA
  // device 0 when usable, else the CPU; cuda:N that device, Error(NoDevice)
  // when unusable. The report is the same on every device.
  DeviceSelection device;
  VerifyPolicy policy;
  int threads = 0;  // CPU threads; <= 0: OpenMP default
  // A source file that differs from the provenance's hash is a source
  // mismatch (no comparison, verdict SourceMismatch) instead of a warning.
  bool require_recorded_source = false;
  // Called with each warning as soon as it is known (before the comparison
  // for the provenance check), so that a tool can print it up front.
  std::function<void(const std::string&)> warn;  // may be empty
  // Source bytes uploaded per chunk on the GPU path (bounded device memory).
  uint64_t gpu_chunk_bytes = 256ull << 20;
  std::function<void(const VerifyProgress&)> progress;  // may be empty
  // GGUF files: how block-type tensors become floats on the CPU. verify and
  // the converter are siblings, so the caller (the CLI) passes the
  // converter's ggml_blocks_supported / dequantize_ggml_blocks_cpu; left
  // empty, the spec's reference decodes the five legacy types. Either way a
  // type it cannot decode is an Error(UnsupportedDtype) naming the tensor.
  std::function<bool(GgmlType)> ggml_supported;
  std::function<void(GgmlType type, const uint8_t* blocks, int64_t n, float* out, int threads,
                     const std::string& tensor)>
      ggml_dequantize;
  // GGUF files: floats decoded and compared per slice (bounds memory).
  uint64_t gguf_slice_bytes = 64ull << 20;
  // A llama.cpp importance matrix (qpack/format/imatrix.hpp, read_imatrix):
  // each quantized tensor it has an entry for also gets the
  // importance-weighted error. A safetensors file of sample inputs per
  // linear layer (docs/quantization.md section 11): each quantized [out, in]
  // tensor it names also gets the output error. Both are computed on the
  // CPU whatever `device` is, in float64 in a fixed order; .qpack files
  // only (a GGUF or a model folder with either is Error(InvalidArgument)).
  std::shared_ptr<const ImportanceMatrix> imatrix;
  std::string imatrix_path;      // for the report
  std::string activations_path;  // "" = none
};

// Runs the whole check of a .qpack or (told by its magic) a GGUF file; an
// empty `source_path` runs the self-check only
// (integrity and the stored parameters, no metrics). Integrity problems, source mismatches, bound
// violations and failed thresholds are results (in the report's verdict),
// not exceptions. Throws Error for what prevents a verdict: the .qpack or
// source cannot be read (Io), the source checkpoint is malformed, CUDA was
// requested but is unavailable (NoDevice) or fails (Cuda).
VerifyReport verify(const std::string& qpack_path, const std::string& source_path,
                    const VerifyOptions& options);

// Applies the policy to the results already in `report` (tensors and model)
// and sets gate_failures, statuses and the verdict. verify() calls it; tools
// may call it again after changing report.policy.
void apply_gate(VerifyReport& report);

// True when a CUDA device is usable by this build.
bool verify_cuda_available();

}  // namespace qpack
