// One Linear weight as compressed-tensors pack-quantized tensors, by slices
// of whole rows: each slice is quantized as a [rows, in] tensor along axis
// -1 (its groups are the whole tensor's), re-laid out by
// compressed_tensors_layout and written at its offset. Slices start at
// multiples of 32 rows so that the zero-points, packed along dim 0, fill
// whole words.
#include <algorithm>
#include <memory>
#include <vector>

#include "compressed_tensors_layout.hpp"
#include "export_hf_detail.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"

namespace qpack::hf_export {

void quantize_block(const LinearJob& job, const uint8_t* src, const GroupLayout& L, int64_t r0,
                    int64_t k0, const QuantBuffers& out) {
  try {
    job.quantizer->quantize({src, job.dtype, job.name}, L, job.scheme, job.nonfinite, out);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::NonFinite && e.code() != ErrorCode::RangeOverflow) throw;
    if (L.outer == job.out && L.axis_len == job.in) throw;  // the block is the weight
    throw Error(e.code(), e.file(), e.tensor(),
                e.reason() + " (indices within the block of rows " + std::to_string(r0) + ".." +
                    std::to_string(r0 + L.outer - 1) + ", columns " + std::to_string(k0) + ".." +
                    std::to_string(k0 + L.axis_len - 1) + " of the [" + std::to_string(job.out) +
                    ", " + std::to_string(job.in) + "] weight)");
  }
}

void write_compressed_tensors_linear(const LinearJob& job) {
  const QuantScheme& s = job.scheme;
  const uint64_t esize = uint64_t(dtype_bits(job.dtype) / 8);
  const uint64_t row_bytes = uint64_t(job.in) * esize;
  int64_t rows_per_slice = int64_t(job.slice_bytes / std::max<uint64_t>(row_bytes, 1)) / 32 * 32;
  rows_per_slice = std::min<int64_t>(std::max<int64_t>(rows_per_slice, 32), job.out);
  const GroupLayout full = make_layout({job.out, job.in}, s, job.name);
  const int64_t P = full.groups_per_axis;
  const int64_t words = compressed_tensors::packed_words_per_row(job.in, s.bits);
  const uint64_t sb = uint64_t(scale_bytes(s.scale_dtype));
  const size_t t_packed = job.first_output, t_scale = t_packed + 1;
  const size_t t_zero = t_packed + 2, t_shape = t_packed + (s.symmetric ? 2 : 3);

  std::vector<uint8_t> codes, scales, zeros, packed;
  for (int64_t r0 = 0; r0 < job.out; r0 += rows_per_slice) {
    const int64_t rows = std::min(rows_per_slice, job.out - r0);
    const GroupLayout L = make_layout({rows, job.in}, s, job.name);
    codes.resize(L.codes_bytes());
    scales.resize(L.params_bytes(s.scale_dtype));
    zeros.resize(s.symmetric ? 0 : L.params_bytes(s.scale_dtype));
    quantize_block(job, job.data + uint64_t(r0) * row_bytes, L, r0, 0,
                   {codes.data(), scales.data(), s.symmetric ? nullptr : zeros.data()});
    packed.resize(uint64_t(rows) * uint64_t(words) * 4);
    compressed_tensors::pack_weight_rows(codes.data(), L, packed.data());
    job.write(t_packed, uint64_t(r0) * uint64_t(words) * 4, packed.data(), packed.size());
    job.write(t_scale, uint64_t(r0) * uint64_t(P) * sb, scales.data(), scales.size());
    if (!s.symmetric) {
      const int64_t zr = compressed_tensors::zero_point_rows(rows, s.bits);
      packed.resize(uint64_t(zr) * uint64_t(P) * 4);
      try {
        compressed_tensors::pack_zero_points(zeros.data(), s.scale_dtype, rows, P, s.bits,
                                             packed.data());
      } catch (const Error& e) {
        throw e.with_context("", job.name);
      }
      job.write(t_zero, uint64_t(r0 * s.bits / 32) * uint64_t(P) * 4, packed.data(), packed.size());
    }
    if (job.done) job.done(uint64_t(rows) * row_bytes);
  }
  const int64_t shape[2] = {job.out, job.in};
  uint8_t le[16];
  for (int i = 0; i < 2; ++i)
    for (int b = 0; b < 8; ++b) le[8 * i + b] = uint8_t(uint64_t(shape[i]) >> (8 * b));
  job.write(t_shape, 0, le, sizeof le);
}

}  // namespace qpack::hf_export
