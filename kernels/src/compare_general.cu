// The general compare kernel: one unit per thread, a CTA per block of 256
// units, for every geometry and alignment (the columns and rows kernels,
// compare_cols.cu and compare_rows.cu, take the common layouts). The same
// per-unit arithmetic as the CPU (spec::eval_unit) and the same fixed tree
// per block (spec::block_tree_host), so the block partials are bit-identical.
#include <cuda_runtime.h>

#include <cstdint>

#include "compare_args.hpp"
#include "dequant_device.cuh"
#include "kernel_args.hpp"
#include "qpack/spec/error_sums.hpp"

namespace qpack::kernels {
namespace {

using spec::ChunkView;
using spec::CompareGeometry;
using spec::PartialSums;

// The device form of spec::eval_unit: codes are fetched and decoded eight
// at a time with the kernels' slice helpers (BITS known at compile time),
// and the elements are accumulated in the same ascending order with the same
// spec::accumulate_element, so the unit's sums have the same bits.
template <DType kSrc, int BITS>
__device__ __forceinline__ void eval_unit_device(const CompareGeometry& g, const ChunkView& v,
                                                 int64_t sr, int64_t col, PartialSums& acc) {
  const spec::SegRowSpan sp = spec::seg_row_span(g, sr);
  const int64_t n = sp.row_end - sp.row_begin;
  if (n <= 0) return;
  const int64_t c = col - v.c0;
  const int64_t pidx = (sp.scale_row - v.srow0) * v.pitch + c;
  const float scale = spec::load_param(v.scales, pidx, g.scale_dtype);
  const float zero = g.symmetric ? 0.0f : spec::load_param(v.zeros, pidx, g.scale_dtype);
  // As spec::eval_unit: an integer zero-point takes no part in the bound.
  const bool float_zero = !g.symmetric && !g.integer_zero;
  spec::BoundTerms bt =
      spec::bound_terms(scale, float_zero ? zero : 0.0f, g.q, float_zero, g.scale_dtype);
  if (g.clipped) spec::add_clipped_range(bt, scale, zero, g.q, g.integer_zero);
  // The segment starts on a byte plane (64 codes fill 8*BITS bytes); planes
  // past its end (a partial group's padding) read as 0.
  const uint8_t* planes = v.codes + (sp.plane_begin - v.plane0) * v.pitch + c;
  const int64_t seg_planes = sp.plane_end - sp.plane_begin;
  const uint8_t* src =
      v.src + ((sp.row_begin - v.row0) * v.pitch + c) * (kSrc == DType::F32 ? 4 : 2);
  const int64_t flat0 = sp.row_begin * g.inner + col;
  for (int64_t s = 0; s * kSliceRows < n; ++s) {
    SliceStream<BITS> st[1];
    load_slice_planes<BITS, 1>(planes, v.pitch, s, seg_planes, st);
    float xh[kSliceRows];
    dequant_slice<BITS>(st[0], scale, zero, g.symmetric, g.integer_zero, xh);
    const int64_t k0 = s * kSliceRows;
    // All eight loads are issued before the dependent accumulation chain, so
    // that each thread keeps several memory requests in flight.
    float x[kSliceRows];
#pragma unroll
    for (int k = 0; k < kSliceRows; ++k)
      x[k] = k0 + k < n ? spec::load_source<kSrc>(src, (k0 + k) * v.pitch) : 0.0f;
#pragma unroll
    for (int k = 0; k < kSliceRows; ++k)
      if (k0 + k < n) spec::accumulate_element(acc, x[k], xh[k], flat0 + (k0 + k) * g.inner, bt);
  }
}

// At most 80 registers (3 blocks of 256 threads per SM on sm_90): without
// the cap some instantiations take 86-87 and drop to 2 blocks per SM.
template <DType kSrc, int BITS>
__global__ void __launch_bounds__(spec::kBlockUnits, 3)
    compare_general(CompareGeometry g, ChunkView v, int64_t block0, PartialSums* out) {
  __shared__ PartialSums slots[spec::kBlockUnits];
  pdl_prologue();
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

struct GeneralLauncher {
  const CompareArgs& a;
  const Launch& l;
  template <DType kSrc, int BITS>
  int run() const {
    return int(launch_kernel(compare_general<kSrc, BITS>, l.blocks, spec::kBlockUnits, l, a.geo,
                             a.view, a.block0, a.out));
  }
};

}  // namespace

int launch_compare_general(const CompareArgs& a, const Launch& l) {
  return dispatch_source_and_bits(a.geo, GeneralLauncher{a, l});
}

}  // namespace qpack::kernels
