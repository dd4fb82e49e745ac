// ggml's K-quants (Q2_K..Q6_K) on the GPU. As for the legacy types, each
// thread quantizes or dequantizes one block, here a 256-element super-block,
// by calling the spec's scalar reference (qpack/spec/ggml_kquants.hpp), so
// the bytes are the reference's by construction. The scale searches make
// these kernels arithmetic-bound (about 200 float operations per element
// for Q4_K), so the CTA is small: 32 super-blocks, staged in shared memory
// with coalesced loads (rows padded to 257 floats: a warp's 32 threads read
// 32 banks), the packed blocks written back as coalesced words. The type is
// a template parameter so each kernel holds one rule's code and registers.
#include <cuda_runtime.h>

#include <cstdint>

#include "ggml_kquants_launch.hpp"
#include "ggml_staging.cuh"
#include "qpack/kernels/cuda_status.hpp"
#include "qpack/spec/ggml_block_types.hpp"

namespace qpack::cuda {
namespace {

namespace gl = spec::ggml;
using ggml_staging::copy_span;
using ggml_staging::stage_source;
using gl::GgmlBlockType;

constexpr int kThreads = 32;  // super-blocks per CTA, one per thread
constexpr int kElements = gl::kSuperBlockElements;
constexpr int kPitch = kElements + 1;

// Bytes of one super-block of T, as a constant (the spec's block_bytes is a
// run-time function for host and device alike).
template <GgmlBlockType T>
constexpr int kBlockBytes = T == GgmlBlockType::Q2_K   ? gl::kQ2_KBlockBytes
                            : T == GgmlBlockType::Q3_K ? gl::kQ3_KBlockBytes
                            : T == GgmlBlockType::Q4_K ? gl::kQ4_KBlockBytes
                            : T == GgmlBlockType::Q5_K ? gl::kQ5_KBlockBytes
                                                       : gl::kQ6_KBlockBytes;

template <DType S, GgmlBlockType T>
__global__ void __launch_bounds__(kThreads)
    quantize_kquant_kernel(const void* __restrict__ src, int64_t nblocks,
                           uint8_t* __restrict__ out) {
  constexpr int kBytes = kBlockBytes<T>;
  __shared__ float x[kThreads][kPitch];
  __shared__ __align__(16) uint8_t packed[kThreads * kBytes];
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  const int nb = int(nblocks - first < kThreads ? nblocks - first : kThreads);
  stage_source<S, kElements, kPitch, kThreads>(x, src, first * kElements, nb * kElements);
  __syncthreads();
  if (int(threadIdx.x) < nb) gl::quantize_block(T, x[threadIdx.x], packed + threadIdx.x * kBytes);
  __syncthreads();
  copy_span(out + first * kBytes, packed, nb * kBytes);
}

template <GgmlBlockType T>
__global__ void __launch_bounds__(kThreads)
    dequantize_kquant_kernel(const uint8_t* __restrict__ in, int64_t nblocks,
                             float* __restrict__ out) {
  constexpr int kBytes = kBlockBytes<T>;
  __shared__ __align__(16) uint8_t packed[kThreads * kBytes];
  __shared__ float y[kThreads][kPitch];
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  const int nb = int(nblocks - first < kThreads ? nblocks - first : kThreads);
  copy_span(packed, in + first * kBytes, nb * kBytes);
  __syncthreads();
  if (int(threadIdx.x) < nb) gl::dequantize_block(T, packed + threadIdx.x * kBytes, y[threadIdx.x]);
  __syncthreads();
  float* dst = out + first * kElements;
  for (int e = threadIdx.x; e < nb * kElements; e += kThreads)
    dst[e] = y[e / kElements][e % kElements];
}

Status invalid(const char* why) {
  Status s;
  s.code = StatusCode::InvalidArgument;
  s.message = why;
  return s;
}

// CTAs for nblocks super-blocks; 2^31 - 1 of them are 2^44 elements.
unsigned grid_for(int64_t nblocks) { return unsigned((nblocks + kThreads - 1) / kThreads); }

template <GgmlBlockType T>
Status quantize_from(const void* d_src, DType src_dtype, int64_t nblocks, uint8_t* d_blocks,
                     cudaStream_t stream) {
  switch (src_dtype) {
    case DType::F32:
      quantize_kquant_kernel<DType::F32, T>
          <<<grid_for(nblocks), kThreads, 0, stream>>>(d_src, nblocks, d_blocks);
      break;
    case DType::F16:
      quantize_kquant_kernel<DType::F16, T>
          <<<grid_for(nblocks), kThreads, 0, stream>>>(d_src, nblocks, d_blocks);
      break;
    case DType::BF16:
      quantize_kquant_kernel<DType::BF16, T>
          <<<grid_for(nblocks), kThreads, 0, stream>>>(d_src, nblocks, d_blocks);
      break;
    default:
      return invalid("quantize_ggml_blocks: the source must be F16, BF16 or F32");
  }
  QPACK_CUDA_TRY(cudaGetLastError());
  return {};
}

template <GgmlBlockType T>
Status dequantize_to(const uint8_t* d_blocks, int64_t nblocks, float* d_out, cudaStream_t stream) {
  dequantize_kquant_kernel<T><<<grid_for(nblocks), kThreads, 0, stream>>>(d_blocks, nblocks, d_out);
  QPACK_CUDA_TRY(cudaGetLastError());
  return {};
}

}  // namespace

Status launch_quantize_kquants(GgmlBlockType type, const void* d_src, DType src_dtype,
                               int64_t nblocks, uint8_t* d_blocks, cudaStream_t stream) {
  switch (type) {
    case GgmlBlockType::Q2_K:
      return quantize_from<GgmlBlockType::Q2_K>(d_src, src_dtype, nblocks, d_blocks, stream);
    case GgmlBlockType::Q3_K:
      return quantize_from<GgmlBlockType::Q3_K>(d_src, src_dtype, nblocks, d_blocks, stream);
    case GgmlBlockType::Q4_K:
      return quantize_from<GgmlBlockType::Q4_K>(d_src, src_dtype, nblocks, d_blocks, stream);
    case GgmlBlockType::Q5_K:
      return quantize_from<GgmlBlockType::Q5_K>(d_src, src_dtype, nblocks, d_blocks, stream);
    case GgmlBlockType::Q6_K:
      return quantize_from<GgmlBlockType::Q6_K>(d_src, src_dtype, nblocks, d_blocks, stream);
    default:
      return invalid("quantize_ggml_blocks: not a K-quant type");
  }
}

Status launch_dequantize_kquants(GgmlBlockType type, const uint8_t* d_blocks, int64_t nblocks,
                                 float* d_out, cudaStream_t stream) {
  switch (type) {
    case GgmlBlockType::Q2_K:
      return dequantize_to<GgmlBlockType::Q2_K>(d_blocks, nblocks, d_out, stream);
    case GgmlBlockType::Q3_K:
      return dequantize_to<GgmlBlockType::Q3_K>(d_blocks, nblocks, d_out, stream);
    case GgmlBlockType::Q4_K:
      return dequantize_to<GgmlBlockType::Q4_K>(d_blocks, nblocks, d_out, stream);
    case GgmlBlockType::Q5_K:
      return dequantize_to<GgmlBlockType::Q5_K>(d_blocks, nblocks, d_out, stream);
    case GgmlBlockType::Q6_K:
      return dequantize_to<GgmlBlockType::Q6_K>(d_blocks, nblocks, d_out, stream);
    default:
      return invalid("dequantize_ggml_blocks: not a K-quant type");
  }
}

}  // namespace qpack::cuda
