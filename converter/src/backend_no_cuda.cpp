// Built instead of backend_cuda.cpp when QPACK_ENABLE_CUDA=OFF: the factory
// reports that no device is available, so callers need no #ifdefs.
#include <string>

#include "qpack/converter/backend_cuda.hpp"
#include "qpack/format/error.hpp"
#include "qpack/kernels/cuda_quant.hpp"

namespace qpack {

std::unique_ptr<TensorQuantizer> make_cuda_quantizer(int device, const cuda::QuantizerOptions&) {
  std::string why;
  cuda::cuda_available(&why);
  throw Error(ErrorCode::NoDevice, "", "",
              "cannot use CUDA device " + std::to_string(device) + ": " + why);
}

std::unique_ptr<TensorQuantizer> make_cuda_quantizer(int device) {
  return make_cuda_quantizer(device, cuda::QuantizerOptions{});
}

}  // namespace qpack
