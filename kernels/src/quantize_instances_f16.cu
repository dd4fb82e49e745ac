// Quantize kernels for F16 sources (one translation unit per source dtype so
// the instantiations compile in parallel).
#include "quantize_dispatch.cuh"

namespace qpack::kernels {

int launch_quantize_f16(const QuantArgs& a, int bits, bool symmetric, const Launch& l) {
  return launch_quantize_dtype<DType::F16>(a, bits, symmetric, l);
}

}  // namespace qpack::kernels
