// The scale-and-minimum search of docs/quantization.md §M2
// (spec::params_asym_search, unit weights) for 16 groups at once with AVX2:
// one SIMD lane per group, two vectors of 8 lanes interleaved so that the
// search's sequential sums (one chain per group, k ascending, as the spec
// orders them) do not wait on each other's add latency.
//
// Bit-exactness with the scalar reference: every lane performs the
// reference's operations on its own group in the reference's order (sums
// over k ascending, the 21 candidates in order, a candidate's minimum
// feeding the next candidate's iscale as in ggml); the operations are single
// IEEE binary32/binary64 operations (-ffp-contract=off; the only fused one
// is the decode's fma, which the spec specifies); nearest_int's add of
// 1.5 * 2^23 and bit extraction are done on the same bits; the branches
// become per-lane masks. Unit weights: fl(1 * v) = v, so the multiplications
// by the weight are left out (no importance weights reach this path).
// Internal to converter/src (quant_cpu.cpp).
#pragma once

#include "cpu/avx2_common.hpp"
#include "qpack/spec/group_methods.hpp"

namespace qpack::cpu {
namespace {

constexpr int kSearchLanes = 16;  // groups per batch: two vectors of 8

// params_asym_search for the 16 groups whose elements are xs[k * 16 + l]
// (k < n, finite), lane l -> params[l]. ls: room for n * 16 floats (a
// candidate's codes, kept from its fit for its error).
QPACK_AVX2_FMA void search_params16(const float* xs, int64_t n, int bits, DType sd, float* ls,
                                    spec::GroupParams* params) {
  constexpr int V = 2;
  const int nmax = int(qmax_asym(bits));
  const __m256i vnmax = _mm256_set1_epi32(nmax);
  // Min, max and sum_x (sum_w is n: a sum of ones, exact below 2^24).
  __m256 mn[V], mx[V], sum_x[V];
  for (int v = 0; v < V; ++v) mn[v] = mx[v] = sum_x[v] = _mm256_loadu_ps(xs + 8 * v);
  for (int64_t k = 1; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m256 x = _mm256_loadu_ps(xs + k * kSearchLanes + 8 * v);
      mn[v] = _mm256_min_ps(x, mn[v]);  // x < mn ? x : mn
      mx[v] = _mm256_max_ps(x, mx[v]);  // x > mx ? x : mx
      sum_x[v] = _mm256_add_ps(sum_x[v], x);
    }
  float sum_w_s = 1.0f;
  for (int64_t k = 1; k < n; ++k) sum_w_s = spec::add_f32(sum_w_s, 1.0f);
  const __m256 sum_w = _mm256_set1_ps(sum_w_s);

  alignas(32) float mn_a[kSearchLanes], mx_a[kSearchLanes];
  for (int v = 0; v < V; ++v) {
    _mm256_store_ps(mn_a + 8 * v, mn[v]);
    _mm256_store_ps(mx_a + 8 * v, mx[v]);
  }
  spec::GroupParams rtn[kSearchLanes];
  // Lanes whose search runs: RTN fits and the group is not constant.
  alignas(32) int32_t live_a[kSearchLanes];
  bool any_live = false;
  for (int l = 0; l < kSearchLanes; ++l) {
    rtn[l] = spec::params_asym(mn_a[l], mx_a[l], bits, sd);
    live_a[l] = !rtn[l].overflow && !(mx_a[l] == mn_a[l]) ? -1 : 0;
    any_live = any_live || live_a[l];
  }
  for (int l = 0; l < kSearchLanes; ++l) params[l] = rtn[l];
  if (!any_live) return;

  __m256 live[V], iscale[V], scale[V], best[V];
  for (int v = 0; v < V; ++v) {
    live[v] =
        _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(live_a + 8 * v)));
    iscale[v] = _mm256_div_ps(_mm256_set1_ps(float(nmax)), _mm256_sub_ps(mx[v], mn[v]));
    scale[v] = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale[v]);
    best[v] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m256 x = _mm256_loadu_ps(xs + k * kSearchLanes + 8 * v);
      const __m256 l = _mm256_cvtepi32_ps(
          search_code8(_mm256_mul_ps(iscale[v], _mm256_sub_ps(x, mn[v])), vnmax));
      const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[v], l), mn[v]), x);
      best[v] = _mm256_add_ps(best[v], _mm256_mul_ps(diff, diff));
    }
  for (int is = 0; is <= spec::kSearchSteps; ++is) {
    // The candidate's numerator, the same for every lane, in binary32 as
    // the reference computes it.
    const float num = spec::add_f32(
        spec::add_f32(spec::kSearchRmin, spec::mul_f32(spec::kSearchRdelta, float(is))),
        float(nmax));
    __m256 cis[V], sl[V], sl2[V], sxl[V];
    for (int v = 0; v < V; ++v) {
      cis[v] = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(mx[v], mn[v]));
      sl[v] = sl2[v] = sxl[v] = _mm256_setzero_ps();
    }
    for (int64_t k = 0; k < n; ++k)
      for (int v = 0; v < V; ++v) {
        const __m256 x = _mm256_loadu_ps(xs + k * kSearchLanes + 8 * v);
        const __m256 l =
            _mm256_cvtepi32_ps(search_code8(_mm256_mul_ps(cis[v], _mm256_sub_ps(x, mn[v])), vnmax));
        _mm256_storeu_ps(ls + k * kSearchLanes + 8 * v, l);
        sl[v] = _mm256_add_ps(sl[v], l);
        sl2[v] = _mm256_add_ps(sl2[v], _mm256_mul_ps(l, l));
        sxl[v] = _mm256_add_ps(sxl[v], _mm256_mul_ps(l, x));
      }
    // least_squares_scale_min (the offset of either sign).
    __m256 ok[V], ts[V], tm[V];
    int any_ok = 0;
    for (int v = 0; v < V; ++v) {
      const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sl2[v]), _mm256_mul_ps(sl[v], sl[v]));
      ok[v] = _mm256_and_ps(live[v], _mm256_cmp_ps(D, _mm256_setzero_ps(), _CMP_GT_OQ));
      ts[v] = _mm256_div_ps(
          _mm256_sub_ps(_mm256_mul_ps(sum_w, sxl[v]), _mm256_mul_ps(sum_x[v], sl[v])), D);
      tm[v] = _mm256_div_ps(
          _mm256_sub_ps(_mm256_mul_ps(sl2[v], sum_x[v]), _mm256_mul_ps(sl[v], sxl[v])), D);
      any_ok |= _mm256_movemask_ps(ok[v]);
    }
    if (!any_ok) continue;
    __m256 cur[V];
    for (int v = 0; v < V; ++v) cur[v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < n; ++k)
      for (int v = 0; v < V; ++v) {
        const __m256 x = _mm256_loadu_ps(xs + k * kSearchLanes + 8 * v);
        const __m256 l = _mm256_loadu_ps(ls + k * kSearchLanes + 8 * v);  // the same codes
        const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(ts[v], l), tm[v]), x);
        cur[v] = _mm256_add_ps(cur[v], _mm256_mul_ps(diff, diff));
      }
    for (int v = 0; v < V; ++v) {
      const __m256 take = _mm256_and_ps(ok[v], _mm256_cmp_ps(cur[v], best[v], _CMP_LT_OQ));
      best[v] = _mm256_blendv_ps(best[v], cur[v], take);
      scale[v] = _mm256_blendv_ps(scale[v], ts[v], take);
      mn[v] = _mm256_blendv_ps(mn[v], tm[v], take);
    }
  }

  // The search's (scale, offset) as a candidate, kept when its group error
  // is below RTN's (both in binary64, k ascending).
  alignas(32) float sc_a[kSearchLanes], of_a[kSearchLanes];
  for (int v = 0; v < V; ++v) {
    _mm256_store_ps(sc_a + 8 * v, scale[v]);
    _mm256_store_ps(of_a + 8 * v, mn[v]);
  }
  spec::GroupParams cand[kSearchLanes];
  alignas(32) float c_zero[kSearchLanes], c_inv[kSearchLanes], c_scale[kSearchLanes];
  alignas(32) float r_zero[kSearchLanes], r_inv[kSearchLanes], r_scale[kSearchLanes];
  bool use[kSearchLanes];
  bool any_use = false;
  for (int l = 0; l < kSearchLanes; ++l) {
    const spec::Candidate c = spec::candidate_params(sc_a[l], of_a[l], sd);
    use[l] = live_a[l] && c.valid;
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
  const __m256 q = _mm256_set1_ps(float(nmax));
  __m256d ec[2 * V], er[2 * V];
  for (int h = 0; h < 2 * V; ++h) ec[h] = er[h] = _mm256_setzero_pd();
  __m256 cz[V], ci[V], cs[V], rz[V], ri[V], rs[V];
  for (int v = 0; v < V; ++v) {
    cz[v] = _mm256_load_ps(c_zero + 8 * v);
    ci[v] = _mm256_load_ps(c_inv + 8 * v);
    cs[v] = _mm256_load_ps(c_scale + 8 * v);
    rz[v] = _mm256_load_ps(r_zero + 8 * v);
    ri[v] = _mm256_load_ps(r_inv + 8 * v);
    rs[v] = _mm256_load_ps(r_scale + 8 * v);
  }
  for (int64_t k = 0; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m256 x = _mm256_loadu_ps(xs + k * kSearchLanes + 8 * v);
      error_terms8(x, cz[v], ci[v], cs[v], q, ec[2 * v], ec[2 * v + 1]);
      error_terms8(x, rz[v], ri[v], rs[v], q, er[2 * v], er[2 * v + 1]);
    }
  alignas(32) double ec_a[kSearchLanes], er_a[kSearchLanes];
  for (int h = 0; h < 2 * V; ++h) {
    _mm256_store_pd(ec_a + 4 * h, ec[h]);
    _mm256_store_pd(er_a + 4 * h, er[h]);
  }
  for (int l = 0; l < kSearchLanes; ++l)
    if (use[l] && ec_a[l] < er_a[l]) params[l] = cand[l];
}

// The 16 groups' elements, converted to float32, as xs[k * 16 + l]: column
// layout (lanes = 16 adjacent columns i0.. of group row (o, g)) or row
// layout (lanes = groups p0.., contiguous). NaN/Inf become +0 with the Zero
// policy; with Error, false when any is present.
template <DType T>
QPACK_AVX2 bool gather16(const QuantInput& in, const GroupLayout& L, NonFinitePolicy policy,
                         int64_t o, int64_t g, int64_t i0, int64_t p0, float* xs) {
  const int64_t len = L.group_len(g);
  __m256 bad = _mm256_setzero_ps();
  const bool zero_nf = policy == NonFinitePolicy::Zero;
  if (L.inner >= kSearchLanes) {
    const int64_t e0 = (o * L.axis_len + g * L.group_size) * L.inner + i0;
    for (int64_t k = 0; k < len; ++k)
      for (int v = 0; v < 2; ++v) {
        __m256 x = load8<T>(in.data, e0 + k * L.inner + 8 * v);
        const __m256 nf = nonfinite_mask(x);
        bad = _mm256_or_ps(bad, nf);
        if (zero_nf) x = _mm256_andnot_ps(nf, x);
        _mm256_storeu_ps(xs + k * kSearchLanes + 8 * v, x);
      }
  } else {
    for (int l = 0; l < kSearchLanes; ++l) {
      const int64_t p = p0 + l, ol = p / L.groups_per_axis, gl = p % L.groups_per_axis;
      const int64_t e0 = ol * L.axis_len + gl * L.group_size;
      for (int64_t k = 0; k < len; ++k) {
        float x = load_as_f32(in.data, in.dtype, uint64_t(e0 + k));
        if (!spec::is_finite_f32(x)) {
          if (!zero_nf) return false;
          x = 0.0f;
        }
        xs[k * kSearchLanes + l] = x;
      }
    }
  }
  return zero_nf || _mm256_movemask_ps(bad) == 0;
}

}  // namespace
}  // namespace qpack::cpu
