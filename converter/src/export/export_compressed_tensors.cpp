// One Linear weight as compressed-tensors pack-quantized tensors, by slices
// of whole rows: each slice is quantized as a [rows, in] tensor along axis
// -1 (its groups are the whole tensor's), re-laid out by
// compressed_tensors_layout and written at its offset. Slices start at
// multiples of 32 rows so that the zero-points, packed along dim 0, fill
// whole words.
#include <algorithm>
#include <vector>

#include "compressed_tensors_layout.hpp"
#include "export_hf_detail.hpp"
#include "qpack/format/error.hpp"

namespace qpack::hf_export {

void write_compressed_tensors_linear(const LinearJob& job) {
  const QuantScheme& s = job.scheme;
  const uint64_t esize = uint64_t(dtype_bits(job.dtype) / 8);
  const uint64_t row_bytes = uint64_t(job.in) * esize;
  int64_t rows_per_slice = int64_t(job.slice_bytes / std::max<uint64_t>(row_bytes, 1)) / 32 * 32;
  rows_per_slice = std::min<int64_t>(std::max<int64_t>(rows_per_slice, 32), job.out);
  std::vector<Block> blocks;
  for (int64_t r0 = 0; r0 < job.out; r0 += rows_per_slice)
    blocks.push_back({r0, std::min(rows_per_slice, job.out - r0), 0, job.in});
  const int64_t words = compressed_tensors::packed_words_per_row(job.in, s.bits);
  const uint64_t sb = uint64_t(scale_bytes(s.scale_dtype));
  const size_t t_packed = job.first_output, t_scale = t_packed + 1;
  const size_t t_zero = t_packed + 2, t_shape = t_packed + (s.symmetric ? 2 : 3);

  quantize_blocks(job, blocks, [&](const QuantizedBlock& q) {
    const int64_t r0 = q.block.r0, rows = q.block.rows, P = q.layout.groups_per_axis;
    const uint64_t packed_bytes = uint64_t(rows) * uint64_t(words) * 4;
    std::vector<uint8_t> packed;
    if (uint64_t(q.layout.groups_per_axis) * uint64_t(q.layout.bytes_per_group) ==
        uint64_t(words) * 4) {
      // Rows end on word boundaries: the codes are the packed words.
      packed = std::move(*q.codes_buffer);
      packed.resize(size_t(packed_bytes));
    } else {
      packed = output_buffer(job, packed_bytes);
      compressed_tensors::pack_weight_rows(q.codes, q.layout, packed.data());
    }
    write_buffer(job, t_packed, uint64_t(r0) * uint64_t(words) * 4, std::move(packed));
    std::vector<uint8_t> scales = std::move(*q.scales_buffer);
    scales.resize(size_t(uint64_t(rows) * uint64_t(P) * sb));
    write_buffer(job, t_scale, uint64_t(r0) * uint64_t(P) * sb, std::move(scales));
    if (!s.symmetric) {
      const int64_t zr = compressed_tensors::zero_point_rows(rows, s.bits);
      std::vector<uint8_t> zp = output_buffer(job, uint64_t(zr) * uint64_t(P) * 4);
      try {
        compressed_tensors::pack_zero_points(q.zeros, s.scale_dtype, rows, P, s.bits, zp.data());
      } catch (const Error& e) {
        throw e.with_context("", job.name);
      }
      write_buffer(job, t_zero, uint64_t(r0 * s.bits / 32) * uint64_t(P) * 4, std::move(zp));
    }
    if (job.done) job.done(uint64_t(rows) * row_bytes);
  });
  const int64_t shape[2] = {job.out, job.in};
  uint8_t le[16];
  for (int i = 0; i < 2; ++i)
    for (int b = 0; b < 8; ++b) le[8 * i + b] = uint8_t(uint64_t(shape[i]) >> (8 * b));
  job.write(t_shape, 0, le, sizeof le);
}

}  // namespace qpack::hf_export
