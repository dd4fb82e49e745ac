// Device helpers shared by the columns and rows compare kernels
// (compare_cols.cu, compare_rows.cu). Internal to kernels/; include from .cu
// files only.
//
// Two layouts cover the common tensors; everything else takes the general
// kernel (compare_general.cu). Both give the same bits as spec::eval_unit:
// each unit's elements are accumulated in ascending order with the same IEEE
// operations, and the block's 256 unit partials go through the same fixed
// tree.
//
//  * columns (inner >= 256, inner % 4 == 0): a thread owns 4 adjacent units
//    (columns) of one segment row, so a row of its source is one 8-byte
//    (16-bit sources) or 16-byte (F32) load and a code plane one 4-byte load;
//  * rows (inner == 1, whole groups of 32 or of 64 times a power of two): a
//    thread owns units j, j+64, j+128, j+192 of a block; a warp copies its
//    32 units of one u (a contiguous run) into shared memory with coalesced
//    cp.async, and each lane reads its unit from there 16 bytes at a time.
//
// Per element the work is what the sums need and no more. For 2, 3 and 4
// bits each thread first writes, per unit, the 2^bits reconstructions
// double(fma(q, S, M)) to a table in shared memory, so an element's x_hat is
// one shift-and-mask of its code and one 8-byte shared load (8 bits decode
// with the magic-number float and an exact bit placement: decode8). The
// source value becomes a double exactly (see src_to_f64). Then the five sums,
// the running maximum and a per-unit predicate "above the bound's base".
//
// Anything unusual sends the whole unit to the exact rule afterwards
// (spec::eval_unit, the CPU's own code, from the start of the unit): an
// element above the base (possibly a bound violation), a non-finite source
// value (BF16 by bit placement: a double >= 2^128, far above any base the
// fast path accepts; F32 and BF16 by conversion: Inf above the base, NaN
// in the sums; F16 in the rows kernel: a double >= 2^16, found by the sum of
// squares; the columns kernel converts F16 like F32),
// a scale or zero-point that is non-finite or huge, a segment whose length
// is not a multiple of 8, and (rows) the units of a partial last block.
// Their fast-path sums are simply discarded.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "qpack/spec/error_sums.hpp"

namespace qpack::kernels {

constexpr int kUnitsPerThread = 4;
constexpr int kCompareThreads = spec::kBlockUnits / kUnitsPerThread;  // 64: a CTA is one block
constexpr uint32_t kNoKey = 0xffffffffu;

// One unit's running state. Fast path: m is the error of largest magnitude
// so far (sign kept), max_k its element index; both start at (0, 0), which
// gives the CPU's choice (element 0 unless a later one is strictly larger).
// rare: non-finite count (bits 0-7), violations (8-15), element index of the
// first violation (16-23, 0xff: none); only the exact rule sets them.
struct UnitSums {
  double sq_err, abs_err, sq_ref, sq_hat, dot, m;
  int max_k;  // -1: no element
  uint32_t rare;
};
__device__ __forceinline__ void unit_sums_init(UnitSums& a) {
  a.sq_err = a.abs_err = a.sq_ref = a.sq_hat = a.dot = 0.0;
  a.m = 0.0;
  a.max_k = 0;
  a.rare = 0x00ff0000u;
}

// A finite binary32 value as a double, exactly, without the conversion unit:
// its fields placed in a double's give x * 2^-896 for normal and subnormal x
// alike, and the product by the power of two is exact.
__device__ __forceinline__ double f32_bits_to_f64(uint32_t f) {
  return __dmul_rn(__hiloint2double(int(uint32_t(int(f) >> 3) & 0x8fffffffu), int(f << 29)),
                   0x1p896);
}

// The decode of the tables of reconstructions (2, 3 and 4 bits): entry c of
// a unit is spec::decode(c, S, M, symmetric, BITS), computed as
// spec::fma_f32(float(c) - qoff, S, M), qoff = decode_table_offset<BITS>(
// symmetric): c and qoff are integers below 2^8, so the subtraction is exact
// and gives spec::decode's q = c - 2^(BITS-1) (symmetric) or c as a float.
// Calling spec::decode itself (an integer q, then converted), or
// spec::sub_f32 for the subtraction, compiled to other instructions (nvcc
// 13.0, sm_90: other schedules and registers in both kernels).
template <int BITS>
__device__ __forceinline__ float decode_table_offset(bool symmetric) {
  return symmetric ? float(1 << (BITS - 1)) : 0.0f;
}
__device__ __forceinline__ float decode_table_entry(int c, float qoff, float scale, float zero) {
  return spec::fma_f32(float(c) - qoff, scale, zero);
}

// The decode of 8-bit codes, the one the compare kernels spell out by hand
// (for speed: no table, and fewer instructions than spec::decode's integer
// subtraction and conversion): x_hat of the 8-bit code in byte pos / 8 of w,
// as a double, with magic_off = decode8_offset(symmetric). It equals
// double(spec::decode(code, s, z, symmetric, 8)) whenever that is finite
// (UnitParams::ok): __byte_perm(w, 0x4b000000, 0x7650 | b), b = pos / 8, is
// the word of bytes (code, 0, 0, 0x4b) from low to high, the float of
// exponent field 150 and mantissa `code`, i.e. 2^23 + code exactly;
// magic_off is 2^23 + 128 (symmetric) or 2^23, so the difference of these
// integers below 2^24 is exact and is spec::decode's q = code - 128 or code.
// The fma is spec::decode's fma_f32(q, S, M), and f32_bits_to_f64 is
// double() of a finite float.
__device__ __forceinline__ float decode8_offset(bool symmetric) {
  return 8388608.0f + (symmetric ? 128.0f : 0.0f);
}
__device__ __forceinline__ double decode8(uint32_t w, int pos, float magic_off, float s, float z) {
  const uint32_t f = __byte_perm(w, 0x4b000000u, 0x7650u | uint32_t(pos >> 3));
  const float q = spec::sub_f32(__uint_as_float(f), magic_off);
  return f32_bits_to_f64(__float_as_uint(spec::fma_f32(q, s, z)));
}

// Source element -> double, exactly. W is the 32-bit word holding it; for
// 16-bit sources H says which half (0: low). A 16-bit float's fields placed
// in a double's give x * 2^-896 (BF16) or x * 2^-1008 (F16) for normal and
// subnormal x alike; the product by the power of two is exact. The arithmetic
// shift puts the sign in bit 31 (and in bits the mask clears).
// kCvt (BF16 only): the float the BF16 value is the upper half of, through
// the conversion unit: two instructions instead of four or five, and one
// multiply fewer on the FP64 pipe, which the element loop nearly fills (the
// gain says the conversion does not take its place). Rows kernel: 2-bit g32
// 63-64% -> 65-67%, 4-bit g64 71 -> 74%. The columns kernel uses it too
// (col_src_f64 in compare_cols.cu), since its table loads lost their
// per-element add.
template <DType kSrc, int H, bool kCvt = false>
__device__ __forceinline__ double src_to_f64(uint32_t w) {
  if constexpr (kSrc == DType::F32) {
    return double(__uint_as_float(w));
  } else if constexpr (kSrc == DType::BF16 && kCvt) {
    return double(__uint_as_float(H ? (w & 0xffff0000u) : (w << 16)));
  } else {
    const uint32_t t = H ? w : (w << 16);
    if constexpr (kSrc == DType::BF16)
      return __dmul_rn(__hiloint2double(int(uint32_t(int(t) >> 3) & 0x8fffe000u), 0), 0x1p896);
    else
      return __dmul_rn(__hiloint2double(int(uint32_t(int(t) >> 6) & 0x81fffc00u), 0), 0x1p1008);
  }
}

// The fast element rule: same operations as spec::accumulate_element for a
// finite source value, without the bound test: the unit's largest error is
// compared with the bound's base once, at its end (unit_suspect).
__device__ __forceinline__ void accumulate_element_fast(UnitSums& a, double xd, double hd, int k) {
  const double e = __dsub_rn(xd, hd);
  a.sq_err = __dadd_rn(a.sq_err, __dmul_rn(e, e));
  a.abs_err = __dadd_rn(a.abs_err, fabs(e));
  a.sq_ref = __fma_rn(xd, xd, a.sq_ref);
  a.sq_hat = __fma_rn(hd, hd, a.sq_hat);
  a.dot = __fma_rn(xd, hd, a.dot);
  // |e| > |m| (strict: the smallest index wins ties); m keeps its sign, so
  // that no absolute value is ever materialised (ptxas would otherwise keep
  // |m| beside m and compute |e| with a double add).
  asm("{\n\t.reg .pred p;\n\t.reg .f64 ae, am;\n\t"
      "abs.f64 ae, %2;\n\tabs.f64 am, %0;\n\t"
      "setp.gt.f64 p, ae, am;\n\t"
      "@p mov.f64 %0, %2;\n\t@p mov.b32 %1, %3;\n\t}"
      : "+d"(a.m), "+r"(a.max_k)
      : "d"(e), "r"(k));
}
// After the fast rule: must the unit be redone with the exact rule? When an
// error is above the base (a possible violation, a BF16 non-finite source
// value placed as >= 2^128, or an Inf source value converted), when a sum is
// NaN (a NaN source value converted), and for F16 sources when the sum of
// squares reaches 2^32: an F16 NaN or Inf is placed as a finite |x| >= 2^16
// and finite F16 values are below 2^16, so only units of huge values
// (64 * 8192^2) are redone needlessly. (A check of every loaded word cost
// an instruction per element.)
template <DType kSrc>
__device__ __forceinline__ bool unit_suspect(const UnitSums& a, double base) {
  return !(fabs(a.m) <= base) || !(a.sq_err == a.sq_err) ||
         (kSrc == DType::F16 && !(a.sq_ref < 0x1p32));
}

// A unit's parameters.
struct UnitParams {
  float scale, zero;
  double base;
  bool ok;  // finite and small enough that every reconstruction is finite
};

// The exact rule for a whole unit: the CPU's own spec::eval_unit, its
// PartialSums turned into UnitSums (flat indices -> element indices k).
template <DType kSrc>
__device__ __noinline__ void exact_unit(const spec::CompareGeometry* gp, const spec::ChunkView* vp,
                                        int64_t sr, int64_t col, UnitSums* out) {
  const spec::CompareGeometry& g = *gp;
  spec::PartialSums p;
  spec::partial_init(p);
  spec::eval_unit<kSrc>(g, *vp, sr, col, p);
  const int64_t flat0 = spec::seg_row_span(g, sr).row_begin * g.inner + col;
  UnitSums a;
  a.sq_err = p.sq_err;
  a.abs_err = p.abs_err;
  a.sq_ref = p.sq_ref;
  a.sq_hat = p.sq_hat;
  a.dot = p.dot;
  if (p.max_index == spec::kNoIndex) {
    a.m = 0.0;
    a.max_k = -1;
  } else {
    a.m = p.max_abs;
    a.max_k = int((p.max_index - flat0) / g.inner);
  }
  const uint32_t fv =
      p.first_violation == spec::kNoIndex ? 0xffu : uint32_t((p.first_violation - flat0) / g.inner);
  a.rare = uint32_t(p.nonfinite) | (uint32_t(p.violations) << 8) | (fv << 16);
  *out = a;
}

// Unit (sr, col) redone with the exact rule into acc. The result goes
// through a local copy: the address of a thread's UnitSums array element would
// move the whole array out of registers.
template <DType kSrc>
__device__ __forceinline__ void redo_unit(const spec::CompareGeometry& g, const spec::ChunkView& v,
                                          int64_t sr, int64_t col, UnitSums& acc) {
  spec::CompareGeometry tg = g;
  spec::ChunkView tv = v;
  UnitSums ta;
  exact_unit<kSrc>(&tg, &tv, sr, col, &ta);
  acc = ta;
}

// A unit's partial as the tree sees it (a record): element keys of 32 bits
// where PartialSums has flat indices. Keys order elements as their flat
// indices do within one block; counts of one block fit 32 bits.
struct KeyedPartial {
  double s[5];
  double max_abs;
  uint32_t max_key, fv_key, nonfinite, violations, count, pad_;
};

// The sums and the maximum of a record: all a block changes when none of
// its units took the exact rule (no non-finite value, no violation, every
// element counted), so such a block shuffles 13 words a step instead of 17.
__device__ __forceinline__ void keyed_merge_sums_max(KeyedPartial& a, const KeyedPartial& b) {
#pragma unroll
  for (int i = 0; i < 5; ++i) a.s[i] = __dadd_rn(a.s[i], b.s[i]);
  if (b.max_abs > a.max_abs || (b.max_abs == a.max_abs && b.max_key < a.max_key)) {
    a.max_abs = b.max_abs;
    a.max_key = b.max_key;
  }
}
__device__ __forceinline__ KeyedPartial shfl_down_keyed_sums_max(const KeyedPartial& r, int d) {
  KeyedPartial o;
#pragma unroll
  for (int i = 0; i < 5; ++i) o.s[i] = __shfl_down_sync(0xffffffffu, r.s[i], d);
  o.max_abs = __shfl_down_sync(0xffffffffu, r.max_abs, d);
  o.max_key = __shfl_down_sync(0xffffffffu, r.max_key, d);
  return o;
}

__device__ __forceinline__ void keyed_merge(KeyedPartial& a, const KeyedPartial& b) {
  keyed_merge_sums_max(a, b);
  a.fv_key = min(a.fv_key, b.fv_key);
  a.nonfinite += b.nonfinite;
  a.violations += b.violations;
  a.count += b.count;
}

__device__ __forceinline__ KeyedPartial keyed_partial(const UnitSums& a, int n, uint32_t key0,
                                                      uint32_t kstride) {
  KeyedPartial r;
  r.s[0] = a.sq_err;
  r.s[1] = a.abs_err;
  r.s[2] = a.sq_ref;
  r.s[3] = a.sq_hat;
  r.s[4] = a.dot;
  r.max_abs = a.max_k < 0 ? -1.0 : fabs(a.m);
  r.max_key = a.max_k < 0 ? kNoKey : key0 + uint32_t(a.max_k) * kstride;
  const uint32_t nv = (a.rare >> 8) & 0xffu;
  r.fv_key = nv ? key0 + ((a.rare >> 16) & 0xffu) * kstride : kNoKey;
  r.nonfinite = a.rare & 0xffu;
  r.violations = nv;
  r.count = uint32_t(n) - r.nonfinite;
  r.pad_ = 0;
  return r;
}
__device__ __forceinline__ void keyed_empty(KeyedPartial& r) {
  UnitSums a;
  unit_sums_init(a);
  a.max_k = -1;
  r = keyed_partial(a, 0, 0, 0);
}

__device__ __forceinline__ KeyedPartial shfl_down_keyed(const KeyedPartial& r, int d) {
  KeyedPartial o = shfl_down_keyed_sums_max(r, d);
  o.fv_key = __shfl_down_sync(0xffffffffu, r.fv_key, d);
  o.nonfinite = __shfl_down_sync(0xffffffffu, r.nonfinite, d);
  o.violations = __shfl_down_sync(0xffffffffu, r.violations, d);
  o.count = __shfl_down_sync(0xffffffffu, r.count, d);
  o.pad_ = 0;
  return o;
}

// The fixed tree of spec::block_tree_host over one block, when thread j
// (0..63) of the block holds the records of units j, j+64, j+128, j+192 in
// r[0..3]. xchg: 32 records of shared memory for the block. The result is
// in thread 0. Every thread of the CTA must call it (it has barriers).
// kMayBeFast: the barrier also tells whether any thread of the block has
// `slow` set; when none has, the shuffle steps carry only the sums and the
// maximum, and the other fields of the result are left to the caller
// (*fast is then true).
template <bool kMayBeFast>
__device__ __forceinline__ KeyedPartial block_tree(KeyedPartial (&r)[kUnitsPerThread], int j,
                                                   KeyedPartial* xchg, bool slow = true,
                                                   bool* fast = nullptr) {
  keyed_merge(r[0], r[2]);  // stride 128: unit j with j+128, j+64 with j+192
  keyed_merge(r[1], r[3]);
  keyed_merge(r[0], r[1]);  // stride 64
  if (j >= 32) xchg[j - 32] = r[0];
  bool all_fast = false;
  if constexpr (kMayBeFast)
    all_fast = !__syncthreads_or(slow);
  else
    __syncthreads();
  if (j < 32) {
    keyed_merge(r[0], xchg[j]);  // stride 32
    if (all_fast) {
#pragma unroll
      for (int d = 16; d > 0; d >>= 1) {  // strides 16 .. 1
        const KeyedPartial o = shfl_down_keyed_sums_max(r[0], d);
        if (j < d) keyed_merge_sums_max(r[0], o);
      }
    } else {
#pragma unroll
      for (int d = 16; d > 0; d >>= 1) {
        const KeyedPartial o = shfl_down_keyed(r[0], d);
        if (j < d) keyed_merge(r[0], o);
      }
    }
  }
  if (fast) *fast = all_fast;
  return r[0];
}

// Writes the block's result; key -> flat index through `flat_of`.
template <class F>
__device__ __forceinline__ void write_partial(const KeyedPartial& r, spec::PartialSums* out,
                                              F flat_of) {
  spec::PartialSums p;
  p.sq_err = r.s[0];
  p.abs_err = r.s[1];
  p.sq_ref = r.s[2];
  p.sq_hat = r.s[3];
  p.dot = r.s[4];
  p.max_abs = r.max_abs;
  p.max_index = r.max_key == kNoKey ? spec::kNoIndex : flat_of(r.max_key);
  p.first_violation = r.fv_key == kNoKey ? spec::kNoIndex : flat_of(r.fv_key);
  p.count = r.count;
  p.nonfinite = r.nonfinite;
  p.violations = r.violations;
  *out = p;
}

}  // namespace qpack::kernels
