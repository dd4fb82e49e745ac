// The CUDA path of the fused dequantize-and-compare pass: the same per-unit
// arithmetic as the CPU (metrics_core.hpp) and the same fixed tree per block
// of 256 units, so the per-block partials are bit-identical; the host adds
// them in block order. Two fast kernels (namespace fast: a CTA per block,
// four units per thread, wide loads, reconstructions from a per-unit table
// in shared memory, anything unusual redone per unit with the CPU's exact
// code) cover column groups (inner >= 256) and contiguous row groups
// (inner == 1); the general kernel (one unit per thread) the rest.
//
// Host tensors are staged in chunks of whole blocks through two sets of
// device buffers (two streams: the upload of one chunk overlaps the kernel
// of the previous one), so device memory stays bounded whatever the tensor
// size. No managed memory.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "metrics_cuda.hpp"
#include "dequant_device.cuh"
#include "qpack/format/error.hpp"

namespace qpack::vcuda {

namespace {

using spec::ChunkView;
using spec::CompareGeometry;
using spec::PartialSums;

void check(cudaError_t e, const char* what, const std::string& tensor) {
  if (e != cudaSuccess)
    throw Error(ErrorCode::Cuda, "", tensor, std::string(what) + ": " + cudaGetErrorString(e));
}
#define QPACK_VCHECK(call, tensor) check((call), #call, (tensor))

// The device form of spec::eval_unit: codes are fetched and decoded eight
// at a time with the kernels' slice helpers (BITS known at compile time),
// and the elements are accumulated in the same ascending order with the same
// spec::accumulate_element, so the unit's sums have the same bits.
template <DType kSrc, int BITS>
__device__ __forceinline__ void eval_unit_device(const CompareGeometry& g, const ChunkView& v, int64_t sr,
                                                 int64_t col, PartialSums& acc) {
  const spec::SegRowSpan sp = spec::seg_row_span(g, sr);
  const int64_t n = sp.row_end - sp.row_begin;
  if (n <= 0) return;
  const int64_t c = col - v.c0;
  const int64_t pidx = (sp.scale_row - v.srow0) * v.pitch + c;
  const float scale = spec::load_param(v.scales, pidx, g.scale_dtype);
  const float zero = g.symmetric ? 0.0f : spec::load_param(v.zeros, pidx, g.scale_dtype);
  const spec::BoundTerms bt = spec::bound_terms(scale, zero, g.q, g.symmetric, g.scale_dtype);
  // The segment starts on a byte plane (64 codes fill 8*BITS bytes); planes
  // past its end (a partial group's padding) read as 0.
  const uint8_t* planes = v.codes + (sp.plane_begin - v.plane0) * v.pitch + c;
  const int64_t seg_planes = sp.plane_end - sp.plane_begin;
  const uint8_t* src = v.src + ((sp.row_begin - v.row0) * v.pitch + c) * (kSrc == DType::F32 ? 4 : 2);
  const int64_t flat0 = sp.row_begin * g.inner + col;
  for (int64_t s = 0; s * kernels::kSliceRows < n; ++s) {
    kernels::SliceStream<BITS> st[1];
    kernels::load_slice_planes<BITS, 1>(planes, v.pitch, s, seg_planes, st);
    float xh[kernels::kSliceRows];
    kernels::dequant_slice<BITS>(st[0], scale, zero, g.symmetric, xh);
    const int64_t k0 = s * kernels::kSliceRows;
    // All eight loads are issued before the dependent accumulation chain, so
    // that each thread keeps several memory requests in flight.
    float x[kernels::kSliceRows];
#pragma unroll
    for (int k = 0; k < kernels::kSliceRows; ++k)
      x[k] = k0 + k < n ? spec::load_source<kSrc>(src, (k0 + k) * v.pitch) : 0.0f;
#pragma unroll
    for (int k = 0; k < kernels::kSliceRows; ++k)
      if (k0 + k < n) spec::accumulate_element(acc, x[k], xh[k], flat0 + (k0 + k) * g.inner, bt);
  }
}

// At most 80 registers (3 blocks of 256 threads per SM on sm_90): without
// the cap some instantiations take 86-87 and drop to 2 blocks per SM.
template <DType kSrc, int BITS>
__global__ void __launch_bounds__(spec::kBlockUnits, 3)
    metrics_kernel(CompareGeometry g, ChunkView v, int64_t block0, PartialSums* out) {
  __shared__ PartialSums slots[spec::kBlockUnits];
  const int t = static_cast<int>(threadIdx.x);
  const int64_t b = block0 + static_cast<int64_t>(blockIdx.x);
  PartialSums acc;
  spec::partial_init(acc);
  int64_t sr, col;
  if (spec::unit_of(g, b, t, &sr, &col)) eval_unit_device<kSrc, BITS>(g, v, sr, col, acc);
  slots[t] = acc;
  __syncthreads();
  // The same strides as spec::block_tree_host.
  for (int stride = spec::kBlockUnits / 2; stride > 0; stride >>= 1) {
    if (t < stride) spec::partial_merge(slots[t], slots[t + stride]);
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = slots[0];
}

// ------------------------------------------------------------ fast kernels
//
// Two layouts cover the common tensors; everything else takes the general
// kernel above. Both give the same bits as spec::eval_unit: each unit's
// elements are accumulated in ascending order with the same IEEE operations,
// and the block's 256 unit partials go through the same fixed tree.
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
// with the magic-number float and an exact bit placement). The source value
// becomes a double exactly (see src_to_f64). Then the five sums, the
// running maximum and a per-unit predicate "above the bound's base".
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
namespace fast {

constexpr int kV = 4;                                      // units per thread
constexpr int kThreadsPerBlock = spec::kBlockUnits / kV;  // 64
constexpr int kCtaThreads = kThreadsPerBlock;  // a CTA is one block
constexpr uint32_t kNoKey = 0xffffffffu;
constexpr int kColPrefetch = 2;                 // columns: slices ahead fetched into L2

// One unit's running state. Fast path: m is the error of largest magnitude
// so far (sign kept), max_k its element index; both start at (0, 0), which
// gives the CPU's choice (element 0 unless a later one is strictly larger).
// rare: non-finite count (bits 0-7), violations (8-15), element index of the
// first violation (16-23, 0xff: none); only the exact rule sets them.
struct Acc {
  double sq_err, abs_err, sq_ref, sq_hat, dot, m;
  int max_k;  // -1: no element
  uint32_t rare;
};
__device__ __forceinline__ void acc_init(Acc& a) {
  a.sq_err = a.abs_err = a.sq_ref = a.sq_hat = a.dot = 0.0;
  a.m = 0.0;
  a.max_k = 0;
  a.rare = 0x00ff0000u;
}

// Table of reconstructions: BITS <= 4 only. Rows kernel: entry (unit v, code
// c) of thread tid is the double at byte ((v << BITS) + c) * 512 + tid * 8
// (64 threads; the columns kernel's layout, same size, is at col_tab_addr):
// the 32 lanes of a warp read 32 consecutive doubles of a row, whatever codes
// they hold, so the loads are free of bank conflicts.
template <int BITS>
__host__ __device__ constexpr int table_bytes() {
  return BITS <= 4 ? (kV << BITS) * kCtaThreads * 8 : 0;
}

// Byte offset of the entry of the code at bit `pos` of w (pos, like the whole
// call, known at compile time after unrolling), with tid8 = tid * 8.
template <int BITS>
__device__ __forceinline__ uint32_t table_off(uint32_t w, int pos, uint32_t tid8) {
  constexpr uint32_t mask = ((1u << BITS) - 1u) << 9;
  const uint32_t t = pos >= 9 ? (w >> (pos - 9)) : (w << (9 - pos));
  return (t & mask) | tid8;
}
template <int BITS>
__device__ __forceinline__ double table_ld(const uint8_t* tab, int v, uint32_t off) {
  return *reinterpret_cast<const double*>(tab + (v << BITS) * 512 + off);
}

// A finite binary32 value as a double, exactly, without the conversion unit:
// its fields placed in a double's give x * 2^-896 for normal and subnormal x
// alike, and the product by the power of two is exact.
__device__ __forceinline__ double f32_bits_to_f64(uint32_t f) {
  return __dmul_rn(__hiloint2double(int(uint32_t(int(f) >> 3) & 0x8fffffffu), int(f << 29)), 0x1p896);
}
// The code byte at bit `pos` of w (8 bits) as x_hat = fma(q, S, M), as a
// double: 2^23 + code minus (2^23 + offset) is q exactly.
__device__ __forceinline__ double decode8(uint32_t w, int pos, float magic_off, float s, float z) {
  const uint32_t f = __byte_perm(w, 0x4b000000u, 0x7650u | uint32_t(pos >> 3));
  const float q = __fsub_rn(__uint_as_float(f), magic_off);
  return f32_bits_to_f64(__float_as_uint(__fmaf_rn(q, s, z)));
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
// (col_src_f64), since its table loads lost their per-element add.
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
__device__ __forceinline__ void fast_element(Acc& a, double xd, double hd, int k) {
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
__device__ __forceinline__ bool unit_suspect(const Acc& a, double base) {
  return !(fabs(a.m) <= base) || !(a.sq_err == a.sq_err) || (kSrc == DType::F16 && !(a.sq_ref < 0x1p32));
}

// A parameter's raw bits as a float. F16 takes the hardware conversion,
// exact for every finite value (spec::param_value's f16_to_f32 is a
// branchy software one: about 17 instructions a parameter, 8 parameters per
// thread); a NaN's payload may differ, but a non-finite parameter sends its
// unit to the exact rule, which converts on its own.
__device__ __forceinline__ float param_fast(uint32_t bits, DType sd) {
  if (sd == DType::F32) return __uint_as_float(bits);
  if (sd == DType::BF16) return __uint_as_float(bits << 16);
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}

// spec::ulp_in(double(v), sd) for a finite float v, from its bits: the ulp
// 2^(max(e, emin) - mant) is the double of exponent field
// max(fe + 896 - mant, emin - mant + 1023), fe being v's biased exponent
// (0 for zero and subnormals, whose exponents lie below every emin, as
// ulp_in's clamp has it). ulp_in itself converts to double, compares,
// clamps and rebuilds, twice per unit.
struct UlpC {
  int add, lo;
};
__device__ __forceinline__ UlpC ulp_consts(DType sd) {
  const int mant = sd == DType::F16 ? 10 : sd == DType::BF16 ? 7 : 23;
  const int emin = sd == DType::F16 ? -14 : -126;
  return {896 - mant, emin - mant + 1023};
}
__device__ __forceinline__ double ulp_of_float(float v, UlpC c) {
  const int fe = int((__float_as_uint(v) >> 23) & 0xffu);
  return __hiloint2double(max(fe + c.add, c.lo) << 20, 0);
}

// A unit's parameters.
struct Par {
  float scale, zero;
  double base;
  bool ok;  // finite and small enough that every reconstruction is finite
};
// The columns kernel's: spec::bound_terms as it is. make_par below (same
// bits) measured 64 -> 58% (4-bit) and 62 -> 57% (3-bit) there, although
// its element loop only grew by 12 moves per slice; the cause was not found.
__device__ __forceinline__ Par make_par_ref(float scale, float zero, const CompareGeometry& g) {
  Par p;
  p.scale = scale;
  p.zero = zero;
  p.base = spec::bound_terms(scale, zero, g.q, g.symmetric, g.scale_dtype).base;
  // |q| <= 255: |q*S + M| < 2^127 when |S| <= 2^118 and |M| <= 2^126.
  p.ok = fabsf(scale) <= 0x1p118f && fabsf(zero) <= 0x1p126f;
  return p;
}
// The rows kernel's, where four units' setup weighs on 32-element units:
// base is spec::bound_terms(scale, zero, ...).base with the same double
// operations in the same order, the ulps from ulp_of_float (checked bit for
// bit against bound_terms over all three scale dtypes, subnormals included).
// A non-finite parameter gives some base, unused: ok is false.
__device__ __forceinline__ Par make_par(float scale, float zero, const CompareGeometry& g, UlpC uc) {
  Par p;
  p.scale = scale;
  p.zero = zero;
  const double s = scale;
  const double inner = __dadd_rn(__dadd_rn(ulp_of_float(scale, uc), __dmul_rn(s, 0x1p-22)), 0x1p-126);
  double b = __dadd_rn(__dmul_rn(0.5, s), __dmul_rn(g.q, inner));
  if (!g.symmetric) b = __dadd_rn(b, ulp_of_float(zero, uc));
  p.base = b;
  // |q| <= 255: |q*S + M| < 2^127 when |S| <= 2^118 and |M| <= 2^126.
  p.ok = fabsf(scale) <= 0x1p118f && fabsf(zero) <= 0x1p126f;
  return p;
}

// Writes this thread's table entries for one unit.
template <int BITS>
__device__ __forceinline__ void build_table(uint8_t* tab, int v, uint32_t tid8, const Par& p, float qoff) {
  if constexpr (BITS <= 4) {
#pragma unroll
    for (int c = 0; c < (1 << BITS); ++c) {
      const float xh = __fmaf_rn(float(c) - qoff, p.scale, p.zero);
      *reinterpret_cast<double*>(tab + ((v << BITS) + c) * 512 + tid8) = double(xh);
    }
  }
}

// The exact rule for a whole unit: the CPU's own spec::eval_unit, its
// PartialSums turned into an Acc (flat indices -> element indices k).
template <DType kSrc>
__device__ __noinline__ void exact_unit(const CompareGeometry* gp, const ChunkView* vp, int64_t sr, int64_t col, Acc* out) {
  const CompareGeometry& g = *gp;
  PartialSums p;
  spec::partial_init(p);
  spec::eval_unit<kSrc>(g, *vp, sr, col, p);
  const int64_t flat0 = spec::seg_row_span(g, sr).row_begin * g.inner + col;
  Acc a;
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
  const uint32_t fv = p.first_violation == spec::kNoIndex ? 0xffu : uint32_t((p.first_violation - flat0) / g.inner);
  a.rare = uint32_t(p.nonfinite) | (uint32_t(p.violations) << 8) | (fv << 16);
  *out = a;
}

// Unit (sr, col) redone with the exact rule into acc. The result goes
// through a local copy: the address of a thread's Acc array element would
// move the whole array out of registers.
template <DType kSrc>
__device__ __forceinline__ void redo_unit(const CompareGeometry& g, const ChunkView& v, int64_t sr, int64_t col, Acc& acc) {
  CompareGeometry tg = g;
  ChunkView tv = v;
  Acc ta;
  exact_unit<kSrc>(&tg, &tv, sr, col, &ta);
  acc = ta;
}

// A unit's partial as the tree sees it. Keys order elements as their flat
// indices do within one block; counts of one block fit 32 bits.
struct Rec {
  double s[5];
  double max_abs;
  uint32_t max_key, fv_key, nonfinite, violations, count, pad_;
};

// The sums and the maximum of a record: all a block changes when none of
// its units took the exact rule (no non-finite value, no violation, every
// element counted), so such a block shuffles 13 words a step instead of 17.
__device__ __forceinline__ void rec_merge_fast(Rec& a, const Rec& b) {
#pragma unroll
  for (int i = 0; i < 5; ++i) a.s[i] = __dadd_rn(a.s[i], b.s[i]);
  if (b.max_abs > a.max_abs || (b.max_abs == a.max_abs && b.max_key < a.max_key)) {
    a.max_abs = b.max_abs;
    a.max_key = b.max_key;
  }
}
__device__ __forceinline__ Rec shfl_down_rec_fast(const Rec& r, int d) {
  Rec o;
#pragma unroll
  for (int i = 0; i < 5; ++i) o.s[i] = __shfl_down_sync(0xffffffffu, r.s[i], d);
  o.max_abs = __shfl_down_sync(0xffffffffu, r.max_abs, d);
  o.max_key = __shfl_down_sync(0xffffffffu, r.max_key, d);
  return o;
}

__device__ __forceinline__ void rec_merge(Rec& a, const Rec& b) {
  rec_merge_fast(a, b);
  a.fv_key = min(a.fv_key, b.fv_key);
  a.nonfinite += b.nonfinite;
  a.violations += b.violations;
  a.count += b.count;
}

__device__ __forceinline__ Rec rec_of(const Acc& a, int n, uint32_t key0, uint32_t kstride) {
  Rec r;
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
__device__ __forceinline__ void rec_empty(Rec& r) {
  Acc a;
  acc_init(a);
  a.max_k = -1;
  r = rec_of(a, 0, 0, 0);
}

__device__ __forceinline__ Rec shfl_down_rec(const Rec& r, int d) {
  Rec o = shfl_down_rec_fast(r, d);
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
__device__ __forceinline__ Rec block_tree(Rec (&r)[kV], int j, Rec* xchg, bool slow = true, bool* fast = nullptr) {
  rec_merge(r[0], r[2]);  // stride 128: unit j with j+128, j+64 with j+192
  rec_merge(r[1], r[3]);
  rec_merge(r[0], r[1]);  // stride 64
  if (j >= 32) xchg[j - 32] = r[0];
  bool all_fast = false;
  if constexpr (kMayBeFast) all_fast = !__syncthreads_or(slow);
  else __syncthreads();
  if (j < 32) {
    rec_merge(r[0], xchg[j]);  // stride 32
    if (all_fast) {
#pragma unroll
      for (int d = 16; d > 0; d >>= 1) {  // strides 16 .. 1
        const Rec o = shfl_down_rec_fast(r[0], d);
        if (j < d) rec_merge_fast(r[0], o);
      }
    } else {
#pragma unroll
      for (int d = 16; d > 0; d >>= 1) {
        const Rec o = shfl_down_rec(r[0], d);
        if (j < d) rec_merge(r[0], o);
      }
    }
  }
  if (fast) *fast = all_fast;
  return r[0];
}

// Writes the block's result; key -> flat index through `flat_of`.
template <class F>
__device__ __forceinline__ void write_partial(const Rec& r, PartialSums* out, F flat_of) {
  PartialSums p;
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

// Segment row sr's span with 32-bit divisions (the host checks that the
// geometry fits).
__device__ __forceinline__ spec::SegRowSpan span32(const CompareGeometry& g, uint32_t sr) {
  const uint32_t segs = uint32_t(g.segs), P = uint32_t(g.groups_per_axis);
  const uint32_t s = segs == 1 ? 0u : sr % segs;
  const uint32_t r = segs == 1 ? sr : sr / segs;
  const uint32_t gi = r % P, o = r / P;
  const int64_t start = int64_t(gi) * g.group_size;
  const int64_t len = g.axis_len - start < g.group_size ? g.axis_len - start : g.group_size;
  int64_t k0 = int64_t(s) * spec::kSegment, k1 = k0 + spec::kSegment;
  if (k0 > len) k0 = len;
  if (k1 > len) k1 = len;
  const int64_t seg_bytes = int64_t(spec::kSegment / 8) * g.bits;
  int64_t p0 = int64_t(s) * seg_bytes, p1 = p0 + seg_bytes;
  if (p0 > g.bytes_per_group) p0 = g.bytes_per_group;
  if (p1 > g.bytes_per_group) p1 = g.bytes_per_group;
  spec::SegRowSpan sp;
  sp.row_begin = int64_t(o) * g.axis_len + start + k0;
  sp.row_end = int64_t(o) * g.axis_len + start + k1;
  sp.plane_begin = int64_t(r) * g.bytes_per_group + p0;
  sp.plane_end = int64_t(r) * g.bytes_per_group + p1;
  sp.scale_row = r;
  return sp;
}

// Shared memory of the two kernels: the tables, then (columns) the block's
// records over them, or (rows) the tree's exchange area beside them.
template <int BITS>
union ColsShared {
  double table[table_bytes<BITS>() > 0 ? table_bytes<BITS>() / 8 : 1];
  Rec recs[spec::kBlockUnits];
};

template <DType kSrc>
__host__ __device__ constexpr int src_words_per_row() {  // 32-bit words of 4 columns
  return kSrc == DType::F32 ? 4 : 2;
}

// One slice (8 rows) of a thread's 4 columns.
template <DType kSrc, int BITS>
struct ColSlice {
  uint32_t x[8][src_words_per_row<kSrc>()];
  uint32_t c[BITS];  // code plane j: byte v = column v
};

// A whole slice: rows src + k*rs, planes planes + j*ps.
template <DType kSrc, int BITS>
__device__ __forceinline__ void load_col_slice(ColSlice<kSrc, BITS>& sl, const uint8_t* src, const uint8_t* planes,
                                               int64_t rs, int64_t ps) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const uint8_t* p = src + k * rs;
    if constexpr (kSrc == DType::F32) {
      const uint4 w = __ldg(reinterpret_cast<const uint4*>(p));
      sl.x[k][0] = w.x;
      sl.x[k][1] = w.y;
      sl.x[k][2] = w.z;
      sl.x[k][3] = w.w;
    } else {
      const uint2 w = __ldg(reinterpret_cast<const uint2*>(p));
      sl.x[k][0] = w.x;
      sl.x[k][1] = w.y;
    }
  }
#pragma unroll
  for (int j = 0; j < BITS; ++j) sl.c[j] = __ldg(reinterpret_cast<const uint32_t*>(planes + j * ps));
}

// The columns kernel's table: entry (unit v, code c) of thread tid at byte
// c * 2048 + v * 512 + tid * 8 (still conflict-free: the lanes differ in
// bits 3-7), addressed from tb = the table's shared-window address + tid * 8.
// An element's entry is then its shifted code word masked and ORed with tb
// (one LOP3) plus the immediate v * 512. With table_off's layout the table
// base cost an add per element (32 a slice), because ptxas keeps it in a
// vector register in this kernel, not a uniform one. The OR is an add when
// bits 11-14 of every thread's tb are clear, which col_tab_fits checks once
// per CTA (true for the kernel's one static shared variable on sm_90; were it
// false, every unit would take the exact rule).
template <int BITS>
__device__ __forceinline__ uint32_t col_tab_addr(uint32_t w, int pos, uint32_t tb) {
  constexpr uint32_t mask = ((1u << BITS) - 1u) << 11;
  const uint32_t t = pos >= 11 ? (w >> (pos - 11)) : (w << (11 - pos));
  return (t & mask) | tb;
}
__device__ __forceinline__ bool col_tab_fits(uint32_t tab_sa) {
  return (tab_sa & 0x7fffu) + kCtaThreads * 8 <= 0x800u;
}
// Shared-window addresses need asm; volatile keeps the table loads after its
// stores, a dependency the compiler cannot see through the asm.
__device__ __forceinline__ double lds_f64(uint32_t a) {
  double d;
  asm volatile("ld.shared.f64 %0, [%1];" : "=d"(d) : "r"(a));
  return d;
}
__device__ __forceinline__ void sts_f64(uint32_t a, double d) {
  asm volatile("st.shared.f64 [%0], %1;" ::"r"(a), "d"(d));
}
template <int BITS>
__device__ __forceinline__ void build_col_table(uint32_t tb, int v, const Par& p, float qoff) {
  if constexpr (BITS <= 4) {
#pragma unroll
    for (int c = 0; c < (1 << BITS); ++c)
      sts_f64(tb + uint32_t(c * 2048 + v * 512), double(__fmaf_rn(float(c) - qoff, p.scale, p.zero)));
  }
}

// The columns kernel's source conversion: 16-bit floats through the
// conversion unit (two instructions where the bit placement took four or
// five, one of them on the FP64 pipe). An F16 NaN or Inf then reaches the
// unit's sums or maximum as it is and takes the exact rule like an F32 one.
template <DType kSrc, int H>
__device__ __forceinline__ double col_src_f64(uint32_t w) {
  if constexpr (kSrc == DType::F16) {
    const __half2 h = *reinterpret_cast<const __half2*>(&w);
    return double(H ? __high2float(h) : __low2float(h));
  } else {
    return src_to_f64<kSrc, H, true>(w);
  }
}
// One column slice for the thread's 4 units, element k of all four units
// before element k + 1: one unit after the other, ptxas placed a use of an
// F2F or LDS result behind a scoreboard it shares with the next slice's
// global loads, 30 instructions after they issue (1315 of 6684 stall
// samples of the loop on one DADD, bf16 4-bit); interleaved, every such wait
// comes 200 or more instructions later (long-scoreboard stalls per issue
// 0.92 -> 0.57). The accumulation order within each unit is unchanged.
template <DType kSrc, int BITS>
__device__ __forceinline__ void process_col_slice(const ColSlice<kSrc, BITS>& sl, Acc (&acc)[kV], const Par (&par)[kV],
                                                  int k0, uint32_t tb,
                                                  float magic_off) {
  uint32_t st3[kV] = {};  // 3 bits: column v's 24-bit stream
  if constexpr (BITS == 3) {
#pragma unroll
    for (int v = 0; v < kV; ++v)
      st3[v] = __byte_perm(__byte_perm(sl.c[0], sl.c[1], uint32_t(v) | (uint32_t(v + 4) << 4)), sl.c[2],
                           0x0010u | (uint32_t(v + 4) << 8));
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) {
#pragma unroll
    for (int v = 0; v < kV; ++v) {
      const uint32_t w = kSrc == DType::F32 ? sl.x[k][v] : sl.x[k][v / 2];
      const double xd = (kSrc == DType::F32 || (v & 1)) ? col_src_f64<kSrc, 1>(w) : col_src_f64<kSrc, 0>(w);
      double hd;
      if constexpr (BITS == 4) hd = lds_f64(col_tab_addr<4>(sl.c[k >> 1], 8 * v + 4 * (k & 1), tb) + v * 512);
      else if constexpr (BITS == 2) hd = lds_f64(col_tab_addr<2>(sl.c[k >> 2], 8 * v + 2 * (k & 3), tb) + v * 512);
      else if constexpr (BITS == 3) hd = lds_f64(col_tab_addr<3>(st3[v], 3 * k, tb) + v * 512);
      else hd = decode8(sl.c[k], 8 * v, magic_off, par[v].scale, par[v].zero);
      fast_element(acc[v], xd, hd, k0 + k);
    }
  }
}

template <DType kSrc, int BITS>
__global__ void __launch_bounds__(kCtaThreads, 6)
    cols_kernel(CompareGeometry g, ChunkView v, int64_t block0, PartialSums* out) {
  __shared__ ColsShared<BITS> sh;
  const int j = int(threadIdx.x);
  const uint32_t tab_sa = uint32_t(__cvta_generic_to_shared(sh.table));
  const uint32_t tb = tab_sa + uint32_t(j) * 8u;
  const int64_t lb = int64_t(blockIdx.x);  // block within the launch
  const int64_t b = block0 + lb;
  const uint32_t sr = uint32_t(b / g.col_blocks);
  const int64_t col0 = (b % g.col_blocks) * spec::kBlockUnits;
  const int64_t col = col0 + 4 * j;
  const bool live = col < g.inner;
  const spec::SegRowSpan sp = span32(g, sr);
  const int rows = int(sp.row_end - sp.row_begin);

  Acc acc[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) acc_init(acc[u]);
  if (live && rows > 0) {
    bool susp[kV];
    if (rows % 8 == 0 && col_tab_fits(tab_sa)) {
      const int64_t c = col - v.c0;
      const int64_t pidx = (sp.scale_row - v.srow0) * v.pitch + c;
      const float magic_off = 8388608.0f + (g.symmetric ? float(1 << (BITS - 1)) : 0.0f);
      const float qoff = g.symmetric ? float(1 << (BITS - 1)) : 0.0f;
      constexpr int esz = kSrc == DType::F32 ? 4 : 2;
      const uint8_t* planes = v.codes + (sp.plane_begin - v.plane0) * v.pitch + c;
      const uint8_t* src = v.src + ((sp.row_begin - v.row0) * v.pitch + c) * esz;
      const int64_t rs = v.pitch * esz, ps = v.pitch;
      const int nsl = rows / 8;
      // The next slice is loaded while the current one is processed, into
      // registers carried to the next iteration, so that the compiler cannot
      // move the loads down to their use. The loads are unconditional (past
      // the last slice they read the last one again): guarded by a branch,
      // ptxas put them at the end of the iteration, which measured slower.
      // The first slice and all the parameters are loaded before any table
      // store: the compiler does not move a global load above a shared store
      // through generic pointers, and unit by unit the CTA waited for four
      // parameter loads and the first slice one after the other (a third of
      // the stall samples were there).
      ColSlice<kSrc, BITS> cur, nxt;
      load_col_slice<kSrc, BITS>(cur, src, planes, rs, ps);
      uint32_t scale_u[kV], zero_u[kV];
#pragma unroll
      for (int u = 0; u < kV; ++u) {
        scale_u[u] = spec::load_param_bits(v.scales, pidx + u, g.scale_dtype);
        zero_u[u] = g.symmetric ? 0u : spec::load_param_bits(v.zeros, pidx + u, g.scale_dtype);
      }
      Par par[kV];
#pragma unroll
      for (int u = 0; u < kV; ++u) {
        par[u] = make_par_ref(spec::param_value(scale_u[u], g.scale_dtype),
                              g.symmetric ? 0.0f : spec::param_value(zero_u[u], g.scale_dtype), g);
        susp[u] = !par[u].ok;
        build_col_table<BITS>(tb, u, par[u], qoff);
      }
      const int64_t step_s = 8 * rs, step_p = BITS * ps;
      // Further ahead, slice s + kColPrefetch is fetched into L2 (no
      // registers held): one 128-byte line per lane, lanes 0 .. 8*esz-1 the
      // warp's 8 source rows (128 columns), the next BITS lanes its code
      // planes. Only warps whose 128 columns all exist, so that no address
      // leaves the buffers. H100: distance 2 measured 3-5% faster than none,
      // and than all of the block's slices at the start.
      const int lane = j & 31;
      const bool pf_on = col - 4 * lane + 128 <= g.inner && lane < 8 * esz + BITS;
      const uint8_t* pf_base = lane < 8 * esz ? src + (lane / esz) * rs + (lane % esz) * 128 - lane * 4 * esz
                                              : planes + (lane - 8 * esz) * ps - lane * 4;
      const int64_t pf_step = lane < 8 * esz ? step_s : step_p;
#pragma unroll 1
      for (int s = 0; s < nsl; ++s) {
        if (pf_on && s + kColPrefetch < nsl)
          asm volatile("prefetch.global.L2 [%0];" ::"l"(pf_base + int64_t(s + kColPrefetch) * pf_step));
        const bool more = s + 1 < nsl;
        src += more ? step_s : 0;
        planes += more ? step_p : 0;
        load_col_slice<kSrc, BITS>(nxt, src, planes, rs, ps);
        process_col_slice<kSrc, BITS>(cur, acc, par, 8 * s, tb, magic_off);
        cur = nxt;
      }
#pragma unroll
      for (int u = 0; u < kV; ++u) susp[u] = susp[u] || unit_suspect<kSrc>(acc[u], par[u].base);
    } else {
#pragma unroll
      for (int u = 0; u < kV; ++u) susp[u] = true;
    }
#pragma unroll
    for (int u = 0; u < kV; ++u)
      if (susp[u]) redo_unit<kSrc>(g, v, sr, col + u, acc[u]);
  }
  // Records by unit (4j + u), then each thread takes units j + 64u. The
  // records overlay the tables: wait until every thread is done with its own.
  __syncthreads();
  Rec* mine = sh.recs;
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    Rec r;
    if (live && rows > 0) r = rec_of(acc[u], rows, uint32_t(4 * j + u), spec::kBlockUnits);
    else rec_empty(r);
    mine[4 * j + u] = r;
  }
  __syncthreads();
  Rec r[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) r[u] = mine[j + 64 * u];
  __syncthreads();  // recs is reused as the exchange area
  const Rec res = block_tree<false>(r, j, mine);
  if (j == 0) {
    const int64_t row_begin = sp.row_begin, inner = g.inner;
    write_partial(res, out + lb, [&](uint32_t key) {
      return (row_begin + int64_t(key / spec::kBlockUnits)) * inner + col0 + int64_t(key % spec::kBlockUnits);
    });
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
  static constexpr int kChunks = U * (kSrc == DType::F32 ? 4 : 2) / 16;  // 16-byte chunks of a unit's source
  static constexpr int kRow16 = kChunks | 1;                              // row stride, in chunks
  static constexpr int kWordsPerUnit = U * BITS / 32;                     // code words of a unit
  static constexpr int kCodeRow = kWordsPerUnit | 1;                      // row stride, in words
  uint4 src[2][2][32 * kRow16];         // [warp][buffer]
  uint32_t codes[2][2][32 * kCodeRow];  // [warp][buffer]
};
template <DType kSrc, int BITS, int U>
struct RowsShared {
  double table[BITS <= 4 ? (1 << BITS) * kCtaThreads : 1];
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
    if constexpr (kBytes == 16) cp_async16(sdst + i * kStride + c, gsrc + id * 16);
    else cp_async4(sdst + i * kStride + c, gsrc + id * 4);
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// The raw parameter bits of a thread's units usr + 64u (T: the scale
// dtype's word). U == 32 has one parameter row per unit, so the four loads
// are one address and immediate offsets.
template <class T, int U>
__device__ __forceinline__ void load_rows_params(const uint8_t* scales, const uint8_t* zeros, bool symmetric,
                                                 uint32_t usr, int seg_shift, uint32_t srow0, uint32_t (&s)[kV],
                                                 uint32_t (&z)[kV]) {
  const T* ps = reinterpret_cast<const T*>(scales);
  const T* pz = reinterpret_cast<const T*>(zeros);
  if constexpr (U == 32) {
    ps += usr - srow0;
    pz += usr - srow0;
  }
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    const uint32_t i = U == 32 ? 64u * u : ((usr + 64u * u) >> seg_shift) - srow0;
    s[u] = ps[i];
    z[u] = symmetric ? 0u : uint32_t(pz[i]);
  }
}

template <DType kSrc, int BITS, int U>
__global__ void __launch_bounds__(kCtaThreads, 7)
    rows_kernel(CompareGeometry g, ChunkView v, int seg_shift, int64_t block0, PartialSums* out) {
  using Stage = RowsStage<kSrc, BITS, U>;
  __shared__ RowsShared<kSrc, BITS, U> sh;
  uint8_t* const smem = reinterpret_cast<uint8_t*>(sh.table);
  constexpr int kWords = kSrc == DType::F32 ? 8 : 4;  // 32-bit words of 8 elements
  constexpr int esz = kSrc == DType::F32 ? 4 : 2;
  constexpr int kCodeBytes = U * BITS / 8;  // of a unit
  const int j = int(threadIdx.x);
  const int lane = j & 31, warp = j >> 5;
  const uint32_t tid8 = uint32_t(j) * 8u;
  const int64_t lb = int64_t(blockIdx.x);
  const int64_t sr0 = (block0 + lb) * spec::kBlockUnits;  // the block's first unit
  const float magic_off = 8388608.0f + (g.symmetric ? float(1 << (BITS - 1)) : 0.0f);
  const float qoff = g.symmetric ? float(1 << (BITS - 1)) : 0.0f;
  // The tree's exchange area: warp 1's first source buffer, which warp 1
  // alone uses and only before it writes there.
  Rec* xchg = reinterpret_cast<Rec*>(sh.st.src[1][0]);
  static_assert(sizeof(Rec) * 32 <= sizeof(sh.st.src[1][0]), "exchange area");

  Acc acc[kV];
  Par par[kV];
  bool live[kV], susp[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    acc_init(acc[u]);
    live[u] = sr0 + j + 64 * u < g.seg_rows;
  }
  const bool whole = sr0 + spec::kBlockUnits <= g.seg_rows;
  if (whole) {
    // All parameter loads are issued before anything waits for one, as raw
    // bits converted later (unit by unit, the warp waited for each load in
    // turn). Indices in 32 bits (seg_rows < 2^31, see fast_layout): the
    // 64-bit index arithmetic was about 20 instructions a unit.
    uint32_t scale_u[kV], zero_u[kV];
    const uint32_t usr = uint32_t(sr0) + uint32_t(j), srow0 = uint32_t(v.srow0);
    if (g.scale_dtype == DType::F32)
      load_rows_params<uint32_t, U>(v.scales, v.zeros, g.symmetric, usr, seg_shift, srow0, scale_u, zero_u);
    else
      load_rows_params<uint16_t, U>(v.scales, v.zeros, g.symmetric, usr, seg_shift, srow0, scale_u, zero_u);
    // The warp's runs for u = 0; run u lies 64*u units further, a constant
    // that the copies take as an immediate offset.
    const uint8_t* const src_run = v.src + ((sr0 + 32 * warp) * U - v.row0) * esz;
    const uint8_t* const code_run = v.codes + ((sr0 + 32 * warp) * kCodeBytes - v.plane0);
    auto stage = [&](int u, int buf) {
      stage_run<Stage::kChunks, Stage::kRow16, 16>(sh.st.src[warp][buf], src_run + u * (64 * U * esz), lane);
      stage_run<Stage::kWordsPerUnit, Stage::kCodeRow, 4>(sh.st.codes[warp][buf], code_run + u * (64 * kCodeBytes),
                                                            lane);
      cp_async_commit();
    };
    const UlpC uc = ulp_consts(g.scale_dtype);
    stage(0, 0);
#pragma unroll
    for (int u = 0; u < kV; ++u) {
      par[u] = make_par(param_fast(scale_u[u], g.scale_dtype),
                        g.symmetric ? 0.0f : param_fast(zero_u[u], g.scale_dtype), g, uc);
      susp[u] = !par[u].ok;
    }
#pragma unroll
    for (int u = 0; u < kV; ++u) {
      if (u + 1 < kV) {
        stage(u + 1, (u + 1) & 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncwarp();
      build_table<BITS>(smem, 0, tid8, par[u], qoff);
      const uint4* row = sh.st.src[warp][u & 1] + lane * Stage::kRow16;
      const uint32_t* crow = sh.st.codes[warp][u & 1] + lane * Stage::kCodeRow;
      auto lds = [&](int s, uint32_t (&x)[kWords], kernels::SliceStream<BITS>& c) {
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
      kernels::SliceStream<BITS> c, cn;
      lds(0, x, c);
#pragma unroll 1
      for (int s = 0; s < U / 8; ++s) {
        lds(s + 1 < U / 8 ? s + 1 : s, xn, cn);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const uint32_t w = kSrc == DType::F32 ? x[k] : x[k / 2];
          const double xd =
              (kSrc == DType::F32 || (k & 1)) ? src_to_f64<kSrc, 1, true>(w) : src_to_f64<kSrc, 0, true>(w);
          double hd;
          if constexpr (BITS <= 4) hd = table_ld<BITS>(smem, 0, table_off<BITS>(uint32_t(c), BITS * k, tid8));
          else hd = decode8(uint32_t(uint64_t(c) >> (32 * (k >> 2))), 8 * (k & 3), magic_off, par[u].scale, par[u].zero);
          fast_element(acc[u], xd, hd, 8 * s + k);
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
    for (int u = 0; u < kV; ++u) susp[u] = live[u];
  }
  bool slow = !whole;
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    if (susp[u]) redo_unit<kSrc>(g, v, sr0 + j + 64 * u, 0, acc[u]);
    slow = slow || susp[u];
  }
  Rec r[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    if (live[u]) r[u] = rec_of(acc[u], U, uint32_t((j + 64 * u) * spec::kSegment), 1u);
    else rec_empty(r[u]);
  }
  bool fast_block;
  Rec res = block_tree<true>(r, j, xchg, slow, &fast_block);
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

}  // namespace fast

template <DType kSrc>
void launch_bits(const CompareGeometry& g, const ChunkView& v, int64_t block0, dim3 grid, PartialSums* out,
                 cudaStream_t stream) {
  const dim3 block(spec::kBlockUnits);
  switch (g.bits) {
    case 2: metrics_kernel<kSrc, 2><<<grid, block, 0, stream>>>(g, v, block0, out); break;
    case 3: metrics_kernel<kSrc, 3><<<grid, block, 0, stream>>>(g, v, block0, out); break;
    case 4: metrics_kernel<kSrc, 4><<<grid, block, 0, stream>>>(g, v, block0, out); break;
    default: metrics_kernel<kSrc, 8><<<grid, block, 0, stream>>>(g, v, block0, out); break;
  }
}

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// log2(segments per group) for the rows kernel, -1 when it is not a power of two.
int seg_shift(const CompareGeometry& g) {
  for (int k = 0; k < 31; ++k)
    if (g.segs == (int64_t(1) << k)) return k;
  return -1;
}

// Which fast kernel fits the tensor and its buffers: 0 none, 1 columns, 2
// rows of 64-element units, 3 rows of 32-element units (uniform geometry:
// see rows_kernel).
int fast_layout(const CompareGeometry& g, const ChunkView& v) {
  const int esz = g.source_dtype == DType::F32 ? 4 : 2;
  const int sb = g.scale_dtype == DType::F32 ? 4 : 2;
  if (g.seg_rows >= (int64_t(1) << 31)) return 0;
  if (!aligned(v.scales, sb) || (!g.symmetric && !aligned(v.zeros, sb))) return 0;
  if (g.inner >= spec::kBlockUnits && g.inner % 4 == 0 && v.pitch % 4 == 0 && v.c0 % 4 == 0 &&
      aligned(v.src, 4 * esz) && aligned(v.codes, 4))
    return 1;
  if (g.inner == 1 && g.axis_len % g.group_size == 0 && aligned(v.src, 16) && aligned(v.codes, 4)) {
    if (g.group_size == 32) return 3;
    if (g.group_size % spec::kSegment == 0 && seg_shift(g) >= 0) return 2;
  }
  return 0;
}

template <DType kSrc, int BITS>
void launch_fast(int layout, const CompareGeometry& g, const ChunkView& v, int64_t block0, int64_t nblocks,
                 PartialSums* out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(nblocks));
  if (layout == 1)
    fast::cols_kernel<kSrc, BITS><<<grid, fast::kCtaThreads, 0, stream>>>(g, v, block0, out);
  else if (layout == 2)
    fast::rows_kernel<kSrc, BITS, 64><<<grid, fast::kCtaThreads, 0, stream>>>(g, v, seg_shift(g), block0, out);
  else
    fast::rows_kernel<kSrc, BITS, 32><<<grid, fast::kCtaThreads, 0, stream>>>(g, v, 0, block0, out);
}

template <DType kSrc>
void launch_fast_bits(int layout, const CompareGeometry& g, const ChunkView& v, int64_t block0, int64_t nblocks,
                      PartialSums* out, cudaStream_t stream) {
  switch (g.bits) {
    case 2: launch_fast<kSrc, 2>(layout, g, v, block0, nblocks, out, stream); break;
    case 3: launch_fast<kSrc, 3>(layout, g, v, block0, nblocks, out, stream); break;
    case 4: launch_fast<kSrc, 4>(layout, g, v, block0, nblocks, out, stream); break;
    default: launch_fast<kSrc, 8>(layout, g, v, block0, nblocks, out, stream); break;
  }
}

void launch(const CompareGeometry& g, const ChunkView& v, int64_t block0, int64_t nblocks, PartialSums* out,
            cudaStream_t stream, const std::string& tensor) {
  if (nblocks > INT_MAX) throw Error(ErrorCode::Internal, "", tensor, "too many blocks in one launch");
  if (g.bits != 2 && g.bits != 3 && g.bits != 4 && g.bits != 8)
    throw Error(ErrorCode::UnsupportedScheme, "", tensor, "bits must be 2, 3, 4 or 8");
  const int layout = fast_layout(g, v);
  if (layout != 0) {
    switch (g.source_dtype) {
      case DType::F16: launch_fast_bits<DType::F16>(layout, g, v, block0, nblocks, out, stream); break;
      case DType::BF16: launch_fast_bits<DType::BF16>(layout, g, v, block0, nblocks, out, stream); break;
      default: launch_fast_bits<DType::F32>(layout, g, v, block0, nblocks, out, stream); break;
    }
    QPACK_VCHECK(cudaGetLastError(), tensor);
    return;
  }
  const dim3 grid(static_cast<unsigned>(nblocks));
  switch (g.source_dtype) {
    case DType::F16: launch_bits<DType::F16>(g, v, block0, grid, out, stream); break;
    case DType::BF16: launch_bits<DType::BF16>(g, v, block0, grid, out, stream); break;
    default: launch_bits<DType::F32>(g, v, block0, grid, out, stream); break;
  }
  QPACK_VCHECK(cudaGetLastError(), tensor);
}

// A rectangle of whole blocks: segment rows [sr0, sr1), columns [c0, c1).
struct Chunk {
  int64_t block0, block1;
  int64_t sr0, sr1;
  int64_t c0, c1;
};

int source_bytes_per_element(DType d) { return d == DType::F32 ? 4 : 2; }
int scale_bytes_of(DType d) { return d == DType::F32 ? 4 : 2; }

// Upper bound of the staged bytes of one segment row, per column.
uint64_t seg_row_bytes_per_column(const CompareGeometry& g) {
  const uint64_t params = uint64_t(scale_bytes_of(g.scale_dtype)) * (g.symmetric ? 1 : 2);
  return uint64_t(spec::kSegment) * source_bytes_per_element(g.source_dtype) +
         uint64_t(spec::kSegment / 8) * g.bits + params;
}

std::vector<Chunk> plan_chunks(const CompareGeometry& g, uint64_t budget) {
  std::vector<Chunk> chunks;
  if (g.blocks == 0) return chunks;
  constexpr int64_t kMaxBlocksPerLaunch = int64_t(1) << 20;
  const uint64_t per_col = seg_row_bytes_per_column(g);
  const uint64_t per_row = per_col * uint64_t(g.inner);
  if (g.inner < spec::kBlockUnits) {
    const uint64_t per_block = per_row * uint64_t(g.rows_per_block);
    const int64_t step = std::clamp<int64_t>(int64_t(budget / std::max<uint64_t>(per_block, 1)), 1,
                                             kMaxBlocksPerLaunch);
    for (int64_t b0 = 0; b0 < g.blocks; b0 += step) {
      const int64_t b1 = std::min(b0 + step, g.blocks);
      chunks.push_back({b0, b1, b0 * g.rows_per_block,
                        std::min(b1 * g.rows_per_block, g.seg_rows), 0, g.inner});
    }
  } else if (per_row <= budget) {
    const int64_t step = std::clamp<int64_t>(int64_t(budget / per_row), 1,
                                             std::max<int64_t>(kMaxBlocksPerLaunch / g.col_blocks, 1));
    for (int64_t r0 = 0; r0 < g.seg_rows; r0 += step) {
      const int64_t r1 = std::min(r0 + step, g.seg_rows);
      chunks.push_back({r0 * g.col_blocks, r1 * g.col_blocks, r0, r1, 0, g.inner});
    }
  } else {
    // A single segment row is over the budget: split it by columns, in
    // whole 256-column blocks.
    const uint64_t per_block = per_col * spec::kBlockUnits;
    const int64_t step = std::clamp<int64_t>(int64_t(budget / per_block), 1, kMaxBlocksPerLaunch);
    for (int64_t r = 0; r < g.seg_rows; ++r)
      for (int64_t cb0 = 0; cb0 < g.col_blocks; cb0 += step) {
        const int64_t cb1 = std::min(cb0 + step, g.col_blocks);
        chunks.push_back({r * g.col_blocks + cb0, r * g.col_blocks + cb1, r, r + 1,
                          cb0 * spec::kBlockUnits,
                          std::min(cb1 * spec::kBlockUnits, g.inner)});
      }
  }
  return chunks;
}

struct StagingSet {
  cudaStream_t stream = nullptr;
  uint8_t* src = nullptr;
  uint8_t* codes = nullptr;
  uint8_t* scales = nullptr;
  uint8_t* zeros = nullptr;
  size_t src_cap = 0, codes_cap = 0, scales_cap = 0, zeros_cap = 0;
  PartialSums* d_part = nullptr;
  PartialSums* h_part = nullptr;  // pinned
  size_t part_cap = 0;
  // Results in flight on this set's stream.
  PartialSums* pending_out = nullptr;
  int64_t pending_n = 0;
};

void ensure_device(uint8_t** p, size_t* cap, size_t need, const std::string& tensor) {
  if (need <= *cap) return;
  if (*p) QPACK_VCHECK(cudaFree(*p), tensor);
  *p = nullptr;
  *cap = 0;
  QPACK_VCHECK(cudaMalloc(reinterpret_cast<void**>(p), need), tensor);
  *cap = need;
}

void ensure_partials(StagingSet& s, size_t n, const std::string& tensor) {
  if (n <= s.part_cap) return;
  if (s.d_part) QPACK_VCHECK(cudaFree(s.d_part), tensor);
  if (s.h_part) QPACK_VCHECK(cudaFreeHost(s.h_part), tensor);
  s.d_part = nullptr;
  s.h_part = nullptr;
  s.part_cap = 0;
  QPACK_VCHECK(cudaMalloc(reinterpret_cast<void**>(&s.d_part), n * sizeof(PartialSums)), tensor);
  QPACK_VCHECK(cudaMallocHost(reinterpret_cast<void**>(&s.h_part), n * sizeof(PartialSums)), tensor);
  s.part_cap = n;
}

// Waits for the set's work and moves its partials to their place.
void drain(StagingSet& s, const std::string& tensor) {
  QPACK_VCHECK(cudaStreamSynchronize(s.stream), tensor);
  if (s.pending_n > 0)
    std::memcpy(s.pending_out, s.h_part, size_t(s.pending_n) * sizeof(PartialSums));
  s.pending_n = 0;
  s.pending_out = nullptr;
}

// Copies a rectangle of `height` rows of `width` elements (of `esize`
// bytes) starting at row `row0`, column `c0` of a host array with `inner`
// columns into a dense device buffer.
void upload_rect(uint8_t* dst, const uint8_t* host, int64_t row0, int64_t height, int64_t c0,
                 int64_t width, int64_t inner, int esize, cudaStream_t stream,
                 const std::string& tensor) {
  if (height <= 0 || width <= 0) return;
  const size_t w = size_t(width) * esize, pitch = size_t(inner) * esize;
  const uint8_t* from = host + (size_t(row0) * size_t(inner) + size_t(c0)) * esize;
  if (w == pitch)
    QPACK_VCHECK(cudaMemcpyAsync(dst, from, w * size_t(height), cudaMemcpyHostToDevice, stream),
                 tensor);
  else
    QPACK_VCHECK(cudaMemcpy2DAsync(dst, w, from, pitch, w, size_t(height), cudaMemcpyHostToDevice,
                                   stream),
                 tensor);
}

}  // namespace

struct DeviceState {
  int device = 0;
  std::string desc;
  uint64_t chunk_bytes = 0;
  StagingSet sets[2];
  cudaEvent_t start = nullptr, stop = nullptr;
};

bool available(int device, std::string* description) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
    cudaGetLastError();  // clear, so that a later call does not see it
    return false;
  }
  if (device < 0 || device >= n) return false;
  if (description) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return false;
    *description = "cuda:" + std::to_string(device) + " (" + prop.name + ")";
  }
  return true;
}

DeviceState* create(int device, uint64_t chunk_bytes) {
  std::string desc;
  if (!available(device, &desc))
    throw Error(ErrorCode::NoDevice, "", "",
                "no usable CUDA device " + std::to_string(device) + " (use --device cpu)");
  auto* s = new DeviceState;
  s->device = device;
  s->desc = desc;
  s->chunk_bytes = chunk_bytes > 0 ? chunk_bytes : (256ull << 20);
  try {
    QPACK_VCHECK(cudaSetDevice(device), "");
    for (auto& set : s->sets) QPACK_VCHECK(cudaStreamCreateWithFlags(&set.stream, cudaStreamNonBlocking), "");
    QPACK_VCHECK(cudaEventCreate(&s->start), "");
    QPACK_VCHECK(cudaEventCreate(&s->stop), "");
  } catch (...) {
    destroy(s);
    throw;
  }
  return s;
}

void destroy(DeviceState* s) noexcept {
  if (!s) return;
  cudaSetDevice(s->device);
  for (auto& set : s->sets) {
    if (set.stream) cudaStreamSynchronize(set.stream);
    cudaFree(set.src);
    cudaFree(set.codes);
    cudaFree(set.scales);
    cudaFree(set.zeros);
    cudaFree(set.d_part);
    cudaFreeHost(set.h_part);
    if (set.stream) cudaStreamDestroy(set.stream);
  }
  if (s->start) cudaEventDestroy(s->start);
  if (s->stop) cudaEventDestroy(s->stop);
  delete s;
}

std::string description(const DeviceState* s) { return s->desc; }

void compute_host(DeviceState* s, const CompareGeometry& g, const ChunkView& host, PartialSums* out_blocks,
                  const std::string& tensor) {
  QPACK_VCHECK(cudaSetDevice(s->device), tensor);
  const std::vector<Chunk> chunks = plan_chunks(g, s->chunk_bytes);
  const int esize = source_bytes_per_element(g.source_dtype);
  const int sb = scale_bytes_of(g.scale_dtype);
  try {
    for (size_t ci = 0; ci < chunks.size(); ++ci) {
      const Chunk& c = chunks[ci];
      StagingSet& set = s->sets[ci % 2];
      drain(set, tensor);  // its buffers are free again

      const spec::SegRowSpan first = spec::seg_row_span(g, c.sr0);
      const spec::SegRowSpan last = spec::seg_row_span(g, c.sr1 - 1);
      const int64_t rows = last.row_end - first.row_begin;
      const int64_t planes = last.plane_end - first.plane_begin;
      const int64_t srows = last.scale_row - first.scale_row + 1;
      const int64_t width = c.c1 - c.c0;
      ensure_device(&set.src, &set.src_cap, std::max<size_t>(size_t(rows * width) * esize, 1), tensor);
      ensure_device(&set.codes, &set.codes_cap, std::max<size_t>(size_t(planes * width), 1), tensor);
      ensure_device(&set.scales, &set.scales_cap, size_t(srows * width) * sb, tensor);
      if (!g.symmetric) ensure_device(&set.zeros, &set.zeros_cap, size_t(srows * width) * sb, tensor);
      const int64_t nb = c.block1 - c.block0;
      ensure_partials(set, size_t(nb), tensor);

      upload_rect(set.src, host.src, first.row_begin, rows, c.c0, width, g.inner, esize, set.stream, tensor);
      upload_rect(set.codes, host.codes, first.plane_begin, planes, c.c0, width, g.inner, 1, set.stream, tensor);
      upload_rect(set.scales, host.scales, first.scale_row, srows, c.c0, width, g.inner, sb, set.stream, tensor);
      if (!g.symmetric)
        upload_rect(set.zeros, host.zeros, first.scale_row, srows, c.c0, width, g.inner, sb, set.stream, tensor);

      const ChunkView dv{set.src, set.codes, set.scales, g.symmetric ? nullptr : set.zeros,
                         first.row_begin, first.plane_begin, first.scale_row, c.c0, width};
      launch(g, dv, c.block0, nb, set.d_part, set.stream, tensor);
      QPACK_VCHECK(cudaMemcpyAsync(set.h_part, set.d_part, size_t(nb) * sizeof(PartialSums),
                                   cudaMemcpyDeviceToHost, set.stream),
                   tensor);
      set.pending_out = out_blocks + c.block0;
      set.pending_n = nb;
    }
    for (auto& set : s->sets) drain(set, tensor);
  } catch (...) {
    // Leave no work in flight that refers to the caller's buffers.
    for (auto& set : s->sets) {
      cudaStreamSynchronize(set.stream);
      set.pending_n = 0;
    }
    throw;
  }
}

void compute_device(DeviceState* s, const CompareGeometry& g, const ChunkView& dev, PartialSums* out_blocks,
                    float* kernel_ms, const std::string& tensor) {
  QPACK_VCHECK(cudaSetDevice(s->device), tensor);
  StagingSet& set = s->sets[0];
  drain(set, tensor);
  ensure_partials(set, size_t(g.blocks), tensor);
  QPACK_VCHECK(cudaEventRecord(s->start, set.stream), tensor);
  launch(g, dev, 0, g.blocks, set.d_part, set.stream, tensor);
  QPACK_VCHECK(cudaEventRecord(s->stop, set.stream), tensor);
  QPACK_VCHECK(cudaMemcpyAsync(set.h_part, set.d_part, size_t(g.blocks) * sizeof(PartialSums),
                               cudaMemcpyDeviceToHost, set.stream),
               tensor);
  QPACK_VCHECK(cudaStreamSynchronize(set.stream), tensor);
  std::memcpy(out_blocks, set.h_part, size_t(g.blocks) * sizeof(PartialSums));
  if (kernel_ms) QPACK_VCHECK(cudaEventElapsedTime(kernel_ms, s->start, s->stop), tensor);
}

}  // namespace qpack::vcuda
