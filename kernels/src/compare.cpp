// Host side of qpack/kernels/compare.hpp: argument checks and the choice of
// compare kernel (compare_general.cu, compare_cols.cu, compare_rows.cu).
#include "qpack/kernels/compare.hpp"

#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>
#include <string>

#include "compare_args.hpp"
#include "qpack/kernels/cuda_status.hpp"

namespace qpack::cuda {
namespace {

using spec::ChunkView;
using spec::CompareGeometry;

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// log2(segments per group) for the rows kernel, -1 when it is not a power of two.
int seg_shift(const CompareGeometry& g) {
  for (int k = 0; k < 31; ++k)
    if (g.segs == (int64_t(1) << k)) return k;
  return -1;
}

enum class CompareKernel { General, Cols, Rows64, Rows32 };

// Which kernel fits the tensor and its buffers: the columns kernel, the rows
// kernel of 64- or of 32-element units (uniform geometry: see compare_rows),
// else the general one.
CompareKernel choose_kernel(const CompareGeometry& g, const ChunkView& v) {
  const int esz = g.source_dtype == DType::F32 ? 4 : 2;
  const int sb = g.scale_dtype == DType::F32 ? 4 : 2;
  if (g.seg_rows >= (int64_t(1) << 31)) return CompareKernel::General;
  // The columns and rows kernels decode with tables and magic numbers of the
  // float rule; integer zero-points take the general kernel (spec decode).
  if (g.integer_zero) return CompareKernel::General;
  if (!aligned(v.scales, sb) || (!g.symmetric && !aligned(v.zeros, sb)))
    return CompareKernel::General;
  if (g.inner >= spec::kBlockUnits && g.inner % 4 == 0 && v.pitch % 4 == 0 && v.c0 % 4 == 0 &&
      aligned(v.src, 4 * esz) && aligned(v.codes, 4))
    return CompareKernel::Cols;
  if (g.inner == 1 && g.axis_len % g.group_size == 0 && aligned(v.src, 16) && aligned(v.codes, 4)) {
    if (g.group_size == 32) return CompareKernel::Rows32;
    if (g.group_size % spec::kSegment == 0 && seg_shift(g) >= 0) return CompareKernel::Rows64;
  }
  return CompareKernel::General;
}

}  // namespace

Status compare_blocks(const CompareGeometry& g, const ChunkView& view, int64_t block0,
                      int64_t nblocks, spec::PartialSums* d_out, cudaStream_t stream) {
  if (g.bits != 2 && g.bits != 3 && g.bits != 4 && g.bits != 8)
    return invalid("bits must be 2, 3, 4 or 8 (got " + std::to_string(g.bits) + ")");
  if (!is_quantizable(g.source_dtype))
    return invalid(std::string("source dtype must be F16, BF16 or F32 (got ") +
                   dtype_name(g.source_dtype) + ")");
  if (nblocks > INT_MAX)
    return invalid("too many blocks in one launch (" + std::to_string(nblocks) + ")");
  if (block0 < 0 || nblocks < 0 || block0 > g.blocks - nblocks)
    return invalid("blocks [" + std::to_string(block0) + ", " + std::to_string(block0 + nblocks) +
                   ") outside [0, " + std::to_string(g.blocks) + ")");
  if (nblocks == 0) return {};
  if (!d_out || !view.src || !view.codes || !view.scales || (!g.symmetric && !view.zeros))
    return invalid("compare_blocks: null buffer");

  kernels::CompareArgs a{g, view, block0, d_out, 0};
  kernels::Launch l{};
  l.blocks = int(nblocks);
  l.stream = stream;
  int err = 0;
  switch (choose_kernel(g, view)) {
    case CompareKernel::Cols:
      err = kernels::launch_compare_cols(a, l);
      break;
    case CompareKernel::Rows64:
      a.seg_shift = seg_shift(g);
      err = kernels::launch_compare_rows(a, 64, l);
      break;
    case CompareKernel::Rows32:
      err = kernels::launch_compare_rows(a, 32, l);
      break;
    case CompareKernel::General:
      err = kernels::launch_compare_general(a, l);
      break;
  }
  return cuda_status(cudaError_t(err), "compare kernel launch");
}

}  // namespace qpack::cuda
