// ggml's legacy block types with AVX2: eight blocks at a time, one block
// per vector lane. Each lane runs the scalar reference's steps for its own
// block in the reference's order (the max/min scans keep their first-seen
// ties, every multiply and add is its own rounding, no FMA: the functions'
// target has none), so the bytes are the reference's by construction; the
// tests compare them anyway. Groups of eight blocks holding a NaN or an Inf
// go through the scalar reference (the hardware's F16 conversion quiets a
// signalling NaN, the spec's does not; finite values convert alike). Internal to converter/src;
// compiled in ggml_blocks_cpu.cpp.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_legacy.hpp"

namespace qpack::cpu {
namespace {

namespace gl = spec::ggml;

#define QPACK_GGML_AVX2 __attribute__((target("avx2,f16c")))

constexpr int kLanes = 8;

// Eight rows of eight floats in, their transpose out (r[k] becomes element
// k of every row): the usual unpack / shuffle / lane-permute network.
QPACK_GGML_AVX2 inline void transpose8(__m256 (&r)[kLanes]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Columns of the eight blocks starting at block `b0`: xt[j] holds element j
// of each block, lane b for block b0 + b, exactly as float. False when any
// element is not finite.
template <DType S>
QPACK_GGML_AVX2 inline bool load_eight_blocks(const uint8_t* src, int64_t b0,
                                              __m256 (&xt)[gl::kBlockElements]) {
  __m256 nonfinite = _mm256_setzero_ps();
  for (int j0 = 0; j0 < gl::kBlockElements; j0 += kLanes) {
    __m256 r[kLanes];
    for (int b = 0; b < kLanes; ++b) {
      const int64_t e = (b0 + b) * gl::kBlockElements + j0;
      if constexpr (S == DType::F16) {
        r[b] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * e)));
      } else if constexpr (S == DType::BF16) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * e));
        r[b] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      } else {
        r[b] = _mm256_loadu_ps(reinterpret_cast<const float*>(src + 4 * e));
      }
      // v - v is 0 for finite v, NaN for NaN and Inf.
      nonfinite =
          _mm256_or_ps(nonfinite, _mm256_cmp_ps(_mm256_sub_ps(r[b], r[b]), r[b], _CMP_UNORD_Q));
    }
    transpose8(r);
    for (int k = 0; k < kLanes; ++k) xt[j0 + k] = r[k];
  }
  return _mm256_movemask_ps(nonfinite) == 0;
}

// ggml's `d ? 1.0f/d : 0.0f` per lane (a NaN d is "true", as in C).
QPACK_GGML_AVX2 inline __m256 reciprocal_or_zero8(__m256 d) {
  const __m256 nonzero = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_UQ);
  return _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(1.0f), d));
}

QPACK_GGML_AVX2 inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// Stores the eight lanes of `v` rounded to f16 (nearest even) at `out` +
// lane * `stride` + `offset`.
QPACK_GGML_AVX2 inline void store_f16_lanes(__m256 v, uint8_t* out, int stride, int offset) {
  alignas(16) uint16_t h[kLanes];
  _mm_store_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  for (int b = 0; b < kLanes; ++b) std::memcpy(out + b * stride + offset, &h[b], 2);
}

// trunc(t) as int per lane, 0 where t is not finite (the reference's
// truncate_code), then at most `cap` (no cap: cap < 0).
QPACK_GGML_AVX2 inline __m256i truncate_codes(__m256 t, int cap) {
  const __m256 finite = _mm256_cmp_ps(_mm256_sub_ps(t, t), _mm256_setzero_ps(), _CMP_EQ_OQ);
  __m256i c = _mm256_and_si256(_mm256_castps_si256(finite), _mm256_cvttps_epi32(t));
  if (cap >= 0) c = _mm256_min_epi32(c, _mm256_set1_epi32(cap));
  return c;
}

// Sixteen rows of codes (row j: byte j of each lane's block, one int32 per
// lane, within the byte's range) to 16 consecutive bytes per block at
// out + lane * stride + offset. Packing to bytes leaves, in each 128-bit
// half, a 4x4 tile per four rows (row-major, four lanes); a byte shuffle
// turns each tile lane-major, and a 4x4 transpose of 32-bit words across
// the four packed vectors puts each block's 16 bytes together. `Signed`:
// the bytes are int8 (Q8_0's codes), else uint8.
template <bool Signed>
QPACK_GGML_AVX2 inline void store_rows_as_blocks(const __m256i (&rows)[16], uint8_t* out,
                                                 int stride, int offset) {
  const __m256i tile = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4,
                                        8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m256i q[4];
  for (int m = 0; m < 4; ++m) {
    const __m256i lo = _mm256_packs_epi32(rows[4 * m], rows[4 * m + 1]);
    const __m256i hi = _mm256_packs_epi32(rows[4 * m + 2], rows[4 * m + 3]);
    const __m256i bytes = Signed ? _mm256_packs_epi16(lo, hi) : _mm256_packus_epi16(lo, hi);
    q[m] = _mm256_shuffle_epi8(bytes, tile);  // per half: lane k's rows 4m..4m+3 at word k
  }
  const __m256i t0 = _mm256_unpacklo_epi32(q[0], q[1]), t1 = _mm256_unpackhi_epi32(q[0], q[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(q[2], q[3]), t3 = _mm256_unpackhi_epi32(q[2], q[3]);
  const __m256i r[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2),
                        _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
  for (int k = 0; k < 4; ++k) {
    // Half h of r[k] is the block of lane 4h + k.
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k * stride + offset),
                     _mm256_castsi256_si128(r[k]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (4 + k) * stride + offset),
                     _mm256_extracti128_si256(r[k], 1));
  }
}

// Codes c[j] (lane = block) packed into each block: element j in the low
// nibble of byte j, element j+16 in the high nibble, and for five-bit codes
// bit 4 of element j in bit j of the little-endian qh (the reference's
// pack_nibbles / pack_five_bits).
QPACK_GGML_AVX2 inline void pack_lanes(const __m256i (&c)[gl::kBlockElements], bool five_bits,
                                       uint8_t* out, int stride, int qh_offset, int qs_offset) {
  const __m256i low4 = _mm256_set1_epi32(0x0f);
  __m256i rows[16];
  for (int j = 0; j < gl::kHalfBlock; ++j)
    rows[j] = _mm256_or_si256(_mm256_and_si256(c[j], low4),
                              _mm256_slli_epi32(_mm256_and_si256(c[j + gl::kHalfBlock], low4), 4));
  store_rows_as_blocks<false>(rows, out, stride, qs_offset);
  if (five_bits) {
    __m256i high = _mm256_setzero_si256();
    const __m256i one = _mm256_set1_epi32(1);
    for (int j = 0; j < gl::kBlockElements; ++j)
      high = _mm256_or_si256(
          high, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(c[j], 4), one), j));
    alignas(32) uint32_t h[kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(h), high);
    for (int b = 0; b < kLanes; ++b)
      for (int i = 0; i < 4; ++i)
        out[b * stride + qh_offset + i] = uint8_t((h[b] >> (8 * i)) & 0xffu);
  }
}

// Q4_0 / Q5_0: d = signed absmax / -(2^(bits-1)), code = min(cap, trunc(x*id + bias)).
QPACK_GGML_AVX2 inline void quantize_eight_symmetric(const __m256 (&x)[gl::kBlockElements],
                                                     float divisor, float bias, int cap,
                                                     bool five_bits, uint8_t* out, int stride) {
  __m256 amax = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
  for (int j = 0; j < gl::kBlockElements; ++j) {
    const __m256 v = x[j];
    const __m256 a = abs8(v);
    const __m256 larger = _mm256_cmp_ps(amax, a, _CMP_LT_OQ);  // amax < a
    amax = _mm256_blendv_ps(amax, a, larger);
    mx = _mm256_blendv_ps(mx, v, larger);
  }
  const __m256 d = _mm256_div_ps(mx, _mm256_set1_ps(divisor));
  const __m256 id = reciprocal_or_zero8(d);
  store_f16_lanes(d, out, stride, 0);
  __m256i c[gl::kBlockElements];
  for (int j = 0; j < gl::kBlockElements; ++j)
    c[j] = truncate_codes(_mm256_add_ps(_mm256_mul_ps(x[j], id), _mm256_set1_ps(bias)), cap);
  pack_lanes(c, five_bits, out, stride, 2, five_bits ? 6 : 2);
}

// Q4_1 / Q5_1: d = (max - min) / levels, m = min, code = trunc((x - min)*id + 0.5).
QPACK_GGML_AVX2 inline void quantize_eight_min_max(const __m256 (&x)[gl::kBlockElements],
                                                   float levels, int cap, bool five_bits,
                                                   uint8_t* out, int stride) {
  __m256 lo = _mm256_set1_ps(3.40282346638528859812e+38f);
  __m256 hi = _mm256_set1_ps(-3.40282346638528859812e+38f);
  for (int j = 0; j < gl::kBlockElements; ++j) {
    const __m256 v = x[j];
    lo = _mm256_blendv_ps(lo, v, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
    hi = _mm256_blendv_ps(hi, v, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
  }
  const __m256 d = _mm256_div_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(levels));
  const __m256 id = reciprocal_or_zero8(d);
  store_f16_lanes(d, out, stride, 0);
  store_f16_lanes(lo, out, stride, 2);
  __m256i c[gl::kBlockElements];
  for (int j = 0; j < gl::kBlockElements; ++j)
    c[j] = truncate_codes(
        _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x[j], lo), id), _mm256_set1_ps(0.5f)), cap);
  pack_lanes(c, five_bits, out, stride, 4, five_bits ? 8 : 4);
}

// Q8_0: d = max|x| / 127 (ggml's MAX(amax, |v|)), code = roundf(x*id).
QPACK_GGML_AVX2 inline void quantize_eight_q8_0(const __m256 (&x)[gl::kBlockElements], uint8_t* out,
                                                int stride) {
  __m256 amax = _mm256_setzero_ps();
  for (int j = 0; j < gl::kBlockElements; ++j) {
    const __m256 a = abs8(x[j]);
    amax = _mm256_blendv_ps(a, amax, _mm256_cmp_ps(amax, a, _CMP_GT_OQ));  // amax > a ? amax : a
  }
  const __m256 d = _mm256_div_ps(amax, _mm256_set1_ps(127.0f));
  const __m256 id = reciprocal_or_zero8(d);
  store_f16_lanes(d, out, stride, 0);
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256i rows[2][16];
  for (int j = 0; j < gl::kBlockElements; ++j) {
    const __m256 t = _mm256_mul_ps(x[j], id);
    // roundf: trunc, then one step away from zero when the dropped part is
    // at least one half (t - trunc(t) is exact).
    const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = abs8(_mm256_sub_ps(t, r));
    const __m256 step =
        _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                      _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(t, sign_bit)));
    rows[j / 16][j % 16] = truncate_codes(_mm256_add_ps(r, step), -1);  // |code| <= 127
  }
  store_rows_as_blocks<true>(rows[0], out, stride, 2);
  store_rows_as_blocks<true>(rows[1], out, stride, 18);
}

// Blocks [b0, b0 + 8) of `type` into out + b0 * block bytes; false, writing
// nothing, when one of their elements is not finite (the caller then runs
// the scalar reference, with the spec's own conversions).
template <DType S>
QPACK_GGML_AVX2 inline bool quantize_eight_blocks(gl::GgmlLegacyType type, const uint8_t* src,
                                                  int64_t b0, uint8_t* out) {
  __m256 x[gl::kBlockElements];
  const int stride = gl::block_bytes(type);
  uint8_t* o = out + b0 * stride;
  if (!load_eight_blocks<S>(src, b0, x)) return false;
  switch (type) {
    case gl::GgmlLegacyType::Q4_0:
      quantize_eight_symmetric(x, -8.0f, 8.5f, 15, false, o, stride);
      break;
    case gl::GgmlLegacyType::Q5_0:
      quantize_eight_symmetric(x, -16.0f, 16.5f, 31, true, o, stride);
      break;
    case gl::GgmlLegacyType::Q4_1:
      quantize_eight_min_max(x, 15.0f, 15, false, o, stride);
      break;
    case gl::GgmlLegacyType::Q5_1:
      quantize_eight_min_max(x, 31.0f, -1, true, o, stride);
      break;
    case gl::GgmlLegacyType::Q8_0:
      quantize_eight_q8_0(x, o, stride);
      break;
  }
  return true;
}

}  // namespace
}  // namespace qpack::cpu
