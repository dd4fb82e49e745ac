// Two-level scales (docs/quantization.md §T): the groups of a tensor are
// gathered in super-blocks of kSuperBlockGroups consecutive groups along the
// group axis; each group stores a 6-bit scale code sc and a 6-bit minimum
// code m, each super-block an F16 (or BF16) super-scale d and super-minimum
// dmin. A group's effective parameters
//     S = fl(f32(d) * sc),   M = -fl(f32(dmin) * m)
// are exact in binary32 (an 11- or 8-bit significand times a 6-bit integer
// has at most 17 significant bits), so decoding is §6's x_hat = fma(q, S, M)
// with ordinary F32 parameters: every reader expands a two-level tensor to
// per-group (S, M) and decodes, verifies and exports it as it does any other.
//
// One text for the scalar reference, the CPU path and the CUDA kernel, as
// group_params.hpp is. Every step is one IEEE binary32 operation.
#pragma once

#include <cstdint>

#include "qpack/spec/codes.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_kquants.hpp"
#include "qpack/spec/group_methods.hpp"
#include "qpack/spec/group_params.hpp"
#include "qpack/spec/layout.hpp"
#include "qpack/spec/numerics.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack::spec {

constexpr int kSubCodeMax = (1 << kSubScaleBits) - 1;  // 63

// The first level (§T2): a group's binary32 scale s >= 0 and minimum
// magnitude mneg >= 0 (the offset is -mneg <= 0, as in Q4_K), from its
// method. `overflow` when fl(mx - mn) is not finite.
struct FirstLevel {
  float s, mneg;
  bool overflow;
};

// RTN (§T2.1): the range [min(mn, +0), mx], s = fl(fl(mx - lo) / Q).
template <class Src>
QPACK_HD FirstLevel first_level_rtn(const Src& src, int64_t n, int bits) {
  float mn, mx;
  group_min_max(src, n, &mn, &mx);
  const float lo = add_f32(mn < 0.0f ? mn : 0.0f, 0.0f);  // min(mn, +0); -0 -> +0
  mx = add_f32(mx, 0.0f);
  const float s = div_f32(sub_f32(mx, lo), float(qmax_asym(bits)));
  FirstLevel f;
  f.overflow = !is_finite_f32(s);
  f.s = f.overflow ? 0.0f : s;
  f.mneg = add_f32(-lo, 0.0f);
  return f;
}

// The group error of first-level parameters (S, -mneg) in binary32 (§M1's E).
template <class Src>
QPACK_HD double first_level_error(const Src& src, int64_t n, float s, float mneg, int bits) {
  GroupParams p;
  p.scale = s;
  p.zero = add_f32(-mneg, 0.0f);
  p.inv = s >= kMinNormalF32 ? div_f32(1.0f, s) : 0.0f;
  p.scale_bits16 = p.zero_bits16 = 0;
  p.overflow = false;
  return group_error(src, n, p, bits);
}

// Search (§T2.2): ggml's make_qkx2_quants with the minimum kept <= 0 (Q4_K's
// own fit, §K3), taken when its group error is strictly below RTN's.
template <class Src>
QPACK_HD FirstLevel first_level_search(const Src& src, int64_t n, int bits) {
  const FirstLevel rtn = first_level_rtn(src, n, bits);
  if (rtn.overflow) return rtn;
  const ggml::kquant::ScaleMinFit f = ggml::kquant::search_scale_and_min(
      src, n, qmax_asym(bits), kSearchRmin, kSearchRdelta, kSearchSteps, false, true);
  if (!is_finite_f32(f.scale) || !is_finite_f32(f.min) || !(f.scale >= kMinNormalF32) ||
      f.min > 0.0f)
    return rtn;
  FirstLevel c;
  c.s = f.scale;
  c.mneg = add_f32(-f.min, 0.0f);
  c.overflow = false;
  return first_level_error(src, n, c.s, c.mneg, bits) <
                 first_level_error(src, n, rtn.s, rtn.mneg, bits)
             ? c
             : rtn;
}

template <class Src>
QPACK_HD FirstLevel first_level(const Src& src, int64_t n, int bits, QuantMethod method) {
  return method == QuantMethod::Search ? first_level_search(src, n, bits)
                                       : first_level_rtn(src, n, bits);
}

// The second level (§T3) of one super-block's largest first-level value vmax
// (s or mneg over its groups, >= 0): the super value D = round_sd(vmax / 63).
struct SuperValue {
  float value;  // as binary32; +0 when every code is 0
  uint16_t bits16;
  bool overflow;  // D is not finite in the scale dtype
};
QPACK_HD SuperValue super_value(float vmax, DType sd) {
  SuperValue v;
  v.value = round_to(div_f32(vmax, float(kSubCodeMax)), sd, &v.bits16);
  v.overflow = !is_finite_f32(v.value);
  return v;
}
// A group's code for its value v under the super value D: rint(fl(v / D))
// clamped to lo .. 63; 0 when D is +0 or v is +0. lo is 1 for scales (a
// group with a scale of its own never becomes degenerate: S = D at worst,
// which still covers its range) and 0 for minimums.
QPACK_HD uint32_t sub_code(float v, float d, uint32_t lo) {
  if (!(d > 0.0f) || !(v > 0.0f)) return 0;
  const float t = rint_f32(div_f32(v, d));
  const float l = float(lo);
  return uint32_t(t < l ? l : (t > float(kSubCodeMax) ? float(kSubCodeMax) : t));
}

// A group's effective (S, M) (§T4), as the GroupParams §4.6 and §6 use: S =
// fl(d * sc), M = -fl(dmin * m), both exact; inv = fl(1 / S), or 0 when S is
// below 2^-126 (only S = +0 can be: d >= 2^-24 when sc > 0).
QPACK_HD GroupParams effective_params(float d, uint32_t sc, float dmin, uint32_t m) {
  GroupParams p;
  p.scale = mul_f32(d, float(sc));
  p.zero = add_f32(-mul_f32(dmin, float(m)), 0.0f);  // -0 -> +0
  p.scale_bits16 = p.zero_bits16 = 0;
  p.overflow = false;
  p.inv = p.scale >= kMinNormalF32 ? div_f32(1.0f, p.scale) : 0.0f;
  return p;
}

// §T3.3: a group's codes (sc, m). Starting from the nearest codes (sub_code),
// the 3 x 3 neighbourhood sc + {0, -1, +1} x m + {0, -1, +1} (in that order,
// sc outer; codes outside 1 .. 63 for sc, 0 .. 63 for m skipped) is tried
// and the first pair of strictly smallest group error (§M1's E, with the
// codes of §4.6 under the effective (S, M)) is kept. Why: rounding S and M
// separately to 6 bits ignores how they interact; one pass over the
// neighbours recovers most of what a joint fit would.
struct SubCodes {
  uint32_t sc, m;
};
template <class Src>
QPACK_HD SubCodes choose_sub_codes(const Src& src, int64_t n, int bits, const FirstLevel& f,
                                   float d, float dmin) {
  SubCodes best;
  best.sc = sub_code(f.s, d, 1);
  best.m = sub_code(f.mneg, dmin, 0);
  if (!(d > 0.0f) || best.sc == 0) return best;  // every scale code 0: nothing to choose
  const uint32_t sc0 = best.sc, m0 = best.m;
  double best_e = group_error(src, n, effective_params(d, sc0, dmin, m0), bits);
  const int steps[3] = {0, -1, 1};
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) {
      if (a == 0 && b == 0) continue;
      const int sc = int(sc0) + steps[a], m = int(m0) + steps[b];
      if (sc < 1 || sc > kSubCodeMax || m < 0 || m > kSubCodeMax) continue;
      if (m > 0 && !(dmin > 0.0f)) continue;
      const double e =
          group_error(src, n, effective_params(d, uint32_t(sc), dmin, uint32_t(m)), bits);
      if (e < best_e) {
        best_e = e;
        best.sc = uint32_t(sc);
        best.m = uint32_t(m);
      }
    }
  return best;
}

// Where a two-level tensor's parameters sit (§T5): the scales section is the
// groups' sc codes as one little-endian 6-bit stream (group p at bits 6p ..
// 6p+5), zero bits up to layout.sub_codes_bytes(), then the super-scales d
// as scale-dtype values at super-block index s; the zeros section the same
// with m and dmin.
QPACK_HD int64_t super_index(const GroupLayout& L, int64_t group_linear) {
  const int64_t i = group_linear % L.inner;
  const int64_t g = (group_linear / L.inner) % L.groups_per_axis;
  const int64_t o = group_linear / L.inner / L.groups_per_axis;
  return (o * L.supers_per_axis() + g / L.super_block) * L.inner + i;
}
QPACK_HD GroupParams load_two_level(const uint8_t* scales, const uint8_t* zeros,
                                    const GroupLayout& L, DType sd, int64_t group_linear) {
  const int64_t s = super_index(L, group_linear);
  const uint64_t off = L.sub_codes_bytes();
  const float d = load_param(scales + off, s, sd);
  const float dmin = load_param(zeros + off, s, sd);
  return effective_params(d, get_code(scales, 1, group_linear, kSubScaleBits), dmin,
                          get_code(zeros, 1, group_linear, kSubScaleBits));
}

}  // namespace qpack::spec
