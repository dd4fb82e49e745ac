// The verifier's fused dequantize-and-compare kernels: for each block of 256
// units (spec/error_sums.hpp), the spec::PartialSums that the CPU computes
// with spec::eval_unit and spec::block_tree_host, bit for bit. The host adds
// the blocks' partials in block order (qpack/verify/metrics.hpp).
//
// This header compiles with a plain C++ compiler and no CUDA headers, like
// cuda_quant.hpp, whose buffers, streams, events and copies the callers'
// staging uses. A build with QPACK_ENABLE_CUDA=OFF provides the same
// symbol; it reports that no device is available.
#pragma once

#include <cstdint>

#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/spec/error_sums.hpp"

namespace qpack::cuda {

// Enqueues on `stream` the partials of blocks [block0, block0 + nblocks) of
// the tensor of geometry g into d_out[0, nblocks) (device memory). `view`
// holds device pointers: whole tensors (row0 = plane0 = srow0 = c0 = 0,
// pitch = inner), or a staged rectangle holding at least the segment rows
// and columns of those blocks (spec::ChunkView). The kernel is chosen here
// from the geometry and the buffers' alignment: the columns kernel (inner >=
// 256, inner % 4 == 0), the rows kernel (inner == 1, whole groups of 32 or of
// 64 times a power of two) or the general one; all give the same bits.
// InvalidArgument: bits not 2, 3, 4 or 8, a source dtype other than F16,
// BF16, F32, blocks outside [0, g.blocks) or more than INT_MAX of them, a
// null buffer. Nothing is enqueued for nblocks == 0.
Status compare_blocks(const spec::CompareGeometry& g, const spec::ChunkView& view, int64_t block0,
                      int64_t nblocks, spec::PartialSums* d_out, cudaStream_t stream);

}  // namespace qpack::cuda
