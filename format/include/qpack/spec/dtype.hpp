// Element types as safetensors names them, and the exact conversions between
// the three floating-point types qpack quantizes (F16, BF16, F32).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "qpack/spec/numerics.hpp"

namespace qpack {

enum class DType : uint8_t {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
  C64,
  F4,
  F6_E2M3,
  F6_E3M2,
};

struct DTypeInfo {
  DType type;
  const char* name;  // as safetensors spells it
  int bits;          // size of one element (4 and 6 for the sub-byte float types)
};
inline constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 8},       {DType::U8, "U8", 8},           {DType::I8, "I8", 8},
    {DType::F8_E5M2, "F8_E5M2", 8}, {DType::F8_E4M3, "F8_E4M3", 8}, {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::I16, "I16", 16},        {DType::U16, "U16", 16},        {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},      {DType::I32, "I32", 32},        {DType::U32, "U32", 32},
    {DType::F32, "F32", 32},        {DType::F64, "F64", 64},        {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},        {DType::C64, "C64", 64},        {DType::F4, "F4", 4},
    {DType::F6_E2M3, "F6_E2M3", 6}, {DType::F6_E3M2, "F6_E3M2", 6},
};

inline std::optional<DType> dtype_from_string(std::string_view s) {
  for (const auto& r : kDTypes)
    if (s == r.name) return r.type;
  return std::nullopt;
}
inline const char* dtype_name(DType t) {
  for (const auto& r : kDTypes)
    if (r.type == t) return r.name;
  return "?";
}
// Size of one element in bits (4 and 6 for the sub-byte float types).
inline int dtype_bits(DType t) {
  for (const auto& r : kDTypes)
    if (r.type == t) return r.bits;
  return 0;
}
inline bool is_quantizable(DType t) {
  return t == DType::F16 || t == DType::BF16 || t == DType::F32;
}
inline bool is_scale_dtype(DType t) {
  return t == DType::F16 || t == DType::BF16 || t == DType::F32;
}
// Bytes of one stored scale / zero-point (scales are F16, BF16 or F32).
QPACK_HD int scale_bytes(DType scale_dtype) { return scale_dtype == DType::F32 ? 4 : 2; }

// The conversions below are the only ones in qpack: host code, the SIMD
// path's scalar tails and the CUDA kernels all call these, so F16/BF16
// rounding is written once.
// IEEE binary16 -> binary32, exact (subnormals included).
QPACK_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return spec::f32_from_bits(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return spec::f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
  // zero or subnormal: mant * 2^-24 is exact in binary32
  const float v = float(mant) * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

// binary32 -> binary16, round to nearest, ties to even; overflow gives +-Inf,
// NaN stays NaN (quiet).
QPACK_HD uint16_t f32_to_f16_rne(float f) {
  const uint32_t x = spec::f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520
  if (ax >= 0x38800000u) {                                 // normal half
    const uint32_t mant_round = ax + 0xfffu + ((ax >> 13) & 1u);
    return uint16_t(sign | ((mant_round - 0x38000000u) >> 13));
  }
  if (ax < 0x33000000u) return sign;  // below half the smallest subnormal: +-0
  // subnormal half: value = m * 2^-24, m = round(ax_value * 2^24)
  const uint32_t e = ax >> 23;  // 102..112
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t r = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return uint16_t(sign | r);
}

QPACK_HD float bf16_to_f32(uint16_t b) { return spec::f32_from_bits(uint32_t(b) << 16); }

QPACK_HD uint16_t f32_to_bf16_rne(float f) {
  const uint32_t x = spec::f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Loads element i of a little-endian F16/BF16/F32 buffer as float (exact).
inline float load_as_f32(const uint8_t* p, DType t, uint64_t i) {
  switch (t) {
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return f16_to_f32(h);
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return bf16_to_f32(h);
    }
    default: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
  }
}

}  // namespace qpack
