// Dequantize kernels: x_hat = fma(q, S, M) (docs/quantization.md §6) for a
// tile, written as F32, F16 or BF16. One thread per slice (8 elements along
// the group axis) and V adjacent columns; the byte-gathering and decoding
// live in qpack/dequant_device.cuh so that fused kernels elsewhere decode the
// same way. Each thread's stores are V (or 8) consecutive output elements, so
// a warp writes whole contiguous lines.
#include <cuda_runtime.h>

#include <cstdint>

#include "dequant_device.cuh"
#include "kernel_args.hpp"

namespace qpack::kernels {
namespace {

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
        for (int k = 0; k < 8; ++k) h[k] = kernels::output_bits<O>(x[i + k]);
        *reinterpret_cast<uint4*>(dst + i) = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16),
                                                        h[4] | (h[5] << 16), h[6] | (h[7] << 16));
      }
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) dst[i] = uint16_t(kernels::output_bits<O>(x[i]));
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
  for (int i = 0; i < V; ++i) out[i] = spec::load_param(base, index + i, sd);
}

// Stored parameters as float32 by the hardware conversions (exact for every
// finite value and +-Inf; NaN payloads may differ from the reference's bit
// conversion). Returns false when any of the V is NaN or +-Inf: the caller
// then converts with load_params and stores through the general path, so
// non-finite parameters keep the reference's bits. When all parameters are
// finite, fma(q, S, M) is never NaN, which is what the packed output
// conversions below rely on.
template <int V>
__device__ __forceinline__ bool load_params_finite(const uint8_t* base, int64_t index, DType sd,
                                                   float (&out)[V]) {
  uint32_t bits[V];
  if (sd == DType::F32) {
    const uint32_t* p = reinterpret_cast<const uint32_t*>(base) + index;
    if constexpr (V % 4 == 0) {
#pragma unroll
      for (int i = 0; i < V; i += 4) {
        const uint4 w = *reinterpret_cast<const uint4*>(p + i);
        bits[i] = w.x;
        bits[i + 1] = w.y;
        bits[i + 2] = w.z;
        bits[i + 3] = w.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) bits[i] = p[i];
    }
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = __uint_as_float(bits[i]);
  } else {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(base) + index;
    if constexpr (V == 8) {
      const uint4 w = *reinterpret_cast<const uint4*>(p);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int i = 0; i < V; ++i) bits[i] = (i & 1) ? words[i >> 1] >> 16 : words[i >> 1] & 0xffffu;
    } else if constexpr (V == 4) {
      const uint2 w = *reinterpret_cast<const uint2*>(p);
      const uint32_t words[2] = {w.x, w.y};
#pragma unroll
      for (int i = 0; i < V; ++i) bits[i] = (i & 1) ? words[i >> 1] >> 16 : words[i >> 1] & 0xffffu;
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) bits[i] = p[i];
    }
    if (sd == DType::F16) {
#pragma unroll
      for (int i = 0; i < V; ++i)
        out[i] = __half2float(__ushort_as_half(static_cast<unsigned short>(bits[i])));
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) out[i] = __uint_as_float(bits[i] << 16);
    }
  }
  bool finite = true;
#pragma unroll
  for (int i = 0; i < V; ++i) finite = finite && spec::is_finite_f32(out[i]);
  return finite;
}

// store_out for values that are not NaN: F16 by the packed conversion
// (cvt.rn.f16x2.f32 rounds to nearest even with subnormals and overflow to
// Inf, as f32_to_f16_rne does for every non-NaN input).
template <DType O, int N>
__device__ __forceinline__ void store_out_nonnan(void* out, int64_t index, const float (&x)[N]) {
  if constexpr (O == DType::F16 && N % 8 == 0) {
    uint16_t* dst = static_cast<uint16_t*>(out) + index;
#pragma unroll
    for (int i = 0; i < N; i += 8) {
      uint32_t h[4];
#pragma unroll
      for (int k = 0; k < 4; ++k)  // upper half from the first operand
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(h[k]) : "f"(x[i + 2 * k + 1]), "f"(x[i + 2 * k]));
      *reinterpret_cast<uint4*>(dst + i) = make_uint4(h[0], h[1], h[2], h[3]);
    }
  } else {
    store_out<O, N>(out, index, x);
  }
}

// x_hat of a stored code: spec::decode (fma(q, S, M)) with the width and the
// symmetric offset known at compile time, or spec::decode_int ((q - z) * S)
// for integer zero-points (uniform across a launch: no divergence).
template <int BITS, bool SYM>
__device__ __forceinline__ float decode(uint32_t code, float scale, float zero, bool integer) {
  return !SYM && integer ? spec::decode_int(code, scale, zero)
                         : spec::decode(code, scale, zero, SYM, BITS);
}

// A whole slice (8 rows) of V columns with finite parameters: codes straight
// from the byte planes (every plane of a whole slice exists), packed stores.
template <int BITS, int V, DType O, bool SYM>
__device__ __forceinline__ void dequant_slice_cols_finite(const uint8_t* plane0, int64_t pitch,
                                                          int64_t s, const float (&scale)[V],
                                                          const float (&zero)[V], void* out,
                                                          int64_t first, int64_t out_pitch,
                                                          bool integer) {
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  if constexpr (BITS == 3) {
    SliceStream<BITS> st[V];
    kernels::load_slice_planes<BITS, V>(plane0, pitch, s, (s + 1) * BITS, st);
#pragma unroll
    for (int r = 0; r < kSliceRows; ++r) {
      float x[V];
#pragma unroll
      for (int v = 0; v < V; ++v)
        x[v] = decode<BITS, SYM>(kernels::slice_code<BITS>(st[v], r), scale[v], zero[v], integer);
      store_out_nonnan<O, V>(out, first + r * out_pitch, x);
    }
  } else {
    uint64_t pl[BITS];
#pragma unroll
    for (int j = 0; j < BITS; ++j) pl[j] = kernels::load_bytes<V>(plane0 + (s * BITS + j) * pitch);
#pragma unroll
    for (int r = 0; r < kSliceRows; ++r) {
      float x[V];
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const uint64_t w = pl[(r * BITS) >> 3];
        const uint32_t code = uint32_t(w >> (8 * v + ((r * BITS) & 7))) & kMask;
        x[v] = decode<BITS, SYM>(code, scale[v], zero[v], integer);
      }
      store_out_nonnan<O, V>(out, first + r * out_pitch, x);
    }
  }
}

// Groups down columns: thread = (group row, slice, column chunk of V), the
// column chunk fastest so that neighbouring threads write neighbouring columns.
template <int BITS, int V, DType O>
__global__ void __launch_bounds__(kBlockThreads) dequantize_cols(const DequantArgs a) {
  pdl_prologue();
  const TileGeometry& g = a.geo;
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
    const int64_t n = min(int64_t(kSliceRows), len - s * kSliceRows);
    if (n <= 0) continue;  // padding slice of a partial group: no outputs
    const uint8_t* plane0 = a.codes + int64_t(lgr) * g.bytes * g.ncols + col;
    const int64_t pidx = int64_t(lgr) * g.ncols + col;
    const int64_t row = o * g.axis_len + gi * g.group + s * kSliceRows - g.row_begin;
    float scale[V], zero[V];
    bool finite = load_params_finite<V>(a.scales, pidx, a.scale_dtype, scale);
    if (a.symmetric) {
#pragma unroll
      for (int v = 0; v < V; ++v) zero[v] = 0.0f;
    } else {
      finite = load_params_finite<V>(a.zeros, pidx, a.scale_dtype, zero) && finite;
    }
    if (finite && n == kSliceRows) {
      if (a.symmetric) {
        dequant_slice_cols_finite<BITS, V, O, true>(plane0, g.ncols, s, scale, zero, a.out,
                                                    row * g.ncols + col, g.ncols, false);
      } else {
        dequant_slice_cols_finite<BITS, V, O, false>(plane0, g.ncols, s, scale, zero, a.out,
                                                     row * g.ncols + col, g.ncols, a.integer_zero);
      }
      continue;
    }
    if (!finite) {
      load_params<V>(a.scales, pidx, a.scale_dtype, scale);
      if (!a.symmetric) load_params<V>(a.zeros, pidx, a.scale_dtype, zero);
    }
    SliceStream<BITS> st[V];
    kernels::load_slice_planes<BITS, V>(plane0, g.ncols, s, g.bytes, st);
#pragma unroll
    for (int r = 0; r < kSliceRows; ++r)
      if (r < n) {
        float x[V];
#pragma unroll
        for (int v = 0; v < V; ++v)
          x[v] = spec::decode_scheme(kernels::slice_code<BITS>(st[v], r), scale[v], zero[v],
                                     a.symmetric, a.integer_zero, BITS);
        store_out<O, V>(a.out, (row + r) * g.ncols + col, x);
      }
  }
}

// Contiguous groups (one-column tiles): thread = (group row, slice, part)
// with EPT elements per thread (4 for F32 output: one 16-byte store each, a
// warp storing 512 contiguous bytes).
template <int BITS, bool VEC, DType O, int EPT>
__global__ void __launch_bounds__(kBlockThreads) dequantize_rows(const DequantArgs a) {
  pdl_prologue();
  const TileGeometry& g = a.geo;
  constexpr uint32_t kParts = kSliceRows / EPT;
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
    const int64_t n = min(int64_t(EPT), len - int64_t(s) * kSliceRows - h * EPT);
    if (n <= 0) continue;
    const uint8_t* group_codes = a.codes + int64_t(lgr) * g.bytes;
    const SliceStream<BITS> st =
        VEC ? kernels::load_slice_contiguous_aligned<BITS>(group_codes, s)
            : kernels::load_slice_contiguous<BITS>(group_codes, s, g.bytes);
    const float scale = spec::load_param(a.scales, lgr, a.scale_dtype);
    const float zero = a.symmetric ? 0.0f : spec::load_param(a.zeros, lgr, a.scale_dtype);
    float x[EPT];
#pragma unroll
    for (int k = 0; k < EPT; ++k)
      x[k] = spec::decode_scheme(kernels::slice_code<BITS>(st, h * EPT + k), scale, zero,
                                 a.symmetric, a.integer_zero, BITS);
    const int64_t first =
        o * g.axis_len + gi * g.group + int64_t(s) * kSliceRows + h * EPT - g.row_begin;
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

// A stored parameter's bits as float32 by the hardware conversion (see
// load_params_finite).
__device__ __forceinline__ float param_from_bits(uint32_t bits, DType sd) {
  if (sd == DType::F16) return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  return __uint_as_float(sd == DType::BF16 ? bits << 16 : bits);
}

// Contiguous whole groups (one-column tiles, L % G' == 0, G' % 8 == 0): the
// launch's elements are one array, item i covers elements [i*EPT, i*EPT+EPT)
// of slice i / kParts (codes at byte slice*BITS) of group row i / per_gr. A
// warp stores 512 contiguous bytes per item (EPT = 4 for F32, 8 for 16-bit
// outputs) and takes kRowItems consecutive runs of 32 items, all loads
// (codes, raw parameter bits) issued before the first use, which measured far
// faster than one item per thread with the loads behind per-item branches
// (docs/kernels.md, rejected designs).
template <int BITS, DType O>
__global__ void __launch_bounds__(kBlockThreads) dequantize_rows_whole(const DequantArgs a) {
  pdl_prologue();
  constexpr int ITEMS = kRowItems;
  constexpr int EPT = O == DType::F32 ? kF32Part : kSliceRows;
  constexpr uint32_t kParts = kSliceRows / EPT;
  const TileGeometry& g = a.geo;
  const uint32_t lane = threadIdx.x & 31;
  const uint32_t span = 32 * ITEMS;
  const uint32_t step = ((gridDim.x * blockDim.x) >> 5) * span;
  for (uint32_t wb = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * span; wb < g.tasks;
       wb += step) {
    uint32_t lgr[ITEMS], sraw[ITEMS], zraw[ITEMS];
    SliceStream<BITS> st[ITEMS];
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const uint32_t i = wb + 32 * k + lane;
      const uint32_t item = i < g.tasks ? i : wb;  // past the end: a valid item, nothing stored
      lgr[k] = g.per_gr.div(item);
      st[k] = kernels::load_slice_contiguous_aligned<BITS>(a.codes, item / kParts);
    }
    if (a.scale_dtype == DType::F32) {
#pragma unroll
      for (int k = 0; k < ITEMS; ++k) {
        sraw[k] = reinterpret_cast<const uint32_t*>(a.scales)[lgr[k]];
        zraw[k] = a.symmetric ? 0u : reinterpret_cast<const uint32_t*>(a.zeros)[lgr[k]];
      }
    } else {
#pragma unroll
      for (int k = 0; k < ITEMS; ++k) {
        sraw[k] = reinterpret_cast<const uint16_t*>(a.scales)[lgr[k]];
        zraw[k] = a.symmetric ? 0u : reinterpret_cast<const uint16_t*>(a.zeros)[lgr[k]];
      }
    }
    float scale[ITEMS], zero[ITEMS];
    bool finite = true;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      scale[k] = param_from_bits(sraw[k], a.scale_dtype);
      zero[k] = param_from_bits(zraw[k], a.scale_dtype);  // +0 for symmetric
      finite = finite && spec::is_finite_f32(scale[k]) && spec::is_finite_f32(zero[k]);
    }
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const uint32_t i = wb + 32 * k + lane;
      if (i >= g.tasks) break;
      const int h = int(i % kParts);
      float x[EPT];
      if (finite) {
        if (a.symmetric) {
#pragma unroll
          for (int e = 0; e < EPT; ++e)
            x[e] = decode<BITS, true>(kernels::slice_code<BITS>(st[k], h * EPT + e), scale[k],
                                      zero[k], false);
        } else {
#pragma unroll
          for (int e = 0; e < EPT; ++e)
            x[e] = decode<BITS, false>(kernels::slice_code<BITS>(st[k], h * EPT + e), scale[k],
                                       zero[k], a.integer_zero);
        }
        store_out_nonnan<O, EPT>(a.out, int64_t(i) * EPT, x);
      } else {
        // Non-finite parameters: the reference's conversions and output rounding.
        const float sc = spec::load_param(a.scales, lgr[k], a.scale_dtype);
        const float ze = a.symmetric ? 0.0f : spec::load_param(a.zeros, lgr[k], a.scale_dtype);
#pragma unroll
        for (int e = 0; e < EPT; ++e)
          x[e] = spec::decode_scheme(kernels::slice_code<BITS>(st[k], h * EPT + e), sc, ze,
                                     a.symmetric, a.integer_zero, BITS);
        store_out<O, EPT>(a.out, int64_t(i) * EPT, x);
      }
    }
  }
}

template <int BITS, DType O>
void launch_t(const DequantArgs& a, const Launch& l) {
  constexpr int kPart = O == DType::F32 ? kF32Part : kSliceRows;  // see kF32Part
  if (l.rows && l.window) {
    launch_kernel(dequantize_rows_whole<BITS, O>, l.blocks, kBlockThreads, l, a);
  } else if (l.rows) {
    if (l.vector) {
      launch_kernel(dequantize_rows<BITS, true, O, kPart>, l.blocks, kBlockThreads, l, a);
    } else {
      launch_kernel(dequantize_rows<BITS, false, O, kSliceRows>, l.blocks, kBlockThreads, l, a);
    }
  } else {
    if (l.vector) {
      launch_kernel(dequantize_cols<BITS, kPart, O>, l.blocks, kBlockThreads, l, a);
    } else {
      launch_kernel(dequantize_cols<BITS, 1, O>, l.blocks, kBlockThreads, l, a);
    }
  }
}

template <DType O>
bool launch_o(const DequantArgs& a, const Launch& l) {
  switch (a.bits) {
    case 2:
      launch_t<2, O>(a, l);
      return true;
    case 3:
      launch_t<3, O>(a, l);
      return true;
    case 4:
      launch_t<4, O>(a, l);
      return true;
    case 8:
      launch_t<8, O>(a, l);
      return true;
    default:
      return false;
  }
}

}  // namespace

int launch_dequantize(const DequantArgs& a, DType out_dtype, const Launch& l) {
  bool known = false;
  switch (out_dtype) {
    case DType::F32:
      known = launch_o<DType::F32>(a, l);
      break;
    case DType::F16:
      known = launch_o<DType::F16>(a, l);
      break;
    case DType::BF16:
      known = launch_o<DType::BF16>(a, l);
      break;
    default:
      break;
  }
  if (!known) return int(cudaErrorInvalidValue);
  return int(cudaGetLastError());
}

}  // namespace qpack::kernels
