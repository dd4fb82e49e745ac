// Pieces shared by the reference and the fast CPU path that are not
// arithmetic: locating non-finite inputs and reporting range overflows with
// the same message, and packing codes into a group's bit stream.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qpack/quant_math.hpp"
#include "qpack/quantize.hpp"

namespace qpack::detail {

// Flat index of the first NaN/Inf in the tensor, or -1. `threads` > 1 scans
// in parallel (the answer is the same: the smallest index).
int64_t find_first_nonfinite(const uint8_t* data, DType dtype, int64_t n, int threads);

[[noreturn]] void throw_nonfinite(const QuantInput& in, const GroupLayout& layout, int64_t flat);
[[noreturn]] void throw_range_overflow(const QuantInput& in, const GroupLayout& layout,
                                       const QuantScheme& scheme, int64_t group_linear);

enum GroupResult : int { kGroupOk = 0, kGroupOverflow = 1, kGroupNonFinite = 2 };

// Quantizes group (o, g, i) exactly as the spec's steps read, one element at a
// time. `scratch` holds at least layout.group_size floats. Does not throw (it
// runs inside OpenMP regions): returns kGroupNonFinite when the group holds a
// NaN/Inf and the policy is Error, kGroupOverflow when its scale or
// zero-point does not fit the scale dtype. The group's code bytes must be
// zero beforehand (codes are OR-ed in).
int quantize_group(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                   NonFinitePolicy policy, const QuantBuffers& out, int64_t o, int64_t g,
                   int64_t i, float* scratch);

// Scales and zero-points are stored little-endian in the scale dtype.
inline void store_param(uint8_t* dst, int64_t index, DType sd, float value, uint16_t bits16) {
  if (sd == DType::F32) std::memcpy(dst + 4 * index, &value, 4);
  else std::memcpy(dst + 2 * index, &bits16, 2);
}
inline float load_param(const uint8_t* src, int64_t index, DType sd) {
  if (sd == DType::F32) {
    float v;
    std::memcpy(&v, src + 4 * index, 4);
    return v;
  }
  uint16_t b;
  std::memcpy(&b, src + 2 * index, 2);
  return sd == DType::F16 ? f16_to_f32(b) : bf16_to_f32(b);
}

// Writes `code` (bits wide) at bit position k*bits of a group's little-endian
// bit stream, whose byte j lives at base[j * stride].
inline void put_code(uint8_t* base, int64_t stride, int64_t k, int bits, uint32_t code) {
  const int64_t bit = k * bits;
  const int64_t j = bit >> 3;
  const int sh = int(bit & 7);
  base[j * stride] = uint8_t(base[j * stride] | (code << sh));
  if (sh + bits > 8) base[(j + 1) * stride] = uint8_t(base[(j + 1) * stride] | (code >> (8 - sh)));
}
inline uint32_t get_code(const uint8_t* base, int64_t stride, int64_t k, int bits) {
  const int64_t bit = k * bits;
  const int64_t j = bit >> 3;
  const int sh = int(bit & 7);
  uint32_t v = uint32_t(base[j * stride]) >> sh;
  if (sh + bits > 8) v |= uint32_t(base[(j + 1) * stride]) << (8 - sh);
  return v & ((1u << bits) - 1u);
}

}  // namespace qpack::detail
