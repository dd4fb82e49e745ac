// The quantize kernels. Every arithmetic step is a quant_math.hpp function
// (qp_params_asym/sym, qp_encode_asym/sym), so scales, zero-points and codes
// are those of quantize_reference by construction; what lives here is only
// data movement: who loads which elements, how a group's min/max is combined
// across threads, and how codes are packed into the [group row][B][cols]
// layout.
//
// Two shapes, both memory-bound and built around 8-element slices
// (kSliceRows):
//
//  * quantize_cols: groups run down a column (axis != -1, tile wider than one
//    column). A thread owns V adjacent columns (one 16-byte load per row) and
//    the slices s = ty, ty + TL, ... of the group. The TL lanes that share
//    the same columns sit in one warp and combine min/max with xor shuffles;
//    the 32/TL column chunks of a warp are adjacent, so each row of a warp's
//    load is contiguous. Each thread then writes whole code bytes: plane
//    s*b + j of its V columns in one V-byte store.
//
//  * quantize_rows: each group is contiguous (axis -1, or a one-column tile).
//    A thread owns 8 consecutive elements (one 16-byte load for 16-bit
//    sources) and writes their b bytes; the T lanes of a group combine
//    min/max with xor shuffles.
//
// A thread keeps its first slice in registers; only groups longer than
// 8 * TL rows (TL <= 32) are read twice. Non-finite detection is free for
// 16-bit sources (NaN-propagating packed min/max: the statistics themselves
// turn non-finite) and one FMA per element for F32 (x*0 + acc is NaN exactly
// when some x is NaN or +-Inf); only a thread that saw one takes the slow path that finds the smallest flat index
// (policy Error) or replaces them with +0 (policy Zero).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernel_args.hpp"
#include "dequant_device.cuh"
#include "qpack/spec/group_params.hpp"

namespace qpack::kernels {

using kernels::SliceStream;

template <DType D>
struct Src;
template <>
struct Src<DType::F16> {
  static constexpr int kBytes = 2;
  __device__ static float convert(uint32_t raw) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(raw)));  // exact widening
  }
};
template <>
struct Src<DType::BF16> {
  static constexpr int kBytes = 2;
  __device__ static float convert(uint32_t raw) { return __uint_as_float(raw << 16); }
};
template <>
struct Src<DType::F32> {
  static constexpr int kBytes = 4;
  __device__ static float convert(uint32_t raw) { return __uint_as_float(raw); }
};

// N consecutive source elements held as raw 32-bit words (two 16-bit
// elements per word), converted to float32 only when used, so a slice of
// 8 rows x 8 fp16 columns costs 32 registers.
template <DType D, int N>
struct Packet {
  static constexpr int kBytes = N * Src<D>::kBytes;
  static constexpr int kWords = (kBytes + 3) / 4;
  uint32_t w[kWords];

  __device__ __forceinline__ float get(int e) const {
    if constexpr (Src<D>::kBytes == 4) {
      return Src<D>::convert(w[e]);
    } else {
      return Src<D>::convert((e & 1) ? (w[e >> 1] >> 16) : (w[e >> 1] & 0xffffu));
    }
  }
  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = 0;
  }
  // All N elements; p is aligned to min(16, kBytes).
  __device__ __forceinline__ void load_vec(const uint8_t* p) {
    if constexpr (kBytes % 16 == 0) {
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
        w[4 * i] = v.x;
        w[4 * i + 1] = v.y;
        w[4 * i + 2] = v.z;
        w[4 * i + 3] = v.w;
      }
    } else if constexpr (kBytes == 8) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
      w[0] = v.x;
      w[1] = v.y;
    } else if constexpr (kBytes == 4) {
      w[0] = __ldg(reinterpret_cast<const unsigned int*>(p));
    } else {
      static_assert(kBytes == 2, "unexpected packet size");
      w[0] = __ldg(reinterpret_cast<const unsigned short*>(p));
    }
  }
  // The first n (0..N) elements one at a time (any alignment of the element
  // type); the others read as +0.
  __device__ __forceinline__ void load_scalar(const uint8_t* p, int n) {
    clear();
#pragma unroll
    for (int e = 0; e < N; ++e) {
      if (e < n) {
        if constexpr (Src<D>::kBytes == 4) {
          w[e] = __ldg(reinterpret_cast<const unsigned int*>(p) + e);
        } else {
          const uint32_t h = __ldg(reinterpret_cast<const unsigned short*>(p) + e);
          w[e >> 1] |= (e & 1) ? (h << 16) : h;
        }
      }
    }
  }
};

// A 16-byte packet from a 16-byte load (or a shared-memory word).
template <DType D, int V>
__device__ __forceinline__ void packet_from(Packet<D, V>& p, const uint4& v) {
  static_assert(Packet<D, V>::kWords == 4, "16-byte packets only");
  p.w[0] = v.x;
  p.w[1] = v.y;
  p.w[2] = v.z;
  p.w[3] = v.w;
}

// ------------------------------------------------------------ small pieces

// Running statistics of a group: asymmetric min/max (the reference starts
// from x[0]; starting from +-Inf gives the same min/max once an element is
// seen), symmetric max |x| from +0 as in the reference.
template <bool SYM>
struct Stats {
  float lo, hi;
  __device__ __forceinline__ void init() {
    lo = __int_as_float(0x7f800000);               // +Inf
    hi = SYM ? 0.0f : __int_as_float(0xff800000);  // -Inf
  }
  __device__ __forceinline__ void add(float x) {
    if (SYM) {
      hi = fmaxf(hi, fabsf(x));
    } else {
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
  }
  // Combine with the lanes lane^off for off = first, 2*first, ..., < last.
  __device__ __forceinline__ void reduce(int first, int last) {
    for (int off = first; off < last; off <<= 1) {
      if (!SYM) lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
      hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
    }
  }
  __device__ __forceinline__ spec::GroupParams params(int bits, DType sd) const {
    return SYM ? spec::params_sym(hi, bits, sd) : spec::params_asym(lo, hi, bits, sd);
  }
};

// What encoding needs of a group's parameters (the reference's encoders
// read only these two fields).
struct GroupCode {
  float zero, inv;
};

// The stored code of x. The reference computes t = fl(fl(x - M) * inv)
// (symmetric: fl(x * inv)) with the same two roundings as here, then clamps
// rint(t) to [0, Q] ([-Q, Q]) in float. For every group whose parameters do
// not overflow, |t| < 2^31: with F32 scales M = mn and t <= 2Q; otherwise
// |x - M| <= (mx - mn) + ulp(M)/2 and S >= 2^-24 (F16; the worst case is
// 16 * 2^24 = 2^28) or S >= ulp_f32(mn)/Q (BF16: t <= 2^23). So the
// round-to-nearest-even conversion to int32 is exactly rint(t), and the
// integer clamp is the same clamp, in 3 instructions instead of 6.
template <bool SYM>
__device__ __forceinline__ uint32_t encode(float x, const GroupCode& c, int bits) {
  if (SYM) {
    const int q = (1 << (bits - 1)) - 1;
    const int r = __float2int_rn(spec::mul_f32(x, c.inv));
    return uint32_t(min(max(r, -q), q) + (1 << (bits - 1)));
  }
  const int q = (1 << bits) - 1;
  const int r = __float2int_rn(spec::mul_f32(spec::sub_f32(x, c.zero), c.inv));
  return uint32_t(min(max(r, 0), q));
}

// Halfwise min or max of two packed F16/BF16 pairs; kNaN: NaN-propagating
// (min.NaN / max.NaN), else the IEEE minNum/maxNum selection.
template <DType D, bool kMax, bool kNaN>
__device__ __forceinline__ uint32_t packed_minmax(uint32_t a, uint32_t b) {
  uint32_t r;
  if constexpr (D == DType::F16 && !kMax && !kNaN) asm("min.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (D == DType::F16 && kMax && !kNaN) asm("max.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (D == DType::F16 && !kMax) asm("min.NaN.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (D == DType::F16) asm("max.NaN.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (!kMax && !kNaN) asm("min.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (kMax && !kNaN) asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (!kMax) asm("min.NaN.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else asm("max.NaN.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

// Two 16-bit source values packed in a 32-bit word, as the loads deliver
// them. min/max/abs are exact selections, so statistics on packed pairs equal
// the float32 ones.
template <DType D>
struct Pair {
  static constexpr uint32_t kExp = D == DType::F16 ? 0x7c00u : 0x7f80u;  // all-ones exponent
  static constexpr uint32_t kPosInf = D == DType::F16 ? 0x7c007c00u : 0x7f807f80u;
  static constexpr uint32_t kNegInf = D == DType::F16 ? 0xfc00fc00u : 0xff80ff80u;
  __device__ static __forceinline__ uint32_t min(uint32_t a, uint32_t b) { return packed_minmax<D, false, false>(a, b); }
  __device__ static __forceinline__ uint32_t max(uint32_t a, uint32_t b) { return packed_minmax<D, true, false>(a, b); }
  // |x| of both halves: clearing the sign bits is exact (and maps -0 to +0).
  __device__ static __forceinline__ uint32_t abs(uint32_t a) { return a & 0x7fff7fffu; }
  // Non-finite halves replaced by +0 (policy Zero, and the slow path).
  __device__ static __forceinline__ uint32_t sanitize(uint32_t w) {
    if ((w & kExp) == kExp) w &= 0xffff0000u;
    if (((w >> 16) & kExp) == kExp) w &= 0x0000ffffu;
    return w;
  }
  __device__ static __forceinline__ float lo(uint32_t w) { return Src<D>::convert(w & 0xffffu); }
  __device__ static __forceinline__ float hi(uint32_t w) { return Src<D>::convert(w >> 16); }
};

// Pairwise min/max that propagate NaN: a group's packed statistics are
// non-finite exactly when one of its elements is NaN or +-Inf (min/max are
// exact selections, so finite results equal the float32 ones).
template <DType D>
struct PairNaN {
  __device__ static __forceinline__ uint32_t min(uint32_t a, uint32_t b) { return packed_minmax<D, false, true>(a, b); }
  __device__ static __forceinline__ uint32_t max(uint32_t a, uint32_t b) { return packed_minmax<D, true, true>(a, b); }
  // Bit 15 of each half of the result is set when that half of w is NaN or
  // +-Inf (|h| + (0x8000 - exponent mask) carries into bit 15; no carry
  // crosses halves). Or-able across words.
  __device__ static __forceinline__ uint32_t nonfinite_bits(uint32_t w) {
    constexpr uint32_t k = (0x8000u - Pair<D>::kExp) * 0x10001u;
    return (w & 0x7fff7fffu) + k;
  }
};

// Min/max (asymmetric) or max |x| (symmetric) of N columns over the rows
// added to it. 16-bit sources with an even N work on packed pairs with
// NaN-propagating min/max, so a non-finite element shows in lo/hi; others
// in float32, where `det` tracks non-finite values.
template <DType D, int N, bool SYM>
struct Acc {
  static constexpr bool kPacked = Src<D>::kBytes == 2 && N % 2 == 0;
  static constexpr int kW = kPacked ? N / 2 : N;  // words (pairs) or floats
  uint32_t lo[kW], hi[kW];                        // float bits when !kPacked
  uint32_t det;

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int i = 0; i < kW; ++i) {
      if constexpr (kPacked) {
        lo[i] = Pair<D>::kPosInf;
        hi[i] = SYM ? 0u : Pair<D>::kNegInf;
      } else {
        lo[i] = 0x7f800000u;
        hi[i] = SYM ? 0u : 0xff800000u;
      }
    }
    det = 0;
  }
  // One row of N values.
  template <bool SANITIZE>
  __device__ __forceinline__ void add(const Packet<D, N>& p) {
#pragma unroll
    for (int i = 0; i < kW; ++i) {
      if constexpr (kPacked) {
        uint32_t w = p.w[i];
        if (SANITIZE) w = Pair<D>::sanitize(w);
        if (SYM) {
          hi[i] = PairNaN<D>::max(hi[i], Pair<D>::abs(w));
        } else {
          lo[i] = PairNaN<D>::min(lo[i], w);
          hi[i] = PairNaN<D>::max(hi[i], w);
        }
      } else {
        float x = p.get(i);
        if (SANITIZE && !spec::is_finite_f32(x)) x = 0.0f;
        det = __float_as_uint(__fmaf_rn(x, 0.0f, __uint_as_float(det)));
        if (SYM) {
          hi[i] = __float_as_uint(fmaxf(__uint_as_float(hi[i]), fabsf(x)));
        } else {
          lo[i] = __float_as_uint(fminf(__uint_as_float(lo[i]), x));
          hi[i] = __float_as_uint(fmaxf(__uint_as_float(hi[i]), x));
        }
      }
    }
  }
  // Packed: some lo/hi half is NaN or infinite. That includes a column to
  // which no row was added (lo still +Inf): a false alarm that only sends
  // an empty slice through the (then trivial) slow path. Float32: det only
  // ever holds +-0 or NaN (x*0 is +-0 for finite x).
  __device__ __forceinline__ bool bad() const {
    if constexpr (kPacked) {
      uint32_t m = 0;
#pragma unroll
      for (int i = 0; i < kW; ++i) {
        m |= PairNaN<D>::nonfinite_bits(hi[i]);
        if (!SYM) m |= PairNaN<D>::nonfinite_bits(lo[i]);
      }
      return (m & 0x80008000u) != 0u;
    } else {
      return (det & 0x7fffffffu) != 0u;
    }
  }
  // Combine with lanes lane^off, off = first, 2*first, ... < last.
  __device__ __forceinline__ void reduce(int first, int last) {
    for (int off = first; off < last; off <<= 1) {
#pragma unroll
      for (int i = 0; i < kW; ++i) {
        const uint32_t l = __shfl_xor_sync(0xffffffffu, lo[i], off);
        const uint32_t h = __shfl_xor_sync(0xffffffffu, hi[i], off);
        if constexpr (kPacked) {
          if (!SYM) lo[i] = Pair<D>::min(lo[i], l);
          hi[i] = Pair<D>::max(hi[i], h);
        } else {
          if (!SYM) lo[i] = __float_as_uint(fminf(__uint_as_float(lo[i]), __uint_as_float(l)));
          hi[i] = __float_as_uint(fmaxf(__uint_as_float(hi[i]), __uint_as_float(h)));
        }
      }
    }
  }
  __device__ __forceinline__ float lo_of(int v) const {
    if constexpr (kPacked) {
      return (v & 1) ? Pair<D>::hi(lo[v >> 1]) : Pair<D>::lo(lo[v >> 1]);
    } else {
      return __uint_as_float(lo[v]);
    }
  }
  __device__ __forceinline__ float hi_of(int v) const {
    if constexpr (kPacked) {
      return (v & 1) ? Pair<D>::hi(hi[v >> 1]) : Pair<D>::lo(hi[v >> 1]);
    } else {
      return __uint_as_float(hi[v]);
    }
  }
  __device__ __forceinline__ spec::GroupParams params(int v, int bits, DType sd) const {
    return SYM ? spec::params_sym(hi_of(v), bits, sd) : spec::params_asym(lo_of(v), hi_of(v), bits, sd);
  }
  // All N columns folded into one (a contiguous group's chunk of N elements).
  __device__ __forceinline__ void fold(float& l, float& h) const {
    if constexpr (kPacked) {
      uint32_t a = lo[0], b = hi[0];
#pragma unroll
      for (int i = 1; i < kW; ++i) {
        if (!SYM) a = Pair<D>::min(a, lo[i]);
        b = Pair<D>::max(b, hi[i]);
      }
      l = fminf(Pair<D>::lo(a), Pair<D>::hi(a));
      h = fmaxf(Pair<D>::lo(b), Pair<D>::hi(b));
    } else {
      l = __uint_as_float(lo[0]);
      h = __uint_as_float(hi[0]);
#pragma unroll
      for (int i = 1; i < kW; ++i) {
        l = fminf(l, __uint_as_float(lo[i]));
        h = fmaxf(h, __uint_as_float(hi[i]));
      }
    }
  }
};

// Stores the low V bytes of w at p (aligned to V when V is 2, 4 or 8).
template <int V>
__device__ __forceinline__ void store_bytes(uint8_t* p, uint64_t w) {
  if constexpr (V == 8) {
    *reinterpret_cast<uint2*>(p) = make_uint2(uint32_t(w), uint32_t(w >> 32));
  } else if constexpr (V == 4) {
    *reinterpret_cast<uint32_t*>(p) = uint32_t(w);
  } else if constexpr (V == 2) {
    *reinterpret_cast<uint16_t*>(p) = uint16_t(w);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = uint8_t(w >> (8 * i));
  }
}

// Writes the stored scales (or zero-points) of V adjacent groups, given as
// bit patterns (float32 bits for F32, the 16-bit pattern otherwise), from
// parameter index `index` (a multiple of V when V > 1: the store is aligned).
template <int V>
__device__ __forceinline__ void store_params(uint8_t* base, int64_t index, DType sd,
                                             const uint32_t (&bits)[V]) {
  if (sd == DType::F32) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(base) + index;
    if constexpr (V % 4 == 0) {
#pragma unroll
      for (int i = 0; i < V; i += 4)
        *reinterpret_cast<uint4*>(dst + i) = make_uint4(bits[i], bits[i + 1], bits[i + 2], bits[i + 3]);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) dst[i] = bits[i];
    }
  } else {
    uint16_t* dst = reinterpret_cast<uint16_t*>(base) + index;
    if constexpr (V == 8) {
      *reinterpret_cast<uint4*>(dst) =
          make_uint4(bits[0] | (bits[1] << 16), bits[2] | (bits[3] << 16), bits[4] | (bits[5] << 16),
                     bits[6] | (bits[7] << 16));
    } else if constexpr (V == 4) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(bits[0] | (bits[1] << 16), bits[2] | (bits[3] << 16));
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) dst[i] = uint16_t(bits[i]);
    }
  }
}

__device__ __forceinline__ int clamp_rows(int64_t remaining) {
  return remaining <= 0 ? 0 : (remaining >= kSliceRows ? kSliceRows : int(remaining));
}

// ------------------------------------------------------------ column groups

template <DType D, int V>
__device__ __forceinline__ void load_slice(Packet<D, V> (&rows)[kSliceRows], const uint8_t* p,
                                           int64_t pitch_bytes, int n) {
#pragma unroll
  for (int r = 0; r < kSliceRows; ++r) {
    if (r < n) {
      rows[r].load_vec(p + r * pitch_bytes);
    } else {
      rows[r].clear();
    }
  }
}

template <DType D, bool SYM, int V, bool SANITIZE>
__device__ __forceinline__ void add_slice(const Packet<D, V> (&rows)[kSliceRows], int n,
                                          Acc<D, V, SYM>& acc) {
#pragma unroll
  for (int r = 0; r < kSliceRows; ++r)
    if (r < n) acc.template add<SANITIZE>(rows[r]);
}

// Smallest flat index of a non-finite value in a slice (slow path only).
template <DType D, int V>
__device__ __forceinline__ unsigned long long first_nonfinite_in(
    const Packet<D, V> (&rows)[kSliceRows], int n, int64_t first_row, int64_t inner,
    int64_t first_col) {
  unsigned long long best = cuda::kNoIndex;
#pragma unroll
  for (int r = 0; r < kSliceRows; ++r)
    if (r < n) {
#pragma unroll
      for (int v = 0; v < V; ++v)
        if (!spec::is_finite_f32(rows[r].get(v))) {
          const unsigned long long flat = (first_row + r) * inner + first_col + v;
          best = flat < best ? flat : best;
        }
    }
  return best;
}

// Byte j of each of the V column streams, as V consecutive bytes (column v
// in byte v): a byte transpose done with PRMT, 3 per 4 bytes.
template <int BITS, int V>
__device__ __forceinline__ uint64_t plane_bytes(const SliceStream<BITS> (&st)[V], int j) {
  uint32_t w[V];
#pragma unroll
  for (int v = 0; v < V; ++v) w[v] = uint32_t(st[v] >> (j >= 4 ? 32 : 0));
  const uint32_t b = uint32_t(j & 3);
  if constexpr (V >= 2) {
    const uint32_t sel = b | ((b + 4) << 4);  // bytes 0, 1 = byte b of the two inputs
    uint32_t pair[V / 2];
#pragma unroll
    for (int i = 0; i < V / 2; ++i) pair[i] = __byte_perm(w[2 * i], w[2 * i + 1], sel);
    if constexpr (V == 2) {
      return pair[0] & 0xffffu;
    } else {
      uint32_t quad[V / 4];
#pragma unroll
      for (int i = 0; i < V / 4; ++i) quad[i] = __byte_perm(pair[2 * i], pair[2 * i + 1], 0x5410);
      if constexpr (V == 4) {
        return quad[0];
      } else {
        return uint64_t(quad[0]) | (uint64_t(quad[1]) << 32);
      }
    }
  } else {
    return (w[0] >> (8 * b)) & 0xffu;
  }
}

// Codes of one slice of V column groups, written as byte planes
// s*BITS .. s*BITS+BITS-1 (those below B) at plane0[plane * pitch].
template <DType D, int BITS, bool SYM, int V, bool SANITIZE>
__device__ __forceinline__ void encode_slice(const Packet<D, V> (&rows)[kSliceRows], int n,
                                             const GroupCode (&gc)[V], uint8_t* plane0,
                                             int64_t pitch, int64_t s, int64_t bytes_per_group) {
  SliceStream<BITS> st[V];
#pragma unroll
  for (int v = 0; v < V; ++v) st[v] = 0;
#pragma unroll
  for (int r = 0; r < kSliceRows; ++r)
    if (r < n) {
#pragma unroll
      for (int v = 0; v < V; ++v) {
        float x = rows[r].get(v);
        if (SANITIZE && !spec::is_finite_f32(x)) x = 0.0f;
        st[v] |= SliceStream<BITS>(encode<SYM>(x, gc[v], BITS)) << (r * BITS);
      }
    }
#pragma unroll
  for (int j = 0; j < BITS; ++j) {
    const int64_t plane = s * BITS + j;
    if (plane < bytes_per_group) store_bytes<V>(plane0 + plane * pitch, plane_bytes<BITS, V>(st, j));
  }
}

// After pass 1: combines the slices of each column across the lanes that
// share it (lanes ty and ty^k differ by k*txw), computes the parameters,
// stores scales/zero-points, flags overflows, and returns what encoding
// needs in every lane.
template <DType D, int BITS, bool SYM, int V>
__device__ __forceinline__ void finish_params(Acc<D, V, SYM>& acc, const QuantArgs& a, int txw,
                                              int tl, int tx, int ty, bool valid, int64_t pidx,
                                              int64_t first_group, GroupCode (&gc)[V]) {
  acc.reduce(txw, 32);
  if (tl >= V) {
    // As many lanes as columns (group sizes >= 8*V): lane ty computes column
    // ty % V and the others receive its zero-point and 1/S by shuffle, so
    // the parameter arithmetic runs once per column instead of once per lane.
    const int mine = ty & (V - 1);
    float lo = acc.lo_of(0), hi = acc.hi_of(0);
#pragma unroll
    for (int v = 1; v < V; ++v)
      if (mine == v) {
        lo = acc.lo_of(v);
        hi = acc.hi_of(v);
      }
    const spec::GroupParams p =
        SYM ? spec::params_sym(hi, BITS, a.scale_dtype) : spec::params_asym(lo, hi, BITS, a.scale_dtype);
    if (valid && ty < V) {
      const uint32_t sb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(p.scale) : p.scale_bits16};
      store_params<1>(a.scales, pidx + mine, a.scale_dtype, sb);
      if (!SYM) {
        const uint32_t zb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(p.zero) : p.zero_bits16};
        store_params<1>(a.zeros, pidx + mine, a.scale_dtype, zb);
      }
      if (p.overflow)
        atomicMin(&a.flags->first_overflow_group, static_cast<unsigned long long>(first_group + mine));
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
      gc[v].zero = SYM ? 0.0f : __shfl_sync(0xffffffffu, p.zero, v * txw + tx);
      gc[v].inv = __shfl_sync(0xffffffffu, p.inv, v * txw + tx);
    }
    return;
  }
  // Fewer lanes than columns (short groups): every lane computes all V.
  uint32_t scale_bits[V], zero_bits[V];
  uint32_t overflow = 0;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const spec::GroupParams p = acc.params(v, BITS, a.scale_dtype);
    gc[v] = {p.zero, p.inv};
    scale_bits[v] = a.scale_dtype == DType::F32 ? __float_as_uint(p.scale) : p.scale_bits16;
    zero_bits[v] = a.scale_dtype == DType::F32 ? __float_as_uint(p.zero) : p.zero_bits16;
    overflow |= uint32_t(p.overflow) << v;
  }
  if (!valid || ty != 0) return;
  store_params<V>(a.scales, pidx, a.scale_dtype, scale_bits);
  if (!SYM) store_params<V>(a.zeros, pidx, a.scale_dtype, zero_bits);
  if (overflow)
    atomicMin(&a.flags->first_overflow_group,
              static_cast<unsigned long long>(first_group + (__ffs(int(overflow)) - 1)));
}

// At most 80 registers (3 blocks of 256 per SM): the compiler's own choice
// (~108) left 16 warps per SM and measured 4-9% slower on the H100.
template <DType D, int BITS, bool SYM, int V>
__global__ void __launch_bounds__(kBlockThreads, 3) quantize_cols(const QuantArgs a) {
  pdl_prologue();
  const Geometry& g = a.geo;
  constexpr int kB = Src<D>::kBytes;
  const int lane = threadIdx.x & 31;
  const int tl = g.lanes;         // lanes per column chunk (slices in parallel)
  const int txw = 32 / tl;        // column chunks per warp
  const int tx = lane & (txw - 1);
  const int ty = lane / txw;
  const uint32_t nchunks = uint32_t(g.ncols / V);
  const uint32_t ncg = g.per_gr.d;  // warps (column-chunk groups) per group row
  const int64_t pitch_bytes = g.ncols * kB;
  const int nsl = g.nslices;
  // Groups of at most 8*tl rows (every group size up to 256): each thread
  // has one slice, kept in registers between the passes.
  const bool one_slice = nsl <= tl;

  // Warp-uniform loop: every lane of a warp runs the same iterations, so the
  // full-mask shuffles below are always legal.
  for (uint32_t task = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; task < g.tasks;
       task += (gridDim.x * blockDim.x) >> 5) {
    const uint32_t lgr = g.per_gr.div(task);
    const uint32_t cc = (task - lgr * ncg) * txw + tx;
    const bool valid = cc < nchunks;
    const int64_t col = valid ? int64_t(cc) * V : 0;
    const uint32_t along = g.gi_begin + lgr;
    const uint32_t q = g.groups.div(along);
    const int64_t o = g.o_begin + q;
    const int64_t gi = along - q * g.groups.d;
    const int64_t gr = g.gr_begin + lgr;
    const int64_t len = min(g.group, g.axis_len - gi * g.group);
    const int64_t row0 = o * g.axis_len + gi * g.group;  // tensor row of the group's element 0
    const uint8_t* src =
        static_cast<const uint8_t*>(a.src) + ((row0 - g.row_begin) * g.ncols + col) * kB;
    uint8_t* plane0 = a.codes + int64_t(lgr) * g.bytes * g.ncols + col;
    const int64_t pidx = int64_t(lgr) * g.ncols + col;
    const int64_t first_group = gr * g.inner + g.col_begin + col;
    auto rows_in = [&](int64_t s) { return valid ? clamp_rows(len - s * kSliceRows) : 0; };

    Acc<D, V, SYM> acc;
    acc.init();
    GroupCode gc[V];
    if (one_slice) {
      Packet<D, V> rows[kSliceRows];
      const int n = rows_in(ty);
      load_slice(rows, src + ty * kSliceRows * pitch_bytes, pitch_bytes, n);
      add_slice<D, SYM, V, false>(rows, n, acc);
      const bool bad = acc.bad();
      if (bad) {
        // Rare: a NaN or +-Inf. Statistics again with them as +0; the
        // smallest flat index for policy Error.
        const unsigned long long f =
            first_nonfinite_in<D, V>(rows, n, row0 + ty * kSliceRows, g.inner, g.col_begin + col);
        if (!a.zero_nonfinite && f != cuda::kNoIndex) atomicMin(&a.flags->first_nonfinite, f);
        acc.init();
        add_slice<D, SYM, V, true>(rows, n, acc);
      }
      finish_params<D, BITS, SYM, V>(acc, a, txw, tl, tx, ty, valid, pidx, first_group, gc);
      if (!valid) continue;
      if (bad) {
        encode_slice<D, BITS, SYM, V, true>(rows, n, gc, plane0, g.ncols, ty, g.bytes);
      } else {
        encode_slice<D, BITS, SYM, V, false>(rows, n, gc, plane0, g.ncols, ty, g.bytes);
      }
    } else {
      // Long groups: slices ty, ty+tl, ... read once for the statistics and
      // again for the codes.
      bool bad = false;
      for (int64_t s = ty; s < nsl; s += tl) {
        Packet<D, V> rows[kSliceRows];
        const int n = rows_in(s);
        load_slice(rows, src + s * kSliceRows * pitch_bytes, pitch_bytes, n);
        add_slice<D, SYM, V, false>(rows, n, acc);
      }
      bad = acc.bad();
      if (bad) {
        unsigned long long first_bad = cuda::kNoIndex;
        acc.init();
        for (int64_t s = ty; s < nsl; s += tl) {
          Packet<D, V> rows[kSliceRows];
          const int n = rows_in(s);
          load_slice(rows, src + s * kSliceRows * pitch_bytes, pitch_bytes, n);
          const unsigned long long f = first_nonfinite_in<D, V>(rows, n, row0 + s * kSliceRows,
                                                                g.inner, g.col_begin + col);
          first_bad = f < first_bad ? f : first_bad;
          add_slice<D, SYM, V, true>(rows, n, acc);
        }
        if (!a.zero_nonfinite && first_bad != cuda::kNoIndex)
          atomicMin(&a.flags->first_nonfinite, first_bad);
      }
      finish_params<D, BITS, SYM, V>(acc, a, txw, tl, tx, ty, valid, pidx, first_group, gc);
      if (!valid) continue;
      for (int64_t s = ty; s < nsl; s += tl) {
        Packet<D, V> rows[kSliceRows];
        const int n = rows_in(s);
        load_slice(rows, src + s * kSliceRows * pitch_bytes, pitch_bytes, n);
        if (bad) {
          encode_slice<D, BITS, SYM, V, true>(rows, n, gc, plane0, g.ncols, s, g.bytes);
        } else {
          encode_slice<D, BITS, SYM, V, false>(rows, n, gc, plane0, g.ncols, s, g.bytes);
        }
      }
    }
  }
}

// ------------------------------------------------------------ contiguous groups

template <DType D, bool VEC>
__device__ __forceinline__ void load_chunk(Packet<D, kSliceRows>& p, const uint8_t* src, int n) {
  if (VEC) {
    // The host guaranteed whole, aligned chunks (L and G' multiples of 8).
    if (n > 0) {
      p.load_vec(src);
    } else {
      p.clear();
    }
  } else {
    p.load_scalar(src, n);
  }
}

template <DType D, bool SYM>
__device__ __forceinline__ float add_chunk(const Packet<D, kSliceRows>& p, int n, Stats<SYM>& st,
                                           float det) {
#pragma unroll
  for (int e = 0; e < kSliceRows; ++e)
    if (e < n) {
      const float x = p.get(e);
      det = __fmaf_rn(x, 0.0f, det);
      st.add(x);
    }
  return det;
}

// Codes of chunk c (elements 8c .. 8c+7) of one contiguous group: bytes
// c*BITS .. c*BITS+BITS-1 of the group, those below B.
template <DType D, int BITS, bool SYM, bool VEC, bool SANITIZE>
__device__ __forceinline__ void encode_chunk(const Packet<D, kSliceRows>& p, int n,
                                             const GroupCode& gc, uint8_t* group_codes,
                                             int64_t c, int64_t bytes_per_group) {
  SliceStream<BITS> stream = 0;
#pragma unroll
  for (int e = 0; e < kSliceRows; ++e)
    if (e < n) {
      float x = p.get(e);
      if (SANITIZE && !spec::is_finite_f32(x)) x = 0.0f;
      stream |= SliceStream<BITS>(encode<SYM>(x, gc, BITS)) << (e * BITS);
    }
  uint8_t* dst = group_codes + c * BITS;
  if (VEC && BITS != 3) {
    store_bytes<BITS>(dst, uint64_t(stream));  // B is a multiple of BITS: aligned, in range
  } else {
#pragma unroll
    for (int j = 0; j < BITS; ++j)
      if (c * BITS + j < bytes_per_group) dst[j] = uint8_t(stream >> (8 * j));
  }
}

// Contiguous groups: a lane owns chunks c0 + t*k (k < kRowChunks) of its
// group, in registers, so up to 8*t chunks (64*t elements) are read once;
// t = lanes per group is the smallest power of 2 that covers the group in
// one round (1 for G' <= 64: a lane per group, and the parameter arithmetic
// runs once per 64 elements instead of once per 8). Longer groups take
// further rounds, re-read for the codes.
template <DType D, int BITS, bool SYM, bool VEC>
__global__ void __launch_bounds__(kBlockThreads) quantize_rows(const QuantArgs a) {
  pdl_prologue();
  const Geometry& g = a.geo;
  constexpr int kB = Src<D>::kBytes;
  const int lane = threadIdx.x & 31;
  const int t = g.lanes;   // lanes per group
  const int gpw = 32 / t;  // groups per warp
  const int c0 = lane & (t - 1);
  const int gw = lane / t;
  const int nch = g.nslices;        // chunks of 8 elements per group
  const int round = t * kRowChunks;  // chunks covered by one round of all t lanes

  for (uint32_t base = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * gpw; base < g.n_gr;
       base += ((gridDim.x * blockDim.x) >> 5) * gpw) {
    const uint32_t lgr = base + gw;
    const bool valid = lgr < g.n_gr;
    const uint32_t along = g.gi_begin + (valid ? lgr : 0);
    const uint32_t q = g.groups.div(along);
    const int64_t o = g.o_begin + q;
    const int64_t gi = along - q * g.groups.d;
    const int64_t gr = g.gr_begin + (valid ? lgr : 0);
    const int64_t len = min(g.group, g.axis_len - gi * g.group);
    const int64_t row0 = o * g.axis_len + gi * g.group;
    // A one-column tile: tile element (row - row_begin) is tensor row `row`.
    const uint8_t* src = static_cast<const uint8_t*>(a.src) + (row0 - g.row_begin) * kB;
    auto elems_in = [&](int64_t c) { return valid ? clamp_rows(len - c * kSliceRows) : 0; };

    // Pass 1. With VEC every chunk is whole (n is 0 or 8) and packed pairs
    // accumulate; otherwise elements past the group's end must not count and
    // the statistics go element by element.
    Packet<D, kSliceRows> first[kRowChunks];
    int n_first[kRowChunks];
#pragma unroll
    for (int k = 0; k < kRowChunks; ++k) {
      n_first[k] = elems_in(c0 + int64_t(t) * k);
      load_chunk<D, VEC>(first[k], src + (c0 + int64_t(t) * k) * kSliceRows * kB, n_first[k]);
    }
    Stats<SYM> st;
    st.init();
    bool bad;
    if (VEC) {
      Acc<D, kSliceRows, SYM> acc;
      acc.init();
#pragma unroll
      for (int k = 0; k < kRowChunks; ++k)
        if (n_first[k] > 0) acc.template add<false>(first[k]);
      for (int64_t c = c0 + round; c < nch; c += t) {
        Packet<D, kSliceRows> cur;
        const int n = elems_in(c);
        load_chunk<D, VEC>(cur, src + c * kSliceRows * kB, n);
        if (n > 0) acc.template add<false>(cur);
      }
      acc.fold(st.lo, st.hi);
      bad = acc.bad();
    } else {
      float det = 0.0f;
#pragma unroll
      for (int k = 0; k < kRowChunks; ++k) det = add_chunk<D, SYM>(first[k], n_first[k], st, det);
      for (int64_t c = c0 + round; c < nch; c += t) {
        Packet<D, kSliceRows> cur;
        const int n = elems_in(c);
        load_chunk<D, VEC>(cur, src + c * kSliceRows * kB, n);
        det = add_chunk<D, SYM>(cur, n, st, det);
      }
      bad = det != 0.0f;
    }

    if (bad) {
      // Rare: a NaN or +-Inf. Statistics again with them as +0; the
      // smallest flat index for policy Error.
      unsigned long long first_bad = cuda::kNoIndex;
      st.init();
      for (int64_t c = c0; c < nch; c += t) {
        Packet<D, kSliceRows> cur;
        const int n = elems_in(c);
        cur.load_scalar(src + c * kSliceRows * kB, n);
#pragma unroll
        for (int e = 0; e < kSliceRows; ++e)
          if (e < n) {
            float x = cur.get(e);
            if (!spec::is_finite_f32(x)) {
              const unsigned long long flat = (row0 + c * kSliceRows + e) * g.inner + g.col_begin;
              if (flat < first_bad) first_bad = flat;
              x = 0.0f;
            }
            st.add(x);
          }
      }
      if (!a.zero_nonfinite && first_bad != cuda::kNoIndex)
        atomicMin(&a.flags->first_nonfinite, first_bad);
    }

    st.reduce(1, t);
    const spec::GroupParams prm = st.params(BITS, a.scale_dtype);
    const GroupCode gc = {prm.zero, prm.inv};
    if (!valid) continue;
    if (c0 == 0) {
      const uint32_t sb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm.scale) : prm.scale_bits16};
      const uint32_t zb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm.zero) : prm.zero_bits16};
      store_params<1>(a.scales, lgr, a.scale_dtype, sb);
      if (!SYM) store_params<1>(a.zeros, lgr, a.scale_dtype, zb);
      if (prm.overflow)
        atomicMin(&a.flags->first_overflow_group,
                  static_cast<unsigned long long>(gr * g.inner + g.col_begin));
    }

    // Pass 2: every chunk below nch writes its BITS bytes (padding included).
    uint8_t* group_codes = a.codes + int64_t(lgr) * g.bytes;
#pragma unroll
    for (int k = 0; k < kRowChunks; ++k) {
      const int64_t c = c0 + int64_t(t) * k;
      if (c >= nch) break;
      if (bad) {
        encode_chunk<D, BITS, SYM, VEC, true>(first[k], n_first[k], gc, group_codes, c, g.bytes);
      } else {
        encode_chunk<D, BITS, SYM, VEC, false>(first[k], n_first[k], gc, group_codes, c, g.bytes);
      }
    }
    for (int64_t c = c0 + round; c < nch; c += t) {
      Packet<D, kSliceRows> cur;
      const int n = elems_in(c);
      load_chunk<D, VEC>(cur, src + c * kSliceRows * kB, n);
      if (bad) {
        encode_chunk<D, BITS, SYM, VEC, true>(cur, n, gc, group_codes, c, g.bytes);
      } else {
        encode_chunk<D, BITS, SYM, VEC, false>(cur, n, gc, group_codes, c, g.bytes);
      }
    }
  }
}

// ------------------------------------------------------------ contiguous groups, coalesced windows
//
// quantize_rows above gives each lane its own group: every warp load then
// touches 32 lines (ncu: L1/TEX-bound at 40-50% of copy). This kernel covers
// whole contiguous groups of 16-bit sources with G' = 8 * 2^k <= 256 (the
// common axis -1 case): a warp takes a window of gw = min(32, 256 / units)
// groups, 8-element units u = 0 .. 32*rounds-1 of which lane l loads
// u = 32k + l (k < rounds <= 8), so each warp load is 512 contiguous bytes
// and each code store is 32 * BITS contiguous bytes. Per-unit min/max go
// through shared memory to one lane per group, which computes the group's
// parameters once and hands zero-point and 1/S back the same way.

template <DType D, int BITS, bool SYM>
__global__ void __launch_bounds__(kBlockThreads) quantize_rows_window(const QuantArgs a) {
  pdl_prologue();
  static_assert(Src<D>::kBytes == 2, "16-bit sources only");
  constexpr int kWarps = kBlockThreads / 32;
  // Per warp: one (lo, hi) pair of packed halves per unit, 2 slots of
  // padding after each group (group g's partials start at g*(units+2), which
  // spreads the per-lane 16-byte reads over the banks), then the window's
  // (zero-point, 1/S, bad) per group.
  __shared__ __align__(16) uint2 part[kWarps][kWindowUnits + 2 * 32];
  __shared__ float4 prm[kWarps][32];
  const Geometry& g = a.geo;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int lg = __ffs(g.nslices) - 1;  // log2(units per group); G' = 8 << lg
  const int gw = min(32, kWindowUnits >> lg);
  const int rounds = (gw << lg) >> 5;    // loads per lane, 1..8
  const uint32_t total = g.n_gr << lg;   // units in the launch (< 2^31)
  const uint32_t windows = (g.n_gr + uint32_t(gw) - 1) / uint32_t(gw);
  const uint4* src = static_cast<const uint4*>(a.src);
  uint2* my_part = part[warp];
  float4* my_prm = prm[warp];
  auto slot = [lg](int u) { return u + ((u >> lg) << 1); };

  for (uint32_t w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < windows;
       w += (gridDim.x * blockDim.x) >> 5) {
    const uint32_t u0 = w * uint32_t(gw << lg);
    uint4 d[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t u = u0 + 32 * k + lane;
      d[k] = k < rounds && u < total ? __ldg(src + u) : make_uint4(0, 0, 0, 0);
    }
    // Partial statistics of each unit (the padding beyond `total` is +0 and
    // belongs to groups that are never stored).
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (k < rounds) {
        const uint4 v = d[k];
        uint32_t lo = 0, hi;
        if (SYM) {
          hi = PairNaN<D>::max(PairNaN<D>::max(Pair<D>::abs(v.x), Pair<D>::abs(v.y)),
                               PairNaN<D>::max(Pair<D>::abs(v.z), Pair<D>::abs(v.w)));
        } else {
          lo = PairNaN<D>::min(PairNaN<D>::min(v.x, v.y), PairNaN<D>::min(v.z, v.w));
          hi = PairNaN<D>::max(PairNaN<D>::max(v.x, v.y), PairNaN<D>::max(v.z, v.w));
        }
        my_part[slot(32 * k + lane)] = make_uint2(lo, hi);
      }
    }
    __syncwarp();

    // One lane per group: fold, parameters, scale/zero-point stores.
    if (lane < gw) {
      const uint32_t lgr = w * uint32_t(gw) + uint32_t(lane);
      const bool valid = lgr < g.n_gr;
      const int units = 1 << lg;
      const uint2* pp = my_part + slot(lane << lg);
      uint32_t lo = pp[0].x, hi = pp[0].y;
      if (units > 1) {
        const uint4* q = reinterpret_cast<const uint4*>(pp);  // 16-byte aligned: units + 2 is even
        for (int i = 0; i < units / 2; ++i) {
          const uint4 t = q[i];
          if (!SYM) lo = PairNaN<D>::min(lo, PairNaN<D>::min(t.x, t.z));
          hi = PairNaN<D>::max(hi, PairNaN<D>::max(t.y, t.w));
        }
      }
      Stats<SYM> st;
      const bool bad =
          ((PairNaN<D>::nonfinite_bits(hi) | (SYM ? 0u : PairNaN<D>::nonfinite_bits(lo))) & 0x80008000u) != 0u;
      if (bad) {
        // Rare: a NaN or +-Inf (only in a valid group: padding is +0).
        // Statistics again with them as +0; the smallest flat index for
        // policy Error.
        st.init();
        unsigned long long first_bad = cuda::kNoIndex;
        const int64_t row0 = (g.gr_begin + int64_t(lgr)) * g.group;  // whole groups
        const uint4* gsrc = src + (int64_t(lgr) << lg);
        for (int i = 0; i < units; ++i) {
          Packet<D, kSliceRows> p;
          packet_from(p, __ldg(gsrc + i));
#pragma unroll
          for (int e = 0; e < kSliceRows; ++e) {
            float x = p.get(e);
            if (!spec::is_finite_f32(x)) {
              const unsigned long long flat = (row0 + i * kSliceRows + e) * g.inner + g.col_begin;
              if (flat < first_bad) first_bad = flat;
              x = 0.0f;
            }
            st.add(x);
          }
        }
        if (!a.zero_nonfinite && first_bad != cuda::kNoIndex)
          atomicMin(&a.flags->first_nonfinite, first_bad);
      } else {
        st.lo = fminf(Pair<D>::lo(lo), Pair<D>::hi(lo));
        st.hi = fmaxf(Pair<D>::lo(hi), Pair<D>::hi(hi));
      }
      const spec::GroupParams prm_ = st.params(BITS, a.scale_dtype);
      if (valid) {
        const uint32_t sb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm_.scale) : prm_.scale_bits16};
        store_params<1>(a.scales, lgr, a.scale_dtype, sb);
        if (!SYM) {
          const uint32_t zb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm_.zero) : prm_.zero_bits16};
          store_params<1>(a.zeros, lgr, a.scale_dtype, zb);
        }
        if (prm_.overflow)
          atomicMin(&a.flags->first_overflow_group,
                    static_cast<unsigned long long>((g.gr_begin + int64_t(lgr)) * g.inner + g.col_begin));
      }
      my_prm[lane] = make_float4(prm_.zero, prm_.inv, bad ? 1.0f : 0.0f, 0.0f);
    }
    __syncwarp();

    // Codes: unit u's BITS bytes are bytes u*BITS of the window's codes.
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (k < rounds) {
        const int u = 32 * k + lane;
        const float4 p = my_prm[u >> lg];
        const GroupCode gc = {p.x, p.y};
        Packet<D, kSliceRows> pk;
        packet_from(pk, d[k]);
        if (p.z != 0.0f) {
#pragma unroll
          for (int i = 0; i < Packet<D, kSliceRows>::kWords; ++i) pk.w[i] = Pair<D>::sanitize(pk.w[i]);
        }
        SliceStream<BITS> stream = 0;
#pragma unroll
        for (int e = 0; e < kSliceRows; ++e)
          stream |= SliceStream<BITS>(encode<SYM>(pk.get(e), gc, BITS)) << (e * BITS);
        const uint32_t gu = u0 + uint32_t(u);
        if (gu < total) {
          uint8_t* dst = a.codes + size_t(gu) * BITS;
          if constexpr (BITS == 3) {
            dst[0] = uint8_t(stream);
            dst[1] = uint8_t(stream >> 8);
            dst[2] = uint8_t(stream >> 16);
          } else {
            store_bytes<BITS>(dst, uint64_t(stream));
          }
        }
      }
    }
    __syncwarp();  // the window's shared memory is reused by the next one
  }
}

// ------------------------------------------------------------ dispatch

template <DType D, int BITS, bool SYM>
cudaError_t launch_quantize_t(const QuantArgs& a, const Launch& l) {
  constexpr int kVec = 16 / Src<D>::kBytes;
  if (l.rows && l.window) {
    if constexpr (Src<D>::kBytes == 2) {
      return launch_kernel(quantize_rows_window<D, BITS, SYM>, l.blocks, kBlockThreads, l, a);
    } else {
      return cudaErrorInvalidValue;  // the host selects it for 16-bit sources only
    }
  }
  if (l.rows) {
    if (l.vector) return launch_kernel(quantize_rows<D, BITS, SYM, true>, l.blocks, kBlockThreads, l, a);
    return launch_kernel(quantize_rows<D, BITS, SYM, false>, l.blocks, kBlockThreads, l, a);
  }
  if (l.vector) return launch_kernel(quantize_cols<D, BITS, SYM, kVec>, l.blocks, kBlockThreads, l, a);
  return launch_kernel(quantize_cols<D, BITS, SYM, 1>, l.blocks, kBlockThreads, l, a);
}

template <DType D>
int launch_quantize_dtype(const QuantArgs& a, int bits, bool sym, const Launch& l) {
  switch (bits) {
    case 2: return int(sym ? launch_quantize_t<D, 2, true>(a, l) : launch_quantize_t<D, 2, false>(a, l));
    case 3: return int(sym ? launch_quantize_t<D, 3, true>(a, l) : launch_quantize_t<D, 3, false>(a, l));
    case 4: return int(sym ? launch_quantize_t<D, 4, true>(a, l) : launch_quantize_t<D, 4, false>(a, l));
    case 8: return int(sym ? launch_quantize_t<D, 8, true>(a, l) : launch_quantize_t<D, 8, false>(a, l));
    default: return int(cudaErrorInvalidValue);
  }
}

}  // namespace qpack::kernels
