// qpack convert SRC OUTDIR --format compressed-tensors|gptq: a Hugging Face
// model folder whose Linear weights are stored in a layout transformers and
// vLLM load (docs/hf-quantized.md). The codes are qpack's own (axis -1, the
// input dimension; symmetric, or asymmetric with the Integer zero-point
// rule), quantized by a TensorQuantizer, so the CPU and the GPU give the
// same bytes, and re-laid out, never re-quantized: decompressing the folder
// gives exactly what `qpack dequantize` gives for a .qpack of the same
// scheme.
//
// Streaming: compressed-tensors by slices of rows, GPTQ (whose tensors are
// transposed) by slices of columns holding whole groups; every other tensor
// is copied in slices. Output through ModelFolderWriter (shards of at most
// max_shard_bytes, index, config.json with quantization_config, the
// source folder's other files copied; atomic).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qpack/converter/quantizer.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack {

enum class HfFormat { CompressedTensors, Gptq };
const char* hf_format_name(HfFormat f);  // "compressed-tensors", "gptq"

struct HfExportOptions {
  HfFormat format = HfFormat::CompressedTensors;
  // The defaults are llm-compressor's W4A16 preset: 4 bits, symmetric,
  // groups of 128 along the input dimension.
  int bits = 4;              // 4 or 8; 2 for compressed-tensors only (warned)
  int64_t group_size = 128;  // 32, 64 or 128; 0 = one group per row (channel)
  bool symmetric = true;     // false: the Integer zero-point rule (compressed-tensors only)
  // Scales: compressed-tensors the model's dtype (F16 or BF16; an F32 model
  // needs this set), GPTQ F16 (the only value allowed).
  std::optional<DType> scale_dtype;
  // How each group's (S, z) are chosen (quantization.md §M): rtn, or search
  // (§M5, the integer zero-point rule's clip search: asymmetric
  // compressed-tensors only).
  QuantMethod method = QuantMethod::Rtn;
  // Globs (qpack/format/glob.hpp) over tensor names: Linear weights kept as
  // they are (their modules go to `ignore`); tensors to quantize beyond the
  // default selection (each must be a Linear weight, else an error).
  std::vector<std::string> skip, include;
  NonFinitePolicy nonfinite = NonFinitePolicy::Error;
  uint64_t max_shard_bytes = 5000000000ull;  // HF's "5GB"
  uint64_t slice_bytes = 64ull << 20;        // source bytes quantized per slice
  bool overwrite = false;
  std::function<void(size_t tensors_done, size_t tensors_total, uint64_t bytes_done,
                     uint64_t bytes_total, const std::string& tensor)>
      progress;
};

// One source tensor and what the export does with it.
struct HfPlanEntry {
  std::string name;  // in the source
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  bool quantized = false;
  std::string reason;  // why quantized or kept
  struct Output {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t nbytes;
  };
  std::vector<Output> outputs;  // the folder's tensors made from it, in order
  uint64_t bytes_in = 0, bytes_out = 0;
};

struct HfExportPlan {
  HfFormat format = HfFormat::CompressedTensors;
  QuantScheme scheme;  // as quantized (axis -1, group 0 = channel)
  std::vector<HfPlanEntry> tensors;
  nlohmann::json config;               // config.json as written
  nlohmann::json quantization_config;  // its "quantization_config"
  std::vector<std::string> ignore;     // Linear modules kept (compressed-tensors' ignore)
  std::vector<std::pair<std::string, std::string>> generated_files;  // quantize_config.json
  std::string copy_files_from;                                       // the source folder
  std::vector<std::string> warnings;
  size_t tensors_quantized = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // tensor data
  // {"format", "scheme": {...}, "quantization_config", "ignore",
  //  "tensors_quantized", "bytes_in", "bytes_out", "warnings", "tensors":
  //  [{name, dtype, shape, action, reason, bytes_in, bytes_out,
  //    "outputs": [{name, dtype, shape, nbytes}]}]}
  nlohmann::json to_json() const;
};

struct HfExportSummary {
  HfExportPlan plan;
  double seconds = 0;
  std::string device;
  std::vector<std::string> shards;
  nlohmann::json to_json() const;
};

// The plan alone: reads config.json and the headers, writes nothing. Throws
// Error naming file, tensor and reason: BadMetadata (no config.json, an
// already quantized source), NothingToQuantize (no weights, no Linear
// weight), ShapeMismatch (in not a multiple of the group, out or in not a
// multiple of what the packed tensors need), UnsupportedScheme (options the
// format cannot hold: 3 bits, asymmetric GPTQ, a group size loaders lack),
// UnsupportedDtype (a selected weight that is not F16/BF16/F32, an F32 model
// without scale_dtype), InvalidArgument (a non-Linear tensor selected).
HfExportPlan plan_hf_export(const std::string& source, const HfExportOptions& options);

// Plans, then writes the folder `out_dir` (nothing under that name unless
// complete).
HfExportSummary export_hf(const std::string& source, const std::string& out_dir,
                          const HfExportOptions& options, TensorQuantizer& quantizer);

}  // namespace qpack
