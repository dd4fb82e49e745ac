// The columns compare kernel (inner >= 256, inner % 4 == 0): a CTA per block
// of 256 units (columns) of one segment row, 4 adjacent columns per thread,
// so a row of a thread's source is one 8-byte (16-bit sources) or 16-byte
// (F32) load and a code plane one 4-byte load. The fast path and the exact
// rule it falls back on are described in compare_common.cuh.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "compare_args.hpp"
#include "compare_common.cuh"
#include "kernel_args.hpp"
#include "qpack/spec/error_sums.hpp"

namespace qpack::kernels {
namespace {

using spec::ChunkView;
using spec::CompareGeometry;
using spec::PartialSums;

constexpr int kColsPrefetch = 2;  // slices ahead fetched into L2

// Table of reconstructions (BITS <= 4 only): 2^BITS entries for each of a
// thread's 4 units, laid out as cols_table_addr says.
template <int BITS>
__host__ __device__ constexpr int cols_table_bytes() {
  return BITS <= 4 ? (kUnitsPerThread << BITS) * kCompareThreads * 8 : 0;
}

// A unit's parameters with spec::bound_terms as it is. The rows kernel's
// unit_params_ulp_bits (compare_rows.cu, same bits) measured 64 -> 58%
// (4-bit) and 62 -> 57% (3-bit) here, although the element loop only grew by
// 12 moves per slice; the cause was not found.
__device__ __forceinline__ UnitParams unit_params(float scale, float zero,
                                                  const CompareGeometry& g) {
  UnitParams p;
  p.scale = scale;
  p.zero = zero;
  p.base = spec::bound_terms(scale, zero, g.q, !g.symmetric, g.scale_dtype).base;
  // |q| <= 255: |q*S + M| < 2^127 when |S| <= 2^118 and |M| <= 2^126.
  p.ok = fabsf(scale) <= 0x1p118f && fabsf(zero) <= 0x1p126f;
  return p;
}

// Segment row sr's span with 32-bit divisions (the host checks that the
// geometry fits).
__device__ __forceinline__ spec::SegRowSpan seg_row_span32(const CompareGeometry& g, uint32_t sr) {
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

// Shared memory: the tables, then the block's records over them.
template <int BITS>
union ColsShared {
  double table[cols_table_bytes<BITS>() > 0 ? cols_table_bytes<BITS>() / 8 : 1];
  KeyedPartial recs[spec::kBlockUnits];
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
__device__ __forceinline__ void load_col_slice(ColSlice<kSrc, BITS>& sl, const uint8_t* src,
                                               const uint8_t* planes, int64_t rs, int64_t ps) {
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
  for (int j = 0; j < BITS; ++j)
    sl.c[j] = __ldg(reinterpret_cast<const uint32_t*>(planes + j * ps));
}

// The columns kernel's table: entry (unit v, code c) of thread tid at byte
// c * 2048 + v * 512 + tid * 8 (still conflict-free: the lanes differ in
// bits 3-7), addressed from tb = the table's shared-window address + tid * 8.
// An element's entry is then its shifted code word masked and ORed with tb
// (one LOP3) plus the immediate v * 512. With the rows kernel's layout
// (rows_table_offset in compare_rows.cu) the table base cost an add per
// element (32 a slice), because ptxas keeps it in a vector register in this
// kernel, not a uniform one. The OR is an add when bits 11-14 of every
// thread's tb are clear, which cols_table_fits checks once per CTA (true
// for the kernel's one static shared variable on sm_90; were it false, every
// unit would take the exact rule).
template <int BITS>
__device__ __forceinline__ uint32_t cols_table_addr(uint32_t w, int pos, uint32_t tb) {
  constexpr uint32_t mask = ((1u << BITS) - 1u) << 11;
  const uint32_t t = pos >= 11 ? (w >> (pos - 11)) : (w << (11 - pos));
  return (t & mask) | tb;
}
__device__ __forceinline__ bool cols_table_fits(uint32_t tab_sa) {
  return (tab_sa & 0x7fffu) + kCompareThreads * 8 <= 0x800u;
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
// Writes this thread's table entries for unit v.
template <int BITS>
__device__ __forceinline__ void build_cols_table(uint32_t tb, int v, const UnitParams& p,
                                                 float qoff) {
  if constexpr (BITS <= 4) {
#pragma unroll
    for (int c = 0; c < (1 << BITS); ++c)
      sts_f64(tb + uint32_t(c * 2048 + v * 512),
              double(decode_table_entry(c, qoff, p.scale, p.zero)));
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
__device__ __forceinline__ void process_col_slice(const ColSlice<kSrc, BITS>& sl,
                                                  UnitSums (&acc)[kUnitsPerThread],
                                                  const UnitParams (&par)[kUnitsPerThread], int k0,
                                                  uint32_t tb, float magic_off) {
  uint32_t st3[kUnitsPerThread] = {};  // 3 bits: column v's 24-bit stream
  if constexpr (BITS == 3) {
#pragma unroll
    for (int v = 0; v < kUnitsPerThread; ++v)
      st3[v] = __byte_perm(__byte_perm(sl.c[0], sl.c[1], uint32_t(v) | (uint32_t(v + 4) << 4)),
                           sl.c[2], 0x0010u | (uint32_t(v + 4) << 8));
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) {
#pragma unroll
    for (int v = 0; v < kUnitsPerThread; ++v) {
      const uint32_t w = kSrc == DType::F32 ? sl.x[k][v] : sl.x[k][v / 2];
      const double xd =
          (kSrc == DType::F32 || (v & 1)) ? col_src_f64<kSrc, 1>(w) : col_src_f64<kSrc, 0>(w);
      double hd;
      if constexpr (BITS == 4)
        hd = lds_f64(cols_table_addr<4>(sl.c[k >> 1], 8 * v + 4 * (k & 1), tb) + v * 512);
      else if constexpr (BITS == 2)
        hd = lds_f64(cols_table_addr<2>(sl.c[k >> 2], 8 * v + 2 * (k & 3), tb) + v * 512);
      else if constexpr (BITS == 3)
        hd = lds_f64(cols_table_addr<3>(st3[v], 3 * k, tb) + v * 512);
      else
        hd = decode8(sl.c[k], 8 * v, magic_off, par[v].scale, par[v].zero);
      accumulate_element_fast(acc[v], xd, hd, k0 + k);
    }
  }
}

template <DType kSrc, int BITS>
__global__ void __launch_bounds__(kCompareThreads, 6)
    compare_cols(CompareGeometry g, ChunkView v, int64_t block0, PartialSums* out) {
  __shared__ ColsShared<BITS> sh;
  pdl_prologue();
  const int j = int(threadIdx.x);
  const uint32_t tab_sa = uint32_t(__cvta_generic_to_shared(sh.table));
  const uint32_t tb = tab_sa + uint32_t(j) * 8u;
  const int64_t lb = int64_t(blockIdx.x);  // block within the launch
  const int64_t b = block0 + lb;
  const uint32_t sr = uint32_t(b / g.col_blocks);
  const int64_t col0 = (b % g.col_blocks) * spec::kBlockUnits;
  const int64_t col = col0 + 4 * j;
  const bool live = col < g.inner;
  const spec::SegRowSpan sp = seg_row_span32(g, sr);
  const int rows = int(sp.row_end - sp.row_begin);

  UnitSums acc[kUnitsPerThread];
#pragma unroll
  for (int u = 0; u < kUnitsPerThread; ++u) unit_sums_init(acc[u]);
  if (live && rows > 0) {
    bool susp[kUnitsPerThread];
    if (rows % 8 == 0 && cols_table_fits(tab_sa)) {
      const int64_t c = col - v.c0;
      const int64_t pidx = (sp.scale_row - v.srow0) * v.pitch + c;
      const float magic_off = decode8_offset(g.symmetric);
      const float qoff = decode_table_offset<BITS>(g.symmetric);
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
      uint32_t scale_u[kUnitsPerThread], zero_u[kUnitsPerThread];
#pragma unroll
      for (int u = 0; u < kUnitsPerThread; ++u) {
        scale_u[u] = spec::load_param_bits(v.scales, pidx + u, g.scale_dtype);
        zero_u[u] = g.symmetric ? 0u : spec::load_param_bits(v.zeros, pidx + u, g.scale_dtype);
      }
      UnitParams par[kUnitsPerThread];
#pragma unroll
      for (int u = 0; u < kUnitsPerThread; ++u) {
        par[u] = unit_params(spec::param_value(scale_u[u], g.scale_dtype),
                             g.symmetric ? 0.0f : spec::param_value(zero_u[u], g.scale_dtype), g);
        susp[u] = !par[u].ok;
        build_cols_table<BITS>(tb, u, par[u], qoff);
      }
      const int64_t step_s = 8 * rs, step_p = BITS * ps;
      // Further ahead, slice s + kColsPrefetch is fetched into L2 (no
      // registers held): one 128-byte line per lane, lanes 0 .. 8*esz-1 the
      // warp's 8 source rows (128 columns), the next BITS lanes its code
      // planes. Only warps whose 128 columns all exist, so that no address
      // leaves the buffers. H100: distance 2 measured 3-5% faster than none,
      // and than all of the block's slices at the start.
      const int lane = j & 31;
      const bool pf_on = col - 4 * lane + 128 <= g.inner && lane < 8 * esz + BITS;
      const uint8_t* pf_base = lane < 8 * esz
                                   ? src + (lane / esz) * rs + (lane % esz) * 128 - lane * 4 * esz
                                   : planes + (lane - 8 * esz) * ps - lane * 4;
      const int64_t pf_step = lane < 8 * esz ? step_s : step_p;
#pragma unroll 1
      for (int s = 0; s < nsl; ++s) {
        if (pf_on && s + kColsPrefetch < nsl)
          asm volatile(
              "prefetch.global.L2 [%0];" ::"l"(pf_base + int64_t(s + kColsPrefetch) * pf_step));
        const bool more = s + 1 < nsl;
        src += more ? step_s : 0;
        planes += more ? step_p : 0;
        load_col_slice<kSrc, BITS>(nxt, src, planes, rs, ps);
        process_col_slice<kSrc, BITS>(cur, acc, par, 8 * s, tb, magic_off);
        cur = nxt;
      }
#pragma unroll
      for (int u = 0; u < kUnitsPerThread; ++u)
        susp[u] = susp[u] || unit_suspect<kSrc>(acc[u], par[u].base);
    } else {
#pragma unroll
      for (int u = 0; u < kUnitsPerThread; ++u) susp[u] = true;
    }
#pragma unroll
    for (int u = 0; u < kUnitsPerThread; ++u)
      if (susp[u]) redo_unit<kSrc>(g, v, sr, col + u, acc[u]);
  }
  // Records by unit (4j + u), then each thread takes units j + 64u. The
  // records overlay the tables: wait until every thread is done with its own.
  __syncthreads();
  KeyedPartial* mine = sh.recs;
#pragma unroll
  for (int u = 0; u < kUnitsPerThread; ++u) {
    KeyedPartial r;
    if (live && rows > 0)
      r = keyed_partial(acc[u], rows, uint32_t(4 * j + u), spec::kBlockUnits);
    else
      keyed_empty(r);
    mine[4 * j + u] = r;
  }
  __syncthreads();
  KeyedPartial r[kUnitsPerThread];
#pragma unroll
  for (int u = 0; u < kUnitsPerThread; ++u) r[u] = mine[j + 64 * u];
  __syncthreads();  // recs is reused as the exchange area
  const KeyedPartial res = block_tree<false>(r, j, mine);
  if (j == 0) {
    const int64_t row_begin = sp.row_begin, inner = g.inner;
    write_partial(res, out + lb, [&](uint32_t key) {
      return (row_begin + int64_t(key / spec::kBlockUnits)) * inner + col0 +
             int64_t(key % spec::kBlockUnits);
    });
  }
}

struct ColsLauncher {
  const CompareArgs& a;
  const Launch& l;
  template <DType kSrc, int BITS>
  int run() const {
    return int(launch_kernel(compare_cols<kSrc, BITS>, l.blocks, kCompareThreads, l, a.geo, a.view,
                             a.block0, a.out));
  }
};

}  // namespace

int launch_compare_cols(const CompareArgs& a, const Launch& l) {
  return dispatch_source_and_bits(a.geo, ColsLauncher{a, l});
}

}  // namespace qpack::kernels
