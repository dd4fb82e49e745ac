// The K-quant kernels' launchers (ggml_kquants.cu), called by the checked
// entry points in ggml_blocks.cu once the arguments are known to be valid:
// a K-quant type, nblocks > 0 super-blocks, non-null device pointers.
#pragma once

#include <cstdint>

#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"

namespace qpack::cuda {

Status launch_quantize_kquants(spec::ggml::GgmlBlockType type, const void* d_src, DType src_dtype,
                               int64_t nblocks, uint8_t* d_blocks, cudaStream_t stream);
Status launch_dequantize_kquants(spec::ggml::GgmlBlockType type, const uint8_t* d_blocks,
                                 int64_t nblocks, float* d_out, cudaStream_t stream);

}  // namespace qpack::cuda
