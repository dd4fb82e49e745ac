// ggml's K-quant reference quantizers Q2_K, Q3_K, Q4_K, Q5_K and Q6_K without
// an importance matrix (docs/quantization.md, Part III): the bytes
// llama.cpp's `quantize_row_qN_K_ref` writes for one 256-element super-block
// and the floats its `dequantize_row_qN_K` reads back. Rules of their own:
// a super-block is cut into 16 or 32 element sub-blocks, each sub-block's
// scale (and min) comes from a small search, and those scales are themselves
// quantized against one or two f16 super-scales; the codes are then derived
// again from the quantized scales.
//
// Every arithmetic step is one IEEE binary32 operation from numerics.hpp in
// the order ggml's C writes it (left to right, each product and sum rounded),
// nothing fused, nothing reassociated. Inputs are finite floats whose super-
// scales fit f16; a NaN or Inf, or a block so large or so small that a scale
// overflows, gives whatever these steps give, which is not a promise (ggml's
// C is undefined there as well, and a NaN's bits differ between CPU and GPU).
#pragma once

#include <cstdint>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/spec/numerics.hpp"

namespace qpack::spec::ggml {

// Every K-quant covers 256 consecutive elements per block.
constexpr int kSuperBlockElements = 256;

// Bytes of one super-block (ggml-common.h's block_qN_K).
constexpr int kQ2_KBlockBytes = 16 + 64 + 2 + 2;        // scales, qs, d, dmin
constexpr int kQ3_KBlockBytes = 32 + 64 + 12 + 2;       // hmask, qs, scales, d
constexpr int kQ4_KBlockBytes = 2 + 2 + 12 + 128;       // d, dmin, scales, qs
constexpr int kQ5_KBlockBytes = 2 + 2 + 12 + 32 + 128;  // d, dmin, scales, qh, qs
constexpr int kQ6_KBlockBytes = 128 + 64 + 16 + 2;      // ql, qh, scales, d

// The searches and small rules the five types share. Public so that tests
// (and a stranger reading docs/quantization.md Part III) can check each one.
namespace kquant {

// ggml's GROUP_MAX_EPS: a sub-block whose largest |x| is below it is zero.
constexpr float kGroupMaxEps = 1e-15f;

QPACK_HD int min_int(int a, int b) { return a < b ? a : b; }
QPACK_HD int max_int(int a, int b) { return a > b ? a : b; }
QPACK_HD int clamp_int(int v, int lo, int hi) { return max_int(lo, min_int(hi, v)); }
// C's conversion of an int to int8_t / uint8_t: the low 8 bits (two's complement).
QPACK_HD int wrap_int8(int v) {
  const int b = v & 0xff;
  return b >= 128 ? b - 256 : b;
}
QPACK_HD int wrap_uint8(int v) { return v & 0xff; }

// ggml's nearest_int: add 1.5 * 2^23 and read the integer from the low 23
// bits of the sum. For |v| <= 4194303 the float add rounds v to the nearest
// integer, ties to even; outside that range the answer is whatever the bits
// say, which ggml's release build returns too. A NaN gives 0: it is what
// ggml's C gives on x86 for the NaN a step makes from finite inputs (Inf * 0
// in a sub-block of tiny range is x86's default NaN 0xFFC00000), and a GPU's
// canonical NaN (0x7FFFFFFF) would give 4194303, so the rule says 0.
QPACK_HD int nearest_int(float v) {
  if (!(v == v)) return 0;
  const float t = add_f32(v, 12582912.0f);
  return int(f32_bits(t) & 0x007fffffu) - 0x00400000;
}

// The weighted least-squares fit of x ~ scale * l + min over given codes l,
// from the sums sum_w = S w, sum_x = S w*x, sum_l = S w*l, sum_l2 = S w*l*l,
// sum_xl = S w*l*x (make_qkx2_quants' inner step, also qpack's refit
// method, docs/quantization.md §M3). False when D = sum_w*sum_l2 - sum_l^2
// is not > 0 (every code equal): no fit. min_at_most_zero (ggml's rule: a
// K-quant min is stored as a non-negative number subtracted) replaces a
// positive min by 0 and refits the scale alone.
QPACK_HD bool least_squares_scale_min(float sum_w, float sum_x, float sum_l, float sum_l2,
                                      float sum_xl, bool min_at_most_zero, float* scale,
                                      float* min) {
  const float D = sub_f32(mul_f32(sum_w, sum_l2), mul_f32(sum_l, sum_l));
  if (!(D > 0.0f)) return false;
  float this_scale = div_f32(sub_f32(mul_f32(sum_w, sum_xl), mul_f32(sum_x, sum_l)), D);
  float this_min = div_f32(sub_f32(mul_f32(sum_l2, sum_x), mul_f32(sum_l, sum_xl)), D);
  if (min_at_most_zero && this_min > 0.0f) {
    this_min = 0.0f;
    this_scale = div_f32(sum_xl, sum_l2);
  }
  *scale = this_scale;
  *min = this_min;
  return true;
}

// The result of make_qkx2_quants' search: x ~ scale * L + min, and how to
// regenerate the winning codes L (the search keeps no code array, so that
// it runs over groups of any length): L_i = clamp(ni(fl(code_iscale *
// fl(x_i - code_lo))), 0, nmax), or 0 for every element when constant.
struct ScaleMinFit {
  float scale;
  float min;  // the offset lo (<= 0 when min_at_most_zero); ggml stores -min
  float code_iscale, code_lo;
  bool constant;  // max == min: scale 0, every code 0
};
QPACK_HD int fit_code(const ScaleMinFit& f, float x, int nmax) {
  if (f.constant) return 0;
  return clamp_int(nearest_int(mul_f32(f.code_iscale, sub_f32(x, f.code_lo))), 0, nmax);
}

// ggml's make_qkx2_quants over n elements read through src (src.x(i) and
// src.w(i), the weights), in index order. The first candidate takes iscale
// = nmax / (max - min); then for is = 0..nstep the candidate iscale =
// (rmin + rdelta*is + nmax) / (max - min) gives codes from which
// least_squares_scale_min solves scale and min; a candidate replaces the
// best one only when its weighted error (|diff| if use_mad, else diff^2) is
// strictly smaller. min_at_most_zero is ggml's (the min never positive);
// qpack's search (group_methods.hpp) lets the offset take either sign.
template <class Src>
QPACK_HD ScaleMinFit search_scale_and_min(const Src& src, int64_t n, int nmax, float rmin,
                                          float rdelta, int nstep, bool use_mad,
                                          bool min_at_most_zero) {
  ScaleMinFit f;
  float mn = src.x(0);
  float mx = mn;
  float sum_w = src.w(0);
  float sum_x = mul_f32(sum_w, mn);
  for (int64_t i = 1; i < n; ++i) {
    const float xi = src.x(i), wi = src.w(i);
    if (xi < mn) mn = xi;
    if (xi > mx) mx = xi;
    sum_w = add_f32(sum_w, wi);
    sum_x = add_f32(sum_x, mul_f32(wi, xi));
  }
  if (min_at_most_zero && mn > 0.0f) mn = 0.0f;
  if (mx == mn) {
    f.scale = 0.0f;
    f.min = mn;
    f.code_iscale = 0.0f;
    f.code_lo = mn;
    f.constant = true;
    return f;
  }
  f.constant = false;
  float iscale = div_f32(float(nmax), sub_f32(mx, mn));
  float scale = div_f32(1.0f, iscale);
  f.code_iscale = iscale;
  f.code_lo = mn;
  float best_error = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float xi = src.x(i);
    const int l = clamp_int(nearest_int(mul_f32(iscale, sub_f32(xi, mn))), 0, nmax);
    float diff = sub_f32(add_f32(mul_f32(scale, float(l)), mn), xi);
    diff = use_mad ? abs_f32(diff) : mul_f32(diff, diff);
    best_error = add_f32(best_error, mul_f32(src.w(i), diff));
  }
  for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
    iscale =
        div_f32(add_f32(add_f32(rmin, mul_f32(rdelta, float(is))), float(nmax)), sub_f32(mx, mn));
    float sum_l = 0.0f;
    float sum_l2 = 0.0f;
    float sum_xl = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float xi = src.x(i);
      const int l = clamp_int(nearest_int(mul_f32(iscale, sub_f32(xi, mn))), 0, nmax);
      const float wl = mul_f32(src.w(i), float(l));
      sum_l = add_f32(sum_l, wl);
      sum_l2 = add_f32(sum_l2, mul_f32(wl, float(l)));
      sum_xl = add_f32(sum_xl, mul_f32(wl, xi));
    }
    float this_scale, this_min;
    if (least_squares_scale_min(sum_w, sum_x, sum_l, sum_l2, sum_xl, min_at_most_zero, &this_scale,
                                &this_min)) {
      // The candidate's codes again, from the same iscale and mn: the same
      // operations give the same codes, so none need to be kept.
      float cur_error = 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        const float xi = src.x(i);
        const int l = clamp_int(nearest_int(mul_f32(iscale, sub_f32(xi, mn))), 0, nmax);
        float diff = sub_f32(add_f32(mul_f32(this_scale, float(l)), this_min), xi);
        diff = use_mad ? abs_f32(diff) : mul_f32(diff, diff);
        cur_error = add_f32(cur_error, mul_f32(src.w(i), diff));
      }
      if (cur_error < best_error) {
        f.code_iscale = iscale;
        f.code_lo = mn;
        best_error = cur_error;
        scale = this_scale;
        mn = this_min;
      }
    }
  }
  f.scale = scale;
  f.min = mn;
  return f;
}

// Elements and weights as two arrays (a K-quant sub-block).
struct ArrayValues {
  const float* xs;
  const float* ws;
  QPACK_HD float x(int64_t i) const { return xs[i]; }
  QPACK_HD float w(int64_t i) const { return ws[i]; }
};

// ggml's make_qkx2_quants itself: codes L[i] in 0..nmax for x[i] ~ scale *
// L[i] - the_min over n elements with weights w, min forced <= 0 (see
// search_scale_and_min). Returns the scale; *the_min = -min (>= 0, possibly
// -0).
QPACK_HD float fit_scale_and_min(int n, int nmax, const float* x, const float* w, uint8_t* L,
                                 float* the_min, float rmin, float rdelta, int nstep,
                                 bool use_mad) {
  const ScaleMinFit f =
      search_scale_and_min(ArrayValues{x, w}, n, nmax, rmin, rdelta, nstep, use_mad, true);
  for (int i = 0; i < n; ++i) L[i] = uint8_t(fit_code(f, x[i], nmax));
  *the_min = -f.min;
  return f.scale;
}

// The signed element of largest |x| (the first when several tie) and that
// |x|; both +0 when every element is zero.
QPACK_HD void signed_absmax(int n, const float* x, float* max, float* amax) {
  float m = 0.0f;
  float a = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = abs_f32(x[i]);
    if (ax > a) {
      a = ax;
      m = x[i];
    }
  }
  *max = m;
  *amax = a;
}

// ggml's make_qx_quants with rmse_type 1 and no importance weights (what
// Q6_K calls): symmetric codes L[i] + nmax in 0..2*nmax-1 for x ~ scale * L,
// weights x^2. The start iscale = -nmax / max (max the signed absmax) is
// refined over 18 more candidates iscale = -(nmax + 0.1*is) / max, is =
// -9..9 but 0; a candidate wins when suml2 > 0 and sumlx^2 > best * suml2
// (best = scale * sumlx of the current winner). Returns the scale.
QPACK_HD float fit_symmetric_scale(int n, int nmax, const float* x, int8_t* L) {
  float max, amax;
  signed_absmax(n, x, &max, &amax);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = div_f32(float(-nmax), max);
  float sumlx = 0.0f;
  float suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(mul_f32(iscale, x[i])), -nmax, nmax - 1);
    L[i] = int8_t(l + nmax);
    const float w = mul_f32(x[i], x[i]);
    sumlx = add_f32(sumlx, mul_f32(mul_f32(w, x[i]), float(l)));
    suml2 = add_f32(suml2, mul_f32(mul_f32(w, float(l)), float(l)));
  }
  float scale = suml2 != 0.0f ? div_f32(sumlx, suml2) : 0.0f;
  float best = mul_f32(scale, sumlx);
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = div_f32(-add_f32(float(nmax), mul_f32(0.1f, float(is))), max);
    sumlx = 0.0f;
    suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(mul_f32(iscale, x[i])), -nmax, nmax - 1);
      const float w = mul_f32(x[i], x[i]);
      sumlx = add_f32(sumlx, mul_f32(mul_f32(w, x[i]), float(l)));
      suml2 = add_f32(suml2, mul_f32(mul_f32(w, float(l)), float(l)));
    }
    if (suml2 > 0.0f && mul_f32(sumlx, sumlx) > mul_f32(best, suml2)) {
      for (int i = 0; i < n; ++i)
        L[i] = int8_t(nmax + clamp_int(nearest_int(mul_f32(iscale, x[i])), -nmax, nmax - 1));
      scale = div_f32(sumlx, suml2);
      best = mul_f32(scale, sumlx);
    }
  }
  return scale;
}

// ggml's make_q3_quants with do_rmse (what Q3_K calls): symmetric codes
// from iscale = -nmax / max, then up to 5 passes of coordinate descent: for
// each i with slx = sumlx - w*x*L > 0 (w = x^2), try L' = nearest_int(x * sl2
// / slx) and keep it when the fit improves (slx'^2 * suml2 > sumlx^2 *
// sl2'); stop after a pass that changed nothing. L[i] + nmax is returned in
// 0..2*nmax-1; the scale is sumlx / suml2 (0 when suml2 <= 0).
QPACK_HD float fit_symmetric_scale_q3(int n, int nmax, const float* x, int8_t* L) {
  float max, amax;
  signed_absmax(n, x, &max, &amax);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float iscale = div_f32(float(-nmax), max);
  float sumlx = 0.0f;
  float suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(mul_f32(iscale, x[i])), -nmax, nmax - 1);
    L[i] = int8_t(l);
    const float w = mul_f32(x[i], x[i]);
    sumlx = add_f32(sumlx, mul_f32(mul_f32(w, x[i]), float(l)));
    suml2 = add_f32(suml2, mul_f32(mul_f32(w, float(l)), float(l)));
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = mul_f32(x[i], x[i]);
      float slx = sub_f32(sumlx, mul_f32(mul_f32(w, x[i]), float(L[i])));
      if (slx > 0.0f) {
        float sl2 = sub_f32(suml2, mul_f32(mul_f32(w, float(L[i])), float(L[i])));
        const int new_l = clamp_int(nearest_int(div_f32(mul_f32(x[i], sl2), slx)), -nmax, nmax - 1);
        if (new_l != L[i]) {
          slx = add_f32(slx, mul_f32(mul_f32(w, x[i]), float(new_l)));
          sl2 = add_f32(sl2, mul_f32(mul_f32(w, float(new_l)), float(new_l)));
          if (sl2 > 0.0f &&
              mul_f32(mul_f32(slx, slx), suml2) > mul_f32(mul_f32(sumlx, sumlx), sl2)) {
            L[i] = int8_t(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (n_changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
  return suml2 > 0.0f ? div_f32(sumlx, suml2) : 0.0f;
}

// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7)
// from Q4_K's and Q5_K's 12 scale bytes. j < 4: the low 6 bits of bytes j
// and j+4; j >= 4: the low (high) nibble of byte j+4 for the scale (min),
// topped by the two high bits of byte j-4 (byte j).
QPACK_HD void unpack_scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
// The inverse for ls, lm in 0..63, all eight at once.
QPACK_HD void pack_scale_min_k4(const int* ls, const int* lm, uint8_t* q) {
  for (int j = 0; j < 12; ++j) q[j] = 0;
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] = uint8_t(ls[j]);
      q[j + 4] = uint8_t(lm[j]);
    } else {
      q[j + 4] = uint8_t((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
      q[j - 4] = uint8_t(q[j - 4] | ((ls[j] >> 4) << 6));
      q[j] = uint8_t(q[j] | ((lm[j] >> 4) << 6));
    }
  }
}

// Q3_K's 6-bit scale j (0..15) from its 12 scale bytes, in 0..63 (the value
// stored is the signed scale + 32): low 4 bits in byte j's low nibble (j < 8)
// or byte j-8's high nibble, high 2 bits at bit 2*(j/4) of byte 8 + j%4.
QPACK_HD int q3_k_scale(const uint8_t* s, int j) {
  const int low = j < 8 ? (s[j] & 0xf) : (s[j - 8] >> 4);
  return low | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}

// 2-bit codes L[0..255] into 64 bytes: per 128-element half h, byte 32h + l
// holds elements 128h + l, +32, +64, +96 at bits 0, 2, 4, 6 (Q2_K and Q3_K).
QPACK_HD void pack_two_bit_codes(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kSuperBlockElements; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] =
          uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}
QPACK_HD int two_bit_code(const uint8_t* qs, int e) {
  return (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}

// Q4_K's and Q5_K's code nibbles: per 64-element chunk c, byte 32c + l holds
// element 64c + l in its low nibble and 64c + 32 + l in its high one.
QPACK_HD int k4_nibble(const uint8_t* qs, int e) {
  const int c = e / 64;
  const int r = e % 64;
  return r < 32 ? (qs[32 * c + r] & 0xf) : (qs[32 * c + r - 32] >> 4);
}

}  // namespace kquant

// ------------------------------------------------------------ quantize one super-block
// x: 256 floats; out: the type's block bytes.

namespace kquant {

// Q2_K: 16 sub-blocks of 16, each fitted by fit_scale_and_min(nmax 3,
// weights |x|, rmin -0.5, rdelta 0.1, 15 steps, absolute error); 4-bit
// scale and min per sub-block against d = max_scale / 15, dmin = max_min / 15.
// The fits (codes into L):
QPACK_HD void q2_k_fits(const float* x, uint8_t* L, float* scales, float* mins) {
  float weights[16];
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = abs_f32(x[16 * j + l]);
    scales[j] =
        fit_scale_and_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
  }
}

// Then, from the fits, the whole block (L holds the fits' codes on entry).
QPACK_HD void q2_k_block_from_fits(const float* x, const float* scales, const float* mins,
                                   uint8_t* L, uint8_t* out) {
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 16; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  uint8_t* sc = out;
  uint8_t* qs = out + 16;
  uint16_t d_bits = 0;
  uint16_t dmin_bits = 0;
  if (max_scale > 0.0f) {
    const float iscale = div_f32(15.0f, max_scale);
    for (int j = 0; j < 16; ++j)
      sc[j] = uint8_t(wrap_uint8(nearest_int(mul_f32(iscale, scales[j]))));
    d_bits = f32_to_f16_rne(div_f32(max_scale, 15.0f));
  } else {
    for (int j = 0; j < 16; ++j) sc[j] = 0;
    d_bits = f32_to_f16_rne(0.0f);
  }
  if (max_min > 0.0f) {
    const float iscale = div_f32(15.0f, max_min);
    for (int j = 0; j < 16; ++j) {
      const int l = nearest_int(mul_f32(iscale, mins[j]));
      sc[j] = uint8_t(wrap_uint8(int(uint32_t(sc[j]) | (uint32_t(l) << 4))));
    }
    dmin_bits = f32_to_f16_rne(div_f32(max_min, 15.0f));
  } else {
    dmin_bits = f32_to_f16_rne(0.0f);
  }
  const float d_all = f16_to_f32(d_bits);
  const float dmin_all = f16_to_f32(dmin_bits);
  for (int j = 0; j < 16; ++j) {
    const float d = mul_f32(d_all, float(sc[j] & 0xf));
    if (d == 0.0f) continue;
    const float dm = mul_f32(dmin_all, float(sc[j] >> 4));
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(div_f32(add_f32(x[16 * j + ii], dm), d));
      L[16 * j + ii] = uint8_t(clamp_int(l, 0, 3));
    }
  }
  pack_two_bit_codes(L, qs);
  detail::store_u16_le(out + 80, d_bits);
  detail::store_u16_le(out + 82, dmin_bits);
}

}  // namespace kquant

QPACK_HD void quantize_block_q2_k(const float* x, uint8_t* out) {
  uint8_t L[kSuperBlockElements];
  float scales[16];
  float mins[16];
  kquant::q2_k_fits(x, L, scales, mins);
  kquant::q2_k_block_from_fits(x, scales, mins, L, out);
}

// Q3_K: 16 sub-blocks of 16 fitted by fit_symmetric_scale_q3(nmax 4); 6-bit
// signed scales against d = max_scale / -32 (max_scale the signed scale of
// largest |scale|); codes -4..3 stored +4 as 2 low bits plus an hmask bit.
namespace kquant {

// Q3_K's fits of its 16 sub-blocks (codes 0..7 into L).
QPACK_HD void q3_k_fits(const float* x, int8_t* L, float* scales) {
  for (int j = 0; j < 16; ++j) scales[j] = fit_symmetric_scale_q3(16, 4, x + 16 * j, L + 16 * j);
}

// Then, from the fits, the whole block (L holds the fits' codes on entry).
QPACK_HD void q3_k_block_from_fits(const float* x, const float* scales, int8_t* L, uint8_t* out) {
  float max_scale = 0.0f;
  float amax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    const float scale = abs_f32(scales[j]);
    if (scale > amax) {
      amax = scale;
      max_scale = scales[j];
    }
  }
  uint8_t* hmask = out;
  uint8_t* qs = out + 32;
  uint8_t* sb = out + 96;
  for (int j = 0; j < 12; ++j) sb[j] = 0;
  uint16_t d_bits = 0;
  if (max_scale != 0.0f) {
    const float iscale = div_f32(-32.0f, max_scale);
    for (int j = 0; j < 16; ++j) {
      int l = wrap_int8(nearest_int(mul_f32(iscale, scales[j])));
      l = clamp_int(l, -32, 31) + 32;
      if (j < 8)
        sb[j] = uint8_t(l & 0xf);
      else
        sb[j - 8] = uint8_t(sb[j - 8] | ((l & 0xf) << 4));
      l >>= 4;
      sb[j % 4 + 8] = uint8_t(sb[j % 4 + 8] | (l << (2 * (j / 4))));
    }
    d_bits = f32_to_f16_rne(div_f32(1.0f, iscale));
  } else {
    d_bits = f32_to_f16_rne(0.0f);
  }
  const float d_all = f16_to_f32(d_bits);
  for (int j = 0; j < 16; ++j) {
    const int sc = q3_k_scale(sb, j) - 32;
    const float d = mul_f32(d_all, float(sc));
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = clamp_int(nearest_int(div_f32(x[16 * j + ii], d)), -4, 3);
      L[16 * j + ii] = int8_t(l + 4);
    }
  }
  uint8_t low[kSuperBlockElements];
  for (int j = 0; j < 32; ++j) hmask[j] = 0;
  for (int j = 0; j < kSuperBlockElements; ++j) {
    int l = L[j];
    if (l > 3) {
      hmask[j % 32] = uint8_t(hmask[j % 32] | (1 << (j / 32)));
      l -= 4;
    }
    low[j] = uint8_t(l);
  }
  pack_two_bit_codes(low, qs);
  detail::store_u16_le(out + 108, d_bits);
}

}  // namespace kquant

QPACK_HD void quantize_block_q3_k(const float* x, uint8_t* out) {
  int8_t L[kSuperBlockElements];
  float scales[16];
  kquant::q3_k_fits(x, L, scales);
  kquant::q3_k_block_from_fits(x, scales, L, out);
}

namespace kquant {

// Q4_K and Q5_K differ only in nmax, the search constants and the code
// layout: 8 sub-blocks of 32 fitted by fit_scale_and_min (weights sub-block
// RMS + |x|, squared error); 6-bit scale and min against d = max_scale / 63,
// dmin = max_min / 63. The fits of the 8 sub-blocks (codes into L):
QPACK_HD void k4_fits(const float* x, int nmax, float rmin, int nstep, uint8_t* L, float* scales,
                      float* mins) {
  float weights[32];
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0.0f;
    for (int l = 0; l < 32; ++l) sum_x2 = add_f32(sum_x2, mul_f32(x[32 * j + l], x[32 * j + l]));
    const float av_x = sqrt_f32(div_f32(sum_x2, 32.0f));
    for (int l = 0; l < 32; ++l) weights[l] = add_f32(av_x, abs_f32(x[32 * j + l]));
    scales[j] = fit_scale_and_min(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], rmin, 0.1f,
                                  nstep, false);
  }
}

// Then, from the fits: writes d, dmin and the 12 scale bytes, and derives
// the codes again from the quantized scales (into L; a sub-block whose
// quantized scale is 0 keeps the fit's codes).
QPACK_HD void k4_scales_and_codes_from_fits(const float* x, int nmax, const float* scales,
                                            const float* mins, uint8_t* out, uint8_t* L) {
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0.0f ? div_f32(63.0f, max_scale) : 0.0f;
  const float inv_min = max_min > 0.0f ? div_f32(63.0f, max_min) : 0.0f;
  int ls[8];
  int lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = min_int(63, wrap_uint8(nearest_int(mul_f32(inv_scale, scales[j]))));
    lm[j] = min_int(63, wrap_uint8(nearest_int(mul_f32(inv_min, mins[j]))));
  }
  const uint16_t d_bits = f32_to_f16_rne(div_f32(max_scale, 63.0f));
  const uint16_t dmin_bits = f32_to_f16_rne(div_f32(max_min, 63.0f));
  detail::store_u16_le(out, d_bits);
  detail::store_u16_le(out + 2, dmin_bits);
  pack_scale_min_k4(ls, lm, out + 4);
  const float d_all = f16_to_f32(d_bits);
  const float dmin_all = f16_to_f32(dmin_bits);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    unpack_scale_min_k4(j, out + 4, &sc, &m);
    const float d = mul_f32(d_all, float(sc));
    if (d == 0.0f) continue;
    const float dm = mul_f32(dmin_all, float(m));
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int(div_f32(add_f32(x[32 * j + ii], dm), d));
      L[32 * j + ii] = uint8_t(clamp_int(l, 0, nmax));
    }
  }
}

// Q4_K's codes 0..15: byte 16 + 32c + l holds element 64c + l (low nibble)
// and 64c + 32 + l (high nibble).
QPACK_HD void pack_q4_k_codes(const uint8_t* L, uint8_t* out) {
  uint8_t* qs = out + 16;
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + l + 32] << 4));
}

// Q5_K's codes 0..31: the low 4 bits as Q4_K's (from byte 48); the fifth bit
// of element 64c + l is bit 2c of qh[l] (byte 16 + l), that of 64c + 32 + l
// bit 2c + 1.
QPACK_HD void pack_q5_k_codes(const uint8_t* L, uint8_t* out) {
  uint8_t* qh = out + 16;
  uint8_t* qs = out + 48;
  for (int j = 0; j < 32; ++j) qh[j] = 0;
  for (int c = 0; c < 4; ++c) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[64 * c + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] = uint8_t(qh[j] | (1 << (2 * c)));
      }
      int l2 = L[64 * c + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] = uint8_t(qh[j] | (2 << (2 * c)));
      }
      qs[32 * c + j] = uint8_t(l1 | (l2 << 4));
    }
  }
}

}  // namespace kquant

// Q4_K: codes 0..15, search rmin -1, 20 steps.
QPACK_HD void quantize_block_q4_k(const float* x, uint8_t* out) {
  uint8_t L[kSuperBlockElements];
  float scales[8];
  float mins[8];
  kquant::k4_fits(x, 15, -1.0f, 20, L, scales, mins);
  kquant::k4_scales_and_codes_from_fits(x, 15, scales, mins, out, L);
  kquant::pack_q4_k_codes(L, out);
}

// Q5_K: codes 0..31, search rmin -0.5, 15 steps.
QPACK_HD void quantize_block_q5_k(const float* x, uint8_t* out) {
  uint8_t L[kSuperBlockElements];
  float scales[8];
  float mins[8];
  kquant::k4_fits(x, 31, -0.5f, 15, L, scales, mins);
  kquant::k4_scales_and_codes_from_fits(x, 31, scales, mins, out, L);
  kquant::pack_q5_k_codes(L, out);
}

// Q6_K: 16 sub-blocks of 16 fitted by fit_symmetric_scale(nmax 32); int8
// scales against d = max_scale / -128; codes -32..31 stored +32 as 4 low
// bits in ql and 2 high bits in qh. A block whose largest |scale| is below
// 1e-15 is all zero bytes.
namespace kquant {

// Q6_K's fits of its 16 sub-blocks (codes into L).
QPACK_HD void q6_k_fits(const float* x, int8_t* L, float* scales) {
  for (int ib = 0; ib < 16; ++ib)
    scales[ib] = fit_symmetric_scale(16, 32, x + 16 * ib, L + 16 * ib);
}

// Then, from the fits, the whole block (L holds the fits' codes on entry).
QPACK_HD void q6_k_block_from_fits(const float* x, const float* scales, int8_t* L, uint8_t* out) {
  float max_scale = 0.0f;
  float max_abs_scale = 0.0f;
  for (int ib = 0; ib < 16; ++ib) {
    const float abs_scale = abs_f32(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    for (int i = 0; i < kQ6_KBlockBytes; ++i) out[i] = 0;
    return;
  }
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  uint8_t* sc = out + 192;
  const float iscale = div_f32(-128.0f, max_scale);
  const uint16_t d_bits = f32_to_f16_rne(div_f32(1.0f, iscale));
  int scale_q[16];
  for (int ib = 0; ib < 16; ++ib) {
    scale_q[ib] = wrap_int8(min_int(127, nearest_int(mul_f32(iscale, scales[ib]))));
    sc[ib] = uint8_t(scale_q[ib] & 0xff);
  }
  const float d_all = f16_to_f32(d_bits);
  for (int j = 0; j < 16; ++j) {
    const float d = mul_f32(d_all, float(scale_q[j]));
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = clamp_int(nearest_int(div_f32(x[16 * j + ii], d)), -32, 31);
      L[16 * j + ii] = int8_t(l + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    const int8_t* Lh = L + 128 * h;
    for (int l = 0; l < 32; ++l) {
      ql[64 * h + l] = uint8_t((Lh[l] & 0xf) | ((Lh[l + 64] & 0xf) << 4));
      ql[64 * h + l + 32] = uint8_t((Lh[l + 32] & 0xf) | ((Lh[l + 96] & 0xf) << 4));
      qh[32 * h + l] = uint8_t((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                               ((Lh[l + 96] >> 4) << 6));
    }
  }
  detail::store_u16_le(out + 208, d_bits);
}

}  // namespace kquant

QPACK_HD void quantize_block_q6_k(const float* x, uint8_t* out) {
  int8_t L[kSuperBlockElements];
  float scales[16];
  kquant::q6_k_fits(x, L, scales);
  kquant::q6_k_block_from_fits(x, scales, L, out);
}

// ------------------------------------------------------------ dequantize one super-block
// in: the type's block bytes; y: 256 floats. Each value as ggml's C writes
// it: products left to right, then one separate subtraction of the min
// (several roundings, never an fma).

// Q2_K: y = (d * sc) * q - (dmin * m), sc and m the nibbles of scales[e/16].
QPACK_HD void dequantize_block_q2_k(const uint8_t* in, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in + 80));
  const float dmin = f16_to_f32(detail::load_u16_le(in + 82));
  for (int e = 0; e < kSuperBlockElements; ++e) {
    const int s = in[e / 16];
    const float dl = mul_f32(d, float(s & 0xf));
    const float ml = mul_f32(dmin, float(s >> 4));
    y[e] = sub_f32(mul_f32(dl, float(kquant::two_bit_code(in + 16, e))), ml);
  }
}

// Q3_K: y = (d * (sc - 32)) * (low2 - (hmask bit ? 0 : 4)).
QPACK_HD void dequantize_block_q3_k(const uint8_t* in, float* y) {
  const float d_all = f16_to_f32(detail::load_u16_le(in + 108));
  for (int e = 0; e < kSuperBlockElements; ++e) {
    const float dl = mul_f32(d_all, float(kquant::q3_k_scale(in + 96, e / 16) - 32));
    const int high = (in[e % 32] >> (e / 32)) & 1;
    const int q = kquant::two_bit_code(in + 32, e) - (high ? 0 : 4);
    y[e] = mul_f32(dl, float(q));
  }
}

namespace kquant {
// Q4_K / Q5_K: y = (d * sc) * q - (dmin * m), sc and m of sub-block e/32.
QPACK_HD void dequantize_k4(const uint8_t* in, const uint8_t* qh, const uint8_t* qs, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in));
  const float dmin = f16_to_f32(detail::load_u16_le(in + 2));
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    unpack_scale_min_k4(j, in + 4, &sc, &m);
    const float d1 = mul_f32(d, float(sc));
    const float m1 = mul_f32(dmin, float(m));
    for (int l = 0; l < 32; ++l) {
      const int e = 32 * j + l;
      int q = k4_nibble(qs, e);
      if (qh != nullptr) q += ((qh[l] >> j) & 1) ? 16 : 0;  // bit 2c (+1) of chunk c = j/2
      y[e] = sub_f32(mul_f32(d1, float(q)), m1);
    }
  }
}
}  // namespace kquant

QPACK_HD void dequantize_block_q4_k(const uint8_t* in, float* y) {
  kquant::dequantize_k4(in, nullptr, in + 16, y);
}
QPACK_HD void dequantize_block_q5_k(const uint8_t* in, float* y) {
  kquant::dequantize_k4(in, in + 16, in + 48, y);
}

// Q6_K: y = (d * sc[e/16]) * (q - 32).
QPACK_HD void dequantize_block_q6_k(const uint8_t* in, float* y) {
  const float d = f16_to_f32(detail::load_u16_le(in + 208));
  const uint8_t* ql = in;
  const uint8_t* qh = in + 128;
  for (int e = 0; e < kSuperBlockElements; ++e) {
    const int h = e / 128;
    const int r = e % 128;
    const int k = r / 32;  // which of the four 32-element runs of the half
    const int l = r % 32;
    const int low = (ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xf;
    const int high = (qh[32 * h + l] >> (2 * k)) & 3;
    const int q = (low | (high << 4)) - 32;
    const float sc = float(kquant::wrap_int8(in[192 + e / 16]));
    y[e] = mul_f32(mul_f32(d, sc), float(q));
  }
}

}  // namespace qpack::spec::ggml
