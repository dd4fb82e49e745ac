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
  // A plan that quantizes no tensor (an empty checkpoint, everything kept) is
  // Error(NothingToQuantize) before anything is written, instead of a warning.
  bool require_quantized = false;
  // A shard set (docs/format.md section 11) instead of one file: shards of at
  // most this many tensor bytes (planned section bytes) each, named
  // BASE-00001-of-0000N.qpack beside OUTPUT, and BASE.qpack.index.json. 0, or
  // a plan that fits in one shard: OUTPUT as one file.
  uint64_t max_shard_bytes = 0;
  // Conversion in parts: part_count > 0 converts only part part_index
  // (0-based) of the plan's balanced_partition into part_count, as the
  // shard file qpack_shard_path(OUTPUT, part_index, part_count); qpack merge
  // puts the parts together.
  size_t part_index = 0, part_count = 0;
  std::function<void(const ConvertProgress&)> progress;  // called from the converting thread
};

// What convert will do to each tensor and what it will write, computed before
// any tensor is read.
struct ConvertPlan {
  std::vector<PlanEntry> tensors;  // in the order they are written
  // Things a person should look at, none fatal: no tensor quantized, a rule
  // that matches nothing, tensors kept because the default axis is not theirs.
  std::vector<std::string> warnings;
  size_t tensors_quantized = 0, tensors_kept = 0;
  uint64_t bytes_in = 0;                                     // source tensor bytes
  uint64_t bytes_quantized_in = 0, bytes_quantized_out = 0;  // quantized tensors: source, sections
  // The size of the .qpack file convert writes (planned_qpack_file_size):
  // exact without zstd; with zstd its upper bound (bytes_out_is_upper_bound).
  uint64_t bytes_out = 0;
  bool bytes_out_is_upper_bound = false;
  double ratio() const;  // compression_ratio(bytes_in, bytes_out), 0 when undefined
  // convert --dry-run --json: {"dry_run": true, tensors_quantized,
  // tensors_kept, bytes_in, bytes_out, bytes_out_is_upper_bound,
  // bytes_quantized_in, bytes_quantized_out, ratio, warnings, "tensors": [...]};
  // each tensor as in ConvertSummary::to_json.
  nlohmann::json to_json() const;
};

// Where a conversion's wall time went (convert --profile; docs/cli.md). The
// converting thread's own steps are sequential and sum, with what is not
// listed, to `seconds`; the writer's steps run on a writer thread beside
// it (the checksum of a large section beside its write), so they overlap
// the others: a writer-bound run shows its time in write_wait.
struct ConvertStages {
  double open = 0;           // the checkpoint's headers, the plan, the output checks
  double hash_source = 0;    // the provenance's source file checksums
  double submit = 0;         // handing tensors to the quantizer (the CPU quantizes here)
  double quantize_wait = 0;  // waiting for a tensor's codes (the GPU quantizes here)
  double write_wait = 0;     // waiting for the writer to take the next tensor
  double commit = 0;         // manifest, header, fsync, rename (the writer's own)
  // On the writer thread:
  double write = 0, checksum = 0, compress = 0;
  nlohmann::json to_json() const;
};

struct ConvertSummary {
  size_t tensors_quantized = 0, tensors_kept = 0;
  uint64_t bytes_in = 0;   // source tensor bytes
  uint64_t bytes_out = 0;  // size of the .qpack file
  uint64_t bytes_quantized_in = 0, bytes_quantized_out = 0;
  double seconds = 0;
  ConvertStages stages;
  std::string device;
  std::vector<PlanEntry> plan;
  std::vector<std::string> warnings;  // the plan's
  // The files written: OUTPUT; or the shards and then the index; or the part.
  std::vector<std::string> files;
  double ratio() const;  // compression_ratio(bytes_in, bytes_out), 0 when undefined
  nlohmann::json to_json() const;
};

// What convert would do with `options`, without writing anything. Throws
// Error(InvalidArgument) for a group axis no selected tensor has (naming
// them) or that a rule's tensor lacks, Error(NothingToQuantize) under
// options.require_quantized.
ConvertPlan make_plan(const std::string& source, const ConvertOptions& options);

// Converts `source` (a .safetensors file, an index, or a folder) into `output`.
// The output appears only when complete (temporary file + rename); the
// source is never written. Throws Error naming file, tensor and reason.
ConvertSummary convert_checkpoint(const std::string& source, const std::string& output,
                                  const ConvertOptions& options, TensorQuantizer& quantizer);

}  // namespace qpack
