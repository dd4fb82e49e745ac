// Two-level scales (docs/quantization.md §T, spec/two_level.hpp) for 8 * V
// groups at once with AVX2: one SIMD lane per group, V vectors of 8 lanes
// interleaved so that each group's sequential sums (one chain per group, k
// ascending, as the spec orders them) do not wait on each other's add
// latency. The elements of the groups are xs[k * 8V + l] (k < n, finite).
// The first level (§T2: RTN's range, or ggml's make_qkx2_quants with the
// minimum kept <= 0, taken when its group error is below RTN's), the 3 x 3
// choice of sub-codes (§T3.3) and the codes (§T4). The super values between
// them are a few scalar operations per super-block and stay in
// quant_two_level.cpp.
//
// Bit-exactness with the scalar text: every lane performs the spec's
// operations on its own group in the spec's order (the float sums over k
// ascending, the 21 candidates in order, a winner's minimum feeding the next
// candidate's iscale, the binary64 group error over k ascending, the nine
// neighbours in order with a strict less-than); each is one IEEE binary32 or
// binary64 operation (-ffp-contract=off; the decode's fma is the spec's);
// the weights are 1, so ggml's multiplications by them (exact) are left out;
// the branches are per-lane masks. With A512 (a CPU with AVX-512), a batch of
// 16 runs its search and group errors through quant_two_level_avx512.hpp.
// Internal to converter/src; compiled in quant_two_level.cpp.
#pragma once

#include "cpu/avx2_common.hpp"
#include "cpu/quant_two_level_avx512.hpp"
#include "qpack/spec/two_level.hpp"

namespace qpack::cpu {
namespace {

constexpr int kTwoLevelLanes = 8;       // lanes per vector
constexpr int kTwoLevelMaxVectors = 2;  // the widest batch: 16 groups

// group_error (§M1's E, unit weights) of the 8V lanes under per-lane
// (S, M, 1/S): e[l] in binary64.
template <int V>
QPACK_AVX2_FMA inline void group_error_lanes(const float* xs, int64_t n, const __m256* scale,
                                             const __m256* zero, const __m256* inv, int bits,
                                             double* e) {
  constexpr int W = 8 * V;
  const __m256 q = _mm256_set1_ps(float(qmax_asym(bits)));
  __m256d lo[V], hi[V];
  for (int v = 0; v < V; ++v) lo[v] = hi[v] = _mm256_setzero_pd();
  for (int64_t k = 0; k < n; ++k)
    for (int v = 0; v < V; ++v)
      error_terms8(_mm256_loadu_ps(xs + k * W + 8 * v), zero[v], inv[v], scale[v], q, lo[v], hi[v]);
  for (int v = 0; v < V; ++v) {
    _mm256_storeu_pd(e + 8 * v, lo[v]);
    _mm256_storeu_pd(e + 8 * v + 4, hi[v]);
  }
}

// group_error_lanes, or its AVX-512 form for a batch of 16.
template <int V, bool A512>
QPACK_AVX2_FMA inline void group_error_batch(const float* xs, int64_t n, const __m256* scale,
                                             const __m256* zero, const __m256* inv, int bits,
                                             double* e) {
  if constexpr (A512 && V == 2) {
    alignas(64) float S[16], Z[16], I[16];
    for (int v = 0; v < 2; ++v) {
      _mm256_store_ps(S + 8 * v, scale[v]);
      _mm256_store_ps(Z + 8 * v, zero[v]);
      _mm256_store_ps(I + 8 * v, inv[v]);
    }
    group_error16(xs, n, S, Z, I, bits, e);
  } else {
    group_error_lanes<V>(xs, n, scale, zero, inv, bits, e);
  }
}

// 1/S, or 0 where S is below 2^-126 (§4.3's rule for inv).
QPACK_AVX2 inline __m256 inverse_or_zero(__m256 scale) {
  const __m256 normal = _mm256_cmp_ps(scale, _mm256_set1_ps(spec::kMinNormalF32), _CMP_GE_OQ);
  return _mm256_and_ps(normal, _mm256_div_ps(_mm256_set1_ps(1.0f), scale));
}
// fl(-v + 0): the offset of a magnitude, +0 for a zero one.
QPACK_AVX2 inline __m256 negated_offset(__m256 v) {
  return _mm256_add_ps(_mm256_xor_ps(v, _mm256_set1_ps(-0.0f)), _mm256_setzero_ps());
}

// The group error of first-level parameters (s, mneg) per lane, as
// spec::first_level_error computes it.
template <int V, bool A512>
QPACK_AVX2_FMA inline void first_level_error_lanes(const float* xs, int64_t n, const float* s,
                                                   const float* mneg, int bits, double* e) {
  __m256 S[V], Z[V], I[V];
  for (int v = 0; v < V; ++v) {
    S[v] = _mm256_loadu_ps(s + 8 * v);
    Z[v] = negated_offset(_mm256_loadu_ps(mneg + 8 * v));
    I[v] = inverse_or_zero(S[v]);
  }
  group_error_batch<V, A512>(xs, n, S, Z, I, bits, e);
}

// ggml's make_qkx2_quants (spec::ggml::kquant::search_scale_and_min with
// unit weights, the minimum kept <= 0) on 8V lanes: its scale (0 for a
// constant lane, max == min after the clamp) and min per lane. ls: room for
// n * 8V floats.
template <int V>
QPACK_AVX2 inline void search_scale_and_min_lanes(const float* xs, int64_t n, int nmax, float* ls,
                                                  float* scale_out, float* min_out) {
  constexpr int W = 8 * V;
  const __m256i vnmax = _mm256_set1_epi32(nmax);
  const __m256 zero = _mm256_setzero_ps();
  __m256 mn[V], mx[V], sum_x[V];
  for (int v = 0; v < V; ++v) mn[v] = mx[v] = sum_x[v] = _mm256_loadu_ps(xs + 8 * v);
  for (int64_t k = 1; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m256 x = _mm256_loadu_ps(xs + k * W + 8 * v);
      mn[v] = _mm256_min_ps(x, mn[v]);  // x < mn ? x : mn
      mx[v] = _mm256_max_ps(x, mx[v]);  // x > mx ? x : mx
      sum_x[v] = _mm256_add_ps(sum_x[v], x);
    }
  float sum_w_s = 1.0f;  // a sum of n ones, in the spec's order
  for (int64_t k = 1; k < n; ++k) sum_w_s = spec::add_f32(sum_w_s, 1.0f);
  const __m256 sum_w = _mm256_set1_ps(sum_w_s);
  __m256 constant[V], scale[V], best[V];
  for (int v = 0; v < V; ++v) {
    mn[v] = _mm256_blendv_ps(mn[v], zero, _mm256_cmp_ps(mn[v], zero, _CMP_GT_OQ));  // > 0 -> 0
    constant[v] = _mm256_cmp_ps(mx[v], mn[v], _CMP_EQ_OQ);
    const __m256 iscale = _mm256_div_ps(_mm256_set1_ps(float(nmax)), _mm256_sub_ps(mx[v], mn[v]));
    scale[v] = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
    best[v] = zero;
    for (int64_t k = 0; k < n; ++k) {
      const __m256 x = _mm256_loadu_ps(xs + k * W + 8 * v);
      const __m256 l =
          _mm256_cvtepi32_ps(search_code8(_mm256_mul_ps(iscale, _mm256_sub_ps(x, mn[v])), vnmax));
      const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[v], l), mn[v]), x);
      best[v] = _mm256_add_ps(best[v], _mm256_mul_ps(diff, diff));
    }
  }
  for (int is = 0; is <= spec::kSearchSteps; ++is) {
    const float num = spec::add_f32(
        spec::add_f32(spec::kSearchRmin, spec::mul_f32(spec::kSearchRdelta, float(is))),
        float(nmax));
    __m256 iscale[V], sl[V], sl2[V], sxl[V];
    for (int v = 0; v < V; ++v) {
      iscale[v] = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(mx[v], mn[v]));
      sl[v] = sl2[v] = sxl[v] = zero;
    }
    for (int64_t k = 0; k < n; ++k)
      for (int v = 0; v < V; ++v) {
        const __m256 x = _mm256_loadu_ps(xs + k * W + 8 * v);
        const __m256 l = _mm256_cvtepi32_ps(
            search_code8(_mm256_mul_ps(iscale[v], _mm256_sub_ps(x, mn[v])), vnmax));
        _mm256_storeu_ps(ls + k * W + 8 * v, l);
        sl[v] = _mm256_add_ps(sl[v], l);
        sl2[v] = _mm256_add_ps(sl2[v], _mm256_mul_ps(l, l));
        sxl[v] = _mm256_add_ps(sxl[v], _mm256_mul_ps(l, x));
      }
    // least_squares_scale_min with min_at_most_zero.
    __m256 ok[V], ts[V], tm[V];
    int any_ok = 0;
    for (int v = 0; v < V; ++v) {
      const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sl2[v]), _mm256_mul_ps(sl[v], sl[v]));
      ok[v] = _mm256_andnot_ps(constant[v], _mm256_cmp_ps(D, zero, _CMP_GT_OQ));
      any_ok |= _mm256_movemask_ps(ok[v]);
      ts[v] = _mm256_div_ps(
          _mm256_sub_ps(_mm256_mul_ps(sum_w, sxl[v]), _mm256_mul_ps(sum_x[v], sl[v])), D);
      tm[v] = _mm256_div_ps(
          _mm256_sub_ps(_mm256_mul_ps(sl2[v], sum_x[v]), _mm256_mul_ps(sl[v], sxl[v])), D);
      const __m256 pos = _mm256_cmp_ps(tm[v], zero, _CMP_GT_OQ);
      tm[v] = _mm256_blendv_ps(tm[v], zero, pos);
      ts[v] = _mm256_blendv_ps(ts[v], _mm256_div_ps(sxl[v], sl2[v]), pos);
    }
    if (any_ok == 0) continue;
    __m256 cur[V];
    for (int v = 0; v < V; ++v) cur[v] = zero;
    for (int64_t k = 0; k < n; ++k)
      for (int v = 0; v < V; ++v) {
        const __m256 x = _mm256_loadu_ps(xs + k * W + 8 * v);
        const __m256 l = _mm256_loadu_ps(ls + k * W + 8 * v);  // the same codes
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
  for (int v = 0; v < V; ++v) {
    _mm256_storeu_ps(scale_out + 8 * v, _mm256_blendv_ps(scale[v], zero, constant[v]));
    _mm256_storeu_ps(min_out + 8 * v, mn[v]);
  }
}

// §T2 for 8V lanes: f[l] = spec::first_level(group l, n, bits, method).
template <int V, bool A512>
QPACK_AVX2_FMA inline void first_level_lanes(const float* xs, int64_t n, int bits,
                                             QuantMethod method, float* ls, spec::FirstLevel* f) {
  constexpr int W = 8 * V;
  __m256 mn[V], mx[V];
  for (int v = 0; v < V; ++v) mn[v] = mx[v] = _mm256_loadu_ps(xs + 8 * v);
  for (int64_t k = 1; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m256 x = _mm256_loadu_ps(xs + k * W + 8 * v);
      mn[v] = _mm256_min_ps(x, mn[v]);
      mx[v] = _mm256_max_ps(x, mx[v]);
    }
  alignas(32) float mn_a[W], mx_a[W];
  for (int v = 0; v < V; ++v) {
    _mm256_store_ps(mn_a + 8 * v, mn[v]);
    _mm256_store_ps(mx_a + 8 * v, mx[v]);
  }
  // first_level_rtn from the exact min and max (the sign of a zero minimum
  // or maximum does not reach its result).
  const float qa = float(qmax_asym(bits));
  for (int l = 0; l < W; ++l) {
    const float lo = spec::add_f32(mn_a[l] < 0.0f ? mn_a[l] : 0.0f, 0.0f);
    const float hi = spec::add_f32(mx_a[l], 0.0f);
    const float s = spec::div_f32(spec::sub_f32(hi, lo), qa);
    f[l].overflow = !spec::is_finite_f32(s);
    f[l].s = f[l].overflow ? 0.0f : s;
    f[l].mneg = spec::add_f32(-lo, 0.0f);
  }
  if (method != QuantMethod::Search) return;
  alignas(32) float cs[W], cmin[W], cneg[W], rs[W], rneg[W];
  if constexpr (A512 && V == 2)
    search_scale_and_min16(xs, n, int(qmax_asym(bits)), ls, cs, cmin);
  else
    search_scale_and_min_lanes<V>(xs, n, int(qmax_asym(bits)), ls, cs, cmin);
  // first_level_search's tests: a candidate that is finite, of a normal
  // scale and a minimum <= 0, from a lane whose RTN did not overflow.
  bool cand[W], any = false;
  for (int l = 0; l < W; ++l) {
    cand[l] = !f[l].overflow && spec::is_finite_f32(cs[l]) && spec::is_finite_f32(cmin[l]) &&
              cs[l] >= spec::kMinNormalF32 && !(cmin[l] > 0.0f);
    any = any || cand[l];
    cneg[l] = spec::add_f32(-cmin[l], 0.0f);
    if (!cand[l]) {  // finite stand-ins: the lane's error is not used
      cs[l] = 1.0f;
      cneg[l] = 0.0f;
    }
    rs[l] = f[l].s;
    rneg[l] = f[l].mneg;
  }
  if (!any) return;
  alignas(32) double ec[W], er[W];
  first_level_error_lanes<V, A512>(xs, n, cs, cneg, bits, ec);
  first_level_error_lanes<V, A512>(xs, n, rs, rneg, bits, er);
  for (int l = 0; l < W; ++l)
    if (cand[l] && ec[l] < er[l]) {
      f[l].s = cs[l];
      f[l].mneg = cneg[l];
    }
}

// §T3.3 for 8V lanes: lane l's (sc, m) = spec::choose_sub_codes(group l,
// n, bits, f[l], d[l], dmin[l]).
template <int V, bool A512>
QPACK_AVX2_FMA inline void choose_sub_codes_lanes(const float* xs, int64_t n, int bits,
                                                  const spec::FirstLevel* f, const float* d,
                                                  const float* dmin, spec::SubCodes* out) {
  constexpr int W = 8 * V;
  alignas(32) float sc0[W], m0[W], bsc[W], bm[W];
  alignas(32) int32_t search[W];
  bool any = false;
  for (int l = 0; l < W; ++l) {
    out[l].sc = spec::sub_code(f[l].s, d[l], 1);
    out[l].m = spec::sub_code(f[l].mneg, dmin[l], 0);
    bsc[l] = sc0[l] = float(out[l].sc);
    bm[l] = m0[l] = float(out[l].m);
    search[l] = d[l] > 0.0f && out[l].sc != 0 ? -1 : 0;
    any = any || search[l];
  }
  if (!any) return;
  __m256 vd[V], vdmin[V], vsc0[V], vm0[V], live[V], dmin_pos[V], S[V], Z[V], I[V];
  for (int v = 0; v < V; ++v) {
    vd[v] = _mm256_loadu_ps(d + 8 * v);
    vdmin[v] = _mm256_loadu_ps(dmin + 8 * v);
    vsc0[v] = _mm256_load_ps(sc0 + 8 * v);
    vm0[v] = _mm256_load_ps(m0 + 8 * v);
    live[v] =
        _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(search + 8 * v)));
    dmin_pos[v] = _mm256_cmp_ps(vdmin[v], _mm256_setzero_ps(), _CMP_GT_OQ);
    // effective_params (§T4): S = d * sc, M = fl(-(dmin * m) + 0).
    S[v] = _mm256_mul_ps(vd[v], vsc0[v]);
    Z[v] = negated_offset(_mm256_mul_ps(vdmin[v], vm0[v]));
    I[v] = inverse_or_zero(S[v]);
  }
  alignas(32) double best[W], e[W];
  group_error_batch<V, A512>(xs, n, S, Z, I, bits, best);
  const float steps[3] = {0.0f, -1.0f, 1.0f};
  const __m256 one = _mm256_set1_ps(1.0f), top = _mm256_set1_ps(float(spec::kSubCodeMax));
  const __m256 zero = _mm256_setzero_ps();
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) {
      if (a == 0 && b == 0) continue;
      // Codes outside 1..63 (sc) or 0..63 (m), or m > 0 without a minimum
      // super value: not tried.
      int mask = 0;
      for (int v = 0; v < V; ++v) {
        const __m256 sc = _mm256_add_ps(vsc0[v], _mm256_set1_ps(steps[a]));
        const __m256 m = _mm256_add_ps(vm0[v], _mm256_set1_ps(steps[b]));
        __m256 valid = _mm256_and_ps(live[v], _mm256_and_ps(_mm256_cmp_ps(sc, one, _CMP_GE_OQ),
                                                            _mm256_cmp_ps(sc, top, _CMP_LE_OQ)));
        valid = _mm256_and_ps(valid, _mm256_and_ps(_mm256_cmp_ps(m, zero, _CMP_GE_OQ),
                                                   _mm256_cmp_ps(m, top, _CMP_LE_OQ)));
        valid = _mm256_andnot_ps(_mm256_andnot_ps(dmin_pos[v], _mm256_cmp_ps(m, zero, _CMP_GT_OQ)),
                                 valid);
        mask |= _mm256_movemask_ps(valid) << (8 * v);
        S[v] = _mm256_mul_ps(vd[v], sc);
        Z[v] = negated_offset(_mm256_mul_ps(vdmin[v], m));
        I[v] = inverse_or_zero(S[v]);
      }
      if (mask == 0) continue;
      group_error_batch<V, A512>(xs, n, S, Z, I, bits, e);
      for (int l = 0; l < W; ++l)
        if ((mask >> l & 1) && e[l] < best[l]) {
          best[l] = e[l];
          bsc[l] = sc0[l] + steps[a];
          bm[l] = m0[l] + steps[b];
        }
    }
  for (int l = 0; l < W; ++l) {
    out[l].sc = uint32_t(bsc[l]);
    out[l].m = uint32_t(bm[l]);
  }
}

// The codes (§4.6 under the effective parameters' M and 1/S) of 8V lanes:
// q[k * 8V + l].
template <int V>
QPACK_AVX2 inline void codes_lanes(const float* xs, int64_t n, int bits, const float* zero,
                                   const float* inv, uint32_t* q) {
  constexpr int W = 8 * V;
  const __m256 top = _mm256_set1_ps(float(qmax_asym(bits)));
  for (int v = 0; v < V; ++v) {
    const __m256 Z = _mm256_loadu_ps(zero + 8 * v), I = _mm256_loadu_ps(inv + 8 * v);
    for (int64_t k = 0; k < n; ++k) {
      const __m256 c = encode_asym8(_mm256_loadu_ps(xs + k * W + 8 * v), Z, I, top);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k * W + 8 * v), _mm256_cvtps_epi32(c));
    }
  }
}

// Eight vectors r[0..7] transposed: dst[c * stride + j] = element c of r[j].
QPACK_AVX2 inline void transpose8x8(const __m256 r[8], float* dst, int64_t stride) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * stride, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * stride, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * stride, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * stride, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * stride, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * stride, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * stride, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// Gathers of 8V groups' elements, converted to float32, non-finite values
// as +0, into xs[k * 8V + l]; true when one was seen (the caller's Error
// policy then finds and names the first).
// Columns: lane l = column l from element e0, element k at e0 + k * stride.
template <DType T, int V>
QPACK_AVX2 bool gather_columns(const uint8_t* data, int64_t e0, int64_t stride, int64_t n,
                               float* xs) {
  __m256 bad = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; ++k)
    for (int v = 0; v < V; ++v) {
      const __m256 x = load8<T>(data, e0 + k * stride + 8 * v);
      const __m256 nf = nonfinite_mask(x);
      bad = _mm256_or_ps(bad, nf);
      _mm256_storeu_ps(xs + k * 8 * V + 8 * v, _mm256_andnot_ps(nf, x));
    }
  return _mm256_movemask_ps(bad) != 0;
}
// Rows: lane l = the contiguous group at e0 + l * n; n a multiple of 8.
template <DType T, int V>
QPACK_AVX2 bool gather_rows(const uint8_t* data, int64_t e0, int64_t n, float* xs) {
  __m256 bad = _mm256_setzero_ps();
  for (int v = 0; v < V; ++v)
    for (int64_t k = 0; k < n; k += 8) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l) {
        const __m256 x = load8<T>(data, e0 + (8 * v + l) * n + k);
        const __m256 nf = nonfinite_mask(x);
        bad = _mm256_or_ps(bad, nf);
        r[l] = _mm256_andnot_ps(nf, x);
      }
      transpose8x8(r, xs + k * 8 * V + 8 * v, 8 * V);
    }
  return _mm256_movemask_ps(bad) != 0;
}

}  // namespace
}  // namespace qpack::cpu
