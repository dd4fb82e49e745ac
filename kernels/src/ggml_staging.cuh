// Shared-memory staging for the ggml block kernels (ggml_blocks.cu for the
// 32-element legacy types, ggml_kquants.cu for the 256-element K-quants):
// a CTA reads its blocks' source elements with coalesced 16-byte loads into
// x[block][element] (rows padded by one float, so threads reading "their"
// block at the same element hit different banks), and writes packed blocks
// back as coalesced 32-bit words.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/numerics.hpp"

namespace qpack::cuda::ggml_staging {

// F16 bits as float: the hardware conversion, exact for every finite value
// and for +-Inf, one instruction where the spec's f16_to_f32 is a branchy
// software one (with it, F16 sources ran at 37% of the copy bound on the
// H200). A NaN takes the spec's bits (sign, all-ones exponent, payload
// shifted up), which the hardware need not keep.
__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) {
  const float v = __half2float(__ushort_as_half(h));
  const uint32_t nan_bits =
      (uint32_t(h & 0x8000u) << 16) | 0x7f800000u | (uint32_t(h & 0x3ffu) << 13);
  return (h & 0x7fffu) > 0x7c00u ? spec::f32_from_bits(nan_bits) : v;
}

template <DType S>
__device__ __forceinline__ float load_source(const void* src, int64_t i) {
  if constexpr (S == DType::F32) {
    return static_cast<const float*>(src)[i];
  } else if constexpr (S == DType::F16) {
    return f16_bits_to_f32(static_cast<const uint16_t*>(src)[i]);
  } else {
    return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
  }
}

// The CTA's `count` source elements (a multiple of kElements) from element
// `first` into x[block][element], with kThreads threads. 16-byte loads when
// the span is 16-aligned (it starts at a whole block, so that is the
// tensor's own alignment): with one element per load the legacy kernel was
// bound by load instructions, not bytes (F16 at 19 % of the copy bandwidth
// on the H200).
template <DType S, int kElements, int kPitch, int kThreads>
__device__ __forceinline__ void stage_source(float (*x)[kPitch], const void* src, int64_t first,
                                             int count) {
  constexpr int kElementBytes = S == DType::F32 ? 4 : 2;
  constexpr int kPerLoad = 16 / kElementBytes;
  static_assert(kElements % kPerLoad == 0, "a 16-byte load must stay inside one block");
  const uint8_t* base = static_cast<const uint8_t*>(src) + first * kElementBytes;
  if ((reinterpret_cast<uintptr_t>(base) & 15u) != 0) {
    for (int e = threadIdx.x; e < count; e += kThreads)
      x[e / kElements][e % kElements] = load_source<S>(src, first + e);
    return;
  }
  for (int v = threadIdx.x; v < count / kPerLoad; v += kThreads) {
    const uint4 w = reinterpret_cast<const uint4*>(base)[v];
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    const int e = v * kPerLoad;
    float* row = x[e / kElements] + e % kElements;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (S == DType::F32) {
        row[k] = spec::f32_from_bits(words[k]);
      } else if constexpr (S == DType::F16) {
        row[2 * k] = f16_bits_to_f32(uint16_t(words[k] & 0xffffu));
        row[2 * k + 1] = f16_bits_to_f32(uint16_t(words[k] >> 16));
      } else {
        row[2 * k] = bf16_to_f32(uint16_t(words[k] & 0xffffu));
        row[2 * k + 1] = bf16_to_f32(uint16_t(words[k] >> 16));
      }
    }
  }
}

// Copies `bytes` bytes between global and shared memory as 32-bit words
// where both sides allow it (shared memory is 16-aligned; the global side
// is 4-aligned whenever the tensor's blocks are), bytes for the rest.
__device__ __forceinline__ void copy_span(uint8_t* dst, const uint8_t* src, int bytes) {
  const bool aligned =
      ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) & 3u) == 0;
  const int words = aligned ? bytes / 4 : 0;
  for (int w = threadIdx.x; w < words; w += blockDim.x)
    reinterpret_cast<uint32_t*>(dst)[w] = reinterpret_cast<const uint32_t*>(src)[w];
  for (int b = words * 4 + int(threadIdx.x); b < bytes; b += blockDim.x) dst[b] = src[b];
}

}  // namespace qpack::cuda::ggml_staging
