// Dequantize kernels: x_hat = fma(q, S, M) (docs/quantization.md §6) for a
// tile, written as F32, F16 or BF16. One thread per slice (8 elements along
// the group axis) and V adjacent columns; the byte-gathering and decoding
// live in qpack/dequant_device.cuh so that fused kernels elsewhere decode the
// same way. Each thread's stores are V (or 8) consecutive output elements, so
// a warp writes whole contiguous lines.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernel_args.hpp"
#include "qpack/dequant_device.cuh"

namespace qpack::cudak {
namespace {

using cudadev::SliceStream;

template <DType O>
constexpr int out_bytes() {
  return O == DType::F32 ? 4 : 2;
}

// N consecutive output elements at element index `index` (aligned to the
// store width when N > 1: the host checked it).
template <DType O, int N>
__device__ __forceinline__ void store_out(void* out, int64_t index, const float (&x)[N]) {
  if constexpr (O == DType::F32) {
    float* dst = static_cast<float*>(out) + index;
    if constexpr (N % 4 == 0) {
#pragma unroll
      for (int i = 0; i < N; i += 4)
        *reinterpret_cast<float4*>(dst + i) = make_float4(x[i], x[i + 1], x[i + 2], x[i + 3]);
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) dst[i] = x[i];
    }
  } else {
    uint16_t* dst = static_cast<uint16_t*>(out) + index;
    if constexpr (N % 8 == 0) {
#pragma unroll
      for (int i = 0; i < N; i += 8) {
        uint32_t h[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) h[k] = cudadev::output_bits<O>(x[i + k]);
        *reinterpret_cast<uint4*>(dst + i) = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16),
                                                        h[4] | (h[5] << 16), h[6] | (h[7] << 16));
      }
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) dst[i] = uint16_t(cudadev::output_bits<O>(x[i]));
    }
  }
}

template <int V>
__device__ __forceinline__ void load_params(const uint8_t* base, int64_t index, DType sd,
                                            float (&out)[V]) {
  if constexpr (V == 8) {
    if (sd != DType::F32) {
      const uint4 w =
          *reinterpret_cast<const uint4*>(reinterpret_cast<const uint16_t*>(base) + index);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const uint16_t b = uint16_t(i & 1 ? words[i >> 1] >> 16 : words[i >> 1]);
        out[i] = sd == DType::F16 ? f16_to_f32(b) : bf16_to_f32(b);
      }
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = cudadev::load_param(base, index + i, sd);
}

// Groups down columns: thread = (group row, slice, column chunk of V), the
// column chunk fastest so that neighbouring threads write neighbouring columns.
template <int BITS, int V, DType O>
__global__ void __launch_bounds__(kBlockThreads) dequantize_cols(const DequantArgs a) {
  const Geometry& g = a.geo;
  const uint32_t nchunks = g.chunks.d;
  const uint32_t per_gr = g.per_gr.d;
  for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < g.tasks;
       idx += gridDim.x * blockDim.x) {
    const uint32_t lgr = g.per_gr.div(idx);
    const uint32_t rem = idx - lgr * per_gr;
    const uint32_t s = g.chunks.div(rem);
    const int64_t col = int64_t(rem - s * nchunks) * V;
    const uint32_t along = g.gi_begin + lgr;
    const uint32_t q = g.groups.div(along);
    const int64_t o = g.o_begin + q;
    const int64_t gi = along - q * g.groups.d;
    const int64_t len = min(g.group, g.axis_len - gi * g.group);
    const int64_t n = min(int64_t(kSlice), len - s * kSlice);
    if (n <= 0) continue;  // padding slice of a partial group: no outputs
    SliceStream<BITS> st[V];
    cudadev::load_slice_planes<BITS, V>(a.codes + int64_t(lgr) * g.bytes * g.ncols + col, g.ncols,
                                        s, g.bytes, st);
    float scale[V], zero[V];
    load_params<V>(a.scales, int64_t(lgr) * g.ncols + col, a.scale_dtype, scale);
    if (a.symmetric) {
#pragma unroll
      for (int v = 0; v < V; ++v) zero[v] = 0.0f;
    } else {
      load_params<V>(a.zeros, int64_t(lgr) * g.ncols + col, a.scale_dtype, zero);
    }
    const int64_t row = o * g.axis_len + gi * g.group + s * kSlice - g.row_begin;
#pragma unroll
    for (int r = 0; r < kSlice; ++r)
      if (r < n) {
        float x[V];
#pragma unroll
        for (int v = 0; v < V; ++v)
          x[v] = qp_decode(cudadev::slice_code<BITS>(st[v], r), scale[v], zero[v], a.symmetric,
                           BITS);
        store_out<O, V>(a.out, (row + r) * g.ncols + col, x);
      }
  }
}

// Contiguous groups (one-column tiles): thread = (group row, slice, part)
// with EPT elements per thread (4 for F32 output: one 16-byte store each, a
// warp storing 512 contiguous bytes).
template <int BITS, bool VEC, DType O, int EPT>
__global__ void __launch_bounds__(kBlockThreads) dequantize_rows(const DequantArgs a) {
  const Geometry& g = a.geo;
  constexpr uint32_t kParts = kSlice / EPT;
  const uint32_t per_gr = g.per_gr.d;
  for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < g.tasks;
       idx += gridDim.x * blockDim.x) {
    const uint32_t lgr = g.per_gr.div(idx);
    const uint32_t rem = idx - lgr * per_gr;
    const uint32_t s = rem / kParts;
    const int h = int(rem - s * kParts);
    const uint32_t along = g.gi_begin + lgr;
    const uint32_t q = g.groups.div(along);
    const int64_t o = g.o_begin + q;
    const int64_t gi = along - q * g.groups.d;
    const int64_t len = min(g.group, g.axis_len - gi * g.group);
    const int64_t n = min(int64_t(EPT), len - int64_t(s) * kSlice - h * EPT);
    if (n <= 0) continue;
    const uint8_t* group_codes = a.codes + int64_t(lgr) * g.bytes;
    const SliceStream<BITS> st = VEC ? cudadev::load_slice_contiguous_aligned<BITS>(group_codes, s)
                                     : cudadev::load_slice_contiguous<BITS>(group_codes, s, g.bytes);
    const float scale = cudadev::load_param(a.scales, lgr, a.scale_dtype);
    const float zero = a.symmetric ? 0.0f : cudadev::load_param(a.zeros, lgr, a.scale_dtype);
    float x[EPT];
#pragma unroll
    for (int k = 0; k < EPT; ++k)
      x[k] = qp_decode(cudadev::slice_code<BITS>(st, h * EPT + k), scale, zero, a.symmetric, BITS);
    const int64_t first = o * g.axis_len + gi * g.group + int64_t(s) * kSlice + h * EPT - g.row_begin;
    if (VEC && n == EPT) {
      store_out<O, EPT>(a.out, first, x);
    } else {
#pragma unroll
      for (int k = 0; k < EPT; ++k)
        if (k < n) {
          const float one[1] = {x[k]};
          store_out<O, 1>(a.out, first + k, one);
        }
    }
  }
}

template <int BITS, DType O>
void launch_t(const DequantArgs& a, const Launch& l) {
  constexpr int kPart = O == DType::F32 ? kF32Part : kSlice;  // see kF32Part
  if (l.rows) {
    if (l.vector) {
      dequantize_rows<BITS, true, O, kPart><<<l.blocks, kBlockThreads, 0, l.stream>>>(a);
    } else {
      dequantize_rows<BITS, false, O, kSlice><<<l.blocks, kBlockThreads, 0, l.stream>>>(a);
    }
  } else {
    if (l.vector) {
      dequantize_cols<BITS, kPart, O><<<l.blocks, kBlockThreads, 0, l.stream>>>(a);
    } else {
      dequantize_cols<BITS, 1, O><<<l.blocks, kBlockThreads, 0, l.stream>>>(a);
    }
  }
}

template <DType O>
bool launch_o(const DequantArgs& a, const Launch& l) {
  switch (a.bits) {
    case 2: launch_t<2, O>(a, l); return true;
    case 3: launch_t<3, O>(a, l); return true;
    case 4: launch_t<4, O>(a, l); return true;
    case 8: launch_t<8, O>(a, l); return true;
    default: return false;
  }
}

}  // namespace

int launch_dequantize(const DequantArgs& a, DType out_dtype, const Launch& l) {
  bool known = false;
  switch (out_dtype) {
    case DType::F32: known = launch_o<DType::F32>(a, l); break;
    case DType::F16: known = launch_o<DType::F16>(a, l); break;
    case DType::BF16: known = launch_o<DType::BF16>(a, l); break;
    default: break;
  }
  if (!known) return int(cudaErrorInvalidValue);
  return int(cudaGetLastError());
}

}  // namespace qpack::cudak
