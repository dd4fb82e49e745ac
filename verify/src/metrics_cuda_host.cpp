// The CUDA path of the fused dequantize-and-compare pass, host side: the
// kernels (qpack/kernels/compare.hpp) compute the per-block partials with
// the CPU's per-unit arithmetic and the same fixed tree per block of 256
// units, so they are bit-identical to the CPU's; the host adds them in block
// order. Plain C++: only qpack::kernels' public API touches the device.
//
// Host tensors are staged in chunks of whole blocks through two sets of
// device buffers (two streams: the upload of one chunk overlaps the kernel
// of the previous one), so device memory stays bounded whatever the tensor
// size. No managed memory.
#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "metrics_cuda.hpp"
#include "qpack/format/error.hpp"
#include "qpack/kernels/compare.hpp"
#include "qpack/kernels/cuda_quant.hpp"

namespace qpack::vcuda {

namespace {

using spec::ChunkView;
using spec::CompareGeometry;
using spec::PartialSums;

// Enqueues the partials of blocks [block0, block0 + nblocks) on `stream`.
void enqueue_blocks(const CompareGeometry& g, const ChunkView& v, int64_t block0, int64_t nblocks,
                    PartialSums* out, cudaStream_t stream, const std::string& tensor) {
  if (nblocks > INT_MAX)
    throw Error(ErrorCode::Internal, "", tensor, "too many blocks in one launch");
  if (g.bits != 2 && g.bits != 3 && g.bits != 4 && g.bits != 8)
    throw Error(ErrorCode::UnsupportedScheme, "", tensor, "bits must be 2, 3, 4 or 8");
  cuda::throw_if_failed(cuda::compare_blocks(g, v, block0, nblocks, out, stream), tensor);
}

// A rectangle of whole blocks: segment rows [sr0, sr1), columns [c0, c1).
struct Chunk {
  int64_t block0, block1;
  int64_t sr0, sr1;
  int64_t c0, c1;
};

// Bytes of one source element (F16, BF16 or F32: verify checked the dtype).
int source_bytes_per_element(DType d) { return dtype_bits(d) / 8; }

// Upper bound of the staged bytes of one segment row, per column.
uint64_t seg_row_bytes_per_column(const CompareGeometry& g) {
  const uint64_t params = uint64_t(scale_bytes(g.scale_dtype)) * (g.symmetric ? 1 : 2);
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
      chunks.push_back(
          {b0, b1, b0 * g.rows_per_block, std::min(b1 * g.rows_per_block, g.seg_rows), 0, g.inner});
    }
  } else if (per_row <= budget) {
    const int64_t step = std::clamp<int64_t>(
        int64_t(budget / per_row), 1, std::max<int64_t>(kMaxBlocksPerLaunch / g.col_blocks, 1));
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
                          cb0 * spec::kBlockUnits, std::min(cb1 * spec::kBlockUnits, g.inner)});
      }
  }
  return chunks;
}

struct StagingSet {
  cuda::Stream stream;
  cuda::DeviceBuffer src, codes, scales, zeros;  // capacity: size()
  cuda::DeviceBuffer d_part;
  cuda::PinnedBuffer h_part;
  size_t part_cap = 0;  // partials d_part and h_part hold
  // Results in flight on this set's stream.
  PartialSums* pending_out = nullptr;
  int64_t pending_n = 0;
};

void ensure_device(cuda::DeviceBuffer& b, size_t need, const std::string& tensor) {
  if (need <= b.size()) return;
  cuda::throw_if_failed(b.allocate(need), tensor);  // frees the old buffer first
}

void ensure_partials(StagingSet& s, size_t n, const std::string& tensor) {
  if (n <= s.part_cap) return;
  s.d_part.reset();
  s.h_part.reset();
  s.part_cap = 0;
  cuda::throw_if_failed(s.d_part.allocate(n * sizeof(PartialSums)), tensor);
  cuda::throw_if_failed(s.h_part.allocate(n * sizeof(PartialSums)), tensor);
  s.part_cap = n;
}

// Waits for the set's work and moves its partials to their place.
void drain(StagingSet& s, const std::string& tensor) {
  cuda::throw_if_failed(cuda::synchronize(s.stream.get()), tensor);
  if (s.pending_n > 0)
    std::memcpy(s.pending_out, s.h_part.data(), size_t(s.pending_n) * sizeof(PartialSums));
  s.pending_n = 0;
  s.pending_out = nullptr;
}

// Copies a rectangle of `height` rows of `width` elements (of `esize`
// bytes) starting at row `row0`, column `c0` of a host array with `inner`
// columns into a dense device buffer.
void upload_rect(void* dst, const uint8_t* host, int64_t row0, int64_t height, int64_t c0,
                 int64_t width, int64_t inner, int esize, cudaStream_t stream,
                 const std::string& tensor) {
  if (height <= 0 || width <= 0) return;
  const size_t w = size_t(width) * esize, pitch = size_t(inner) * esize;
  const uint8_t* from = host + (size_t(row0) * size_t(inner) + size_t(c0)) * esize;
  if (w == pitch)
    cuda::throw_if_failed(cuda::copy_to_device(dst, from, w * size_t(height), stream), tensor);
  else
    cuda::throw_if_failed(cuda::copy_2d_to_device(dst, w, from, pitch, w, size_t(height), stream),
                          tensor);
}

}  // namespace

struct DeviceState {
  int device = 0;
  std::string desc;
  uint64_t chunk_bytes = 0;
  StagingSet sets[2];
  cuda::Event start, stop;
};

bool available(int device, std::string* description) {
  if (device < 0 || device >= cuda::device_count()) return false;
  if (description) {
    cuda::DeviceInfo info;
    if (!cuda::query_device(device, &info).ok()) return false;
    *description = "cuda:" + std::to_string(device) + " (" + info.name + ")";
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
    cuda::throw_if_failed(cuda::set_device(device));
    for (auto& set : s->sets) cuda::throw_if_failed(set.stream.create());
    cuda::throw_if_failed(s->start.create());
    cuda::throw_if_failed(s->stop.create());
  } catch (...) {
    destroy(s);
    throw;
  }
  return s;
}

void destroy(DeviceState* s) noexcept {
  if (!s) return;
  (void)cuda::set_device(s->device);
  // No work may be in flight when the buffers go (delete frees every buffer,
  // stream and event; failures have nowhere to go).
  for (auto& set : s->sets)
    if (set.stream.get()) (void)cuda::synchronize(set.stream.get());
  delete s;
}

std::string description(const DeviceState* s) { return s->desc; }

void compute_host(DeviceState* s, const CompareGeometry& g, const ChunkView& host,
                  PartialSums* out_blocks, const std::string& tensor) {
  cuda::throw_if_failed(cuda::set_device(s->device), tensor);
  const std::vector<Chunk> chunks = plan_chunks(g, s->chunk_bytes);
  const int esize = source_bytes_per_element(g.source_dtype);
  const int sb = scale_bytes(g.scale_dtype);
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
      ensure_device(set.src, std::max<size_t>(size_t(rows * width) * esize, 1), tensor);
      ensure_device(set.codes, std::max<size_t>(size_t(planes * width), 1), tensor);
      ensure_device(set.scales, size_t(srows * width) * sb, tensor);
      if (!g.symmetric) ensure_device(set.zeros, size_t(srows * width) * sb, tensor);
      const int64_t nb = c.block1 - c.block0;
      ensure_partials(set, size_t(nb), tensor);

      const cudaStream_t stream = set.stream.get();
      upload_rect(set.src.data(), host.src, first.row_begin, rows, c.c0, width, g.inner, esize,
                  stream, tensor);
      upload_rect(set.codes.data(), host.codes, first.plane_begin, planes, c.c0, width, g.inner, 1,
                  stream, tensor);
      upload_rect(set.scales.data(), host.scales, first.scale_row, srows, c.c0, width, g.inner, sb,
                  stream, tensor);
      if (!g.symmetric)
        upload_rect(set.zeros.data(), host.zeros, first.scale_row, srows, c.c0, width, g.inner, sb,
                    stream, tensor);

      const ChunkView dv{set.src.as<uint8_t>(),
                         set.codes.as<uint8_t>(),
                         set.scales.as<uint8_t>(),
                         g.symmetric ? nullptr : set.zeros.as<uint8_t>(),
                         first.row_begin,
                         first.plane_begin,
                         first.scale_row,
                         c.c0,
                         width};
      enqueue_blocks(g, dv, c.block0, nb, set.d_part.as<PartialSums>(), stream, tensor);
      cuda::throw_if_failed(cuda::copy_to_host(set.h_part.data(), set.d_part.data(),
                                               size_t(nb) * sizeof(PartialSums), stream),
                            tensor);
      set.pending_out = out_blocks + c.block0;
      set.pending_n = nb;
    }
    for (auto& set : s->sets) drain(set, tensor);
  } catch (...) {
    // Leave no work in flight that refers to the caller's buffers.
    for (auto& set : s->sets) {
      (void)cuda::synchronize(set.stream.get());
      set.pending_n = 0;
    }
    throw;
  }
}

void compute_device(DeviceState* s, const CompareGeometry& g, const ChunkView& dev,
                    PartialSums* out_blocks, float* kernel_ms, const std::string& tensor) {
  cuda::throw_if_failed(cuda::set_device(s->device), tensor);
  StagingSet& set = s->sets[0];
  const cudaStream_t stream = set.stream.get();
  drain(set, tensor);
  ensure_partials(set, size_t(g.blocks), tensor);
  cuda::throw_if_failed(s->start.record(stream), tensor);
  enqueue_blocks(g, dev, 0, g.blocks, set.d_part.as<PartialSums>(), stream, tensor);
  cuda::throw_if_failed(s->stop.record(stream), tensor);
  cuda::throw_if_failed(cuda::copy_to_host(set.h_part.data(), set.d_part.data(),
                                           size_t(g.blocks) * sizeof(PartialSums), stream),
                        tensor);
  cuda::throw_if_failed(cuda::synchronize(stream), tensor);
  std::memcpy(out_blocks, set.h_part.data(), size_t(g.blocks) * sizeof(PartialSums));
  if (kernel_ms) cuda::throw_if_failed(cuda::elapsed_ms(s->start, s->stop, kernel_ms), tensor);
}

}  // namespace qpack::vcuda
