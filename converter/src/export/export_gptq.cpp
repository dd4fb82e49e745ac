// One Linear weight as GPTQ v1 tensors. GPTQ stores [in, out] (packed along
// in), the transpose of the source's [out, in]. The weight is quantized in
// slices of whole rows, contiguous in the source (no gather): each slice's
// codes and scales, transposed, are a column range of every qweight and
// scales row, written as strided runs. Only when a slice budget holds too few
// rows for runs of a useful length (a very wide weight, a small budget) is it
// processed in blocks of all rows by a slice of columns holding whole groups,
// each gathered from the source, which become whole qweight and scales rows.
// Either way the bytes are the same: the groups lie along `in` in both.
#include <algorithm>
#include <vector>

#include "export_hf_detail.hpp"
#include "gptq_layout.hpp"
#include "qpack/format/error.hpp"

namespace qpack::hf_export {

void write_gptq_linear(const LinearJob& job) {
  const QuantScheme& s = job.scheme;
  if (!s.symmetric)
    throw Error(ErrorCode::UnsupportedScheme, "", job.name, "GPTQ export is symmetric only");
  const uint64_t esize = uint64_t(dtype_bits(job.dtype) / 8);
  const int cpw = gptq::codes_per_word(s.bits);
  const int64_t G = s.group_size > 0 ? s.group_size : job.in;
  const int64_t P = job.in / G;
  const uint64_t out = uint64_t(job.out);
  const uint64_t sb = uint64_t(scale_bytes(s.scale_dtype));
  const size_t t_qweight = job.first_output, t_qzeros = t_qweight + 1;
  const size_t t_scales = t_qweight + 2, t_gidx = t_qweight + 3;

  // Block shape: [nr rows, kw columns]. Row slices unless they would be
  // shorter than job.min_slice_rows rows (qweight runs of 4 bytes a row).
  int64_t nr = int64_t(job.slice_bytes / std::max<uint64_t>(uint64_t(job.in) * esize, 1));
  nr = std::min<int64_t>(std::max<int64_t>(nr, 1), job.out);
  int64_t kw = job.in;
  if (s.group_size > 0 && nr < std::min<int64_t>(job.min_slice_rows, job.out)) {
    nr = job.out;
    kw = int64_t(job.slice_bytes / std::max<uint64_t>(out * esize, 1)) / G * G;
    kw = std::min(std::max(kw, G), job.in);
  }
  std::vector<Block> blocks;
  for (int64_t r0 = 0; r0 < job.out; r0 += nr)
    for (int64_t k0 = 0; k0 < job.in; k0 += kw)
      blocks.push_back({r0, std::min(nr, job.out - r0), k0, std::min(kw, job.in - k0)});

  quantize_blocks(job, blocks, [&](const QuantizedBlock& q) {
    const int64_t r0 = q.block.r0, rows = q.block.rows, k0 = q.block.k0, cols = q.block.cols;
    const int64_t qrows = cols / cpw, groups = q.layout.groups_per_axis;
    std::vector<uint8_t> words = output_buffer(job, uint64_t(qrows) * uint64_t(rows) * 4);
    gptq::pack_qweight_block(q.codes, q.layout, words.data());
    std::vector<uint8_t> scales_t = output_buffer(job, uint64_t(groups) * uint64_t(rows) * sb);
    gptq::transpose(q.scales, rows, groups, int(sb), scales_t.data());
    const uint64_t qrow0 = uint64_t(k0 / cpw), grow0 = uint64_t(k0 / G);
    if (rows == job.out) {  // whole output rows: one write each
      write_buffer(job, t_qweight, qrow0 * out * 4, std::move(words));
      write_buffer(job, t_scales, grow0 * out * sb, std::move(scales_t));
    } else {  // a column range of every row
      write_strided_buffer(job, t_qweight, (qrow0 * out + uint64_t(r0)) * 4, out * 4,
                           uint64_t(rows) * 4, std::move(words));
      write_strided_buffer(job, t_scales, (grow0 * out + uint64_t(r0)) * sb, out * sb,
                           uint64_t(rows) * sb, std::move(scales_t));
    }
    if (job.done) job.done(uint64_t(rows) * uint64_t(cols) * esize);
  });
  // Symmetric: every zero-point is 2^(b-1), stored as 2^(b-1) - 1.
  std::vector<int32_t> z(out, 1 << (s.bits - 1));
  const uint64_t zrow = out / uint64_t(cpw) * 4;
  std::vector<uint8_t> qzeros = output_buffer(job, uint64_t(P) * zrow);
  gptq::pack_qzeros_row(z.data(), job.out, s.bits, qzeros.data());
  for (int64_t g = 1; g < P; ++g)
    std::copy(qzeros.begin(), qzeros.begin() + std::ptrdiff_t(zrow),
              qzeros.begin() + std::ptrdiff_t(uint64_t(g) * zrow));
  write_buffer(job, t_qzeros, 0, std::move(qzeros));
  std::vector<int32_t> gidx(uint64_t(job.in));
  gptq::group_index(job.in, s.group_size, gidx.data());
  std::vector<uint8_t> le(gidx.size() * 4);
  for (size_t k = 0; k < gidx.size(); ++k)
    for (int b = 0; b < 4; ++b) le[4 * k + b] = uint8_t(uint32_t(gidx[k]) >> (8 * b));
  job.write(t_gidx, 0, le.data(), le.size());
}

}  // namespace qpack::hf_export
