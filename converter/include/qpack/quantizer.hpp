// A device that quantizes whole tensors from host memory into host buffers.
// convert() streams tensors through one of these; the CPU implementation is
// quantize_cpu, the CUDA one (kernels/) stages through pinned buffers and
// streams. Both must produce identical bytes.
#pragma once

#include <memory>
#include <string>

#include "qpack/quantize.hpp"

namespace qpack {

class TensorQuantizer {
 public:
  virtual ~TensorQuantizer() = default;
  // Same contract as quantize_reference (throws Error(NonFinite/RangeOverflow)
  // with the same messages; other failures as Error(Cuda/...)).
  virtual void quantize(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                        NonFinitePolicy policy, const QuantBuffers& out) = 0;
  // "cpu (2 threads, avx2)" / "cuda:0 (NVIDIA H100 80GB HBM3)"
  virtual std::string description() const = 0;
};

std::unique_ptr<TensorQuantizer> make_cpu_quantizer(int threads);

}  // namespace qpack
