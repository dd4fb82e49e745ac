// The quantize kernels. Every arithmetic step is a qpack/spec/group_params.hpp
// function (spec::params_asym/sym, spec::encode_asym/sym), so scales, zero-points and codes
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
// when some x is NaN or +-Inf); only a thread that saw one takes the slow path that finds the
// smallest flat index (policy Error) or replaces them with +0 (policy Zero).
#pragma once
//
// This header holds what the kernel families share (source packets, the
// statistics, the encoder, parameter stores); quantize_cols.cuh and
// quantize_rows.cuh hold the kernels, quantize_dispatch.cuh picks one.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "dequant_device.cuh"
#include "kernel_args.hpp"
#include "qpack/spec/group_params.hpp"

namespace qpack::kernels {

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
  __device__ __forceinline__ spec::GroupParams params(int bits, DType sd, bool integer) const {
    return SYM       ? spec::params_sym(hi, bits, sd)
           : integer ? spec::params_asym_int(lo, hi, bits, sd)
                     : spec::params_asym(lo, hi, bits, sd);
  }
};

// The slow path of a thread that saw a non-finite value: element x at flat
// index `flat` joins the statistics as +0 if it is NaN/Inf, and the smallest
// such index is kept for the policy-Error report.
template <bool SYM>
__device__ __forceinline__ void add_or_zero_nonfinite(Stats<SYM>& st, float x,
                                                      unsigned long long flat,
                                                      unsigned long long& first_bad) {
  if (!spec::is_finite_f32(x)) {
    if (flat < first_bad) first_bad = flat;
    x = 0.0f;
  }
  st.add(x);
}

// What encoding needs of a group's parameters (the reference's encoders
// read only these two fields).
// The asymmetric encode is rint(fl(fl(x - zero) * inv)) + add: zero = M,
// add = 0 for the float rule; zero = +0, add = z for integer zero-points
// (x - +0 = x exactly; round first, then add z, as spec::encode_asym_int).
struct GroupCode {
  float zero, inv;
  int add;
};
__device__ __forceinline__ GroupCode group_code(const spec::GroupParams& p, bool integer) {
  return integer ? GroupCode{0.0f, p.inv, int(p.zero)} : GroupCode{p.zero, p.inv, 0};
}

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
  const int r = __float2int_rn(spec::mul_f32(spec::sub_f32(x, c.zero), c.inv)) + c.add;
  return uint32_t(min(max(r, 0), q));
}

// Halfwise min or max of two packed F16/BF16 pairs; kNaN: NaN-propagating
// (min.NaN / max.NaN), else the IEEE minNum/maxNum selection.
template <DType D, bool kMax, bool kNaN>
__device__ __forceinline__ uint32_t packed_minmax(uint32_t a, uint32_t b) {
  uint32_t r;
  if constexpr (D == DType::F16 && !kMax && !kNaN)
    asm("min.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (D == DType::F16 && kMax && !kNaN)
    asm("max.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (D == DType::F16 && !kMax)
    asm("min.NaN.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (D == DType::F16)
    asm("max.NaN.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (!kMax && !kNaN)
    asm("min.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (kMax && !kNaN)
    asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (!kMax)
    asm("min.NaN.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else
    asm("max.NaN.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
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
  __device__ static __forceinline__ uint32_t min(uint32_t a, uint32_t b) {
    return packed_minmax<D, false, false>(a, b);
  }
  __device__ static __forceinline__ uint32_t max(uint32_t a, uint32_t b) {
    return packed_minmax<D, true, false>(a, b);
  }
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
  __device__ static __forceinline__ uint32_t min(uint32_t a, uint32_t b) {
    return packed_minmax<D, false, true>(a, b);
  }
  __device__ static __forceinline__ uint32_t max(uint32_t a, uint32_t b) {
    return packed_minmax<D, true, true>(a, b);
  }
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
struct ColumnStats {
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
  __device__ __forceinline__ spec::GroupParams params(int v, int bits, DType sd,
                                                      bool integer) const {
    return SYM       ? spec::params_sym(hi_of(v), bits, sd)
           : integer ? spec::params_asym_int(lo_of(v), hi_of(v), bits, sd)
                     : spec::params_asym(lo_of(v), hi_of(v), bits, sd);
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
        *reinterpret_cast<uint4*>(dst + i) =
            make_uint4(bits[i], bits[i + 1], bits[i + 2], bits[i + 3]);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) dst[i] = bits[i];
    }
  } else {
    uint16_t* dst = reinterpret_cast<uint16_t*>(base) + index;
    if constexpr (V == 8) {
      *reinterpret_cast<uint4*>(dst) =
          make_uint4(bits[0] | (bits[1] << 16), bits[2] | (bits[3] << 16),
                     bits[4] | (bits[5] << 16), bits[6] | (bits[7] << 16));
    } else if constexpr (V == 4) {
      *reinterpret_cast<uint2*>(dst) =
          make_uint2(bits[0] | (bits[1] << 16), bits[2] | (bits[3] << 16));
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) dst[i] = uint16_t(bits[i]);
    }
  }
}

__device__ __forceinline__ int clamp_rows(int64_t remaining) {
  return remaining <= 0 ? 0 : (remaining >= kSliceRows ? kSliceRows : int(remaining));
}

}  // namespace qpack::kernels
