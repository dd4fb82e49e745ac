// How codes and group parameters sit in their sections (docs/quantization.md
// §8): a group's codes are one little-endian bit stream, code k at bits
// k*b .. k*b+b-1; scales and zero-points are little-endian values of the
// scale dtype. One copy for the reference, the SIMD tails, the kernels and
// the verifier.
#pragma once

#include <cstdint>
#include <cstring>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/numerics.hpp"

namespace qpack::spec {

// Writes `code` (bits wide) at bit position k*bits of a group's bit stream,
// whose byte j lives at base[j * stride]. The bytes must be zero beforehand
// (codes are OR-ed in).
QPACK_HD void put_code(uint8_t* base, int64_t stride, int64_t k, int bits, uint32_t code) {
  const int64_t bit = k * bits;
  const int64_t j = bit >> 3;
  const int sh = int(bit & 7);
  base[j * stride] = uint8_t(base[j * stride] | (code << sh));
  if (sh + bits > 8) base[(j + 1) * stride] = uint8_t(base[(j + 1) * stride] | (code >> (8 - sh)));
}
QPACK_HD uint32_t get_code(const uint8_t* base, int64_t stride, int64_t k, int bits) {
  const int64_t bit = k * bits;
  const int64_t j = bit >> 3;
  const int sh = int(bit & 7);
  uint32_t v = uint32_t(base[j * stride]) >> sh;
  if (sh + bits > 8) v |= uint32_t(base[(j + 1) * stride]) << (8 - sh);
  return v & ((1u << bits) - 1u);
}

// Stored scale / zero-point number `index`, in two steps for kernels that
// start several loads before they wait for any (a conversion next to each
// load makes a warp wait for them in turn): the stored bits, then their
// value. Both use the reference's conversions, so even NaN payloads agree.
// On the device the array must be aligned to its element size (sections are).
QPACK_HD uint32_t load_param_bits(const uint8_t* params, int64_t index, DType sd) {
#if defined(__CUDA_ARCH__)
  if (sd == DType::F32) return reinterpret_cast<const uint32_t*>(params)[index];
  return reinterpret_cast<const uint16_t*>(params)[index];
#else
  if (sd == DType::F32) {
    uint32_t u;
    std::memcpy(&u, params + 4 * index, 4);
    return u;
  }
  uint16_t h;
  std::memcpy(&h, params + 2 * index, 2);
  return h;
#endif
}
QPACK_HD float param_value(uint32_t bits, DType sd) {
  if (sd == DType::F32) return f32_from_bits(bits);
  return sd == DType::F16 ? f16_to_f32(uint16_t(bits)) : bf16_to_f32(uint16_t(bits));
}
QPACK_HD float load_param(const uint8_t* params, int64_t index, DType sd) {
  return param_value(load_param_bits(params, index, sd), sd);
}
inline void store_param(uint8_t* dst, int64_t index, DType sd, float value, uint16_t bits16) {
  if (sd == DType::F32)
    std::memcpy(dst + 4 * index, &value, 4);
  else
    std::memcpy(dst + 2 * index, &bits16, 2);
}

}  // namespace qpack::spec
