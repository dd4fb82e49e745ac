// The parameter methods of docs/quantization.md §M: other ways than min-max
// RTN (§4) to choose a float zero-point group's (S, M). Every method stores
// ordinary parameters in the scale dtype and the codes §4.6 derives from
// them, so readers, the decode (§6) and the exporters are unchanged; and
// every method keeps RTN's parameters unless its own give a strictly
// smaller group error (group_error), so that no group gets worse.
//
// One text for the scalar reference, the CPU path and the CUDA kernel, as
// group_params.hpp is. A group is read through an accessor `src` with
// src.x(k) (the element, binary32, finite) and src.w(k) (its weight, 1 when
// no importance is given), k = 0 .. n-1 in axis order.
#pragma once

#include <cstdint>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_kquants.hpp"
#include "qpack/spec/group_params.hpp"
#include "qpack/spec/numerics.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack::spec {

// The search's constants (§M2): llama.cpp's Q4_K values, for every width.
constexpr float kSearchRmin = -1.0f;
constexpr float kSearchRdelta = 0.1f;
constexpr int kSearchSteps = 20;  // candidates is = 0..20, plus the first
// Least-squares rounds of the refit (§M3).
constexpr int kRefitRounds = 3;

// Elements of a gathered group, unit weights or one per element.
struct GroupValues {
  const float* xs;
  const float* ws;  // null: every weight is 1
  QPACK_HD float x(int64_t k) const { return xs[k]; }
  QPACK_HD float w(int64_t k) const { return ws ? ws[k] : 1.0f; }
};

// The group error of §M1: E = sum_k w_k * (x_hat_k - x_k)^2 in binary64,
// k ascending from +0, each subtraction, product and sum rounded once, with
// x_hat_k = fma(q_k, S, M) and q_k the code §4.6 gives x_k under p.
template <class Src>
QPACK_HD double group_error(const Src& src, int64_t n, const GroupParams& p, int bits) {
  double e = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const float x = src.x(k);
    const float xh = decode(encode_asym(x, p, bits), p.scale, p.zero, false, bits);
    const double d = sub_f64(double(xh), double(x));
    e = add_f64(e, mul_f64(double(src.w(k)), mul_f64(d, d)));
  }
  return e;
}

// A method's binary32 scale and offset, rounded to the scale dtype (§4.3).
// valid is false unless S is finite and at least 2^-126 and M is finite:
// such a candidate is never taken (RTN's parameters stay).
struct Candidate {
  GroupParams p;
  bool valid;
};
QPACK_HD Candidate candidate_params(float scale, float offset, DType sd) {
  Candidate c;
  c.p.scale = round_to(scale, sd, &c.p.scale_bits16);
  c.p.zero = round_to(offset, sd, &c.p.zero_bits16);
  c.p.overflow = false;
  c.valid = is_finite_f32(c.p.scale) && is_finite_f32(c.p.zero) && c.p.scale >= kMinNormalF32;
  c.p.inv = c.valid ? div_f32(1.0f, c.p.scale) : 0.0f;
  return c;
}

// The group's exact min and max (finite inputs: the order does not matter).
template <class Src>
QPACK_HD void group_min_max(const Src& src, int64_t n, float* mn, float* mx) {
  float lo = src.x(0), hi = lo;
  for (int64_t k = 1; k < n; ++k) {
    const float x = src.x(k);
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  *mn = lo;
  *mx = hi;
}

// §M2: llama.cpp's scale-and-minimum search (ggml_kquants.hpp's
// search_scale_and_min with nmax = 2^b - 1, the constants above, squared
// error and an offset of either sign), its (scale, offset) rounded to the
// scale dtype, kept when its group error is below RTN's.
template <class Src>
QPACK_HD GroupParams params_asym_search(const Src& src, int64_t n, int bits, DType sd) {
  float mn, mx;
  group_min_max(src, n, &mn, &mx);
  const GroupParams rtn = params_asym(mn, mx, bits, sd);
  if (rtn.overflow) return rtn;  // the range does not fit: the conversion fails as RTN's does
  const ggml::kquant::ScaleMinFit f = ggml::kquant::search_scale_and_min(
      src, n, qmax_asym(bits), kSearchRmin, kSearchRdelta, kSearchSteps, false, false);
  const Candidate c = candidate_params(f.scale, f.min, sd);
  if (!c.valid) return rtn;
  return group_error(src, n, c.p, bits) < group_error(src, n, rtn, bits) ? c.p : rtn;
}

// §M3: kRefitRounds weighted least-squares fits of x ~ S*q + M to the codes
// of the current parameters (RTN's first), each rounded to the scale dtype;
// the first parameters of smallest group error win, RTN's on a tie.
template <class Src>
QPACK_HD GroupParams params_asym_refit(const Src& src, int64_t n, int bits, DType sd) {
  float mn, mx;
  group_min_max(src, n, &mn, &mx);
  const GroupParams rtn = params_asym(mn, mx, bits, sd);
  if (rtn.overflow) return rtn;
  float sum_w = 0.0f, sum_x = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    sum_w = add_f32(sum_w, src.w(k));
    sum_x = add_f32(sum_x, mul_f32(src.w(k), src.x(k)));
  }
  GroupParams best = rtn, cur = rtn;
  double best_error = group_error(src, n, rtn, bits);
  for (int r = 0; r < kRefitRounds; ++r) {
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int64_t k = 0; k < n; ++k) {
      const float x = src.x(k);
      const float l = float(encode_asym(x, cur, bits));
      const float wl = mul_f32(src.w(k), l);
      sum_l = add_f32(sum_l, wl);
      sum_l2 = add_f32(sum_l2, mul_f32(wl, l));
      sum_xl = add_f32(sum_xl, mul_f32(wl, x));
    }
    float scale, offset;
    if (!ggml::kquant::least_squares_scale_min(sum_w, sum_x, sum_l, sum_l2, sum_xl, false, &scale,
                                               &offset))
      break;
    const Candidate c = candidate_params(scale, offset, sd);
    if (!c.valid) break;
    const double e = group_error(src, n, c.p, bits);
    if (e < best_error) {
      best = c.p;
      best_error = e;
    }
    cur = c.p;
  }
  return best;
}

// The group error of §M5 for the integer zero-point rule: §M1's sum with
// x_hat_k = decode_int(q_k) (§6) and q_k §5a.6's code of x_k under p.
template <class Src>
QPACK_HD double group_error_int(const Src& src, int64_t n, const GroupParams& p, int bits) {
  double e = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const float x = src.x(k);
    const float xh = decode_int(encode_asym_int(x, p, bits), p.scale, p.zero);
    const double d = sub_f64(double(xh), double(x));
    e = add_f64(e, mul_f64(double(src.w(k)), mul_f64(d, d)));
  }
  return e;
}

// §M5: the clip search of the integer zero-point rule. Candidate i =
// 1 .. kIntSearchSteps-1 is §5a's RTN rule on the range [lo, hi] shrunk
// towards 0 by alpha_i = fl((100 - i) / 100): lo_i = fl(lo * alpha_i),
// hi_i = fl(hi * alpha_i) (llm-compressor's MSE observer's grid); the first
// of smallest group error wins, RTN's (i = 0) on a tie.
constexpr int kIntSearchSteps = 20;
template <class Src>
QPACK_HD GroupParams params_asym_int_search(const Src& src, int64_t n, int bits, DType sd) {
  float mn, mx;
  group_min_max(src, n, &mn, &mx);
  const GroupParams rtn = params_asym_int(mn, mx, bits, sd);
  if (rtn.overflow || rtn.scale == 0.0f) return rtn;  // fails as RTN does / a group of zeros
  const float lo = add_f32(mn < 0.0f ? mn : 0.0f, 0.0f);
  const float hi = add_f32(mx > 0.0f ? mx : 0.0f, 0.0f);
  GroupParams best = rtn;
  double best_error = group_error_int(src, n, rtn, bits);
  for (int i = 1; i < kIntSearchSteps; ++i) {
    const float alpha = div_f32(float(100 - i), 100.0f);
    const GroupParams c = params_asym_int(mul_f32(lo, alpha), mul_f32(hi, alpha), bits, sd);
    if (c.overflow || c.scale == 0.0f) continue;
    const double e = group_error_int(src, n, c, bits);
    if (e < best_error) {
      best = c;
      best_error = e;
    }
  }
  return best;
}

// The asymmetric group's parameters by the scheme's method and zero-point
// rule (validate_scheme admits search for both rules, refit for float only).
template <class Src>
QPACK_HD GroupParams params_asym_method(const Src& src, int64_t n, int bits, DType sd,
                                        QuantMethod method, bool integer_zero) {
  if (integer_zero) {
    if (method == QuantMethod::Search) return params_asym_int_search(src, n, bits, sd);
    float mn, mx;
    group_min_max(src, n, &mn, &mx);
    return params_asym_int(mn, mx, bits, sd);
  }
  if (method == QuantMethod::Search) return params_asym_search(src, n, bits, sd);
  if (method == QuantMethod::Refit) return params_asym_refit(src, n, bits, sd);
  float mn, mx;
  group_min_max(src, n, &mn, &mx);
  return params_asym(mn, mx, bits, sd);
}

}  // namespace qpack::spec
