// CUDA quantization into ggml's legacy GGUF block types (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0) and back: the bytes and floats of qpack/spec/ggml_legacy.hpp's
// scalar reference (docs/quantization.md, Part II), bit for bit, because the
// kernels call that reference for every block.
//
// Like cuda_quant.hpp this compiles with a plain C++ compiler; a build with
// QPACK_ENABLE_CUDA=OFF provides the same symbols, reporting NoDevice.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack {
namespace cuda {

// Enqueues the quantization of `n` consecutive elements (a multiple of 32:
// ggml's block; 0 does nothing) of `src_dtype` (F16, BF16 or F32, converted
// exactly to float first, as llama-quantize does) at device address d_src
// into n/32 blocks of spec::ggml::block_bytes(type) bytes at d_blocks.
// Exactly those bytes are written. Inputs should be finite: a NaN or Inf
// gives the reference's bytes, which ggml does not define either. method:
// Rtn is llama.cpp's bytes; Search and Refit choose Q4_1 / Q5_1 blocks by
// docs/quantization.md §G9 (qpack/spec/ggml_legacy_methods.hpp, the same
// text as the CPU's); InvalidArgument for them with any other type.
Status quantize_ggml_blocks(spec::ggml::GgmlLegacyType type, const void* d_src, DType src_dtype,
                            int64_t n, uint8_t* d_blocks, cudaStream_t stream,
                            QuantMethod method = QuantMethod::Rtn);

// Enqueues the dequantization of n/32 blocks at d_blocks into `n` floats at
// d_out (ggml's dequantize_row_*, bit for bit).
Status dequantize_ggml_blocks(spec::ggml::GgmlLegacyType type, const uint8_t* d_blocks, int64_t n,
                              float* d_out, cudaStream_t stream);

// The same over every ggml block type qpack writes (qpack/spec/
// ggml_block_types.hpp): the legacy types as above, the K-quants (Q2_K..Q6_K,
// docs/quantization.md Part III) on `n` a multiple of 256, their super-block.
// The K-quants' scale searches are arithmetic-heavy; their kernels run one
// thread per super-block (docs/kernels.md).
Status quantize_ggml_blocks(spec::ggml::GgmlBlockType type, const void* d_src, DType src_dtype,
                            int64_t n, uint8_t* d_blocks, cudaStream_t stream,
                            QuantMethod method = QuantMethod::Rtn);
Status dequantize_ggml_blocks(spec::ggml::GgmlBlockType type, const uint8_t* d_blocks, int64_t n,
                              float* d_out, cudaStream_t stream);

// ---------------------------------------------------------------- by GGUF type number

// THE switch point for GPU decoding of GGUF tensors: true for the GGUF type
// numbers (qpack/format/gguf.hpp's GgmlType values) whose blocks the kernels
// dequantize: the ten types of qpack/spec/ggml_block_types.hpp. `qpack
// dequantize --device cuda` and `qpack verify --device cuda` decode every
// other type (none qpack writes) on the CPU.
bool cuda_block_type_supported(uint32_t gguf_type);

// Host blocks in, host floats out, through the kernels on one device: the
// staging for callers that hold a tensor's blocks in host memory (a mapped
// GGUF). Buffers grow to the largest piece seen and are kept for the next.
// Construction throws Error(NoDevice) when the device is not usable.
class GgmlBlocksDeviceDecoder {
 public:
  explicit GgmlBlocksDeviceDecoder(int device);
  // n elements (a whole number of the type's blocks) of `gguf_type` at
  // `blocks` (nbytes of them) into n floats at `out`, bit for bit what the
  // CPU's dequantize_ggml_blocks_cpu gives. Throws Error: InvalidArgument
  // naming `tensor` for a type cuda_block_type_supported refuses, Cuda for
  // a failure.
  void dequantize(uint32_t gguf_type, const uint8_t* blocks, uint64_t nbytes, int64_t n, float* out,
                  const std::string& tensor);
  int device() const { return device_; }

 private:
  int device_ = 0;
  DeviceBuffer d_blocks_, d_out_;
  Stream stream_;
};

// Host source in, host blocks out, through the kernels on one device: what
// `qpack convert ... OUT.gguf --device cuda` quantizes with. A call is cut
// into chunks of whole super-blocks (`chunk_bytes` of source each, rounded
// down to 256 elements), and `streams` chunks are in flight at once: while
// the device quantizes one, the host copies the next into pinned staging and
// the previous one's blocks out of it. Every chunk is computed by the same
// kernels as quantize_ggml_blocks, so the bytes are the CPU's
// (quantize_ggml_blocks_cpu) whatever the chunk size or stream count.
// Construction throws Error(NoDevice) when the device is not usable.
class GgmlBlocksDeviceEncoder {
 public:
  explicit GgmlBlocksDeviceEncoder(int device, size_t chunk_bytes = size_t(16) << 20,
                                   int streams = 3);
  // n elements (a whole number of the type's blocks) of `src_dtype` (F16,
  // BF16 or F32) at `src` into the type's blocks at `out`, by `method`
  // (quantize_ggml_blocks). Throws Error: InvalidArgument naming `tensor`
  // for a type cuda_block_type_supported refuses, an n that is no whole
  // number of blocks, another dtype, or a method other than Rtn for a type
  // other than Q4_1 and Q5_1; Cuda for a failure.
  void quantize(uint32_t gguf_type, const void* src, DType src_dtype, int64_t n, uint8_t* out,
                const std::string& tensor, QuantMethod method = QuantMethod::Rtn);
  int device() const { return device_; }

 private:
  struct Lane {  // one chunk in flight
    Stream stream;
    PinnedBuffer h_src, h_blocks;
    DeviceBuffer d_src, d_blocks;
    uint8_t* out = nullptr;  // where this lane's blocks go when it drains
    size_t out_bytes = 0;
  };
  void drain(Lane& lane, const std::string& tensor);
  int device_ = 0;
  int64_t chunk_elements_ = 0;
  std::vector<Lane> lanes_;
};

}  // namespace cuda
}  // namespace qpack
