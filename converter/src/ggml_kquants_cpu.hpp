// ggml's K-quants (Q2_K..Q6_K) over whole tensors on the CPU, behind the
// GgmlType overloads of qpack/converter/ggml_blocks.hpp (which check the
// type; these check the length and the source dtype).
#pragma once

#include <cstdint>
#include <string>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"

namespace qpack::detail {

void quantize_kquant_cpu(spec::ggml::GgmlBlockType type, const void* src, DType src_dtype,
                         int64_t n, uint8_t* out, int threads, const std::string& tensor);
void dequantize_kquant_cpu(spec::ggml::GgmlBlockType type, const uint8_t* blocks, int64_t n,
                           float* out, int threads, const std::string& tensor);

}  // namespace qpack::detail
