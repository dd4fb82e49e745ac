// The per-group arithmetic of docs/quantization.md, written once for every
// implementation: the scalar reference, the SIMD path and the CUDA kernels
// include this header, so that scale and zero-point rounding cannot drift
// apart. Every step is one IEEE float32 operation rounded to nearest even;
// nothing here may be contracted into an FMA (host code builds with
// -ffp-contract=off; device code uses the explicit __f*_rn intrinsics).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "qpack/dtype.hpp"

namespace qpack {

QPACK_HD float qp_sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
QPACK_HD float qp_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
QPACK_HD float qp_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QPACK_HD float qp_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Round to nearest integer, ties to even (the default IEEE rounding mode).
QPACK_HD float qp_rint(float a) {
#if defined(__CUDA_ARCH__)
  return rintf(a);
#else
  return std::nearbyint(a);
#endif
}
// x_hat = q * s + m with a single rounding: the only fused operation in the spec.
QPACK_HD float qp_fma(float q, float s, float m) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(q, s, m);
#else
  return std::fma(q, s, m);
#endif
}
QPACK_HD bool qp_isfinite(float x) { return (f32_to_bits(x) & 0x7f800000u) != 0x7f800000u; }

// Rounds v to the scale dtype; returns the rounded value as float32 and its
// 16-bit pattern (F16/BF16; for F32 the pattern is unused).
QPACK_HD float qp_round_to(float v, DType d, uint16_t* bits16) {
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

constexpr float kQpMinNormal = 1.17549435082228750797e-38f;  // 2^-126

struct GroupParams {
  float scale;   // S: the stored scale, as float32
  float zero;    // M: the stored zero-point, as float32 (+0 for symmetric)
  float inv;     // fl(1 / S); 0 for a degenerate group (S == +0)
  uint16_t scale_bits16, zero_bits16;
  bool overflow; // S or M is not finite in the scale dtype
};

// Asymmetric: mn/mx are the min and max of the group's real elements.
QPACK_HD GroupParams qp_params_asym(float mn, float mx, int bits, DType sd) {
  GroupParams p;
  mn = qp_add(mn, 0.0f);  // -0 -> +0: the result must not depend on which zero was seen first
  mx = qp_add(mx, 0.0f);
  const float q = float((1 << bits) - 1);
  const float s32 = qp_div(qp_sub(mx, mn), q);
  p.scale = qp_round_to(s32, sd, &p.scale_bits16);
  p.zero = qp_round_to(mn, sd, &p.zero_bits16);
  p.overflow = !qp_isfinite(p.scale) || !qp_isfinite(p.zero);
  if (p.overflow || p.scale < kQpMinNormal) {
    p.scale = 0.0f;
    p.scale_bits16 = 0;
    p.inv = 0.0f;
  } else {
    p.inv = qp_div(1.0f, p.scale);
  }
  return p;
}

// Symmetric: amax is the largest |x| of the group's real elements.
QPACK_HD GroupParams qp_params_sym(float amax, int bits, DType sd) {
  GroupParams p;
  const float q = float((1 << (bits - 1)) - 1);
  const float s32 = qp_div(amax, q);
  p.scale = qp_round_to(s32, sd, &p.scale_bits16);
  p.zero = 0.0f;
  p.zero_bits16 = 0;
  p.overflow = !qp_isfinite(p.scale);
  if (p.overflow || p.scale < kQpMinNormal) {
    p.scale = 0.0f;
    p.scale_bits16 = 0;
    p.inv = 0.0f;
  } else {
    p.inv = qp_div(1.0f, p.scale);
  }
  return p;
}

// Stored code of x: asymmetric 0..2^b-1; symmetric q + 2^(b-1), q in
// [-(2^(b-1)-1), 2^(b-1)-1]. A degenerate group (inv == 0) encodes every
// element as 0 (asymmetric) or as q = 0 (symmetric).
QPACK_HD uint32_t qp_encode_asym(float x, const GroupParams& p, int bits) {
  const float t = qp_rint(qp_mul(qp_sub(x, p.zero), p.inv));
  const float q = float((1 << bits) - 1);
  const float c = t < 0.0f ? 0.0f : (t > q ? q : t);
  return uint32_t(c);
}
QPACK_HD uint32_t qp_encode_sym(float x, const GroupParams& p, int bits) {
  const float t = qp_rint(qp_mul(x, p.inv));
  const float q = float((1 << (bits - 1)) - 1);
  const float c = t < -q ? -q : (t > q ? q : t);
  return uint32_t(int(c) + (1 << (bits - 1)));
}

QPACK_HD float qp_decode(uint32_t code, float scale, float zero, bool symmetric, int bits) {
  const int q = symmetric ? int(code) - (1 << (bits - 1)) : int(code);
  return qp_fma(float(q), scale, zero);
}

}  // namespace qpack
