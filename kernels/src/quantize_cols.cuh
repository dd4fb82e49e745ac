// quantize_cols: groups that run down a column (axis != -1, tile wider than
// one column); see quantize_common.cuh for the thread-to-data map.
#pragma once

#include "quantize_common.cuh"

namespace qpack::kernels {

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
                                          ColumnStats<D, V, SYM>& acc) {
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
    if (plane < bytes_per_group)
      store_bytes<V>(plane0 + plane * pitch, plane_bytes<BITS, V>(st, j));
  }
}

// After pass 1: combines the slices of each column across the lanes that
// share it (lanes ty and ty^k differ by k*txw), computes the parameters,
// stores scales/zero-points, flags overflows, and returns what encoding
// needs in every lane.
template <DType D, int BITS, bool SYM, int V, bool INTZ>
__device__ __forceinline__ void finish_params(ColumnStats<D, V, SYM>& acc, const QuantArgs& a,
                                              int txw, int tl, int tx, int ty, bool valid,
                                              int64_t pidx, int64_t first_group,
                                              GroupCode (&gc)[V]) {
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
    const spec::GroupParams p = SYM    ? spec::params_sym(hi, BITS, a.scale_dtype)
                                : INTZ ? spec::params_asym_int(lo, hi, BITS, a.scale_dtype)
                                       : spec::params_asym(lo, hi, BITS, a.scale_dtype);
    const GroupCode mine_gc = group_code(p, !SYM && INTZ);
    if (valid && ty < V) {
      const uint32_t sb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(p.scale)
                                                          : p.scale_bits16};
      store_params<1>(a.scales, pidx + mine, a.scale_dtype, sb);
      if (!SYM) {
        const uint32_t zb[1] = {a.scale_dtype == DType::F32 ? __float_as_uint(p.zero)
                                                            : p.zero_bits16};
        store_params<1>(a.zeros, pidx + mine, a.scale_dtype, zb);
      }
      if (p.overflow)
        atomicMin(&a.flags->first_overflow_group,
                  static_cast<unsigned long long>(first_group + mine));
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
      gc[v].zero = SYM ? 0.0f : __shfl_sync(0xffffffffu, mine_gc.zero, v * txw + tx);
      gc[v].inv = __shfl_sync(0xffffffffu, mine_gc.inv, v * txw + tx);
      gc[v].add = SYM || !INTZ ? 0 : __shfl_sync(0xffffffffu, mine_gc.add, v * txw + tx);
    }
    return;
  }
  // Fewer lanes than columns (short groups): every lane computes all V.
  uint32_t scale_bits[V], zero_bits[V];
  uint32_t overflow = 0;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const spec::GroupParams p = acc.params(v, BITS, a.scale_dtype, INTZ);
    gc[v] = group_code(p, !SYM && INTZ);
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
// (~108) left 16 warps per SM and measured slower (docs/kernels.md).
template <DType D, int BITS, bool SYM, int V, bool INTZ>
__global__ void __launch_bounds__(kBlockThreads, 3) quantize_cols(const QuantArgs a) {
  pdl_prologue();
  const TileGeometry& g = a.geo;
  constexpr int kB = Src<D>::kBytes;
  const int lane = threadIdx.x & 31;
  const int tl = g.lanes;   // lanes per column chunk (slices in parallel)
  const int txw = 32 / tl;  // column chunks per warp
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

    ColumnStats<D, V, SYM> acc;
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
      finish_params<D, BITS, SYM, V, INTZ>(acc, a, txw, tl, tx, ty, valid, pidx, first_group, gc);
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
          const unsigned long long f =
              first_nonfinite_in<D, V>(rows, n, row0 + s * kSliceRows, g.inner, g.col_begin + col);
          first_bad = f < first_bad ? f : first_bad;
          add_slice<D, SYM, V, true>(rows, n, acc);
        }
        if (!a.zero_nonfinite && first_bad != cuda::kNoIndex)
          atomicMin(&a.flags->first_nonfinite, first_bad);
      }
      finish_params<D, BITS, SYM, V, INTZ>(acc, a, txw, tl, tx, ty, valid, pidx, first_group, gc);
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

}  // namespace qpack::kernels
