// Quantize kernels for F32 sources (one translation unit per source dtype so
// the instantiations compile in parallel).
#include "quantize_dispatch.cuh"

namespace qpack::kernels {

int launch_quantize_f32(const QuantArgs& a, int bits, bool symmetric, const Launch& l) {
  return launch_quantize_dtype<DType::F32>(a, bits, symmetric, l);
}

}  // namespace qpack::kernels
