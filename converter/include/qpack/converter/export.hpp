// `qpack dequantize`: writes the checkpoint a .qpack reconstructs, as one
// safetensors file or as a Hugging Face model folder (docs/hf-folders.md). Quantized tensors are
// dequantized (docs/quantization.md §6) and rounded to the output dtype; raw tensors are copied
// byte for byte; the source's safetensors metadata is carried over, less the index's total_size (it
// describes the source's shards, not this file). Streaming (bounded memory: a slice of one tensor
// at a time) and atomic (the output appears only when complete).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qpack/kernels/device.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

struct DequantizeOptions {
  // Output dtype of the dequantized (quantized) tensors: F16, BF16 or F32,
  // rounded to nearest even; unset: each tensor's source dtype.
  std::optional<DType> dtype;
  // Output dtype of the kept (raw) floating-point tensors, F16/BF16/F32 ones
  // (rounded to nearest even); unset: copied byte for byte. Kept tensors of
  // other dtypes (integers, bool, F64, F8) are always copied as they are.
  std::optional<DType> kept_dtype;
  // Cpu: dequantize_cpu. Cuda (cuda:N): the kernels' dequantize on that
  // device (bit-identical), Error(NoDevice) when unusable. Auto (the
  // default): CUDA device 0 when usable, else the CPU.
  DeviceSelection device;
  int threads = 0;         // <= 0: OpenMP default
  bool overwrite = false;  // replace an existing output file
  // GGUF input only: tensors of a type this build cannot decode (IQ*, TQ*,
  // ...) are left out of the output, each named in
  // DequantizeSummary::skipped, instead of failing the run.
  bool skip_unsupported = false;
  // Write a model folder at the output path (docs/hf-folders.md): sharded
  // safetensors with an index, config.json (the .qpack's stored config less
  // quantization_config, torch_dtype/dtype set to `dtype`), the other files
  // of copy_files_from. In a folder `dtype` applies to the kept F16/BF16/F32
  // tensors too unless kept_dtype is set, so the folder has one float dtype.
  bool folder = false;
  uint64_t max_shard_bytes = 5000000000ull;  // folder: HF's "5GB"
  std::string copy_files_from;               // folder: "" copies nothing
  // Bytes of float32 values dequantized per slice (bounds memory).
  uint64_t slice_bytes = 64ull << 20;
  // Called before each tensor and once at the end (index == count).
  std::function<void(size_t index, size_t count, uint64_t done_bytes, uint64_t total_bytes,
                     const std::string& tensor)>
      progress;
};

struct DequantizeSummary {
  std::string device;  // "cpu (N threads)" or the CUDA device
  size_t tensors = 0, quantized = 0;
  size_t kept_converted = 0;  // kept tensors written in kept_dtype
  // Kept floating-point tensors written in a dtype other than the
  // dequantized tensors' (options.dtype set, kept_dtype not): the file
  // mixes dtypes, which the CLI says.
  size_t kept_other_dtype = 0;
  uint64_t output_bytes = 0;  // tensor data written
  // GGUF input: tensors left out (skip_unsupported), as "name (TYPE)".
  std::vector<std::string> skipped;
  // GGUF input on CUDA: tensors decoded on the CPU because no kernel
  // decodes their type (cuda_block_type_supported), as "name (TYPE)".
  std::vector<std::string> decoded_on_cpu;
  // Folder input: "compressed-tensors" or "gptq".
  std::string source_format;
  // Folder output: the shard file names, whether config.json was written
  // (false: the input stores no config), the files copied from
  // copy_files_from and its entries not copied (subfolders, ...).
  std::vector<std::string> shards;
  bool config_written = false;
  std::vector<std::string> files_copied, files_skipped;
};

// Throws Error: Io/OutputExists for the files, ChecksumMismatch (and the
// other integrity codes) for a damaged .qpack, InvalidArgument for options.
DequantizeSummary dequantize_file(const std::string& qpack_path, const std::string& out_path,
                                  const DequantizeOptions& options);

// `qpack dequantize X.gguf`: every tensor of a GGUF file as safetensors
// (docs/gguf.md, "qpack dequantize"). Block-type tensors are decoded by
// ggml's rules (dequantize_ggml_blocks_cpu, or the kernels for the types
// cuda_block_type_supported names; the same floats) and written as
// options.dtype (default F32, F16/BF16 rounded to nearest even); F32, F16
// and BF16 tensors are copied, or written as options.kept_dtype; integer and
// F64 tensors are copied. The shape is ne reversed ([ne1, ne0]). Scalar
// metadata becomes `__metadata__` strings; arrays are left out and named in
// `qpack.gguf_arrays_omitted`; `qpack.source_format` is "gguf". Streaming and
// atomic as dequantize_file. Throws Error: Gguf* for a malformed file,
// UnsupportedDtype naming the tensor and its type for a type this build
// cannot decode (unless skip_unsupported), Io/OutputExists for the output.
DequantizeSummary dequantize_gguf_file(const std::string& gguf_path, const std::string& out_path,
                                       const DequantizeOptions& options);

}  // namespace qpack
