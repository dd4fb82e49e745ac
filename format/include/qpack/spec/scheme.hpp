// The quantization scheme of one tensor (docs/quantization.md §1) and the
// code ranges it implies.
#pragma once

#include <cstdint>
#include <string>

#include "qpack/spec/dtype.hpp"

namespace qpack {

// What an asymmetric group stores as its zero-point (docs/quantization.md).
//   Float:   M, the group minimum rounded to the scale dtype; x_hat = fma(q, S, M)
//            (qpack's own rule, FlexLLMGen's; the default).
//   Integer: z, an integer code in [0, 2^bits - 1], with the group's range
//            widened to include 0; x_hat = (q - z) * S (the rule of
//            compressed-tensors, GPTQ and AWQ). Stored in the zeros section as
//            the value z in the scale dtype (exact: z <= 255).
// Symmetric schemes have no zero-point and ignore this field.
enum class ZeroPoint : uint8_t { Float, Integer };

// How a group's (S, M) are chosen (docs/quantization.md §M). Every method
// stores ordinary parameters and codes, decoded by §6 as RTN's are; they
// differ in the parameters and in the error bound verify checks (§7, §M4).
//   Rtn:    min-max round-to-nearest (§4), FlexLLMGen's; the default.
//   Search: llama.cpp's scale-and-minimum search per group (§M2); with
//           integer zero-points a clip search over the range (§M5).
//   Refit:  least-squares refits of S and M given the codes (§M3).
// Search applies to both asymmetric rules, Refit to float zero-points only.
enum class QuantMethod : uint8_t { Rtn, Search, Refit };

// Two-level scales (docs/quantization.md §T): groups per super-block, and the
// width of a group's scale and minimum codes. QuantScheme::super_block is 0
// (one level: scales and zero-points in the scale dtype) or this value.
constexpr int kSuperBlockGroups = 8;
constexpr int kSubScaleBits = 6;

struct QuantScheme {
  int bits = 4;             // 2, 3, 4 or 8
  int64_t group_size = 64;  // elements per group along `axis`; 0 = the whole axis
  int axis = 0;             // negative counts from the end
  bool symmetric = false;
  DType scale_dtype = DType::F16;           // F16, BF16 or F32; also the zero-point's dtype
  ZeroPoint zero_point = ZeroPoint::Float;  // asymmetric only
  QuantMethod method = QuantMethod::Rtn;
  int super_block = 0;  // groups per super-block of two-level scales (§T); 0 = one level

  bool operator==(const QuantScheme& o) const {
    return bits == o.bits && group_size == o.group_size && axis == o.axis &&
           symmetric == o.symmetric && scale_dtype == o.scale_dtype &&
           (symmetric || zero_point == o.zero_point) && method == o.method &&
           super_block == o.super_block;
  }
};

// What happens to NaN and +-Inf in a tensor being quantized (§3).
enum class NonFinitePolicy {
  Error,  // NaN or +-Inf: Error(NonFinite) naming the tensor and first index
  Zero,   // NaN and +-Inf are replaced by +0 before quantization
};

// Methods other than RTN widen the error bound by how far an element lies
// outside its group's stored range [M, M + Q*S] (§M4).
// Two-level scales (§T) widen it the same way: their quantized (S, M) need
// not cover the group's range.
QPACK_HD bool has_clipped_range(const QuantScheme& s) {
  return s.method != QuantMethod::Rtn || s.super_block > 0;
}
// True when the scheme stores two-level scales (§T).
QPACK_HD bool has_two_level(const QuantScheme& s) { return s.super_block > 0; }

// The code widths qpack stores.
QPACK_HD bool is_valid_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

// Largest code magnitude: asymmetric codes are 0..qmax_asym, symmetric codes
// are -qmax_sym..qmax_sym stored with an offset of 2^(bits-1).
QPACK_HD int qmax_asym(int bits) { return (1 << bits) - 1; }
QPACK_HD int qmax_sym(int bits) { return (1 << (bits - 1)) - 1; }
QPACK_HD int sym_offset(int bits) { return 1 << (bits - 1); }
// True when the scheme's zero-points are integers (asymmetric, ZeroPoint::Integer).
QPACK_HD bool has_integer_zero(const QuantScheme& s) {
  return !s.symmetric && s.zero_point == ZeroPoint::Integer;
}
QPACK_HD int qmax_of(const QuantScheme& s) {
  return s.symmetric ? qmax_sym(s.bits) : qmax_asym(s.bits);
}

// Checks bits, group size and scale dtype of a *requested* scheme (not the
// axis, which needs a shape). Groups are even and at least 8 elements so that
// every packed group fills whole bytes at every width. Returns an empty
// string when valid, otherwise the reason.
inline std::string validate_scheme(const QuantScheme& s) {
  if (!is_valid_bits(s.bits))
    return "bits must be 2, 3, 4 or 8 (got " + std::to_string(s.bits) + ")";
  if (s.group_size < 0 || (s.group_size > 0 && s.group_size < 8) || s.group_size % 2 != 0)
    return "group size must be an even number >= 8, or 0 for the whole axis (got " +
           std::to_string(s.group_size) + ")";
  if (!is_scale_dtype(s.scale_dtype))
    return std::string("scale dtype must be F16, BF16 or F32 (got ") + dtype_name(s.scale_dtype) +
           ")";
  if (s.method != QuantMethod::Rtn && s.symmetric)
    return "methods search and refit need an asymmetric scheme (docs/quantization.md §M1); "
           "use --method rtn for symmetric codes";
  if (s.method == QuantMethod::Refit && s.zero_point != ZeroPoint::Float)
    return "method refit needs float zero-points (docs/quantization.md §M1); integer "
           "zero-points take --method rtn or search (§M5)";
  if (s.super_block != 0) {
    if (s.super_block != kSuperBlockGroups)
      return "two-level scales take super-blocks of " + std::to_string(kSuperBlockGroups) +
             " groups (got " + std::to_string(s.super_block) + ")";
    if (s.symmetric || s.zero_point != ZeroPoint::Float)
      return "two-level scales need the asymmetric scheme with float zero-points "
             "(docs/quantization.md §T1)";
    if (s.scale_dtype == DType::F32)
      return "two-level scales need an F16 or BF16 scale dtype (docs/quantization.md §T1: "
             "an F32 super-scale times a 6-bit code is not exact in F32)";
    if (s.method == QuantMethod::Refit)
      return "two-level scales take --method rtn or search (docs/quantization.md §T2)";
  }
  return {};
}

}  // namespace qpack
