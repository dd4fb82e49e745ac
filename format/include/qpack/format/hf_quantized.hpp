// A reader of the Hugging Face model folders that hold pre-quantized
// weights: compressed-tensors "pack-quantized" (llm-compressor, vLLM,
// transformers) and GPTQ (AutoGPTQ/GPTQModel, v1 and v2). It is written from
// the formats' documentation (docs/hf-reading.md), independently of any
// qpack writer of them.
//
// open() reads config.json's quantization_config (or quantize_config.json),
// checks every setting and every quantized Linear's companion tensors (names,
// dtypes, shapes, zero-points, g_idx) and refuses anything else with an
// Error naming the file, the tensor and the reason. Each quantized Linear is
// then described as a qpack scheme (axis = last, the group size, symmetric
// or an Integer zero-point) and its rows can be unpacked into qpack's own
// layout (docs/quantization.md section 8): codes, scales and zero-points in
// the scale dtype, so that the existing decode, metrics and kernels apply.
// Memory stays bounded: the shards are mapped, and rows are unpacked a range
// at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qpack/format/checkpoint.hpp"
#include "qpack/spec/layout.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack {

enum class HfQuantFormat { CompressedTensors, Gptq };

// Whether this build's decode (spec, CPU, CUDA, verifier) implements
// ZeroPoint::Integer, x_hat = (q - z) * S. Until it does, asymmetric
// tensors of these folders are read and listed but not decoded: dequantize
// and verify refuse them with HfUnsupported ("not yet").
inline constexpr bool kIntegerZeroPointDecoded = true;

// Throws HfUnsupported naming the tensor when its scheme cannot be decoded
// by this build (an asymmetric tensor before kIntegerZeroPointDecoded).
struct HfQuantTensor;
void require_decodable(const HfQuantTensor& t, const std::string& file);

// "compressed-tensors" or "gptq" (the report's file.format).
const char* hf_quant_format_name(HfQuantFormat f);

// One quantized Linear, as the dequantized checkpoint names it: "P.weight"
// of shape [out, in].
struct HfQuantTensor {
  std::string name;    // "P.weight"
  std::string module;  // "P"
  std::vector<int64_t> shape;
  QuantScheme scheme;  // resolved: axis 1, group size in elements (in for a channel strategy)
  GroupLayout layout;  // of `shape` under `scheme`
  // The stored tensors, in the format's order (weight_packed, weight_scale,
  // weight_zero_point, weight_shape / qweight, qzeros, scales, g_idx).
  std::vector<const CheckpointTensor*> stored;
  uint64_t stored_bytes = 0;  // their bytes
  // Internal: the tensors unpack_rows reads.
  const CheckpointTensor* codes = nullptr;   // weight_packed / qweight
  const CheckpointTensor* scales = nullptr;  // weight_scale / scales
  const CheckpointTensor* zeros = nullptr;   // weight_zero_point / qzeros; null when none
  // GPTQ: qzeros hold z - 1 (v1), or z (v2).
  int zero_offset = 0;
  // Symmetric GPTQ codes q in 0..2^b-1 are qpack's symmetric codes unchanged.
};

// A logical tensor of the folder, in the checkpoint's order: a quantized
// Linear (listed where its codes tensor is) or a kept tensor.
struct HfEntry {
  bool quantized = false;
  size_t index = 0;  // into quantized() or kept()
};

class HfQuantizedModel {
 public:
  // True when `path` is a folder (or a file in one) whose config.json has a
  // "quantization_config" object, or that holds quantize_config.json: such
  // a folder is read by open(), never as a plain checkpoint (open() refuses
  // the methods it does not read, by name).
  static bool detect(const std::string& path) { return !quant_method_of(path).empty(); }
  // The folder's quant_method ("compressed-tensors", "gptq", "awq", ...;
  // "gptq" for a quantize_config.json without one, "?" for a config without
  // a readable one), or "" when it has no quantization config. inspect reads
  // folders of the methods qpack reads with open(), and lists the others as
  // plain checkpoints.
  static std::string quant_method_of(const std::string& path);
  static bool reads_method(const std::string& method) {
    return method == "compressed-tensors" || method == "gptq";
  }

  // Opens and validates; throws Error (HfBadConfig, HfUnsupported,
  // HfBadTensor, HfBadValue, and the checkpoint's own codes).
  static std::unique_ptr<HfQuantizedModel> open(const std::string& path);

  HfQuantFormat format() const { return format_; }
  const char* format_name() const { return hf_quant_format_name(format_); }
  // The quantization config as read (config.json's quantization_config, or
  // quantize_config.json), and the file it came from.
  const nlohmann::json& quant_config() const { return quant_config_; }
  const std::string& config_file() const { return config_file_; }
  // "gptq" / "gptq_v2" for GPTQ, "pack-quantized" for compressed-tensors.
  const std::string& layout_name() const { return layout_name_; }
  const Checkpoint& checkpoint() const { return *ck_; }
  const std::string& path() const { return path_; }

  const std::vector<HfQuantTensor>& quantized() const { return quantized_; }
  const std::vector<const CheckpointTensor*>& kept() const { return kept_; }
  const std::vector<HfEntry>& entries() const { return entries_; }
  const HfQuantTensor* find_quantized(const std::string& name) const;

  // Rows [row0, row0 + rows) of `t` in qpack's layout: `codes` receives
  // rows * P * B bytes ([rows][P][B]), `scales` rows * P values of the scale
  // dtype, `zeros` (asymmetric only; may be null otherwise) rows * P values
  // of the scale dtype holding the integer zero-point z (exact). Thread-safe.
  void unpack_rows(const HfQuantTensor& t, int64_t row0, int64_t rows, uint8_t* codes,
                   uint8_t* scales, uint8_t* zeros) const;
  // Releases the mapped pages of `t`'s stored tensors.
  void release(const HfQuantTensor& t) const;

 private:
  std::string path_, config_file_, layout_name_;
  HfQuantFormat format_ = HfQuantFormat::CompressedTensors;
  nlohmann::json quant_config_;
  std::unique_ptr<Checkpoint> ck_;
  std::vector<HfQuantTensor> quantized_;
  std::vector<const CheckpointTensor*> kept_;
  std::vector<HfEntry> entries_;

  friend struct HfReaderAccess;
};

}  // namespace qpack
