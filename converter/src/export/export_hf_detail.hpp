// What export_hf.cpp (the plan and the folder) hands the per-format writers
// of one quantized Linear weight (export_compressed_tensors.cpp,
// export_gptq.cpp). The writers see the folder only through `write`, so
// they can be driven by any sink of positional writes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "qpack/converter/quantizer.hpp"
#include "qpack/spec/layout.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack::hf_export {

struct LinearJob {
  std::string name;               // the source tensor, for errors
  const uint8_t* data = nullptr;  // [out, in] row-major in `dtype`
  DType dtype = DType::F16;
  int64_t out = 0, in = 0;
  QuantScheme scheme;  // axis -1; group 0 = one group per row
  NonFinitePolicy nonfinite = NonFinitePolicy::Error;
  uint64_t slice_bytes = 64ull << 20;
  size_t first_output = 0;  // folder index of the entry's first output tensor
  TensorQuantizer* quantizer = nullptr;
  // write(folder tensor, byte offset, data, bytes)
  std::function<void(size_t, uint64_t, const void*, uint64_t)> write;
  std::function<void(uint64_t source_bytes)> done;  // after each slice
};

// Quantizes one block of the weight, rows [r0, r0 + L.outer) by columns
// [k0, k0 + L.axis_len), held contiguously at `src`: the quantizer's errors
// count indices within the block, so they get the block's place appended.
void quantize_block(const LinearJob& job, const uint8_t* src, const GroupLayout& L, int64_t r0,
                    int64_t k0, const QuantBuffers& out);

// Outputs in order: weight_packed, weight_scale, [weight_zero_point], weight_shape.
void write_compressed_tensors_linear(const LinearJob& job);
// Outputs in order: qweight, qzeros, scales, g_idx.
void write_gptq_linear(const LinearJob& job);

}  // namespace qpack::hf_export
