// Device-side pieces of dequantization (docs/quantization.md §6, §8), shared
// by the dequantize kernels (kernels/src/dequant.cu) and by any fused kernel
// that needs x_hat on the GPU (e.g. the verifier's dequantize-and-compare).
// Internal to kernels/; include from .cu files only.
//
// The unit of work is a *slice*: 8 consecutive elements of one group along the
// group axis. 8 codes of b bits are exactly b bytes of the group's bit stream
// (bytes 8s/8*b ... ), so a slice's codes form one little-endian integer
// (`SliceStream`) with code k in bits k*b .. k*b+b-1.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernel_args.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/group_params.hpp"

namespace qpack::kernels {

template <int BITS>
using SliceStream = std::conditional_t<(BITS * kSliceRows > 32), uint64_t, uint32_t>;

// Code k (0..7) of a slice.
template <int BITS>
__device__ __forceinline__ uint32_t slice_code(SliceStream<BITS> stream, int k) {
  return uint32_t(stream >> (k * BITS)) & ((1u << BITS) - 1u);
}

// The 8 reconstructed values of a slice: x[k] = fma(q_k, S, M), or
// (q_k - z) * S for integer zero-points.
template <int BITS>
__device__ __forceinline__ void dequant_slice(SliceStream<BITS> stream, float scale, float zero,
                                              bool symmetric, bool integer_zero,
                                              float (&x)[kSliceRows]) {
#pragma unroll
  for (int k = 0; k < kSliceRows; ++k)
    x[k] = spec::decode_scheme(slice_code<BITS>(stream, k), scale, zero, symmetric, integer_zero,
                               BITS);
}

// Slice `s` of a group whose B bytes are contiguous (axis -1, inner == 1):
// bytes s*BITS .. s*BITS+BITS-1 of the group, those below B (a partial last
// slice of an odd group size reads fewer; missing bytes read as 0).
template <int BITS>
__device__ __forceinline__ SliceStream<BITS> load_slice_contiguous(const uint8_t* group_codes,
                                                                   int64_t s,
                                                                   int64_t bytes_per_group) {
  SliceStream<BITS> st = 0;
  const int64_t b0 = s * BITS;
#pragma unroll
  for (int j = 0; j < BITS; ++j)
    if (b0 + j < bytes_per_group) st |= SliceStream<BITS>(group_codes[b0 + j]) << (8 * j);
  return st;
}

// Same, when the host guaranteed that whole slices exist and are aligned
// (group size a multiple of 8): one load of BITS bytes where BITS is 2, 4, 8.
template <int BITS>
__device__ __forceinline__ SliceStream<BITS> load_slice_contiguous_aligned(
    const uint8_t* group_codes, int64_t s) {
  const uint8_t* p = group_codes + s * BITS;
  if constexpr (BITS == 8) {
    const uint2 w = *reinterpret_cast<const uint2*>(p);
    return uint64_t(w.x) | (uint64_t(w.y) << 32);
  } else if constexpr (BITS == 4) {
    return *reinterpret_cast<const uint32_t*>(p);
  } else if constexpr (BITS == 2) {
    return *reinterpret_cast<const uint16_t*>(p);
  } else {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16);
  }
}

// V bytes at p (one load when V is 8, 4 or 2 and p is aligned to V), as the
// low bytes of a 64-bit word, byte v = column v.
template <int V>
__device__ __forceinline__ uint64_t load_bytes(const uint8_t* p) {
  if constexpr (V == 8) {
    const uint2 w = *reinterpret_cast<const uint2*>(p);
    return uint64_t(w.x) | (uint64_t(w.y) << 32);
  } else if constexpr (V == 4) {
    return *reinterpret_cast<const uint32_t*>(p);
  } else if constexpr (V == 2) {
    return *reinterpret_cast<const uint16_t*>(p);
  } else {
    static_assert(V == 1, "V must be 1, 2, 4 or 8");
    return *p;
  }
}

// Slice `s` of V adjacent groups stored as byte planes (axis != -1): byte j
// of the group in column c lives at plane0[j * pitch + c]. plane0 points at
// byte 0 of the first of the V columns. Planes at or past B are padding and
// read as 0.
template <int BITS, int V>
__device__ __forceinline__ void load_slice_planes(const uint8_t* plane0, int64_t pitch, int64_t s,
                                                  int64_t bytes_per_group,
                                                  SliceStream<BITS> (&st)[V]) {
#pragma unroll
  for (int v = 0; v < V; ++v) st[v] = 0;
#pragma unroll
  for (int j = 0; j < BITS; ++j) {
    const int64_t plane = s * BITS + j;
    if (plane < bytes_per_group) {
      const uint64_t w = load_bytes<V>(plane0 + plane * pitch);
#pragma unroll
      for (int v = 0; v < V; ++v) st[v] |= SliceStream<BITS>((w >> (8 * v)) & 0xffu) << (8 * j);
    }
  }
}

// float -> the bits of an output element of dtype O (F32, F16, BF16), rounded
// to nearest even exactly as f32_to_f16_rne / f32_to_bf16_rne round.
template <DType O>
__device__ __forceinline__ uint32_t output_bits(float x) {
  if constexpr (O == DType::F32) {
    return __float_as_uint(x);
  } else if constexpr (O == DType::F16) {
    // cvt.rn.f16.f32 is IEEE round-to-nearest-even with subnormals and
    // overflow to Inf, i.e. f32_to_f16_rne; only NaN payloads may differ, so
    // NaN takes the reference's bit path.
    return x != x ? f32_to_f16_rne(x) : __half_as_ushort(__float2half_rn(x));
  } else {
    static_assert(O == DType::BF16, "output dtype must be F32, F16 or BF16");
    return f32_to_bf16_rne(x);
  }
}

}  // namespace qpack::kernels
