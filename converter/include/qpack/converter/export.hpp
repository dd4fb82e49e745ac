// `qpack dequantize`: writes the checkpoint a .qpack reconstructs, as one
// safetensors file. Quantized tensors are dequantized (docs/quantization.md
// §6) and rounded to the output dtype; raw tensors are copied byte for byte;
// the source's safetensors metadata is carried over. Streaming (bounded
// memory: a slice of one tensor at a time) and atomic (the output appears
// only when complete).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "qpack/kernels/device.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

struct DequantizeOptions {
  // Output dtype of quantized tensors (F16, BF16 or F32, rounded to nearest
  // even); unset: each tensor's source dtype. Raw tensors keep theirs.
  std::optional<DType> dtype;
  // Cpu: dequantize_cpu. Cuda (cuda:N): the kernels' dequantize on that
  // device (bit-identical), Error(NoDevice) when unusable. Auto (the
  // default): CUDA device 0 when usable, else the CPU.
  DeviceSelection device;
  int threads = 0;         // <= 0: OpenMP default
  bool overwrite = false;  // replace an existing output file
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
  uint64_t output_bytes = 0;  // tensor data written
};

// Throws Error: Io/OutputExists for the files, ChecksumMismatch (and the
// other integrity codes) for a damaged .qpack, InvalidArgument for options.
DequantizeSummary dequantize_file(const std::string& qpack_path, const std::string& out_path,
                                  const DequantizeOptions& options);

}  // namespace qpack
