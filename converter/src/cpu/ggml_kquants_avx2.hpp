// ggml's K-quant fits for eight sub-blocks at once with AVX2, one sub-block
// per lane: the asymmetric fit (spec::ggml::kquant::fit_scale_and_min,
// docs/quantization.md §K3) for Q4_K's and Q5_K's eight sub-blocks of a
// super-block and Q2_K's sixteen in two passes, and Q6_K's symmetric fit
// (fit_symmetric_scale, §K4) in two passes. Every lane runs the scalar rule's operations
// in the scalar rule's order (its sums run over its own elements in index
// order; adds, multiplies, divisions and square roots are the IEEE-rounded
// AVX instructions, never fused: the target has no FMA), and the branches
// become per-lane blends, so the results are the reference's bits. The rest
// of each super-block (scale quantization, codes again, packing) is the
// spec's scalar code. Internal to converter/src; compiled in
// ggml_kquants_cpu.cpp.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "qpack/spec/ggml_kquants.hpp"

namespace qpack::cpu {
namespace {

#define QPACK_KQUANT_AVX2 __attribute__((target("avx2")))

namespace kq = spec::ggml::kquant;

// ggml's nearest_int per lane: the low 23 bits of v + 1.5 * 2^23, less 2^22;
// 0 for a NaN lane, as the spec's nearest_int says.
QPACK_KQUANT_AVX2 inline __m256i nearest_int8(__m256 v) {
  const __m256i b = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.0f)));
  const __m256i l = _mm256_sub_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x007fffff)),
                                     _mm256_set1_epi32(0x00400000));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_andnot_si256(nan, l);
}

// a where mask is clear, b where it is set.
QPACK_KQUANT_AVX2 inline __m256 select(__m256 a, __m256 b, __m256 mask) {
  return _mm256_blendv_ps(a, b, mask);
}

// The error term of one element: |diff| (mad) or diff^2, diff =
// fl(fl(fl(scale * L) + min) - x).
QPACK_KQUANT_AVX2 inline __m256 error_term(__m256 scale, __m256 lf, __m256 mn, __m256 x, bool mad) {
  const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, lf), mn), x);
  return mad ? _mm256_andnot_ps(_mm256_set1_ps(-0.0f), diff) : _mm256_mul_ps(diff, diff);
}

// fit_scale_and_min over eight sub-blocks of n (<= 32) elements: xt[i] and
// wt[i] hold element i and its weight of the eight sub-blocks (lane j =
// sub-block j). Writes lane j's codes to L[j * stride + i], its scale and
// min to scales[j], mins[j].
QPACK_KQUANT_AVX2 inline void fit_scale_and_min_8(const __m256* xt, const __m256* wt, int n,
                                                  int nmax, float rmin, float rdelta, int nstep,
                                                  bool mad, uint8_t* L, int stride, float* scales,
                                                  float* mins) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256i zero_i = _mm256_setzero_si256();
  const __m256i nmax_i = _mm256_set1_epi32(nmax);
  const __m256 nmax_f = _mm256_set1_ps(float(nmax));
  __m256 mn = xt[0], mx = xt[0];
  __m256 sum_w = wt[0];
  __m256 sum_x = _mm256_mul_ps(sum_w, xt[0]);
  for (int i = 1; i < n; ++i) {
    mn = select(mn, xt[i], _mm256_cmp_ps(xt[i], mn, _CMP_LT_OQ));
    mx = select(mx, xt[i], _mm256_cmp_ps(xt[i], mx, _CMP_GT_OQ));
    sum_w = _mm256_add_ps(sum_w, wt[i]);
    sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(wt[i], xt[i]));
  }
  mn = select(mn, zero, _mm256_cmp_ps(mn, zero, _CMP_GT_OQ));
  // Lanes with max == min keep codes 0, scale 0, min -mn (the rule's early
  // return); their other results below are discarded.
  const __m256 flat = _mm256_cmp_ps(mx, mn, _CMP_EQ_OQ);
  const __m256 flat_min = mn;

  __m256i Lv[32];
  __m256i Aux[32];
  __m256 iscale = _mm256_div_ps(nmax_f, _mm256_sub_ps(mx, mn));
  __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
  __m256 best = zero;
  for (int i = 0; i < n; ++i) {
    const __m256i l = nearest_int8(_mm256_mul_ps(iscale, _mm256_sub_ps(xt[i], mn)));
    Lv[i] = _mm256_max_epi32(zero_i, _mm256_min_epi32(nmax_i, l));
    const __m256 e = error_term(scale, _mm256_cvtepi32_ps(Lv[i]), mn, xt[i], mad);
    best = _mm256_add_ps(best, _mm256_mul_ps(wt[i], e));
  }
  for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
    const float step = rmin + rdelta * float(is);  // one rounding each, as the rule
    iscale = _mm256_div_ps(_mm256_add_ps(_mm256_set1_ps(step), nmax_f), _mm256_sub_ps(mx, mn));
    __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      const __m256i l = nearest_int8(_mm256_mul_ps(iscale, _mm256_sub_ps(xt[i], mn)));
      Aux[i] = _mm256_max_epi32(zero_i, _mm256_min_epi32(nmax_i, l));
      const __m256 lf = _mm256_cvtepi32_ps(Aux[i]);
      const __m256 wl = _mm256_mul_ps(wt[i], lf);
      sum_l = _mm256_add_ps(sum_l, wl);
      sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
      sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xt[i]));
    }
    const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
    const __m256 d_pos = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
    if (_mm256_movemask_ps(d_pos) == 0) continue;
    __m256 this_scale =
        _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
    __m256 this_min =
        _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
    const __m256 min_pos = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
    this_min = select(this_min, zero, min_pos);
    this_scale = select(this_scale, _mm256_div_ps(sum_xl, sum_l2), min_pos);
    __m256 cur = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 e = error_term(this_scale, _mm256_cvtepi32_ps(Aux[i]), this_min, xt[i], mad);
      cur = _mm256_add_ps(cur, _mm256_mul_ps(wt[i], e));
    }
    const __m256 win = _mm256_and_ps(d_pos, _mm256_cmp_ps(cur, best, _CMP_LT_OQ));
    if (_mm256_movemask_ps(win) == 0) continue;
    const __m256i win_i = _mm256_castps_si256(win);
    for (int i = 0; i < n; ++i) Lv[i] = _mm256_blendv_epi8(Lv[i], Aux[i], win_i);
    best = select(best, cur, win);
    scale = select(scale, this_scale, win);
    mn = select(mn, this_min, win);
  }
  scale = select(scale, zero, flat);
  mn = select(mn, flat_min, flat);
  const __m256 the_min = _mm256_xor_ps(mn, _mm256_set1_ps(-0.0f));  // -mn, exactly
  _mm256_storeu_ps(scales, scale);
  _mm256_storeu_ps(mins, the_min);
  const __m256i flat_i = _mm256_castps_si256(flat);
  alignas(32) int32_t lanes[8];
  for (int i = 0; i < n; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                       _mm256_blendv_epi8(Lv[i], zero_i, flat_i));
    for (int j = 0; j < 8; ++j) L[j * stride + i] = uint8_t(lanes[j]);
  }
}

// Element i of each of eight consecutive sub-blocks of n elements at x.
QPACK_KQUANT_AVX2 inline void transpose_sub_blocks(const float* x, int n, __m256* xt) {
  const __m256i idx =
      _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
  for (int i = 0; i < n; ++i) xt[i] = _mm256_i32gather_ps(x + i, idx, 4);
}

// Q4_K (nmax 15, rmin -1, 20 steps) and Q5_K (nmax 31, rmin -0.5, 15
// steps): the spec's k4_fits with the eight fits in lanes. Codes into L.
QPACK_KQUANT_AVX2 inline void k4_fits_avx2(const float* x, int nmax, float rmin, int nstep,
                                           uint8_t* L, float* scales, float* mins) {
  __m256 xt[32], wt[32];
  transpose_sub_blocks(x, 32, xt);
  __m256 sum_x2 = _mm256_setzero_ps();
  for (int l = 0; l < 32; ++l) sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(xt[l], xt[l]));
  const __m256 av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.0f)));
  for (int l = 0; l < 32; ++l)
    wt[l] = _mm256_add_ps(av_x, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), xt[l]));
  fit_scale_and_min_8(xt, wt, 32, nmax, rmin, 0.1f, nstep, false, L, 32, scales, mins);
}

// Q2_K: the spec's q2_k_fits, sub-blocks 0-7 and 8-15 in two passes.
QPACK_KQUANT_AVX2 inline void q2_k_fits_avx2(const float* x, uint8_t* L, float* scales,
                                             float* mins) {
  for (int half = 0; half < 2; ++half) {
    __m256 xt[16], wt[16];
    transpose_sub_blocks(x + 128 * half, 16, xt);
    for (int l = 0; l < 16; ++l) wt[l] = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), xt[l]);
    fit_scale_and_min_8(xt, wt, 16, 3, -0.5f, 0.1f, 15, true, L + 128 * half, 16, scales + 8 * half,
                        mins + 8 * half);
  }
}

// fit_symmetric_scale (§K4, Q6_K: n 16, nmax 32) over eight sub-blocks:
// xt[i] holds element i of each. Lane j's codes (0..63, or 0 for a zero
// sub-block) go to L[16 j + i], its scale to scales[j].
QPACK_KQUANT_AVX2 inline void fit_symmetric_scale_8(const __m256* xt, int8_t* L, float* scales) {
  constexpr int n = 16;
  constexpr int nmax = 32;
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i lo = _mm256_set1_epi32(-nmax), hi = _mm256_set1_epi32(nmax - 1);
  __m256 amax = zero, max = zero;
  for (int i = 0; i < n; ++i) {
    const __m256 ax = _mm256_andnot_ps(sign, xt[i]);
    const __m256 m = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
    amax = select(amax, ax, m);
    max = select(max, xt[i], m);
  }
  // Lanes whose largest |x| is below 1e-15 give codes 0 and scale 0.
  const __m256 tiny = _mm256_cmp_ps(amax, _mm256_set1_ps(kq::kGroupMaxEps), _CMP_LT_OQ);
  __m256 w[n];
  for (int i = 0; i < n; ++i) w[i] = _mm256_mul_ps(xt[i], xt[i]);
  __m256i Lv[n], cand[n];
  // The sums of one candidate iscale; its clamped codes into l.
  auto sums = [&](__m256 iscale, __m256i * l, __m256 * sumlx, __m256 * suml2)
      __attribute__((target("avx2"))) {
    *sumlx = zero;
    *suml2 = zero;
    for (int i = 0; i < n; ++i) {
      l[i] = _mm256_max_epi32(lo, _mm256_min_epi32(hi, nearest_int8(_mm256_mul_ps(iscale, xt[i]))));
      const __m256 lf = _mm256_cvtepi32_ps(l[i]);
      *sumlx = _mm256_add_ps(*sumlx, _mm256_mul_ps(_mm256_mul_ps(w[i], xt[i]), lf));
      *suml2 = _mm256_add_ps(*suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], lf), lf));
    }
  };
  __m256 sumlx, suml2;
  sums(_mm256_div_ps(_mm256_set1_ps(float(-nmax)), max), Lv, &sumlx, &suml2);
  // suml2 ? sumlx / suml2 : 0 (C's truth: NaN counts as true).
  __m256 scale = select(zero, _mm256_div_ps(sumlx, suml2), _mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ));
  __m256 best = _mm256_mul_ps(scale, sumlx);
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float num = -(float(nmax) + 0.1f * float(is));  // two roundings, then an exact negation
    sums(_mm256_div_ps(_mm256_set1_ps(num), max), cand, &sumlx, &suml2);
    const __m256 win = _mm256_and_ps(
        _mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
        _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
    if (_mm256_movemask_ps(win) == 0) continue;
    const __m256i win_i = _mm256_castps_si256(win);
    for (int i = 0; i < n; ++i) Lv[i] = _mm256_blendv_epi8(Lv[i], cand[i], win_i);
    const __m256 s = _mm256_div_ps(sumlx, suml2);
    scale = select(scale, s, win);
    best = select(best, _mm256_mul_ps(s, sumlx), win);
  }
  _mm256_storeu_ps(scales, select(scale, zero, tiny));
  const __m256i tiny_i = _mm256_castps_si256(tiny);
  alignas(32) int32_t lanes[8];
  for (int i = 0; i < n; ++i) {
    const __m256i code = _mm256_add_epi32(Lv[i], _mm256_set1_epi32(nmax));
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                       _mm256_blendv_epi8(code, _mm256_setzero_si256(), tiny_i));
    for (int j = 0; j < 8; ++j) L[16 * j + i] = int8_t(lanes[j]);
  }
}

QPACK_KQUANT_AVX2 inline void quantize_block_q6_k_avx2(const float* x, uint8_t* out) {
  int8_t L[spec::ggml::kSuperBlockElements];
  float scales[16];
  for (int half = 0; half < 2; ++half) {
    __m256 xt[16];
    transpose_sub_blocks(x + 128 * half, 16, xt);
    fit_symmetric_scale_8(xt, L + 128 * half, scales + 8 * half);
  }
  kq::q6_k_block_from_fits(x, scales, L, out);
}

QPACK_KQUANT_AVX2 inline void quantize_block_q4_k_avx2(const float* x, uint8_t* out) {
  uint8_t L[spec::ggml::kSuperBlockElements];
  float scales[8], mins[8];
  k4_fits_avx2(x, 15, -1.0f, 20, L, scales, mins);
  kq::k4_scales_and_codes_from_fits(x, 15, scales, mins, out, L);
  kq::pack_q4_k_codes(L, out);
}
QPACK_KQUANT_AVX2 inline void quantize_block_q5_k_avx2(const float* x, uint8_t* out) {
  uint8_t L[spec::ggml::kSuperBlockElements];
  float scales[8], mins[8];
  k4_fits_avx2(x, 31, -0.5f, 15, L, scales, mins);
  kq::k4_scales_and_codes_from_fits(x, 31, scales, mins, out, L);
  kq::pack_q5_k_codes(L, out);
}
QPACK_KQUANT_AVX2 inline void quantize_block_q2_k_avx2(const float* x, uint8_t* out) {
  uint8_t L[spec::ggml::kSuperBlockElements];
  float scales[16], mins[16];
  q2_k_fits_avx2(x, L, scales, mins);
  kq::q2_k_block_from_fits(x, scales, mins, L, out);
}

}  // namespace
}  // namespace qpack::cpu
