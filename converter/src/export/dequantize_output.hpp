// Where both dequantizers (.qpack: export_safetensors.cpp, GGUF:
// dequantize_gguf.cpp) write: every tensor declared first, then each
// tensor's bytes appended in declared order, as floats rounded to its
// declared dtype or as a kept tensor's stored bytes. The output is one
// safetensors file (SafetensorsStreamWriter) or a model folder
// (ModelFolderWriter, docs/hf-folders.md); both are atomic, and both take
// their headers from format's safetensors_file_prefix.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qpack/converter/export.hpp"
#include "qpack/format/model_folder.hpp"
#include "qpack/format/safetensors.hpp"

namespace qpack::detail {

// The option checks both dequantizers share: --dtype and --kept-dtype are
// F16/BF16/F32, the output is not the input, folder options only for a
// folder. Throws Error(InvalidArgument).
void check_dequantize_options(const DequantizeOptions& opt, const std::string& in_path,
                              const std::string& out_path, const char* input_kind);

// The dtype a kept floating-point (F16/BF16/F32) tensor is written in:
// kept_dtype, or in folder mode --dtype (so the folder has one float dtype),
// or unset (copied as stored).
std::optional<DType> kept_output_dtype(const DequantizeOptions& opt);

// config.json of a dequantized folder: the source's config less
// `quantization_config`, with torch_dtype/dtype naming `dtype` when set.
// Null config in, null out.
nlohmann::json dequantized_config(nlohmann::json config, std::optional<DType> dtype);

class DequantizeOutput {
 public:
  // Opens the file or folder (Error(Io/OutputExists/DiskFull) before any
  // tensor is decoded). `config` is the folder's config.json (null: none).
  DequantizeOutput(const std::string& out_path, std::vector<TensorToWrite> declared,
                   const std::map<std::string, std::string>& metadata, nlohmann::json config,
                   const DequantizeOptions& opt);
  ~DequantizeOutput();

  // Starts declared tensor `i`: the tensors come in order, each complete.
  void begin_tensor(size_t i);
  // n floats of the current tensor, rounded to nearest even to its dtype.
  void append_floats(const float* values, int64_t n);
  // n elements of a kept tensor stored as `from`: copied when that is its
  // declared dtype, else converted (F16/BF16/F32 only).
  void append_kept(const uint8_t* data, DType from, int64_t n);
  // Bytes already in the declared dtype (the CUDA dequantize rounds on the device).
  void append_bytes(const void* data, uint64_t nbytes);
  void commit();

  // Fills the folder fields of a summary (shards, config, copies).
  void describe(DequantizeSummary* summary) const;

 private:
  void append(const void* data, uint64_t nbytes);
  std::vector<TensorToWrite> declared_;
  std::unique_ptr<SafetensorsStreamWriter> file_;
  std::unique_ptr<ModelFolderWriter> folder_;
  int threads_ = 1;
  size_t current_ = SIZE_MAX;
  uint64_t offset_ = 0;  // bytes of the current tensor appended
  bool config_written_ = false;
  std::vector<uint8_t> converted_;
};

}  // namespace qpack::detail
