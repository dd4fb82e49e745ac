// Host interface of the CUDA path (metrics_cuda_host.cpp), kept free of CUDA
// and JSON headers so that plain C++ files can call it. Only compiled in when
// QPACK_VERIFY_CUDA is defined.
#pragma once

#include <cstdint>
#include <string>

#include "qpack/spec/error_sums.hpp"

namespace qpack::vcuda {

struct DeviceState;

// True when CUDA device `device` is usable; *description names it
// ("cuda:0 (NVIDIA ...)").
bool available(int device, std::string* description);
// Throws Error(NoDevice) when the device is not usable, Error(Cuda) on
// failures. Every call on the state makes its device current first.
DeviceState* create(int device, uint64_t chunk_bytes);
void destroy(DeviceState* s) noexcept;
std::string description(const DeviceState* s);

// Host buffers in `view` (whole tensors: row0 = plane0 = srow0 = c0 = 0,
// pitch = inner): staged in chunks of whole blocks; out_blocks[g.blocks].
void compute_host(DeviceState* s, const spec::CompareGeometry& g, const spec::ChunkView& view,
                  spec::PartialSums* out_blocks, const std::string& tensor);
// Device buffers in `view` (whole tensors): one launch over every block.
void compute_device(DeviceState* s, const spec::CompareGeometry& g, const spec::ChunkView& view,
                    spec::PartialSums* out_blocks, float* kernel_ms, const std::string& tensor);

}  // namespace qpack::vcuda
