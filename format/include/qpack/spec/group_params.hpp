// The per-group arithmetic of docs/quantization.md §4-§6 (and §5a), written once for
// every implementation: the scalar reference, the SIMD path and the CUDA
// kernels include this header, so that scale and zero-point rounding cannot
// drift apart. Every step is one IEEE float32 operation rounded to nearest
// even (numerics.hpp); the decode's fma is the only fused one.
#pragma once

#include <cstdint>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/numerics.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack::spec {

// Rounds v to the scale dtype; returns the rounded value as float32 and its
// 16-bit pattern (F16/BF16; for F32 the pattern is unused).
QPACK_HD float round_to(float v, DType d, uint16_t* bits16) {
  if (d == DType::F16) {
    *bits16 = f32_to_f16_rne(v);
    return f16_to_f32(*bits16);
  }
  if (d == DType::BF16) {
    *bits16 = f32_to_bf16_rne(v);
    return bf16_to_f32(*bits16);
  }
  *bits16 = 0;
  return v;
}

struct GroupParams {
  float scale;  // S: the stored scale, as float32
  float zero;   // the stored zero-point, as float32: M (float rule), the
                // integer z (integer rule) or +0 (symmetric)
  float inv;    // fl(1 / S); 0 for a degenerate group (S == +0)
  uint16_t scale_bits16, zero_bits16;
  bool overflow;  // S or M is not finite in the scale dtype
};

// The tail both rules share (§5): a scale that overflowed or fell below the
// smallest normal makes the group degenerate (S = +0, every code 0).
QPACK_HD void finish_params(GroupParams& p) {
  if (p.overflow || p.scale < kMinNormalF32) {
    p.scale = 0.0f;
    p.scale_bits16 = 0;
    p.inv = 0.0f;
  } else {
    p.inv = div_f32(1.0f, p.scale);
  }
}

// Asymmetric: mn/mx are the min and max of the group's real elements.
QPACK_HD GroupParams params_asym(float mn, float mx, int bits, DType sd) {
  GroupParams p;
  mn = add_f32(mn, 0.0f);  // -0 -> +0: the result must not depend on which zero was seen first
  mx = add_f32(mx, 0.0f);
  const float q = float((1 << bits) - 1);
  const float s32 = div_f32(sub_f32(mx, mn), q);
  p.scale = round_to(s32, sd, &p.scale_bits16);
  p.zero = round_to(mn, sd, &p.zero_bits16);
  p.overflow = !is_finite_f32(p.scale) || !is_finite_f32(p.zero);
  finish_params(p);
  return p;
}

// Asymmetric with an integer zero-point (§5a): the range [mn, mx] is widened
// to include 0, then z = clamp(rint(-mn * inv), 0, Q). A degenerate group has
// S = 0, inv = 0 and z = 0.
QPACK_HD GroupParams params_asym_int(float mn, float mx, int bits, DType sd) {
  GroupParams p;
  mn = add_f32(mn < 0.0f ? mn : 0.0f, 0.0f);  // min(mn, +0); -0 -> +0
  mx = add_f32(mx > 0.0f ? mx : 0.0f, 0.0f);  // max(mx, +0)
  const float q = float((1 << bits) - 1);
  const float s32 = div_f32(sub_f32(mx, mn), q);
  p.scale = round_to(s32, sd, &p.scale_bits16);
  p.overflow = !is_finite_f32(p.scale);
  finish_params(p);
  // -mn >= 0 and is exact; for mn = +0 it is -0, and so is the product and
  // its rint: "t > 0" then picks +0, so the stored z is never -0.
  const float t = rint_f32(mul_f32(-mn, p.inv));
  const float z = t > q ? q : (t > 0.0f ? t : 0.0f);
  p.zero = round_to(z, sd, &p.zero_bits16);  // exact: an integer <= 255
  return p;
}

// Symmetric: amax is the largest |x| of the group's real elements.
QPACK_HD GroupParams params_sym(float amax, int bits, DType sd) {
  GroupParams p;
  const float q = float((1 << (bits - 1)) - 1);
  const float s32 = div_f32(amax, q);
  p.scale = round_to(s32, sd, &p.scale_bits16);
  p.zero = 0.0f;
  p.zero_bits16 = 0;
  p.overflow = !is_finite_f32(p.scale);
  finish_params(p);
  return p;
}

// Stored code of x: asymmetric 0..2^b-1; symmetric q + 2^(b-1), q in
// [-(2^(b-1)-1), 2^(b-1)-1]. A degenerate group (inv == 0) encodes every
// element as 0 (asymmetric) or as q = 0 (symmetric).
QPACK_HD uint32_t encode_asym(float x, const GroupParams& p, int bits) {
  const float t = rint_f32(mul_f32(sub_f32(x, p.zero), p.inv));
  const float q = float((1 << bits) - 1);
  const float c = t < 0.0f ? 0.0f : (t > q ? q : t);
  return uint32_t(c);
}
// Integer rule: round first, then add z (both integers of magnitude < 2^10,
// so the float addition is exact); adding z before rounding would round twice.
QPACK_HD uint32_t encode_asym_int(float x, const GroupParams& p, int bits) {
  const float t = add_f32(rint_f32(mul_f32(x, p.inv)), p.zero);
  const float q = float((1 << bits) - 1);
  const float c = t < 0.0f ? 0.0f : (t > q ? q : t);
  return uint32_t(c);
}
QPACK_HD uint32_t encode_sym(float x, const GroupParams& p, int bits) {
  const float t = rint_f32(mul_f32(x, p.inv));
  const float q = float((1 << (bits - 1)) - 1);
  const float c = t < -q ? -q : (t > q ? q : t);
  return uint32_t(int(c) + (1 << (bits - 1)));
}

// x_hat = fma(q, S, M) (§6): symmetric groups and the float zero-point rule.
QPACK_HD float decode(uint32_t code, float scale, float zero, bool symmetric, int bits) {
  const int q = symmetric ? int(code) - (1 << (bits - 1)) : int(code);
  return fma_f32(float(q), scale, zero);
}

// x_hat = fl(fl(q - z) * S) (§6): the integer zero-point rule. q - z is an
// exact integer in [-255, 255]; the product is exact for F16 and BF16 scales
// (at most 8 + 11 significant bits), so rounding it to the scale dtype gives
// what compressed-tensors computes there, (q - z) * s with one rounding.
QPACK_HD float decode_int(uint32_t code, float scale, float zero) {
  return mul_f32(sub_f32(float(code), zero), scale);
}

// Either rule, as a scheme says.
QPACK_HD float decode_scheme(uint32_t code, float scale, float zero, bool symmetric,
                             bool integer_zero, int bits) {
  return integer_zero ? decode_int(code, scale, zero) : decode(code, scale, zero, symmetric, bits);
}

}  // namespace qpack::spec
