// quantize_blocks (export_hf_detail.hpp): the quantizer pipeline shared by
// the compressed-tensors and GPTQ writers.
#include <algorithm>
#include <cstring>

#include "export_hf_detail.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"

namespace qpack::hf_export {

namespace {

Error in_block(const Error& e, const LinearJob& job, const Block& b) {
  if (e.code() != ErrorCode::NonFinite && e.code() != ErrorCode::RangeOverflow) return e;
  if (b.rows == job.out && b.cols == job.in) return e;  // the block is the weight
  return Error(e.code(), e.file(), e.tensor(),
               e.reason() + " (indices within the block of rows " + std::to_string(b.r0) + ".." +
                   std::to_string(b.r0 + b.rows - 1) + ", columns " + std::to_string(b.k0) + ".." +
                   std::to_string(b.k0 + b.cols - 1) + " of the [" + std::to_string(job.out) +
                   ", " + std::to_string(job.in) + "] weight)");
}

// `b` holding n bytes: its own storage when large enough, else a pooled
// buffer (a buffer that `finish` moved out leaves `b` empty).
void size_buffer(const LinearJob& job, std::vector<uint8_t>& b, uint64_t n) {
  if (b.capacity() < n && job.queue)
    b = job.queue->buffer(n);
  else
    b.resize(size_t(n));
}

struct Slot {
  std::vector<uint8_t> gathered, codes, scales, zeros;
  GroupLayout layout;
  TensorQuantizer::Ticket ticket = 0;
  bool in_flight = false;
};

}  // namespace

std::vector<uint8_t> output_buffer(const LinearJob& job, uint64_t n) {
  return job.queue ? job.queue->buffer(n) : std::vector<uint8_t>(size_t(n));
}

void write_buffer(const LinearJob& job, size_t tensor, uint64_t offset, std::vector<uint8_t>&& b) {
  if (job.queue)
    job.queue->write(tensor, offset, std::move(b));
  else
    job.write(tensor, offset, b.data(), b.size());
}

void write_strided_buffer(const LinearJob& job, size_t tensor, uint64_t offset, uint64_t stride,
                          uint64_t run, std::vector<uint8_t>&& b) {
  if (job.queue) {
    job.queue->write_strided(tensor, offset, stride, run, std::move(b));
    return;
  }
  for (uint64_t i = 0; i * run < b.size(); ++i)
    job.write(tensor, offset + i * stride, &b[i * run],
              std::min<uint64_t>(run, b.size() - i * run));
}

void quantize_blocks(const LinearJob& job, const std::vector<Block>& blocks,
                     const std::function<void(const QuantizedBlock&)>& finish) {
  const QuantScheme& s = job.scheme;
  const uint64_t esize = uint64_t(dtype_bits(job.dtype) / 8);
  Slot slots[2];
  const auto submit = [&](size_t i) {
    Slot& slot = slots[i % 2];
    const Block& b = blocks[i];
    const uint64_t first = (uint64_t(b.r0) * uint64_t(job.in) + uint64_t(b.k0)) * esize;
    const uint8_t* src = job.data + first;
    if (job.will_need)
      job.will_need(first, (uint64_t(b.rows - 1) * uint64_t(job.in) + uint64_t(b.cols)) * esize);
    if (b.cols != job.in) {  // gather the [rows, cols] block
      slot.gathered.resize(uint64_t(b.rows) * uint64_t(b.cols) * esize);
      for (int64_t n = 0; n < b.rows; ++n)
        std::memcpy(&slot.gathered[uint64_t(n) * uint64_t(b.cols) * esize],
                    src + uint64_t(n) * uint64_t(job.in) * esize, uint64_t(b.cols) * esize);
      src = slot.gathered.data();
    }
    slot.layout = make_layout({b.rows, b.cols}, s, job.name);
    size_buffer(job, slot.codes, slot.layout.codes_bytes());
    size_buffer(job, slot.scales, slot.layout.params_bytes(s.scale_dtype));
    slot.zeros.resize(s.symmetric ? 0 : slot.layout.params_bytes(s.scale_dtype));
    try {
      slot.ticket = job.quantizer->submit(
          {src, job.dtype, job.name}, slot.layout, s, job.nonfinite,
          {slot.codes.data(), slot.scales.data(), s.symmetric ? nullptr : slot.zeros.data()});
    } catch (const Error& e) {
      throw in_block(e, job, b);
    }
    slot.in_flight = true;
  };
  try {
    if (!blocks.empty()) submit(0);
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (i + 1 < blocks.size()) submit(i + 1);
      Slot& slot = slots[i % 2];
      slot.in_flight = false;  // waited (or its error thrown) below
      try {
        job.quantizer->wait(slot.ticket);
      } catch (const Error& e) {
        throw in_block(e, job, blocks[i]);
      }
      const Block& b = blocks[i];
      if (job.release && b.cols == job.in)  // whole rows: read for the last time
        job.release(uint64_t(b.r0) * uint64_t(job.in) * esize,
                    uint64_t(b.rows) * uint64_t(job.in) * esize);
      finish({b, slot.layout, slot.codes.data(), slot.scales.data(),
              s.symmetric ? nullptr : slot.zeros.data(), &slot.codes, &slot.scales});
    }
  } catch (...) {
    if (slots[0].in_flight || slots[1].in_flight) job.quantizer->cancel();
    throw;
  }
}

}  // namespace qpack::hf_export
