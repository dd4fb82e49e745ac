// The rows compare kernel (inner == 1, whole groups of 32 or of 64 times a
// power of two): a CTA per block of 256 units, units j, j+64, j+128, j+192
// for thread j; a warp copies its 32 units of one u (a contiguous run) into
// shared memory with coalesced cp.async, and each lane reads its unit from
// there 16 bytes at a time. The fast path and the exact rule it falls back
// on are described in compare_common.cuh.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "compare_args.hpp"
#include "compare_common.cuh"
#include "dequant_device.cuh"
#include "kernel_args.hpp"
#include "qpack/spec/error_sums.hpp"

namespace qpack::kernels {
namespace {

using spec::ChunkView;
using spec::CompareGeometry;
using spec::PartialSums;

// Table of reconstructions (BITS <= 4 only): entry (unit v, code c) of
// thread tid is the double at byte ((v << BITS) + c) * 512 + tid * 8 (64
// threads; the columns kernel's layout is at cols_table_addr, compare_cols.cu):
// the 32 lanes of a warp read 32 consecutive doubles of a row, whatever codes
// they hold, so the loads are free of bank conflicts. This kernel holds one
// unit per thread (v = 0).
// Byte offset of the entry of the code at bit `pos` of w (pos, like the whole
// call, known at compile time after unrolling), with tid8 = tid * 8.
template <int BITS>
__device__ __forceinline__ uint32_t rows_table_offset(uint32_t w, int pos, uint32_t tid8) {
  constexpr uint32_t mask = ((1u << BITS) - 1u) << 9;
  const uint32_t t = pos >= 9 ? (w >> (pos - 9)) : (w << (9 - pos));
  return (t & mask) | tid8;
}
template <int BITS>
__device__ __forceinline__ double rows_table_load(const uint8_t* tab, int v, uint32_t off) {
  return *reinterpret_cast<const double*>(tab + (v << BITS) * 512 + off);
}

// A parameter's raw bits as a float. F16 takes the hardware conversion,
// exact for every finite value (spec::param_value's f16_to_f32 is a
// branchy software one: about 17 instructions a parameter, 8 parameters per
// thread); a NaN's payload may differ, but a non-finite parameter sends its
// unit to the exact rule, which converts on its own.
__device__ __forceinline__ float param_value_hw(uint32_t bits, DType sd) {
  if (sd == DType::F32) return __uint_as_float(bits);
  if (sd == DType::BF16) return __uint_as_float(bits << 16);
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}

// spec::ulp_in(double(v), sd) for a finite float v, from its bits: the ulp
// 2^(max(e, emin) - mant) is the double of exponent field
// max(fe + 896 - mant, emin - mant + 1023), fe being v's biased exponent
// (0 for zero and subnormals, whose exponents lie below every emin, as
// ulp_in's clamp has it). ulp_in itself converts to double, compares,
// clamps and rebuilds, twice per unit. UlpExponent holds the two constants
// of the scale dtype: field_offset = 896 - mant, field_min = emin - mant + 1023.
struct UlpExponent {
  int field_offset, field_min;
};
__device__ __forceinline__ UlpExponent ulp_exponent(DType sd) {
  const int mant = sd == DType::F16 ? 10 : sd == DType::BF16 ? 7 : 23;
  const int emin = sd == DType::F16 ? -14 : -126;
  return {896 - mant, emin - mant + 1023};
}
__device__ __forceinline__ double ulp_of_float(float v, UlpExponent c) {
  const int fe = int((__float_as_uint(v) >> 23) & 0xffu);
  return __hiloint2double(max(fe + c.field_offset, c.field_min) << 20, 0);
}

// A unit's parameters. Four units' setup weighs on 32-element units, so
// base is spec::bound_terms(scale, zero, ...).base with the same double
// operations in the same order, the ulps from ulp_of_float (checked bit for
// bit against bound_terms over all three scale dtypes, subnormals included).
// A non-finite parameter gives some base, unused: ok is false.
__device__ __forceinline__ UnitParams unit_params_ulp_bits(float scale, float zero,
                                                           const CompareGeometry& g,
                                                           UlpExponent uc) {
  UnitParams p;
  p.scale = scale;
  p.zero = zero;
  const double s = scale;
  const double inner =
      __dadd_rn(__dadd_rn(ulp_of_float(scale, uc), __dmul_rn(s, 0x1p-22)), 0x1p-126);
  double b = __dadd_rn(__dmul_rn(0.5, s), __dmul_rn(g.q, inner));
  if (!g.symmetric) b = __dadd_rn(b, ulp_of_float(zero, uc));
  p.base = b;
  // |q| <= 255: |q*S + M| < 2^127 when |S| <= 2^118 and |M| <= 2^126.
  p.ok = fabsf(scale) <= 0x1p118f && fabsf(zero) <= 0x1p126f;
  return p;
}

// Writes this thread's table entries for unit v.
template <int BITS>
__device__ __forceinline__ void build_rows_table(uint8_t* tab, int v, uint32_t tid8,
                                                 const UnitParams& p, float qoff) {
  if constexpr (BITS <= 4) {
#pragma unroll
    for (int c = 0; c < (1 << BITS); ++c) {
      const float xh = decode_table_entry(c, qoff, p.scale, p.zero);
      *reinterpret_cast<double*>(tab + ((v << BITS) + c) * 512 + tid8) = double(xh);
    }
  }
}

// Rows (inner == 1) of uniform geometry: every group is whole (axis_len a
// multiple of G) and its units have U = min(G, 64) elements (G = 32, or 64
// times a power of two), so unit sr covers elements [sr*U, sr*U + U), code
// bytes [sr*U*BITS/8, ...) and parameter row sr >> seg_shift. Unit u of
// thread j is sr = b*256 + j + 64u: for a given u the 32 units of a warp are
// one contiguous run of source elements and one of code bytes. The warp
// stages such a run into shared memory with coalesced cp.async copies (lane l
// copies 16-byte chunks l, l+32, ...; codes 4 bytes at a time), one unit row
// per lane, rows padded to an odd number of 16-byte chunks (codes: of 4-byte
// words) so that the lanes then read their own rows without bank conflicts.
// U is a template argument, so every copy address is a lane base plus an
// immediate (with U known only at run time, the copy loops cost more than
// the units' arithmetic for 32-element units). The warp's units are
// processed u = 0..3 in turn, unit u+1 being copied while unit u is
// processed (two buffers per warp); the table of reconstructions (2-4 bits)
// holds one unit per thread and is rebuilt for each. A tensor's last block,
// when it is partial, takes the exact rule per unit.
template <DType kSrc, int BITS, int U>
struct RowsStage {
  static constexpr int kChunks =
      U * (kSrc == DType::F32 ? 4 : 2) / 16;           // 16-byte chunks of a unit's source
  static constexpr int kRow16 = kChunks | 1;           // row stride, in chunks
  static constexpr int kWordsPerUnit = U * BITS / 32;  // code words of a unit
  static constexpr int kCodeRow = kWordsPerUnit | 1;   // row stride, in words
  uint4 src[2][2][32 * kRow16];                        // [warp][buffer]
  uint32_t codes[2][2][32 * kCodeRow];                 // [warp][buffer]
};
template <DType kSrc, int BITS, int U>
struct RowsShared {
  double table[BITS <= 4 ? (1 << BITS) * kCompareThreads : 1];
  RowsStage<kSrc, BITS, U> st;
};

__device__ __forceinline__ void cp_async16(void* sdst, const void* gsrc) {
  const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(sdst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gsrc) : "memory");
}
__device__ __forceinline__ void cp_async4(void* sdst, const void* gsrc) {
  const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(sdst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(sa), "l"(gsrc) : "memory");
}
// A warp's copy of 32 unit rows of kPer pieces of kBytes each (contiguous in
// global memory) into shared-memory rows of kStride pieces: lane l copies
// pieces l, l + 32, ..., piece id to row id / kPer, column id % kPer.
template <int kPer, int kStride, int kBytes, class Piece>
__device__ __forceinline__ void stage_run(Piece* sdst, const uint8_t* gsrc, int lane) {
#pragma unroll
  for (int t = 0; t < kPer; ++t) {
    const int id = lane + 32 * t;
    const int i = id / kPer, c = id - i * kPer;
    if constexpr (kBytes == 16)
      cp_async16(sdst + i * kStride + c, gsrc + id * 16);
    else
      cp_async4(sdst + i * kStride + c, gsrc + id * 4);
  }
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// The raw parameter bits of a thread's units usr + 64u (T: the scale
// dtype's word). U == 32 has one parameter row per unit, so the four loads
// are one address and immediate offsets.
template <class T, int U>
__device__ __forceinline__ void load_rows_params(const uint8_t* scales, const uint8_t* zeros,
                                                 bool symmetric, uint32_t usr, int seg_shift,
                                                 uint32_t srow0, uint32_t (&s)[kUnitsPerThread],
                                                 uint32_t (&z)[kUnitsPerThread]) {
  const T* ps = reinterpret_cast<const T*>(scales);
  const T* pz = reinterpret_cast<const T*>(zeros);
  if constexpr (U == 32) {
    ps += usr - srow0;
    pz += usr - srow0;
  }
#pragma unroll
  for (int u = 0; u < kUnitsPerThread; ++u) {
    const uint32_t i = U == 32 ? 64u * u : ((usr + 64u * u) >> seg_shift) - srow0;
    s[u] = ps[i];
    z[u] = symmetric ? 0u : uint32_t(pz[i]);
  }
}

template <DType kSrc, int BITS, int U>
__global__ void __launch_bounds__(kCompareThreads, 7)
    compare_rows(CompareGeometry g, ChunkView v, int seg_shift, int64_t block0, PartialSums* out) {
  using Stage = RowsStage<kSrc, BITS, U>;
  __shared__ RowsShared<kSrc, BITS, U> sh;
  pdl_prologue();
  uint8_t* const smem = reinterpret_cast<uint8_t*>(sh.table);
  constexpr int kWords = kSrc == DType::F32 ? 8 : 4;  // 32-bit words of 8 elements
  constexpr int esz = kSrc == DType::F32 ? 4 : 2;
  constexpr int kCodeBytes = U * BITS / 8;  // of a unit
  const int j = int(threadIdx.x);
  const int lane = j & 31, warp = j >> 5;
  const uint32_t tid8 = uint32_t(j) * 8u;
  const int64_t lb = int64_t(blockIdx.x);
  const int64_t sr0 = (block0 + lb) * spec::kBlockUnits;  // the block's first unit
  const float magic_off = decode8_offset(g.symmetric);
  const float qoff = decode_table_offset<BITS>(g.symmetric);
  // The tree's exchange area: warp 1's first source buffer, which warp 1
  // alone uses and only before it writes there.
  KeyedPartial* xchg = reinterpret_cast<KeyedPartial*>(sh.st.src[1][0]);
  static_assert(sizeof(KeyedPartial) * 32 <= sizeof(sh.st.src[1][0]), "exchange area");

  UnitSums acc[kUnitsPerThread];
  UnitParams par[kUnitsPerThread];
  bool live[kUnitsPerThread], susp[kUnitsPerThread];
#pragma unroll
  for (int u = 0; u < kUnitsPerThread; ++u) {
    unit_sums_init(acc[u]);
    live[u] = sr0 + j + 64 * u < g.seg_rows;
  }
  const bool whole = sr0 + spec::kBlockUnits <= g.seg_rows;
  if (whole) {
    // All parameter loads are issued before anything waits for one, as raw
    // bits converted later (unit by unit, the warp waited for each load in
    // turn). Indices in 32 bits (seg_rows < 2^31, see choose_kernel
    // in compare.cpp): the
    // 64-bit index arithmetic was about 20 instructions a unit.
    uint32_t scale_u[kUnitsPerThread], zero_u[kUnitsPerThread];
    const uint32_t usr = uint32_t(sr0) + uint32_t(j), srow0 = uint32_t(v.srow0);
    if (g.scale_dtype == DType::F32)
      load_rows_params<uint32_t, U>(v.scales, v.zeros, g.symmetric, usr, seg_shift, srow0, scale_u,
                                    zero_u);
    else
      load_rows_params<uint16_t, U>(v.scales, v.zeros, g.symmetric, usr, seg_shift, srow0, scale_u,
                                    zero_u);
    // The warp's runs for u = 0; run u lies 64*u units further, a constant
    // that the copies take as an immediate offset.
    const uint8_t* const src_run = v.src + ((sr0 + 32 * warp) * U - v.row0) * esz;
    const uint8_t* const code_run = v.codes + ((sr0 + 32 * warp) * kCodeBytes - v.plane0);
    auto stage = [&](int u, int buf) {
      stage_run<Stage::kChunks, Stage::kRow16, 16>(sh.st.src[warp][buf],
                                                   src_run + u * (64 * U * esz), lane);
      stage_run<Stage::kWordsPerUnit, Stage::kCodeRow, 4>(sh.st.codes[warp][buf],
                                                          code_run + u * (64 * kCodeBytes), lane);
      cp_async_commit();
    };
    const UlpExponent uc = ulp_exponent(g.scale_dtype);
    stage(0, 0);
#pragma unroll
    for (int u = 0; u < kUnitsPerThread; ++u) {
      par[u] = unit_params_ulp_bits(param_value_hw(scale_u[u], g.scale_dtype),
                                    g.symmetric ? 0.0f : param_value_hw(zero_u[u], g.scale_dtype),
                                    g, uc);
      susp[u] = !par[u].ok;
    }
#pragma unroll
    for (int u = 0; u < kUnitsPerThread; ++u) {
      if (u + 1 < kUnitsPerThread) {
        stage(u + 1, (u + 1) & 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncwarp();
      build_rows_table<BITS>(smem, 0, tid8, par[u], qoff);
      const uint4* row = sh.st.src[warp][u & 1] + lane * Stage::kRow16;
      const uint32_t* crow = sh.st.codes[warp][u & 1] + lane * Stage::kCodeRow;
      auto lds = [&](int s, uint32_t(&x)[kWords], SliceStream<BITS>& c) {
#pragma unroll
        for (int q = 0; q < kWords / 4; ++q) {
          const uint4 w = row[s * (kWords / 4) + q];
          x[4 * q] = w.x;
          x[4 * q + 1] = w.y;
          x[4 * q + 2] = w.z;
          x[4 * q + 3] = w.w;
        }
        if constexpr (BITS == 8) {
          c = uint64_t(crow[2 * s]) | (uint64_t(crow[2 * s + 1]) << 32);
        } else if constexpr (BITS == 4) {
          c = crow[s];
        } else if constexpr (BITS == 2) {
          c = (crow[s >> 1] >> ((s & 1) * 16)) & 0xffffu;
        } else {
          const int byte = 3 * s, sh8 = (byte & 3) * 8;
          const uint32_t lo = crow[byte >> 2];
          const uint32_t hi = sh8 > 8 ? crow[(byte >> 2) + 1] : 0u;
          c = __funnelshift_r(lo, hi, sh8) & 0xffffffu;
        }
      };
      uint32_t x[kWords], xn[kWords];
      SliceStream<BITS> c, cn;
      lds(0, x, c);
#pragma unroll 1
      for (int s = 0; s < U / 8; ++s) {
        lds(s + 1 < U / 8 ? s + 1 : s, xn, cn);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const uint32_t w = kSrc == DType::F32 ? x[k] : x[k / 2];
          const double xd = (kSrc == DType::F32 || (k & 1)) ? src_to_f64<kSrc, 1, true>(w)
                                                            : src_to_f64<kSrc, 0, true>(w);
          double hd;
          if constexpr (BITS <= 4)
            hd = rows_table_load<BITS>(smem, 0,
                                       rows_table_offset<BITS>(uint32_t(c), BITS * k, tid8));
          else
            hd = decode8(uint32_t(uint64_t(c) >> (32 * (k >> 2))), 8 * (k & 3), magic_off,
                         par[u].scale, par[u].zero);
          accumulate_element_fast(acc[u], xd, hd, 8 * s + k);
        }
#pragma unroll
        for (int q = 0; q < kWords; ++q) x[q] = xn[q];
        c = cn;
      }
      susp[u] = susp[u] || unit_suspect<kSrc>(acc[u], par[u].base);
      __syncwarp();  // the buffer is copied into again two units on
    }
  } else {
#pragma unroll
    for (int u = 0; u < kUnitsPerThread; ++u) susp[u] = live[u];
  }
  bool slow = !whole;
#pragma unroll
  for (int u = 0; u < kUnitsPerThread; ++u) {
    if (susp[u]) redo_unit<kSrc>(g, v, sr0 + j + 64 * u, 0, acc[u]);
    slow = slow || susp[u];
  }
  KeyedPartial r[kUnitsPerThread];
#pragma unroll
  for (int u = 0; u < kUnitsPerThread; ++u) {
    if (live[u])
      r[u] = keyed_partial(acc[u], U, uint32_t((j + 64 * u) * spec::kSegment), 1u);
    else
      keyed_empty(r[u]);
  }
  bool fast_block;
  KeyedPartial res = block_tree<true>(r, j, xchg, slow, &fast_block);
  if (j == 0) {
    if (fast_block) {  // whole, and no unit took the exact rule
      res.fv_key = kNoKey;
      res.nonfinite = 0;
      res.violations = 0;
      res.count = uint32_t(spec::kBlockUnits * U);
    }
    write_partial(res, out + lb, [&](uint32_t key) {
      return (sr0 + int64_t(key / spec::kSegment)) * U + int64_t(key % spec::kSegment);
    });
  }
}

template <int U>
struct RowsLauncher {
  const CompareArgs& a;
  const Launch& l;
  template <DType kSrc, int BITS>
  int run() const {
    return int(launch_kernel(compare_rows<kSrc, BITS, U>, l.blocks, kCompareThreads, l, a.geo,
                             a.view, a.seg_shift, a.block0, a.out));
  }
};

}  // namespace

int launch_compare_rows(const CompareArgs& a, int unit_len, const Launch& l) {
  if (unit_len == 64) return dispatch_source_and_bits(a.geo, RowsLauncher<64>{a, l});
  if (unit_len == 32) return dispatch_source_and_bits(a.geo, RowsLauncher<32>{a, l});
  return int(cudaErrorInvalidValue);
}

}  // namespace qpack::kernels
