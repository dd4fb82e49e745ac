// The two heaviest steps of two-level scales (quant_two_level_avx2.hpp) for
// a batch of 16 groups with AVX-512 (F, BW, DQ, VL): ggml's make_qkx2_quants
// with unit weights and the minimum kept <= 0, and the binary64 group
// error. One 16-lane vector per element index where AVX2 needs two, per-lane
// branches as mask registers; the same operations in the same order per
// lane, so the same bits (quant_two_level_avx2.hpp says why each step is
// exact). The batch layout is AVX2's: xs[k * 16 + l]. Internal to
// converter/src; compiled in quant_two_level.cpp.
#pragma once

#include "cpu/quant_search_avx512.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see quant_search_avx512.hpp

namespace qpack::cpu {
namespace {

constexpr int kTwoLevelLanes512 = 16;

// search_scale_and_min_lanes<2> of quant_two_level_avx2.hpp.
QPACK_AVX512 inline void search_scale_and_min16(const float* xs, int64_t n, int nmax, float* ls,
                                                float* scale_out, float* min_out) {
  constexpr int W = kTwoLevelLanes512;
  const __m512i vnmax = _mm512_set1_epi32(nmax);
  const __m512 zero = _mm512_setzero_ps();
  __m512 mn = _mm512_loadu_ps(xs), mx = mn, sum_x = mn;
  for (int64_t k = 1; k < n; ++k) {
    const __m512 x = _mm512_loadu_ps(xs + k * W);
    mn = _mm512_min_ps(x, mn);
    mx = _mm512_max_ps(x, mx);
    sum_x = _mm512_add_ps(sum_x, x);
  }
  float sum_w_s = 1.0f;
  for (int64_t k = 1; k < n; ++k) sum_w_s = spec::add_f32(sum_w_s, 1.0f);
  const __m512 sum_w = _mm512_set1_ps(sum_w_s);
  mn = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, zero, _CMP_GT_OQ), zero);  // > 0 -> 0
  const __mmask16 constant = _mm512_cmp_ps_mask(mx, mn, _CMP_EQ_OQ);
  const __m512 iscale0 = _mm512_div_ps(_mm512_set1_ps(float(nmax)), _mm512_sub_ps(mx, mn));
  __m512 scale = _mm512_div_ps(_mm512_set1_ps(1.0f), iscale0);
  __m512 best = zero;
  for (int64_t k = 0; k < n; ++k) {
    const __m512 x = _mm512_loadu_ps(xs + k * W);
    const __m512 l =
        _mm512_cvtepi32_ps(search_code16(_mm512_mul_ps(iscale0, _mm512_sub_ps(x, mn)), vnmax));
    const __m512 diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale, l), mn), x);
    best = _mm512_add_ps(best, _mm512_mul_ps(diff, diff));
  }
  for (int is = 0; is <= spec::kSearchSteps; ++is) {
    const float num = spec::add_f32(
        spec::add_f32(spec::kSearchRmin, spec::mul_f32(spec::kSearchRdelta, float(is))),
        float(nmax));
    const __m512 iscale = _mm512_div_ps(_mm512_set1_ps(num), _mm512_sub_ps(mx, mn));
    __m512 sl = zero, sl2 = zero, sxl = zero;
    for (int64_t k = 0; k < n; ++k) {
      const __m512 x = _mm512_loadu_ps(xs + k * W);
      const __m512 l =
          _mm512_cvtepi32_ps(search_code16(_mm512_mul_ps(iscale, _mm512_sub_ps(x, mn)), vnmax));
      _mm512_storeu_ps(ls + k * W, l);
      sl = _mm512_add_ps(sl, l);
      sl2 = _mm512_add_ps(sl2, _mm512_mul_ps(l, l));
      sxl = _mm512_add_ps(sxl, _mm512_mul_ps(l, x));
    }
    const __m512 D = _mm512_sub_ps(_mm512_mul_ps(sum_w, sl2), _mm512_mul_ps(sl, sl));
    const __mmask16 ok = _mm512_cmp_ps_mask(D, zero, _CMP_GT_OQ) & __mmask16(~constant);
    if (ok == 0) continue;
    __m512 ts =
        _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sum_w, sxl), _mm512_mul_ps(sum_x, sl)), D);
    __m512 tm = _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sl2, sum_x), _mm512_mul_ps(sl, sxl)), D);
    const __mmask16 pos = _mm512_cmp_ps_mask(tm, zero, _CMP_GT_OQ);
    tm = _mm512_mask_mov_ps(tm, pos, zero);
    ts = _mm512_mask_mov_ps(ts, pos, _mm512_div_ps(sxl, sl2));
    __m512 cur = zero;
    for (int64_t k = 0; k < n; ++k) {
      const __m512 x = _mm512_loadu_ps(xs + k * W);
      const __m512 l = _mm512_loadu_ps(ls + k * W);
      const __m512 diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(ts, l), tm), x);
      cur = _mm512_add_ps(cur, _mm512_mul_ps(diff, diff));
    }
    const __mmask16 take = ok & _mm512_cmp_ps_mask(cur, best, _CMP_LT_OQ);
    best = _mm512_mask_mov_ps(best, take, cur);
    scale = _mm512_mask_mov_ps(scale, take, ts);
    mn = _mm512_mask_mov_ps(mn, take, tm);
  }
  _mm512_storeu_ps(scale_out, _mm512_mask_mov_ps(scale, constant, zero));
  _mm512_storeu_ps(min_out, mn);
}

// group_error_lanes<2> of quant_two_level_avx2.hpp, the parameters as arrays.
QPACK_AVX512 inline void group_error16(const float* xs, int64_t n, const float* scale,
                                       const float* zero, const float* inv, int bits, double* e) {
  constexpr int W = kTwoLevelLanes512;
  const __m512 q = _mm512_set1_ps(float(qmax_asym(bits)));
  const __m512 S = _mm512_loadu_ps(scale), Z = _mm512_loadu_ps(zero), I = _mm512_loadu_ps(inv);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t k = 0; k < n; ++k) error_terms16(_mm512_loadu_ps(xs + k * W), Z, I, S, q, lo, hi);
  _mm512_storeu_pd(e, lo);
  _mm512_storeu_pd(e + 8, hi);
}

}  // namespace
}  // namespace qpack::cpu

#pragma GCC diagnostic pop
