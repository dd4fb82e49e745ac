// GGUF block decoding by type number on a CUDA device (qpack/kernels/
// ggml_blocks.hpp): plain C++ over the kernels' host API, so it builds with
// and without CUDA (the stubs then report NoDevice at construction).
#include <algorithm>
#include <cstring>

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

namespace {

// Elements per block of a supported type, and the bytes of n of its elements.
int64_t block_elements(uint32_t gguf_type) {
  return spec::ggml::block_elements(spec::ggml::GgmlBlockType(gguf_type));
}
size_t blocks_bytes(uint32_t gguf_type, int64_t n) {
  return size_t(n / block_elements(gguf_type)) *
         size_t(spec::ggml::block_bytes(spec::ggml::GgmlBlockType(gguf_type)));
}

}  // namespace

GgmlBlocksDeviceEncoder::GgmlBlocksDeviceEncoder(int device, size_t chunk_bytes, int streams)
    : device_(device) {
  throw_if_failed(set_device(device));
  // Whole super-blocks of F32 (the widest source) per chunk: every type's
  // blocks divide 256 elements.
  const int64_t sb = spec::ggml::kSuperBlockElements;
  chunk_elements_ = std::max<int64_t>(sb, int64_t(chunk_bytes / sizeof(float)) / sb * sb);
  lanes_.resize(size_t(std::max(streams, 1)));
  for (Lane& l : lanes_) throw_if_failed(l.stream.create());
}

void GgmlBlocksDeviceEncoder::drain(Lane& lane, const std::string& tensor) {
  if (!lane.out) return;
  throw_if_failed(synchronize(lane.stream.get()), tensor);
  std::memcpy(lane.out, lane.h_blocks.data(), lane.out_bytes);
  lane.out = nullptr;
}

void GgmlBlocksDeviceEncoder::quantize(uint32_t gguf_type, const void* src, DType src_dtype,
                                       int64_t n, uint8_t* out, const std::string& tensor,
                                       QuantMethod method) {
  if (!cuda_block_type_supported(gguf_type))
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                "no CUDA kernel writes GGUF type " + std::to_string(gguf_type));
  if (method != QuantMethod::Rtn && gguf_type != uint32_t(spec::ggml::GgmlLegacyType::Q4_1) &&
      gguf_type != uint32_t(spec::ggml::GgmlLegacyType::Q5_1))
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                "--method search and refit choose Q4_1 and Q5_1 blocks only, not GGUF type " +
                    std::to_string(gguf_type) + " (docs/quantization.md §G9)");
  if (src_dtype != DType::F16 && src_dtype != DType::BF16 && src_dtype != DType::F32)
    throw Error(
        ErrorCode::InvalidArgument, "", tensor,
        std::string("GGUF blocks are made from F16, BF16 or F32, not ") + dtype_name(src_dtype));
  const int64_t be = block_elements(gguf_type);
  if (n < 0 || n % be != 0)
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                std::to_string(n) + " elements are no whole number of " + std::to_string(be) +
                    "-element blocks");
  if (n == 0) return;
  throw_if_failed(set_device(device_), tensor);
  const size_t esize = size_t(dtype_bits(src_dtype) / 8);
  const size_t src_cap = size_t(chunk_elements_) * esize;
  const size_t blk_cap = blocks_bytes(gguf_type, chunk_elements_);
  size_t next = 0;
  try {
    for (int64_t e0 = 0; e0 < n; e0 += chunk_elements_, ++next) {
      Lane& l = lanes_[next % lanes_.size()];
      drain(l, tensor);  // its previous chunk, if any, leaves first
      const int64_t m = std::min(chunk_elements_, n - e0);
      const size_t sbytes = size_t(m) * esize;
      const size_t bbytes = blocks_bytes(gguf_type, m);
      if (l.h_src.size() < src_cap) throw_if_failed(l.h_src.allocate(src_cap), tensor);
      if (l.d_src.size() < src_cap) throw_if_failed(l.d_src.allocate(src_cap), tensor);
      if (l.h_blocks.size() < blk_cap) throw_if_failed(l.h_blocks.allocate(blk_cap), tensor);
      if (l.d_blocks.size() < blk_cap) throw_if_failed(l.d_blocks.allocate(blk_cap), tensor);
      std::memcpy(l.h_src.data(), static_cast<const uint8_t*>(src) + size_t(e0) * esize, sbytes);
      throw_if_failed(copy_to_device(l.d_src.data(), l.h_src.data(), sbytes, l.stream.get()),
                      tensor);
      throw_if_failed(
          quantize_ggml_blocks(spec::ggml::GgmlBlockType(gguf_type), l.d_src.data(), src_dtype, m,
                               l.d_blocks.as<uint8_t>(), l.stream.get(), method),
          tensor);
      throw_if_failed(copy_to_host(l.h_blocks.data(), l.d_blocks.data(), bbytes, l.stream.get()),
                      tensor);
      l.out = out + blocks_bytes(gguf_type, e0);
      l.out_bytes = bbytes;
    }
    for (size_t k = 0; k < lanes_.size(); ++k) drain(lanes_[(next + k) % lanes_.size()], tensor);
  } catch (...) {
    // Nothing may land in `out` after an error: finish what is enqueued, drop it.
    for (Lane& l : lanes_) {
      (void)synchronize(l.stream.get());
      l.out = nullptr;
    }
    throw;
  }
}

}  // namespace qpack::cuda
