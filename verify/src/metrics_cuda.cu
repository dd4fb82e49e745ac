// The CUDA path of the fused dequantize-and-compare pass: the same per-unit
// arithmetic as the CPU (metrics_core.hpp) and the same fixed tree per block
// of 256 units, so the per-block partials are bit-identical; the host adds
// them in block order. Two fast kernels (namespace fast: four units per
// thread, wide loads, exact conversions without F2F for 16-bit sources, rare
// events out of line) cover column groups (inner >= 256) and contiguous row
// groups (inner == 1); the general kernel (one unit per thread) the rest.
//
// Host tensors are staged in chunks of whole blocks through two sets of
// device buffers (two streams: the upload of one chunk overlaps the kernel
// of the previous one), so device memory stays bounded whatever the tensor
// size. No managed memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "metrics_cuda.hpp"
#include "qpack/dequant_device.cuh"
#include "qpack/error.hpp"

namespace qpack::vcuda {

namespace {

using vcore::ChunkView;
using vcore::Geometry;
using vcore::Partial;

void check(cudaError_t e, const char* what, const std::string& tensor) {
  if (e != cudaSuccess)
    throw Error(ErrorCode::Cuda, "", tensor, std::string(what) + ": " + cudaGetErrorString(e));
}
#define QPACK_VCHECK(call, tensor) check((call), #call, (tensor))

// The device form of vcore::eval_unit: codes are fetched and decoded eight
// at a time with the kernels' slice helpers (BITS known at compile time),
// and the elements are accumulated in the same ascending order with the same
// vcore::accumulate_element, so the unit's sums have the same bits.
template <DType kSrc, int BITS>
__device__ __forceinline__ void eval_unit_device(const Geometry& g, const ChunkView& v, int64_t sr,
                                                 int64_t col, Partial& acc) {
  const vcore::SegRowSpan sp = vcore::seg_row_span(g, sr);
  const int64_t n = sp.row_end - sp.row_begin;
  if (n <= 0) return;
  const int64_t c = col - v.c0;
  const int64_t pidx = (sp.scale_row - v.srow0) * v.pitch + c;
  const float scale = cudadev::load_param(v.scales, pidx, g.scale_dtype);
  const float zero = g.symmetric ? 0.0f : cudadev::load_param(v.zeros, pidx, g.scale_dtype);
  const vcore::BoundTerms bt = vcore::bound_terms(scale, zero, g.q, g.symmetric, g.scale_dtype);
  // The segment starts on a byte plane (64 codes fill 8*BITS bytes); planes
  // past its end (a partial group's padding) read as 0.
  const uint8_t* planes = v.codes + (sp.plane_begin - v.plane0) * v.pitch + c;
  const int64_t seg_planes = sp.plane_end - sp.plane_begin;
  const uint8_t* src = v.src + ((sp.row_begin - v.row0) * v.pitch + c) * (kSrc == DType::F32 ? 4 : 2);
  const int64_t flat0 = sp.row_begin * g.inner + col;
  for (int64_t s = 0; s * cudadev::kSlice < n; ++s) {
    cudadev::SliceStream<BITS> st[1];
    cudadev::load_slice_planes<BITS, 1>(planes, v.pitch, s, seg_planes, st);
    float xh[cudadev::kSlice];
    cudadev::dequant_slice<BITS>(st[0], scale, zero, g.symmetric, xh);
    const int64_t k0 = s * cudadev::kSlice;
    // All eight loads are issued before the dependent accumulation chain, so
    // that each thread keeps several memory requests in flight.
    float x[cudadev::kSlice];
#pragma unroll
    for (int k = 0; k < cudadev::kSlice; ++k)
      x[k] = k0 + k < n ? vcore::load_source<kSrc>(src, (k0 + k) * v.pitch) : 0.0f;
#pragma unroll
    for (int k = 0; k < cudadev::kSlice; ++k)
      if (k0 + k < n) vcore::accumulate_element(acc, x[k], xh[k], flat0 + (k0 + k) * g.inner, bt);
  }
}

// At most 80 registers (3 blocks of 256 threads per SM on sm_90): without
// the cap some instantiations take 86-87 and drop to 2 blocks per SM.
template <DType kSrc, int BITS>
__global__ void __launch_bounds__(vcore::kBlockUnits, 3)
    metrics_kernel(Geometry g, ChunkView v, int64_t block0, Partial* out) {
  __shared__ Partial slots[vcore::kBlockUnits];
  const int t = static_cast<int>(threadIdx.x);
  const int64_t b = block0 + static_cast<int64_t>(blockIdx.x);
  Partial acc;
  vcore::partial_init(acc);
  int64_t sr, col;
  if (vcore::unit_of(g, b, t, &sr, &col)) eval_unit_device<kSrc, BITS>(g, v, sr, col, acc);
  slots[t] = acc;
  __syncthreads();
  // The same strides as vcore::block_tree_host.
  for (int stride = vcore::kBlockUnits / 2; stride > 0; stride >>= 1) {
    if (t < stride) vcore::partial_merge(slots[t], slots[t + stride]);
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = slots[0];
}

// ------------------------------------------------------------ fast kernels
//
// Two layouts cover the common tensors; everything else takes the general
// kernel above. Both give the same bits as vcore::eval_unit: each unit's
// elements are accumulated in ascending order with the same IEEE operations,
// and the block's 256 unit partials go through the same fixed tree.
//
//  * columns (inner >= 256, inner % 4 == 0): a thread owns 4 adjacent units
//    (columns) of one segment row, so a row of its source is one 8-byte
//    (16-bit sources) or 16-byte (F32) load and a code plane one 4-byte load;
//  * rows (inner == 1, axis and group lengths multiples of 8): a thread owns
//    units j, j+64, j+128, j+192 of a block, each 64 contiguous elements read
//    16 bytes at a time.
//
// Per element the work is what the sums need and no more: the source and
// the reconstruction become doubles exactly (bit placement and one exact
// multiply, or the F2F conversion), the five sums, the running maximum and a
// predicate collecting "above the bound's base". Rare events leave the fast
// path per slice of 8 elements: a non-finite source value (the whole slice is
// redone with the exact element rule), and elements above the base (only the
// bound test is redone, with the element term). Units whose scale or
// zero-point is non-finite or huge always take the exact rule.
namespace fast {

constexpr int kV = 4;                                  // units per thread
constexpr int kThreadsPerBlock = vcore::kBlockUnits / kV;  // 64
constexpr int kBlocksPerCta = 2;
constexpr int kCtaThreads = kThreadsPerBlock * kBlocksPerCta;  // 128
constexpr uint32_t kNoKey = 0xffffffffu;

// One unit's running state. rare: non-finite count (bits 0-7), violations
// (8-15), element index of the first violation (16-23, 0xff: none).
struct Acc {
  double sq_err, abs_err, sq_ref, sq_hat, dot, max_abs;
  int max_k;
  uint32_t rare;
};
__device__ __forceinline__ void acc_init(Acc& a) {
  a.sq_err = a.abs_err = a.sq_ref = a.sq_hat = a.dot = 0.0;
  a.max_abs = -1.0;
  a.max_k = -1;
  a.rare = 0x00ff0000u;
}
__device__ __forceinline__ void add_violation(Acc& a, int k) {
  if ((a.rare & 0xff00u) == 0) a.rare = (a.rare & 0xff00ffffu) | (uint32_t(k) << 16);
  a.rare += 0x100u;
}

// A unit's parameters.
struct Par {
  float scale, zero;
  double base;
  bool ok;  // finite and small enough that every reconstruction is finite
};
__device__ __forceinline__ Par make_par(float scale, float zero, const Geometry& g) {
  Par p;
  p.scale = scale;
  p.zero = zero;
  p.base = vcore::bound_terms(scale, zero, g.q, g.symmetric, g.scale_dtype).base;
  // |q| <= 255: |q*S + M| < 2^127 when |S| <= 2^118 and |M| <= 2^126.
  p.ok = fabsf(scale) <= 0x1p118f && fabsf(zero) <= 0x1p126f;
  return p;
}

// Source element -> double, exactly. W is the 32-bit word holding it; for
// 16-bit sources H says which half (0: low). Finite values only. A 16-bit
// float's exponent and mantissa placed in a double's fields give x * 2^-896
// (BF16) or x * 2^-1008 (F16) for normal and subnormal x alike; the product by
// the power of two is exact. This keeps the conversion unit (F2F) for x_hat.
template <DType kSrc, int H>
__device__ __forceinline__ double src_to_f64(uint32_t w) {
  if constexpr (kSrc == DType::F32) {
    return double(__uint_as_float(w));
  } else if constexpr (kSrc == DType::BF16) {
    const uint32_t t = H ? w : (w << 16);
    return __dmul_rn(__hiloint2double(int((t & 0x80000000u) | ((t >> 3) & 0x0fffe000u)), 0), 0x1p896);
  } else {
    const uint32_t t = H ? w : (w << 16);
    return __dmul_rn(__hiloint2double(int((t & 0x80000000u) | ((t >> 6) & 0x01fffc00u)), 0), 0x1p1008);
  }
}
// The same element as binary32 (for the exact rule).
template <DType kSrc, int H>
__device__ __forceinline__ float src_to_f32(uint32_t w) {
  if constexpr (kSrc == DType::F32) return __uint_as_float(w);
  const uint16_t h = uint16_t(H ? (w >> 16) : (w & 0xffffu));
  return kSrc == DType::BF16 ? bf16_to_f32(h) : __half2float(__ushort_as_half(h));
}

// Code k (compile-time) of column/unit stream `st` as the float value of q:
// the magic 2^23 + code minus (2^23 + offset) is exact.
template <int BITS>
__device__ __forceinline__ float code_value(uint64_t st, int k, float magic_off) {
  const uint32_t c = uint32_t(st >> (k * BITS)) & ((1u << BITS) - 1u);
  return __fsub_rn(__uint_as_float(0x4b000000u | c), magic_off);
}

// The fast element rule: x finite, the unit's parameters ok (so e is never
// NaN). Same operations as vcore::accumulate_element; the bound test only
// records whether the element is above the base.
__device__ __forceinline__ void fast_element(Acc& a, double xd, double hd, int k, double base,
                                             bool& susp) {
  const double e = __dsub_rn(xd, hd);
  a.sq_err = __dadd_rn(a.sq_err, __dmul_rn(e, e));
  a.abs_err = __dadd_rn(a.abs_err, fabs(e));
  a.sq_ref = __fma_rn(xd, xd, a.sq_ref);
  a.sq_hat = __fma_rn(hd, hd, a.sq_hat);
  a.dot = __fma_rn(xd, hd, a.dot);
  if (fabs(e) > a.max_abs) {
    a.max_abs = __hiloint2double(__double2hiint(e) & 0x7fffffff, __double2loint(e));
    a.max_k = k;
  }
  susp |= !(fabs(e) <= base);
}

// The exact element rule (vcore::accumulate_element) on an Acc.
__device__ __forceinline__ void exact_element(Acc& a, float x, float xh, int k, const Par& p,
                                           const Geometry& g) {
  if (!qp_isfinite(x)) {
    a.rare += 1u;
    return;
  }
  const double xd = x, hd = xh;
  const double e = vcore::d_sub(xd, hd);
  const double ae = vcore::d_abs(e);
  a.sq_err = vcore::d_add(a.sq_err, vcore::d_mul(e, e));
  a.abs_err = vcore::d_add(a.abs_err, ae);
  a.sq_ref = vcore::d_add_exact_product(a.sq_ref, xd, xd);
  a.sq_hat = vcore::d_add_exact_product(a.sq_hat, hd, hd);
  a.dot = vcore::d_add_exact_product(a.dot, xd, hd);
  const double rank = ae == ae ? ae : vcore::d_from_bits(0x7ff0000000000000ull);
  if (rank > a.max_abs) {
    a.max_abs = rank;
    a.max_k = k;
  }
  if (!(ae <= p.base)) {
    const vcore::BoundTerms bt = vcore::bound_terms(p.scale, p.zero, g.q, g.symmetric, g.scale_dtype);
    if (!(ae <= vcore::bound_for(bt, xd))) add_violation(a, k);
  }
}
// The bound test alone, for an element the fast rule took.
__device__ __forceinline__ void recheck_element(Acc& a, float x, float xh, int k, const Par& p,
                                             const Geometry& g) {
  const double xd = x;
  const double ae = vcore::d_abs(vcore::d_sub(xd, double(xh)));
  if (ae <= p.base) return;
  const vcore::BoundTerms bt = vcore::bound_terms(p.scale, p.zero, g.q, g.symmetric, g.scale_dtype);
  if (!(ae <= vcore::bound_for(bt, xd))) add_violation(a, k);
}

// A unit's partial as the tree sees it. Keys order elements as their flat
// indices do within one block; counts of one block fit 32 bits.
struct Rec {
  double s[5];
  double max_abs;
  uint32_t max_key, fv_key, nonfinite, violations, count, pad_;
};

__device__ __forceinline__ void rec_merge(Rec& a, const Rec& b) {
#pragma unroll
  for (int i = 0; i < 5; ++i) a.s[i] = __dadd_rn(a.s[i], b.s[i]);
  if (b.max_abs > a.max_abs || (b.max_abs == a.max_abs && b.max_key < a.max_key)) {
    a.max_abs = b.max_abs;
    a.max_key = b.max_key;
  }
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
  r.max_abs = a.max_abs;
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
  r = rec_of(a, 0, 0, 0);
}

__device__ __forceinline__ Rec shfl_down_rec(const Rec& r, int d) {
  Rec o;
#pragma unroll
  for (int i = 0; i < 5; ++i) o.s[i] = __shfl_down_sync(0xffffffffu, r.s[i], d);
  o.max_abs = __shfl_down_sync(0xffffffffu, r.max_abs, d);
  o.max_key = __shfl_down_sync(0xffffffffu, r.max_key, d);
  o.fv_key = __shfl_down_sync(0xffffffffu, r.fv_key, d);
  o.nonfinite = __shfl_down_sync(0xffffffffu, r.nonfinite, d);
  o.violations = __shfl_down_sync(0xffffffffu, r.violations, d);
  o.count = __shfl_down_sync(0xffffffffu, r.count, d);
  o.pad_ = 0;
  return o;
}

// The fixed tree of vcore::block_tree_host over one block, when thread j
// (0..63) of the block holds the records of units j, j+64, j+128, j+192 in
// r[0..3]. xchg: 32 records of shared memory for the block. The result is
// in thread 0. Every thread of the CTA must call it (it has barriers).
__device__ __forceinline__ Rec block_tree(Rec (&r)[kV], int j, Rec* xchg) {
  rec_merge(r[0], r[2]);  // stride 128: unit j with j+128, j+64 with j+192
  rec_merge(r[1], r[3]);
  rec_merge(r[0], r[1]);  // stride 64
  if (j >= 32) xchg[j - 32] = r[0];
  __syncthreads();
  if (j < 32) {
    rec_merge(r[0], xchg[j]);  // stride 32
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) {  // strides 16 .. 1
      const Rec o = shfl_down_rec(r[0], d);
      if (j < d) rec_merge(r[0], o);
    }
  }
  return r[0];
}

// Writes the block's result; key -> flat index through `flat_of`.
template <class F>
__device__ __forceinline__ void write_partial(const Rec& r, Partial* out, F flat_of) {
  Partial p;
  p.sq_err = r.s[0];
  p.abs_err = r.s[1];
  p.sq_ref = r.s[2];
  p.sq_hat = r.s[3];
  p.dot = r.s[4];
  p.max_abs = r.max_abs;
  p.max_index = r.max_key == kNoKey ? vcore::kNoIndex : flat_of(r.max_key);
  p.first_violation = r.fv_key == kNoKey ? vcore::kNoIndex : flat_of(r.fv_key);
  p.count = r.count;
  p.nonfinite = r.nonfinite;
  p.violations = r.violations;
  *out = p;
}

// Segment row sr's span with 32-bit divisions (the host checks that the
// geometry fits).
__device__ __forceinline__ vcore::SegRowSpan span32(const Geometry& g, uint32_t sr) {
  const uint32_t segs = uint32_t(g.segs), P = uint32_t(g.groups_per_axis);
  const uint32_t s = segs == 1 ? 0u : sr % segs;
  const uint32_t r = segs == 1 ? sr : sr / segs;
  const uint32_t gi = r % P, o = r / P;
  const int64_t start = int64_t(gi) * g.group_size;
  const int64_t len = g.axis_len - start < g.group_size ? g.axis_len - start : g.group_size;
  int64_t k0 = int64_t(s) * vcore::kSegment, k1 = k0 + vcore::kSegment;
  if (k0 > len) k0 = len;
  if (k1 > len) k1 = len;
  const int64_t seg_bytes = int64_t(vcore::kSegment / 8) * g.bits;
  int64_t p0 = int64_t(s) * seg_bytes, p1 = p0 + seg_bytes;
  if (p0 > g.bytes_per_group) p0 = g.bytes_per_group;
  if (p1 > g.bytes_per_group) p1 = g.bytes_per_group;
  vcore::SegRowSpan sp;
  sp.row_begin = int64_t(o) * g.axis_len + start + k0;
  sp.row_end = int64_t(o) * g.axis_len + start + k1;
  sp.plane_begin = int64_t(r) * g.bytes_per_group + p0;
  sp.plane_end = int64_t(r) * g.bytes_per_group + p1;
  sp.scale_row = r;
  return sp;
}

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

template <DType kSrc, int BITS>
__device__ __forceinline__ void load_col_slice(ColSlice<kSrc, BITS>& sl, const uint8_t* src,
                                               const uint8_t* planes, int64_t pitch, int k0, int rows,
                                               int64_t nplanes, int slice) {
  constexpr int W = src_words_per_row<kSrc>();
  constexpr int esz = kSrc == DType::F32 ? 4 : 2;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    if (k0 + k < rows) {
      const uint8_t* p = src + (int64_t(k0 + k) * pitch) * esz;
      if constexpr (W == 4) {
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
    } else {
#pragma unroll
      for (int i = 0; i < W; ++i) sl.x[k][i] = 0;
    }
  }
#pragma unroll
  for (int j = 0; j < BITS; ++j) {
    const int64_t plane = int64_t(slice) * BITS + j;
    sl.c[j] = plane < nplanes ? __ldg(reinterpret_cast<const uint32_t*>(planes + plane * pitch)) : 0u;
  }
}

// Column v's code stream of the slice (8 codes, BITS bits each).
template <int BITS>
__device__ __forceinline__ uint64_t col_stream(const uint32_t (&c)[BITS], int v) {
  uint64_t st = 0;
#pragma unroll
  for (int j = 0; j < BITS; ++j) st |= uint64_t((c[j] >> (8 * v)) & 0xffu) << (8 * j);
  return st;
}

template <DType kSrc, int V>
__device__ __forceinline__ uint32_t col_word(const uint32_t* row) {
  return kSrc == DType::F32 ? row[V] : row[V / 2];
}

// The rare paths of a column slice, out of line on copies in local memory so
// that the hot path keeps its accumulators in registers: the exact rule for
// every element (recheck false) or the bound test alone (recheck true).
template <DType kSrc, int BITS>
__device__ __noinline__ void col_slice_rare_impl(const ColSlice<kSrc, BITS>* sl, Acc* acc, const Par* par,
                                                 int k0, int rows, float magic_off, const Geometry* g,
                                                 bool recheck) {
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    const uint64_t st = col_stream<BITS>(sl->c, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (k0 + k >= rows) break;
      const uint32_t w = kSrc == DType::F32 ? sl->x[k][v] : sl->x[k][v / 2];
      const float x = (kSrc == DType::F32 || (v & 1)) ? src_to_f32<kSrc, 1>(w) : src_to_f32<kSrc, 0>(w);
      const float xh = __fmaf_rn(code_value<BITS>(st, k, magic_off), par[v].scale, par[v].zero);
      if (recheck) recheck_element(acc[v], x, xh, k0 + k, par[v], *g);
      else exact_element(acc[v], x, xh, k0 + k, par[v], *g);
    }
  }
}
template <DType kSrc, int BITS>
__device__ __forceinline__ void col_slice_rare(const ColSlice<kSrc, BITS>& sl, Acc (&acc)[kV],
                                               const Par (&par)[kV], int k0, int rows, float magic_off,
                                               const Geometry& g, bool recheck) {
  ColSlice<kSrc, BITS> tsl = sl;
  Acc ta[kV];
  Par tp[kV];
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    ta[v] = acc[v];
    tp[v] = par[v];
  }
  Geometry tg = g;
  col_slice_rare_impl<kSrc, BITS>(&tsl, ta, tp, k0, rows, magic_off, &tg, recheck);
#pragma unroll
  for (int v = 0; v < kV; ++v) acc[v] = ta[v];
}

// One column slice for the thread's 4 units.
template <DType kSrc, int BITS>
__device__ __forceinline__ void process_col_slice(const ColSlice<kSrc, BITS>& sl, Acc (&acc)[kV],
                                                  const Par (&par)[kV], bool all_ok, int k0, int rows,
                                                  float magic_off, const Geometry& g) {
  bool fast = all_ok && k0 + 8 <= rows;
  if (fast) {  // no non-finite source value in the slice
    if constexpr (kSrc == DType::F32) {
      bool bad = false;
#pragma unroll
      for (int k = 0; k < 8; ++k)
#pragma unroll
        for (int v = 0; v < 4; ++v) bad |= !(fabsf(__uint_as_float(sl.x[k][v])) < INFINITY);
      fast = !bad;
    } else {
      uint32_t m = 0;
#pragma unroll
      for (int k = 0; k < 8; ++k)
#pragma unroll
        for (int i = 0; i < 2; ++i) m = __vmaxu2(m, sl.x[k][i] & 0x7fff7fffu);
      const uint32_t lim = kSrc == DType::BF16 ? 0x7f80u : 0x7c00u;
      fast = (m & 0xffffu) < lim && (m >> 16) < lim;
    }
  }
  if (fast) {
    bool susp = false;
#pragma unroll
    for (int v = 0; v < kV; ++v) {
      const uint64_t st = col_stream<BITS>(sl.c, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const uint32_t w = kSrc == DType::F32 ? sl.x[k][v] : sl.x[k][v / 2];
        const double xd = (kSrc == DType::F32 || (v & 1)) ? src_to_f64<kSrc, 1>(w) : src_to_f64<kSrc, 0>(w);
        const float xh = __fmaf_rn(code_value<BITS>(st, k, magic_off), par[v].scale, par[v].zero);
        fast_element(acc[v], xd, double(xh), k0 + k, par[v].base, susp);
      }
    }
    if (__builtin_expect(susp, 0)) col_slice_rare<kSrc, BITS>(sl, acc, par, k0, rows, magic_off, g, true);
  } else {
    col_slice_rare<kSrc, BITS>(sl, acc, par, k0, rows, magic_off, g, false);
  }
}

template <DType kSrc, int BITS>
__global__ void __launch_bounds__(kCtaThreads, 3)
    cols_kernel(Geometry g, ChunkView v, int64_t block0, int64_t nblocks, Partial* out) {
  __shared__ Rec recs[kBlocksPerCta][vcore::kBlockUnits];
  const int half = int(threadIdx.x) / kThreadsPerBlock;
  const int j = int(threadIdx.x) % kThreadsPerBlock;
  const int64_t lb = 2 * int64_t(blockIdx.x) + half;  // block within the launch
  const bool live_block = lb < nblocks;
  const int64_t b = block0 + lb;
  const uint32_t sr = live_block ? uint32_t(b / g.col_blocks) : 0u;
  const int64_t col0 = live_block ? (b % g.col_blocks) * vcore::kBlockUnits : 0;
  const int64_t col = col0 + 4 * j;
  const bool live = live_block && col < g.inner;
  const vcore::SegRowSpan sp = span32(g, sr);
  const int rows = int(sp.row_end - sp.row_begin);

  Acc acc[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) acc_init(acc[u]);
  if (live && rows > 0) {
    const int64_t c = col - v.c0;
    const int64_t pidx = (sp.scale_row - v.srow0) * v.pitch + c;
    Par par[kV];
    bool all_ok = true;
#pragma unroll
    for (int u = 0; u < kV; ++u) {
      const float s = cudadev::load_param(v.scales, pidx + u, g.scale_dtype);
      const float z = g.symmetric ? 0.0f : cudadev::load_param(v.zeros, pidx + u, g.scale_dtype);
      par[u] = make_par(s, z, g);
      all_ok = all_ok && par[u].ok;
    }
    const float magic_off = 8388608.0f + (g.symmetric ? float(1 << (BITS - 1)) : 0.0f);
    const uint8_t* planes = v.codes + (sp.plane_begin - v.plane0) * v.pitch + c;
    const int64_t nplanes = sp.plane_end - sp.plane_begin;
    const uint8_t* src = v.src + ((sp.row_begin - v.row0) * v.pitch + c) * (kSrc == DType::F32 ? 4 : 2);
    const int nslices = (rows + 7) / 8;
    ColSlice<kSrc, BITS> cur, nxt;
    load_col_slice<kSrc, BITS>(cur, src, planes, v.pitch, 0, rows, nplanes, 0);
#pragma unroll 1
    for (int s = 0; s < nslices; ++s) {
      if (s + 1 < nslices) load_col_slice<kSrc, BITS>(nxt, src, planes, v.pitch, 8 * (s + 1), rows, nplanes, s + 1);
      process_col_slice<kSrc, BITS>(cur, acc, par, all_ok, 8 * s, rows, magic_off, g);
      cur = nxt;
    }
  }
  // Records by unit (4j + u), then each thread takes units j + 64u.
  Rec* mine = recs[half];
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    Rec r;
    if (live) r = rec_of(acc[u], rows, uint32_t(4 * j + u), vcore::kBlockUnits);
    else rec_empty(r);
    mine[4 * j + u] = r;
  }
  __syncthreads();
  Rec r[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) r[u] = mine[j + 64 * u];
  __syncthreads();  // recs is reused as the exchange area
  const Rec res = block_tree(r, j, mine);
  if (j == 0 && live_block) {
    const int64_t row_begin = sp.row_begin, inner = g.inner;
    write_partial(res, out + lb, [&](uint32_t key) {
      return (row_begin + int64_t(key / vcore::kBlockUnits)) * inner + col0 + int64_t(key % vcore::kBlockUnits);
    });
  }
}

// A slice (8 elements) of each of a thread's 4 row units.
template <DType kSrc, int BITS>
struct RowSlice {
  uint32_t x[kV][kSrc == DType::F32 ? 8 : 4];
  cudadev::SliceStream<BITS> c[kV];
};

template <DType kSrc, int BITS>
__device__ __noinline__ void row_slice_rare_impl(const RowSlice<kSrc, BITS>* sl, Acc* acc, const Par* par,
                                                 const int* n, int k0, float magic_off, const Geometry* g,
                                                 bool recheck) {
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    if (k0 >= n[u]) continue;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t w = kSrc == DType::F32 ? sl->x[u][k] : sl->x[u][k / 2];
      const float x = (kSrc == DType::F32 || (k & 1)) ? src_to_f32<kSrc, 1>(w) : src_to_f32<kSrc, 0>(w);
      const float xh = __fmaf_rn(code_value<BITS>(uint64_t(sl->c[u]), k, magic_off), par[u].scale, par[u].zero);
      if (recheck) recheck_element(acc[u], x, xh, k0 + k, par[u], *g);
      else exact_element(acc[u], x, xh, k0 + k, par[u], *g);
    }
  }
}
template <DType kSrc, int BITS>
__device__ __forceinline__ void row_slice_rare(const RowSlice<kSrc, BITS>& sl, Acc (&acc)[kV],
                                               const Par (&par)[kV], const int (&n)[kV], int k0,
                                               float magic_off, const Geometry& g, bool recheck) {
  RowSlice<kSrc, BITS> tsl = sl;
  Acc ta[kV];
  Par tp[kV];
  int tn[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    ta[u] = acc[u];
    tp[u] = par[u];
    tn[u] = n[u];
  }
  Geometry tg = g;
  row_slice_rare_impl<kSrc, BITS>(&tsl, ta, tp, tn, k0, magic_off, &tg, recheck);
#pragma unroll
  for (int u = 0; u < kV; ++u) acc[u] = ta[u];
}

// Rows (inner == 1): unit u of thread j is segment row b*256 + j + 64u.
template <DType kSrc, int BITS>
__global__ void __launch_bounds__(kCtaThreads, 3)
    rows_kernel(Geometry g, ChunkView v, int64_t block0, int64_t nblocks, Partial* out) {
  __shared__ Rec xchg[kBlocksPerCta][32];
  constexpr int kWords = kSrc == DType::F32 ? 8 : 4;  // 32-bit words of 8 elements
  constexpr int esz = kSrc == DType::F32 ? 4 : 2;
  const int half = int(threadIdx.x) / kThreadsPerBlock;
  const int j = int(threadIdx.x) % kThreadsPerBlock;
  const int64_t lb = 2 * int64_t(blockIdx.x) + half;
  const bool live_block = lb < nblocks;
  const int64_t b = block0 + lb;
  const float magic_off = 8388608.0f + (g.symmetric ? float(1 << (BITS - 1)) : 0.0f);

  Acc acc[kV];
  Par par[kV];
  int n[kV];
  const uint8_t* srcp[kV];
  const uint8_t* codep[kV];
  bool all_ok = true;
  int nmax = 0;
#pragma unroll
  for (int u = 0; u < kV; ++u) {
    acc_init(acc[u]);
    const int64_t sr = b * vcore::kBlockUnits + j + 64 * u;
    n[u] = 0;
    srcp[u] = v.src;
    codep[u] = v.codes;
    par[u].scale = par[u].zero = 0.0f;
    par[u].base = 0.0;
    par[u].ok = true;
    if (live_block && sr < g.seg_rows) {
      const vcore::SegRowSpan sp = span32(g, uint32_t(sr));
      n[u] = int(sp.row_end - sp.row_begin);
      srcp[u] = v.src + (sp.row_begin - v.row0) * esz;
      codep[u] = v.codes + (sp.plane_begin - v.plane0);
      const int64_t pidx = sp.scale_row - v.srow0;
      const float s = cudadev::load_param(v.scales, pidx, g.scale_dtype);
      const float z = g.symmetric ? 0.0f : cudadev::load_param(v.zeros, pidx, g.scale_dtype);
      par[u] = make_par(s, z, g);
      if (n[u] > 0) all_ok = all_ok && par[u].ok;
    }
    nmax = max(nmax, n[u]);
  }
  const int nslices = nmax / 8;  // every n is a multiple of 8 here
  RowSlice<kSrc, BITS> cur, nxt;
  auto load = [&](int s, RowSlice<kSrc, BITS>& sl) {
#pragma unroll
    for (int u = 0; u < kV; ++u) {
      if (8 * s < n[u]) {
        const uint4* p = reinterpret_cast<const uint4*>(srcp[u] + int64_t(8 * s) * esz);
#pragma unroll
        for (int q = 0; q < kWords / 4; ++q) {
          const uint4 w = __ldg(p + q);
          sl.x[u][4 * q] = w.x;
          sl.x[u][4 * q + 1] = w.y;
          sl.x[u][4 * q + 2] = w.z;
          sl.x[u][4 * q + 3] = w.w;
        }
        sl.c[u] = cudadev::load_slice_contiguous_aligned<BITS>(codep[u], s);
      } else {
#pragma unroll
        for (int q = 0; q < kWords; ++q) sl.x[u][q] = 0;
        sl.c[u] = 0;
      }
    }
  };
  if (nslices > 0) load(0, cur);
#pragma unroll 1
  for (int s = 0; s < nslices; ++s) {
    if (s + 1 < nslices) load(s + 1, nxt);
    const int k0 = 8 * s;
    bool fast = all_ok;
#pragma unroll
    for (int u = 0; u < kV; ++u) fast = fast && k0 < n[u];
    if (fast) {
      if constexpr (kSrc == DType::F32) {
        bool bad = false;
#pragma unroll
        for (int u = 0; u < kV; ++u)
#pragma unroll
          for (int q = 0; q < kWords; ++q) bad |= !(fabsf(__uint_as_float(cur.x[u][q])) < INFINITY);
        fast = !bad;
      } else {
        uint32_t m = 0;
#pragma unroll
        for (int u = 0; u < kV; ++u)
#pragma unroll
          for (int q = 0; q < kWords; ++q) m = __vmaxu2(m, cur.x[u][q] & 0x7fff7fffu);
        const uint32_t lim = kSrc == DType::BF16 ? 0x7f80u : 0x7c00u;
        fast = (m & 0xffffu) < lim && (m >> 16) < lim;
      }
    }
    if (fast) {
      bool susp = false;
#pragma unroll
      for (int u = 0; u < kV; ++u)
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const uint32_t w = kSrc == DType::F32 ? cur.x[u][k] : cur.x[u][k / 2];
          const double xd = (kSrc == DType::F32 || (k & 1)) ? src_to_f64<kSrc, 1>(w) : src_to_f64<kSrc, 0>(w);
          const float xh = __fmaf_rn(code_value<BITS>(uint64_t(cur.c[u]), k, magic_off), par[u].scale, par[u].zero);
          fast_element(acc[u], xd, double(xh), k0 + k, par[u].base, susp);
        }
      if (__builtin_expect(susp, 0)) row_slice_rare<kSrc, BITS>(cur, acc, par, n, k0, magic_off, g, true);
    } else {
      row_slice_rare<kSrc, BITS>(cur, acc, par, n, k0, magic_off, g, false);
    }
    cur = nxt;
  }
  Rec r[kV];
#pragma unroll
  for (int u = 0; u < kV; ++u) r[u] = rec_of(acc[u], n[u], uint32_t((j + 64 * u) * vcore::kSegment), 1u);
  const Rec res = block_tree(r, j, xchg[half]);
  if (j == 0 && live_block) {
    write_partial(res, out + lb, [&](uint32_t key) {
      const vcore::SegRowSpan sp = span32(g, uint32_t(b * vcore::kBlockUnits + key / vcore::kSegment));
      return sp.row_begin + int64_t(key % vcore::kSegment);
    });
  }
}

}  // namespace fast

template <DType kSrc>
void launch_bits(const Geometry& g, const ChunkView& v, int64_t block0, dim3 grid, Partial* out,
                 cudaStream_t stream) {
  const dim3 block(vcore::kBlockUnits);
  switch (g.bits) {
    case 2: metrics_kernel<kSrc, 2><<<grid, block, 0, stream>>>(g, v, block0, out); break;
    case 3: metrics_kernel<kSrc, 3><<<grid, block, 0, stream>>>(g, v, block0, out); break;
    case 4: metrics_kernel<kSrc, 4><<<grid, block, 0, stream>>>(g, v, block0, out); break;
    default: metrics_kernel<kSrc, 8><<<grid, block, 0, stream>>>(g, v, block0, out); break;
  }
}

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// Which fast kernel fits the tensor and its buffers: 0 none, 1 columns, 2 rows.
int fast_layout(const Geometry& g, const ChunkView& v) {
  const int esz = g.source_dtype == DType::F32 ? 4 : 2;
  const int sb = g.scale_dtype == DType::F32 ? 4 : 2;
  if (g.seg_rows >= (int64_t(1) << 31)) return 0;
  if (!aligned(v.scales, sb) || (!g.symmetric && !aligned(v.zeros, sb))) return 0;
  if (g.inner >= vcore::kBlockUnits && g.inner % 4 == 0 && v.pitch % 4 == 0 && v.c0 % 4 == 0 &&
      aligned(v.src, 4 * esz) && aligned(v.codes, 4))
    return 1;
  if (g.inner == 1 && g.axis_len % 8 == 0 && g.group_size % 8 == 0 && v.row0 % 8 == 0 &&
      aligned(v.src, 16) && aligned(v.codes, 8))
    return 2;
  return 0;
}

template <DType kSrc, int BITS>
void launch_fast(int layout, const Geometry& g, const ChunkView& v, int64_t block0, int64_t nblocks,
                 Partial* out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((nblocks + fast::kBlocksPerCta - 1) / fast::kBlocksPerCta));
  if (layout == 1)
    fast::cols_kernel<kSrc, BITS><<<grid, fast::kCtaThreads, 0, stream>>>(g, v, block0, nblocks, out);
  else
    fast::rows_kernel<kSrc, BITS><<<grid, fast::kCtaThreads, 0, stream>>>(g, v, block0, nblocks, out);
}

template <DType kSrc>
void launch_fast_bits(int layout, const Geometry& g, const ChunkView& v, int64_t block0, int64_t nblocks,
                      Partial* out, cudaStream_t stream) {
  switch (g.bits) {
    case 2: launch_fast<kSrc, 2>(layout, g, v, block0, nblocks, out, stream); break;
    case 3: launch_fast<kSrc, 3>(layout, g, v, block0, nblocks, out, stream); break;
    case 4: launch_fast<kSrc, 4>(layout, g, v, block0, nblocks, out, stream); break;
    default: launch_fast<kSrc, 8>(layout, g, v, block0, nblocks, out, stream); break;
  }
}

void launch(const Geometry& g, const ChunkView& v, int64_t block0, int64_t nblocks, Partial* out,
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
uint64_t seg_row_bytes_per_column(const Geometry& g) {
  const uint64_t params = uint64_t(scale_bytes_of(g.scale_dtype)) * (g.symmetric ? 1 : 2);
  return uint64_t(vcore::kSegment) * source_bytes_per_element(g.source_dtype) +
         uint64_t(vcore::kSegment / 8) * g.bits + params;
}

std::vector<Chunk> plan_chunks(const Geometry& g, uint64_t budget) {
  std::vector<Chunk> chunks;
  if (g.blocks == 0) return chunks;
  constexpr int64_t kMaxBlocksPerLaunch = int64_t(1) << 20;
  const uint64_t per_col = seg_row_bytes_per_column(g);
  const uint64_t per_row = per_col * uint64_t(g.inner);
  if (g.inner < vcore::kBlockUnits) {
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
    const uint64_t per_block = per_col * vcore::kBlockUnits;
    const int64_t step = std::clamp<int64_t>(int64_t(budget / per_block), 1, kMaxBlocksPerLaunch);
    for (int64_t r = 0; r < g.seg_rows; ++r)
      for (int64_t cb0 = 0; cb0 < g.col_blocks; cb0 += step) {
        const int64_t cb1 = std::min(cb0 + step, g.col_blocks);
        chunks.push_back({r * g.col_blocks + cb0, r * g.col_blocks + cb1, r, r + 1,
                          cb0 * vcore::kBlockUnits,
                          std::min(cb1 * vcore::kBlockUnits, g.inner)});
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
  Partial* d_part = nullptr;
  Partial* h_part = nullptr;  // pinned
  size_t part_cap = 0;
  // Results in flight on this set's stream.
  Partial* pending_out = nullptr;
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
  QPACK_VCHECK(cudaMalloc(reinterpret_cast<void**>(&s.d_part), n * sizeof(Partial)), tensor);
  QPACK_VCHECK(cudaMallocHost(reinterpret_cast<void**>(&s.h_part), n * sizeof(Partial)), tensor);
  s.part_cap = n;
}

// Waits for the set's work and moves its partials to their place.
void drain(StagingSet& s, const std::string& tensor) {
  QPACK_VCHECK(cudaStreamSynchronize(s.stream), tensor);
  if (s.pending_n > 0)
    std::memcpy(s.pending_out, s.h_part, size_t(s.pending_n) * sizeof(Partial));
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

bool available(std::string* description) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
    cudaGetLastError();  // clear, so that a later call does not see it
    return false;
  }
  if (description) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
    *description = std::string("cuda:0 (") + prop.name + ")";
  }
  return true;
}

DeviceState* create(uint64_t chunk_bytes) {
  std::string desc;
  if (!available(&desc))
    throw Error(ErrorCode::NoDevice, "", "", "no usable CUDA device (use --device cpu)");
  auto* s = new DeviceState;
  s->desc = desc;
  s->chunk_bytes = chunk_bytes > 0 ? chunk_bytes : (256ull << 20);
  try {
    QPACK_VCHECK(cudaSetDevice(0), "");
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

void compute_host(DeviceState* s, const Geometry& g, const ChunkView& host, Partial* out_blocks,
                  const std::string& tensor) {
  const std::vector<Chunk> chunks = plan_chunks(g, s->chunk_bytes);
  const int esize = source_bytes_per_element(g.source_dtype);
  const int sb = scale_bytes_of(g.scale_dtype);
  try {
    for (size_t ci = 0; ci < chunks.size(); ++ci) {
      const Chunk& c = chunks[ci];
      StagingSet& set = s->sets[ci % 2];
      drain(set, tensor);  // its buffers are free again

      const vcore::SegRowSpan first = vcore::seg_row_span(g, c.sr0);
      const vcore::SegRowSpan last = vcore::seg_row_span(g, c.sr1 - 1);
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
      QPACK_VCHECK(cudaMemcpyAsync(set.h_part, set.d_part, size_t(nb) * sizeof(Partial),
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

void compute_device(DeviceState* s, const Geometry& g, const ChunkView& dev, Partial* out_blocks,
                    float* kernel_ms, const std::string& tensor) {
  StagingSet& set = s->sets[0];
  drain(set, tensor);
  ensure_partials(set, size_t(g.blocks), tensor);
  QPACK_VCHECK(cudaEventRecord(s->start, set.stream), tensor);
  launch(g, dev, 0, g.blocks, set.d_part, set.stream, tensor);
  QPACK_VCHECK(cudaEventRecord(s->stop, set.stream), tensor);
  QPACK_VCHECK(cudaMemcpyAsync(set.h_part, set.d_part, size_t(g.blocks) * sizeof(Partial),
                               cudaMemcpyDeviceToHost, set.stream),
               tensor);
  QPACK_VCHECK(cudaStreamSynchronize(set.stream), tensor);
  std::memcpy(out_blocks, set.h_part, size_t(g.blocks) * sizeof(Partial));
  if (kernel_ms) QPACK_VCHECK(cudaEventElapsedTime(kernel_ms, s->start, s->stop), tensor);
}

}  // namespace qpack::vcuda
