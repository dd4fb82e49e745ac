// Group quantization of one tensor, as docs/quantization.md specifies.
//
// quantize_reference / dequantize_reference are the scalar reference: one
// element at a time, written to be read next to the spec. Every fast path
// (quantize_cpu, the CUDA kernels) must produce the same bytes; the tests
// compare them bit for bit.
#pragma once

#include <cstdint>
#include <string>

#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

// Output buffers, sized by the layout: codes layout.codes_bytes(); scales and
// zeros layout.params_bytes(scale dtype); zeros null when symmetric.
struct QuantBuffers {
  uint8_t* codes = nullptr;
  uint8_t* scales = nullptr;
  uint8_t* zeros = nullptr;
};

struct QuantInput {
  const uint8_t* data = nullptr;  // little-endian F16, BF16 or F32
  DType dtype = DType::F32;
  std::string name;  // for error messages
};

// Throws Error(NonFinite) or Error(RangeOverflow) naming the tensor; on error
// the output buffers hold unspecified bytes.
void quantize_reference(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                        NonFinitePolicy policy, const QuantBuffers& out);

// x_hat for every element, in the source tensor's element order.
void dequantize_reference(const uint8_t* codes, const uint8_t* scales, const uint8_t* zeros,
                          const GroupLayout& layout, const QuantScheme& scheme, float* out);

// The fast CPU path: OpenMP threads over groups, SIMD inside. Byte-identical
// to quantize_reference for every thread count. threads <= 0: OpenMP default.
void quantize_cpu(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                  NonFinitePolicy policy, const QuantBuffers& out, int threads);
void dequantize_cpu(const uint8_t* codes, const uint8_t* scales, const uint8_t* zeros,
                    const GroupLayout& layout, const QuantScheme& scheme, float* out, int threads);

}  // namespace qpack
