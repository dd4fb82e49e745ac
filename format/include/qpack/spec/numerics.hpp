// The IEEE operations the numeric spec is written in, one function per
// operation, for host and device alike. Every function is a single operation
// rounded to nearest even: host code builds with -ffp-contract=off, so `a + b`
// is one addition; device code calls the explicit __f*_rn / __d*_rn
// intrinsics, which nvcc never contracts or reassociates. Nothing here may
// become an FMA except the functions that say they are one.
//
// The whole spec (this folder) is header-only, C++17, and depends on nothing
// but the standard library, so that the scalar reference, the SIMD path, the
// CUDA kernels and the verifier all compile the same text.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define QPACK_HD __host__ __device__ __forceinline__
#else
#define QPACK_HD inline
#endif

namespace qpack::spec {

// ------------------------------------------------------------ bit patterns

QPACK_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
QPACK_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
QPACK_HD double f64_from_bits(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double v;
  std::memcpy(&v, &u, 8);
  return v;
#endif
}
QPACK_HD uint64_t f64_bits(double v) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(v));
#else
  uint64_t u;
  std::memcpy(&u, &v, 8);
  return u;
#endif
}

// ------------------------------------------------------------ binary32

QPACK_HD float sub_f32(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
QPACK_HD float add_f32(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
QPACK_HD float mul_f32(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QPACK_HD float div_f32(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Round to nearest integer, ties to even (the default IEEE rounding mode).
QPACK_HD float rint_f32(float a) {
#if defined(__CUDA_ARCH__)
  return rintf(a);
#else
  return std::nearbyint(a);
#endif
}
// The square root, correctly rounded (IEEE requires it of sqrtf and of sqrtss).
QPACK_HD float sqrt_f32(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
// q * s + m with a single rounding: the only fused float32 operation in the spec.
QPACK_HD float fma_f32(float q, float s, float m) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(q, s, m);
#else
  return std::fma(q, s, m);
#endif
}
// Round to nearest integer, ties away from zero (C's roundf): ggml's Q8_0
// rounds this way, not to even.
QPACK_HD float round_half_away_f32(float a) {
#if defined(__CUDA_ARCH__)
  return roundf(a);
#else
  return std::round(a);
#endif
}
// |a| by clearing the sign bit: exact, and -0 becomes +0 (C's fabsf).
QPACK_HD float abs_f32(float a) { return f32_from_bits(f32_bits(a) & 0x7fffffffu); }
QPACK_HD bool is_finite_f32(float x) { return (f32_bits(x) & 0x7f800000u) != 0x7f800000u; }

// Smallest normal binary32, 2^-126. A scale below it (after rounding to the
// scale dtype) makes a group degenerate: 1/S would overflow.
constexpr float kMinNormalF32 = 1.17549435082228750797e-38f;

// ------------------------------------------------------------ binary64

QPACK_HD double add_f64(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
QPACK_HD double sub_f64(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
QPACK_HD double mul_f64(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
// acc + x*y where x and y are binary32 values widened to double: their
// product has at most 48 significant bits, so it is exact in double, and a
// fused multiply-add (one rounding, of the sum) gives the same bits as the
// host's multiply-then-add (whose multiply does not round). The device saves
// an instruction per product; the host avoids a slow software fma.
QPACK_HD double add_exact_product_f64(double acc, double x, double y) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(x, y, acc);
#else
  return acc + x * y;
#endif
}
QPACK_HD double abs_f64(double v) { return f64_from_bits(f64_bits(v) & 0x7fffffffffffffffull); }
// 2^k as a double, k clamped to the normal range (exact).
QPACK_HD double pow2_f64(int k) {
  if (k < -1022) k = -1022;
  if (k > 1023) k = 1023;
  return f64_from_bits(static_cast<uint64_t>(k + 1023) << 52);
}

}  // namespace qpack::spec
