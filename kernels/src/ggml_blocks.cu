// ggml's legacy block types on the GPU. Each thread quantizes (or
// dequantizes) one 32-element block by calling the spec's scalar reference,
// so there is one rule and no second copy of it to drift. What the kernels
// add is memory traffic in whole lines: a CTA stages its blocks' source
// elements in shared memory with coalesced 16-byte loads, each thread then reads its
// own 32 (rows padded to 33 floats so the 32 threads of a warp hit 32
// different banks), and the packed blocks go back out as coalesced 32-bit
// words.
#include <cuda_runtime.h>

#include <cstdint>

#include "qpack/kernels/cuda_status.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/spec/ggml_legacy.hpp"

namespace qpack::cuda {
namespace {

namespace gl = spec::ggml;

constexpr int kThreads = 128;  // ggml blocks per CTA, one per thread
constexpr int kPitch = gl::kBlockElements + 1;
constexpr int kMaxBlockBytes = gl::kQ8_0BlockBytes;

template <DType S>
__device__ __forceinline__ float load_source(const void* src, int64_t i) {
  if constexpr (S == DType::F32) {
    return static_cast<const float*>(src)[i];
  } else if constexpr (S == DType::F16) {
    return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
  } else {
    return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
  }
}

// The CTA's `count` source elements (a multiple of 32) from element `first`
// into x[block][element]. 16-byte loads when the span is 16-aligned (it
// starts at a multiple of 32 elements, so that is the tensor's own
// alignment): with one element per load the kernel was bound by load
// instructions, not bytes (F16 at 19 % of the copy bandwidth on the H200).
template <DType S>
__device__ __forceinline__ void stage_source(float (*x)[kPitch], const void* src, int64_t first,
                                             int count) {
  constexpr int kElementBytes = S == DType::F32 ? 4 : 2;
  constexpr int kPerLoad = 16 / kElementBytes;
  const uint8_t* base = static_cast<const uint8_t*>(src) + first * kElementBytes;
  if ((reinterpret_cast<uintptr_t>(base) & 15u) != 0) {
    for (int e = threadIdx.x; e < count; e += kThreads)
      x[e / gl::kBlockElements][e % gl::kBlockElements] = load_source<S>(src, first + e);
    return;
  }
  for (int v = threadIdx.x; v < count / kPerLoad; v += kThreads) {
    const uint4 w = reinterpret_cast<const uint4*>(base)[v];
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    const int e = v * kPerLoad;  // kPerLoad divides 32: one block's row
    float* row = x[e / gl::kBlockElements] + e % gl::kBlockElements;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (S == DType::F32) {
        row[k] = spec::f32_from_bits(words[k]);
      } else if constexpr (S == DType::F16) {
        row[2 * k] = f16_to_f32(uint16_t(words[k] & 0xffffu));
        row[2 * k + 1] = f16_to_f32(uint16_t(words[k] >> 16));
      } else {
        row[2 * k] = bf16_to_f32(uint16_t(words[k] & 0xffffu));
        row[2 * k + 1] = bf16_to_f32(uint16_t(words[k] >> 16));
      }
    }
  }
}

// Copies `bytes` bytes from shared to global memory as 32-bit words where
// both sides allow it (the CTA's span starts 4-aligned whenever the block
// size times kThreads is, which holds for every type), bytes for the rest.
__device__ __forceinline__ void store_span(uint8_t* dst, const uint8_t* smem, int bytes) {
  const bool aligned = (reinterpret_cast<uintptr_t>(dst) & 3u) == 0;
  const int words = aligned ? bytes / 4 : 0;
  for (int w = threadIdx.x; w < words; w += blockDim.x)
    reinterpret_cast<uint32_t*>(dst)[w] = reinterpret_cast<const uint32_t*>(smem)[w];
  for (int b = words * 4 + int(threadIdx.x); b < bytes; b += blockDim.x) dst[b] = smem[b];
}

template <DType S>
__global__ void __launch_bounds__(kThreads)
    quantize_blocks_kernel(gl::GgmlLegacyType type, const void* __restrict__ src, int64_t nblocks,
                           uint8_t* __restrict__ out) {
  __shared__ float x[kThreads][kPitch];
  __shared__ __align__(16) uint8_t packed[kThreads * kMaxBlockBytes];
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  const int nb = int(nblocks - first < kThreads ? nblocks - first : kThreads);
  const int bytes = gl::block_bytes(type);
  stage_source<S>(x, src, first * gl::kBlockElements, nb * gl::kBlockElements);
  __syncthreads();
  if (int(threadIdx.x) < nb) {
    float row[gl::kBlockElements];
#pragma unroll
    for (int j = 0; j < gl::kBlockElements; ++j) row[j] = x[threadIdx.x][j];
    gl::quantize_block(type, row, packed + threadIdx.x * bytes);
  }
  __syncthreads();
  store_span(out + first * bytes, packed, nb * bytes);
}

__global__ void __launch_bounds__(kThreads)
    dequantize_blocks_kernel(gl::GgmlLegacyType type, const uint8_t* __restrict__ in,
                             int64_t nblocks, float* __restrict__ out) {
  __shared__ __align__(16) uint8_t packed[kThreads * kMaxBlockBytes];
  __shared__ float y[kThreads][kPitch];
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  const int nb = int(nblocks - first < kThreads ? nblocks - first : kThreads);
  const int bytes = gl::block_bytes(type);
  const uint8_t* src = in + first * bytes;
  const bool aligned = (reinterpret_cast<uintptr_t>(src) & 3u) == 0;
  const int words = aligned ? nb * bytes / 4 : 0;
  for (int w = threadIdx.x; w < words; w += kThreads)
    reinterpret_cast<uint32_t*>(packed)[w] = reinterpret_cast<const uint32_t*>(src)[w];
  for (int b = words * 4 + int(threadIdx.x); b < nb * bytes; b += kThreads) packed[b] = src[b];
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

// CTAs for n elements; the grid's x dimension holds 2^31 - 1 of them, far
// beyond any tensor (2^31 CTAs are 2^43 elements).
unsigned grid_for(int64_t n) {
  const int64_t nblocks = n / gl::kBlockElements;
  return unsigned((nblocks + kThreads - 1) / kThreads);
}

}  // namespace

Status quantize_ggml_blocks(gl::GgmlLegacyType type, const void* d_src, DType src_dtype, int64_t n,
                            uint8_t* d_blocks, cudaStream_t stream) {
  if (!known_type(type)) return invalid("quantize_ggml_blocks: not a legacy ggml block type");
  if (n < 0 || n % gl::kBlockElements != 0)
    return invalid("quantize_ggml_blocks: n must be a non-negative multiple of 32");
  if (n == 0) return {};
  if (!d_src || !d_blocks) return invalid("quantize_ggml_blocks: null device pointer");
  const int64_t nblocks = n / gl::kBlockElements;
  switch (src_dtype) {
    case DType::F32:
      quantize_blocks_kernel<DType::F32>
          <<<grid_for(n), kThreads, 0, stream>>>(type, d_src, nblocks, d_blocks);
      break;
    case DType::F16:
      quantize_blocks_kernel<DType::F16>
          <<<grid_for(n), kThreads, 0, stream>>>(type, d_src, nblocks, d_blocks);
      break;
    case DType::BF16:
      quantize_blocks_kernel<DType::BF16>
          <<<grid_for(n), kThreads, 0, stream>>>(type, d_src, nblocks, d_blocks);
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

}  // namespace qpack::cuda
