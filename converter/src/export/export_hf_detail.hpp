// What export_hf.cpp (the plan and the folder) hands the per-format writers
// of one quantized Linear weight (export_compressed_tensors.cpp,
// export_gptq.cpp). The writers see the folder only through `write`, so
// they can be driven by any sink of positional writes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qpack/converter/quantizer.hpp"
#include "qpack/spec/layout.hpp"
#include "qpack/spec/scheme.hpp"
#include "write_queue.hpp"

namespace qpack::hf_export {

struct LinearJob {
  std::string name;               // the source tensor, for errors
  const uint8_t* data = nullptr;  // [out, in] row-major in `dtype`
  DType dtype = DType::F16;
  int64_t out = 0, in = 0;
  QuantScheme scheme;  // axis -1; group 0 = one group per row
  NonFinitePolicy nonfinite = NonFinitePolicy::Error;
  uint64_t slice_bytes = 64ull << 20;
  // GPTQ: a weight is quantized in slices of whole rows when a slice holds
  // at least this many rows (or all of them), else in column blocks.
  int64_t min_slice_rows = 256;
  size_t first_output = 0;  // folder index of the entry's first output tensor
  TensorQuantizer* quantizer = nullptr;
  // write(folder tensor, byte offset, data, bytes); `data` is valid only
  // during the call.
  std::function<void(size_t, uint64_t, const void*, uint64_t)> write;
  std::function<void(uint64_t source_bytes)> done;  // after each slice
  // Optional. With a queue, the writers hand it their whole output buffers
  // (taken from its pool) instead of calling `write`, so that writing
  // overlaps quantizing the next block.
  WriteQueue* queue = nullptr;
  // Optional: bytes [offset, offset + n) of `data` are about to be read
  // (map them in one call, not a page fault per page) / are no longer read.
  std::function<void(uint64_t offset, uint64_t n)> will_need, release;
};

// A buffer for a writer's output: from the job's queue's pool, else new.
std::vector<uint8_t> output_buffer(const LinearJob& job, uint64_t n);
// Writes a whole buffer at `offset` of folder tensor `tensor`: through the
// job's queue (which takes the buffer), else through `write`.
void write_buffer(const LinearJob& job, size_t tensor, uint64_t offset, std::vector<uint8_t>&& b);
// Writes a buffer as runs of `run` bytes, run i at `offset + i * stride`.
void write_strided_buffer(const LinearJob& job, size_t tensor, uint64_t offset, uint64_t stride,
                          uint64_t run, std::vector<uint8_t>&& b);

// A block of the weight: rows [r0, r0 + rows) by columns [k0, k0 + cols),
// the columns whole groups.
struct Block {
  int64_t r0 = 0, rows = 0, k0 = 0, cols = 0;
};
// A block's quantization, valid during the `finish` call that receives it.
struct QuantizedBlock {
  Block block;
  GroupLayout layout;  // of the [rows, cols] block, axis -1
  const uint8_t* codes = nullptr;
  const uint8_t* scales = nullptr;
  const uint8_t* zeros = nullptr;  // null when symmetric
  // The buffers behind codes and scales: `finish` may move them out (to
  // write_buffer) instead of copying.
  std::vector<uint8_t>* codes_buffer = nullptr;
  std::vector<uint8_t>* scales_buffer = nullptr;
};
// Quantizes the blocks in order with two in flight (block i+1 is submitted
// to the quantizer before block i is waited for, so a device pipeline
// overlaps the re-layout and writes of block i), and calls finish on each
// in order. A block that is not whole rows is gathered from the source
// first. The quantizer's NonFinite/RangeOverflow errors count indices within
// the block, so they get the block's place appended; on any error the work
// in flight is cancelled before its buffers go.
void quantize_blocks(const LinearJob& job, const std::vector<Block>& blocks,
                     const std::function<void(const QuantizedBlock&)>& finish);

// Outputs in order: weight_packed, weight_scale, [weight_zero_point], weight_shape.
void write_compressed_tensors_linear(const LinearJob& job);
// Outputs in order: qweight, qzeros, scales, g_idx.
void write_gptq_linear(const LinearJob& job);

}  // namespace qpack::hf_export
