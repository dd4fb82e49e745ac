// Built instead of the CUDA sources when QPACK_ENABLE_CUDA=OFF: the same API,
// reporting that no device is available, so callers need no #ifdefs.
#include <string>

#include "qpack/format/error.hpp"
#include "qpack/kernels/compare.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/kernels/two_level.hpp"

namespace qpack {
namespace cuda {
namespace {

constexpr const char* kDisabled = "qpack was built without CUDA (QPACK_ENABLE_CUDA=OFF)";

Status disabled() {
  Status s;
  s.code = StatusCode::NoDevice;
  s.message = kDisabled;
  return s;
}

}  // namespace

bool cuda_available(std::string* why) {
  if (why) *why = kDisabled;
  return false;
}
int device_count() { return 0; }
Status query_device(int, DeviceInfo*) { return disabled(); }

Status reset_flags(QuantFlags*, cudaStream_t) { return disabled(); }
Status quantize(const void*, DType, const GroupLayout&, const QuantScheme&, NonFinitePolicy,
                const DeviceQuantOutput&, QuantFlags*, cudaStream_t, const Tile&) {
  return disabled();
}
Status quantize_two_level(const void*, DType, const GroupLayout&, const QuantScheme&,
                          NonFinitePolicy, const DeviceQuantOutput&, uint8_t*, QuantFlags*,
                          cudaStream_t) {
  return disabled();
}
Status dequantize(const uint8_t*, const uint8_t*, const uint8_t*, const GroupLayout&,
                  const QuantScheme&, void*, DType, cudaStream_t, const Tile&) {
  return disabled();
}
Status quantize_ggml_blocks(spec::ggml::GgmlLegacyType, const void*, DType, int64_t, uint8_t*,
                            cudaStream_t, QuantMethod) {
  return disabled();
}
Status dequantize_ggml_blocks(spec::ggml::GgmlLegacyType, const uint8_t*, int64_t, float*,
                              cudaStream_t) {
  return disabled();
}
Status quantize_ggml_blocks(spec::ggml::GgmlBlockType, const void*, DType, int64_t, uint8_t*,
                            cudaStream_t, QuantMethod) {
  return disabled();
}
Status dequantize_ggml_blocks(spec::ggml::GgmlBlockType, const uint8_t*, int64_t, float*,
                              cudaStream_t) {
  return disabled();
}

Status compare_blocks(const spec::CompareGeometry&, const spec::ChunkView&, int64_t, int64_t,
                      spec::PartialSums*, cudaStream_t) {
  return disabled();
}

DeviceBuffer::~DeviceBuffer() = default;
Status DeviceBuffer::allocate(size_t bytes) { return bytes == 0 ? Status{} : disabled(); }
void DeviceBuffer::reset() {
  ptr_ = nullptr;
  size_ = 0;
}

PinnedBuffer::~PinnedBuffer() = default;
Status PinnedBuffer::allocate(size_t bytes) { return bytes == 0 ? Status{} : disabled(); }
void PinnedBuffer::reset() {
  ptr_ = nullptr;
  size_ = 0;
}

Stream::~Stream() = default;
Status Stream::create() { return disabled(); }
void Stream::reset() { stream_ = nullptr; }

Event::~Event() = default;
Status Event::create() { return disabled(); }
void Event::reset() { event_ = nullptr; }
Status Event::record(cudaStream_t) { return disabled(); }
Status elapsed_ms(const Event&, const Event&, float*) { return disabled(); }

Status set_device(int) { return disabled(); }
Status copy_to_device(void*, const void*, size_t, cudaStream_t) { return disabled(); }
Status copy_2d_to_device(void*, size_t, const void*, size_t, size_t, size_t, cudaStream_t) {
  return disabled();
}
Status copy_to_host(void*, const void*, size_t, cudaStream_t) { return disabled(); }
Status fill_device(void*, int, size_t, cudaStream_t) { return disabled(); }
Status synchronize(cudaStream_t) { return disabled(); }

void dequantize_on_device(int, const uint8_t*, const uint8_t*, const uint8_t*, const GroupLayout&,
                          const QuantScheme&, void*, DType) {
  throw Error(ErrorCode::NoDevice, "", "", kDisabled);
}

}  // namespace cuda

}  // namespace qpack
