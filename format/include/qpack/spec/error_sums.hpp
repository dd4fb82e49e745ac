// The per-unit and per-block arithmetic of the fused dequantize-and-compare
// pass, written once for the host (metrics_cpu.cpp) and the device
// (the compare kernels). Every double operation is a single IEEE operation
// rounded to nearest: host code builds with -ffp-contract=off, device code
// uses the explicit __d*_rn intrinsics, so both produce the same bits. See
// qpack/verify/metrics.hpp for the summation order.
#pragma once

#include <cstdint>
#include <cstring>

#include "qpack/spec/codes.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/error_bound.hpp"
#include "qpack/spec/group_params.hpp"
#include "qpack/spec/layout.hpp"

namespace qpack::spec {

constexpr int kSegment = 64;      // elements of a group one unit walks, in axis order
constexpr int kBlockUnits = 256;  // units per block (one fixed reduction tree)
constexpr int64_t kNoIndex = INT64_MAX;

// One unit's, block's or tensor's running sums. Plain data: the same layout
// on host and device.
struct PartialSums {
  double sq_err, abs_err, sq_ref, sq_hat, dot;
  double max_abs;           // -1 when no element yet
  int64_t max_index;        // kNoIndex when none
  int64_t first_violation;  // kNoIndex when none
  uint64_t count, nonfinite, violations;
};

QPACK_HD void partial_init(PartialSums& p) {
  p.sq_err = p.abs_err = p.sq_ref = p.sq_hat = p.dot = 0.0;
  p.max_abs = -1.0;
  p.max_index = kNoIndex;
  p.first_violation = kNoIndex;
  p.count = p.nonfinite = p.violations = 0;
}

// Merges b into a. Sums add; the max keeps the larger value and, on a tie,
// the smaller flat index, which makes it independent of the merge order.
QPACK_HD void partial_merge(PartialSums& a, const PartialSums& b) {
  a.sq_err = add_f64(a.sq_err, b.sq_err);
  a.abs_err = add_f64(a.abs_err, b.abs_err);
  a.sq_ref = add_f64(a.sq_ref, b.sq_ref);
  a.sq_hat = add_f64(a.sq_hat, b.sq_hat);
  a.dot = add_f64(a.dot, b.dot);
  if (b.max_abs > a.max_abs || (b.max_abs == a.max_abs && b.max_index < a.max_index)) {
    a.max_abs = b.max_abs;
    a.max_index = b.max_index;
  }
  if (b.first_violation < a.first_violation) a.first_violation = b.first_violation;
  a.count += b.count;
  a.nonfinite += b.nonfinite;
  a.violations += b.violations;
}

// Geometry of one tensor in units, segment rows and blocks. A segment row
// `sr` is segment s of group g of outer slice o, over all inner columns:
// sr = (o*P + g)*segs + s. Its units are (sr, i), i < inner.
struct CompareGeometry : GroupLayout {
  int64_t segs;            // segments per group: ceil(group_size / 64)
  int64_t seg_rows;        // outer * groups_per_axis * segs
  int64_t col_blocks;      // inner >= 256: blocks per segment row (ceil(inner/256)); else 1
  int64_t rows_per_block;  // inner < 256: whole segment rows per block (256/inner); else 1
  int64_t blocks;
  bool symmetric;
  bool integer_zero;  // asymmetric with integer zero-points (decode_int)
  bool clipped;       // a method other than RTN: the bound of §M4
  DType scale_dtype, source_dtype;
  double q;  // qmax of the scheme, for the bound
};

inline CompareGeometry make_geometry(const GroupLayout& L, const QuantScheme& s,
                                     DType source_dtype) {
  CompareGeometry g{};
  static_cast<GroupLayout&>(g) = L;
  g.segs = (L.group_size + kSegment - 1) / kSegment;
  g.symmetric = s.symmetric;
  g.integer_zero = has_integer_zero(s);
  g.clipped = has_clipped_range(s);
  g.scale_dtype = s.scale_dtype;
  g.source_dtype = source_dtype;
  g.q = qmax_of(s);
  const bool empty = L.num_elements() == 0;
  g.seg_rows = empty ? 0 : L.outer * L.groups_per_axis * g.segs;
  if (L.inner >= kBlockUnits) {
    g.col_blocks = (L.inner + kBlockUnits - 1) / kBlockUnits;
    g.rows_per_block = 1;
    g.blocks = g.seg_rows * g.col_blocks;
  } else {
    g.col_blocks = 1;
    g.rows_per_block = L.inner > 0 ? kBlockUnits / L.inner : 1;
    g.blocks = (g.seg_rows + g.rows_per_block - 1) / g.rows_per_block;
  }
  return g;
}

// Unit t of block b: its segment row and column; false for an idle slot.
QPACK_HD bool unit_of(const CompareGeometry& g, int64_t block, int t, int64_t* sr, int64_t* col) {
  if (g.inner >= kBlockUnits) {
    *sr = block / g.col_blocks;
    *col = (block % g.col_blocks) * kBlockUnits + t;
    return *col < g.inner;
  }
  const int64_t local = t / g.inner;
  if (local >= g.rows_per_block) return false;
  *sr = block * g.rows_per_block + local;
  *col = t % g.inner;
  return *sr < g.seg_rows;
}

// Where segment row sr lives: source rows (of `inner` elements, in the
// tensor's (outer*axis_len) row space), code byte planes (of `inner` bytes,
// in the [outer][P][B] plane space) and its scale row ([outer][P]).
struct SegRowSpan {
  int64_t row_begin, row_end;      // source rows [begin, end); may be empty
  int64_t plane_begin, plane_end;  // code planes [begin, end)
  int64_t scale_row;               // o*P + g
};
QPACK_HD SegRowSpan seg_row_span(const CompareGeometry& g, int64_t sr) {
  const int64_t s = sr % g.segs;
  const int64_t r = sr / g.segs;
  const int64_t gi = r % g.groups_per_axis;
  const int64_t o = r / g.groups_per_axis;
  const int64_t start = gi * g.group_size;
  const int64_t len = g.axis_len - start < g.group_size ? g.axis_len - start : g.group_size;
  int64_t k0 = s * kSegment, k1 = k0 + kSegment;
  if (k0 > len) k0 = len;
  if (k1 > len) k1 = len;
  const int64_t seg_bytes = int64_t(kSegment / 8) * g.bits;  // 64 codes fill whole bytes
  int64_t p0 = s * seg_bytes, p1 = p0 + seg_bytes;
  if (p0 > g.bytes_per_group) p0 = g.bytes_per_group;
  if (p1 > g.bytes_per_group) p1 = g.bytes_per_group;
  SegRowSpan sp;
  sp.row_begin = o * g.axis_len + start + k0;
  sp.row_end = o * g.axis_len + start + k1;
  sp.plane_begin = r * g.bytes_per_group + p0;
  sp.plane_end = r * g.bytes_per_group + p1;
  sp.scale_row = r;
  return sp;
}

// The buffers a unit reads: whole tensors (CPU: row0 = plane0 = srow0 = c0
// = 0, pitch = inner) or a staged rectangle of them (GPU chunks: rows
// [row0, ...), columns [c0, c0 + pitch)).
struct ChunkView {
  const uint8_t* src;
  const uint8_t* codes;
  const uint8_t* scales;
  const uint8_t* zeros;
  int64_t row0, plane0, srow0, c0, pitch;
};

template <DType kSrc>
QPACK_HD float load_source(const uint8_t* p, int64_t idx) {
#if defined(__CUDA_ARCH__)
  if constexpr (kSrc == DType::F32) {
    return reinterpret_cast<const float*>(p)[idx];
  } else {
    const uint16_t h = reinterpret_cast<const uint16_t*>(p)[idx];
    return kSrc == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
#else
  if constexpr (kSrc == DType::F32) {
    float f;
    std::memcpy(&f, p + 4 * idx, 4);
    return f;
  } else {
    uint16_t h;
    std::memcpy(&h, p + 2 * idx, 2);
    return kSrc == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
#endif
}

// Adds one element (source x, reconstruction xh, flat index) to a unit's
// sums. Elements must arrive in ascending flat order within a unit.
QPACK_HD void accumulate_element(PartialSums& acc, float x, float xh, int64_t flat,
                                 const BoundTerms& bt) {
  if (!is_finite_f32(x)) {
    ++acc.nonfinite;
    return;
  }
  const double xd = x, hd = xh;
  const double e = sub_f64(xd, hd);
  const double ae = abs_f64(e);
  acc.sq_err = add_f64(acc.sq_err, mul_f64(e, e));
  acc.abs_err = add_f64(acc.abs_err, ae);
  acc.sq_ref = add_exact_product_f64(acc.sq_ref, xd, xd);
  acc.sq_hat = add_exact_product_f64(acc.sq_hat, hd, hd);
  acc.dot = add_exact_product_f64(acc.dot, xd, hd);
  ++acc.count;
  // A NaN error (only from a non-finite stored scale) ranks as the largest.
  const double rank = ae == ae ? ae : f64_from_bits(0x7ff0000000000000ull);
  if (rank > acc.max_abs) {  // ascending flat order: strict > keeps the smallest index
    acc.max_abs = rank;
    acc.max_index = flat;
  }
  // The full bound is never below its base, so the element term is only
  // needed above it (rare); !(<=) also counts a NaN error.
  if (!(ae <= bt.base) && !(ae <= bound_for(bt, xd))) {
    ++acc.violations;
    if (flat < acc.first_violation) acc.first_violation = flat;
  }
}

// Accumulates unit (sr, col) into acc, element by element in axis order.
template <DType kSrc>
QPACK_HD void eval_unit(const CompareGeometry& g, const ChunkView& v, int64_t sr, int64_t col,
                        PartialSums& acc) {
  const SegRowSpan sp = seg_row_span(g, sr);
  const int64_t n = sp.row_end - sp.row_begin;
  if (n <= 0) return;
  const int64_t c = col - v.c0;
  const int64_t pidx = (sp.scale_row - v.srow0) * v.pitch + c;
  const float scale = load_param(v.scales, pidx, g.scale_dtype);
  const float zero = g.symmetric ? 0.0f : load_param(v.zeros, pidx, g.scale_dtype);
  const bool float_zero = !g.symmetric && !g.integer_zero;
  BoundTerms bt = bound_terms(scale, float_zero ? zero : 0.0f, g.q, float_zero, g.scale_dtype);
  if (g.clipped) add_clipped_range(bt, scale, zero, g.q, g.integer_zero);

  const uint8_t* cp = v.codes + (sp.plane_begin - v.plane0) * v.pitch + c;
  const int64_t src0 = (sp.row_begin - v.row0) * v.pitch + c;
  const uint32_t mask = (1u << g.bits) - 1u;
  uint32_t buf = 0;  // little-endian bit stream of the segment's codes
  int have = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (have < g.bits) {
      buf |= uint32_t(*cp) << have;
      have += 8;
      cp += v.pitch;
    }
    const uint32_t code = buf & mask;
    buf >>= g.bits;
    have -= g.bits;

    const float x = load_source<kSrc>(v.src, src0 + k * v.pitch);
    const float xh = decode_scheme(code, scale, zero, g.symmetric, g.integer_zero, g.bits);
    accumulate_element(acc, x, xh, (sp.row_begin + k) * g.inner + col, bt);
  }
}

// The fixed tree over a block's 256 slots; the result is in slots[0]. The
// device runs the same strides with a barrier after each step.
inline void block_tree_host(PartialSums* slots) {
  for (int stride = kBlockUnits / 2; stride > 0; stride >>= 1)
    for (int t = 0; t < stride; ++t) partial_merge(slots[t], slots[t + stride]);
}

}  // namespace qpack::spec
