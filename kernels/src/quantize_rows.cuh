// quantize_rows and quantize_rows_window: contiguous groups (axis -1, or a
// one-column tile); see quantize_common.cuh for the thread-to-data map.
#pragma once

#include "quantize_common.cuh"

namespace qpack::kernels {

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
                                             const GroupCode& gc, uint8_t* group_codes, int64_t c,
                                             int64_t bytes_per_group) {
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
template <DType D, int BITS, bool SYM, bool VEC, bool INTZ>
__global__ void __launch_bounds__(kBlockThreads) quantize_rows(const QuantArgs a) {
  pdl_prologue();
  const TileGeometry& g = a.geo;
  constexpr int kB = Src<D>::kBytes;
  const int lane = threadIdx.x & 31;
  const int t = g.lanes;   // lanes per group
  const int gpw = 32 / t;  // groups per warp
  const int c0 = lane & (t - 1);
  const int gw = lane / t;
  const int nch = g.nslices;         // chunks of 8 elements per group
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
      ColumnStats<D, kSliceRows, SYM> acc;
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
          if (e < n)
            add_or_zero_nonfinite(st, cur.get(e),
                                  (row0 + c * kSliceRows + e) * g.inner + g.col_begin, first_bad);
      }
      if (!a.zero_nonfinite && first_bad != cuda::kNoIndex)
        atomicMin(&a.flags->first_nonfinite, first_bad);
    }

    st.reduce(1, t);
    const spec::GroupParams prm = st.params(BITS, a.scale_dtype, INTZ);
    const GroupCode gc = group_code(prm, !SYM && INTZ);
    if (!valid) continue;
    if (c0 == 0) {
      const uint32_t sb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm.scale)
                                                          : prm.scale_bits16};
      const uint32_t zb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm.zero)
                                                          : prm.zero_bits16};
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

template <DType D, int BITS, bool SYM, bool INTZ>
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
  const TileGeometry& g = a.geo;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int lg = __ffs(g.nslices) - 1;  // log2(units per group); G' = 8 << lg
  const int gw = min(32, kWindowUnits >> lg);
  const int rounds = (gw << lg) >> 5;   // loads per lane, 1..8
  const uint32_t total = g.n_gr << lg;  // units in the launch (< 2^31)
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
          ((PairNaN<D>::nonfinite_bits(hi) | (SYM ? 0u : PairNaN<D>::nonfinite_bits(lo))) &
           0x80008000u) != 0u;
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
          for (int e = 0; e < kSliceRows; ++e)
            add_or_zero_nonfinite(st, p.get(e), (row0 + i * kSliceRows + e) * g.inner + g.col_begin,
                                  first_bad);
        }
        if (!a.zero_nonfinite && first_bad != cuda::kNoIndex)
          atomicMin(&a.flags->first_nonfinite, first_bad);
      } else {
        st.lo = fminf(Pair<D>::lo(lo), Pair<D>::hi(lo));
        st.hi = fmaxf(Pair<D>::lo(hi), Pair<D>::hi(hi));
      }
      const spec::GroupParams prm_ = st.params(BITS, a.scale_dtype, INTZ);
      const GroupCode gc_ = group_code(prm_, !SYM && INTZ);
      if (valid) {
        const uint32_t sb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm_.scale)
                                                            : prm_.scale_bits16};
        store_params<1>(a.scales, lgr, a.scale_dtype, sb);
        if (!SYM) {
          const uint32_t zb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(prm_.zero)
                                                              : prm_.zero_bits16};
          store_params<1>(a.zeros, lgr, a.scale_dtype, zb);
        }
        if (prm_.overflow)
          atomicMin(
              &a.flags->first_overflow_group,
              static_cast<unsigned long long>((g.gr_begin + int64_t(lgr)) * g.inner + g.col_begin));
      }
      my_prm[lane] = make_float4(gc_.zero, gc_.inv, bad ? 1.0f : 0.0f, float(gc_.add));
    }
    __syncwarp();

    // Codes: unit u's BITS bytes are bytes u*BITS of the window's codes.
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (k < rounds) {
        const int u = 32 * k + lane;
        const float4 p = my_prm[u >> lg];
        const GroupCode gc = {p.x, p.y, INTZ ? int(p.w) : 0};
        Packet<D, kSliceRows> pk;
        packet_from(pk, d[k]);
        if (p.z != 0.0f) {
#pragma unroll
          for (int i = 0; i < Packet<D, kSliceRows>::kWords; ++i)
            pk.w[i] = Pair<D>::sanitize(pk.w[i]);
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

}  // namespace qpack::kernels
