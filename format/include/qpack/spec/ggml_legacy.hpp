// ggml's reference quantizers for the legacy GGUF block types Q4_0, Q4_1,
// Q5_0, Q5_1 and Q8_0 (docs/quantization.md, Part II): the bytes llama.cpp's
// `quantize_row_*_ref` writes and the floats its `dequantize_row_*` reads
// back. These are rules of their own, not qpack's FlexLLMGen scheme (§1-§10):
// other rounding (truncation after +0.5, ties away from zero), a reciprocal
// taken from the unrounded float32 scale, and fixed 32-element blocks.
//
// Every arithmetic step is one IEEE binary32 operation from numerics.hpp in
// the order ggml's C writes it; nothing is fused (host code builds with
// -ffp-contract=off, device code calls the _rn intrinsics). Inputs are
// finite floats; a NaN or Inf in a block gives whatever these steps give,
// which is not a promise (ggml's C is undefined there too).
#pragma once

#include <cstdint>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/numerics.hpp"

namespace qpack::spec::ggml {

// ggml's type ids (the values qpack/format/gguf.hpp's GgmlType gives them;
// the spec cannot include format, so the test checks that they agree).
enum class GgmlLegacyType : uint32_t { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8 };

// Every legacy type quantizes blocks of 32 consecutive elements.
constexpr int kBlockElements = 32;
constexpr int kHalfBlock = kBlockElements / 2;

// Bytes of one block: f16 d [+ f16 m] [+ 4 bytes qh] + codes.
constexpr int kQ4_0BlockBytes = 2 + 16;
constexpr int kQ4_1BlockBytes = 2 + 2 + 16;
constexpr int kQ5_0BlockBytes = 2 + 4 + 16;
constexpr int kQ5_1BlockBytes = 2 + 2 + 4 + 16;
constexpr int kQ8_0BlockBytes = 2 + 32;

QPACK_HD int block_bytes(GgmlLegacyType t) {
  switch (t) {
    case GgmlLegacyType::Q4_0:
      return kQ4_0BlockBytes;
    case GgmlLegacyType::Q4_1:
      return kQ4_1BlockBytes;
    case GgmlLegacyType::Q5_0:
      return kQ5_0BlockBytes;
    case GgmlLegacyType::Q5_1:
      return kQ5_1BlockBytes;
    case GgmlLegacyType::Q8_0:
      return kQ8_0BlockBytes;
  }
  return 0;
}

// ggml's name of the type ("Q4_0"), as GGUF and llama.cpp spell it.
QPACK_HD const char* type_name(GgmlLegacyType t) {
  switch (t) {
    case GgmlLegacyType::Q4_0:
      return "Q4_0";
    case GgmlLegacyType::Q4_1:
      return "Q4_1";
    case GgmlLegacyType::Q5_0:
      return "Q5_0";
    case GgmlLegacyType::Q5_1:
      return "Q5_1";
    case GgmlLegacyType::Q8_0:
      return "Q8_0";
  }
  return "?";
}

namespace detail {

// Block fields are little-endian whatever the host is.
QPACK_HD void store_u16_le(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v & 0xffu);
  p[1] = uint8_t(v >> 8);
}
QPACK_HD uint16_t load_u16_le(const uint8_t* p) { return uint16_t(p[0] | (uint32_t(p[1]) << 8)); }
QPACK_HD void store_u32_le(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t((v >> (8 * i)) & 0xffu);
}
QPACK_HD uint32_t load_u32_le(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// ggml's `d ? 1.0f/d : 0.0f`: the reciprocal of the float32 scale before it
// is rounded to f16 (-0 counts as zero).
QPACK_HD float reciprocal_or_zero(float d) { return d != 0.0f ? div_f32(1.0f, d) : 0.0f; }

// ggml's `(int8_t)t` (and Q5_1's `(uint8_t)t`). Every finite t these rules
// produce lies in [0, 33) (docs/quantization.md §G4), where the cast
// truncates toward zero. t is not finite only when 1/d overflowed (|d| <=
// 2^-128: a block of tiny values): C leaves that conversion undefined;
// ggml's x86 build (cvttss2si, then the low byte) and gguf-py both give 0,
// so qpack gives 0.
QPACK_HD int truncate_code(float t) { return is_finite_f32(t) ? int(t) : 0; }
QPACK_HD int min_int(int a, int b) { return a < b ? a : b; }

// The signed element of largest magnitude, the first one when several tie;
// +0 for a block of zeros (ggml starts from amax = max = 0.0f and replaces
// only on a strictly larger |v|).
QPACK_HD float signed_absmax(const float* x) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < kBlockElements; ++j) {
    const float a = abs_f32(x[j]);
    if (amax < a) {
      amax = a;
      max = x[j];
    }
  }
  return max;
}

// min and max by strict comparisons from FLT_MAX / -FLT_MAX, as ggml scans:
// among equal values (+0 and -0) the first one seen stays.
QPACK_HD void block_min_max(const float* x, float* mn, float* mx) {
  float lo = 3.40282346638528859812e+38f;
  float hi = -3.40282346638528859812e+38f;
  for (int j = 0; j < kBlockElements; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

// Codes c[0..31] of 4 bits: element j in the low nibble of byte j, element
// j+16 in the high nibble (ggml's layout, not qpack §8's 2j / 2j+1).
QPACK_HD void pack_nibbles(const int* c, uint8_t* qs) {
  for (int j = 0; j < kHalfBlock; ++j)
    qs[j] = uint8_t((c[j] & 0x0f) | ((c[j + kHalfBlock] & 0x0f) << 4));
}
// Codes of 5 bits: the low 4 as pack_nibbles, bit 4 of element j in bit j of
// the little-endian uint32 qh.
QPACK_HD void pack_five_bits(const int* c, uint8_t* qh, uint8_t* qs) {
  pack_nibbles(c, qs);
  uint32_t high = 0;
  for (int j = 0; j < kBlockElements; ++j) high |= uint32_t((c[j] >> 4) & 1) << j;
  store_u32_le(qh, high);
}
QPACK_HD int nibble_code(const uint8_t* qs, int j) {
  return j < kHalfBlock ? (qs[j] & 0x0f) : (qs[j - kHalfBlock] >> 4);
}
QPACK_HD int five_bit_code(const uint8_t* qh, const uint8_t* qs, int j) {
  return nibble_code(qs, j) | int(((load_u32_le(qh) >> j) & 1u) << 4);
}

}  // namespace detail

// ------------------------------------------------------------ quantize one block
// x: 32 floats; out: the type's block bytes.

// Q4_0: d = max / -8 with max the signed element of largest |x|, so that max
// itself maps to code 0 and the codes reach -8..7 around it; code =
// min(15, trunc(fl(fl(x * id) + 8.5))).
QPACK_HD void quantize_block_q4_0(const float* x, uint8_t* out) {
  const float d = div_f32(detail::signed_absmax(x), -8.0f);
  const float id = detail::reciprocal_or_zero(d);
  detail::store_u16_le(out, f32_to_f16_rne(d));
  int c[kBlockElements];
  for (int j = 0; j < kBlockElements; ++j)
    c[j] = detail::min_int(15, detail::truncate_code(add_f32(mul_f32(x[j], id), 8.5f)));
  detail::pack_nibbles(c, out + 2);
}

// Q4_1: d = (max - min) / 15, m = min; code =
// min(15, trunc(fl(fl(fl(x - min) * id) + 0.5))).
QPACK_HD void quantize_block_q4_1(const float* x, uint8_t* out) {
  float mn, mx;
  detail::block_min_max(x, &mn, &mx);
  const float d = div_f32(sub_f32(mx, mn), 15.0f);
  const float id = detail::reciprocal_or_zero(d);
  detail::store_u16_le(out, f32_to_f16_rne(d));
  detail::store_u16_le(out + 2, f32_to_f16_rne(mn));
  int c[kBlockElements];
  for (int j = 0; j < kBlockElements; ++j)
    c[j] =
        detail::min_int(15, detail::truncate_code(add_f32(mul_f32(sub_f32(x[j], mn), id), 0.5f)));
  detail::pack_nibbles(c, out + 4);
}

// Q5_0: as Q4_0 with d = max / -16 and code = min(31, trunc(fl(fl(x * id) + 16.5))).
QPACK_HD void quantize_block_q5_0(const float* x, uint8_t* out) {
  const float d = div_f32(detail::signed_absmax(x), -16.0f);
  const float id = detail::reciprocal_or_zero(d);
  detail::store_u16_le(out, f32_to_f16_rne(d));
  int c[kBlockElements];
  for (int j = 0; j < kBlockElements; ++j)
    c[j] = detail::min_int(31, detail::truncate_code(add_f32(mul_f32(x[j], id), 16.5f)));
  detail::pack_five_bits(c, out + 2, out + 6);
}

// Q5_1: as Q4_1 with d = (max - min) / 31. ggml writes no clamp here: the
// truncated value never exceeds 31 (docs/quantization.md §G4).
QPACK_HD void quantize_block_q5_1(const float* x, uint8_t* out) {
  float mn, mx;
  detail::block_min_max(x, &mn, &mx);
  const float d = div_f32(sub_f32(mx, mn), 31.0f);
  const float id = detail::reciprocal_or_zero(d);
  detail::store_u16_le(out, f32_to_f16_rne(d));
  detail::store_u16_le(out + 2, f32_to_f16_rne(mn));
  int c[kBlockElements];
  for (int j = 0; j < kBlockElements; ++j)
    c[j] = detail::truncate_code(add_f32(mul_f32(sub_f32(x[j], mn), id), 0.5f));
  detail::pack_five_bits(c, out + 4, out + 8);
}

// Q8_0: d = max|x| / 127; code = roundf(fl(x * id)) (ties away from zero),
// stored as int8.
QPACK_HD void quantize_block_q8_0(const float* x, uint8_t* out) {
  float amax = 0.0f;
  for (int j = 0; j < kBlockElements; ++j) {
    const float a = abs_f32(x[j]);
    amax = amax > a ? amax : a;  // ggml's MAX(amax, fabsf(v))
  }
  const float d = div_f32(amax, 127.0f);
  const float id = detail::reciprocal_or_zero(d);
  detail::store_u16_le(out, f32_to_f16_rne(d));
  for (int j = 0; j < kBlockElements; ++j) {
    const float r = round_half_away_f32(mul_f32(x[j], id));
    out[2 + j] = uint8_t(int8_t(is_finite_f32(r) ? int(r) : 0));  // |r| <= 127 when finite
  }
}

// ------------------------------------------------------------ dequantize one block
// in: the type's block bytes; y: 32 floats. Each value is one multiply (and,
// for the types with m, one separate add: two roundings, never an fma).

QPACK_HD void dequantize_block_q4_0(const uint8_t* in, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in));
  for (int j = 0; j < kBlockElements; ++j)
    y[j] = mul_f32(float(detail::nibble_code(in + 2, j) - 8), d);
}
QPACK_HD void dequantize_block_q4_1(const uint8_t* in, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in));
  const float m = f16_to_f32(detail::load_u16_le(in + 2));
  for (int j = 0; j < kBlockElements; ++j)
    y[j] = add_f32(mul_f32(float(detail::nibble_code(in + 4, j)), d), m);
}
QPACK_HD void dequantize_block_q5_0(const uint8_t* in, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in));
  for (int j = 0; j < kBlockElements; ++j)
    y[j] = mul_f32(float(detail::five_bit_code(in + 2, in + 6, j) - 16), d);
}
QPACK_HD void dequantize_block_q5_1(const uint8_t* in, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in));
  const float m = f16_to_f32(detail::load_u16_le(in + 2));
  for (int j = 0; j < kBlockElements; ++j)
    y[j] = add_f32(mul_f32(float(detail::five_bit_code(in + 4, in + 8, j)), d), m);
}
QPACK_HD void dequantize_block_q8_0(const uint8_t* in, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in));
  for (int j = 0; j < kBlockElements; ++j) y[j] = mul_f32(float(int8_t(in[2 + j])), d);
}

// ------------------------------------------------------------ by type, whole rows

QPACK_HD void quantize_block(GgmlLegacyType t, const float* x, uint8_t* out) {
  switch (t) {
    case GgmlLegacyType::Q4_0:
      quantize_block_q4_0(x, out);
      return;
    case GgmlLegacyType::Q4_1:
      quantize_block_q4_1(x, out);
      return;
    case GgmlLegacyType::Q5_0:
      quantize_block_q5_0(x, out);
      return;
    case GgmlLegacyType::Q5_1:
      quantize_block_q5_1(x, out);
      return;
    case GgmlLegacyType::Q8_0:
      quantize_block_q8_0(x, out);
      return;
  }
}
QPACK_HD void dequantize_block(GgmlLegacyType t, const uint8_t* in, float* y) {
  switch (t) {
    case GgmlLegacyType::Q4_0:
      dequantize_block_q4_0(in, y);
      return;
    case GgmlLegacyType::Q4_1:
      dequantize_block_q4_1(in, y);
      return;
    case GgmlLegacyType::Q5_0:
      dequantize_block_q5_0(in, y);
      return;
    case GgmlLegacyType::Q5_1:
      dequantize_block_q5_1(in, y);
      return;
    case GgmlLegacyType::Q8_0:
      dequantize_block_q8_0(in, y);
      return;
  }
}

// n elements (a multiple of 32) into n/32 blocks of block_bytes(t) each.
// Returns false, writing nothing, when n is negative or not a multiple of 32:
// the spec cannot throw, and ggml would only assert.
QPACK_HD bool quantize_row(GgmlLegacyType t, const float* x, int64_t n, uint8_t* out) {
  if (n < 0 || n % kBlockElements != 0) return false;
  const int64_t bytes = block_bytes(t);
  for (int64_t b = 0; b < n / kBlockElements; ++b)
    quantize_block(t, x + b * kBlockElements, out + b * bytes);
  return true;
}
QPACK_HD bool dequantize_row(GgmlLegacyType t, const uint8_t* in, int64_t n, float* y) {
  if (n < 0 || n % kBlockElements != 0) return false;
  const int64_t bytes = block_bytes(t);
  for (int64_t b = 0; b < n / kBlockElements; ++b)
    dequantize_block(t, in + b * bytes, y + b * kBlockElements);
  return true;
}

}  // namespace qpack::spec::ggml
