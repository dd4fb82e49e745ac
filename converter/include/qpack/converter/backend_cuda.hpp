// The converter's CUDA backend: a TensorQuantizer that streams host tensors
// through the kernels of qpack::kernels (converter/src/backend_cuda.cpp).
// Available in every build; without CUDA the factory reports Error(NoDevice).
#pragma once

#include <cstddef>
#include <memory>

#include "qpack/converter/quantizer.hpp"

namespace qpack {
namespace cuda {

struct QuantizerOptions {
  // Bytes of source tensor per chunk: a tensor is cut into chunks of whole
  // groups (group rows, and inner columns when one group row is larger), each
  // copied, quantized and copied back while the next is in flight. Tests set
  // it tiny to force many chunks. The staging buffers grow past it only when
  // a single group column needs more. Each tensor fills and drains the
  // pipeline once, so chunks are small next to typical tensors (~100 MB).
  size_t chunk_bytes = size_t(32) << 20;  // the best of 2/8/32 MiB measured (docs/performance.md)
  int streams = 3;                        // >= 2: chunks n-1, n and n+1 are in flight at once
  int host_threads = 0;  // threads for the host-side copies; 0: one per core, at most 16
};

}  // namespace cuda

// A TensorQuantizer on CUDA device `device`. Throws Error(NoDevice) with the
// reason when the device does not exist or CUDA is unavailable (or disabled
// at build time). Output is byte-identical to quantize_reference/quantize_cpu,
// errors carry the same codes and messages.
std::unique_ptr<TensorQuantizer> make_cuda_quantizer(int device);
std::unique_ptr<TensorQuantizer> make_cuda_quantizer(int device,
                                                     const cuda::QuantizerOptions& options);

}  // namespace qpack
