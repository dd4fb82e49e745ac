// ggml's legacy block types on the GPU, and the dispatch over every ggml
// block type (the K-quants' kernels are in ggml_kquants.cu). Each thread
// quantizes (or dequantizes) one 32-element block by calling the spec's
// scalar reference, so there is one rule and no second copy of it to drift.
// What the kernels add is memory traffic in whole lines (ggml_staging.cuh):
// a CTA stages its blocks' source elements in shared memory with coalesced
// 16-byte loads, each thread then reads its own 32 (rows padded to 33
// floats so the 32 threads of a warp hit 32 different banks), and the
// packed blocks go back out as coalesced 32-bit words.
#include <cuda_runtime.h>

#include <cstdint>

#include "ggml_kquants_launch.hpp"
#include "ggml_staging.cuh"
#include "qpack/kernels/cuda_status.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/spec/ggml_legacy_methods.hpp"

namespace qpack::cuda {
namespace {

namespace gl = spec::ggml;
using ggml_staging::copy_span;
using ggml_staging::stage_source;

constexpr int kThreads = 128;  // ggml blocks per CTA, one per thread
constexpr int kPitch = gl::kBlockElements + 1;
constexpr int kMaxBlockBytes = gl::kQ8_0BlockBytes;

// M is the method (docs/quantization.md §G9) as a template argument: the Rtn
// kernel compiles to ggml's rule alone, without the search's registers.
template <DType S, QuantMethod M>
__global__ void __launch_bounds__(kThreads)
    quantize_blocks_kernel(gl::GgmlLegacyType type, const void* __restrict__ src, int64_t nblocks,
                           uint8_t* __restrict__ out) {
  __shared__ float x[kThreads][kPitch];
  __shared__ __align__(16) uint8_t packed[kThreads * kMaxBlockBytes];
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  const int nb = int(nblocks - first < kThreads ? nblocks - first : kThreads);
  const int bytes = gl::block_bytes(type);
  stage_source<S, gl::kBlockElements, kPitch, kThreads>(x, src, first * gl::kBlockElements,
                                                        nb * gl::kBlockElements);
  __syncthreads();
  if (int(threadIdx.x) < nb) {
    float row[gl::kBlockElements];
#pragma unroll
    for (int j = 0; j < gl::kBlockElements; ++j) row[j] = x[threadIdx.x][j];
    gl::quantize_block_method(type, M, row, packed + threadIdx.x * bytes);
  }
  __syncthreads();
  copy_span(out + first * bytes, packed, nb * bytes);
}

__global__ void __launch_bounds__(kThreads)
    dequantize_blocks_kernel(gl::GgmlLegacyType type, const uint8_t* __restrict__ in,
                             int64_t nblocks, float* __restrict__ out) {
  __shared__ __align__(16) uint8_t packed[kThreads * kMaxBlockBytes];
  __shared__ float y[kThreads][kPitch];
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  const int nb = int(nblocks - first < kThreads ? nblocks - first : kThreads);
  const int bytes = gl::block_bytes(type);
  copy_span(packed, in + first * bytes, nb * bytes);
  __syncthreads();
  if (int(threadIdx.x) < nb) {
    float row[gl::kBlockElements];
    gl::dequantize_block(type, packed + threadIdx.x * bytes, row);
#pragma unroll
    for (int j = 0; j < gl::kBlockElements; ++j) y[threadIdx.x][j] = row[j];
  }
  __syncthreads();
  float* dst = out + first * gl::kBlockElements;
  for (int e = threadIdx.x; e < nb * gl::kBlockElements; e += kThreads)
    dst[e] = y[e / gl::kBlockElements][e % gl::kBlockElements];
}

Status invalid(const char* why) {
  Status s;
  s.code = StatusCode::InvalidArgument;
  s.message = why;
  return s;
}

bool known_type(gl::GgmlLegacyType t) { return gl::block_bytes(t) != 0; }

template <DType S>
void launch_quantize(gl::GgmlLegacyType type, QuantMethod method, const void* d_src,
                     int64_t nblocks, uint8_t* d_blocks, unsigned grid, cudaStream_t stream) {
  switch (method) {
    case QuantMethod::Search:
      quantize_blocks_kernel<S, QuantMethod::Search>
          <<<grid, kThreads, 0, stream>>>(type, d_src, nblocks, d_blocks);
      return;
    case QuantMethod::Refit:
      quantize_blocks_kernel<S, QuantMethod::Refit>
          <<<grid, kThreads, 0, stream>>>(type, d_src, nblocks, d_blocks);
      return;
    case QuantMethod::Rtn:
      quantize_blocks_kernel<S, QuantMethod::Rtn>
          <<<grid, kThreads, 0, stream>>>(type, d_src, nblocks, d_blocks);
      return;
  }
}

// CTAs for n elements; the grid's x dimension holds 2^31 - 1 of them, far
// beyond any tensor (2^31 CTAs are 2^43 elements).
unsigned grid_for(int64_t n) {
  const int64_t nblocks = n / gl::kBlockElements;
  return unsigned((nblocks + kThreads - 1) / kThreads);
}

}  // namespace

Status quantize_ggml_blocks(gl::GgmlLegacyType type, const void* d_src, DType src_dtype, int64_t n,
                            uint8_t* d_blocks, cudaStream_t stream, QuantMethod method) {
  if (!known_type(type)) return invalid("quantize_ggml_blocks: not a legacy ggml block type");
  if (method != QuantMethod::Rtn && !gl::takes_method(type))
    return invalid("quantize_ggml_blocks: methods search and refit take Q4_1 and Q5_1 only");
  if (n < 0 || n % gl::kBlockElements != 0)
    return invalid("quantize_ggml_blocks: n must be a non-negative multiple of 32");
  if (n == 0) return {};
  if (!d_src || !d_blocks) return invalid("quantize_ggml_blocks: null device pointer");
  const int64_t nblocks = n / gl::kBlockElements;
  switch (src_dtype) {
    case DType::F32:
      launch_quantize<DType::F32>(type, method, d_src, nblocks, d_blocks, grid_for(n), stream);
      break;
    case DType::F16:
      launch_quantize<DType::F16>(type, method, d_src, nblocks, d_blocks, grid_for(n), stream);
      break;
    case DType::BF16:
      launch_quantize<DType::BF16>(type, method, d_src, nblocks, d_blocks, grid_for(n), stream);
      break;
    default:
      return invalid("quantize_ggml_blocks: the source must be F16, BF16 or F32");
  }
  QPACK_CUDA_TRY(cudaGetLastError());
  return {};
}

Status dequantize_ggml_blocks(gl::GgmlLegacyType type, const uint8_t* d_blocks, int64_t n,
                              float* d_out, cudaStream_t stream) {
  if (!known_type(type)) return invalid("dequantize_ggml_blocks: not a legacy ggml block type");
  if (n < 0 || n % gl::kBlockElements != 0)
    return invalid("dequantize_ggml_blocks: n must be a non-negative multiple of 32");
  if (n == 0) return {};
  if (!d_blocks || !d_out) return invalid("dequantize_ggml_blocks: null device pointer");
  dequantize_blocks_kernel<<<grid_for(n), kThreads, 0, stream>>>(type, d_blocks,
                                                                 n / gl::kBlockElements, d_out);
  QPACK_CUDA_TRY(cudaGetLastError());
  return {};
}

Status quantize_ggml_blocks(gl::GgmlBlockType type, const void* d_src, DType src_dtype, int64_t n,
                            uint8_t* d_blocks, cudaStream_t stream, QuantMethod method) {
  if (!gl::is_block_type(type)) return invalid("quantize_ggml_blocks: not a ggml block type");
  if (!gl::is_kquant(type))
    return quantize_ggml_blocks(gl::GgmlLegacyType(uint32_t(type)), d_src, src_dtype, n, d_blocks,
                                stream, method);
  if (method != QuantMethod::Rtn)
    return invalid("quantize_ggml_blocks: methods search and refit take Q4_1 and Q5_1 only");
  if (n < 0 || n % gl::kSuperBlockElements != 0)
    return invalid("quantize_ggml_blocks: n must be a non-negative multiple of 256");
  if (n == 0) return {};
  if (!d_src || !d_blocks) return invalid("quantize_ggml_blocks: null device pointer");
  return launch_quantize_kquants(type, d_src, src_dtype, n / gl::kSuperBlockElements, d_blocks,
                                 stream);
}

Status dequantize_ggml_blocks(gl::GgmlBlockType type, const uint8_t* d_blocks, int64_t n,
                              float* d_out, cudaStream_t stream) {
  if (!gl::is_block_type(type)) return invalid("dequantize_ggml_blocks: not a ggml block type");
  if (!gl::is_kquant(type))
    return dequantize_ggml_blocks(gl::GgmlLegacyType(uint32_t(type)), d_blocks, n, d_out, stream);
  if (n < 0 || n % gl::kSuperBlockElements != 0)
    return invalid("dequantize_ggml_blocks: n must be a non-negative multiple of 256");
  if (n == 0) return {};
  if (!d_blocks || !d_out) return invalid("dequantize_ggml_blocks: null device pointer");
  return launch_dequantize_kquants(type, d_blocks, n / gl::kSuperBlockElements, d_out, stream);
}

}  // namespace qpack::cuda
