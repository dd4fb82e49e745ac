// GGUF block decoding by type number on a CUDA device (qpack/kernels/
// ggml_blocks.hpp): plain C++ over the kernels' host API, so it builds with
// and without CUDA (the stubs then report NoDevice at construction).
#include "qpack/format/error.hpp"
#include "qpack/kernels/ggml_blocks.hpp"

namespace qpack::cuda {

bool cuda_block_type_supported(uint32_t gguf_type) {
  switch (gguf_type) {
    case uint32_t(spec::ggml::GgmlLegacyType::Q4_0):
    case uint32_t(spec::ggml::GgmlLegacyType::Q4_1):
    case uint32_t(spec::ggml::GgmlLegacyType::Q5_0):
    case uint32_t(spec::ggml::GgmlLegacyType::Q5_1):
    case uint32_t(spec::ggml::GgmlLegacyType::Q8_0):
    case uint32_t(spec::ggml::GgmlBlockType::Q2_K):
    case uint32_t(spec::ggml::GgmlBlockType::Q3_K):
    case uint32_t(spec::ggml::GgmlBlockType::Q4_K):
    case uint32_t(spec::ggml::GgmlBlockType::Q5_K):
    case uint32_t(spec::ggml::GgmlBlockType::Q6_K):
      return true;
    default:
      return false;
  }
}

GgmlBlocksDeviceDecoder::GgmlBlocksDeviceDecoder(int device) : device_(device) {
  throw_if_failed(set_device(device));
  throw_if_failed(stream_.create());
}

void GgmlBlocksDeviceDecoder::dequantize(uint32_t gguf_type, const uint8_t* blocks, uint64_t nbytes,
                                         int64_t n, float* out, const std::string& tensor) {
  if (!cuda_block_type_supported(gguf_type))
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                "no CUDA kernel decodes GGUF type " + std::to_string(gguf_type));
  if (n <= 0) return;
  const size_t out_bytes = size_t(n) * sizeof(float);
  throw_if_failed(set_device(device_), tensor);
  if (d_blocks_.size() < nbytes) throw_if_failed(d_blocks_.allocate(size_t(nbytes)), tensor);
  if (d_out_.size() < out_bytes) throw_if_failed(d_out_.allocate(out_bytes), tensor);
  throw_if_failed(copy_to_device(d_blocks_.data(), blocks, size_t(nbytes), stream_.get()), tensor);
  throw_if_failed(
      dequantize_ggml_blocks(spec::ggml::GgmlBlockType(gguf_type), d_blocks_.as<uint8_t>(), n,
                             d_out_.as<float>(), stream_.get()),
      tensor);
  throw_if_failed(copy_to_host(out, d_out_.data(), out_bytes, stream_.get()), tensor);
  throw_if_failed(synchronize(stream_.get()), tensor);
}

}  // namespace qpack::cuda
