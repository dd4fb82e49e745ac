// Two-level scales (docs/quantization.md §T) on the GPU: the quantization of
// a whole tensor, the same bytes as quantize_reference. Compiles with a plain
// C++ compiler (cuda_quant.hpp's forward declarations).
#pragma once

#include <cstdint>

#include "qpack/kernels/cuda_quant.hpp"

namespace qpack::cuda {

// Bytes of the scratch quantize_two_level needs: the groups' scale and
// minimum codes, one byte each, before they are packed.
inline uint64_t two_level_scratch_bytes(const GroupLayout& layout) {
  return 2 * uint64_t(layout.num_groups());
}

// Enqueues on `stream` the two-level quantization of the whole tensor at
// d_src (layout.num_elements() values of src_dtype, in the tensor's order)
// into out (codes layout.codes_bytes(), scales and zeros
// layout.params_bytes(scheme.scale_dtype) each), every byte written. All
// pointers are device pointers; d_scratch holds two_level_scratch_bytes;
// d_flags is required and must be reset (reset_flags) first. One thread per
// super-block runs the spec's text (spec/two_level.hpp); a second kernel
// packs the 6-bit codes. Non-finite inputs and range overflows are recorded
// in d_flags as quantize() records them (smallest flat index; smallest
// linear group index), and the outputs are then meaningless.
Status quantize_two_level(const void* d_src, DType src_dtype, const GroupLayout& layout,
                          const QuantScheme& scheme, NonFinitePolicy policy,
                          const DeviceQuantOutput& out, uint8_t* d_scratch, QuantFlags* d_flags,
                          cudaStream_t stream);

}  // namespace qpack::cuda
