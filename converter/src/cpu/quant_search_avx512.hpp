// The scale-and-minimum search of docs/quantization.md §M2 for 32 groups at
// once with AVX-512 (F, BW, DQ, VL): the kernel of quant_search_avx2.hpp
// with 16 lanes per vector and per-lane branches as mask registers. The
// same operations in the same order per lane, so the same bytes (see that
// file for why each step is exact). Internal to converter/src
// (quant_cpu.cpp).
#pragma once

#include <immintrin.h>

#include "cpu/avx2_common.hpp"
#include "qpack/spec/group_methods.hpp"

// GCC 12 warns that the AVX-512 intrinsics' own _mm512_undefined_*()
// pass-through operands "may be used uninitialized" (a known false
// positive of its headers); nothing of ours is uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qpack::cpu {
namespace {

#define QPACK_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c,avx2")))

constexpr int kSearchLanes512 = 32;  // groups per batch: two vectors of 16

QPACK_AVX512 inline __m512i search_code16(__m512 v, __m512i nmax) {
  const __m512 t = _mm512_add_ps(v, _mm512_set1_ps(12582912.0f));
  __m512i r =
      _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(t), _mm512_set1_epi32(0x7fffff)),
                       _mm512_set1_epi32(0x400000));
  r = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), r);  // NaN -> 0
  return _mm512_max_epi32(_mm512_min_epi32(r, nmax), _mm512_setzero_si512());
}

QPACK_AVX512 inline __m512 encode_asym16(__m512 x, __m512 zero, __m512 inv, __m512 q) {
  const __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(x, zero), inv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), q);
}

QPACK_AVX512 inline void error_terms16(__m512 x, __m512 zero, __m512 inv, __m512 scale, __m512 q,
                                       __m512d& e_lo, __m512d& e_hi) {
  const __m512 xh = _mm512_fmadd_ps(encode_asym16(x, zero, inv, q), scale, zero);
  const __m512d d_lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xh)),
                                     _mm512_cvtps_pd(_mm512_castps512_ps256(x)));
  const __m512d d_hi = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(xh, 1)),
                                     _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
  e_lo = _mm512_add_pd(e_lo, _mm512_mul_pd(d_lo, d_lo));
  e_hi = _mm512_add_pd(e_hi, _mm512_mul_pd(d_hi, d_hi));
}

// params_asym_search for the 32 groups xs[k * 32 + l]; ls: n * 32 floats.
QPACK_AVX512 inline void search_params32(const float* xs, int64_t n, int bits, DType sd, float* ls,
                                         spec::GroupParams* params) {
  constexpr int V = 2, W = kSearchLanes512;
  const int nmax = int(qmax_asym(bits));
  const __m512i vnmax = _mm512_set1_epi32(nmax);
  __m512 mn[V], mx[V], sum_x[V];
  for (int v = 0; v < V; ++v) mn[v] = mx[v] = sum_x[v] = _mm512_loadu_ps(xs + 16 * v);
  for (int64_t k = 1; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m512 x = _mm512_loadu_ps(xs + k * W + 16 * v);
      mn[v] = _mm512_min_ps(x, mn[v]);
      mx[v] = _mm512_max_ps(x, mx[v]);
      sum_x[v] = _mm512_add_ps(sum_x[v], x);
    }
  float sum_w_s = 1.0f;
  for (int64_t k = 1; k < n; ++k) sum_w_s = spec::add_f32(sum_w_s, 1.0f);
  const __m512 sum_w = _mm512_set1_ps(sum_w_s);

  alignas(64) float mn_a[W], mx_a[W];
  for (int v = 0; v < V; ++v) {
    _mm512_store_ps(mn_a + 16 * v, mn[v]);
    _mm512_store_ps(mx_a + 16 * v, mx[v]);
  }
  spec::GroupParams rtn[W];
  __mmask16 live[V] = {0, 0};
  for (int l = 0; l < W; ++l) {
    rtn[l] = spec::params_asym(mn_a[l], mx_a[l], bits, sd);
    if (!rtn[l].overflow && !(mx_a[l] == mn_a[l])) live[l / 16] |= __mmask16(1u << (l % 16));
    params[l] = rtn[l];
  }
  if (!(live[0] | live[1])) return;

  __m512 iscale[V], scale[V], best[V];
  for (int v = 0; v < V; ++v) {
    iscale[v] = _mm512_div_ps(_mm512_set1_ps(float(nmax)), _mm512_sub_ps(mx[v], mn[v]));
    scale[v] = _mm512_div_ps(_mm512_set1_ps(1.0f), iscale[v]);
    best[v] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m512 x = _mm512_loadu_ps(xs + k * W + 16 * v);
      const __m512 l = _mm512_cvtepi32_ps(
          search_code16(_mm512_mul_ps(iscale[v], _mm512_sub_ps(x, mn[v])), vnmax));
      const __m512 diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale[v], l), mn[v]), x);
      best[v] = _mm512_add_ps(best[v], _mm512_mul_ps(diff, diff));
    }
  for (int is = 0; is <= spec::kSearchSteps; ++is) {
    const float num = spec::add_f32(
        spec::add_f32(spec::kSearchRmin, spec::mul_f32(spec::kSearchRdelta, float(is))),
        float(nmax));
    __m512 cis[V], sl[V], sl2[V], sxl[V];
    for (int v = 0; v < V; ++v) {
      cis[v] = _mm512_div_ps(_mm512_set1_ps(num), _mm512_sub_ps(mx[v], mn[v]));
      sl[v] = sl2[v] = sxl[v] = _mm512_setzero_ps();
    }
    for (int64_t k = 0; k < n; ++k)
      for (int v = 0; v < V; ++v) {
        const __m512 x = _mm512_loadu_ps(xs + k * W + 16 * v);
        const __m512 l = _mm512_cvtepi32_ps(
            search_code16(_mm512_mul_ps(cis[v], _mm512_sub_ps(x, mn[v])), vnmax));
        _mm512_storeu_ps(ls + k * W + 16 * v, l);
        sl[v] = _mm512_add_ps(sl[v], l);
        sl2[v] = _mm512_add_ps(sl2[v], _mm512_mul_ps(l, l));
        sxl[v] = _mm512_add_ps(sxl[v], _mm512_mul_ps(l, x));
      }
    __mmask16 ok[V];
    __m512 ts[V], tm[V];
    for (int v = 0; v < V; ++v) {
      const __m512 D = _mm512_sub_ps(_mm512_mul_ps(sum_w, sl2[v]), _mm512_mul_ps(sl[v], sl[v]));
      ok[v] = live[v] & _mm512_cmp_ps_mask(D, _mm512_setzero_ps(), _CMP_GT_OQ);
      ts[v] = _mm512_div_ps(
          _mm512_sub_ps(_mm512_mul_ps(sum_w, sxl[v]), _mm512_mul_ps(sum_x[v], sl[v])), D);
      tm[v] = _mm512_div_ps(
          _mm512_sub_ps(_mm512_mul_ps(sl2[v], sum_x[v]), _mm512_mul_ps(sl[v], sxl[v])), D);
    }
    if (!(ok[0] | ok[1])) continue;
    __m512 cur[V];
    for (int v = 0; v < V; ++v) cur[v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; ++k)
      for (int v = 0; v < V; ++v) {
        const __m512 x = _mm512_loadu_ps(xs + k * W + 16 * v);
        const __m512 l = _mm512_loadu_ps(ls + k * W + 16 * v);
        const __m512 diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(ts[v], l), tm[v]), x);
        cur[v] = _mm512_add_ps(cur[v], _mm512_mul_ps(diff, diff));
      }
    for (int v = 0; v < V; ++v) {
      const __mmask16 take = ok[v] & _mm512_cmp_ps_mask(cur[v], best[v], _CMP_LT_OQ);
      best[v] = _mm512_mask_blend_ps(take, best[v], cur[v]);
      scale[v] = _mm512_mask_blend_ps(take, scale[v], ts[v]);
      mn[v] = _mm512_mask_blend_ps(take, mn[v], tm[v]);
    }
  }

  alignas(64) float sc_a[W], of_a[W];
  for (int v = 0; v < V; ++v) {
    _mm512_store_ps(sc_a + 16 * v, scale[v]);
    _mm512_store_ps(of_a + 16 * v, mn[v]);
  }
  spec::GroupParams cand[W];
  alignas(64) float c_zero[W], c_inv[W], c_scale[W], r_zero[W], r_inv[W], r_scale[W];
  bool use[W];
  bool any_use = false;
  for (int l = 0; l < W; ++l) {
    const spec::Candidate c = spec::candidate_params(sc_a[l], of_a[l], sd);
    use[l] = ((live[l / 16] >> (l % 16)) & 1) && c.valid;
    any_use = any_use || use[l];
    cand[l] = use[l] ? c.p : rtn[l];
    c_zero[l] = cand[l].zero;
    c_inv[l] = cand[l].inv;
    c_scale[l] = cand[l].scale;
    r_zero[l] = rtn[l].zero;
    r_inv[l] = rtn[l].inv;
    r_scale[l] = rtn[l].scale;
  }
  if (!any_use) return;
  const __m512 q = _mm512_set1_ps(float(nmax));
  __m512d ec[2 * V], er[2 * V];
  for (int h = 0; h < 2 * V; ++h) ec[h] = er[h] = _mm512_setzero_pd();
  __m512 cz[V], ci[V], cs[V], rz[V], ri[V], rs[V];
  for (int v = 0; v < V; ++v) {
    cz[v] = _mm512_load_ps(c_zero + 16 * v);
    ci[v] = _mm512_load_ps(c_inv + 16 * v);
    cs[v] = _mm512_load_ps(c_scale + 16 * v);
    rz[v] = _mm512_load_ps(r_zero + 16 * v);
    ri[v] = _mm512_load_ps(r_inv + 16 * v);
    rs[v] = _mm512_load_ps(r_scale + 16 * v);
  }
  for (int64_t k = 0; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m512 x = _mm512_loadu_ps(xs + k * W + 16 * v);
      error_terms16(x, cz[v], ci[v], cs[v], q, ec[2 * v], ec[2 * v + 1]);
      error_terms16(x, rz[v], ri[v], rs[v], q, er[2 * v], er[2 * v + 1]);
    }
  alignas(64) double ec_a[W], er_a[W];
  for (int h = 0; h < 2 * V; ++h) {
    _mm512_store_pd(ec_a + 8 * h, ec[h]);
    _mm512_store_pd(er_a + 8 * h, er[h]);
  }
  for (int l = 0; l < W; ++l)
    if (use[l] && ec_a[l] < er_a[l]) params[l] = cand[l];
}

template <DType T>
QPACK_AVX512 inline __m512 load16_f32(const uint8_t* base, int64_t elem) {
  if constexpr (T == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 2 * elem)));
  } else if constexpr (T == DType::BF16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 2 * elem));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(base + 4 * elem));
  }
}

// The 32 groups' elements as xs[k * 32 + l] (see gather16).
template <DType T>
QPACK_AVX512 bool gather32(const QuantInput& in, const GroupLayout& L, NonFinitePolicy policy,
                           int64_t o, int64_t g, int64_t i0, int64_t p0, float* xs) {
  constexpr int W = kSearchLanes512;
  const int64_t len = L.group_len(g);
  const bool zero_nf = policy == NonFinitePolicy::Zero;
  if (L.inner >= W) {
    __mmask16 bad = 0;
    const int64_t e0 = (o * L.axis_len + g * L.group_size) * L.inner + i0;
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    for (int64_t k = 0; k < len; ++k)
      for (int v = 0; v < 2; ++v) {
        __m512 x = load16_f32<T>(in.data, e0 + k * L.inner + 16 * v);
        const __m512 ax = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), abs_mask));
        const __mmask16 nf = _mm512_cmp_ps_mask(ax, inf, _CMP_NLT_UQ);
        bad |= nf;
        if (zero_nf) x = _mm512_maskz_mov_ps(__mmask16(~nf), x);
        _mm512_storeu_ps(xs + k * W + 16 * v, x);
      }
    return zero_nf || bad == 0;
  }
  for (int l = 0; l < W; ++l) {
    const int64_t p = p0 + l, ol = p / L.groups_per_axis, gl = p % L.groups_per_axis;
    const int64_t e0 = ol * L.axis_len + gl * L.group_size;
    for (int64_t k = 0; k < len; ++k) {
      float x = load_as_f32(in.data, in.dtype, uint64_t(e0 + k));
      if (!spec::is_finite_f32(x)) {
        if (!zero_nf) return false;
        x = 0.0f;
      }
      xs[k * W + l] = x;
    }
  }
  return true;
}

}  // namespace
}  // namespace qpack::cpu

#pragma GCC diagnostic pop
