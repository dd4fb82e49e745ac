// The CUDA path of the fused dequantize-and-compare pass: one CUDA block per
// block of the fixed order (256 units, one thread each), the same per-unit
// arithmetic as the CPU (metrics_core.hpp) and the same fixed tree, so the
// per-block partials are bit-identical; the host adds them in block order.
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

void launch(const Geometry& g, const ChunkView& v, int64_t block0, int64_t nblocks, Partial* out,
            cudaStream_t stream, const std::string& tensor) {
  if (nblocks > INT_MAX) throw Error(ErrorCode::Internal, "", tensor, "too many blocks in one launch");
  if (g.bits != 2 && g.bits != 3 && g.bits != 4 && g.bits != 8)
    throw Error(ErrorCode::UnsupportedScheme, "", tensor, "bits must be 2, 3, 4 or 8");
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
