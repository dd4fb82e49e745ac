// qpack convert: checkpoint in, one .qpack out, streamed tensor by tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/converter/recipe.hpp"
#include "qpack/format/container.hpp"

namespace qpack {

struct PlanEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  TensorAction action = TensorAction::Keep;
  QuantScheme scheme;  // resolved (group size and axis as stored)
  std::string reason;
  uint64_t bytes_in = 0;   // source bytes
  uint64_t bytes_out = 0;  // codes + scales + zeros, or the raw bytes
};

struct ConvertProgress {
  size_t tensors_done = 0, tensors_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // source bytes
  std::string current;                       // tensor being processed
};

struct ConvertOptions {
  Recipe recipe;
  NonFinitePolicy nonfinite = NonFinitePolicy::Error;
  Codec codec = Codec::None;
  int zstd_level = 3;
  bool overwrite = false;
  std::function<void(const ConvertProgress&)> progress;  // called from the converting thread
};

struct ConvertSummary {
  size_t tensors_quantized = 0, tensors_kept = 0;
  uint64_t bytes_in = 0;   // source tensor bytes
  uint64_t bytes_out = 0;  // size of the .qpack file
  uint64_t bytes_quantized_in = 0, bytes_quantized_out = 0;
  double seconds = 0;
  std::string device;
  std::vector<PlanEntry> plan;
  nlohmann::json to_json() const;
};

// What convert would do, without writing anything.
std::vector<PlanEntry> make_plan(const std::string& source, const Recipe& recipe);

// convert --dry-run --json: {"dry_run": true, tensors_quantized, tensors_kept,
// bytes_in, bytes_quantized_in, bytes_quantized_out, ratio (bytes_in over the
// sections' bytes: there is no file yet), "tensors": [...]}; each tensor as
// in ConvertSummary::to_json.
nlohmann::json plan_to_json(const std::vector<PlanEntry>& plan);

// Converts `source` (a .safetensors file, an index, or a folder) into `output`.
// The output appears only when complete (temporary file + rename); the
// source is never written. Throws Error naming file, tensor and reason.
ConvertSummary convert_checkpoint(const std::string& source, const std::string& output,
                                  const ConvertOptions& options, TensorQuantizer& quantizer);

}  // namespace qpack
