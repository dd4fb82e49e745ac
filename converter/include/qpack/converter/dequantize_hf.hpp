// `qpack dequantize FOLDER OUT.safetensors` for a compressed-tensors
// pack-quantized or GPTQ model folder (docs/hf-reading.md): every quantized
// Linear unpacked by the folder reader (qpack/format/hf_quantized.hpp) into
// qpack's layout, a range of rows at a time, and decoded by qpack's own
// dequantization (docs/quantization.md section 6, the Integer zero-point rule
// for asymmetric tensors); the kept tensors copied.
#pragma once

#include <string>

#include "qpack/converter/export.hpp"

namespace qpack {

// Quantized tensors are written as options.dtype, by default their scale
// dtype (what transformers' decompression gives: (q - z) * s evaluated in
// the scale dtype, the exact product rounded once); kept tensors are copied,
// or written as options.kept_dtype. Streaming and atomic as dequantize_file.
// Throws Error: the reader's Hf* codes for a malformed folder, Io /
// OutputExists for the output, InvalidArgument for options.
DequantizeSummary dequantize_hf_folder(const std::string& folder, const std::string& out_path,
                                       const DequantizeOptions& options);

}  // namespace qpack
